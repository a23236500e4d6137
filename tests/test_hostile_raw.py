"""Hostile clients against the unframed (tutorial-format) DH server.

The same conversations as tests/test_hostile_dh.py, written without framing:
messages back to back or separated by whitespace, cut anywhere.  Message
boundaries come from the content here, so garbage can swallow what follows
it; the oracle is strict where the protocol decides (a legal conversation
succeeds, a well-formed but invalid key gets its reply, bytes that start no
message get the other reply) and otherwise checks the invariants: the
server's replies are a prefix of the legal ones plus at most one error
reply, it hangs up after either end, logs one line, and keeps nothing.
"""

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.trial import unittest

from twisted_keyx.dh import messages

from . import dh_strategies as ds
from .helpers import RecordingRawDHServerFactory, fed_server, split_replies
from .test_hostile_dh import FailureCatcher

PEER = IPv4Address("TCP", "198.51.100.21", 50001)
separators = st.sampled_from([b"", b"\n", b"\r\n", b" \n ", b"\t"])


def pem_shaped(item):
    """A key message whose PEM block the content-based splitter will find
    whole: it starts BEGIN, ends with an END line, base64 in between."""
    pem = item.payload[len(messages.CLIENT_KEY_PREFIX):].strip()
    return pem.startswith(b"-----BEGIN PUBLIC KEY-----") and pem.endswith(b"-----END PUBLIC KEY-----")


class HostileRawClientTests(unittest.TestCase):
    def setUp(self):
        self.catcher = FailureCatcher(self)

    @given(st.data())
    def test_raw_server_survives_any_conversation(self, data):
        key = data.draw(ds.client_keys)
        legal = [ds.HELLO, ds.PARAMS_REQUEST, key]
        items = data.draw(ds.conversations(legal, ds.client_items))
        stream = b"".join(item.payload + data.draw(separators) for item in items)
        chunks = data.draw(ds.deliveries(stream))

        factory = RecordingRawDHServerFactory(ds.GROUP)
        proto, transport, session, policy, clock = fed_server(factory, PEER, chunks)

        replies = split_replies(transport.value())
        legal_replies = [messages.HEY_THERE, ds.GROUP.parameters_pem.strip()]
        ended = [r for r in replies if r in messages.ERROR_REPLIES]
        good = [r for r in replies if r not in messages.ERROR_REPLIES]
        # Invariants, whatever was sent.
        self.assertLessEqual(len(ended), 1)
        if ended:
            self.assertEqual(replies[-1], ended[0])
        self.assertEqual(good[:2], legal_replies[:len(good[:2])])
        if len(good) == 3:
            self.assertTrue(good[2].startswith(messages.SERVER_KEY_PREFIX))
            server_key = ds.GROUP.load_peer_key(good[2][len(messages.SERVER_KEY_PREFIX):])
            self.assertEqual(ended, [])
        self.assertLessEqual(len(good), 3)
        finished = len(good) == 3
        self.assertEqual(transport.disconnecting, bool(ended) or finished)
        self.assertLessEqual(session.buffered,
                             max(map(len, chunks), default=0) + factory.max_message_length)
        if transport.disconnecting:
            self.assertEqual(session.buffered, 0)

        # Strict where the protocol decides.
        if items == legal and key.verdict == ds.VALID:
            self.assertTrue(finished, replies)
            if key.private_key is not None:
                self.assertEqual(session.handshake.result.shared_secret,
                                 ds.GROUP.exchange(key.private_key, server_key))
        elif items == legal and key.verdict == ds.INVALID and pem_shaped(key):
            self.assertEqual(replies, legal_replies + [messages.INVALID_CLIENT_KEY_REPLY])
        elif items and items[0].kind == "garbage" and items[0].payload.strip()[:1] not in (
                b"", b"H", b"P", b"C"):
            # No client message starts with that byte: refused at once.
            self.assertEqual(replies, [messages.UNEXPECTED_MESSAGE_REPLY])

        proto.connectionLost(Failure(ConnectionDone()))
        word = "finished" if finished else "rejected" if ended else "abandoned"
        self.assertEqual(factory.kinds, [word], factory.outcomes)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual((policy.open_connections, policy.per_ip), (0, {}))
        self.assertEqual(self.catcher.failures, [])
