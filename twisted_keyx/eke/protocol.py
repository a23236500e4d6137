"""Twisted protocols and factories for the EKE handshake and its chat.

The logic is in :mod:`twisted_keyx.eke.handshake` and :mod:`twisted_keyx.chat`;
the Twisted side is every password handshake's
(:mod:`twisted_keyx.login.protocol`): a connection is a
:class:`twisted_keyx.core.adapter.Session` over
:class:`~twisted_keyx.core.framing.LineFraming`, observed by the factory on
the server and by itself on the client.
"""

from twisted_keyx.eke.handshake import (  # noqa: F401 (the limits are part of this API)
    CLIENT_LINE_LIMITS,
    SERVER_LINE_LIMITS,
    EKEClientHandshake,
    EKEServerHandshake,
    WrongPassword,
)
from twisted_keyx.eke.records import DecoyUsers
from twisted_keyx.login.protocol import (  # noqa: F401 (part of this API)
    LOG_BURST,
    LOG_EVERY,
    LOG_LINE_CHARACTERS,
    LoginClientFactory,
    LoginClientProtocol,
    LoginServerFactory,
    LoginServerProtocol,
    shorten,
)


class EKEServerProtocol(LoginServerProtocol):
    """One server connection: the handshake, then, after step 8 only, the chat."""


class EKEServerFactory(LoginServerFactory):
    """Serves EKE to the users of ``users`` (an
    :class:`~twisted_keyx.core.interfaces.IUserStore`: only records of the
    ``eke`` scheme are users here); logs one line per event of a
    connection.  Behind a connection policy, the lines about a handshake
    that does not log in (rejected, timed out, abandoned) are bounded per
    source (:class:`~twisted_keyx.service.limits.PeerLines`); a logged-in
    user's are not."""

    protocol = EKEServerProtocol
    NAME = "EKE"
    SESSION_KEY_NAME = "Ks"
    COUNTED_FAILURES = (WrongPassword,)

    def __init__(self, users, hide_unknown_users=False, show_secrets=False,
                 decoys=None, random_bytes=None, throttle=None, source_of=None):
        super().__init__(users, show_secrets=show_secrets, throttle=throttle,
                         source_of=source_of)
        self.hide_unknown_users = hide_unknown_users
        if hide_unknown_users and decoys is None:
            decoys = DecoyUsers()
        self.decoys = decoys if hide_unknown_users else None
        self._handshake_options = {} if random_bytes is None else {"random_bytes": random_bytes}

    def newHandshake(self):
        return EKEServerHandshake(decoys=self.decoys, **self._handshake_options)


class EKEClientProtocol(LoginClientProtocol):
    """The client side (:class:`~twisted_keyx.login.protocol.LoginClientProtocol`);
    ``authenticated`` fires with the :class:`~twisted_keyx.eke.handshake.EKEResult`
    after step 8."""


class EKEClientFactory(LoginClientFactory):
    """Builds :class:`EKEClientProtocol` for ``user`` and ``password``;
    other keyword arguments go to :attr:`handshake` (:class:`EKEClientHandshake`)."""

    protocol = EKEClientProtocol
    handshake = EKEClientHandshake
