"""Hybrid post-quantum groups: ML-KEM-768 and X25519 as one KEM of the DH handshake.

Two constructions share everything but their key generation and their
combiner (docs/protocols.rst, Post-quantum groups):

``xwing``
    X-Wing, draft-connolly-cfrg-xwing-kem: the client's 32-byte secret seed is
    expanded with SHAKE256 into the ML-KEM-768 seed (d || z) and the X25519
    scalar; the shared secret is SHA3-256(ss_M || ss_X || ct_X || pk_X ||
    ``\\./`` ``/^\\``).
``mlkem768x25519-sha256``
    OpenSSH's hybrid (draft-ietf-sshm-mlkem-hybrid-kex): independent ML-KEM-768
    and X25519 keys; the shared secret is SHA-256(ss_M || ss_X).

On the wire, for both (messages 1-3 and 7 are those of every group):

- message 4 is the exact bytes ``Group: xwing`` or
  ``Group: mlkem768x25519-sha256``;
- message 5 is ``Client public key:`` and the 1216-byte encapsulation key
  pk_M || pk_X (ML-KEM-768's 1184 bytes, X25519's 32) in PEM: for X-Wing a
  SubjectPublicKeyInfo with id-XWing (1.3.6.1.4.1.62253.25722), no
  parameters, the key in the BIT STRING (the draft's section "Use in X.509",
  label ``PUBLIC KEY``); for the OpenSSH construction, which has no OID, the
  raw 1216 bytes under the label ``MLKEM768X25519 PUBLIC KEY``;
- message 6 is ``Server public key:`` and the 1120-byte ciphertext ct_M ||
  ct_X (ML-KEM-768's 1088 bytes, then the server's ephemeral X25519 public
  key) as a PEM block of the raw bytes, label ``XWING CIPHERTEXT`` or
  ``MLKEM768X25519 CIPHERTEXT`` (our own armor: no standard one exists);
- the shared secret is the combiner's 32 bytes; the session key is the HKDF
  of every group.

Checks: lengths are exact; ML-KEM-768's encapsulation key check (FIPS 203
section 7.2) is cryptography's (OpenSSL's) when the key is loaded; an X25519
half that is a point of low order is refused on either side (the draft does
not need it for X-Wing's security; an honest peer never sends one, and with
it the X25519 half would add nothing); an ML-KEM ciphertext from another key
is not an error (ML-KEM's implicit rejection: both sides then hold different
keys and the host key signature, or the first chat record, fails).
"""

import base64
import binascii
import functools
import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Optional

from cryptography.hazmat.primitives.asymmetric import mlkem as _mlkem
from cryptography.hazmat.primitives.asymmetric import x25519 as _x25519

from twisted_keyx.groups import api as groupapi
from twisted_keyx.groups import asn1
from twisted_keyx.groups import x25519

MLKEM_PUBLIC_KEY_LENGTH = 1184
MLKEM_CIPHERTEXT_LENGTH = 1088
X25519_LENGTH = x25519.KEY_LENGTH
PUBLIC_KEY_LENGTH = MLKEM_PUBLIC_KEY_LENGTH + X25519_LENGTH  # 1216
CIPHERTEXT_LENGTH = MLKEM_CIPHERTEXT_LENGTH + X25519_LENGTH  # 1120
SECRET_LENGTH = 32
#: X-Wing's decapsulation key: a 32-byte seed.
XWING_SEED_LENGTH = 32
#: The draft's XWingLabel, ``\./`` ``/^\``.
XWING_LABEL = bytes.fromhex("5c2e2f2f5e5c")
#: id-XWing, the draft's section "Use in X.509".
OID_XWING = asn1.oid("1.3.6.1.4.1.62253.25722")

_ALL_ZERO = bytes(X25519_LENGTH)


def _raw_pem_max(length):
    return asn1.pem_length_bound(length)


def _pem_encode(label, data):
    """asn1.pem_encode's bytes (64-character lines), with one base64 call."""
    body = binascii.b2a_base64(data, newline=False)
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return (b"-----BEGIN " + label + b"-----\n" + b"\n".join(lines)
            + b"\n-----END " + label + b"-----\n")


