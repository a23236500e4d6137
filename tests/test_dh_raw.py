"""The DH handshake without framing (docs/protocols.rst, Unframed wire): the
splitter alone, the raw protocols on a StringTransport, the daemon and client
options, and interoperation over real TCP with blocking peers written like
the tutorial's."""

import json
import os
import socket
from io import StringIO

from hypothesis import given, settings, strategies as st
from twisted.internet import defer, endpoints, reactor, threads
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransportWithDisconnection
from twisted.logger import Logger, formatEvent
from twisted.python import usage
from twisted.trial import unittest

from twisted_keyx.opaque.protocol import OPAQUEServerFactory
from twisted_keyx.groups import asn1
from twisted_keyx.cli import client
from twisted_keyx.groups import ffdh
from twisted_keyx.trust import hostkey
from twisted_keyx.service import tap
from twisted_keyx.core.framing import UnframedFraming
from twisted_keyx.dh.handshake import (
    UnexpectedReply,
    DHClientHandshake,
    DHServerHandshake,
    ServerRefused,
)
from twisted_keyx.dh.protocol import (
    CLIENT_MAX_MESSAGE_LENGTH,
    DHClientProtocol,
    DHServerFactory,
    server_max_message_length,
)
from twisted_keyx.dh.raw import (
    CLIENT_MESSAGES,
    SERVER_MESSAGES,
    MessageSplitter,
    MessageTooLong,
    RawDHClientProtocol,
    RawDHServerFactory,
    RawDHServerProtocol,
)
from twisted_keyx.eke.protocol import EKEServerFactory
from twisted_keyx.core.transcript import session_key_fingerprint

from .helpers import (
    read_data,
    RecordingDHServerFactory,
    RecordingRawDHServerFactory,
    log_text,
    tracked,
    tracking,
)

GROUP = ffdh.named_group("ffdhe2048")
#: ``openssl dhparam -out tests/data/dh2048.pem 2048``: the kind of file the
#: tutorial's server reads (PKCS #3, no q).
DH2048_PEM = os.path.join(os.path.dirname(__file__), "data", "dh2048.pem")

UNEXPECTED = b"I do not understand you, hanging up"
INVALID_KEY = b"Invalid client public key, hanging up"


def legal_exchange(group=GROUP):
    """The six messages of one handshake, as the tutorial sends them (PEM
    with its trailing newline): ``(client messages, server messages)``."""
    server = DHServerHandshake(group)
    peer = DHClientHandshake()
    sent, replies = [], []
    message = peer.start()
    while message is not None:
        sent.append(message)
        replies.append(server.receive(message))
        message = peer.receive(replies[-1])
    return sent, replies


CLIENT_SENT, SERVER_SENT = legal_exchange()


def split(shapes, chunks, max_length=10_000):
    splitter = MessageSplitter(shapes, max_length)
    out = []
    for chunk in chunks:
        splitter.feed(chunk)
        while (message := splitter.next_message()) is not None:
            out.append(message)
    return out


