"""Hostile peers against the DH server and client, driven by Hypothesis.

Each example sends a conversation (legal messages, legal ones in the wrong
order, truncated or mutated ones, random bytes, keys with y anywhere, keys on
other groups, bad parameters, over-long frames) cut into arbitrary deliveries
(byte by byte, all at once, anything between), through StringTransport.

The oracles (``expect_server``, ``expect_client``) say from the protocol
alone what must happen: success, or the documented error reply and a closed
connection, or waiting for more.  Whatever happens, nothing may raise, nothing
may reach Twisted's logger as a failure, each connection logs exactly one
line, and no timer or connection slot is left behind.
"""

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial import unittest

from twisted_keyx.dh import messages
from twisted_keyx.dh.handshake import (
    BadParameters,
    UnexpectedReply,
    HandshakeFailed,
    HandshakeResult,
    InvalidServerKey,
    ServerRefused,
)
from twisted_keyx.dh.protocol import (
    CLIENT_MAX_MESSAGE_LENGTH,
    DHClientProtocol,
    server_max_message_length,
)
from twisted_keyx.core.machine import ServerHungUp

from . import dh_strategies as ds
from .helpers import RecordingDHServerFactory, fed_server, frame, unframe

PEER = IPv4Address("TCP", "198.51.100.20", 50000)
SERVER_MAX = server_max_message_length(ds.GROUP)


def overlong_prefix(tail, limit):
    return len(tail) >= 4 and int.from_bytes(tail[:4], "big") > limit


# -- the server -------------------------------------------------------------

SERVER_KEY = "a Server public key message"


def expect_server(items, tail):
    """What the server must reply, and how the connection ends.

    Returns ``(replies, outcome, item)``: replies are exact bytes or
    SERVER_KEY; outcome is finished, rejected, pending, or either (a mutated
    key may still be a valid key: then finished, else rejected as invalid);
    item is the message that decided it.
    """
    replies = []
    state = 0
    for item in items:
        payload = item.payload
        if len(payload) > SERVER_MAX:
            return replies + [messages.UNEXPECTED_MESSAGE_REPLY], "rejected", item
        if state == 0 and payload == messages.HELLO:
            replies.append(messages.HEY_THERE)
        elif state == 1 and payload == messages.PARAMS_REQUEST:
            replies.append(ds.GROUP.parameters_pem)
        elif state == 2 and payload.startswith(messages.CLIENT_KEY_PREFIX):
            verdict = item.verdict if item.kind == "client_key" else ds.UNKNOWN
            if verdict == ds.VALID:
                return replies + [SERVER_KEY], "finished", item
            if verdict == ds.INVALID:
                return replies + [messages.INVALID_CLIENT_KEY_REPLY], "rejected", item
            return replies, "either", item
        else:
            return replies + [messages.UNEXPECTED_MESSAGE_REPLY], "rejected", item
        state += 1
    if overlong_prefix(tail, SERVER_MAX):
        return replies + [messages.UNEXPECTED_MESSAGE_REPLY], "rejected", None
    return replies, "pending", None


class FailureCatcher:
    """Collects anything logged with a failure attached, anywhere."""

    def __init__(self, test):
        self.failures = []
        globalLogPublisher.addObserver(self)
        test.addCleanup(globalLogPublisher.removeObserver, self)

    def __call__(self, event):
        if "log_failure" in event:
            self.failures.append(formatEvent(event))


class HostileClientTests(unittest.TestCase):
    """Arbitrary clients against the server, through the daemon's guard."""

    def setUp(self):
        self.catcher = FailureCatcher(self)

    @given(st.data())
    def test_server_survives_any_conversation(self, data):
        items = data.draw(ds.conversations([ds.HELLO, ds.PARAMS_REQUEST,
                                            data.draw(ds.client_keys)], ds.client_items))
        tail = data.draw(ds.tails)
        stream = b"".join(frame(item.payload) for item in items) + tail
        chunks = data.draw(ds.deliveries(stream))
        replies, outcome, decisive = expect_server(items, tail)

        dh_factory = RecordingDHServerFactory(ds.GROUP)
        proto, transport, session, policy, clock = fed_server(dh_factory, PEER, chunks)

        written = unframe(transport.value())
        if outcome == "either":
            self.assertEqual(len(written), len(replies) + 1)
            last = written[-1]
            outcome = "rejected" if last == messages.INVALID_CLIENT_KEY_REPLY else "finished"
            replies = replies + [last if outcome == "rejected" else SERVER_KEY]
        self.assertEqual(len(written), len(replies), (written, replies))
        for got, want in zip(written, replies):
            if want is SERVER_KEY:
                self.assertTrue(got.startswith(messages.SERVER_KEY_PREFIX))
                server_key = ds.GROUP.load_peer_key(got[len(messages.SERVER_KEY_PREFIX):])
            else:
                self.assertEqual(got, want)
        self.assertEqual(transport.disconnecting, outcome != "pending")
        if outcome == "finished":
            result = session.handshake.result
            if decisive.private_key is not None:
                self.assertEqual(result.shared_secret,
                                 ds.GROUP.exchange(decisive.private_key, server_key))
        # What the server holds is bounded by one read plus one frame, and
        # nothing once it has hung up.
        self.assertLessEqual(session.buffered,
                             max(map(len, chunks), default=0) + SERVER_MAX + 4)
        if transport.disconnecting:
            self.assertEqual(session.buffered, 0)

        proto.connectionLost(Failure(ConnectionDone()))
        word = {"finished": "finished", "rejected": "rejected", "pending": "abandoned"}[outcome]
        self.assertEqual(dh_factory.kinds, [word], dh_factory.outcomes)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual((policy.open_connections, policy.per_ip), (0, {}))
        self.assertEqual(self.catcher.failures, [])


