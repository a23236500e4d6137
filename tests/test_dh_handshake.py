"""The DH state machines, driven directly (no I/O)."""

from twisted.trial import unittest

from twisted_keyx.groups import ffdh
from twisted_keyx.groups import registry as groups
from twisted_keyx.dh import messages
from twisted_keyx.dh.handshake import (
    DHClientState,
    DHClientHandshake,
    DHServerHandshake,
    DHServerState,
    UnexpectedMessage,
)


def run_handshake(server, client):
    message = client.start()
    while message is not None:
        message = client.receive(server.receive(message))


class HandshakeTests(unittest.TestCase):
    def test_both_sides_agree(self):
        server = DHServerHandshake(ffdh.named_group("ffdhe2048"))
        client = DHClientHandshake()
        run_handshake(server, client)
        self.assertIs(server.state, DHServerState.DONE)
        self.assertIs(client.state, DHClientState.DONE)
        self.assertEqual(server.result.shared_secret, client.result.shared_secret)
        self.assertEqual(len(server.result.shared_secret), 256)
        self.assertEqual(server.result.session_key, client.result.session_key)
        self.assertEqual(server.result.transcript_hash, client.result.transcript_hash)

    def test_out_of_order_is_refused(self):
        server = DHServerHandshake(ffdh.named_group("ffdhe2048"))
        with self.assertRaises(UnexpectedMessage) as caught:
            server.receive(messages.PARAMS_REQUEST)
        self.assertEqual(caught.exception.reply, b"I do not understand you, hanging up")
        self.assertIs(server.state, DHServerState.FAILED)


class ClientCancelTests(unittest.TestCase):
    """Cancelling ``finished`` (as a timeout does) fails it once and aborts."""

    def test_cancel_fails_once_and_aborts(self):
        from twisted.internet import defer
        from twisted.internet.testing import StringTransport
        from twisted.python.failure import Failure
        from twisted.internet.error import ConnectionAborted

        from twisted_keyx.dh.protocol import DHClientProtocol

        protocol = DHClientProtocol()
        transport = StringTransport()
        protocol.makeConnection(transport)
        failures = []
        protocol.finished.addErrback(failures.append)
        protocol.finished.cancel()
        self.assertTrue(transport.disconnecting)
        # The transport then reports the aborted connection; that must not
        # fire ``finished`` a second time (AlreadyCalledError).
        protocol.connectionLost(Failure(ConnectionAborted()))
        self.assertEqual(len(failures), 1)
        self.assertTrue(failures[0].check(defer.CancelledError))


class ByteExactTranscriptTests(unittest.TestCase):
    """The session key is bound to the exact bytes of every message: a
    message changed only in its whitespace on the way gives the two sides
    different keys (the transcript strips nothing; docs/protocols.rst,
    "DH handshake").  Before, the transcript stripped whitespace around each
    message, so such a change went unnoticed."""

    def keys(self, tamper=lambda message: message):
        """(client's, server's) session key after a handshake whose messages
        ``tamper`` changes on the way, in both directions."""
        from tests.helpers import CLIENT_X, SERVER_X, fixed_key

        server = DHServerHandshake(groups.named("ffdhe2048"), fixed_key(SERVER_X))
        client = DHClientHandshake(private_key_factory=fixed_key(CLIENT_X))
        message = client.start()
        while message is not None:
            message = client.receive(tamper(server.receive(tamper(message))))
        return client.result.session_key, server.result.session_key

    def test_transcript_hashes_every_byte(self):
        from twisted_keyx.core.transcript import Transcript

        a, b = Transcript(), Transcript()
        a.add(b"\x01key")
        b.add(b" \x01key")
        self.assertNotEqual(a.digest(), b.digest())

    def test_whitespace_changed_on_the_way_gives_different_keys(self):
        client_key, server_key = self.keys()
        self.assertEqual(client_key, server_key)
        # One more newline after each PEM block (messages 4, 5, 6): every
        # parser accepts it, only the transcript tells.
        client_key, server_key = self.keys(
            lambda m: m + b"\n" if m.endswith(b"-----\n") else m)
        self.assertNotEqual(client_key, server_key)