class MessageSplitterTests(unittest.TestCase):
    def test_the_legal_messages_as_the_tutorial_sends_them(self):
        for shapes, sent in ((CLIENT_MESSAGES, CLIENT_SENT), (SERVER_MESSAGES, SERVER_SENT)):
            for message in sent:
                self.assertEqual(split(shapes, [message]), [message.strip()])
        # The PEM-bearing ones really did carry a newline that was dropped.
        self.assertTrue(CLIENT_SENT[2].endswith(b"-----END PUBLIC KEY-----\n"))
        self.assertTrue(SERVER_SENT[1].endswith(b"-----END DH PARAMETERS-----\n"))

    def test_split_at_every_byte_position(self):
        for shapes, sent in ((CLIENT_MESSAGES, CLIENT_SENT), (SERVER_MESSAGES, SERVER_SENT)):
            stream = b"".join(sent)
            expected = [m.strip() for m in sent]
            for cut in range(len(stream) + 1):
                self.assertEqual(
                    split(shapes, [stream[:cut], stream[cut:]]), expected, f"cut at {cut}"
                )

    def test_byte_by_byte(self):
        stream = b"".join(SERVER_SENT)
        chunks = [stream[i:i + 1] for i in range(len(stream))]
        self.assertEqual(split(SERVER_MESSAGES, chunks), [m.strip() for m in SERVER_SENT])

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.integers(min_value=0, max_value=2000), max_size=12))
    def test_any_segmentation(self, cuts):
        stream = b"".join(CLIENT_SENT)
        cuts = sorted({min(c, len(stream)) for c in cuts})
        chunks = [stream[a:b] for a, b in zip([0] + cuts, cuts + [len(stream)])]
        self.assertEqual(split(CLIENT_MESSAGES, chunks), [m.strip() for m in CLIENT_SENT])

    def test_coalesced(self):
        self.assertEqual(
            split(CLIENT_MESSAGES, [b"".join(CLIENT_SENT)]), [m.strip() for m in CLIENT_SENT]
        )
        # Tokens run together with no whitespace at all still split.
        self.assertEqual(split(CLIENT_MESSAGES, [b"HelloParams?"]), [b"Hello", b"Params?"])

    def test_whitespace_is_not_part_of_a_message(self):
        key = CLIENT_SENT[2]
        variants = [
            b"\r\n \tHello\n",
            b"Hello\r\n",
            b"  Params?  ",
            key.rstrip(b"\n"),  # no newline after the END line
            b"\n\n" + key + b"\r\n",
            key.replace(b":", b":\r\n", 1),  # a line end between prefix and PEM
        ]
        for data in variants:
            self.assertEqual(
                split(CLIENT_MESSAGES, [data + b"Params?"]), [data.strip(), b"Params?"], data[:40]
            )
        # The message is complete at the END line's dashes: the newline after
        # it is not awaited.
        splitter = MessageSplitter(CLIENT_MESSAGES, 10_000)
        splitter.feed(key.rstrip(b"\n"))
        self.assertEqual(splitter.next_message(), key.strip())

    def test_crlf_line_ends(self):
        for shapes, message in ((CLIENT_MESSAGES, CLIENT_SENT[2]),
                                (SERVER_MESSAGES, SERVER_SENT[1]),
                                (SERVER_MESSAGES, SERVER_SENT[2])):
            crlf = message.replace(b"\n", b"\r\n")
            self.assertEqual(split(shapes, [crlf + b"Hello"])[0], crlf.strip())

    def test_incomplete_messages_wait(self):
        cases = [
            (CLIENT_MESSAGES, b"Hel"),
            (CLIENT_MESSAGES, b"  Params"),
            (CLIENT_MESSAGES, b"Client public"),
            (CLIENT_MESSAGES, b"Client public key:"),
            (CLIENT_MESSAGES, b"Client public key:-----BEGIN PUB"),
            (CLIENT_MESSAGES, CLIENT_SENT[2][:-10]),  # inside the END line
            (CLIENT_MESSAGES, CLIENT_SENT[2][:-26]),  # just before it: "-"
            (SERVER_MESSAGES, b"I do not understand you"),
            (SERVER_MESSAGES, b"-----"),
            (SERVER_MESSAGES, SERVER_SENT[1][:100]),
            (SERVER_MESSAGES, b"\r\n"),
        ]
        for shapes, data in cases:
            self.assertEqual(split(shapes, [data]), [], data)

    def test_garbage_is_handed_over_at_once(self):
        cases = [
            (CLIENT_MESSAGES, b"GET / HTTP/1.1\r\n\r\n", b"GET / HTTP/1.1"),
            (CLIENT_MESSAGES, b"Hellx", b"Hellx"),
            (CLIENT_MESSAGES, b"hello", b"hello"),
            (CLIENT_MESSAGES, b"Client public key:xyz", b"Client public key:xyz"),
            (CLIENT_MESSAGES, b"Client public key:-----BEGIN PUBLIC KEY-----\nAB!C",
             b"Client public key:-----BEGIN PUBLIC KEY-----\nAB!C"),
            (CLIENT_MESSAGES, b"Client public key:-----BEGIN PUBLIC KEY-----\nAB\n--x",
             b"Client public key:-----BEGIN PUBLIC KEY-----\nAB\n--x"),
            (SERVER_MESSAGES, b"-----BEGIN DH\nPARAMETERS-----", b"-----BEGIN DH\nPARAMETERS-----"),
            (SERVER_MESSAGES, b"Hey there?", b"Hey there?"),
            (SERVER_MESSAGES, b"\x00\xff", b"\x00\xff"),
            (SERVER_MESSAGES, b"-----BEGIN X-----\nAA\n-----END X\x00", b"-----BEGIN X-----\nAA\n-----END X\x00"),
        ]
        for shapes, data, expected in cases:
            self.assertEqual(split(shapes, [data]), [expected], data)

    def test_a_legal_message_then_garbage(self):
        self.assertEqual(split(CLIENT_MESSAGES, [b"Hello\nwhat?"]), [b"Hello", b"what?"])

    def test_garbage_takes_everything_buffered(self):
        # Once a byte cannot belong to a legal message, what follows is not
        # trusted to start a new one: all of it goes to the state machine.
        data = b"-----BEGIN DH PARAMETERS-----\nA!A\n-----END DH PARAMETERS-----\nHey there!"
        self.assertEqual(split(SERVER_MESSAGES, [data]), [data])

    def test_bounded(self):
        head = b"Client public key:-----BEGIN PUBLIC KEY-----\n"
        incomplete = head + b"A" * (100 - len(head))
        splitter = MessageSplitter(CLIENT_MESSAGES, 100)
        splitter.feed(incomplete)
        self.assertIsNone(splitter.next_message())  # exactly at the bound: waits
        splitter.feed(b"A")
        with self.assertRaises(MessageTooLong) as caught:
            splitter.next_message()
        self.assertEqual((caught.exception.length, caught.exception.limit), (101, 100))
        self.assertEqual(
            str(caught.exception), "101 bytes without a complete message exceed the limit of 100"
        )

    def test_bounded_complete_message_and_whitespace(self):
        splitter = MessageSplitter(CLIENT_MESSAGES, len(CLIENT_SENT[2].strip()) - 1)
        splitter.feed(CLIENT_SENT[2])
        self.assertRaises(MessageTooLong, splitter.next_message)
        # Whitespace counts too, so a flood of it cannot grow the buffer.
        splitter = MessageSplitter(CLIENT_MESSAGES, 100)
        splitter.feed(b"\n" * 101)
        self.assertRaises(MessageTooLong, splitter.next_message)
        # Garbage longer than the bound is refused as too long.
        splitter = MessageSplitter(CLIENT_MESSAGES, 100)
        splitter.feed(b"x" * 101)
        self.assertRaises(MessageTooLong, splitter.next_message)

    def test_real_bounds_leave_room_for_legal_messages(self):
        # The server's bound is the framed mode's: the largest client message.
        largest_group = ffdh.named_group("ffdhe4096")
        _, replies = legal_exchange(largest_group)
        sent, _ = legal_exchange(largest_group)
        self.assertLess(len(sent[2]), server_max_message_length(largest_group))
        self.assertLess(max(len(r) for r in replies), CLIENT_MAX_MESSAGE_LENGTH)


