"""What the benchmark uses from twisted_keyx, in one module, so that the
rest of the benchmark names no module of the library."""

from twisted_keyx import groups
from twisted_keyx.dh import messages  # noqa: F401  (re-exported)
from twisted_keyx.dh.protocol import CLIENT_MAX_MESSAGE_LENGTH  # noqa: F401
from twisted_keyx.dh.raw import SERVER_MESSAGES, MessageSplitter, MessageTooLong  # noqa: F401

from twisted_keyx.dh import hostauth  # noqa: F401  (re-exported)
from twisted_keyx.session import Transcript  # noqa: F401  (re-exported)

DEFAULT_GROUP = groups.DEFAULT


def named_group(name):
    """The group called ``name`` (``ffdhe2048``, ``x25519``, ...)."""
    return groups.named(name)


def parameters_message(group):
    """Message 4 of the DH handshake for ``group``, as the daemon sends it."""
    return group.parameters_message


def dh_client_protocol():
    """The library's framed DH client protocol (``.finished`` fires with the result)."""
    from twisted_keyx.dh.protocol import DHClientProtocol

    return DHClientProtocol


class _EKE:
    """The EKE pieces, imported when first asked for."""

    def __getattr__(self, name):
        from twisted_keyx.eke import crypto, userstore
        from twisted_keyx.eke.handshake import EKEClientHandshake, EKEServerHandshake

        from twisted_keyx.chat.machine import ClientChat, ServerChat
        self.__dict__.update(crypto=crypto, userstore=userstore, ClientChat=ClientChat,
                             ServerChat=ServerChat, EKEClientHandshake=EKEClientHandshake,
                             EKEServerHandshake=EKEServerHandshake)
        return self.__dict__[name]


#: ``eke.crypto``, ``eke.userstore``, ``eke.EKEClientHandshake``,
#: ``eke.EKEServerHandshake``, ``eke.ClientChat``, ``eke.ServerChat``.
eke = _EKE()


def cheap_scrypt():
    """scrypt parameters that cost next to nothing (the server never runs
    scrypt; a cheap one keeps the load generator from being the limit)."""
    return eke.crypto.ScryptParameters(n=16, r=2, p=1)


def write_user_file(path, user, password):
    """A user file with one user whose scrypt is cheap."""
    users = eke.userstore
    users.write_users(path, {user: users.new_user(user, password, kdf=cheap_scrypt())})


def bench_users(user, password):
    """An in-memory user lookup table with one cheap user."""
    return {user: eke.userstore.new_user(user, password, kdf=cheap_scrypt())}


__all__ = ["CLIENT_MAX_MESSAGE_LENGTH", "DEFAULT_GROUP", "SERVER_MESSAGES", "MessageSplitter",
           "MessageTooLong", "bench_users", "cheap_scrypt", "dh_client_protocol", "eke",
           "messages", "named_group", "parameters_message", "write_user_file"]
