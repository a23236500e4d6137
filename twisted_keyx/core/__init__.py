"""The core: sans-I/O machine base, the session adapter, framing, the transcript and session keys, small helpers.

The lowest layer: it imports no other package of twisted_keyx (setup.cfg, import-linter).
"""
