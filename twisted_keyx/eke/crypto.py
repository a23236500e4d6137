"""The EKE primitives, all from ``cryptography`` (docs/protocols.rst, "EKE").

- Password key: scrypt (RFC 7914) of the password with a per-user 16-byte
  salt, 32 bytes.  The server stores this key, never the password.
- Box (E_pw, E_Ks): AES-256-GCM (NIST SP 800-38D) with a fresh random 12-byte
  nonce per message, sent in front of the ciphertext; the associated data
  binds the protocol, the step number and the user name, so a box cannot be
  replayed at another step or for another user.
- pk: a fresh RSA-2048 key pair per session, e = 65537; Ks is encrypted to it
  with OAEP, MGF1 and SHA-256 (RFC 8017 7.1).
- Chat: the keys of :mod:`twisted_keyx.chat.records`, from Ks with the
  handshake transcript bound in.
"""

import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Any, List

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from twisted_keyx.chat import records
from twisted_keyx.eke import messages
from twisted_keyx.login.password import normalize_password  # noqa: F401 (part of this API)

PASSWORD_KEY_SIZE = 32
RSA_PUBLIC_EXPONENT = 65537

_BOX_LABEL = b"twisted-keyx eke v1 step "
_DECOY_SALT_LABEL = b"twisted-keyx eke decoy salt v1"


class CryptoError(Exception):
    """Something did not decrypt or is not a usable key."""


# --- the password key -------------------------------------------------------


@dataclass(frozen=True)
class ScryptParameters:
    """scrypt's cost: N (a power of two), r (block size) and p (parallelism).
    Memory is about 128 * N * r bytes; time grows with N * r * p."""

    n: int
    r: int
    p: int

    @property
    def memory(self):
        return 128 * self.n * self.r

    def check(self):
        """The structural rules of RFC 7914 2, with sane ceilings."""
        if not (2 <= self.n <= 2**24 and self.n & (self.n - 1) == 0):
            raise ValueError(f"scrypt n must be a power of two from 2 to 2**24, not {self.n}")
        if not 1 <= self.r <= 64:
            raise ValueError(f"scrypt r must be 1 to 64, not {self.r}")
        if not 1 <= self.p <= 16:
            raise ValueError(f"scrypt p must be 1 to 16, not {self.p}")
        return self

    def __str__(self):
        return f"scrypt n={self.n} r={self.r} p={self.p}"


#: What ``keyx-admin adduser`` uses: 32 MiB, about 0.15 s on one core.
DEFAULT_SCRYPT = ScryptParameters(n=2**15, r=8, p=1)

MiB = 1 << 20


@dataclass(frozen=True)
class KdfLimits:
    """The scrypt costs a client accepts from a server (step 2).

    The ceiling stops a hostile server from making the client spend gigabytes
    or minutes.  The floor stops a fake server from asking for a cheap KDF:
    it would then receive E_pw(pk) under a key it could brute-force quickly.
    """

    min_memory: int = 16 * MiB
    max_memory: int = 256 * MiB
    max_n: int = 2**20
    max_r: int = 16
    max_p: int = 4

    def check(self, kdf):
        kdf.check()
        if kdf.n > self.max_n or kdf.r > self.max_r or kdf.p > self.max_p:
            raise ValueError(
                f"{kdf} exceeds n <= {self.max_n}, r <= {self.max_r}, p <= {self.max_p}"
            )
        if not self.min_memory <= kdf.memory <= self.max_memory:
            raise ValueError(
                f"{kdf} needs {kdf.memory // 1024} KiB; accepted: "
                f"{self.min_memory // 1024} to {self.max_memory // 1024} KiB"
            )
        return kdf


DEFAULT_KDF_LIMITS = KdfLimits()


def derive_password_key(password, salt, kdf):
    """scrypt(password, salt, N, r, p), 32 bytes; ``password`` as bytes."""
    kdf.check()
    return Scrypt(salt=salt, length=PASSWORD_KEY_SIZE, n=kdf.n, r=kdf.r, p=kdf.p).derive(
        password
    )


