"""The Diffie-Hellman handshake of the socket tutorial (protocols.md section 1)."""
