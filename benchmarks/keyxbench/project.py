"""What the benchmark uses from twisted_keyx, in one module.

The library's layout is changing (a group registry in ``twisted_keyx.groups``
beside ``twisted_keyx.ffdh``); the lookups below accept either, so that the
rest of the benchmark names no module of the library.
"""

from twisted_keyx.dh import messages  # noqa: F401  (re-exported)
from twisted_keyx.dh.raw import SERVER_MESSAGES, MessageSplitter, MessageTooLong  # noqa: F401

try:
    from twisted_keyx.dh.protocol import CLIENT_MAX_MESSAGE_LENGTH
except ImportError:  # pragma: no cover - moved by a restructure
    CLIENT_MAX_MESSAGE_LENGTH = 16384

DEFAULT_GROUP = "ffdhe2048"


def named_group(name):
    """The group called ``name`` (``ffdhe2048``, ``x25519``, ...)."""
    try:
        from twisted_keyx import groups
    except ImportError:
        from twisted_keyx import ffdh

        return ffdh.named_group(name)
    return groups.named(name)


def parameters_message(group):
    """Message 4 of the DH handshake for ``group``, as the daemon sends it."""
    message = getattr(group, "parameters_message", None)
    return group.parameters_pem if message is None else message


__all__ = ["CLIENT_MAX_MESSAGE_LENGTH", "DEFAULT_GROUP", "SERVER_MESSAGES", "MessageSplitter",
           "MessageTooLong", "messages", "named_group", "parameters_message"]
