"""Back-pressure: a session stops reading a peer that does not take its
replies (the session is a streaming producer on its transport)."""

from twisted.internet import defer, endpoints, reactor, task
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from twisted_keyx.chat.machine import ClientChat
from twisted_keyx.chat import records
from twisted_keyx.core.adapter import PauseReason

from tests.helpers import TrackingEKEServerFactory, Users, make_user
from tests.test_eke_protocol import PEER, _RecordingClient, client_machine

USERS = Users(alice=make_user("alice"))


class ProducerTests(unittest.TestCase):
    def serve(self):
        protocol = TrackingEKEServerFactory(USERS).buildProtocol(PEER)
        transport = StringTransport(peerAddress=PEER)
        protocol.makeConnection(transport)
        return protocol, transport

    def test_registered_as_a_streaming_producer(self):
        protocol, transport = self.serve()
        self.assertIs(transport.producer, protocol)
        self.assertTrue(transport.streaming)

    def test_a_full_buffer_pauses_reading_until_it_drains(self):
        protocol, transport = self.serve()
        protocol.pauseProducing()  # what the transport does when its buffer is full
        # What is still in flight is kept unread, up to a bound; past it the
        # transport stops reading.  (Not at once: a TLS transport pauses its
        # producer during its own handshake, which needs it to read.)
        protocol.dataReceived(b"alice")
        self.assertEqual(transport.producerState, "producing")
        protocol.dataReceived(b"x" * protocol.INCOMING_LIMIT)
        self.assertEqual(transport.producerState, "paused")
        self.assertEqual(transport.value(), b"")
        protocol.resumeProducing()
        self.assertEqual(transport.producerState, "producing")
        # What was kept is read now: an over-long user name.
        self.assertEqual(transport.value(), b"authentication failed\n")

    def test_closing_while_paused_lets_the_close_happen(self):
        # A paused producer would keep Twisted's graceful close waiting.
        protocol, transport = self.serve()
        protocol.pauseProducing()
        protocol.dataReceived(b"bad name\n")
        self.assertEqual(transport.value(), b"")  # unread while paused
        protocol.resumeProducing()
        self.assertIsNone(transport.producer)
        self.assertTrue(transport.disconnecting)

    def test_held_replies_go_out_after_the_delay(self):
        protocol, transport = self.serve()
        clock = protocol.clock = task.Clock()
        protocol.holdReplies(2)
        protocol.dataReceived(b"bad name\n")
        self.assertEqual(transport.value(), b"")
        self.assertFalse(transport.disconnecting)
        clock.advance(1.9)
        self.assertEqual(transport.value(), b"")
        clock.advance(0.1)
        self.assertEqual(transport.value(), b"authentication failed\n")
        self.assertTrue(transport.disconnecting)
        self.assertIsNone(transport.producer)

    def test_a_hold_ends_with_the_connection(self):
        protocol, transport = self.serve()
        clock = protocol.clock = task.Clock()
        protocol.holdReplies(2)
        protocol.abort()
        self.assertEqual(clock.getDelayedCalls(), [])


class LoopbackTests(unittest.TestCase):
    """Real TCP on 127.0.0.1: a logged-in client writes chat lines and never
    reads; the server's send buffer stays bounded."""

    LINES = 2000  # about 11 MB of records, 11 MB of replies

    @defer.inlineCallbacks
    def test_a_client_that_does_not_read_costs_one_buffer(self):
        factory = TrackingEKEServerFactory(USERS)
        servers = []
        build = factory.buildProtocol
        factory.buildProtocol = lambda addr: servers.append(build(addr)) or servers[-1]
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        client = yield endpoints.connectProtocol(endpoint, _RecordingClient(client_machine()))
        result = yield client.authenticated
        chat = ClientChat(result)
        text = "x" * records.MAX_CHAT_TEXT_BYTES
        data = b"".join(chat.say(text) + b"\n" for _ in range(self.LINES))
        client.transport.pauseProducing()  # the client reads nothing more
        client.transport.write(data)
        [server] = servers

        def buffered():
            transport = server.transport  # twisted.internet.tcp.Server
            return len(transport.dataBuffer) - transport.offset + transport._tempDataLen

        most = 0
        for _ in range(40):  # about 1 s
            yield task.deferLater(reactor, 0.025, lambda: None)
            most = max(most, buffered())
        self.assertLess(most, 1 << 20, f"{most} bytes of replies buffered")
        self.assertIn(PauseReason.TRANSPORT, server.paused)
        client.finished.addErrback(lambda failure: None)  # cut short, as meant
        client.transport.abortConnection()
        yield factory.allLost()
