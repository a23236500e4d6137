"""The benchmark's helpers (benchmarks/keyxbench), without timing anything:
the DH load client's decisions, its reading of framed and unframed replies,
the load summary, and the reading of py-spy's collapsed stacks.  Results of
the benchmark itself: docs/benchmarks.rst."""

import os
import sys

from twisted.internet.testing import StringTransportWithDisconnection
from twisted.trial import unittest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
if BENCHMARKS not in sys.path:
    sys.path.insert(0, BENCHMARKS)

from keyxbench import clients, load, spy  # noqa: E402
from keyxbench.project import messages  # noqa: E402

from .helpers import frame  # noqa: E402

PARAMS = b"-----BEGIN DH PARAMETERS-----\nMIIBCAKCAQEA\n-----END DH PARAMETERS-----\n"
SERVER_KEY = messages.SERVER_KEY_PREFIX + b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
KEY_MESSAGE = messages.CLIENT_KEY_PREFIX + b"-----BEGIN PUBLIC KEY-----\nBBBB\n-----END PUBLIC KEY-----\n"


class DHStepsTests(unittest.TestCase):
    def test_a_handshake(self):
        steps = clients.DHSteps(KEY_MESSAGE)
        self.assertEqual(steps.start(), messages.HELLO)
        self.assertEqual(steps.receive(messages.HEY_THERE), messages.PARAMS_REQUEST)
        self.assertEqual(steps.receive(PARAMS), KEY_MESSAGE)
        self.assertIsNone(steps.receive(SERVER_KEY))
        self.assertTrue(steps.finished)

    def test_an_error_reply_is_named(self):
        steps = clients.DHSteps(KEY_MESSAGE)
        steps.receive(messages.HEY_THERE)
        with self.assertRaises(clients.BadReply) as caught:
            steps.receive(messages.UNEXPECTED_MESSAGE_REPLY)
        self.assertIn("I do not understand you", str(caught.exception))

    def test_replies_out_of_order(self):
        for replies, kind in (([PARAMS], "greeting"), ([messages.HEY_THERE, SERVER_KEY], "parameters"),
                              ([messages.HEY_THERE, PARAMS, PARAMS], "server key")):
            steps = clients.DHSteps(KEY_MESSAGE)
            with self.assertRaises(clients.BadReply) as caught:
                for reply in replies:
                    steps.receive(reply)
            self.assertEqual(str(caught.exception), kind)
            self.assertFalse(steps.finished)

    def test_the_server_key_is_checked_when_asked(self):
        checked = []

        class Group:
            def load_peer_key(self, pem):
                checked.append(pem)

        steps = clients.DHSteps(KEY_MESSAGE, check=Group())
        for reply in (messages.HEY_THERE, PARAMS, SERVER_KEY.rstrip()):
            steps.receive(reply)
        self.assertEqual(checked, [SERVER_KEY[len(messages.SERVER_KEY_PREFIX):]])


class FakeSettings:
    def dh_steps(self, recorder):
        return clients.DHSteps(KEY_MESSAGE)


class FakeFactory:
    """Stands for keyxbench.clients.HandshakeFactory: counts, no reactor."""

    began = 0.0

    def __init__(self):
        self.settings = FakeSettings()
        self.recorder = clients.Recorder()
        self.recorder.measuring = True
        self.nexts = 0

    def next(self):
        self.nexts += 1


class Transport(StringTransportWithDisconnection):
    def setTcpNoDelay(self, enabled):
        self.no_delay = enabled

    def abortConnection(self):
        self.loseConnection()


def connect(protocol_class):
    factory = FakeFactory()
    client = protocol_class()
    client.factory = factory
    transport = Transport()
    transport.protocol = client
    client.makeConnection(transport)
    return client, transport, factory


