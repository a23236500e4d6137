"""Wire traces (twisted_keyx.trace) and the sequence charts drawn from them
(twisted_keyx.sequence): the committed charts in docs/sequences/ are what a
real loopback handshake traces today."""

import io
import os

from twisted.internet import defer, reactor
from twisted.trial import unittest

from twisted_keyx import groups, sequence, trace
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
                    "python -m twisted_keyx.sequence --write docs/sequences")
        return defer.Deferred.fromCoroutine(check())

    def test_every_chart(self):
        self.assertEqual(sorted(os.listdir(SEQUENCES)),
                         sorted(f"{name}.txt" for name in sequence.names()))

    def test_dh_ffdhe2048(self):
        return self.assertChartCommitted("dh-ffdhe2048")

    def test_dh_x25519(self):
        return self.assertChartCommitted("dh-x25519")

    def test_dh_x25519_unframed(self):
        return self.assertChartCommitted("dh-x25519-unframed")

    def test_eke(self):
        return self.assertChartCommitted("eke")

    def test_slots(self):
        self.assertIsNone(sequence.CHARTS["dh-hostkey"])
        self.assertIsNone(sequence.CHARTS["opaque"])


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

    def test_register(self):
        class Registered(DHClientHandshake):
            pass

        trace.register(Registered)(lambda payload: trace.Summary("registered"))
        self.assertEqual(str(trace.describe(Registered(), b"Hello")), "registered")


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
