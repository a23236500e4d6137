"""Shared fixtures for the EKE tests: cheap KDF parameters, one RSA key,
deterministic randomness that remembers what it handed out, and an
independent statement of the box format to check the wire bytes against."""

import base64
import hashlib

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from twisted.internet import defer

from twisted_keyx import asn1
from twisted_keyx.eke import crypto, messages, userstore
from twisted_keyx.eke.protocol import EKEServerFactory, EKEServerProtocol

#: Cheap scrypt for tests (4 KiB), and client limits that accept it.
TEST_KDF = crypto.ScryptParameters(n=16, r=2, p=1)
TEST_LIMITS = crypto.KdfLimits(min_memory=1)

PASSWORD = "correct horse"

_RSA_KEYS = []


def rsa_key():
    """One RSA-2048 key for the whole run (generating one takes ~50 ms)."""
    if not _RSA_KEYS:
        _RSA_KEYS.append(crypto.generate_rsa_key())
    return _RSA_KEYS[0]


def unknown_algorithm_spki(size=messages.RSA_PUBLIC_KEY_DER_SIZE):
    """A DER SubjectPublicKeyInfo of ``size`` bytes whose algorithm is the
    OID 1.2.3.4, which cryptography does not know (it raises
    UnsupportedAlgorithm, not ValueError)."""
    algorithm = asn1.encode_sequence(asn1.encode(asn1.OBJECT_IDENTIFIER, asn1.oid("1.2.3.4")))
    for filler in range(size):
        der = asn1.encode_sequence(algorithm, asn1.encode(asn1.BIT_STRING, bytes(1 + filler)))
        if len(der) == size:
            return der
    raise ValueError(f"no SubjectPublicKeyInfo of {size} bytes")


class RecordingRandom:
    """Deterministic bytes (SHA-256 in counter mode over a seed); ``handed``
    lists every output, in order."""

    def __init__(self, seed=b"seed"):
        self._seed = seed
        self._counter = 0
        self.handed = []

    def __call__(self, size):
        out = b""
        while len(out) < size:
            out += hashlib.sha256(self._seed + self._counter.to_bytes(8, "big")).digest()
            self._counter += 1
        out = out[:size]
        self.handed.append(out)
        return out


def make_user(name="alice", password=PASSWORD, kdf=TEST_KDF, seed=b"salt"):
    return userstore.new_user(name, password, kdf=kdf, random_bytes=RecordingRandom(seed))


def expected_password_key(password, salt, kdf):
    """scrypt straight from cryptography, not through twisted_keyx."""
    return Scrypt(salt=salt, length=32, n=kdf.n, r=kdf.r, p=kdf.p).derive(password.encode())


def expected_box(key, step, user, plaintext, nonce):
    """The box format as documented: nonce || AES-256-GCM(plaintext), with
    associated data "twisted-keyx eke v1 step " || step byte || user name."""
    ad = b"twisted-keyx eke v1 step " + bytes([step]) + user.encode()
    return base64.b64encode(nonce + AESGCM(key).encrypt(nonce, plaintext, ad))


def open_expected_box(key, step, user, line):
    box = base64.b64decode(line)
    ad = b"twisted-keyx eke v1 step " + bytes([step]) + user.encode()
    return AESGCM(key).decrypt(box[:12], box[12:], ad)


def flip(line, index=20):
    """The base64 line with one character changed (still valid base64)."""
    chars = bytearray(line)
    chars[index] = ord("A") if chars[index] != ord("A") else ord("B")
    return bytes(chars)


class Users(dict):
    """An in-memory user table with the ``lookup`` of :class:`UserFile`."""

    def lookup(self, name):
        return self.get(name)


class TrackedServerProtocol(EKEServerProtocol):
    def connectionLost(self, reason):
        super().connectionLost(reason)
        self.factory.lost.append(self)
        if len(self.factory.lost) == self.factory.expected:
            self.factory.connections_lost.callback(None)


class TrackedServerFactory(EKEServerFactory):
    """Fires ``connections_lost`` once ``expected`` connections have closed,
    so that loopback tests leave the reactor clean."""

    protocol = TrackedServerProtocol

    def __init__(self, *args, expected=1, **kwargs):
        super().__init__(*args, **kwargs)
        self.lost = []
        self.expected = expected
        self.connections_lost = defer.Deferred()
