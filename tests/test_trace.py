"""Wire traces (twisted_keyx.observe.trace) and the sequence charts drawn from them
(twisted_keyx.observe.sequence): the committed charts in docs/sequences/ are what a
real loopback handshake traces today."""

import io
import os

from twisted.internet import defer, reactor
from twisted.trial import unittest

from twisted_keyx.core import handshakes
from twisted_keyx.groups import registry as groups
from twisted_keyx.observe import sequence
from twisted_keyx.observe import trace
from twisted_keyx.dh.handshake import DHClientHandshake, DHServerHandshake

SEQUENCES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         "docs", "sequences")


class ChartTests(unittest.TestCase):
    timeout = 60

    def assertChartCommitted(self, name):
        async def check():
            text = await sequence.generate(reactor, name)
            with open(os.path.join(SEQUENCES, f"{name}.txt")) as f:
                self.assertEqual(
                    text, f.read(),
                    f"docs/sequences/{name}.txt is stale: "
                    "python -m twisted_keyx.observe.sequence --write docs/sequences")
        return defer.Deferred.fromCoroutine(check())

    def test_every_chart(self):
        """docs/sequences/ holds one file per chart, and every chart has a recipe."""
        self.assertEqual(sorted(os.listdir(SEQUENCES)),
                         sorted(f"{name}.txt" for name in sequence.names()))
        self.assertEqual(sequence.names(), list(sequence.charts()))
        self.assertNotIn(None, sequence.charts().values())

    def test_dh_hostkey_messages(self):
        """The host-key chart is the 7-message handshake of docs/hostkey.rst."""
        with open(os.path.join(SEQUENCES, "dh-hostkey.txt")) as f:
            text = f.read()
        self.assertIn("    1. 'Host key?'\n", text)
        self.assertIn("    7. Host key signature: + PEM KEYX HOST KEY SIGNATURE\n", text)
        self.assertNotIn("    8. ", text)

    def test_opaque_messages(self):
        with open(os.path.join(SEQUENCES, "opaque.txt")) as f:
            text = f.read()
        self.assertIn("    2. base64(KSF header, 12 bytes: argon2id m=19456 KiB t=2 p=1; "
                      "KE2, 320 bytes)\n", text)
        self.assertIn("    4. 'ok'\n", text)


def _chart_test(name):
    def test(self):
        return self.assertChartCommitted(name)
    test.__name__ = f"test_{name.replace('-', '_')}"
    test.__doc__ = f"docs/sequences/{name}.txt is what a traced handshake gives today."
    return test


# One test per chart in the registry: a chart added there is checked too.
for _name in sequence.names():
    setattr(ChartTests, _chart_test(_name).__name__, _chart_test(_name))


class SummaryTests(unittest.TestCase):
    def test_group(self):
        group = groups.named("ffdhe2048")
        machine = DHClientHandshake()
        summary = trace.describe(machine, group.parameters_message)
        self.assertEqual(summary.kind, "DH PARAMETERS: ffdhe2048 (2048 bits)")

    def test_key_first_bytes(self):
        group = groups.named("x25519")
        key = group.generate_private_key()
        pem = group.public_key_pem(key)
        summary = trace.describe(DHServerHandshake(group), b"Client public key:" + pem)
        self.assertEqual(summary.kind, "Client public key: + PEM X25519 public key")
        self.assertIn(f"{len(pem)} bytes, ", summary.detail)

    def test_machine_describe_method_wins(self):
        class Own(DHClientHandshake):
            def describe(self, payload):
                return trace.Summary("mine")

        self.assertEqual(str(trace.describe(Own(), b"Hello")), "mine")

    def test_registry_entry(self):
        """A machine's summary comes from its handshake's registry entry, by
        class name, for its subclasses too."""
        class Registered(DHClientHandshake):
            pass

        class Sub(Registered):
            pass

        handshakes.register(handshakes.Handshake(
            name="registered", title="a test entry",
            summaries={"Registered": lambda payload: trace.Summary("registered")}))
        self.addCleanup(handshakes.unregister, "registered")
        self.assertEqual(str(trace.describe(Registered(), b"Hello")), "registered")
        self.assertEqual(str(trace.describe(Sub(), b"Hello")), "registered")


