"""The session adapter: one Twisted protocol for every handshake.

A :class:`Session` is a Twisted protocol that owns three parts and holds
no protocol logic of its own:

- a **framing** (:mod:`twisted_keyx.core.framing`): bytes in, messages out, and
  back;
- a sans-I/O **machine** (:mod:`twisted_keyx.core.machine`): ``feed(payload)``
  returns the reply (or None), ``start()`` gives a client's first message,
  ``finished``, ``result`` (a reply may be a tuple of messages, sent in
  order), ``max_message_length`` (the longest message it
  may legally receive next) and a ``state`` whose ``.value`` reads well in a
  log;
- an **observer**, told of each outcome (see :class:`Observer`): the
  factory on a server, an object that fires Deferreds on a client.

When the machine finishes, it may have decided the next machine with its
last step (:class:`~twisted_keyx.core.decisions.NextMachine`: the chat after
a password handshake, :mod:`twisted_keyx.chat`); once the observer has been
told that the machine finished, the session tells the connection policy
that the handshake is over (:func:`twisted_keyx.core.peers.handshake_finished`)
and goes on with it.  When there is none, the session closes.  When the machine fails, its failure's
``reply`` (if any) is sent, the observer is told, and the session closes.

A session may carry a ``tracer`` (:mod:`twisted_keyx.observe.trace`): it is told
of every message in and out, with the machine and its state before and after
(``tracer.message(session, direction, machine, before, after, payload)``,
``direction`` ``"in"`` or ``"out"``; docs/protocols.rst, "Traces").

Once closed, a session reads nothing more: what the peer still sends is
dropped unread, and the framing, with whatever it had buffered, is let go.

Back-pressure: a session is a streaming producer on its transport (Twisted's
producers and consumers).  When the transport's send buffer is full (the peer
does not read its replies), the transport pauses the session, which stops
reading from the peer until the buffer has drained: a peer that sends and
never reads costs one buffer's worth of replies, not all of them.  An
observer may also hold a session's replies back for a while
(:meth:`Session.holdReplies`, the guess throttle): it reads nothing
meanwhile either.

Questions and decisions (:mod:`twisted_keyx.core.decisions`): a machine's
step may return, besides the messages to send, typed decisions, which the
session records (:attr:`Session.decisions`) and acts on in order
(:class:`~twisted_keyx.core.decisions.HoldReplies`,
:class:`~twisted_keyx.core.decisions.NextMachine`) or tells its observer of
(:meth:`Observer.machineDecided`), and it may ask
a question it needs answered to go on (the user's record, whether a guess
may be answered, the group of message 4).  The observer answers
(:meth:`Observer.answer`), at once or with a Deferred (a store over a
network); meanwhile the session reads nothing and queues what the framing
had already cut, over-long messages included, as during a slow step: one
pause-and-queue for both.  Observers never parse a message or look at a
machine's state: what they must know, the machine decides and says.

Slow steps: a machine names the states whose next input takes long
(``SLOW_STATES``: a client's scrypt or Argon2id).  A session given a
``worker`` (:func:`in_daemon_thread`) feeds that input in a thread and reads nothing until it is done, so that the reactor, and the
client's ``--timeout``, run on meanwhile; if the session ended in between,
the step's outcome is dropped.
"""

import enum

from twisted.internet import defer
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twisted_keyx.core.decisions import HoldReplies, NextMachine, Question
from twisted_keyx.core.machine import ProtocolFailed, ServerHungUp
from twisted_keyx.core.peers import describe_peer, handshake_finished


class PauseReason(enum.Enum):
    """Why a session has stopped reading (:attr:`Session.paused`)."""

    #: The transport's buffer is full (we are its producer).
    TRANSPORT = "transport"
    #: Replies are held back (:meth:`Session.holdReplies`).
    HELD = "held"
    #: What the step needs runs elsewhere: a slow step in a thread, or the
    #: answer to a machine's question (a store, the group check of a DH
    #: client): the one pause-and-queue.
    WORKING = "working"

_log = Logger()


