"""The Diffie-Hellman handshake of the socket tutorial (docs/protocols.rst, "DH handshake")."""
