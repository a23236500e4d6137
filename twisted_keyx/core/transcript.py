"""Session keys: a running transcript hash and HKDF-SHA256 (RFC 5869).

Both handshakes end with a shared secret; the key a program should use is
derived from it with HKDF, with the hash of every handshake message bound in,
so that two sides that saw different messages (a man in the middle splicing
two handshakes, a tampered parameter block) end with different keys.
"""

import hashlib
import hmac
from typing import Optional

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SESSION_KEY_LENGTH = 32


class Transcript:
    """SHA-256 over the handshake messages, each as a 4-byte big-endian length
    and the message, so that message boundaries are part of what is hashed.

    Bytes are hashed exactly as given: a message that differs by one byte,
    whitespace included, gives another hash and so another session key.  What
    the unframed wire does not count as part of a message (the whitespace the
    tutorial's ``strip()`` removes) is removed by its framing before a machine
    sees the message (docs/protocols.rst, "Unframed wire").
    """

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def add(self, message: bytes) -> None:
        message = bytes(message)
        self._hash.update(len(message).to_bytes(4, "big"))
        self._hash.update(message)

    def digest(self) -> bytes:
        return self._hash.copy().digest()


def hkdf_sha256(secret: bytes, info: bytes, length: int = SESSION_KEY_LENGTH,
                salt: Optional[bytes] = None) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(secret)


def derive_session_key(shared_secret: bytes, label: bytes, transcript_hash: bytes) -> bytes:
    """HKDF-SHA256(shared secret, info = label || transcript hash)."""
    return hkdf_sha256(shared_secret, label + transcript_hash)


def session_key_fingerprint(key: bytes) -> str:
    """A short public name for a key: 8 bytes of HMAC-SHA256 keyed by it, in hex.

    Safe to log: it lets two sides compare keys without revealing them.
    """
    return hmac.digest(key, b"twisted-keyx fingerprint", "sha256")[:8].hex()