def in_daemon_thread(function, *args):
    """A session's ``worker`` (:attr:`Session.worker`): ``function(*args)``
    in a thread of its own, its outcome a Deferred fired on the reactor.

    A daemon thread, not the reactor's thread pool: a program that gives up
    on a handshake (its timeout) and exits does not wait for a password's
    key stretching (seconds, at the client's ceiling) to finish first.  Only
    for pure computation, which may then be cut off at exit.
    """
    import threading

    from twisted.internet import reactor
    from twisted.python.failure import Failure

    done = defer.Deferred()

    def run():
        try:
            result = function(*args)
        except BaseException:
            reactor.callFromThread(done.errback, Failure())
        else:
            reactor.callFromThread(done.callback, result)

    threading.Thread(target=run, name="twisted-keyx slow step", daemon=True).start()
    return done


class Observer:
    """What a session tells its observer; every method is optional here.

    ``machine`` is the machine concerned (the handshake, or the layer after
    it), so that one observer can word each layer's outcomes.
    """

    def sessionStarted(self, session):
        """The connection is made; ``session.peer`` is known."""

    def machineReceiving(self, session, machine, payload):
        """``machine`` is about to take ``payload`` from the peer: the
        observer may end the session (:meth:`Session.fail`) first."""

    def answer(self, session, machine, question):
        """The answer to ``question`` (a :class:`~twisted_keyx.core.decisions.Question`
        of ``machine``): a value, or a Deferred of it (the session reads
        nothing until it fires; a failure is handed to the machine as the
        exception, for it to refuse with).  A machine asks only what its
        observer can answer."""
        raise NotImplementedError(f"{type(self).__name__} cannot answer {question!r}")

    def machineDecided(self, session, machine, decision):
        """``machine`` decided ``decision`` (a
        :class:`~twisted_keyx.core.decisions.Decision` the session does not
        act on itself: a guess failed...)."""

    def machineStepped(self, session, machine, payload, reply):
        """``machine`` took ``payload`` from the peer and answered ``reply``
        (None: nothing)."""

    def machineFinished(self, session, machine):
        """``machine`` is done (its ``result`` is set).  The machine it
        decided carries on next (:class:`~twisted_keyx.core.decisions.NextMachine`),
        or the session closes."""

    def machineStarted(self, session, machine):
        """``machine``, the next machine the one before decided
        (:class:`~twisted_keyx.core.decisions.NextMachine`), has taken over."""

    def machineFailed(self, session, machine, failure):
        """``machine`` failed with ``failure`` (a :class:`ProtocolFailed`);
        its reply, if any, has been sent and the connection is closing."""

    def sessionTimedOut(self, session, machine, seconds):
        """The connection policy is about to abort the connection."""

    def sessionLost(self, session, machine, reason):
        """The connection ended before ``machine`` was done; ``reason`` is
        Twisted's (:func:`hung_up` words it for a client)."""


def hung_up(reason, during):
    """The :class:`ServerHungUp` for ``connectionLost(reason)``; ``during``
    says what was under way (``"while awaiting Hey there!"``)."""
    if reason.check(ConnectionDone, ConnectionLost):
        why = "the server closed the connection"
    else:
        why = f"the connection failed: {reason.getErrorMessage()}"
    return ServerHungUp(f"{why} {during}")


