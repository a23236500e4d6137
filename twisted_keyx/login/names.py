"""User names on the wire, and the one failure line every password
handshake sends (docs/protocols.rst, EKE and OPAQUE)."""

from twisted_keyx.core.b64 import MalformedLine
from twisted_keyx.core.machine import AUTHENTICATION_FAILED_REPLY

#: The one reply for every failure of a login (after EKE's step 1, and any
#: of OPAQUE's).
FAILURE_REPLY = AUTHENTICATION_FAILED_REPLY

MAX_USER_NAME_BYTES = 64


def check_user_name(name):
    """Raise :class:`MalformedLine` unless ``name`` (str) is a legal user
    name: 1 to 64 bytes of UTF-8, printable, without whitespace."""
    size = len(name.encode("utf-8", "surrogatepass"))
    if not 1 <= size <= MAX_USER_NAME_BYTES:
        raise MalformedLine(f"a user name has 1 to {MAX_USER_NAME_BYTES} bytes, not {size}")
    if not name.isprintable() or any(c.isspace() for c in name):
        raise MalformedLine("a user name is printable and has no whitespace")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedLine("a user name is valid UTF-8") from None
    return name


def parse_user_name(line):
    """A user name as sent (bytes) as str, or :class:`MalformedLine`."""
    if len(line) > MAX_USER_NAME_BYTES:
        raise MalformedLine(f"user name longer than {MAX_USER_NAME_BYTES} bytes")
    try:
        name = line.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedLine("user name is not UTF-8") from None
    return check_user_name(name)
