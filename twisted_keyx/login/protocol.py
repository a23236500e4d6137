"""Twisted protocols and factories for a password handshake and its chat,
whatever the handshake (EKE: :mod:`twisted_keyx.eke.protocol`, OPAQUE:
:mod:`twisted_keyx.opaque.protocol`).

A connection is a :class:`twisted_keyx.core.adapter.Session` over
:class:`~twisted_keyx.core.framing.LineFraming` (LF-delimited lines, each
bounded by the longest one legal in the current state).  On the server the
factory observes it, answers its machine's questions (the user's record,
from an :class:`~twisted_keyx.core.interfaces.IUserStore`), acts on what
it decides (a guess that failed, a login) and logs; the chat
(:mod:`twisted_keyx.chat`) is the machine the handshake decides to go on
with once it has succeeded (:class:`~twisted_keyx.core.decisions.NextMachine`).
On the client the protocol observes itself and fires its Deferreds.
"""

from typing import Any, Callable, Optional, Tuple, Type, Union

from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from twisted_keyx.core.adapter import Observer, Session, hung_up, in_daemon_thread
from twisted_keyx.core.framing import LineFraming
from twisted_keyx.core.interfaces import StoreUnavailable
from twisted_keyx.core.logtext import literal
from twisted_keyx.core.lograte import Bursts
from twisted_keyx.core.machine import StateMachine
from twisted_keyx.core.peers import PeerLogging, printable, source_group
from twisted_keyx.core.decisions import (
    GuessAnswering,
    GuessFailed,
    GuessUnanswered,
    LoggedIn,
    NeedRecord,
    Registered,
)
from twisted_keyx.core.refusals import Refused, TooManyAttempts
from twisted_keyx.core.transcript import session_key_fingerprint


#: Chat lines are logged cut to this many characters (marked).
LOG_LINE_CHARACTERS = 200
#: Chat lines one connection may log at once, then one per LOG_EVERY seconds.
LOG_BURST = 20
LOG_EVERY = 1.0


