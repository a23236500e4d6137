"""The shared test helpers that other tests rely on as oracles: the
RecordingObserver's tuples and the one connection-tracking mechanism."""

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger, formatEvent
from twisted.python.failure import Failure
from twisted.trial import unittest

from twisted_keyx.groups import ffdh
from twisted_keyx.dh import messages

from .helpers import (
    CLIENT_X,
    SERVER_X,
    RecordingDHServerFactory,
    RecordingObserver,
    connect_on_string_transport,
    fixed_key,
    frame,
    guarded_connection,
    tracked,
    tracking,
    unframe,
)

GROUP = ffdh.named_group("ffdhe2048")
PEER = IPv4Address("TCP", "192.0.2.9", 4000)


class RecordingObserverTests(unittest.TestCase):
    def factory(self):
        factory = RecordingDHServerFactory(GROUP, private_key_factory=fixed_key(SERVER_X))
        factory.lines = []
        factory.log = Logger(observer=lambda e: factory.lines.append(formatEvent(e)))
        return factory

    def connect(self, factory):
        protocol = factory.buildProtocol(PEER)
        return protocol, connect_on_string_transport(protocol, PEER)

    def test_finished(self):
        factory = self.factory()
        protocol, transport = self.connect(factory)
        key = GROUP.private_key_from_value(CLIENT_X)
        for message in (messages.HELLO, messages.PARAMS_REQUEST,
                        messages.CLIENT_KEY_PREFIX + GROUP.public_key_pem(key)):
            protocol.dataReceived(frame(message))
        [(kind, peer, result)] = factory.outcomes
        self.assertEqual((kind, peer), ("finished", "192.0.2.9:4000"))
        self.assertIs(result, protocol.handshake.result)
        self.assertEqual(factory.results, [result])
        # The factory still logs its own line.
        self.assertEqual(len(factory.lines), 1)
        self.assertIn("finished", factory.lines[0])
        self.assertEqual(len(unframe(transport.value())), 3)

    def test_rejected(self):
        factory = self.factory()
        protocol, _ = self.connect(factory)
        protocol.dataReceived(frame(b"Goodbye"))
        self.assertEqual(factory.outcomes,
                         [("rejected", "192.0.2.9:4000", "unknown message while awaiting Hello")])
        self.assertEqual(factory.results, [])

    def test_abandoned(self):
        factory = self.factory()
        protocol, _ = self.connect(factory)
        protocol.dataReceived(frame(messages.HELLO))
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(factory.outcomes, [("abandoned", "192.0.2.9:4000", "awaiting Params?")])
        self.assertEqual(factory.kinds, ["abandoned"])

    def test_timed_out(self):
        factory = self.factory()
        clock = Clock()
        guard, transport, session, policy = guarded_connection(factory, PEER, clock, timeout=5)
        clock.advance(5)
        self.assertEqual(factory.outcomes, [("timed out", "192.0.2.9:4000", 5)])

    def test_standalone(self):
        observer = RecordingObserver()
        self.assertEqual(observer.outcomes, [])
        self.assertIsNone(observer.machineFinished(_Session(), _Machine()))
        self.assertEqual(observer.outcomes, [("finished", "peer", "result")])


class _Session:
    peer = "peer"


class _Machine:
    result = "result"


class TrackingTests(unittest.TestCase):
    def test_all_lost_waits_for_every_connection(self):
        factory = tracking(_PlainFactory)()
        first = factory.buildProtocol(PEER)
        second = factory.buildProtocol(PEER)
        for protocol in (first, second):
            protocol.makeConnection(StringTransport())
        done = factory.allLost()
        first.connectionLost(Failure(ConnectionDone()))
        self.assertNoResult(done)
        second.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(done)
        self.assertEqual(factory.connections, [first, second])

    def test_instances_are_kept_per_class(self):
        one, other = tracked(Protocol), tracked(Protocol)
        protocol = one()
        protocol.makeConnection(StringTransport())
        self.assertEqual((one.instances, other.instances), ([protocol], []))
        self.assertNoResult(protocol.lost)



class _PlainFactory(Factory):
    protocol = Protocol
