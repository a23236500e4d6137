"""Twisted protocols and factories for the OPAQUE handshake and its chat
(docs/protocols.rst, OPAQUE).

The machines are :mod:`twisted_keyx.opaque.handshake`; a connection is a
:class:`twisted_keyx.core.adapter.Session` over
:class:`~twisted_keyx.core.framing.LineFraming`, as for EKE, and the chat after
it is the same (:mod:`twisted_keyx.chat`).  The server factory observes its
sessions and logs as every password handshake's does
(:mod:`twisted_keyx.login.protocol`), with "OPAQUE" in its lines; the
client protocol is the same with OPAQUE's machine.
"""

from twisted_keyx.login.protocol import (
    LoginClientFactory,
    LoginClientProtocol,
    LoginServerFactory,
    LoginServerProtocol,
)
from twisted_keyx.opaque.handshake import (
    AuthenticationFailed,
    OPAQUEClientHandshake,
    OPAQUEServerHandshake,
)


class OPAQUEServerProtocol(LoginServerProtocol):
    """One server connection: the handshake, then, after KE3 only, the chat."""


class OPAQUEServerFactory(LoginServerFactory):
    """Serves OPAQUE to the users of ``users`` (anything with
    ``lookup(name, scheme)``, such as :class:`~twisted_keyx.service.userfile.UserFile`:
    only records of the ``opaque`` scheme are users here) with the server
    setup ``setup``; logs one line per event of a connection.

    ``login_failed(user, peer)`` is called once for every failed login (a
    KE3 that does not verify: wrong password or unknown user; the two are
    not told apart to it).

    ``throttle`` (a :class:`~twisted_keyx.service.throttle.GuessThrottle`, the one
    EKE uses) paces guesses as for EKE.  Here KE2 is the answer that tells a
    guesser whether the password was right (the client opens its envelope
    with it), so KE2 is what is held back; a failed guess is a KE3 that does
    not verify, or a client that leaves after KE2 without sending KE3.
    """

    protocol = OPAQUEServerProtocol
    #: The log lines are every password handshake's, with these words.
    NAME = "OPAQUE"
    SESSION_KEY_NAME = "session key"
    #: A failed KE3 is a failed guess (a failed login), logged as one when
    #: a throttle counts it.
    COUNTED_FAILURES = (AuthenticationFailed,)

    def __init__(self, users, setup, show_secrets=False, rng=None, login_failed=None,
                 throttle=None, source_of=None):
        super().__init__(users, show_secrets=show_secrets, throttle=throttle,
                         source_of=source_of)
        self.setup = setup
        self._rng_options = {} if rng is None else {"rng": rng}
        self.login_failed = login_failed

    def newHandshake(self):
        return OPAQUEServerHandshake(self.setup, **self._rng_options)

    def guessFailed(self, session, decision):
        # Without a throttle, a client that left after KE2 is logged as
        # having abandoned the handshake, no failed login.
        if decision.left and self.throttle is None:
            return
        self.loginFailed(session.peer, decision.user)
        if self.throttle is not None:
            super().guessFailed(session, decision)

    def sessionTimedOut(self, session, machine, seconds):
        if machine is session.handshake and session.guess_counted:
            return  # counted as a failed guess (it left after KE2)
        super().sessionTimedOut(session, machine, seconds)

    def loginFailed(self, peer, user):
        if self.login_failed is not None:
            self.login_failed(user, peer)


class OPAQUEClientProtocol(LoginClientProtocol):
    """The client side, as :class:`~twisted_keyx.login.protocol.LoginClientProtocol`
    (``authenticated``, ``finished``, ``disconnected``, :meth:`say`,
    :meth:`quit`); ``authenticated`` fires with the
    :class:`~twisted_keyx.opaque.handshake.OPAQUEResult`."""


class OPAQUEClientFactory(LoginClientFactory):
    """Builds :class:`OPAQUEClientProtocol` for ``user`` and ``password``;
    other keyword arguments go to :class:`OPAQUEClientHandshake`."""

    protocol = OPAQUEClientProtocol
    handshake = OPAQUEClientHandshake