class RecordingTransport(StringTransportWithDisconnection):
    """Records each write, to check one write per message."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.writes = []

    def write(self, data):
        self.writes.append(data)
        super().write(data)


def dh_public_key_pem(p, g, y):
    """A PKCS #3 DH SubjectPublicKeyInfo (RFC 3279 2.3.2) with any y."""
    algorithm = asn1.encode_sequence(
        asn1.encode(asn1.OBJECT_IDENTIFIER, asn1.oid("1.2.840.113549.1.3.1")),
        asn1.encode_sequence(asn1.encode_integer(p), asn1.encode_integer(g)),
    )
    key = asn1.encode(asn1.BIT_STRING, b"\0" + asn1.encode_integer(y))
    return asn1.pem_encode(b"PUBLIC KEY", asn1.encode_sequence(algorithm, key))


def connect_server(group=GROUP, show_secrets=False):
    factory = RawDHServerFactory(group, show_secrets=show_secrets)
    events = []
    factory.log = Logger(observer=events.append)
    peer = IPv4Address("TCP", "127.0.0.1", 40404)
    protocol = factory.buildProtocol(peer)
    transport = RecordingTransport(peerAddress=peer)
    transport.protocol = protocol
    protocol.makeConnection(transport)
    return protocol, transport, events


class RawServerProtocolTests(unittest.TestCase):
    def test_handshake_exact_bytes(self):
        protocol, transport, events = connect_server(show_secrets=True)
        # The peer as a client on the unframed wire: it gets each message
        # without surrounding whitespace, and hashes what it sends that way.
        peer = DHClientHandshake(received_form=UnframedFraming.received_form)
        protocol.dataReceived(peer.start())
        self.assertEqual(transport.writes, [b"Hey there!"])
        protocol.dataReceived(peer.receive(transport.writes[-1].strip()))
        self.assertEqual(transport.writes[1], GROUP.parameters_pem)
        self.assertTrue(transport.writes[1].startswith(b"-----BEGIN DH PARAMETERS-----\n"))
        self.assertTrue(transport.writes[1].endswith(b"-----END DH PARAMETERS-----\n"))
        protocol.dataReceived(peer.receive(transport.writes[-1].strip()))
        self.assertEqual(len(transport.writes), 3)
        reply = transport.writes[2]
        self.assertTrue(reply.startswith(b"Server public key:-----BEGIN PUBLIC KEY-----\n"))
        self.assertTrue(reply.endswith(b"-----END PUBLIC KEY-----\n"))
        self.assertIsNone(peer.receive(reply.strip()))
        self.assertFalse(transport.connected)
        self.assertEqual(transport.value(), b"".join(transport.writes))  # no framing
        # The same secret and the same session key as the peer: both hashed
        # the messages as the unframed wire delivers them.
        secret = protocol.handshake.result.shared_secret
        self.assertEqual(secret, peer.result.shared_secret)
        self.assertEqual(protocol.handshake.result.session_key, peer.result.session_key)
        [line] = log_text(events)
        self.assertIn("127.0.0.1:40404 finished", line)
        self.assertIn(f"Shared Secret: {secret.hex()}", line)

    def test_coalesced_and_segmented(self):
        stream = b"".join(CLIENT_SENT)
        for chunks in ([stream], [stream[i:i + 7] for i in range(0, len(stream), 7)]):
            protocol, transport, events = connect_server()
            for chunk in chunks:
                protocol.dataReceived(chunk)
            self.assertEqual(len(transport.writes), 3)
            self.assertEqual(transport.writes[:2], [b"Hey there!", GROUP.parameters_pem])
            self.assertTrue(transport.writes[2].startswith(b"Server public key:"))
            self.assertFalse(transport.connected)
            self.assertIn("finished", log_text(events)[0])

    def test_out_of_order(self):
        protocol, transport, events = connect_server()
        # Both in one segment: nothing is answered after the refusal.
        protocol.dataReceived(b"Params?Hello")
        self.assertEqual(transport.writes, [UNEXPECTED])
        self.assertFalse(transport.connected)
        [line] = log_text(events)
        self.assertIn("rejected: Params? message while awaiting Hello", line)

    def test_garbage(self):
        protocol, transport, events = connect_server()
        protocol.dataReceived(b"GET / HTTP/1.0\r\n\r\n")
        self.assertEqual(transport.writes, [UNEXPECTED])
        self.assertFalse(transport.connected)
        self.assertIn("rejected: unknown message while awaiting Hello", log_text(events)[0])

    def test_invalid_client_key(self):
        protocol, transport, events = connect_server()
        protocol.dataReceived(b"Hello")
        protocol.dataReceived(b"Params?")
        protocol.dataReceived(b"Client public key:" + dh_public_key_pem(GROUP.p, GROUP.g, 1))
        self.assertEqual(transport.writes[2:], [INVALID_KEY])
        self.assertFalse(transport.connected)
        self.assertIn("invalid client public key: public value out of range", log_text(events)[0])

    def test_a_larger_groups_key_is_too_long(self):
        # As with framing: the bound is the largest key in the server's group.
        protocol, transport, events = connect_server()
        other_group_key, _ = legal_exchange(ffdh.named_group("ffdhe4096"))
        protocol.dataReceived(b"HelloParams?" + other_group_key[2])
        self.assertEqual(transport.writes[2:], [UNEXPECTED])
        self.assertIn("exceed the limit", log_text(events)[0])

    def test_pem_garbage_after_the_prefix_is_an_invalid_key(self):
        protocol, transport, events = connect_server()
        protocol.dataReceived(b"Hello")
        protocol.dataReceived(b"Params?")
        protocol.dataReceived(b"Client public key:-----BEGIN PUBLIC KEY-----\n%%%")
        self.assertEqual(transport.writes[2:], [INVALID_KEY])

    def test_too_long(self):
        protocol, transport, events = connect_server()
        limit = server_max_message_length(GROUP)
        protocol.dataReceived(b"HelloParams?")
        stream = b"Client public key:-----BEGIN PUBLIC KEY-----\n" + b"QUFB\n" * (limit // 5)
        for i in range(0, len(stream), 1000):
            protocol.dataReceived(stream[i:i + 1000])
        self.assertEqual(transport.writes[2:], [UNEXPECTED])
        self.assertFalse(transport.connected)
        self.assertIn(f"exceed the limit of {limit}", log_text(events)[0])

    def test_nothing_is_kept_after_hanging_up(self):
        # Without the daemon's connection policy in front, the protocol itself
        # lets go of what it buffered and buffers nothing more.
        protocol, transport, events = connect_server()
        limit = server_max_message_length(GROUP)
        protocol.dataReceived(b"Client public key:-----BEGIN PUBLIC KEY-----\n"
                              + b"QUFB" * (limit // 4))
        self.assertEqual(transport.writes, [UNEXPECTED])
        self.assertEqual(protocol.buffered, 0)
        protocol.dataReceived(b"Hello")
        self.assertEqual(protocol.buffered, 0)
        self.assertEqual(transport.writes, [UNEXPECTED])
        # Nor the start of a message behind a refused one.
        protocol, transport, events = connect_server()
        protocol.dataReceived(b"Params?Client public key:-----BEGIN")
        self.assertEqual(transport.writes, [UNEXPECTED])
        self.assertEqual(protocol.buffered, 0)

    def test_abandoned(self):
        protocol, transport, events = connect_server()
        protocol.dataReceived(b"Hello\nParams")  # the second message incomplete
        transport.loseConnection()
        self.assertEqual(transport.writes, [b"Hey there!"])
        self.assertIn("abandoned by the peer while awaiting Params?", log_text(events)[0])

    def test_factory_is_the_framed_one_with_another_protocol(self):
        factory = RawDHServerFactory(GROUP)
        self.assertIsInstance(factory, DHServerFactory)
        self.assertIs(factory.protocol, RawDHServerProtocol)
        self.assertEqual(factory.max_message_length, server_max_message_length(GROUP))


def connect_client():
    protocol = RawDHClientProtocol()
    transport = RecordingTransport()
    transport.protocol = protocol
    protocol.makeConnection(transport)
    results = []
    protocol.finished.addBoth(results.append)
    return protocol, transport, results


class RawClientProtocolTests(unittest.TestCase):
    def test_handshake_exact_bytes(self):
        protocol, transport, results = connect_client()
        # The server as one on the unframed wire: it hashes what it sends
        # without surrounding whitespace, as the client will receive it.
        server = DHServerHandshake(GROUP, received_form=UnframedFraming.received_form)
        self.assertEqual(transport.writes, [b"Hello"])
        protocol.dataReceived(server.receive(transport.writes[-1]))
        self.assertEqual(transport.writes[1:], [b"Params?"])
        parameters = server.receive(transport.writes[-1])
        for i in range(0, len(parameters), 100):  # in pieces
            protocol.dataReceived(parameters[i:i + 100])
        self.assertEqual(len(transport.writes), 3)
        key_message = transport.writes[2]
        self.assertTrue(key_message.startswith(b"Client public key:-----BEGIN PUBLIC KEY-----\n"))
        self.assertTrue(key_message.endswith(b"-----END PUBLIC KEY-----\n"))
        reply = server.receive(key_message.strip())
        protocol.dataReceived(reply.rstrip(b"\n"))  # as a stripping server might
        self.assertEqual(len(results), 1)
        self.assertEqual(results[0].shared_secret, server.result.shared_secret)
        self.assertEqual(results[0].session_key, server.result.session_key)
        self.assertFalse(transport.connected)
        self.assertEqual(len(transport.writes), 3)

    def test_coalesced_replies(self):
        # A server that answers before being asked still gets a correct client.
        protocol, transport, results = connect_client()
        server = DHServerHandshake(GROUP)
        greeting = server.receive(b"Hello")
        protocol.dataReceived(greeting + server.receive(b"Params?"))
        self.assertEqual(transport.writes[1], b"Params?")
        self.assertTrue(transport.writes[2].startswith(b"Client public key:"))
        protocol.dataReceived(server.receive(transport.writes[2]))
        self.assertEqual(results[0].shared_secret, server.result.shared_secret)

    def test_server_refuses(self):
        protocol, transport, results = connect_client()
        protocol.dataReceived(UNEXPECTED)
        failure = results[0]
        self.assertTrue(failure.check(ServerRefused))
        self.assertEqual(failure.value.reason, "the server refused: " + UNEXPECTED.decode())
        self.assertFalse(transport.connected)

    def test_garbage(self):
        protocol, transport, results = connect_client()
        protocol.dataReceived(b"HTTP/1.1 400 Bad Request\r\n")
        self.assertTrue(results[0].check(UnexpectedReply))
        self.assertFalse(transport.connected)

    def test_too_long(self):
        protocol, transport, results = connect_client()
        protocol.dataReceived(b"Hey there!")
        head = b"-----BEGIN DH PARAMETERS-----\n"
        protocol.dataReceived(head + b"A" * CLIENT_MAX_MESSAGE_LENGTH)
        self.assertTrue(results[0].check(UnexpectedReply))
        self.assertIn(
            f"exceed the limit of {CLIENT_MAX_MESSAGE_LENGTH}", results[0].value.reason
        )
        self.assertFalse(transport.connected)
        self.assertEqual(protocol.buffered, 0)
        protocol.dataReceived(b"Hey there!")
        self.assertEqual(protocol.buffered, 0)


class OptionsTests(unittest.TestCase):
    def parse(self, *argv):
        options = tap.Options()
        options.parseOptions(list(argv))
        return options

    def test_off_by_default(self):
        options = self.parse()
        self.assertEqual(options["dh-raw"], [])
        self.assertEqual(options["dh"], ["tcp:7777"])

    def test_repeatable_next_to_dh(self):
        options = self.parse("--dh-raw", "tcp:7777", "--dh", "tcp:7778", "--dh-raw", "unix:/tmp/x")
        self.assertEqual(options["dh-raw"], ["tcp:7777", "unix:/tmp/x"])
        self.assertEqual(options["dh"], ["tcp:7778"])

    def test_clash_with_the_default_dh_endpoint(self):
        with self.assertRaises(usage.UsageError) as caught:
            self.parse("--dh-raw", "tcp:7777")
        self.assertEqual(
            str(caught.exception),
            "--dh tcp:7777 and --dh-raw tcp:7777 would both listen on the same port; "
            "tcp:7777 is the default for --dh: give --dh another endpoint, for example "
            "--dh tcp:7778",
        )

    def test_other_clashes(self):
        for argv in (
            ["--dh", "tcp:7000", "--dh-raw", "tcp:port=7000:interface=127.0.0.1"],
            ["--dh", "tcp:7000:interface=127.0.0.1", "--dh-raw", "tcp:7000"],
            ["--dh", "tcp:7000:interface=127.0.0.1", "--dh-raw", "tcp:7000:interface=127.0.0.1"],
            ["--dh", "unix:/tmp/k.sock", "--dh-raw", "unix:/tmp/k.sock"],
            ["--dh-raw", "tcp:7001", "--dh-raw", "ssl:7001:privateKey=k.pem"],
        ):
            self.assertRaises(usage.UsageError, self.parse, *argv)

    def test_no_clash(self):
        for argv in (
            ["--dh", "tcp:7000:interface=127.0.0.1", "--dh-raw", "tcp:7000:interface=127.0.0.2"],
            ["--dh", "tcp:0", "--dh-raw", "tcp:0"],
            ["--dh", "unix:/tmp/a.sock", "--dh-raw", "unix:/tmp/b.sock"],
        ):
            self.parse(*argv)

    def test_bad_endpoint(self):
        with self.assertRaises(usage.UsageError) as caught:
            self.parse("--dh-raw", "nonsense:1")
        self.assertIn("bad endpoint 'nonsense:1'", str(caught.exception))

    def test_service(self):
        top = tap.makeService(self.parse("--dh-raw", "tcp:7777", "--dh", "tcp:7778"))
        # Every listener's factory is behind the daemon's connection policy.
        factories = [type(s.factory.wrappedFactory) for s in top if hasattr(s, "factory")]
        # EKE is served by default next to DH.
        self.assertEqual(factories, [DHServerFactory, RawDHServerFactory, EKEServerFactory,
                                     OPAQUEServerFactory])
        events = []
        top.log = Logger(observer=events.append)
        top.services = []  # log the start without listening
        top.startService()
        self.addCleanup(top.stopService)
        self.assertIn(
            "DH handshake on tcp:7778; unframed (the tutorial's wire format) on tcp:7777 "
            "with group ffdhe2048",
            formatEvent(events[0]),
        )

    def test_client_option(self):
        parser = client.build_parser()
        self.assertTrue(parser.parse_args(["dh", "--raw"]).raw)
        self.assertFalse(parser.parse_args(["dh"]).raw)


# Blocking peers written from docs/protocols.rst, Unframed wire, like the tutorial's scripts:
# each message in one sendall, each read with one recv(3072) and strip().
# One recv per message is the tutorial's own assumption, kept on purpose: on
# loopback each of our single writes (at most 1,171 bytes for ffdhe2048)
# arrives whole.  Their DH math goes through twisted_keyx.groups.ffdh.

def tutorial_client(port):
    """Returns the shared secret, or the bytes of an unexpected reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"Hello")
        data = sock.recv(3072).strip()
        if data != b"Hey there!":
            return data
        sock.sendall(b"Params?")
        data = sock.recv(3072).strip()
        group = ffdh.group_from_parameters_pem(data)
        private_key = group.generate_private_key()
        sock.sendall(b"Client public key:" + group.public_key_pem(private_key))
        data = sock.recv(3072).strip()
        if data[0:18] != b"Server public key:":
            return data
        return group.exchange(private_key, group.load_peer_key(data[18:]))


def tutorial_out_of_turn_client(port):
    """Asks for the parameters without saying Hello: the reply, then EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"Params?")
        return sock.recv(3072), sock.recv(3072)


def tutorial_server(listener, group):
    """Serves one connection; returns (raw messages received, shared secret)."""
    conn, _ = listener.accept()
    received = []
    with conn:
        conn.settimeout(10)

        def receive():
            received.append(conn.recv(3072))
            return received[-1].strip()

        if receive() != b"Hello":
            conn.sendall(b"I do not understand you, hanging up")
            return received, None
        conn.sendall(b"Hey there!")
        if receive() != b"Params?":
            conn.sendall(b"I do not understand you, hanging up")
            return received, None
        conn.sendall(group.parameters_pem)  # PKCS #3 PEM, as parameter_bytes()
        data = receive()
        if data[0:18] != b"Client public key:":
            return received, None
        try:
            client_key = group.load_peer_key(data[18:])
        except ffdh.InvalidPublicKey:
            conn.sendall(b"Invalid client public key, hanging up")
            return received, None
        private_key = group.generate_private_key()
        conn.sendall(b"Server public key:" + group.public_key_pem(private_key))
        return received, group.exchange(private_key, client_key)


_TrackedClientProtocol = tracked(RawDHClientProtocol)
_TrackedFramedClientProtocol = tracked(DHClientProtocol)


class LoopbackInteropTests(unittest.TestCase):
    """Real TCP on 127.0.0.1; the blocking peer runs in a thread."""

    def serve(self, group=GROUP, framed=False, host_key=None):
        factory = tracking(RecordingDHServerFactory if framed else RecordingRawDHServerFactory)(
            group, host_key=host_key)
        factory.events = []
        factory.log = Logger(observer=factory.events.append)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return factory, port.getHost().port, factory.results

    def blocking_server(self, group):
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(10)
        self.addCleanup(listener.close)
        return listener, threads.deferToThread(tutorial_server, listener, group)

    @defer.inlineCallbacks
    def test_tutorial_client_against_raw_server(self):
        factory, port, results = self.serve()
        secret = yield threads.deferToThread(tutorial_client, port)
        yield factory.allLost()
        self.assertEqual(len(secret), 256)
        self.assertEqual(secret, results[0].shared_secret)

    @defer.inlineCallbacks
    def test_tutorial_client_out_of_turn(self):
        factory, port, results = self.serve()
        reply, after = yield threads.deferToThread(tutorial_out_of_turn_client, port)
        yield factory.allLost()
        self.assertEqual(reply, UNEXPECTED)
        self.assertEqual(after, b"")  # the server hung up
        self.assertEqual(results, [])

    @defer.inlineCallbacks
    def test_raw_client_against_tutorial_server(self):
        # The tutorial's server reads an `openssl dhparam` file: a custom
        # group (slow in cryptography 50, so only this test uses one).
        group = ffdh.load_parameters_file(DH2048_PEM)
        listener, served = self.blocking_server(group)
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", listener.getsockname()[1])
        protocol = yield endpoints.connectProtocol(endpoint, _TrackedClientProtocol())
        result = yield protocol.finished
        received, secret = yield served
        yield protocol.lost
        self.assertEqual(result.shared_secret, secret)
        self.assertEqual(result.group.p, group.p)
        # One recv per message, each exactly one of our writes.
        self.assertEqual(received[:2], [b"Hello", b"Params?"])
        self.assertTrue(received[2].startswith(b"Client public key:-----BEGIN PUBLIC KEY-----\n"))
        self.assertTrue(received[2].endswith(b"-----END PUBLIC KEY-----\n"))
        self.assertEqual(len(received), 3)

    @defer.inlineCallbacks
    def test_keyx_client_raw_json_against_raw_server(self):
        # With a host key, so that the client's one connection is signed.
        host_key = hostkey.parse_host_key(read_data("ed25519-host-key"))
        factory, port, results = self.serve(host_key=host_key)
        status, output = yield self.run_client(
            port, "--raw", "--json", "--accept-new", "--known-hosts", self.mktemp())
        yield factory.allLost()
        self.assertEqual(status, client.EXIT_OK)
        report = json.loads(output)
        self.assertEqual(report["shared_secret"], results[0].shared_secret.hex())
        self.assertEqual(report["fingerprint"], session_key_fingerprint(results[0].session_key))
        self.assertEqual(report["group"], "ffdhe2048")
        self.assertEqual(report["host_key_fingerprint"], host_key.fingerprint)

    @defer.inlineCallbacks
    def run_client(self, port, *options):
        """keyx-client dh against 127.0.0.1:port: (exit status, stdout)."""
        self.patch(client.RawDHClientFactory, "protocol", _TrackedClientProtocol)
        self.patch(client.DHClientFactory, "protocol", _TrackedFramedClientProtocol)
        args = client.build_parser().parse_args(
            ["dh", "--host", "127.0.0.1", "--port", str(port), *options]
        )
        out = StringIO()
        try:
            status = yield defer.Deferred.fromCoroutine(client.run_dh(reactor, args, out))
        except client.ClientError as e:
            status, out = e.status, StringIO(str(e))
        tracked = _TrackedClientProtocol if args.raw else _TrackedFramedClientProtocol
        yield tracked.instances[-1].lost
        return status, out.getvalue()

    @defer.inlineCallbacks
    def test_wrong_framing_gets_a_hint(self):
        factory, port, results = self.serve()
        status, message = yield self.run_client(port)
        yield factory.allLost()
        self.assertEqual(status, client.EXIT_HANDSHAKE_FAILED)
        self.assertTrue(message.startswith("the server sent a frame of "), message)
        self.assertIn("needs --raw", message)

        factory, port, results = self.serve(framed=True)
        status, message = yield self.run_client(port, "--raw")
        yield factory.allLost()
        self.assertEqual(status, client.EXIT_HANDSHAKE_FAILED)
        self.assertEqual(
            message,
            "bad response from the server while awaiting Hey there! "
            "(a framed server, such as twistd keyx --dh, needs no --raw)",
        )
