"""``haproxy:`` endpoints (twisted_keyx.service.proxied): the daemon's
protocol sees the client's address from the PROXY header, and HAProxy's
health checks never reach it."""

import socket
import struct

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.trial import unittest

from twisted_keyx.core.twistedshim import PROXY_V2_SIGNATURE
from twisted_keyx.service import proxied, tap
from twisted_keyx.service.limits import GuardedFactory

from tests.helpers import tap_options

BALANCER = IPv4Address("TCP", "127.0.0.1", 50000)


def v2_header(source="203.0.113.5", sport=4444, dest="127.0.0.1", dport=8089):
    body = socket.inet_aton(source) + socket.inet_aton(dest) + struct.pack("!HH", sport, dport)
    return PROXY_V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", len(body)) + body


LOCAL = PROXY_V2_SIGNATURE + bytes([0x20, 0x00, 0, 0])


class Recorder(Protocol):
    def __init__(self, log):
        self.log = log

    def connectionMade(self):
        peer = self.transport.getPeer()
        self.log.append(("made", peer.host, peer.port))

    def dataReceived(self, data):
        self.log.append(("data", data))

    def connectionLost(self, reason):
        self.log.append(("lost",))


class ProxiedProtocolTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.log = []
        inner = Factory.forProtocol(lambda: Recorder(self.log))
        self.factory = proxied.ProxiedFactory(inner, self.clock)
        self.protocol = self.factory.buildProtocol(BALANCER)
        self.transport = StringTransport(peerAddress=BALANCER)
        self.protocol.makeConnection(self.transport)

    def test_the_protocol_sees_the_client_from_the_start(self):
        self.assertEqual(self.log, [])
        self.protocol.dataReceived(v2_header() + b"alice\n")
        self.assertEqual(self.log, [("made", "203.0.113.5", 4444), ("data", b"alice\n")])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_starting_and_stopping_logs_nothing(self):
        # As the daemon's other factories: no "Starting factory <...ProxiedFactory
        # object at 0x...>" per haproxy: endpoint in the log (per worker).
        inner = Factory.forProtocol(Protocol)
        inner.noisy = False  # as the daemon's factories are
        factory = proxied.ProxiedFactory(inner, self.clock)
        with capturedLogs() as events:
            factory.doStart()
            factory.doStop()
        self.assertEqual([formatEvent(event) for event in events], [])

    def test_a_header_in_pieces_and_v1(self):
        self.protocol.dataReceived(b"PROXY TCP4 198.51.100.7 127.0.0.1 ")
        self.protocol.dataReceived(b"5555 8089\r\nhi")
        self.assertEqual(self.log, [("made", "198.51.100.7", 5555), ("data", b"hi")])

    def test_the_first_bytes_in_pieces(self):
        # TCP may cut the header anywhere: fewer than 16 bytes first were
        # refused as "no PROXY header".
        for header in (v2_header(), b"PROXY TCP4 198.51.100.7 127.0.0.1 5555 8089\r\n"):
            self.log.clear()
            protocol = self.factory.buildProtocol(BALANCER)
            transport = StringTransport(peerAddress=BALANCER)
            protocol.makeConnection(transport)
            for i in range(len(header)):
                protocol.dataReceived(header[i:i + 1])
            protocol.dataReceived(b"hi")
            self.assertFalse(transport.disconnecting)
            self.assertEqual(self.log[1:], [("data", b"hi")])
            self.assertEqual(self.log[0][0], "made")

    def test_a_first_byte_that_begins_no_header_is_refused_at_once(self):
        for start in (b"P", b"\r\n\r\n\x00"):
            protocol = self.factory.buildProtocol(BALANCER)
            transport = StringTransport(peerAddress=BALANCER)
            protocol.makeConnection(transport)
            protocol.dataReceived(start)
            self.assertFalse(transport.disconnecting)
            protocol.dataReceived(b"X")
            self.assertTrue(transport.disconnecting, start)
        self.protocol.dataReceived(PROXY_V2_SIGNATURE + b"\x31")  # version 3
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.log, [])

    def test_connections_awaiting_a_header_are_bounded_by_max_connections(self):
        # The daemon's limits count a connection once its header came:
        # before that, any number of connections that sent nothing sat
        # HEADER_TIMEOUT seconds each (up to the open-file limit).
        from twisted_keyx.service.limits import ConnectionPolicy, Limits

        policy = ConnectionPolicy(Limits(max_connections=3), self.clock)
        inner = policy.wrap(Factory.forProtocol(lambda: Recorder(self.log)))
        factory = proxied.ProxiedFactory(inner, self.clock)
        self.assertEqual(factory.max_awaiting(), 3)
        transports = []
        with capturedLogs() as events:
            for _ in range(5):
                protocol = factory.buildProtocol(BALANCER)
                transport = StringTransport(peerAddress=BALANCER)
                protocol.makeConnection(transport)
                transports.append((protocol, transport))
        self.assertEqual([t.disconnecting for _, t in transports], [False] * 3 + [True] * 2)
        text = [formatEvent(e) for e in events]
        self.assertEqual(len(text), 1, text)
        self.assertIn("too many connections awaiting their PROXY header", text[0])
        for protocol, transport in transports[3:]:
            protocol.connectionLost(None)
        self.assertEqual(factory.awaiting, 3)
        # A header, a close and a timeout each free a place.
        transports[0][0].dataReceived(v2_header())
        transports[1][0].connectionLost(None)
        self.assertEqual(factory.awaiting, 1)
        self.clock.advance(proxied.HEADER_TIMEOUT)
        self.assertEqual(factory.awaiting, 0)
        self.assertTrue(transports[2][1].disconnecting)
        self.assertEqual(self.log[0][:2], ("made", "203.0.113.5"))

    def test_a_health_check_never_reaches_the_protocol(self):
        self.protocol.dataReceived(LOCAL)
        self.assertTrue(self.transport.disconnecting)
        self.protocol.connectionLost(None)
        self.assertEqual(self.log, [])

    def test_nor_a_check_that_connects_and_closes(self):
        self.protocol.connectionLost(None)
        self.assertEqual(self.log, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_no_header_is_cut_off(self):
        self.protocol.dataReceived(b"alice\nxxxxxxxxxxxxxxxxxxxxx")
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.log, [])

    def connect(self, data):
        protocol = self.factory.buildProtocol(BALANCER)
        protocol.makeConnection(StringTransport(peerAddress=BALANCER))
        protocol.dataReceived(data)
        protocol.connectionLost(None)

    def test_a_client_that_goes_around_haproxy_is_logged_once_then_counted(self):
        # It was closed without a word: an operator whose clients connect
        # to the daemon's haproxy: port directly saw nothing in the log.
        with capturedLogs() as events:
            self.connect(b"Hello\n")
            for _ in range(5):
                self.connect(b"Hello\n")
            self.connect(b"PROXY TCP4 garbage garbage 1 2\r\n")  # Twisted took the host
            self.connect(b"PROXY TCP4 1.2.3.4 5.6.7.8 x y\r\n")  # Twisted: a traceback
            self.clock.advance(60)
        text = [formatEvent(e) for e in events]
        self.assertEqual(len(text), 2, text)
        self.assertIn("Closed a connection from 127.0.0.1 on a haproxy: endpoint: it sent "
                      "no PROXY header", text[0])
        self.assertIn("7 more connection(s) from 127.0.0.1 without a PROXY header closed "
                      "(2 an invalid PROXY header, 5 no PROXY header)", text[1])
        self.assertEqual(self.log, [])

    def test_health_checks_are_not_logged(self):
        with capturedLogs() as events:
            for _ in range(3):
                self.connect(LOCAL)
                self.factory.buildProtocol(BALANCER).makeConnection(
                    StringTransport(peerAddress=BALANCER))
            self.clock.advance(60)
        self.assertEqual([formatEvent(e) for e in events], [])

    def test_a_header_that_does_not_come_is_cut_off(self):
        self.protocol.dataReceived(b"PROXY TCP4 ")
        self.clock.advance(proxied.HEADER_TIMEOUT)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(self.log, [])


