"""The symmetric primitives and sizes of the configuration (RFC 9807
sections 2.2, 2.3 and 6.4.2): HKDF-SHA512 (RFC 5869), HMAC-SHA512, SHA-512,
and the TLS 1.3 style Expand-Label and Derive-Secret of the 3DH key schedule.
"""

import hashlib
import hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from twisted_keyx.opaque import group, oprf

#: Nn, Nseed: nonces and seeds (RFC 9807 section 2).
NN = 32
NSEED = 32
#: Nh: SHA-512 output; Nm: HMAC-SHA512 output; Nx: HKDF-Extract output.
NH = 64
NM = 64
NX = 64
#: Npk, Nsk: the AKE's public and private keys (ristretto255).
NPK = group.ELEMENT_SIZE
NSK = group.SCALAR_SIZE
#: Noe, Nok: the OPRF's element and private key.
NOE = oprf.NOE
NOK = oprf.NOK


def hash_(data):
    """Hash: SHA-512."""
    return hashlib.sha512(data).digest()


def extract(salt, ikm):
    """HKDF-Extract(salt, ikm), RFC 5869 section 2.2: HMAC-SHA512(salt, ikm)
    (an empty salt is HashLen zeros, which HMAC's key padding gives)."""
    return hmac.new(salt, ikm, hashlib.sha512).digest()


def expand(prk, info, length):
    """HKDF-Expand(prk, info, length), RFC 5869 section 2.3."""
    return HKDFExpand(algorithm=hashes.SHA512(), length=length, info=info).derive(prk)


def mac(key, data):
    """MAC: HMAC-SHA512."""
    return hmac.new(key, data, hashlib.sha512).digest()


def ct_equal(a, b):
    return hmac.compare_digest(a, b)


def xor(a, b):
    """a XOR b, byte strings of one length (as integers: ten times faster
    than byte by byte for the 128-byte masks)."""
    if len(a) != len(b):
        raise ValueError(f"xor of {len(a)} and {len(b)} bytes")
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def expand_label(secret, label, context, length):
    """Expand-Label, RFC 9807 section 6.4.2.1 (after RFC 8446 section 7.1):
    the CustomLabel is uint16 length, opaque label<8..255> = "OPAQUE-" +
    label, uint8 context<0..255>."""
    full_label = b"OPAQUE-" + label
    custom_label = (
        length.to_bytes(2, "big")
        + bytes([len(full_label)])
        + full_label
        + bytes([len(context)])
        + context
    )
    return expand(secret, custom_label, length)


def derive_secret(secret, label, transcript_hash):
    """Derive-Secret(Secret, Label, Transcript-Hash), RFC 9807 section 6.4.2.1."""
    return expand_label(secret, label, transcript_hash, NX)
