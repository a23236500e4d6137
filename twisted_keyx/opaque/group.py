"""The prime-order group ristretto255, as the OPRF ristretto255-SHA512 uses it
(RFC 9497 section 4.1), with the arithmetic from libsodium through ``rbcl``.

Elements and scalars are kept as their 32-byte encodings.  Everything a peer
sends goes through :func:`deserialize_element` or :func:`deserialize_scalar`,
which refuse non-canonical encodings and the identity element (RFC 9497
section 2.1; RFC 9807 section 10.7).

Hashing to the group and to scalars is ours: ``expand_message_xmd`` with
SHA-512 (RFC 9380 section 5.3.1) followed by libsodium's one-way map
(``crypto_core_ristretto255_from_hash``, the map of RFC 9380 appendix B and
RFC 9496 section 4.3.4) or a reduction modulo the group order.
"""

import hashlib

import rbcl

from twisted_keyx.opaque.errors import OpaqueError

#: Ne and Ns: bytes of a serialised element and of a serialised scalar.
ELEMENT_SIZE = 32
SCALAR_SIZE = 32

#: The group order, 2^252 + 27742317777372353535851937790883648493.
ORDER = 2**252 + 27742317777372353535851937790883648493

_SHA512_BLOCK = 128
_SHA512_SIZE = 64


def expand_message_xmd(msg, dst, length):
    """RFC 9380 section 5.3.1 with H = SHA-512 (b_in_bytes 64, s_in_bytes 128)."""
    ell = -(-length // _SHA512_SIZE)
    if ell > 255 or length > 65535 or len(dst) > 255:
        raise OpaqueError("expand_message_xmd: output or DST too long")
    dst_prime = dst + bytes([len(dst)])
    z_pad = bytes(_SHA512_BLOCK)
    l_i_b_str = length.to_bytes(2, "big")
    msg_prime = z_pad + msg + l_i_b_str + b"\x00" + dst_prime
    b_0 = hashlib.sha512(msg_prime).digest()
    b_i = hashlib.sha512(b_0 + b"\x01" + dst_prime).digest()
    uniform = [b_i]
    for i in range(2, ell + 1):
        mixed = bytes(x ^ y for x, y in zip(b_0, b_i))
        b_i = hashlib.sha512(mixed + bytes([i]) + dst_prime).digest()
        uniform.append(b_i)
    return b"".join(uniform)[:length]


def hash_to_group(msg, dst):
    """hash_to_ristretto255 (RFC 9380 appendix B): 64 uniform bytes, then
    the ristretto255 one-way map."""
    return rbcl.crypto_core_ristretto255_from_hash(expand_message_xmd(msg, dst, 64))


def hash_to_scalar(msg, dst):
    """RFC 9497 section 4.1: 64 bytes of expand_message_xmd read as a
    little-endian integer, reduced modulo the group order."""
    return rbcl.crypto_core_ristretto255_scalar_reduce(expand_message_xmd(msg, dst, 64))


def random_scalar(rng):
    """A uniformly random non-zero scalar from ``rng(32)``.

    The order is within 2^125 of 2^252, so a 252-bit random integer is an
    acceptable scalar without a rejection test (RFC 9497 section 4.7.1):
    the top four bits are cleared, and only zero is drawn again.  A test's
    rng that returns a vector's scalar gets exactly that scalar back."""
    while True:
        candidate = bytearray(rng(SCALAR_SIZE))
        if len(candidate) != SCALAR_SIZE:
            raise OpaqueError("the random source returned the wrong number of bytes")
        candidate[31] &= 0x0F
        if any(candidate):
            return bytes(candidate)


def is_zero_scalar(scalar):
    return not any(scalar)


def deserialize_scalar(data):
    """RFC 9497 section 4.1 DeserializeScalar: 32 bytes, little-endian,
    below the order (so the top three bits are zero)."""
    if len(data) != SCALAR_SIZE:
        raise OpaqueError(f"a scalar is {SCALAR_SIZE} bytes, not {len(data)}")
    if int.from_bytes(data, "little") >= ORDER:
        raise OpaqueError("scalar out of range")
    return bytes(data)


def deserialize_element(data):
    """RFC 9497 section 4.1 DeserializeElement: RFC 9496 Decode (canonical
    encodings only), refusing the identity element."""
    if len(data) != ELEMENT_SIZE:
        raise OpaqueError(f"an element is {ELEMENT_SIZE} bytes, not {len(data)}")
    data = bytes(data)
    # is_valid_point refuses non-canonical encodings but accepts the
    # identity, whose only encoding is 32 zero bytes (RFC 9496 section 4.3.1).
    if not any(data):
        raise OpaqueError("the identity element is not acceptable")
    if not rbcl.crypto_core_ristretto255_is_valid_point(data):
        raise OpaqueError("not a valid ristretto255 element")
    return data


def scalar_mult(scalar, element):
    """scalar * element; :class:`OpaqueError` if the product is the identity
    (RFC 9807 section 10.7: a DH result must not be the identity)."""
    try:
        return rbcl.crypto_scalarmult_ristretto255(scalar, element)
    except (RuntimeError, ValueError, TypeError) as e:
        raise OpaqueError("scalar multiplication gave the identity") from e


def scalar_mult_gen(scalar):
    """ScalarMultGen(scalar): scalar times the generator."""
    try:
        return rbcl.crypto_scalarmult_ristretto255_base(scalar)
    except (RuntimeError, ValueError, TypeError) as e:
        raise OpaqueError("scalar multiplication gave the identity") from e


def scalar_inverse(scalar):
    try:
        return rbcl.crypto_core_ristretto255_scalar_invert(scalar)
    except (ValueError, TypeError) as e:
        raise OpaqueError("the zero scalar has no inverse") from e