class ClientWireTests(unittest.TestCase):
    """The load clients read replies however TCP cuts them."""

    def check(self, protocol_class, wire, out):
        client, transport, factory = connect(protocol_class)
        self.assertEqual(transport.value(), out[0])
        transport.clear()
        for chunk in wire:
            client.dataReceived(chunk)
        self.assertEqual(transport.value(), out[1] + out[2])
        self.assertEqual(factory.recorder.failures, 0)
        self.assertEqual(len(factory.recorder.latencies), 1)
        self.assertFalse(transport.connected)
        self.assertEqual(factory.nexts, 1)

    def test_framed_in_pieces(self):
        wire = frame(messages.HEY_THERE) + frame(PARAMS) + frame(SERVER_KEY)
        self.check(clients.FramedDHClient, [wire[i:i + 7] for i in range(0, len(wire), 7)],
                   [frame(messages.HELLO), frame(messages.PARAMS_REQUEST), frame(KEY_MESSAGE)])

    def test_unframed_in_pieces_and_together(self):
        wire = messages.HEY_THERE + PARAMS + SERVER_KEY
        self.check(clients.RawDHClient, [wire[:5], wire[5:40], wire[40:]],
                   [messages.HELLO, messages.PARAMS_REQUEST, KEY_MESSAGE])

    def test_a_wrong_reply_is_a_failure(self):
        client, transport, factory = connect(clients.FramedDHClient)
        client.dataReceived(frame(b"Hey there?"))
        self.assertEqual(factory.recorder.failure_kinds, {"bad greeting": 1})
        self.assertFalse(transport.connected)


class SummaryTests(unittest.TestCase):
    def test_percentiles(self):
        recorder = clients.Recorder()
        recorder.latencies = [i / 1000 for i in range(100, 0, -1)]  # 1..100 ms
        result = load.summary(recorder, elapsed=2.0, cpu_seconds=0.5)
        self.assertEqual(result["handshakes"], 100)
        self.assertEqual(result["per_second"], 50.0)
        self.assertAlmostEqual(result["p50_ms"], 51.0)
        self.assertAlmostEqual(result["p99_ms"], 100.0)

    def test_no_handshake(self):
        result = load.summary(clients.Recorder(), elapsed=1.0, cpu_seconds=0.0)
        self.assertIsNone(result["p50_ms"])
        self.assertEqual(result["per_second"], 0.0)


class SpyTests(unittest.TestCase):
    LINES = [
        "run (twistd.py:35);doRead (tcp.py:10);jacobi (twisted_keyx/ffdh.py:130) 6\n",
        "run (twistd.py:35);doRead (tcp.py:10);jacobi (twisted_keyx/ffdh.py:131) 2\n",
        "run (twistd.py:35);Logger.emit (twisted/logger/_logger.py:1);untilConcludes (u.py:3) 2\n",
        "not a stack line\n",
    ]

    def test_shares_add_lines_of_a_function(self):
        total, own, inclusive = spy.shares(spy.read_stacks(self.LINES))
        self.assertEqual(total, 10)
        self.assertEqual(own["jacobi (twisted_keyx/ffdh.py)"], 8)
        self.assertEqual(inclusive["run (twistd.py)"], 10)

    def test_categories_from_the_innermost_frame(self):
        categories = spy.categorise(spy.read_stacks(self.LINES))
        self.assertEqual(categories, {"subgroup check (jacobi)": 8, "log line": 2})


class HostKeyDHStepsTests(unittest.TestCase):
    """The load client with a host key verifies message 7 against the
    library's server machine, and refuses a tampered one."""

    def run_steps(self, tamper=lambda message: message):
        from twisted_keyx import groups, hostkey
        from twisted_keyx.dh.handshake import DHServerHandshake

        from .helpers import read_data
        group = groups.named("x25519")
        server = DHServerHandshake(
            group, host_key=hostkey.parse_host_key(read_data("ed25519-host-key")))
        key_message = messages.CLIENT_KEY_PREFIX + group.public_key_pem(
            group.generate_private_key())
        steps = clients.HostKeyDHSteps(key_message, "x25519")
        message = steps.start()
        self.assertEqual(message, b"Host key?")
        while message is not None:
            replies = server.receive(message)
            replies = replies if isinstance(replies, tuple) else (replies,)
            message = None
            for reply in replies:
                if reply.startswith(b"Host key signature:"):
                    reply = tamper(reply)
                message = steps.receive(reply) or message
        return steps

    def test_verifies(self):
        steps = self.run_steps()
        self.assertTrue(steps.finished and steps.verified)

    def test_tampered_signature_refused(self):
        with self.assertRaises(clients.BadReply):
            self.run_steps(lambda reply: reply[:60] + (b"B" if reply[60:61] != b"B" else b"C")
                           + reply[61:])