class DaemonBehindHAProxyTests(unittest.TestCase):
    def test_the_policy_and_the_log_see_the_client(self):
        memory = MemoryReactorClock()
        options = tap_options("--dh", "tcp:0", "--eke", "haproxy:tcp:8088:interface=127.0.0.1",
                              "--opaque", "tcp:0")
        service = tap.makeService(options, reactor=memory)
        service.startService()
        self.addCleanup(service.stopService)
        [factory] = [f for port, f, _, _ in memory.tcpServers if port == 8088]
        self.assertIsInstance(factory, proxied.ProxiedFactory)
        self.assertIsInstance(factory.wrappedFactory, GuardedFactory)
        protocol = factory.buildProtocol(BALANCER)
        transport = StringTransport(peerAddress=BALANCER)
        with capturedLogs() as events:
            protocol.makeConnection(transport)
            protocol.dataReceived(v2_header() + b"bob\n")  # EKE step 1, no such user
            protocol.connectionLost(None)
        text = [formatEvent(e) for e in events]
        self.assertTrue(any("203.0.113.5:4444" in line for line in text), text)
        self.assertFalse(any("127.0.0.1" in line for line in text), text)
        # Health checks (a LOCAL header, or none) are no connection of the
        # policy's: a thousand of them leave nothing counted.
        for i in range(1000):
            check = factory.buildProtocol(BALANCER)
            check.makeConnection(StringTransport(peerAddress=BALANCER))
            if i % 2:
                check.dataReceived(LOCAL)
            check.connectionLost(None)
        self.assertEqual((factory.wrappedFactory.policy.open_connections,
                          factory.wrappedFactory.policy.per_ip), (0, {}))
