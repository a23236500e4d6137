"""The bytes a password stands for, in every password handshake."""

import unicodedata


def normalize_password(password):
    """The bytes a password stands for: UTF-8 of its NFC form (as RFC 8265's
    OpaqueString does), so the same typed password gives the same key on
    every system."""
    if isinstance(password, bytes):
        password = password.decode("utf-8")
    return unicodedata.normalize("NFC", password).encode("utf-8")