def shorten(text, limit=LOG_LINE_CHARACTERS):
    """``text`` cut to ``limit`` characters, marked, for the log."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


class LoginServerProtocol(Session):
    """One server connection: the handshake, then, once it has succeeded only, the chat."""

    @property
    def chat(self):
        """The chat machine once the handshake has succeeded, else None."""
        return self.machine if self.machine is not self.handshake else None


class LoginServerFactory(Factory, Observer, PeerLogging):
    """Serves a password handshake (EKE, OPAQUE: a subclass says which with
    :meth:`newHandshake` and :attr:`NAME`) to the users of ``users`` (an
    :class:`~twisted_keyx.core.interfaces.IUserStore`, such as
    :class:`~twisted_keyx.service.userfile.UserFile`), then the chat; logs
    one line per event of a connection.  Behind a connection policy, the lines about a
    handshake that does not log in (rejected, timed out, abandoned) are
    bounded per source (:class:`~twisted_keyx.service.limits.PeerLines`); a
    logged-in user's are not."""

    protocol = LoginServerProtocol
    noisy = False
    log = Logger()
    #: The handshake's name in the log lines ("EKE", "OPAQUE").
    NAME: Optional[str] = None
    #: What the session key is called when it is logged (--show-secrets).
    SESSION_KEY_NAME = "session key"
    #: The failures that end a guess already counted and logged as failed
    #: (EKE's refusal at step 5 of a session doomed at step 3): not logged
    #: again as a rejected handshake.
    COUNTED_FAILURES: Tuple[Type[BaseException], ...] = ()

    def __init__(self, users, show_secrets=False, throttle=None, source_of=None):
        #: The users (an :class:`~twisted_keyx.core.interfaces.IUserStore`).
        self.users = users
        #: An :class:`~twisted_keyx.core.interfaces.IGuessThrottle`, or None.
        self.throttle = throttle
        self.source_of = source_of if source_of is not None else source_group
        self.show_secrets = show_secrets

    def newHandshake(self):
        """A server machine for one connection (each handshake says which)."""
        raise NotImplementedError

    def buildProtocol(self, addr):
        protocol = self.protocol(LineFraming, self.newHandshake())
        protocol.factory = self
        if self.throttle is not None:
            protocol.clock = self.throttle.clock
        return protocol

    def _source(self, session):
        host = getattr(session.transport.getPeer(), "host", None)
        return self.source_of(host) if isinstance(host, str) else session.peer

    # --- the machine's questions: the store and the guess throttle -------------

    def answer(self, session, machine, question):
        if isinstance(question, NeedRecord):
            found = defer.maybeDeferred(self.users.lookup, question.user, question.scheme)
            found.addErrback(self._unavailable, session, question.user, "its record not read")
            return found
        if isinstance(question, GuessAnswering):
            # The answer that tells a guesser whether the password was
            # right: held back as the throttle says, or refused unchecked.
            if self.throttle is None:
                return 0
            reserved = self.throttle.reserve(question.user, self._source(session), session.peer)
            reserved.addErrback(self._unavailable, session, question.user,
                                "the guess refused unchecked")
            return reserved
        return super().answer(session, machine, question)

    def _unavailable(self, reason, session, user, what):
        """A store did not answer the question for ``user``: logged (the
        throttle's own refusal is counted there); the machine refuses with
        its documented reply (:func:`twisted_keyx.core.refusals.store_refusal`)."""
        if reason.check(TooManyAttempts):
            return reason
        if reason.check(StoreUnavailable):
            if not session.ended and self.peerMayLog(session, "rejected"):
                self.log.warn(
                    "{name}: user {user} from {peer}, {what}: the store is unavailable ({why})",
                    name=self.NAME, user=repr(user), peer=session.peer, what=what,
                    why=reason.getErrorMessage())
        else:
            self.log.failure("{name}: a store failed", reason, name=self.NAME)
        return reason

    def machineDecided(self, session, machine, decision):
        if isinstance(decision, GuessFailed):
            self.guessFailed(session, decision)
        elif isinstance(decision, GuessUnanswered):
            if self.throttle is not None:
                self.throttle.release(decision.user, self._source(session))
        elif isinstance(decision, LoggedIn):
            if self.throttle is not None:
                self.throttle.succeeded(decision.user, self._source(session))
            self.userAuthenticated(session.peer, decision.result)
        elif isinstance(decision, Registered):
            self.log.info(self.NAME + ": registered user {user} from {peer} with an invitation",
                          user=repr(decision.user), peer=session.peer)

    def countsGuess(self, decision):
        """Whether this factory counts the failed guess ``decision`` (by the
        throttle, or with its own log line): then the connection's end is
        not logged again."""
        return True

    def guessCounted(self, session):
        """Whether the handshake of ``session`` decided a failed guess that
        this factory counted (:attr:`Session.decisions
        <twisted_keyx.core.adapter.Session.decisions>`)."""
        return any(isinstance(decision, GuessFailed) and self.countsGuess(decision)
                   for decision in session.decisions)

    def guessFailed(self, session, decision):
        """A guess failed (:class:`~twisted_keyx.core.decisions.GuessFailed`):
        counted by the throttle, or logged."""
        why = f"{self.NAME}, {decision.why}"
        if self.throttle is not None:
            self.throttle.failed(decision.user, self._source(session), session.peer, why)
        else:
            self.log.info("Failed guess for user {user} from {peer}: {why}",
                          user=repr(decision.user), peer=session.peer, why=why)

    # --- the observer: one log line per event -----------------------------------

    def machineStepped(self, session, machine, payload, reply):
        if machine is not session.handshake and not machine.finished:
            self.machineSaid(session, machine.said)

    def machineFinished(self, session, machine):
        if machine is not session.handshake:
            self._notLogged(session)
            self.chatEnded(session.peer, session.handshake.user)

    def machineFailed(self, session, machine, failure):
        if machine is session.handshake:
            if isinstance(failure, Refused):
                return  # counted in the throttle's summaries (or logged unavailable)
            if not (isinstance(failure, self.COUNTED_FAILURES) and self.guessCounted(session)):
                if self.peerMayLog(session, "rejected"):
                    self.handshakeRejected(session.peer, failure.reason)
        else:
            self._notLogged(session)
            self.chatFailed(session.peer, session.handshake.user, failure.reason)

    def sessionTimedOut(self, session, machine, seconds):
        if machine is session.handshake:
            if self.peerMayLog(session, "timed out"):
                self.handshakeTimedOut(session.peer, seconds, machine.state.value)
        else:
            self._notLogged(session)
            self.chatIdle(session.peer, session.handshake.user, seconds)

    def sessionLost(self, session, machine, reason):
        if machine is session.handshake:
            if self.guessCounted(session):
                return  # logged as a failed guess; the guesser left with the answer
            if self.peerMayLog(session, "abandoned"):
                self.handshakeAbandoned(session.peer, machine.state.value)
        else:
            self._notLogged(session)
            self.chatCutShort(session.peer, session.handshake.user)

    def userAuthenticated(self, peer, result):
        if self.show_secrets:
            self.log.info(
                self.NAME + ": user {user} from {peer} authenticated; "
                + self.SESSION_KEY_NAME + ": {session_key}",
                user=printable(result.user), peer=peer, session_key=result.session_key.hex(),
            )
        else:
            # This line, the chat's and the quit are a login's usual lines:
            # their text is made here (twisted_keyx.core.logtext).
            user, key = printable(result.user), session_key_fingerprint(result.session_key)
            self.log.info(
                literal(f"{self.NAME}: user {user} from {peer} authenticated; "
                        f"session key fingerprint {key}"),
                user=user, peer=peer, fingerprint=key,
            )

    def _clock(self):
        if self.throttle is not None:
            return self.throttle.clock
        from twisted.internet import reactor
        return reactor

    #: The chat lines' log-rate limiter, per session (made at first use,
    #: on the throttle's clock if there is one).
    _chatLines = None

    def _chatBursts(self):
        """A connection logs at most LOG_BURST chat lines at once, then one
        per LOG_EVERY seconds; the others are counted and said before the
        next line logged, when the chat ends, or when it has been quiet
        long enough to log LOG_BURST lines again."""
        if self._chatLines is None:
            self._chatLines = Bursts(self._clock(), self._chatLinesNotLogged,
                                     allowance=LOG_BURST, refill=LOG_EVERY,
                                     quiet=LOG_BURST * LOG_EVERY)
        return self._chatLines

    def machineSaid(self, session, text):
        bursts = self._chatBursts()
        if not bursts.event(session):
            return
        bursts.flush(session)
        self.userSaid(session.peer, session.handshake.user, text)

    def _notLogged(self, session):
        """The chat ends: say how many of its lines were not logged, if any."""
        if self._chatLines is not None:
            self._chatLines.end(session)

    def _chatLinesNotLogged(self, session, burst, final):
        self.log.info(self.NAME + ": {count} chat line(s) of user {user} from {peer} not logged "
                      "(more than {burst} at once)", count=burst.counted,
                      user=printable(session.handshake.user), peer=session.peer, burst=LOG_BURST)

    def userSaid(self, peer, user, text):
        # A user name is printable, but its backslashes are escaped too, so
        # that the name \x1b\n does not read as the escape character.
        user, line = printable(user), shorten(printable(text))
        self.log.info(literal(f"User {user} say: {line}"), user=user, line=line)

    def chatEnded(self, peer, user):
        user = printable(user)
        self.log.info(literal(f"{self.NAME}: user {user} from {peer} quit"), user=user, peer=peer)

    def chatFailed(self, peer, user, reason):
        user = printable(user)
        self.log.info(
            self.NAME + ": chat with user {user} from {peer} broken, closing: {reason}",
            user=user, peer=peer, reason=reason,
        )

    def chatCutShort(self, peer, user):
        user = printable(user)
        self.log.info(
            self.NAME + ": connection of user {user} from {peer} closed without quit "
            "(possibly cut short)",
            user=user, peer=peer,
        )

    def handshakeRejected(self, peer, reason):
        self.log.info(
            self.NAME + " handshake with {peer} failed: {reason}",
            peer=peer, reason=printable(reason),
        )

    def handshakeTimedOut(self, peer, seconds, state):
        self.log.info(
            self.NAME + " handshake with {peer} timed out after {seconds:g} s while {state}",
            peer=peer, seconds=seconds, state=state,
        )

    def chatIdle(self, peer, user, seconds):
        user = printable(user)
        self.log.info(
            self.NAME + ": chat with user {user} from {peer} silent for {seconds:g} s, closing",
            user=user, peer=peer, seconds=seconds,
        )

    def handshakeAbandoned(self, peer, state):
        self.log.info(
            self.NAME + " handshake with {peer} abandoned by the peer while {state}",
            peer=peer, state=state,
        )


