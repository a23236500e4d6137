"""The DH protocols on a StringTransport: every state, every error path, exact bytes.

Both sides use fixed private values (tests/helpers.py), so every byte on the
wire, the shared secret and the session key are known in advance and are
computed here independently of the code under test.
"""

import dataclasses
import hashlib
import hmac

from twisted.internet import defer, error
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial import unittest

from twisted_keyx.groups import ffdh
from twisted_keyx.dh.handshake import (
    BadParameters,
    UnexpectedReply,
    DHClientState,
    DHClientHandshake,
    InvalidServerKey,
    ServerRefused,
    DHServerState,
)
from twisted_keyx.dh.protocol import (
    CLIENT_MAX_MESSAGE_LENGTH,
    DHClientProtocol,
    DHServerFactory,
    server_max_message_length,
)
from twisted_keyx.groups.registry import GroupError
from twisted_keyx.core.adapter import PauseReason
from twisted_keyx.core.machine import ServerHungUp
from twisted_keyx.core.transcript import session_key_fingerprint

from .helpers import (
    CLIENT_X,
    SERVER_X,
    connect_on_string_transport,
    dh_spki_pem,
    fixed_key,
    frame,
    read_data,
    unframe,
)

GROUP = ffdh.named_group("ffdhe2048")
P, Q = GROUP.p, GROUP.q
PEER = IPv4Address("TCP", "192.0.2.7", 40123)

HELLO = b"Hello"
HEY_THERE = b"Hey there!"
PARAMS = b"Params?"
PARAMETERS = read_data("ffdhe2048.pem")  # what OpenSSL writes for ffdhe2048
CLIENT_Y = pow(2, CLIENT_X, P)
SERVER_Y = pow(2, SERVER_X, P)
CLIENT_KEY = b"Client public key:" + dh_spki_pem(P, 2, CLIENT_Y, Q)
SERVER_KEY = b"Server public key:" + dh_spki_pem(P, 2, SERVER_Y, Q)
UNEXPECTED = b"I do not understand you, hanging up"
INVALID_KEY = b"Invalid client public key, hanging up"

SHARED_SECRET = pow(2, CLIENT_X * SERVER_X, P).to_bytes(256, "big")


