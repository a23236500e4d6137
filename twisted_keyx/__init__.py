"""twisted-keyx: key-exchange handshakes as explicit, tested Twisted state machines."""

__version__ = "0.1.0"
