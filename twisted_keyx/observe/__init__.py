"""Observability: traces of handshakes, state diagrams and sequence charts drawn from the machines."""
