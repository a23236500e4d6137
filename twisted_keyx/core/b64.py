"""Strict base64, the one encoding of binary items in line-based messages.

Standard alphabet with padding (RFC 4648 section 4), decoded strictly: no
other character, canonical padding bits (re-encoding gives the same line),
and an exact decoded size where the protocol fixes one.
"""

import base64
import binascii


class MalformedLine(ValueError):
    """A line that is not what its step allows."""


def encode_item(data):
    return base64.b64encode(data)


def decode_item(line, size=None):
    """Strict base64: only the standard alphabet, correct padding, canonical
    (re-encoding gives the same line), and exactly ``size`` bytes if given."""
    try:
        data = base64.b64decode(line, validate=True)
    except (binascii.Error, ValueError):
        raise MalformedLine("not base64") from None
    if base64.b64encode(data) != line:
        raise MalformedLine("not canonical base64")
    if size is not None and len(data) != size:
        raise MalformedLine(f"{len(data)} bytes where {size} are expected")
    return data


def base64_length(size):
    return 4 * ((size + 2) // 3)
