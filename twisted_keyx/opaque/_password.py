"""The bytes a password stands for in OPAQUE, the same in registration and
login, in every client (docs/opaque.rst, Passwords).

The rule is RFC 8265's OpaqueString profile (section 4.2) as far as a
third-party client can follow it in a line of code:

1. every non-ASCII space (Unicode general category Zs: U+00A0, U+1680,
   U+2000 to U+200A, U+202F, U+205F, U+3000) becomes U+0020 (the
   additional mapping rule);
2. Unicode Normalization Form C (the normalization rule);
3. the password must not be empty and must not hold control characters
   (category Cc, such as a newline or a tab), which FreeformClass
   disallows and no user means to type;
4. UTF-8.

An ASCII password without controls is its own bytes.  In JavaScript::

    new TextEncoder().encode(
        password.replace(/[\\u00A0\\u1680\\u2000-\\u200A\\u202F\\u205F\\u3000]/g, " ")
                .normalize("NFC"))
"""

import unicodedata

from twisted_keyx.opaque.errors import OpaqueError

MAX_PASSWORD_BYTES = 4096


def prepare_password(password):
    """The OpaqueString-prepared text of ``password`` (str, or UTF-8 bytes);
    :class:`OpaqueError` if it is empty, not UTF-8 or holds a control
    character."""
    if isinstance(password, (bytes, bytearray)):
        try:
            password = bytes(password).decode("utf-8")
        except UnicodeDecodeError:
            raise OpaqueError("the password is not UTF-8 text") from None
    if not isinstance(password, str):
        raise OpaqueError("the password is not text")
    mapped = "".join(" " if c != " " and unicodedata.category(c) == "Zs" else c
                     for c in password)
    prepared = unicodedata.normalize("NFC", mapped)
    if not prepared:
        raise OpaqueError("the password is empty")
    if any(unicodedata.category(c) == "Cc" for c in prepared):
        raise OpaqueError("the password holds a control character (a tab, a newline...)")
    return prepared


def password_bytes(password):
    """UTF-8 of :func:`prepare_password`, at most 4096 bytes."""
    try:
        data = prepare_password(password).encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        raise OpaqueError("the password is not UTF-8 text") from None
    if len(data) > MAX_PASSWORD_BYTES:
        raise OpaqueError(f"the password is longer than {MAX_PASSWORD_BYTES} bytes")
    return data
