"""The OPRF of RFC 9497 in mode modeOPRF (0x00) with the ciphersuite
ristretto255-SHA512 (RFC 9497 sections 3 and 4.1): the client blinds its
input, the server multiplies by its key, the client unblinds and hashes.
"""

import hashlib

from twisted_keyx.opaque import group
from twisted_keyx.opaque.errors import OpaqueError

MODE_OPRF = 0x00
IDENTIFIER = b"ristretto255-SHA512"

#: RFC 9497 section 3.1 CreateContextString(modeOPRF, "ristretto255-SHA512").
CONTEXT_STRING = b"OPRFV1-" + bytes([MODE_OPRF]) + b"-" + IDENTIFIER

_HASH_TO_GROUP_DST = b"HashToGroup-" + CONTEXT_STRING
_DERIVE_KEY_PAIR_DST = b"DeriveKeyPair" + CONTEXT_STRING

#: Noe, Nok: a serialised element and a private key; Nh: the output.
NOE = group.ELEMENT_SIZE
NOK = group.SCALAR_SIZE
OUTPUT_SIZE = 64


def _i2osp2(n):
    return n.to_bytes(2, "big")


def derive_secret_key(seed, info):
    """skS of DeriveKeyPair(seed, info), RFC 9497 section 3.2.1, without
    computing pkS (the server's OPRF key per user needs only skS)."""
    if len(seed) != group.SCALAR_SIZE:
        raise OpaqueError(f"DeriveKeyPair seed is {group.SCALAR_SIZE} bytes")
    if len(info) > 0xFFFF:
        raise OpaqueError("DeriveKeyPair info too long")
    derive_input = seed + _i2osp2(len(info)) + info
    for counter in range(256):
        sk = group.hash_to_scalar(derive_input + bytes([counter]), _DERIVE_KEY_PAIR_DST)
        if not group.is_zero_scalar(sk):
            return sk
    raise OpaqueError("DeriveKeyPairError")  # pragma: no cover (probability 2^-2000)


def derive_key_pair(seed, info):
    """DeriveKeyPair(seed, info), RFC 9497 section 3.2.1: (skS, pkS)."""
    sk = derive_secret_key(seed, info)
    return sk, group.scalar_mult_gen(sk)


def hash_to_group(data):
    """HashToGroup with DST "HashToGroup-" || contextString."""
    return group.hash_to_group(data, _HASH_TO_GROUP_DST)


def blind(data, rng):
    """Blind(input), RFC 9497 section 3.3.1: (blind, blinded_element)."""
    if len(data) > 0xFFFF:
        raise OpaqueError("OPRF input longer than 65535 bytes")
    r = group.random_scalar(rng)
    input_element = hash_to_group(data)
    if not any(input_element):
        raise OpaqueError("InvalidInputError: the input hashes to the identity")
    return r, group.scalar_mult(r, input_element)


def blind_evaluate(sk, blinded_element):
    """BlindEvaluate(skS, blindedElement), RFC 9497 section 3.3.1."""
    return group.scalar_mult(sk, blinded_element)


def finalize(data, blind_scalar, evaluated_element):
    """Finalize(input, blind, evaluatedElement), RFC 9497 section 3.3.1."""
    n = group.scalar_mult(group.scalar_inverse(blind_scalar), evaluated_element)
    hash_input = _i2osp2(len(data)) + data + _i2osp2(len(n)) + n + b"Finalize"
    return hashlib.sha512(hash_input).digest()