def decoy_salt(secret, name):
    """A salt for a user that does not exist (``--hide-unknown-users``): the
    same for the same name while the server runs, unrelated across names."""
    digest = hmac.new(secret, _DECOY_SALT_LABEL + name.encode("utf-8"), hashlib.sha256)
    return digest.digest()[: messages.SALT_SIZE]


_DECOY_KEY_LABEL = b"twisted-keyx eke decoy key v1"


def decoy_key(secret, name):
    """A password key for a user that does not exist: no password gives it."""
    return hmac.new(secret, _DECOY_KEY_LABEL + name.encode("utf-8"), hashlib.sha256).digest()


#: Seals a doomed session's step 4 (per process; nobody has it).
DOOMED_BOX_KEY = os.urandom(PASSWORD_KEY_SIZE)

_DUMMY_RSA: List[Any] = []


def dummy_rsa_public_key_der():
    """A per-process RSA-2048 public key (DER), for the doomed path of step 3
    to do the same RSA work as the real one."""
    if not _DUMMY_RSA:
        _DUMMY_RSA.append(public_key_der(generate_rsa_key()))
    return _DUMMY_RSA[0]


# --- boxes: E_pw and E_Ks ---------------------------------------------------


def _associated_data(step, user):
    return _BOX_LABEL + bytes([step]) + user.encode("utf-8")


def seal(key, step, user, plaintext, nonce):
    """The box of ``plaintext`` for ``step``: nonce || AES-256-GCM ciphertext."""
    return nonce + AESGCM(key).encrypt(nonce, plaintext, _associated_data(step, user))


def open_box(key, step, user, box):
    """Undo :func:`seal`; :class:`CryptoError` if the tag does not verify."""
    nonce, ciphertext = box[: messages.GCM_NONCE_SIZE], box[messages.GCM_NONCE_SIZE :]
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, _associated_data(step, user))
    except InvalidTag:
        raise CryptoError(f"the step {step} box does not decrypt") from None


# --- the per-session RSA key ------------------------------------------------


def generate_rsa_key():
    return rsa.generate_private_key(public_exponent=RSA_PUBLIC_EXPONENT, key_size=messages.RSA_BITS)


def public_key_der(private_key):
    return private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_rsa_public_key(der):
    """pk from step 3: a DER SubjectPublicKeyInfo of an RSA-2048 key with
    e = 65537, in its one canonical encoding."""
    try:
        key = serialization.load_der_public_key(der)
    except UnsupportedAlgorithm:
        # An algorithm OID cryptography does not know; a peer can send any.
        raise CryptoError("not a public key: unknown key algorithm") from None
    except (ValueError, TypeError) as e:
        raise CryptoError(f"not a public key: {e}") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise CryptoError("not an RSA public key")
    numbers = key.public_numbers()
    if key.key_size != messages.RSA_BITS or numbers.e != RSA_PUBLIC_EXPONENT:
        raise CryptoError(f"not an RSA-{messages.RSA_BITS} key with e = {RSA_PUBLIC_EXPONENT}")
    if key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != der:
        raise CryptoError("the public key is not in canonical DER")
    return key


def _oaep():
    return padding.OAEP(
        mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
    )


def rsa_encrypt(public_key, plaintext):
    return public_key.encrypt(plaintext, _oaep())


def rsa_decrypt(private_key, ciphertext):
    try:
        return private_key.decrypt(ciphertext, _oaep())
    except ValueError:
        raise CryptoError("the RSA-OAEP ciphertext does not decrypt") from None


# --- the chat ---------------------------------------------------------------

#: The chat's keys after EKE (:func:`twisted_keyx.chat.records.derive_chat_keys`).
CHAT_LABEL = b"twisted-keyx eke chat"


def derive_chat_keys(session_key, transcript_hash):
    """The chat's two keys, from Ks and the handshake's eight lines."""
    return records.derive_chat_keys(session_key, transcript_hash, CHAT_LABEL)


def random_bytes(size):
    """The OS CSPRNG; the default everywhere an EKE machine needs randomness."""
    return os.urandom(size)
