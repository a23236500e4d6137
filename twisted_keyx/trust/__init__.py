"""Trust: host keys, OpenSSH known_hosts, and the OPAQUE known-servers file (trust on first use)."""
