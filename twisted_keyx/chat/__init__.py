"""The channel after a password handshake: the encrypted chat.

Any handshake that ends with a session key and a transcript hash hands them
here (:func:`~twisted_keyx.chat.records.derive_chat_keys`, with a label of its
own); the chat does not know which handshake ran.  The parts:

- :mod:`twisted_keyx.chat.records`: the record format, one AES-256-GCM key
  per direction, implicit counters, the line sizes;
- :mod:`twisted_keyx.chat.machine`: the two sides as state machines
  (``receive <line>``, ``quit``);
- :mod:`twisted_keyx.cli.console`: the client's terminal.

docs/protocols.rst, "Chat", describes it on the wire.
"""