class HostileSummaryTests(unittest.TestCase):
    """A peer's bytes in a trace line cannot drive the terminal (--trace
    writes to stderr) nor forge log lines (twistd keyx --trace): every
    character that is not printable is escaped, whichever summary let it
    through (a PEM label was shown as sent, and EKE's scrypt words)."""

    HOSTILE = [
        (DHClientHandshake, b"Server public key:-----BEGIN \x1b]0;pwned\x07\x1b[2J PUBLIC KEY"
                            b"-----\nAAAA\n-----END PUBLIC KEY-----\n"),
        (DHClientHandshake, b"-----BEGIN X\n2026-12-01T00:00:00+0000 [forged] root logged in"
                            b"\n PARAMETERS-----\nAAAA\n-----END X-----\n"),
        (DHServerHandshake, "Client public key:-----BEGIN \x9b2J\u202e-----\n".encode("utf-8")),
        ("EKEClientHandshake", b"yes AAAA scrypt \x1b[2J\r\nforged 8 1"),
    ]

    def machine(self, kind):
        if kind == "EKEClientHandshake":
            from twisted_keyx.eke.handshake import EKEClientHandshake
            return EKEClientHandshake("alice", "pw")
        return kind() if kind is DHClientHandshake else kind(groups.named("x25519"))

    def test_no_control_characters(self):
        for kind, payload in self.HOSTILE:
            line = trace.format_event(self.machine(kind), "in", "A", "B", payload)
            self.assertTrue(line.isprintable(), (line, payload))

    def test_printable_text_unchanged(self):
        machine = DHClientHandshake()
        group = groups.named("ffdhe2048")
        self.assertTrue(trace.format_event(machine, "in", "A", "B", group.parameters_message)
                        .endswith("DH PARAMETERS: ffdhe2048 (2048 bits) (424 bytes)"))


class TracerTests(unittest.TestCase):
    def traced_handshake(self, *tracers):
        """A DH handshake between two machines, each message reported as the
        adapter reports it."""
        group = groups.named("x25519")
        client, server = DHClientHandshake(), DHServerHandshake(group)

        class FakeSession:
            peer = "127.0.0.1:1"

        tracer = trace.Tracers(*tracers)
        before = client.state
        message = client.start()
        tracer.message(FakeSession, "out", client, before, client.state, message)
        while message is not None:
            before = server.state
            reply = server.receive(message)
            tracer.message(FakeSession, "in", server, before, server.state, message)
            if reply is None:
                break
            tracer.message(FakeSession, "out", server, before, server.state, reply)
            before = client.state
            message = client.receive(reply)
            tracer.message(FakeSession, "in", client, before, client.state, reply)
            if message is not None:
                tracer.message(FakeSession, "out", client, before, client.state, message)
        return client, server

    def test_text(self):
        out = io.StringIO()
        self.traced_handshake(trace.TextTracer(out))
        lines = out.getvalue().splitlines()
        self.assertEqual(len(lines), 12)
        self.assertEqual(lines[0], "trace: -> DHClientHandshake START -> AWAIT_GREETING "
                                   "[5 bytes] 'Hello'")
        self.assertNotIn("session key", out.getvalue())

    def test_show_secrets(self):
        out = io.StringIO()
        client, server = self.traced_handshake(trace.TextTracer(out, show_secrets=True))
        self.assertIn(f"session key: {client.result.session_key.hex()}", out.getvalue())

    def test_file_round_trip(self):
        path = self.mktemp()
        recorder = trace.FileTracer(path)
        self.traced_handshake(recorder)
        recorder.close()
        self.assertEqual(trace.read_trace(path), recorder.events)
        self.assertEqual(recorder.events[0].payload, b"Hello")

    def test_not_a_trace(self):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write('{"format": "something else"}\n')
        self.assertRaises(trace.TraceFormatError, trace.read_trace, path)


