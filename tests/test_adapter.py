"""The session adapter (twisted_keyx.core.adapter) with a toy machine: what it
sends, what it tells its observer, and what it keeps once it has hung up."""

import enum

from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest

from twisted_keyx.service import limits
from twisted_keyx.core.adapter import Observer, Session
from twisted_keyx.core.decisions import NextMachine
from twisted_keyx.core.framing import Int32Framing, LineFraming
from twisted_keyx.core.machine import ProtocolFailed, StateMachine

PEER = IPv4Address("TCP", "192.0.2.9", 4000)


class State(enum.Enum):
    AWAIT_PING = "awaiting ping"
    DONE = "done"
    FAILED = "failed"


class Event(enum.Enum):
    PING = "ping"
    OTHER = "other"


class Refused(ProtocolFailed):
    reply = b"no"


class PingMachine(StateMachine):
    """Answers ``ping`` with ``pong`` and is done, going on with
    ``following`` if given (:class:`NextMachine`); anything else is refused."""

    TRANSITIONS = {(State.AWAIT_PING, Event.PING): ("_on_ping", State.DONE)}
    INITIAL = State.AWAIT_PING
    DONE = State.DONE
    FAILED = State.FAILED
    PEER = "client"
    max_message_length = 10

    def __init__(self, following=None):
        super().__init__()
        self.following = following

    def receive(self, payload):
        return self._dispatch(Event.PING if payload == b"ping" else Event.OTHER, payload)

    def _on_ping(self, payload):
        self.result = "pinged"
        if self.following is not None:
            return b"pong", NextMachine(self.following)
        return b"pong"

    def _unexpected(self, event, payload):
        return Refused(f"{event.value} while {self.state.value}")

    def _too_long(self, reason):
        return Refused(reason)


class Recorder(Observer):
    """Records what the session says, as tuples."""

    def __init__(self):
        self.events = []

    def machineStepped(self, session, machine, payload, reply):
        if isinstance(reply, tuple):  # a decision by its name
            reply = tuple(item if isinstance(item, bytes) else type(item).__name__
                          for item in reply)
        self.events.append(("stepped", payload, reply))

    def machineFinished(self, session, machine):
        self.events.append(("finished", session.peer, machine.result))

    def machineStarted(self, session, machine):
        self.events.append(("started", type(machine).__name__))

    def machineFailed(self, session, machine, failure):
        self.events.append(("rejected", session.peer, failure.reason))

    def sessionTimedOut(self, session, machine, seconds):
        self.events.append(("timed out", session.peer, seconds, machine.state.value))

    def sessionLost(self, session, machine, reason):
        self.events.append(("abandoned", session.peer, machine.state.value))


def connect(framing=LineFraming, following=None):
    observer = Recorder()
    session = Session(framing, PingMachine(following), observer)
    transport = StringTransport(peerAddress=PEER)
    session.makeConnection(transport)
    return session, transport, observer


class SessionTests(unittest.TestCase):
    def test_finished(self):
        session, transport, observer = connect()
        session.dataReceived(b"ping\n")
        self.assertEqual(transport.value(), b"pong\n")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(observer.events, [("stepped", b"ping", b"pong"),
                                           ("finished", "192.0.2.9:4000", "pinged")])

    def test_rejected_sends_the_reply_and_closes(self):
        session, transport, observer = connect()
        session.dataReceived(b"pong\nping\n")
        self.assertEqual(transport.value(), b"no\n")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(observer.events,
                         [("rejected", "192.0.2.9:4000", "other while awaiting ping")])
        self.assertIs(session.machine.state, State.FAILED)
        # Hung up: nothing more is read, nothing is kept.
        session.dataReceived(b"ping\n" * 100)
        self.assertEqual(transport.value(), b"no\n")
        self.assertEqual(session.buffered, 0)
        self.assertIsNone(session.framing)

    def test_too_long_in_the_framing_words(self):
        session, transport, observer = connect(Int32Framing)
        self.assertEqual(session.MAX_LENGTH, 10)
        session.dataReceived((11).to_bytes(4, "big") + b"x" * 11)
        self.assertEqual(observer.events, [
            ("rejected", "192.0.2.9:4000", "frame of 11 bytes exceeds the limit of 10")])
        self.assertEqual(transport.value(), (2).to_bytes(4, "big") + b"no")

    def test_abandoned(self):
        session, transport, observer = connect()
        session.dataReceived(b"pi")
        session.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(observer.events, [("abandoned", "192.0.2.9:4000", "awaiting ping")])
        session.connectionLost(Failure(ConnectionDone()))  # told once
        self.assertEqual(len(observer.events), 1)

    def test_timed_out_is_told_once(self):
        session, transport, observer = connect()
        session.connectionTimedOut(limits.TimeoutPhase.HANDSHAKE, 30)
        session.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(observer.events,
                         [("timed out", "192.0.2.9:4000", 30, "awaiting ping")])

    def test_the_next_machine_takes_over(self):
        following = PingMachine()
        session, transport, observer = connect(following=following)
        session.dataReceived(b"ping\nping\n")
        self.assertEqual(transport.value(), b"pong\npong\n")
        self.assertIs(session.machine, following)
        self.assertIsNot(session.handshake, following)
        # The session's record of what its machines decided.
        self.assertEqual(session.decisions, (NextMachine(following),))
        self.assertEqual([e[0] for e in observer.events],
                         ["stepped", "finished", "started", "stepped", "finished"])
        self.assertTrue(transport.disconnecting)

    def test_send_and_perform_after_the_end_send_nothing(self):
        session, transport, observer = connect()
        session.close()
        session.send(b"late")
        session.perform(lambda: b"late")
        self.assertEqual(transport.value(), b"")

    def test_replace_handshake_only_before_the_connection(self):
        session, transport, observer = connect()
        self.assertRaises(RuntimeError, session.replaceHandshake, PingMachine())
        fresh = Session(LineFraming, PingMachine(), Recorder())
        other = PingMachine()
        fresh.replaceHandshake(other)
        self.assertIs(fresh.machine, other)
        self.assertIs(fresh.handshake, other)


