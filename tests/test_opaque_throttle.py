"""The guess throttle (twisted_keyx.service.throttle) on the OPAQUE server: KE2,
the answer that tells a guesser whether its password was right, is held
back once a user has failed too often; a KE3 that does not verify, or a
client that leaves after KE2, counts as a failed guess."""

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial import unittest

from tests.opaque_helpers import CHEAP_LIMITS
from tests.test_opaque_handshake import PASSWORD, SETUP, users
from twisted_keyx.service import throttle
from twisted_keyx.opaque import handshake as hs
from twisted_keyx.opaque.protocol import OPAQUEServerFactory

PEER = IPv4Address("TCP", "192.0.2.7", 4242)


class OPAQUEThrottleTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.guesses = throttle.GuessThrottle(throttle.GuessLimits(), self.clock)
        self.factory = OPAQUEServerFactory(users(), SETUP, throttle=self.guesses)

    def start(self, password):
        server = self.factory.buildProtocol(PEER)
        transport = StringTransport(peerAddress=PEER)
        server.makeConnection(transport)
        client = hs.OPAQUEClientHandshake("alice", password, ksf_limits=CHEAP_LIMITS)
        server.dataReceived(client.start() + b"\n")
        return server, transport, client

    def login(self, password):
        """One whole login; the server's last line."""
        server, transport, client = self.start(password)
        ke2 = transport.value()
        transport.clear()
        server.dataReceived(client.receive(ke2[:-1]) + b"\n")
        return transport.value()

    def test_failed_guesses_hold_ke2_back(self):
        with capturedLogs() as events:
            for _ in range(3):
                self.assertEqual(self.login("wrong"), b"authentication failed\n")
        failed = [formatEvent(e) for e in events if "Failed guess" in formatEvent(e)]
        self.assertEqual(len(failed), 3)
        self.assertIn("user 'alice' from 192.0.2.7:4242: OPAQUE, KE3 does not verify",
                      failed[0])
        # Throttled now: at most one answer per delay.  The next try is
        # answered at once, the one after it not before the delay has passed.
        server, transport, client = self.start("wrong")
        self.assertEqual(len(transport.value()), 445)
        server, transport, client = self.start("wrong")
        self.assertEqual(transport.value(), b"")
        self.clock.advance(self.guesses.limits.delay)
        self.assertEqual(len(transport.value()), 445)  # base64 KE2 and its newline

    def test_leaving_after_ke2_counts_as_a_failed_guess(self):
        for _ in range(3):
            server, transport, client = self.start("wrong")
            server.connectionLost(Failure(ConnectionDone()))
        self.start(PASSWORD)
        server, transport, client = self.start(PASSWORD)
        self.assertEqual(transport.value(), b"")  # held

    def test_malformed_ke1_is_no_guess(self):
        """A KE1 whose elements are not ristretto255 points gets no KE2, so
        its sender learns nothing: it is a malformed message, logged as one,
        not a failed guess (nor a failed login) for the user it names."""
        failed_logins = []
        self.factory.login_failed = lambda user, peer: failed_logins.append(user)
        identity = b"A" * 128  # base64 of 96 zero bytes: the identity, refused
        with capturedLogs() as events:
            for _ in range(5):
                server = self.factory.buildProtocol(PEER)
                transport = StringTransport(peerAddress=PEER)
                server.makeConnection(transport)
                server.dataReceived(identity + b" alice\n")
                self.assertEqual(transport.value(), b"authentication failed\n")
        lines = [formatEvent(e) for e in events]
        self.assertEqual([line for line in lines if "guess" in line.lower()], [])
        self.assertEqual(failed_logins, [])
        self.assertEqual(len([line for line in lines if "(1): " in line]), 5, lines)
        # alice is not throttled: her next login is answered at once.
        server, transport, client = self.start(PASSWORD)
        self.assertEqual(len(transport.value()), 445)