class LoginClientProtocol(Session, Observer):
    """The client side; it is its own observer.

    ``authenticated`` fires with the handshake's result (EKE's
    :class:`~twisted_keyx.eke.handshake.EKEResult`) once it has succeeded, or fails with a ``HandshakeFailed`` subclass (``ServerHungUp``
    if the connection ends first).  Then :meth:`say` and :meth:`quit` send;
    each reply is given to ``reply_received(text)``; ``finished`` fires once
    the server has confirmed ``quit``, or fails with ``ChatFailed`` or
    ``ServerHungUp``.  ``disconnected`` fires when the connection is closed,
    whatever happened.
    """

    def __init__(self, handshake: StateMachine,
                 reply_received: Optional[Callable[[str], Any]] = None,
                 worker: Optional[Callable[..., Any]] = None) -> None:
        super().__init__(LineFraming, handshake, observer=self, worker=worker)
        self._replyReceived = reply_received if reply_received is not None else _ignore
        #: Fires with the handshake's result (EKEResult, OPAQUEResult).
        self.authenticated: "defer.Deferred[Any]" = defer.Deferred(self._cancel)
        self.finished: "defer.Deferred[None]" = defer.Deferred(self._cancel)
        self.disconnected: "defer.Deferred[None]" = defer.Deferred()

    @property
    def chat(self):
        """The chat machine once the handshake has succeeded, else None."""
        return self.machine if self.machine is not self.handshake else None

    def _cancel(self, deferred):
        self.abort()

    def say(self, text: str) -> None:
        """Send one chat line (str)."""
        if self.chat is None:
            raise RuntimeError("not authenticated yet")
        if not self.ended:
            self.perform(self.chat.say, text)

    def quit(self) -> None:
        """Send ``quit``; ``finished`` fires when the server confirms it."""
        if self.chat is None:
            raise RuntimeError("not authenticated yet")
        if not self.ended and not self.chat.quitting:
            self.perform(self.chat.quit)

    def _outcome(self, machine):
        return self.authenticated if machine is self.handshake else self.finished

    def machineStepped(self, session, machine, payload, reply):
        if machine is not self.handshake and not machine.finished:
            self._replyReceived(machine.reply)

    def machineFinished(self, session, machine):
        if machine is not self.handshake:
            self.finished.callback(None)

    def machineStarted(self, session, machine):
        self.authenticated.callback(self.handshake.result)

    def machineFailed(self, session, machine, failure):
        self._outcome(machine).errback(failure)

    def sessionLost(self, session, machine, reason):
        during = f"while {machine.state.value}" if machine is self.handshake else "during the chat"
        self._outcome(machine).errback(hung_up(reason, during))

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self.disconnected.callback(None)