# -- the client -------------------------------------------------------------

FINISHED = "finished"


def expect_client(items, tail):
    """What the client must send, and how its handshake ends.

    Returns ``(sent, outcome, item)``: sent are the kinds of messages the client
    sends (hello, params_request, client_key); outcome is FINISHED, a
    HandshakeFailed subclass, ``pending``, or a tuple of acceptable
    outcomes; item is the message that decided it.
    """
    sent = ["hello"]
    state = 0
    group = None
    for item in items:
        kind = item.kind
        if kind == "error_reply":
            return sent, ServerRefused, item
        if kind in ("mutant", "garbage") and not _plainly_unknown(item.payload):
            return sent, "any", item
        if state == 0 and kind == "greeting":
            sent.append("params_request")
        elif state == 1 and kind == "parameters":
            if item.verdict != ds.VALID:
                return sent, BadParameters, item
            sent.append("client_key")
            group = item.group
        elif state == 2 and kind == "server_key":
            if group != "ffdhe2048" or item.verdict == ds.UNKNOWN:
                return sent, (FINISHED, InvalidServerKey), item
            return sent, FINISHED if item.verdict == ds.VALID else InvalidServerKey, item
        else:
            return sent, UnexpectedReply, item
        state += 1
    if overlong_prefix(tail, CLIENT_MAX_MESSAGE_LENGTH):
        return sent, UnexpectedReply, None
    return sent, "pending", None


def _plainly_unknown(payload):
    """True if no reading of the protocol makes ``payload`` a server message."""
    return not (
        payload == messages.HEY_THERE
        or payload.startswith(messages.SERVER_KEY_PREFIX)
        or b"-----" in payload
        or payload in messages.ERROR_REPLIES
    )


class HostileServerTests(unittest.TestCase):
    """Arbitrary servers against the client."""

    def setUp(self):
        self.catcher = FailureCatcher(self)

    @given(st.data())
    def test_client_survives_any_server(self, data):
        server_key = data.draw(ds.server_keys.filter(lambda i: i.verdict == ds.VALID))
        items = data.draw(ds.conversations(
            [ds.GREETING, data.draw(ds.server_parameters), server_key], ds.server_items))
        tail = data.draw(ds.tails)
        stream = b"".join(frame(item.payload) for item in items) + tail
        chunks = data.draw(ds.deliveries(stream))
        sent, outcome, decisive = expect_client(items, tail)

        client = DHClientProtocol()
        outcomes = []
        client.finished.addBoth(outcomes.append)
        transport = StringTransport()
        client.makeConnection(transport)
        for chunk in chunks:
            client.dataReceived(chunk)

        written = unframe(transport.value())
        kinds = [{messages.HELLO: "hello", messages.PARAMS_REQUEST: "params_request"}.get(
            w, "client_key" if w.startswith(messages.CLIENT_KEY_PREFIX) else repr(w))
            for w in written]
        if outcome == "any":
            self.assertEqual(kinds, ["hello", "params_request", "client_key"][:len(kinds)])
        else:
            self.assertEqual(kinds, sent)
        self.assertEqual(transport.disconnecting, bool(outcomes))

        client.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(len(outcomes), 1)
        got = outcomes[0]
        if isinstance(got, Failure):
            self.assertIsInstance(got.value, HandshakeFailed)
            got = type(got.value)
        else:
            self.assertIsInstance(got, HandshakeResult)
            if decisive is not None and decisive.private_key is not None:
                client_public = ds.GROUP.load_peer_key(
                    written[2][len(messages.CLIENT_KEY_PREFIX):])
                self.assertEqual(
                    got.shared_secret, ds.GROUP.exchange(decisive.private_key, client_public))
            got = FINISHED
        if outcome == "pending":
            self.assertIs(got, ServerHungUp)
        elif outcome == "any":
            pass  # a mutant may read as anything; only the invariants above hold
        elif isinstance(outcome, tuple):
            self.assertIn(got, outcome)
        else:
            self.assertIs(got, outcome)
        self.assertEqual(self.catcher.failures, [])


class FoundByHypothesisTests(unittest.TestCase):
    """Cases the property tests found, kept as plain regressions."""

    def test_generator_below_two_is_a_parameter_error(self):
        # cryptography's DHParameterNumbers raises ValueError for g < 2 before
        # OpenSSL checks anything; it used to escape the client as a crash.
        from twisted_keyx.groups import ffdh

        for g in (0, 1):
            with self.assertRaises(ffdh.ParameterError):
                ffdh.group_from_parameters_pem(ffdh.encode_parameters_pem(ds.P, g))
