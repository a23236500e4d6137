"""The bytes a password stands for, as every password handshake uses them."""

from twisted_keyx.login.password import normalize_password
from twisted_keyx.opaque.errors import OpaqueError

MAX_PASSWORD_BYTES = 4096


def password_bytes(password):
    """UTF-8 of the NFC form (twisted_keyx.login.password.normalize_password)."""
    try:
        data = normalize_password(password)
    except (UnicodeDecodeError, TypeError):
        raise OpaqueError("the password is not UTF-8 text") from None
    if len(data) > MAX_PASSWORD_BYTES:
        raise OpaqueError(f"the password is longer than {MAX_PASSWORD_BYTES} bytes")
    return data