@implementer(IPushProducer)
class Session(Protocol):
    """One connection: a framing, a machine, an observer.

    ``framing`` is a framing class (it is built with the session and the
    machine's first limit) or a callable ``framing(session)`` returning a
    framing; ``observer`` defaults to the factory, set by ``buildProtocol``.
    """

    #: Told of every message in and out (:mod:`twisted_keyx.observe.trace`), or None.
    tracer = None
    #: What the session's machines decided, in order
    #: (:mod:`twisted_keyx.core.decisions`; not the questions): the typed
    #: record of the connection an observer reads (a guess that failed).
    decisions: tuple = ()
    #: The machine that carries on once this one is done (its
    #: :class:`~twisted_keyx.core.decisions.NextMachine`), or None.
    _following = None
    #: Runs a slow step (the machine's ``slow``: a client's password key
    #: stretching) off the reactor thread: ``worker(function, payload)``
    #: returns a Deferred of ``function(payload)``, as :func:`in_daemon_thread`
    #: (the client factories' default) and
    #: :func:`twisted.internet.threads.deferToThread` do; None: every step
    #: runs here, at once.
    worker = None

    def __init__(self, framing, machine, observer=None, tracer=None, worker=None):
        if tracer is not None:
            self.tracer = tracer
        if worker is not None:
            self.worker = worker
        self._framing_factory = framing
        self.machine = machine
        #: The first machine: the handshake (the chat, if any, comes after).
        self.handshake = machine
        self._observer = observer
        self.framing = None
        self.peer = None
        self.ended = False
        #: Why reading is paused (:class:`PauseReason` members); reading
        #: resumes when empty.
        self.paused = set()
        #: What arrived while paused, and whether the transport was paused.
        self._incoming = b""
        self._transportPaused = False
        self._held = None
        self._holdTimer = None
        self._closeAfterHold = False
        #: The connection's end, when it came during a slow step, and the
        #: messages that came then (a tuple: an over-long one's length and
        #: limit; None: no slow step runs).
        self._lostWhileWorking = None
        self._queued = None
        #: A step waits for something that runs elsewhere (see _wait).
        self._waiting = False
        #: The clock of :meth:`holdReplies` (the reactor unless set).
        self.clock = None

    def replaceHandshake(self, machine):
        """Run ``machine`` instead of the one given (before the connection is made)."""
        if self.framing is not None:
            raise RuntimeError("the session has started")
        self.machine = self.handshake = machine

    @property
    def observer(self):
        return self._observer if self._observer is not None else self.factory

    # --- the framing's limit, for tests and the connection policy -----------

    @property
    def MAX_LENGTH(self):
        return self.framing.MAX_LENGTH if self.framing is not None else 0

    @property
    def buffered(self):
        """Bytes received and not yet handed to the machine (0 once closed)."""
        return self.framing.buffered if self.framing is not None else 0

    def _updateLimit(self):
        if self.framing is not None:
            self.framing.MAX_LENGTH = self.machine.max_message_length

    # --- Twisted's side --------------------------------------------------------

    def connectionMade(self):
        self.peer = describe_peer(self.transport.getPeer())
        self.framing = self._framing_factory(self, self.machine.max_message_length)
        self.framing.attach(self.transport)
        self.transport.registerProducer(self, True)
        self.observer.sessionStarted(self)
        start = getattr(self.machine, "start", None)
        if start is not None:
            self._step(lambda payload: start(), None, from_peer=False)

    #: Bytes kept unread while paused before the transport itself is paused.
    #: A TLS transport pauses its producer until its own handshake is done,
    #: and would never finish it if we stopped it reading then.
    INCOMING_LIMIT = 65536

    def dataReceived(self, data):
        if self.ended:
            return  # hung up: what the peer still sends is dropped unread
        if self.paused:
            self._incoming += data
            if len(self._incoming) > self.INCOMING_LIMIT and not self._transportPaused:
                self._transportPaused = True
                self.transport.pauseProducing()
            return
        self.framing.dataReceived(data)

    def connectionLost(self, reason):
        self._cancelHold()
        if PauseReason.WORKING in self.paused and not self.ended:
            # A slow step is running: it, and what came before the close,
            # are handled first (a server's refusal, then its hang-up).
            self._lostWhileWorking = reason
            return
        self._lost(reason)

    def _lost(self, reason):
        if not self.ended:
            self.ended = True
            self._dropFraming()
            self._abandoned()
            self.observer.sessionLost(self, self.machine, reason)

    def _abandoned(self):
        """The peer left the machine where it is: what the machine decides
        of that (a guess counted as failed) goes to the observer first."""
        for decision in self.machine.abandoned() or ():
            self.decisions += (decision,)
            self.observer.machineDecided(self, self.machine, decision)

    # --- the transport's side, as a consumer of our replies --------------------

    def pauseProducing(self):
        """The transport's buffer is full: stop reading until it drains."""
        self._pause(PauseReason.TRANSPORT)

    def resumeProducing(self):
        self._resume(PauseReason.TRANSPORT)

    def stopProducing(self):
        pass  # the connection is going: connectionLost follows

    def _pause(self, why):
        self.paused.add(why)

    def _resume(self, why):
        self.paused.discard(why)
        if self.paused or self.ended:
            return
        if self._transportPaused:
            self._transportPaused = False
            self.transport.resumeProducing()
        incoming, self._incoming = self._incoming, b""
        if incoming:
            self.dataReceived(incoming)

    def holdReplies(self, seconds):
        """Send nothing and read nothing for ``seconds`` (on :attr:`clock`):
        what the session sends meanwhile, failure reply and hang-up
        included, goes out when they have passed.  Never blocks."""
        if self.ended or seconds <= 0 or self._held is not None:
            return
        clock = self.clock
        if clock is None:
            from twisted.internet import reactor as clock
        self._held = []
        self._pause(PauseReason.HELD)
        self._holdTimer = clock.callLater(seconds, self._releaseHeld)

    def _releaseHeld(self):
        self._holdTimer = None
        held, self._held = self._held, None
        framing = self.framing or getattr(self, "_heldFraming", None)
        for payload in held:
            framing.send(payload)
        if self._closeAfterHold:
            self._closeAfterHold = False
            self._heldFraming = None
            self.transport.unregisterProducer()
            self.transport.loseConnection()
            return
        self._resume(PauseReason.HELD)

    def _cancelHold(self):
        if self._holdTimer is not None and self._holdTimer.active():
            self._holdTimer.cancel()
        self._holdTimer = None
        self._held = None
        self._heldFraming = None

    def connectionTimedOut(self, phase, seconds):
        """Called by :mod:`twisted_keyx.service.limits` just before it closes a
        peer that took too long; the observer words it.  A machine that can
        say why (the chat's ``closing``, for the idle timeout) sends that
        last message first; then True: the guard closes gracefully, so that
        the message is delivered, instead of aborting."""
        if self.ended:
            return False
        self.ended = True
        closing = getattr(self.machine, "closing", None)
        said = False
        if closing is not None and self.framing is not None and not self.machine.finished:
            message = closing(f"no line for {seconds:g} s")
            self._trace("out", self.machine, self.machine.state, message)
            self._send(message)
            said = True
        self._dropFraming()
        self._abandoned()
        self.observer.sessionTimedOut(self, self.machine, seconds)
        return said

    # --- the framing's side ----------------------------------------------------

    def messageReceived(self, payload):
        if self.ended:
            return
        if self._queued is not None:
            # A slow step runs; the framing had more in the same read.
            self._queued.append(payload)
            return
        self._step(self.machine.feed, payload, from_peer=True)

    def messageTooLong(self, length, limit):
        """The framing found a message longer than the machine allows."""
        if self._queued is not None:
            # A slow step runs, and its machine is not to be touched here:
            # this is refused after the step, in order.
            self._queued.append((length, limit))
            return
        template = self.framing.TOO_LONG[self.machine.PEER]
        self.fail(self.machine.too_long(template.format(length=length, limit=limit)))

    # --- the program's side ----------------------------------------------------

    def send(self, payload):
        """Send one message (a chat line the local user typed, say)."""
        if not self.ended:
            self._trace("out", self.machine, self.machine.state, payload)
            self._send(payload)

    def _send(self, payload):
        if self._held is not None:
            self._held.append(payload)
        else:
            self.framing.send(payload)

    def perform(self, action, *args):
        """Run a local action of the machine (``chat.say``, with ``args``) and
        send what it returns."""
        self._step(lambda payload: action(*args), None, from_peer=False)

    def fail(self, failure):
        """End the session with ``failure`` (a :class:`ProtocolFailed`): send
        its reply, if any, tell the observer, close."""
        if self.ended:
            return
        if failure.reply is not None:
            self._trace("out", self.machine, self.machine.state, failure.reply)
            self._send(failure.reply)
        self.close()
        for decision in failure.decisions:
            self.decisions += (decision,)
            self.observer.machineDecided(self, self.machine, decision)
        self.observer.machineFailed(self, self.machine, failure)

    def close(self):
        """Hang up (gracefully: what was sent is delivered first)."""
        if not self.ended:
            self.ended = True
            if self._held is not None:
                # Held replies go first, then the hang-up (see holdReplies).
                self._heldFraming = self.framing
                self._closeAfterHold = True
                self.framing.detach()
                self.framing = None
                return
            self._dropFraming()
            # A paused producer would keep a graceful close waiting forever.
            self.transport.unregisterProducer()
            self.transport.loseConnection()

    def abort(self):
        """Hang up at once (a cancelled client handshake)."""
        self._cancelHold()
        if not self.ended:
            self.ended = True
            self._dropFraming()
        self.transport.abortConnection()

    # --- the machine's side ----------------------------------------------------

    def _step(self, action, payload, from_peer):
        machine = self.machine
        if from_peer:
            self.observer.machineReceiving(self, machine, payload)
            if self.ended or machine is not self.machine:
                return
        before = machine.state
        if from_peer and self.worker is not None and machine.slow:
            # Off the reactor thread; nothing is read meanwhile, and the
            # machine is not touched here until the step is done.
            self._wait()
            outcome = defer.maybeDeferred(self.worker, action, payload)
            outcome.addCallbacks(self._workDone, self._workFailed,
                                 callbackArgs=(machine, before, payload),
                                 errbackArgs=(machine, before, payload))
            outcome.addErrback(self._workBroke)
            return
        try:
            reply = action(payload)
        except ProtocolFailed as failure:
            self._stepFailed(machine, before, payload, from_peer, failure)
            return
        self._stepped(machine, before, payload, from_peer, reply)

    def _wait(self):
        """Something the step needs runs elsewhere (a slow step in a thread,
        an answer from a store): read nothing, queue what the framing had
        already cut, until :meth:`_afterWork`.  The one pause-and-queue of
        a session."""
        self._pause(PauseReason.WORKING)
        self._waiting = True
        if self._queued is None:
            self._queued = []

    # --- questions and decisions (twisted_keyx.core.decisions) -----------------

    def _ask(self, machine, before, payload, from_peer, question):
        """``machine`` asked ``question``: its observer answers, at once or
        later (a Deferred), and the machine goes on with the answer."""
        answer = self.observer.answer(self, machine, question)
        if isinstance(answer, defer.Deferred):
            if not answer.called or answer.paused:
                self._wait()
                answer.addBoth(self._answered, machine, before, payload, from_peer, question)
                answer.addErrback(self._workBroke)
                return
            outcome = []
            answer.addBoth(outcome.append)  # answered already: go on now
            answer = outcome[0]
            if isinstance(answer, Failure):
                answer = answer.value
        self._continue(machine, before, payload, from_peer, question, answer)

    def _answered(self, answer, machine, before, payload, from_peer, question):
        if isinstance(answer, Failure):
            if answer.check(defer.CancelledError):
                # The question was withdrawn (the session is ending): the
                # step goes no further, and what came after it is dropped.
                self._queued = []
                self._afterWork()
                return None
            answer = answer.value
        if not self.ended and machine is self.machine:
            self._waiting = False
            self._continue(machine, before, payload, from_peer, question, answer)
            if self._waiting:
                return None  # another question, or a slow step: its end carries on
        self._afterWork()
        return None

    def _continue(self, machine, before, payload, from_peer, question, answer):
        try:
            output = machine.answer(question, answer)
        except ProtocolFailed as failure:
            self._stepFailed(machine, before, payload, from_peer, failure)
            return
        self._stepped(machine, before, payload, from_peer, output)

    def _decided(self, machine, decision):
        """Act on a decision that is no message and no question."""
        self.decisions += (decision,)
        if isinstance(decision, HoldReplies):
            self.holdReplies(decision.seconds)
        elif isinstance(decision, NextMachine):
            self._following = decision.machine
        else:
            self.observer.machineDecided(self, machine, decision)

    def _workDone(self, reply, machine, before, payload):
        # If the session ended meanwhile (timed out, cancelled), there is
        # nothing to say.
        if not self.ended and machine is self.machine:
            self._waiting = False
            self._stepped(machine, before, payload, True, reply)
            if self._waiting:
                return  # the step asked a question: its answer carries on
        self._afterWork()

    def _workFailed(self, reason, machine, before, payload):
        if not reason.check(ProtocolFailed):
            self._broke(reason, "a slow step of {machine} failed", machine=type(machine).__name__)
            return
        if not self.ended and machine is self.machine:
            self._stepFailed(machine, before, payload, True, reason.value)
        self._afterWork()

    def _workBroke(self, reason):
        # A bug in what handled the step's outcome (an observer, the tracer,
        # a message that came meanwhile).
        self._broke(reason, "handling a slow step's outcome failed")

    def _broke(self, reason, text, **fields):
        """A bug around a slow step: as Twisted ends a connection whose
        handler raised, lost with the bug as the reason (so that the
        observer, a client's outcome, is told now), and nothing is left
        paused for the step."""
        _log.failure(text, reason, **fields)
        if not self.ended:
            self._lost(reason)
            self.abort()
        self._afterWork()

    def _afterWork(self):
        """After a slow step: what arrived meanwhile, in order (messages the
        framing had already cut, then the bytes kept unread), then the
        connection's end if it came; another slow step among them stops
        this until it is done."""
        lost, self._lostWhileWorking = self._lostWhileWorking, None
        queued, self._queued = self._queued, None
        self._waiting = False
        self.paused.discard(PauseReason.WORKING)
        while queued and not self.ended:
            item = queued.pop(0)
            if isinstance(item, tuple):  # what messageTooLong queued
                self.messageTooLong(*item)
            elif len(item) > self.MAX_LENGTH:
                # Cut under the limit before the step; the state now is
                # the one to allow it or not, as the framing would have.
                self.messageTooLong(len(item), self.MAX_LENGTH)
            else:
                self.messageReceived(item)
            if self._queued is not None:  # another slow step began
                self._queued, self._lostWhileWorking = queued, lost
                return
        self._resume(PauseReason.WORKING)
        if PauseReason.WORKING in self.paused:
            self._lostWhileWorking = lost
        elif lost is not None:
            self._lost(lost)

    def _stepFailed(self, machine, before, payload, from_peer, failure):
        if from_peer:
            self._trace("in", machine, before, payload)
        if machine is self.machine:
            self.fail(failure)

    def _stepped(self, machine, before, payload, from_peer, reply):
        if isinstance(reply, Question):
            # The step goes on once answered (and is traced then, whole).
            self._ask(machine, before, payload, from_peer, reply)
            return
        if from_peer:
            self._trace("in", machine, before, payload)
        if self.ended or machine is not self.machine:
            return
        # Several messages may answer one event (messages 6 and 7 of the DH
        # handshake with a host key): each goes out as its own message, and
        # the decisions among them are acted on in order.
        for message in (reply if isinstance(reply, tuple) else (reply,)):
            if message is None:
                continue
            if isinstance(message, bytes):
                self._trace("out", machine, before, message)
                self._send(message)
            else:
                self._decided(machine, message)
                if self.ended or machine is not self.machine:
                    return
        if from_peer:
            self.observer.machineStepped(self, machine, payload, reply)
            if self.ended or machine is not self.machine:
                return
        if machine.finished:
            following, self._following = self._following, None
            self.observer.machineFinished(self, machine)
            if self.ended:
                return
            if following is None:
                self.close()
                return
            self.machine = following
            self._updateLimit()
            # The handshake deadline stops here; the idle timeout starts.
            handshake_finished(self.transport)
            self.observer.machineStarted(self, following)
            return
        self._updateLimit()

    def _trace(self, direction, machine, before, payload):
        if self.tracer is not None:
            self.tracer.message(self, direction, machine, before, machine.state, payload)

    def _dropFraming(self):
        self._incoming = b""
        if self.framing is not None:
            self.framing.detach()
            self.framing = None
