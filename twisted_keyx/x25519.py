"""X25519 (RFC 7748) as a group of the DH handshake.

Messages 1-3, 5 and 6 are those of every group (docs/protocols.rst, DH
handshake); only these differ:

- message 4 is the exact bytes ``Group: x25519`` (13 bytes, no newline);
- public keys are PEM SubjectPublicKeyInfo with the id-X25519 algorithm and
  no parameters (RFC 8410 sections 3 and 4), the 32-byte u-coordinate in the
  BIT STRING;
- the shared secret is the 32-byte X25519 output; the session key is the
  HKDF of every group.

A peer key whose u-coordinate is a point of low order is refused before the
exchange (RFC 7748 section 6.1 asks to check for the all-zero output; the
u-coordinates that give it are known, so they are refused up front, with the
all-zero check after the exchange as well).  The scalar multiplication is
cryptography's.
"""

import hmac
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519 as _x25519

from twisted_keyx import asn1, groupapi

#: Message 4 for this group.
PARAMETERS_MESSAGE = b"Group: x25519"

#: id-X25519, RFC 8410 section 3.
OID_X25519 = asn1.oid("1.3.101.110")
PUBLIC_KEY_LABEL = b"PUBLIC KEY"
KEY_LENGTH = 32
#: The field prime of Curve25519 (RFC 7748 section 4.1).
P = 2**255 - 19

#: The u-coordinates, reduced mod p, of the points of low order on
#: Curve25519 and its twist: 0, 1, p - 1 and the two of order 8 (the
#: "points to reject" of https://cr.yp.to/ecdh.html; libsodium's
#: has_small_order list holds the same values).  A clamped scalar is a
#: multiple of 8, so with any of them X25519 outputs all zeros.  Every
#: 32-byte string whose masked value reduces to one of them is refused, so
#: non-canonical encodings (u + p, the top bit set) are refused too.
LOW_ORDER_U = frozenset({
    0,
    1,
    P - 1,
    325606250916557431795983626356110631294008115727848805560023387167927233504,
    39382357235489614581723060781553021112529911719440698176882885853963445705823,
})

#: Largest PEM public key a peer may send: 44 bytes of DER, CRLF allowed.
MAX_PUBLIC_KEY_PEM = asn1.pem_length_bound(12 + KEY_LENGTH)

_ALL_ZERO = bytes(KEY_LENGTH)


def decode_u(raw):
    """RFC 7748 section 5: mask the top bit, read little-endian, reduce mod p."""
    return (int.from_bytes(raw, "little") & ((1 << 255) - 1)) % P


def parse_public_key_pem(data):
    """The 32 raw bytes of a PEM X25519 SubjectPublicKeyInfo (RFC 8410).

    Strict: one PEM block, DER with no trailing bytes, the id-X25519 OID with
    no parameters, a BIT STRING of exactly 32 bytes.  Raises
    :class:`twisted_keyx.groupapi.InvalidPublicKey`.
    """
    if len(data) > MAX_PUBLIC_KEY_PEM:
        raise groupapi.InvalidPublicKey("public key is too large")
    try:
        _, der = asn1.pem_decode(data, (PUBLIC_KEY_LABEL,))
        outer = asn1.Reader(der)
        spki = outer.read_sequence()
        outer.expect_end()
        algorithm = spki.read_sequence()
        if algorithm.read_oid() != OID_X25519:
            raise groupapi.InvalidPublicKey("not an X25519 public key")
        algorithm.expect_end()  # RFC 8410 section 3: parameters MUST be absent
        raw = spki.read_bit_string()
        spki.expect_end()
    except asn1.DecodeError as e:
        raise groupapi.InvalidPublicKey(f"not a PEM public key: {e}") from None
    if len(raw) != KEY_LENGTH:
        raise groupapi.InvalidPublicKey(f"an X25519 key has {KEY_LENGTH} bytes, not {len(raw)}")
    return raw


def encode_public_key_pem(raw):
    algorithm = asn1.encode_sequence(asn1.encode(asn1.OBJECT_IDENTIFIER, OID_X25519))
    der = asn1.encode_sequence(algorithm, asn1.encode(asn1.BIT_STRING, b"\0" + raw))
    return asn1.pem_encode(PUBLIC_KEY_LABEL, der)


@dataclass(frozen=True, eq=False)
class X25519Group(groupapi.Group):
    """The X25519 group; there is one, :data:`GROUP`."""

    name: str = "x25519"
    bits: int = 255
    secret_length: int = KEY_LENGTH
    parameters_message: bytes = PARAMETERS_MESSAGE
    max_public_key_message: int = MAX_PUBLIC_KEY_PEM

    def generate_private_key(self):
        return _x25519.X25519PrivateKey.generate()

    def private_key_from_bytes(self, raw):
        """The private key of the 32-byte scalar ``raw`` (test vectors)."""
        return _x25519.X25519PrivateKey.from_private_bytes(raw)

    def private_key_from_value(self, x):
        """The private key of scalar ``x`` (little-endian), for tests only."""
        return self.private_key_from_bytes(x.to_bytes(KEY_LENGTH, "little"))

    def public_key_pem(self, private_key):
        return private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def load_peer_key(self, pem):
        """Parse and check a peer's key; refuses the low-order points."""
        raw = parse_public_key_pem(pem)
        if decode_u(raw) in LOW_ORDER_U:
            raise groupapi.InvalidPublicKey("the key is a point of low order")
        return _x25519.X25519PublicKey.from_public_bytes(raw)

    def exchange(self, private_key, peer_key):
        """The 32-byte X25519 output; an all-zero one is refused."""
        try:
            secret = private_key.exchange(peer_key)
        except ValueError:  # cryptography's own all-zero check
            raise groupapi.InvalidPublicKey("the shared secret would be all zeros") from None
        if hmac.compare_digest(secret, _ALL_ZERO):
            raise groupapi.InvalidPublicKey("the shared secret would be all zeros")
        return secret


GROUP = X25519Group()