def _canonical_body(data, begin, end, length):
    """The decoded body of ``data`` if it is exactly the PEM that
    :func:`_pem_encode` writes of ``length`` bytes under those lines (what
    every client here sends), else None: the general reader decides."""
    lines = (length + 47) // 48
    if (len(data) != len(begin) + len(end) + 4 * ((length + 2) // 3) + lines
            or not data.startswith(begin) or not data.endswith(end)):
        return None
    body = data[len(begin):-len(end)]
    if body.count(b"\n") != lines:
        return None
    try:
        decoded = base64.b64decode(body.replace(b"\n", b""), validate=True)
    except (binascii.Error, ValueError):
        return None
    return decoded if len(decoded) == length else None


def xwing_combiner(ss_m, ss_x, ct_x, pk_x):
    """X-Wing's combiner: SHA3-256(ss_M || ss_X || ct_X || pk_X || XWingLabel)."""
    return hashlib.sha3_256(ss_m + ss_x + ct_x + pk_x + XWING_LABEL).digest()


def sha256_combiner(ss_m, ss_x, ct_x, pk_x):
    """OpenSSH's mlkem768x25519-sha256: SHA-256(ss_M || ss_X); the X25519
    shares are not hashed here (SSH's exchange hash binds them)."""
    return hashlib.sha256(ss_m + ss_x).digest()


def expand_xwing_seed(seed):
    """X-Wing's expandDecapsulationKey: SHAKE256(seed, 96 bytes) -> the
    ML-KEM-768 seed d || z (64 bytes) and the X25519 scalar (32)."""
    if len(seed) != XWING_SEED_LENGTH:
        raise ValueError(f"an X-Wing seed has {XWING_SEED_LENGTH} bytes, not {len(seed)}")
    expanded = hashlib.shake_256(seed).digest(96)
    return expanded[:64], expanded[64:]


@dataclass(frozen=True, eq=False, repr=False)
class HybridPrivateKey:
    """A client's decapsulation key: the two halves and pk_X (the combiner
    hashes it); ``seed`` is X-Wing's 32-byte decapsulation key, or None."""

    mlkem: object
    x25519: object
    public_key: bytes
    seed: Optional[bytes] = None

    def __repr__(self):
        return "<hybrid.HybridPrivateKey>"  # never the secrets


@dataclass(frozen=True)
class HybridPeerKey:
    """A client's encapsulation key, checked: ML-KEM-768's and X25519's halves."""

    mlkem: object
    x25519: object
    raw: bytes


def _x25519_exchange(private_key, public_raw):
    if x25519.is_low_order(public_raw):
        raise groupapi.InvalidPublicKey("the X25519 half is a point of low order")
    try:
        secret = private_key.exchange(_x25519.X25519PublicKey.from_public_bytes(public_raw))
    except ValueError:  # cryptography's own all-zero check
        raise groupapi.InvalidPublicKey("the X25519 secret would be all zeros") from None
    if hmac.compare_digest(secret, _ALL_ZERO):
        raise groupapi.InvalidPublicKey("the X25519 secret would be all zeros")
    return secret


@dataclass(frozen=True, eq=False)
class HybridGroup(groupapi.Group):
    """ML-KEM-768 + X25519 as one KEM; :data:`XWING` and :data:`MLKEM768X25519`."""

    name: str
    parameters_message: bytes
    #: ``(ss_M, ss_X, ct_X, pk_X) -> 32 bytes``.
    combiner: object
    #: The PEM label of message 5's key and of message 6's ciphertext.
    public_key_label: bytes
    ciphertext_label: bytes
    #: X-Wing's key is a SubjectPublicKeyInfo with this OID; None: raw bytes.
    public_key_oid: Optional[bytes] = None
    #: X-Wing derives both halves from one 32-byte seed.
    from_seed: bool = False
    bits: int = 768
    secret_length: int = SECRET_LENGTH
    post_quantum = True

    @property
    def max_public_key_message(self):
        return _raw_pem_max(PUBLIC_KEY_LENGTH + 32)

    @property
    def max_reply_message(self):
        return _raw_pem_max(CIPHERTEXT_LENGTH)

    # --- keys -------------------------------------------------------------

    def generate_private_key(self):
        if self.from_seed:
            return self.private_key_from_seed(os.urandom(XWING_SEED_LENGTH))
        return self._private_key(_mlkem.MLKEM768PrivateKey.generate(),
                                 _x25519.X25519PrivateKey.generate())

    def private_key_from_seed(self, seed):
        """X-Wing's GenerateKeyPairDerand: the key of the 32-byte ``seed``."""
        mlkem_seed, scalar = expand_xwing_seed(seed)
        return self._private_key(_mlkem.MLKEM768PrivateKey.from_seed_bytes(mlkem_seed),
                                 _x25519.X25519PrivateKey.from_private_bytes(scalar), seed)

    def private_key_from_parts(self, mlkem_seed, scalar):
        """The key of an ML-KEM-768 seed (d || z, 64 bytes) and an X25519
        scalar (32 bytes): test vectors."""
        return self._private_key(_mlkem.MLKEM768PrivateKey.from_seed_bytes(mlkem_seed),
                                 _x25519.X25519PrivateKey.from_private_bytes(scalar))

    @staticmethod
    def _private_key(mlkem_key, x25519_key, seed=None):
        public = (mlkem_key.public_key().public_bytes_raw()
                  + x25519_key.public_key().public_bytes_raw())
        return HybridPrivateKey(mlkem_key, x25519_key, public, seed)

    # --- armor ------------------------------------------------------------

    @functools.cached_property
    def _key_prefix(self):
        """The DER before the 1216 key bytes: the SubjectPublicKeyInfo's
        headers and AlgorithmIdentifier (X-Wing), or nothing (raw)."""
        if self.public_key_oid is None:
            return b""
        algorithm = asn1.encode_sequence(asn1.encode(asn1.OBJECT_IDENTIFIER, self.public_key_oid))
        der = asn1.encode_sequence(algorithm, asn1.encode(
            asn1.BIT_STRING, b"\0" + bytes(PUBLIC_KEY_LENGTH)))
        return der[:-PUBLIC_KEY_LENGTH]

    def encode_public_key(self, raw):
        """Message 5's PEM of the 1216-byte encapsulation key ``raw``."""
        if len(raw) != PUBLIC_KEY_LENGTH:
            raise ValueError(f"a {self.name} key has {PUBLIC_KEY_LENGTH} bytes, not {len(raw)}")
        return _pem_encode(self.public_key_label, self._key_prefix + raw)

    def parse_public_key(self, data):
        """The 1216 raw bytes of message 5's PEM; raises InvalidPublicKey.
        The canonical form (what :meth:`encode_public_key` writes) is read
        directly; anything else goes through the strict general reader."""
        data = bytes(data)
        prefix = self._key_prefix
        der = _canonical_body(data, b"-----BEGIN " + self.public_key_label + b"-----\n",
                              b"-----END " + self.public_key_label + b"-----\n",
                              len(prefix) + PUBLIC_KEY_LENGTH)
        if der is not None and der.startswith(prefix):
            return der[len(prefix):]
        if len(data) > self.max_public_key_message:
            raise groupapi.InvalidPublicKey("public key is too large")
        try:
            if self.public_key_oid is None:
                _, raw = asn1.pem_decode(data, (self.public_key_label,))
            else:
                oid, parameters, raw = asn1.read_public_key_pem(data, self.public_key_label)
                if oid != self.public_key_oid:
                    raise groupapi.InvalidPublicKey(f"not an {self.name} public key")
                parameters.expect_end()  # the draft: parameters MUST be absent
        except asn1.DecodeError as e:
            raise groupapi.InvalidPublicKey(f"not a PEM {self.name} public key: {e}") from None
        if len(raw) != PUBLIC_KEY_LENGTH:
            raise groupapi.InvalidPublicKey(
                f"an {self.name} public key has {PUBLIC_KEY_LENGTH} bytes, not {len(raw)}")
        return raw

    def encode_ciphertext(self, raw):
        """Message 6's PEM of the 1120-byte ciphertext ``raw``."""
        if len(raw) != CIPHERTEXT_LENGTH:
            raise ValueError(
                f"an {self.name} ciphertext has {CIPHERTEXT_LENGTH} bytes, not {len(raw)}")
        return _pem_encode(self.ciphertext_label, raw)

    def parse_ciphertext(self, data):
        """The 1120 raw bytes of message 6's PEM; raises InvalidPublicKey."""
        data = bytes(data)
        raw = _canonical_body(data, b"-----BEGIN " + self.ciphertext_label + b"-----\n",
                              b"-----END " + self.ciphertext_label + b"-----\n",
                              CIPHERTEXT_LENGTH)
        if raw is not None:
            return raw
        if len(data) > self.max_reply_message:
            raise groupapi.InvalidPublicKey("ciphertext is too large")
        try:
            _, raw = asn1.pem_decode(data, (self.ciphertext_label,))
        except asn1.DecodeError as e:
            raise groupapi.InvalidPublicKey(f"not a PEM {self.name} ciphertext: {e}") from None
        if len(raw) != CIPHERTEXT_LENGTH:
            raise groupapi.InvalidPublicKey(
                f"an {self.name} ciphertext has {CIPHERTEXT_LENGTH} bytes, not {len(raw)}")
        return raw

    # --- the seam ---------------------------------------------------------

    def public_key_pem(self, private_key):
        return self.encode_public_key(private_key.public_key)

    def load_peer_key(self, pem):
        """Server side: message 5's key, parsed and checked (ML-KEM-768's
        encapsulation key check, X25519's low-order points)."""
        raw = self.parse_public_key(pem)
        return self.peer_key(raw)

    def peer_key(self, raw):
        """The checked :class:`HybridPeerKey` of 1216 raw bytes."""
        pk_m, pk_x = raw[:MLKEM_PUBLIC_KEY_LENGTH], raw[MLKEM_PUBLIC_KEY_LENGTH:]
        try:
            mlkem_key = _mlkem.MLKEM768PublicKey.from_public_bytes(pk_m)
        except ValueError:
            raise groupapi.InvalidPublicKey(
                "the ML-KEM-768 key fails its check (FIPS 203 section 7.2)") from None
        if x25519.is_low_order(pk_x):
            raise groupapi.InvalidPublicKey("the X25519 half is a point of low order")
        return HybridPeerKey(mlkem_key, pk_x, raw)

    def encapsulate(self, peer_key, private_key_factory=None):
        """Server side: ``(message 6's PEM, shared secret)``.  A KEM draws its
        own randomness: ``private_key_factory`` is not used."""
        ciphertext, secret = self.encapsulate_raw(peer_key)
        return self.encode_ciphertext(ciphertext), secret

    def encapsulate_raw(self, peer_key, ephemeral=None):
        """``(ct_M || ct_X, shared secret)``; ``ephemeral``, an X25519
        private key, replaces the fresh one (the draft's eseed[32:64], for
        test vectors; ML-KEM-768's randomness is always OpenSSL's)."""
        if ephemeral is None:
            ephemeral = _x25519.X25519PrivateKey.generate()
        ct_x = ephemeral.public_key().public_bytes_raw()
        ss_x = _x25519_exchange(ephemeral, peer_key.x25519)
        ss_m, ct_m = peer_key.mlkem.encapsulate()
        return ct_m + ct_x, self.combiner(ss_m, ss_x, ct_x, peer_key.x25519)

    def decapsulate(self, private_key, reply):
        """Client side: the shared secret of message 6's PEM."""
        return self.decapsulate_raw(private_key, self.parse_ciphertext(reply))

    def decapsulate_raw(self, private_key, ciphertext):
        if len(ciphertext) != CIPHERTEXT_LENGTH:
            raise groupapi.InvalidPublicKey(
                f"an {self.name} ciphertext has {CIPHERTEXT_LENGTH} bytes, not {len(ciphertext)}")
        ct_m, ct_x = ciphertext[:MLKEM_CIPHERTEXT_LENGTH], ciphertext[MLKEM_CIPHERTEXT_LENGTH:]
        ss_x = _x25519_exchange(private_key.x25519, ct_x)
        try:
            ss_m = private_key.mlkem.decapsulate(ct_m)
        except ValueError:  # a wrong length only; checked above
            raise groupapi.InvalidPublicKey("the ML-KEM-768 ciphertext is unusable") from None
        return self.combiner(ss_m, ss_x, ct_x, private_key.public_key[MLKEM_PUBLIC_KEY_LENGTH:])


#: X-Wing (draft-connolly-cfrg-xwing-kem).
XWING = HybridGroup(
    name="xwing", parameters_message=b"Group: xwing", combiner=xwing_combiner,
    public_key_label=b"PUBLIC KEY", ciphertext_label=b"XWING CIPHERTEXT",
    public_key_oid=OID_XWING, from_seed=True,
)

#: OpenSSH's mlkem768x25519-sha256.
MLKEM768X25519 = HybridGroup(
    name="mlkem768x25519-sha256", parameters_message=b"Group: mlkem768x25519-sha256",
    combiner=sha256_combiner, public_key_label=b"MLKEM768X25519 PUBLIC KEY",
    ciphertext_label=b"MLKEM768X25519 CIPHERTEXT",
)

GROUPS = (XWING, MLKEM768X25519)

#: Largest message 5 and message 6 bodies of these groups.
MAX_PUBLIC_KEY_PEM = max(g.max_public_key_message for g in GROUPS)
MAX_CIPHERTEXT_PEM = max(g.max_reply_message for g in GROUPS)
