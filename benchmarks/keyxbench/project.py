"""What the benchmark uses from twisted_keyx, in one module, so that the
rest of the benchmark names no module of the library."""

from twisted_keyx.groups import registry as groups
from twisted_keyx.dh import messages  # noqa: F401  (re-exported)
from twisted_keyx.dh.protocol import CLIENT_MAX_MESSAGE_LENGTH  # noqa: F401
from twisted_keyx.dh.raw import SERVER_MESSAGES, MessageSplitter, MessageTooLong  # noqa: F401

from twisted_keyx.dh import hostauth  # noqa: F401  (re-exported)
from twisted_keyx.core.transcript import Transcript  # noqa: F401  (re-exported)
from twisted_keyx.groups.registry import InvalidPublicKey  # noqa: F401  (re-exported)
from twisted_keyx.core.logtext import literal  # noqa: F401  (re-exported)
from twisted_keyx.core.peers import describe_peer  # noqa: F401  (re-exported)
from twisted_keyx.core.transcript import derive_session_key, session_key_fingerprint  # noqa: F401  (re-exported)

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
        from twisted_keyx.eke import crypto
        from twisted_keyx.service import userfile as userstore
        from twisted_keyx.eke.handshake import EKEClientHandshake, EKEServerHandshake

        from twisted_keyx.chat.machine import ClientChat, ServerChat
        self.__dict__.update(crypto=crypto, userstore=userstore, ClientChat=ClientChat,
                             ServerChat=ServerChat, EKEClientHandshake=EKEClientHandshake,
                             EKEServerHandshake=EKEServerHandshake)
        return self.__dict__[name]


#: ``eke.crypto``, ``eke.userstore``, ``eke.EKEClientHandshake``,
#: ``eke.EKEServerHandshake``, ``eke.ClientChat``, ``eke.ServerChat``.
eke = _EKE()


class _OPAQUE:
    """The OPAQUE pieces, imported when first asked for."""

    def __getattr__(self, name):
        from twisted_keyx import opaque
        from twisted_keyx.chat.records import derive_chat_keys
        from twisted_keyx.core.machine import HandshakeFailed, ProtocolFailed
        from twisted_keyx.opaque import handshake, scheme

        self.__dict__.update(
            Argon2idParameters=opaque.Argon2idParameters, KsfLimits=opaque.KsfLimits,
            ClientLogin=opaque.ClientLogin, ServerLogin=opaque.ServerLogin,
            ServerSetup=opaque.ServerSetup,
            OPAQUEClientHandshake=handshake.OPAQUEClientHandshake,
            OPAQUEServerHandshake=handshake.OPAQUEServerHandshake,
            HandshakeFailed=HandshakeFailed, OK=handshake.OK,
            FAILURE_REPLY=handshake.FAILURE_REPLY, ProtocolFailed=ProtocolFailed,
            CHAT_LABEL=handshake.CHAT_LABEL, derive_chat_keys=derive_chat_keys, scheme=scheme)
        return self.__dict__[name]


#: ``opaque.Argon2idParameters``, ``opaque.KsfLimits``, ``opaque.ClientLogin``,
#: ``opaque.ServerLogin``,
#: ``opaque.ServerSetup``, ``opaque.OPAQUEClientHandshake``,
#: ``opaque.OPAQUEServerHandshake``, ``opaque.HandshakeFailed``,
#: ``opaque.OK``, ``opaque.FAILURE_REPLY``, ``opaque.ProtocolFailed`` (what
#: a handshake or chat machine raises), ``opaque.CHAT_LABEL``,
#: ``opaque.derive_chat_keys``, ``opaque.scheme``.
opaque = _OPAQUE()


def cheap_argon2id():
    """The cheapest Argon2id there is (8 KiB, one pass, one lane): the
    server never runs the KSF, the client does, and a cheap one keeps the
    load generator from being the limit."""
    return opaque.Argon2idParameters(memory_cost=8, iterations=1, lanes=1)


def cheap_ksf_limits():
    """Client limits that accept :func:`cheap_argon2id` (the defaults refuse
    anything under 19 MiB)."""
    return opaque.KsfLimits(min_memory_cost=8, min_work=8)


def create_opaque_key_file(path):
    """The daemon's OPAQUE key file (``--opaque-key``, mode 0600) at ``path``,
    its default cost :func:`cheap_argon2id` (so its fake record's too);
    returns the :class:`ServerSetup`."""
    return opaque.scheme.create_key_file(path, default_ksf=cheap_argon2id())


def opaque_bench_user(name, password, setup):
    """An OPAQUE user registered with ``setup`` (its cheap default cost), as
    ``keyx-admin adduser --scheme opaque`` registers one."""
    return opaque.scheme.new_user(name, password, setup)


def cheap_scrypt():
    """scrypt parameters that cost next to nothing (the server never runs
    scrypt; a cheap one keeps the load generator from being the limit)."""
    return eke.crypto.ScryptParameters(n=16, r=2, p=1)


def write_user_file(path, user, password, opaque_users=()):
    """A user file with one EKE user whose scrypt is cheap, and the OPAQUE
    users ``opaque_users`` (records, :func:`opaque_bench_user`)."""
    users = eke.userstore
    records = {user: users.new_user(user, password, kdf=cheap_scrypt())}
    records.update((record.name, record) for record in opaque_users)
    users.write_users(path, records)


def bench_users(user, password):
    """An in-memory user lookup table with one cheap user."""
    return {user: eke.userstore.new_user(user, password, kdf=cheap_scrypt())}


__all__ = ["CLIENT_MAX_MESSAGE_LENGTH", "DEFAULT_GROUP", "SERVER_MESSAGES", "MessageSplitter",
           "MessageTooLong", "bench_users", "cheap_argon2id", "cheap_ksf_limits", "cheap_scrypt",
           "create_opaque_key_file", "dh_client_protocol", "eke", "messages", "named_group",
           "opaque", "opaque_bench_user", "parameters_message", "write_user_file"]