def _ignore(text):
    pass


class LoginClientFactory(Factory):
    """Builds :attr:`protocol` for ``user`` and ``password``; other keyword
    arguments go to :attr:`handshake` (the client machine: EKE's
    :class:`~twisted_keyx.eke.handshake.EKEClientHandshake`, OPAQUE's...).

    ``worker`` runs the step that stretches the password (scrypt here,
    Argon2id for OPAQUE: up to seconds) off the reactor thread, so that the
    program, and a timeout on ``authenticated``, run on meanwhile; the
    default, :func:`twisted_keyx.core.adapter.in_daemon_thread`, also lets a
    program that gave up exit without waiting for it.  ``None`` runs it on
    the reactor thread (tests that pump by hand).
    """

    protocol = LoginClientProtocol
    #: The client machine class (a subclass says which).
    handshake: Optional[Type[StateMachine]] = None
    noisy = False

    def __init__(self, user: str, password: Union[str, bytes],
                 reply_received: Optional[Callable[[str], Any]] = None,
                 worker: Optional[Callable[..., Any]] = in_daemon_thread,
                 **handshake_options: Any) -> None:
        self.user = user
        self.password = password
        self.reply_received = reply_received
        self.worker = worker
        self.handshake_options = handshake_options

    def buildProtocol(self, addr):
        handshake = self.handshake(self.user, self.password, **self.handshake_options)
        protocol = self.protocol(handshake, reply_received=self.reply_received,
                                 worker=self.worker)
        protocol.factory = self
        return protocol
