"""Groups for Diffie-Hellman and KEMs: the registry, FFDH (GMP), X25519, ASN.1 for their keys, prime checks."""
