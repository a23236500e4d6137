"""Strict DER and PEM for the few structures the handshakes exchange.

Only what is needed is here: SEQUENCE, INTEGER, OBJECT IDENTIFIER and
BIT STRING, read strictly (definite minimal lengths, minimal non-negative
integers, no trailing bytes) and written in DER.  No cryptography happens in
this module; it turns bytes a peer controls into numbers, or refuses them with
:class:`DecodeError`, and is safe to feed anything (see ``tests/test_asn1.py``).

Why not let ``cryptography`` parse?  Two reasons.  ``cryptography`` 50 re-runs
the full DH parameter check (a primality test, ~280 ms for a 2048-bit
``openssl dhparam`` group) every time it loads a key, and it cannot read the
``ValidationParms`` that ``openssl genpkey -genparam`` writes into
``X9.42 DH PARAMETERS``.  Parsing here lets :mod:`twisted_keyx.groups.ffdh` check a
peer key against the group before any expensive work.
"""

import base64
import binascii
import math

SEQUENCE = 0x30
INTEGER = 0x02
BIT_STRING = 0x03
OBJECT_IDENTIFIER = 0x06


class DecodeError(ValueError):
    """The bytes are not the DER or PEM structure that was expected."""


class Reader:
    """Reads DER elements one after another from a bytes buffer."""

    def __init__(self, data):
        self._data = memoryview(bytes(data))
        self._pos = 0

    def at_end(self):
        return self._pos == len(self._data)

    def expect_end(self):
        if not self.at_end():
            raise DecodeError("trailing data after DER element")

    def read_element(self):
        """Return ``(tag, contents)`` of the next element."""
        data, pos = self._data, self._pos
        if len(data) - pos < 2:
            raise DecodeError("truncated DER element")
        tag = data[pos]
        first = data[pos + 1]
        pos += 2
        if first < 0x80:
            length = first
        else:
            count = first & 0x7F
            # 0x80 is BER's indefinite length; DER forbids it.  Four length
            # bytes are far more than any structure here needs.
            if count == 0 or count > 4:
                raise DecodeError("unsupported DER length form")
            if len(data) - pos < count:
                raise DecodeError("truncated DER length")
            length = int.from_bytes(data[pos:pos + count], "big")
            if length < 0x80 or data[pos] == 0:
                raise DecodeError("non-minimal DER length")
            pos += count
        if len(data) - pos < length:
            raise DecodeError("truncated DER contents")
        self._pos = pos + length
        return tag, bytes(data[pos:pos + length])

    def read(self, expected_tag):
        tag, contents = self.read_element()
        if tag != expected_tag:
            raise DecodeError(f"expected DER tag 0x{expected_tag:02x}, got 0x{tag:02x}")
        return contents

    def read_sequence(self):
        return Reader(self.read(SEQUENCE))

    def read_integer(self):
        """Read a non-negative INTEGER in minimal encoding."""
        return integer_from_contents(self.read(INTEGER))

    def read_oid(self):
        """Return the raw contents of an OBJECT IDENTIFIER (compare with :func:`oid`)."""
        return self.read(OBJECT_IDENTIFIER)

    def read_bit_string(self):
        contents = self.read(BIT_STRING)
        if not contents or contents[0] != 0:
            raise DecodeError("BIT STRING with unused bits")
        return contents[1:]


def integer_from_contents(contents):
    """The value of a non-negative INTEGER's contents in minimal encoding."""
    if not contents:
        raise DecodeError("empty INTEGER")
    if contents[0] & 0x80:
        raise DecodeError("negative INTEGER")
    if len(contents) > 1 and contents[0] == 0 and not contents[1] & 0x80:
        raise DecodeError("non-minimal INTEGER")
    return int.from_bytes(contents, "big")


def oid(dotted):
    """Encode a dotted OID string as the contents of an OBJECT IDENTIFIER."""
    arcs = [int(part) for part in dotted.split(".")]
    out = bytearray()
    # X.690 8.19.4: the first two arcs share one subidentifier, 40 * X + Y,
    # base-128 encoded like the others (it exceeds 127 under arc 2).
    for arc in [40 * arcs[0] + arcs[1]] + arcs[2:]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.append(0x80 | (arc & 0x7F))
            arc >>= 7
        out.extend(reversed(chunk))
    return bytes(out)


def encode(tag, contents):
    length = len(contents)
    if length < 0x80:
        header = bytes([tag, length])
    else:
        size = (length.bit_length() + 7) // 8
        header = bytes([tag, 0x80 | size]) + length.to_bytes(size, "big")
    return header + contents


def encode_integer(value):
    if value < 0:
        raise ValueError("only non-negative integers are encoded here")
    # One extra byte when the top bit is set keeps the INTEGER non-negative.
    return encode(INTEGER, value.to_bytes(value.bit_length() // 8 + 1, "big"))


def encode_sequence(*elements):
    return encode(SEQUENCE, b"".join(elements))


def pem_encode(label, der):
    body = base64.encodebytes(der).replace(b"\n", b"")
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return b"".join(
        [b"-----BEGIN " + label + b"-----\n"]
        + [line + b"\n" for line in lines]
        + [b"-----END " + label + b"-----\n"]
    )


def read_public_key_pem(data, label=b"PUBLIC KEY"):
    """Read a PEM SubjectPublicKeyInfo (RFC 5280 4.1.2.7) strictly.

    Returns ``(algorithm_oid, parameters, key)``: the OID's contents (compare
    with :func:`oid`), a :class:`Reader` over what follows the OID in the
    AlgorithmIdentifier (the caller reads the parameters, if any, and calls
    ``expect_end``), and the BIT STRING's bytes.  Raises :class:`DecodeError`.
    """
    _, der = pem_decode(data, (label,))
    outer = Reader(der)
    spki = outer.read_sequence()
    outer.expect_end()
    parameters = spki.read_sequence()
    algorithm_oid = parameters.read_oid()
    key = spki.read_bit_string()
    spki.expect_end()
    return algorithm_oid, parameters, key


def pem_length_bound(der_bound):
    """Upper bound on the PEM size of ``der_bound`` bytes of DER (CRLF allowed)."""
    body = 4 * math.ceil(der_bound / 3)
    return body + 2 * math.ceil(body / 64) + 96


def pem_decode(data, labels):
    """Decode a single PEM block whose label is one of ``labels``.

    Surrounding whitespace is allowed (the socket tutorial's reader strips it:
    docs/protocols.rst, "Unframed wire"), so are
    CRLF line ends; anything else outside the block is refused.  Returns
    ``(label, der)``.
    """
    lines = bytes(data).strip().splitlines()
    if len(lines) < 2:
        raise DecodeError("not a PEM block")
    begin, end = lines[0].strip(), lines[-1].strip()
    if not (begin.startswith(b"-----BEGIN ") and begin.endswith(b"-----")):
        raise DecodeError("PEM block does not start with a BEGIN line")
    label = begin[len(b"-----BEGIN "):-len(b"-----")]
    if label not in labels:
        raise DecodeError(f"unexpected PEM label {label.decode('ascii', 'replace')!r}")
    if end != b"-----END " + label + b"-----":
        raise DecodeError("PEM block does not end with the matching END line")
    try:
        # As written (no line has spaces around it), the lines joined are
        # the body; else the body is the lines stripped.
        der = base64.b64decode(b"".join(lines[1:-1]), validate=True)
    except (binascii.Error, ValueError):
        body = b"".join(line.strip() for line in lines[1:-1])
        try:
            der = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise DecodeError("PEM body is not valid base64") from None
    if not der:
        raise DecodeError("empty PEM body")
    return label, der