class ClientTraceTests(unittest.TestCase):
    """keyx-client dh --trace --trace-file against a real server on 127.0.0.1."""

    timeout = 30

    async def test_dh(self):
        import sys

        from twisted.internet import endpoints

        from twisted_keyx.cli import client
        from twisted_keyx.dh.protocol import DHServerFactory

        from twisted_keyx.trust import hostkey

        from .helpers import read_data

        host_key = hostkey.parse_host_key(read_data("ed25519-host-key"))
        port = await endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            DHServerFactory(groups.named("x25519"), host_key=host_key))
        self.addCleanup(port.stopListening)
        path = self.mktemp()
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        args = client.build_parser().parse_args(
            ["dh", "--host", "127.0.0.1", "--port", str(port.getHost().port), "--trace",
             "--show-secrets", "--trace-file", path, "--accept-new",
             "--known-hosts", self.mktemp()])
        out = io.StringIO()
        status = await client.run(reactor, args, out, err)
        self.assertEqual(status, client.EXIT_OK, err.getvalue())
        lines = [line for line in err.getvalue().splitlines() if line.startswith("trace: ")]
        # Messages 1-6, then 7: the host key's signature, which ends it.
        self.assertEqual(len(lines), 7)
        self.assertIn("'Group: x25519'", lines[3])
        session_key = [line for line in out.getvalue().splitlines()
                       if line.startswith("Session key: ")][0].split(": ")[1]
        self.assertIn(f"session key: {session_key}", lines[6])
        events = trace.read_trace(path)
        self.assertEqual([e.direction for e in events], ["out", "in"] * 3 + ["in"])
        self.assertEqual(events[0].payload, b"Host key?")


class DaemonTraceTests(unittest.TestCase):
    def test_option(self):
        from twisted_keyx.service import tap
        from twisted_keyx.dh.protocol import DHServerFactory

        options = tap.Options()
        options.parseOptions(["--trace"])
        self.assertTrue(options["trace"])
        factory = tap._traced(options.config, DHServerFactory(groups.named("x25519")))
        first, second = factory.buildProtocol(None), factory.buildProtocol(None)
        self.assertIsInstance(first.tracer, trace.TextTracer)
        self.assertIsNone(first.tracer.out)  # into the log
        self.assertNotEqual(first.tracer.connection, second.tracer.connection)

    def test_log_line(self):
        from twisted.logger import globalLogPublisher

        logged = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)

        class Session:
            peer = "127.0.0.1:5"

        tracer = trace.TextTracer(connection=7)
        tracer.message(Session, "in", DHServerHandshake(groups.named("x25519")),
                       "AWAIT_HELLO", "AWAIT_PARAMS_REQUEST", b"Hello")
        from twisted.logger import formatEvent
        self.assertEqual(
            [formatEvent(e) for e in logged if e.get("log_namespace", "").endswith("TextTracer")],
            ["trace #7 127.0.0.1:5: <- DHServerHandshake AWAIT_HELLO -> AWAIT_PARAMS_REQUEST "
             "[5 bytes] 'Hello'"])


class AdapterHookTests(unittest.TestCase):
    """The session adapter reports a refused message and the refusal."""

    def test_refusal(self):
        import struct

        from twisted.internet.testing import StringTransport

        from twisted_keyx.dh.protocol import DHServerFactory

        protocol = DHServerFactory(groups.named("x25519")).buildProtocol(None)
        recorder = trace.Recorder()
        protocol.tracer = recorder
        protocol.makeConnection(StringTransport())
        protocol.dataReceived(struct.pack(">I", 5) + b"Hello" + struct.pack(">I", 3) + b"Hi!")
        self.assertEqual(
            [(e.direction, e.before, e.after, e.payload) for e in recorder.events],
            [("in", "AWAIT_HELLO", "AWAIT_PARAMS_REQUEST", b"Hello"),
             ("out", "AWAIT_HELLO", "AWAIT_PARAMS_REQUEST", b"Hey there!"),
             ("in", "AWAIT_PARAMS_REQUEST", "FAILED", b"Hi!"),
             ("out", "FAILED", "FAILED", b"I do not understand you, hanging up")])
