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

import time

from twisted.internet import defer

from twisted_keyx.core.decisions import AddUser, NeedInvitation, RedeemInvitation
from twisted_keyx.login.protocol import (
    LoginClientFactory,
    LoginClientProtocol,
    LoginServerFactory,
    LoginServerProtocol,
)
from twisted_keyx.opaque.handshake import (
    AuthenticationFailed,
    OPAQUEClientHandshake,
    OPAQUERegistrationClient,
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

    ``invitations`` (an :class:`~twisted_keyx.core.interfaces.IInvitationStore`,
    or None: no one may register) serves registration with an invitation
    code (docs/opaque.rst, Registration): the code is redeemed once the
    client's record opens under it, then the record is added to ``users``.
    ``clock`` gives the POSIX time invitations expire by.
    """

    protocol = OPAQUEServerProtocol
    #: The log lines are every password handshake's, with these words.
    NAME = "OPAQUE"
    SESSION_KEY_NAME = "session key"
    #: A failed KE3 is a failed guess (a failed login), logged as one when
    #: a throttle counts it.
    COUNTED_FAILURES = (AuthenticationFailed,)

    def __init__(self, users, setup, show_secrets=False, rng=None, login_failed=None,
                 throttle=None, source_of=None, invitations=None, clock=time.time):
        super().__init__(users, show_secrets=show_secrets, throttle=throttle,
                         source_of=source_of)
        self.setup = setup
        self._rng_options = {} if rng is None else {"rng": rng}
        self.login_failed = login_failed
        self.invitations = invitations
        self.invitation_clock = clock

    def newHandshake(self):
        return OPAQUEServerHandshake(self.setup, clock=self.invitation_clock,
                                     **self._rng_options)

    def answer(self, session, machine, question):
        if isinstance(question, NeedInvitation):
            if self.invitations is None:
                return None
            found = defer.maybeDeferred(self.invitations.lookup, question.user)
            found.addErrback(self._unavailable, session, question.user,
                             "its invitation not read")
            return found
        if isinstance(question, RedeemInvitation):
            redeemed = defer.maybeDeferred(self.invitations.redeem, question.user,
                                           question.code_hash, self.invitation_clock())
            redeemed.addErrback(self._unavailable, session, question.user,
                                "its invitation not redeemed")
            return redeemed
        if isinstance(question, AddUser):
            added = defer.maybeDeferred(self.users.add, question.user, question.record)
            added.addCallback(lambda _: None)
            # StoreConflict (the user exists) or a store down: the machine refuses.
            added.addErrback(lambda reason: reason.value)
            return added
        return super().answer(session, machine, question)

    def countsGuess(self, decision):
        # Without a throttle, a failed login is told to login_failed, and
        # the connection's end is logged as for any other.
        return self.throttle is not None

    def guessFailed(self, session, decision):
        # Without a throttle, a client that left after KE2 is logged as
        # having abandoned the handshake, no failed login.
        if decision.left and self.throttle is None:
            return
        self.loginFailed(session.peer, decision.user)
        if self.throttle is not None:
            super().guessFailed(session, decision)

    def sessionTimedOut(self, session, machine, seconds):
        if machine is session.handshake and self.guessCounted(session):
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


class OPAQUERegistrationProtocol(OPAQUEClientProtocol):
    """Registration with an invitation code: ``authenticated`` fires with
    the user name once the server said ``registered``; then it closes."""

    def machineFinished(self, session, machine):
        self.authenticated.callback(machine.result)


class OPAQUERegistrationFactory(LoginClientFactory):
    """Builds :class:`OPAQUERegistrationProtocol` for ``user``, ``password``
    and the invitation ``code``; other keyword arguments go to
    :class:`~twisted_keyx.opaque.handshake.OPAQUERegistrationClient`."""

    protocol = OPAQUERegistrationProtocol
    handshake = OPAQUERegistrationClient

    def __init__(self, user, password, code, **options):
        super().__init__(user, password, code=code, **options)