class SlowPingMachine(PingMachine):
    """PingMachine whose ``ping`` is a slow step."""

    SLOW_STATES = frozenset({State.AWAIT_PING})


class HeldWorker:
    """A session's ``worker`` whose steps wait until the test lets them run."""

    def __init__(self):
        self.waiting = []

    def __call__(self, function, payload):
        d = defer.Deferred()
        self.waiting.append((d, function, payload))
        return d

    def run_next(self):
        d, function, payload = self.waiting.pop(0)
        try:
            result = function(payload)
        except Exception:
            d.errback()
        else:
            d.callback(result)


def connect_slow(following=None):
    worker = HeldWorker()
    observer = Recorder()
    session = Session(LineFraming, SlowPingMachine(following), observer, worker=worker)
    transport = StringTransport(peerAddress=PEER)
    session.makeConnection(transport)
    return session, transport, observer, worker


class SlowStepTests(unittest.TestCase):
    """A machine's slow step (SLOW_STATES) goes to the session's worker: the
    session reads nothing meanwhile, then carries on in order."""

    def test_the_reply_waits_for_the_worker(self):
        following = PingMachine()
        session, transport, observer, worker = connect_slow(following)
        session.dataReceived(b"ping\nping\n")
        self.assertEqual((transport.value(), observer.events), (b"", []))
        self.assertEqual(len(worker.waiting), 1)  # the second ping waits unread
        self.assertIs(session.machine.state, State.AWAIT_PING)
        worker.run_next()
        # Then the second ping, for the next machine (not slow), at once.
        self.assertEqual(transport.value(), b"pong\npong\n")
        self.assertEqual([e[0] for e in observer.events],
                         ["stepped", "finished", "started", "stepped", "finished"])

    def test_a_failure_in_the_worker_is_the_machines(self):
        session, transport, observer, worker = connect_slow()
        session.dataReceived(b"pang\n")
        worker.run_next()
        self.assertEqual(transport.value(), b"no\n")
        self.assertEqual(observer.events,
                         [("rejected", "192.0.2.9:4000", "other while awaiting ping")])

    def test_a_hang_up_during_the_step_is_told_after_it(self):
        # A server that refuses, then closes: the refusal is the outcome.
        session, transport, observer, worker = connect_slow()
        session.dataReceived(b"pang\n")
        session.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(observer.events, [])
        worker.run_next()
        self.assertEqual(observer.events,
                         [("rejected", "192.0.2.9:4000", "other while awaiting ping")])

    def test_a_hang_up_after_a_good_step_is_abandoned_after_it(self):
        session, transport, observer, worker = connect_slow(following=SlowPingMachine())
        session.dataReceived(b"ping\n")
        session.connectionLost(Failure(ConnectionDone()))
        worker.run_next()
        self.assertEqual([e[0] for e in observer.events],
                         ["stepped", "finished", "started", "abandoned"])

    def test_a_timeout_during_the_step_drops_its_outcome(self):
        session, transport, observer, worker = connect_slow()
        session.dataReceived(b"ping\n")
        session.connectionTimedOut(limits.TimeoutPhase.HANDSHAKE, 5)
        session.connectionLost(Failure(ConnectionDone()))
        worker.run_next()
        self.assertEqual(observer.events, [("timed out", "192.0.2.9:4000", 5, "awaiting ping")])
        self.assertEqual(transport.value(), b"")

    def test_a_bug_in_the_step_is_logged_and_aborts(self):
        session, transport, observer, worker = connect_slow()
        self.patch(session.machine, "_on_ping", lambda payload: 1 / 0)
        session.dataReceived(b"ping\n")
        worker.run_next()
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
        self.assertTrue(session.ended)
        self.assertEqual(transport.value(), b"")

    def test_a_bug_in_the_step_is_told_as_the_connection_failing(self):
        # As a bug in a step on the reactor thread is (Twisted drops the
        # connection with it as the reason): the client's outcome fails now,
        # it does not wait for a timeout that may never come.
        for hang_up_first in (False, True):
            session, transport, observer, worker = connect_slow()
            self.patch(session.machine, "_on_ping", lambda payload: 1 / 0)
            session.dataReceived(b"ping\n")
            if hang_up_first:
                session.connectionLost(Failure(ConnectionDone()))
            worker.run_next()
            session.connectionLost(Failure(ConnectionDone()))  # after abortConnection
            self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
            self.assertEqual(observer.events, [("abandoned", "192.0.2.9:4000", "awaiting ping")])
            self.assertEqual(transport.value(), b"")

    def test_a_bug_after_the_step_is_told_as_the_connection_failing(self):
        # An observer (or tracer) that raises on the step's outcome: as when
        # it does on the reactor thread, the connection fails with it, and
        # no error is left in a Deferred nobody holds, no "working" pause.
        class Broken(Recorder):
            def machineStepped(self, session, machine, payload, reply):
                super().machineStepped(session, machine, payload, reply)
                raise RuntimeError("observer bug")

        worker = HeldWorker()
        observer = Broken()
        session = Session(LineFraming, SlowPingMachine(), observer, worker=worker)
        transport = StringTransport(peerAddress=PEER)
        session.makeConnection(transport)
        session.dataReceived(b"ping\n")
        session.connectionLost(Failure(ConnectionDone()))
        worker.run_next()
        self.assertEqual(observer.events, [("stepped", b"ping", b"pong"),
                                           ("abandoned", "192.0.2.9:4000", "done")])
        self.assertEqual(session.paused, set())
        self.assertTrue(session.ended)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def outcome_without_a_worker(self, data, following):
        observer = Recorder()
        session = Session(LineFraming, SlowPingMachine(following), observer)
        transport = StringTransport(peerAddress=PEER)
        session.makeConnection(transport)
        session.dataReceived(data)
        return transport.value(), observer.events

    def test_a_line_too_long_behind_the_step_waits_for_it(self):
        # The framing cuts on through the read the step's message came in:
        # an over-long line there is refused after the step, by the machine
        # then in place, and the step's machine is not touched meanwhile.
        data = b"ping\n" + b"x" * 20 + b"\n"
        session, transport, observer, worker = connect_slow(following=PingMachine())
        session.dataReceived(data)
        self.assertEqual((transport.value(), observer.events), (b"", []))
        self.assertIs(session.machine.state, State.AWAIT_PING)
        worker.run_next()
        self.assertEqual((transport.value(), observer.events),
                         self.outcome_without_a_worker(data, PingMachine()))
        self.assertEqual(observer.events[-1],
                         ("rejected", "192.0.2.9:4000", "a line longer than 10 bytes"))

    def test_lines_behind_the_step_are_held_to_the_next_states_limit(self):
        class ShortPing(PingMachine):
            max_message_length = 4

        data = b"ping\n" + b"pingping\n"  # within the step's limit, not the next one's
        session, transport, observer, worker = connect_slow(following=ShortPing())
        session.dataReceived(data)
        worker.run_next()
        self.assertEqual((transport.value(), observer.events),
                         self.outcome_without_a_worker(data, ShortPing()))
        self.assertEqual(observer.events[-1],
                         ("rejected", "192.0.2.9:4000", "a line longer than 4 bytes"))

    def test_without_a_worker_the_step_runs_at_once(self):
        session = Session(LineFraming, SlowPingMachine(), Recorder())
        transport = StringTransport(peerAddress=PEER)
        session.makeConnection(transport)
        session.dataReceived(b"ping\n")
        self.assertEqual(transport.value(), b"pong\n")

    def test_in_a_thread(self):
        """With deferToThread, the reactor runs while the step does."""
        import threading
        import time

        from twisted.internet import threads

        machine = SlowPingMachine()
        ran_in = []

        def slow_ping(payload):
            ran_in.append(threading.current_thread())
            time.sleep(0.3)
            machine.result = "pinged"
            return b"pong"

        self.patch(machine, "_on_ping", slow_ping)
        finished = defer.Deferred()

        class Told(Recorder):
            def machineFinished(self, session, machine):
                super().machineFinished(session, machine)
                finished.callback(None)

        session = Session(LineFraming, machine, Told(), worker=threads.deferToThread)
        transport = StringTransport(peerAddress=PEER)
        session.makeConnection(transport)
        ticks = []
        tick = task.LoopingCall(lambda: ticks.append(transport.value()))
        tick.start(0.05)
        session.dataReceived(b"ping\n")

        def check(result):
            tick.stop()
            self.assertIsNot(ran_in[0], threading.current_thread())
            self.assertGreaterEqual(ticks.count(b""), 3)  # ticks while it slept
            self.assertEqual(transport.value(), b"pong\n")

        return finished.addCallback(check)

    def test_in_daemon_thread(self):
        import threading

        from twisted_keyx.core.adapter import in_daemon_thread

        def where(x):
            return threading.current_thread() is not threading.main_thread(), \
                threading.current_thread().daemon, x

        ok = in_daemon_thread(where, 5).addCallback(self.assertEqual, (True, True, 5))
        failed = self.assertFailure(in_daemon_thread(lambda: 1 / 0), ZeroDivisionError)
        return defer.gatherResults([ok, failed])
