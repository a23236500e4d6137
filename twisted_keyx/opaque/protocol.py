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
from twisted.internet.error import ConnectionDone

from twisted_keyx.core.adapter import hung_up
from twisted_keyx.core.decisions import (
    NeedInvitation,
    PasswordChanged,
    Register,
    RegistrationRefused,
    ReplaceUser,
)
from twisted_keyx.core.interfaces import StoreUnavailable
from twisted_keyx.core.logtext import literal
from twisted_keyx.core.peers import printable
from twisted_keyx.core.refusals import Refused
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
from twisted_keyx.opaque.passwd import PasswordNotChanged


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
    code (docs/opaque.rst, Registration): once the client's record opens
    under the code, the store redeems the code and adds the user in one
    call (``invitations.register``: both or neither), so the invitation
    store adds to the users ``users`` reads (the user file beside it, the
    same database).
    ``clock`` gives the POSIX time invitations expire by.

    A logged-in user may change the password in the chat
    (:mod:`twisted_keyx.opaque.passwd`): the new record replaces the one
    the login used with ``users.replace`` (a compare-and-swap), and the
    change is logged.
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
        if isinstance(question, Register):
            # The code redeemed and the user added in one store call, both
            # or neither (IInvitationStore.register).
            if self.invitations is None:
                return False
            registered = defer.maybeDeferred(self.invitations.register, question.user,
                                             question.code_hash, self.invitation_clock(),
                                             question.record)
            registered.addErrback(self._notRegistered, session, question.user)
            return registered
        if isinstance(question, ReplaceUser):
            if getattr(self.users, "replace", None) is None:
                return NotImplementedError("this server's user store cannot replace records")
            replaced = defer.maybeDeferred(self.users.replace, question.user, question.old,
                                           question.new)
            replaced.addCallback(lambda _: None)
            # StoreConflict (changed meanwhile) or a store down: not changed.
            replaced.addErrback(lambda reason: reason.value)
            return replaced
        return super().answer(session, machine, question)

    def _notRegistered(self, reason, session, user):
        """A registration the store did not make: a store down is logged as
        for any question; a user that exists (StoreConflict) or a write the
        store refused is the machine's to refuse and log."""
        if reason.check(StoreUnavailable):
            return self._unavailable(reason, session, user, "its registration not stored")
        return reason.value

    def countsGuess(self, decision):
        # Without a throttle, a failed login is told to login_failed, and
        # the connection's end is logged as for any other.
        return self.throttle is not None

    def registrationRefused(self, session):
        """Whether the handshake of ``session`` decided a refused registration
        (logged as such: the connection's end is not logged again)."""
        return any(isinstance(decision, RegistrationRefused) for decision in session.decisions)

    def machineDecided(self, session, machine, decision):
        if isinstance(decision, PasswordChanged):
            user = printable(decision.user)
            self.log.info(literal(f"OPAQUE: user {user} from {session.peer} changed the password"),
                          user=user, peer=session.peer)
        elif isinstance(decision, RegistrationRefused):
            # Anyone may send register lines: bounded per source as the
            # other lines about strangers (twisted_keyx.service.limits.PeerLines).
            if not self.peerMayLog(session, "registration refused"):
                return
            self.log.info("OPAQUE: registration of user {user} from {peer} refused: {why}",
                          user=repr(decision.user), peer=session.peer, why=decision.why)
        else:
            super().machineDecided(session, machine, decision)

    def machineStepped(self, session, machine, payload, reply):
        if machine is not session.handshake and machine.said is None:
            return  # a step of a change of password, not a chat line
        super().machineStepped(session, machine, payload, reply)

    def machineFailed(self, session, machine, failure):
        if machine is session.handshake and self.registrationRefused(session):
            return  # logged as a refused registration
        if machine is not session.handshake and isinstance(failure, (PasswordNotChanged,
                                                                     Refused)):
            self._notLogged(session)
            self.log.info("OPAQUE: password of user {user} from {peer} not changed, closing: "
                          "{reason}", user=printable(session.handshake.user),
                          peer=session.peer, reason=failure.reason)
            return
        super().machineFailed(session, machine, failure)

    def sessionLost(self, session, machine, reason):
        if machine is session.handshake and self.registrationRefused(session):
            return  # logged as a refused registration
        super().sessionLost(session, machine, reason)

    def guessFailed(self, session, decision):
        # Without a throttle, a client that left after KE2 is logged as
        # having abandoned the handshake, no failed login.
        if decision.left and self.throttle is None:
            return
        self.loginFailed(session.peer, decision.user)
        if self.throttle is not None:
            super().guessFailed(session, decision)

    def sessionTimedOut(self, session, machine, seconds):
        if machine is session.handshake and (self.guessCounted(session)
                                             or self.registrationRefused(session)):
            return  # counted as a failed guess (it left after KE2), or a refused registration
        super().sessionTimedOut(session, machine, seconds)

    def loginFailed(self, peer, user):
        if self.login_failed is not None:
            self.login_failed(user, peer)


class OPAQUEClientProtocol(LoginClientProtocol):
    """The client side, as :class:`~twisted_keyx.login.protocol.LoginClientProtocol`
    (``authenticated``, ``finished``, ``disconnected``, :meth:`say`,
    :meth:`quit`); ``authenticated`` fires with the
    :class:`~twisted_keyx.opaque.handshake.OPAQUEResult`.  Once logged in,
    :meth:`passwd` changes the password."""

    _changing = None

    def passwd(self, new_password):
        """Change the password to ``new_password`` (docs/opaque.rst, Changing
        the password): a Deferred firing with None once the server has
        stored the new record, or failing with
        :class:`~twisted_keyx.opaque.passwd.PasswordNotChanged` (the old
        password still works), a refusal, or ``ServerHungUp`` (the change
        may or may not have been stored).  ``ValueError`` at once for a
        password that cannot be one."""
        if self.chat is None:
            raise RuntimeError("not authenticated yet")
        if self._changing is not None and not self._changing.called:
            raise RuntimeError("a change of password is under way")
        changing = self._changing = defer.Deferred(self._cancel)
        try:
            self.perform(self.chat.passwd, new_password)
        except BaseException:
            self._changing = None
            raise
        if self.ended and not changing.called:
            changing.errback(hung_up(ConnectionDone(), "before the change of password"))
        return changing

    def machineDecided(self, session, machine, decision):
        if isinstance(decision, PasswordChanged) and self._changing is not None:
            changing, self._changing = self._changing, None
            changing.callback(None)

    def machineStepped(self, session, machine, payload, reply):
        if machine is not self.handshake and machine.reply is None:
            return  # a step of a change of password
        super().machineStepped(session, machine, payload, reply)

    def _passwdFailed(self, failure):
        changing, self._changing = self._changing, None
        if changing is not None and not changing.called:
            changing.errback(failure)

    def machineFailed(self, session, machine, failure):
        self._passwdFailed(failure)
        super().machineFailed(session, machine, failure)

    def sessionLost(self, session, machine, reason):
        if self._changing is not None:
            self._passwdFailed(hung_up(reason, (
                "after the new record was sent, before the server confirmed it: the new "
                "password may or may not be stored (try it)")
                if getattr(machine, "record_sent", False) else
                "before the new record was sent: the password is not changed"))
        super().sessionLost(session, machine, reason)


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