def reference_session_key(transcript, secret):
    """RFC 5869 HKDF-SHA256 written out, info = label || SHA-256(transcript)."""
    digest = hashlib.sha256()
    for message in transcript:
        digest.update(len(message).to_bytes(4, "big") + message)
    info = b"twisted-keyx dh session key v1" + digest.digest()
    prk = hmac.new(bytes(32), secret, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


SESSION_KEY = reference_session_key(
    [HELLO, HEY_THERE, PARAMS, PARAMETERS, CLIENT_KEY, SERVER_KEY],
    SHARED_SECRET,
)


def key_message(prefix, y, p=P, g=2, q=Q):
    return prefix + dh_spki_pem(p, g, y, q)


def invalid_keys(prefix):
    """(description, message) for every key the peer must refuse."""
    pem = dh_spki_pem(P, 2, CLIENT_Y, Q)
    other_p, other_g, _, _ = ffdh.parse_parameters_pem(read_data("dhparam-2048.pem"))
    yield "bad PEM", prefix + b"-----BEGIN PUBLIC KEY-----\nnot base64!\n-----END PUBLIC KEY-----\n"
    yield "no PEM at all", prefix
    yield "truncated PEM", prefix + pem[:len(pem) // 2]
    lines = pem.splitlines(keepends=True)
    yield "truncated DER", prefix + b"".join(lines[:6] + lines[-1:])
    yield "RSA key", prefix + read_data("rsa-2048-public.pem")
    yield "X25519 key", prefix + read_data("x25519-public.pem")
    yield "key on another group", key_message(
        prefix, pow(other_g, CLIENT_X, other_p), other_p, other_g, None)
    yield "another generator", key_message(prefix, CLIENT_Y, g=5)
    for name, y in [("y = 0", 0), ("y = 1", 1), ("y = p-1", P - 1), ("y = p", P)]:
        yield name, key_message(prefix, y)
    # -y for a valid y: a quadratic non-residue, outside the subgroup of order q.
    yield "y outside the subgroup", key_message(prefix, P - CLIENT_Y)


class LogCapture:
    """The events one factory logs."""

    def __init__(self, test, source):
        self._captured = capturedLogs()
        self._events = self._captured.__enter__()
        test.addCleanup(self._captured.__exit__, None, None, None)
        self._source = source

    @property
    def events(self):
        return [e for e in self._events if e.get("log_source") is self._source]

    @property
    def lines(self):
        return [formatEvent(e) for e in self.events]


def states_through(protocol, messages):
    """The handshake's state at first and after each of ``messages`` (framed)."""
    states = [protocol.handshake.state]
    for message in messages:
        protocol.dataReceived(frame(message))
        states.append(protocol.handshake.state)
    return states


class ServerTestsMixin:
    def setUp(self):
        self.factory = DHServerFactory(GROUP, private_key_factory=fixed_key(SERVER_X))
        self.log = LogCapture(self, self.factory)

    def connect(self, factory=None, peer=PEER):
        factory = factory or self.factory
        protocol = factory.buildProtocol(peer)
        return protocol, connect_on_string_transport(protocol, peer)

    def advance(self, state):
        """A connection whose server has answered its way to ``state``."""
        protocol, transport = self.connect()
        for message in {
            DHServerState.AWAIT_HELLO: [],
            DHServerState.AWAIT_PARAMS_REQUEST: [HELLO],
            DHServerState.AWAIT_CLIENT_KEY: [HELLO, PARAMS],
        }[state]:
            protocol.dataReceived(frame(message))
        self.assertIs(protocol.handshake.state, state)
        transport.clear()
        return protocol, transport

    def assertClosedAfter(self, transport, reply):
        """The server sent exactly ``reply`` (one frame) and hung up."""
        self.assertEqual(transport.value(), frame(reply))
        self.assertFalse(transport.connected)


class ServerHandshakeTests(ServerTestsMixin, unittest.TestCase):
    def test_exact_bytes(self):
        protocol, transport = self.connect()
        self.assertEqual(transport.value(), b"")
        protocol.dataReceived(frame(HELLO))
        self.assertEqual(transport.value(), b"\x00\x00\x00\x0aHey there!")
        transport.clear()
        protocol.dataReceived(frame(PARAMS))
        self.assertEqual(transport.value(), len(PARAMETERS).to_bytes(4, "big") + PARAMETERS)
        transport.clear()
        protocol.dataReceived(frame(CLIENT_KEY))
        self.assertEqual(transport.value(), frame(SERVER_KEY))
        self.assertFalse(transport.connected)
        result = protocol.handshake.result
        self.assertEqual(result.shared_secret, SHARED_SECRET)
        self.assertEqual(result.session_key, SESSION_KEY)
        self.assertIs(result.group, GROUP)

    def test_states(self):
        protocol, transport = self.connect()
        states = states_through(protocol, (HELLO, PARAMS, CLIENT_KEY))
        self.assertEqual(states, [DHServerState.AWAIT_HELLO, DHServerState.AWAIT_PARAMS_REQUEST,
                                  DHServerState.AWAIT_CLIENT_KEY, DHServerState.DONE])

    def test_pipelined_messages(self):
        protocol, transport = self.connect()
        protocol.dataReceived(frame(HELLO) + frame(PARAMS) + frame(CLIENT_KEY))
        self.assertEqual(transport.value(),
                         frame(HEY_THERE) + frame(PARAMETERS) + frame(SERVER_KEY))

    def test_one_byte_at_a_time(self):
        protocol, transport = self.connect()
        for byte in frame(HELLO) + frame(PARAMS) + frame(CLIENT_KEY):
            protocol.dataReceived(bytes([byte]))
        self.assertEqual(transport.value(),
                         frame(HEY_THERE) + frame(PARAMETERS) + frame(SERVER_KEY))

    def test_client_key_with_crlf_and_whitespace(self):
        protocol, transport = self.advance(DHServerState.AWAIT_CLIENT_KEY)
        protocol.dataReceived(frame(CLIENT_KEY.replace(b"\n", b"\r\n") + b"  \r\n"))
        self.assertEqual(transport.value(), frame(SERVER_KEY))
        self.assertEqual(protocol.handshake.result.shared_secret, SHARED_SECRET)

    def test_pkcs3_client_key(self):
        protocol, transport = self.advance(DHServerState.AWAIT_CLIENT_KEY)
        protocol.dataReceived(frame(key_message(b"Client public key:", CLIENT_Y, q=None)))
        self.assertEqual(transport.value(), frame(SERVER_KEY))

    def test_message_after_success_is_ignored(self):
        protocol, transport = self.advance(DHServerState.AWAIT_CLIENT_KEY)
        protocol.dataReceived(frame(CLIENT_KEY) + frame(HELLO) + frame(b"junk"))
        self.assertEqual(transport.value(), frame(SERVER_KEY))
        protocol.dataReceived(frame(HELLO))
        self.assertEqual(transport.value(), frame(SERVER_KEY))

    def test_max_length(self):
        protocol, _ = self.connect()
        self.assertEqual(protocol.MAX_LENGTH, server_max_message_length(GROUP))
        # The largest legal message 5: X9.42 key, y just under p, CRLF line ends.
        largest = key_message(b"Client public key:", P - 2).replace(b"\n", b"\r\n")
        self.assertLessEqual(len(largest), protocol.MAX_LENGTH)

    def test_serves_again_after_a_rejection(self):
        protocol, transport = self.connect()
        protocol.dataReceived(frame(b"GET / HTTP/1.0\r\n\r\n"))
        self.assertClosedAfter(transport, UNEXPECTED)
        protocol, transport = self.connect()
        protocol.dataReceived(frame(HELLO) + frame(PARAMS) + frame(CLIENT_KEY))
        self.assertEqual(transport.value(),
                         frame(HEY_THERE) + frame(PARAMETERS) + frame(SERVER_KEY))

    def test_fresh_key_per_connection_by_default(self):
        factory = DHServerFactory(GROUP)
        replies = []
        for _ in range(2):
            protocol, transport = self.connect(factory)
            protocol.dataReceived(frame(HELLO) + frame(PARAMS) + frame(CLIENT_KEY))
            replies.append(transport.value())
        self.assertNotEqual(replies[0], replies[1])
        self.assertTrue(replies[0].endswith(b"-----END PUBLIC KEY-----\n"))


class ServerErrorTests(ServerTestsMixin, unittest.TestCase):
    # Every message that is not the one the state expects.
    WRONG = {
        DHServerState.AWAIT_HELLO: [PARAMS, CLIENT_KEY, HEY_THERE, b"hello", b"Hello ",
                                  b"unknown", b""],
        DHServerState.AWAIT_PARAMS_REQUEST: [HELLO, CLIENT_KEY, b"Params", b"unknown", b""],
        DHServerState.AWAIT_CLIENT_KEY: [HELLO, PARAMS, SERVER_KEY, b"unknown", b""],
    }

    def test_wrong_message_in_each_state(self):
        for state, wrong in self.WRONG.items():
            for message in wrong:
                protocol, transport = self.advance(state)
                protocol.dataReceived(frame(message))
                self.assertClosedAfter(transport, UNEXPECTED)
                self.assertIs(protocol.handshake.state, DHServerState.FAILED)

    def test_oversized_length_prefix_closes_at_once(self):
        for state in self.WRONG:
            for length in (server_max_message_length(GROUP) + 1, 2**32 - 1):
                protocol, transport = self.advance(state)
                # Only the 4-byte prefix: the server must not wait for a body.
                protocol.dataReceived(length.to_bytes(4, "big"))
                self.assertClosedAfter(transport, UNEXPECTED)

    def test_length_prefix_at_the_limit_waits_for_the_body(self):
        protocol, transport = self.advance(DHServerState.AWAIT_CLIENT_KEY)
        limit = server_max_message_length(GROUP)
        protocol.dataReceived(limit.to_bytes(4, "big") + b"Client public key:")
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.connected)
        protocol.dataReceived(b"x" * (limit - len(b"Client public key:")))
        self.assertClosedAfter(transport, INVALID_KEY)

    def test_key_from_a_larger_group_is_refused_by_its_length(self):
        p = ffdh.FFDHE3072_P
        message = key_message(b"Client public key:", pow(2, CLIENT_X, p), p, 2, (p - 1) // 2)
        self.assertGreater(len(message), server_max_message_length(GROUP))
        protocol, transport = self.advance(DHServerState.AWAIT_CLIENT_KEY)
        protocol.dataReceived(frame(message))
        self.assertClosedAfter(transport, UNEXPECTED)

    def test_invalid_client_keys(self):
        for description, message in invalid_keys(b"Client public key:"):
            protocol, transport = self.advance(DHServerState.AWAIT_CLIENT_KEY)
            protocol.dataReceived(frame(message))
            self.assertEqual(transport.value(), frame(INVALID_KEY), description)
            self.assertFalse(transport.connected, description)
            self.assertIs(protocol.handshake.state, DHServerState.FAILED)
            self.assertIsNone(protocol.handshake.result)

    def test_messages_after_a_failure_are_ignored(self):
        protocol, transport = self.advance(DHServerState.AWAIT_PARAMS_REQUEST)
        protocol.dataReceived(frame(b"unknown") + frame(PARAMS) + frame(b"again"))
        self.assertClosedAfter(transport, UNEXPECTED)
        protocol.dataReceived(frame(HELLO))
        protocol.dataReceived((2**31).to_bytes(4, "big"))
        self.assertClosedAfter(transport, UNEXPECTED)

    def test_nothing_is_kept_after_hanging_up(self):
        # Without the daemon's connection policy in front, the protocol itself
        # lets go of an over-long frame and buffers nothing more.
        protocol, transport = self.connect()
        protocol.dataReceived(b"\xff\xff\xff\xff" + b"x" * 65536)
        self.assertClosedAfter(transport, UNEXPECTED)
        self.assertIsNone(protocol.framing)  # let go, with what it buffered
        protocol.dataReceived(b"y" * 65536)
        self.assertIsNone(protocol.framing)  # let go, with what it buffered
        # The start of a frame behind a refused message is not kept either.
        protocol, transport = self.connect()
        protocol.dataReceived(frame(b"unknown") + b"\x00\x00\x10\x00" + b"z" * 100)
        self.assertClosedAfter(transport, UNEXPECTED)
        self.assertIsNone(protocol.framing)  # let go, with what it buffered

    def test_no_reply_after_invalid_key_and_more_data(self):
        protocol, transport = self.advance(DHServerState.AWAIT_CLIENT_KEY)
        protocol.dataReceived(frame(key_message(b"Client public key:", 1)) + frame(CLIENT_KEY))
        self.assertClosedAfter(transport, INVALID_KEY)

    def test_peer_leaves_in_each_state(self):
        for state in self.WRONG:
            protocol, transport = self.advance(state)
            protocol.connectionLost(Failure(error.ConnectionDone()))
            self.assertEqual(transport.value(), b"")


class ServerLogTests(ServerTestsMixin, unittest.TestCase):
    def handshake(self, factory):
        protocol, transport = self.connect(factory)
        protocol.dataReceived(frame(HELLO) + frame(PARAMS) + frame(CLIENT_KEY))
        self.assertFalse(transport.connected)

    def assertNoSecret(self, events):
        for event in events:
            text = repr(event) + formatEvent(event)
            for secret in (SHARED_SECRET.hex(), SESSION_KEY.hex()):
                self.assertNotIn(secret, text)
                self.assertNotIn(secret.upper(), text)

    def test_finished_without_secrets(self):
        self.handshake(self.factory)
        self.assertEqual(self.log.lines, [
            "DH handshake with 192.0.2.7:40123 finished (ffdhe2048); "
            f"session key fingerprint {session_key_fingerprint(SESSION_KEY)}"
        ])
        self.assertNoSecret(self.log.events)

    def test_the_finished_line_is_written_whole_with_its_fields_beside(self):
        # Made before twisted.logger sees it (the hot line): braces in a
        # group's name stay as they are, and observers still get the fields.
        group = dataclasses.replace(GROUP, name="odd {group} name")
        factory = DHServerFactory(group, private_key_factory=fixed_key(SERVER_X))
        log = LogCapture(self, factory)
        self.handshake(factory)
        [event] = log.events
        self.assertEqual(log.lines, [
            "DH handshake with 192.0.2.7:40123 finished (odd {group} name); "
            f"session key fingerprint {session_key_fingerprint(SESSION_KEY)}"
        ])
        self.assertEqual((event["peer"], event["group"], event["fingerprint"]),
                         ("192.0.2.7:40123", "odd {group} name", session_key_fingerprint(SESSION_KEY)))
        self.assertNotIn("{peer}", event["log_format"])

    def test_finished_with_secrets(self):
        factory = DHServerFactory(GROUP, show_secrets=True,
                                  private_key_factory=fixed_key(SERVER_X))
        log = LogCapture(self, factory)
        self.handshake(factory)
        self.assertEqual(log.lines, [
            "DH handshake with 192.0.2.7:40123 finished (ffdhe2048); "
            f"Shared Secret: {SHARED_SECRET.hex()} Session key: {SESSION_KEY.hex()}"
        ])

    def test_rejected(self):
        protocol, _ = self.advance(DHServerState.AWAIT_PARAMS_REQUEST)
        protocol.dataReceived(frame(HELLO) + frame(HELLO))
        self.assertEqual(self.log.lines, [
            "DH handshake with 192.0.2.7:40123 rejected: "
            "Hello message while awaiting Params?"
        ])

    def test_rejected_key_says_why(self):
        protocol, _ = self.advance(DHServerState.AWAIT_CLIENT_KEY)
        protocol.dataReceived(frame(key_message(b"Client public key:", P)))
        self.assertEqual(self.log.lines, [
            "DH handshake with 192.0.2.7:40123 rejected: "
            "invalid client public key: public value out of range"
        ])

    def test_rejected_oversized(self):
        protocol, _ = self.connect()
        protocol.dataReceived(b"\xff\xff\xff\xff")
        limit = server_max_message_length(GROUP)
        self.assertEqual(self.log.lines, [
            "DH handshake with 192.0.2.7:40123 rejected: "
            f"frame of 4294967295 bytes exceeds the limit of {limit}"
        ])

    def test_abandoned(self):
        protocol, _ = self.advance(DHServerState.AWAIT_CLIENT_KEY)
        protocol.connectionLost(Failure(error.ConnectionLost()))
        self.assertEqual(self.log.lines, [
            "DH handshake with 192.0.2.7:40123 abandoned by the peer while "
            "awaiting the client's public key"
        ])

    def test_one_line_per_outcome(self):
        # Rejection followed by the close it causes: still one line, no traceback.
        for state in ServerErrorTests.WRONG:
            protocol, _ = self.advance(state)
            protocol.dataReceived(frame(b"?"))
        protocol, _ = self.connect()
        protocol.connectionLost(Failure(error.ConnectionDone()))
        self.handshake(self.factory)
        self.assertEqual(len(self.log.events), 5)
        self.assertFalse(any(e.get("log_failure") for e in self.log.events))
        self.assertFalse(any("Traceback" in line for line in self.log.lines))
        self.assertNoSecret(self.log.events)

    def test_unix_peer(self):
        protocol, _ = self.connect(peer=UNIXAddress(None))
        protocol.dataReceived(frame(b"?"))
        self.assertEqual(self.log.lines, ["DH handshake with unix rejected: "
                                          "unknown message while awaiting Hello"])

    def test_ipv6_peer_is_bracketed(self):
        protocol, _ = self.connect(peer=IPv6Address("TCP", "::1", 40123))
        protocol.dataReceived(frame(b"?"))
        self.assertEqual(self.log.lines, ["DH handshake with [::1]:40123 rejected: "
                                          "unknown message while awaiting Hello"])


class ClientTestsMixin:
    def connect(self, **handshake_options):
        handshake_options.setdefault("private_key_factory", fixed_key(CLIENT_X))
        protocol = DHClientProtocol(DHClientHandshake(**handshake_options))
        return protocol, connect_on_string_transport(protocol)

    def advance(self, state):
        protocol, transport = self.connect()
        for message in {
            DHClientState.AWAIT_GREETING: [],
            DHClientState.AWAIT_PARAMETERS: [HEY_THERE],
            DHClientState.AWAIT_SERVER_KEY: [HEY_THERE, PARAMETERS],
        }[state]:
            protocol.dataReceived(frame(message))
        self.assertIs(protocol.handshake.state, state)
        self.assertNoResult(protocol.finished)
        transport.clear()
        return protocol, transport

    def assertFailedWith(self, protocol, transport, exception_type, reason=None):
        """``finished`` failed with ``exception_type``, nothing was sent, the
        connection is closed; returns the reason."""
        failure = self.failureResultOf(protocol.finished, exception_type)
        self.assertEqual(transport.value(), b"")
        self.assertFalse(transport.connected)
        if reason is not None:
            self.assertIn(reason, failure.value.reason)
        return failure.value.reason


class ClientHandshakeTests(ClientTestsMixin, unittest.TestCase):
    def test_exact_bytes(self):
        protocol, transport = self.connect()
        self.assertEqual(transport.value(), b"\x00\x00\x00\x05Hello")
        transport.clear()
        protocol.dataReceived(frame(HEY_THERE))
        self.assertEqual(transport.value(), b"\x00\x00\x00\x07Params?")
        transport.clear()
        protocol.dataReceived(frame(PARAMETERS))
        self.assertEqual(transport.value(), frame(CLIENT_KEY))
        transport.clear()
        self.assertNoResult(protocol.finished)
        protocol.dataReceived(frame(SERVER_KEY))
        self.assertEqual(transport.value(), b"")
        self.assertFalse(transport.connected)
        result = self.successResultOf(protocol.finished)
        self.assertEqual(result.shared_secret, SHARED_SECRET)
        self.assertEqual(result.session_key, SESSION_KEY)
        self.assertIs(result.group, GROUP)

    def test_states(self):
        protocol, _ = self.connect()
        states = states_through(protocol, (HEY_THERE, PARAMETERS, SERVER_KEY))
        self.assertEqual(states, [DHClientState.AWAIT_GREETING, DHClientState.AWAIT_PARAMETERS,
                                  DHClientState.AWAIT_SERVER_KEY, DHClientState.DONE])

    def test_x942_parameters_of_a_named_group(self):
        protocol, transport = self.advance(DHClientState.AWAIT_PARAMETERS)
        protocol.dataReceived(frame(ffdh.encode_parameters_pem(P, 2, Q)))
        self.assertEqual(transport.value(), frame(CLIENT_KEY))
        self.assertIs(protocol.handshake.group, GROUP)

    def test_messages_after_success_are_ignored(self):
        protocol, transport = self.advance(DHClientState.AWAIT_SERVER_KEY)
        protocol.dataReceived(frame(SERVER_KEY) + frame(UNEXPECTED) + frame(HEY_THERE))
        protocol.dataReceived(frame(SERVER_KEY))
        self.assertEqual(transport.value(), b"")
        self.assertEqual(self.successResultOf(protocol.finished).shared_secret, SHARED_SECRET)
        protocol.connectionLost(Failure(error.ConnectionDone()))

    def test_max_length(self):
        protocol, _ = self.connect()
        self.assertEqual(protocol.MAX_LENGTH, CLIENT_MAX_MESSAGE_LENGTH)
        for name in ffdh.NAMED_GROUP_PRIMES:
            group = ffdh.named_group(name)
            largest = key_message(b"Server public key:", group.p - 2, group.p, 2, group.q)
            self.assertLessEqual(len(largest.replace(b"\n", b"\r\n")), protocol.MAX_LENGTH)


class ClientErrorTests(ClientTestsMixin, unittest.TestCase):
    STATES = [DHClientState.AWAIT_GREETING, DHClientState.AWAIT_PARAMETERS,
              DHClientState.AWAIT_SERVER_KEY]
    WRONG = {
        DHClientState.AWAIT_GREETING: [HELLO, PARAMETERS, SERVER_KEY, b"Hey there", b""],
        DHClientState.AWAIT_PARAMETERS: [HEY_THERE, SERVER_KEY, CLIENT_KEY, b"unknown", b""],
        DHClientState.AWAIT_SERVER_KEY: [HEY_THERE, PARAMETERS, CLIENT_KEY, b"unknown", b""],
    }

    def test_error_reply_in_each_state(self):
        for state in self.STATES:
            for reply in (UNEXPECTED, INVALID_KEY):
                protocol, transport = self.advance(state)
                protocol.dataReceived(frame(reply))
                reason = self.assertFailedWith(protocol, transport, ServerRefused)
                self.assertEqual(reason, "the server refused: " + reply.decode())
                self.assertIs(protocol.handshake.state, DHClientState.FAILED)

    def test_unexpected_reply_in_each_state(self):
        for state, wrong in self.WRONG.items():
            for reply in wrong:
                protocol, transport = self.advance(state)
                protocol.dataReceived(frame(reply))
                reason = self.assertFailedWith(protocol, transport, UnexpectedReply)
                self.assertEqual(reason, f"bad response from the server while {state.value}")

    def test_oversized_frame_in_each_state(self):
        for state in self.STATES:
            protocol, transport = self.advance(state)
            protocol.dataReceived((CLIENT_MAX_MESSAGE_LENGTH + 1).to_bytes(4, "big"))
            self.assertFailedWith(protocol, transport, UnexpectedReply,
                                  f"a frame of {CLIENT_MAX_MESSAGE_LENGTH + 1} bytes")

    def test_server_hangs_up_in_each_state(self):
        for state in self.STATES:
            protocol, transport = self.advance(state)
            transport.loseConnection()  # as the peer closing: connectionLost(ConnectionDone)
            reason = self.assertFailedWith(protocol, transport, ServerHungUp)
            self.assertEqual(reason, f"the server closed the connection while {state.value}")

    def test_connection_fails_mid_handshake(self):
        protocol, transport = self.advance(DHClientState.AWAIT_PARAMETERS)
        transport.connected = False
        protocol.connectionLost(Failure(error.ConnectionRefusedError("reset")))
        self.assertFailedWith(protocol, transport, ServerHungUp, "the connection failed")

    def test_hang_up_after_success(self):
        protocol, transport = self.advance(DHClientState.AWAIT_SERVER_KEY)
        protocol.dataReceived(frame(SERVER_KEY))
        protocol.connectionLost(Failure(error.ConnectionDone()))
        self.successResultOf(protocol.finished)

    def test_bad_parameters(self):
        p_1024 = ffdh.parse_parameters_pem(read_data("dhparam-1024.pem"))[0]
        cases = {
            "not valid base64": b"-----BEGIN DH PARAMETERS-----\n!!\n-----END DH PARAMETERS-----",
            "END line": PARAMETERS[:len(PARAMETERS) // 2],
            "truncated DER": b"".join(
                PARAMETERS.splitlines(keepends=True)[:3] + PARAMETERS.splitlines()[-1:]),
            "at least 2048": ffdh.encode_parameters_pem(p_1024, 2),
            "OpenSSL's safety checks": ffdh.encode_parameters_pem(2**2047 + 1, 2),
            "1 < g < p - 1": ffdh.encode_parameters_pem(P, 1),
            "subgroup order q has 2 bits": read_data("dhx-2048-order3.pem"),
        }
        for reason, message in cases.items():
            protocol, transport = self.advance(DHClientState.AWAIT_PARAMETERS)
            protocol.dataReceived(frame(message))
            self.assertFailedWith(protocol, transport, BadParameters, reason)

    def test_invalid_server_keys(self):
        for description, message in invalid_keys(b"Server public key:"):
            protocol, transport = self.advance(DHClientState.AWAIT_SERVER_KEY)
            protocol.dataReceived(frame(message))
            reason = self.assertFailedWith(protocol, transport, InvalidServerKey)
            self.assertTrue(reason.startswith("invalid server public key: "), description)
            self.assertIsNone(protocol.handshake.result)

    def test_messages_after_a_failure_are_ignored(self):
        protocol, transport = self.advance(DHClientState.AWAIT_PARAMETERS)
        protocol.dataReceived(frame(b"?") + frame(PARAMETERS) + frame(SERVER_KEY))
        protocol.dataReceived(frame(PARAMETERS))
        protocol.connectionLost(Failure(error.ConnectionDone()))
        self.assertFailedWith(protocol, transport, UnexpectedReply)

    def test_nothing_is_kept_after_hanging_up(self):
        protocol, transport = self.advance(DHClientState.AWAIT_PARAMETERS)
        length = CLIENT_MAX_MESSAGE_LENGTH + 1
        protocol.dataReceived(length.to_bytes(4, "big") + b"x" * 65536)
        self.assertFailedWith(protocol, transport, UnexpectedReply, f"a frame of {length} bytes")
        self.assertIsNone(protocol.framing)  # let go, with what it buffered
        protocol.dataReceived(b"y" * 65536)
        self.assertIsNone(protocol.framing)  # let go, with what it buffered

    def test_cancel_then_connection_lost(self):
        # What a timeout does (client.py: finished.addTimeout): cancelling
        # aborts the connection, and a real reactor reports the loss later,
        # so a plain StringTransport (no synchronous connectionLost) here.
        protocol = DHClientProtocol(DHClientHandshake(private_key_factory=fixed_key(CLIENT_X)))
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(frame(HEY_THERE))
        transport.clear()
        protocol.finished.cancel()
        self.failureResultOf(protocol.finished, defer.CancelledError)
        self.assertTrue(transport.disconnected)  # aborted, not just closed
        protocol.dataReceived(frame(PARAMETERS))
        protocol.connectionLost(Failure(error.ConnectionAborted()))
        self.assertEqual(transport.value(), b"")


class ClientGroupCheckTests(ClientTestsMixin, unittest.TestCase):
    """A client whose ``check_parameters`` checks message 4 elsewhere (in a
    child process: twisted_keyx.groups.check): the session waits for it,
    reading nothing, and its verdict decides."""

    def held(self):
        protocol, transport = self.advance(DHClientState.AWAIT_PARAMETERS)
        checks = []
        self.cancelled = []

        def check(payload):
            checks.append((payload, defer.Deferred(self.cancelled.append)))
            return checks[-1][1]

        protocol.check_parameters = check
        return protocol, transport, checks

    def test_waits_for_the_check_and_keeps_what_follows(self):
        protocol, transport, checks = self.held()
        # Message 4 and, in the same chunk, message 6 (pipelined): nothing
        # is answered or read until the check is done.
        protocol.dataReceived(frame(PARAMETERS) + frame(SERVER_KEY))
        protocol.dataReceived(b"more")
        [(payload, check)] = checks
        self.assertEqual(payload, PARAMETERS)
        self.assertEqual(transport.value(), b"")
        self.assertIs(protocol.handshake.state, DHClientState.AWAIT_PARAMETERS)
        self.assertEqual(protocol.paused, {PauseReason.WORKING})
        check.callback(GROUP)
        self.assertEqual(unframe(transport.value())[0], CLIENT_KEY)
        self.assertIs(protocol.handshake.state, DHClientState.DONE)
        self.assertEqual(self.successResultOf(protocol.finished).shared_secret, SHARED_SECRET)

    def test_an_over_long_message_during_the_check_is_refused_after_it(self):
        # The check used to have its own pause, which refused an over-long
        # message at once, before message 5; the session's queue keeps it in
        # its turn (core/adapter.py).
        protocol, transport, checks = self.held()
        too_long = protocol.MAX_LENGTH + 1
        protocol.dataReceived(frame(PARAMETERS) + too_long.to_bytes(4, "big"))
        self.assertEqual(transport.value(), b"")
        self.assertNoResult(protocol.finished)
        checks[0][1].callback(GROUP)
        self.assertEqual(unframe(transport.value()), [CLIENT_KEY])
        failure = self.failureResultOf(protocol.finished, UnexpectedReply)
        self.assertIn(f"the server sent a frame of {too_long} bytes", failure.value.reason)

    def test_a_refusal_fails_the_handshake(self):
        protocol, transport, checks = self.held()
        protocol.dataReceived(frame(PARAMETERS))
        checks[0][1].errback(GroupError("p is not a safe prime"))
        self.assertFailedWith(protocol, transport, BadParameters,
                              "unusable parameters from the server: p is not a safe prime")

    def test_cancelling_stops_the_check(self):
        protocol, transport, checks = self.held()
        protocol.dataReceived(frame(PARAMETERS))
        protocol.finished.cancel()  # the client's timeout
        self.failureResultOf(protocol.finished, defer.CancelledError)
        self.assertEqual(self.cancelled, [checks[0][1]])
        self.assertEqual(transport.value(), b"")

    def test_hang_up_stops_the_check(self):
        protocol, transport, checks = self.held()
        protocol.dataReceived(frame(PARAMETERS))
        protocol.connectionLost(Failure(error.ConnectionDone()))
        self.failureResultOf(protocol.finished, ServerHungUp)
        self.assertEqual(self.cancelled, [checks[0][1]])

    def test_other_messages_are_not_checked(self):
        protocol, transport, checks = self.held()
        protocol.dataReceived(frame(HEY_THERE))
        self.assertEqual(checks, [])
        self.failureResultOf(protocol.finished, UnexpectedReply)
