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

from twisted_keyx.core.refusals import Refused
from twisted_keyx.login.protocol import (
    LoginClientFactory,
    LoginClientProtocol,
    LoginServerFactory,
    LoginServerProtocol,
)
from twisted_keyx.opaque.handshake import (
    OPAQUEClientHandshake,
    OPAQUEServerHandshake,
    OPAQUEServerState,
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

    def __init__(self, users, setup, show_secrets=False, rng=None, login_failed=None,
                 throttle=None, source_of=None):
        super().__init__(users, show_secrets=show_secrets, throttle=throttle,
                         source_of=source_of)
        self.setup = setup
        self._rng_options = {} if rng is None else {"rng": rng}
        self.login_failed = login_failed

    def lookupUser(self, name):
        return self.users.lookup(name, scheme="opaque")

    def newHandshake(self):
        return OPAQUEServerHandshake(self.setup, self.lookupUser, **self._rng_options)

    # --- the guess throttle (twisted_keyx.service.throttle) ----------------------------

    def machineReceiving(self, session, machine, payload):
        if (self.throttle is None or machine is not session.handshake
                or machine.state is not OPAQUEServerState.AWAIT_KE1):
            return
        # Message 1 is base64(KE1), a space, the user name: the name decides
        # the pace before KE2, the answer, is computed.  A malformed line is
        # refused by the machine whatever its "name" here.
        user = payload.rpartition(b" ")[2].decode("utf-8", "replace")
        return self._paceAnswer(session, machine, user, "before KE2")

    def machineStepped(self, session, machine, payload, reply):
        if machine is not session.handshake:
            super().machineStepped(session, machine, payload, reply)
        else:
            self._answered(session)

    def machineFailed(self, session, machine, failure):
        if machine is not session.handshake:
            super().machineFailed(session, machine, failure)
            return
        if isinstance(failure, Refused):
            return  # counted in the throttle's summaries (or logged unavailable)
        if self.throttle is not None:
            self._releaseUnanswered(session)
        if machine.answered:
            # After KE2 (before it, a malformed KE1 taught the client
            # nothing): the one place a failed login is reported, with user
            # and source.
            self.loginFailed(session.peer, machine.user)
            if self.throttle is not None:
                session.guess_counted = True
                self.throttle.failed(machine.user, self._source(session), session.peer,
                                     "OPAQUE, KE3 does not verify")
                return
        if self.peerMayLog(session, "rejected"):
            self.handshakeRejected(session.peer, failure.reason)

    def sessionLost(self, session, machine, reason):
        if self._leftAfterKE2(session, machine):
            return
        super().sessionLost(session, machine, reason)

    def sessionTimedOut(self, session, machine, seconds):
        if self._leftAfterKE2(session, machine):
            return
        super().sessionTimedOut(session, machine, seconds)

    def _leftAfterKE2(self, session, machine):
        """A client that got KE2 and never sent KE3 may have learnt from it
        that its guess was wrong: counted as a failed guess."""
        if (self.throttle is None or machine is not session.handshake
                or machine.state is not OPAQUEServerState.AWAIT_KE3):
            return False
        self.loginFailed(session.peer, machine.user)
        self.throttle.failed(machine.user, self._source(session), session.peer,
                             "OPAQUE, left after KE2 without KE3")
        return True

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
