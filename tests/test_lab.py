"""keyx-lab: the man in the middle of DH and the offline attack on EKE,
against real handshakes on 127.0.0.1 (cheap scrypt for the recorded users)."""

import contextlib
import io
import json

from twisted.internet import defer, endpoints, reactor
from twisted.trial import unittest

from twisted_keyx import groups, lab, trace
from twisted_keyx.dh.handshake import DHClientHandshake
from twisted_keyx.dh.protocol import DHClientFactory, DHClientProtocol, DHServerFactory
from twisted_keyx.machine import HandshakeFailed
from twisted_keyx.eke.protocol import EKEClientFactory, EKEServerFactory

from tests.helpers import PASSWORD, TEST_KDF, TEST_LIMITS, make_user


class Users:
    def __init__(self, *records):
        self.records = {r.name: r for r in records}

    def lookup(self, name):
        return self.records.get(name)


async def listen(factory):
    return await endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)


async def connect(port, factory):
    return await endpoints.TCP4ClientEndpoint(
        reactor, "127.0.0.1", port.getHost().port).connect(factory)


class CrackTests(unittest.TestCase):
    timeout = 30

    async def record(self, path):
        """A real EKE login of alice, recorded by the client into ``path``."""
        port = await listen(EKEServerFactory(Users(make_user())))
        self.addCleanup(port.stopListening)
        recorder = trace.FileTracer(path)
        client = trace.traced(EKEClientFactory("alice", PASSWORD, kdf_limits=TEST_LIMITS),
                              lambda protocol: recorder)
        protocol = await connect(port, client)
        await protocol.authenticated
        recorder.close()
        protocol.finished.addErrback(lambda failure: None)  # we hang up without quit
        protocol.transport.loseConnection()
        await protocol.disconnected

    def crack(self, words):
        path, wordlist = self.mktemp(), self.mktemp()
        with open(wordlist, "w") as f:
            f.write("".join(w + "\n" for w in words))

        async def go():
            await self.record(path)
            out, err = io.StringIO(), io.StringIO()
            status = lab.main(["crack", "--trace-file", path, "--wordlist", wordlist], out, err)
            return status, out.getvalue(), err.getvalue()
        return defer.Deferred.fromCoroutine(go())

    async def test_found(self):
        status, out, err = await self.crack(["123456", "password", PASSWORD, "later"])
        self.assertEqual(status, lab.EXIT_OK)
        self.assertIn(f"password found after 3 guesses", out)
        self.assertTrue(out.endswith(f": {PASSWORD}\n"), out)
        self.assertIn(f"{TEST_KDF}", out)
        self.assertIn("3/4", err)
        self.assertIn("guesses/s", err)

    async def test_not_found(self):
        status, out, err = await self.crack(["123456", "password"])
        self.assertEqual(status, lab.EXIT_NOT_FOUND)
        self.assertIn("not found in 2 guesses", out)

    def test_opaque_recording(self):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(json.dumps({"format": trace.FILE_FORMAT, "peer": "127.0.0.1:1"}) + "\n")
            f.write(json.dumps({"direction": "out", "machine": "OpaqueClientLogin",
                                "before": "START", "after": "AWAIT_KE2",
                                "payload": "AAAA"}) + "\n")
        wordlist = self.mktemp()
        with open(wordlist, "w") as f:
            f.write("guess\n")
        out = io.StringIO()
        status = lab.main(["crack", "--trace-file", path, "--wordlist", wordlist],
                          out, io.StringIO())
        self.assertEqual(status, lab.EXIT_NOT_FOUND)
        self.assertIn("nothing here to test a guess against", out.getvalue())

    def test_not_a_trace(self):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("hello\n")
        err = io.StringIO()
        status = lab.main(["crack", "--trace-file", path, "--wordlist", path], io.StringIO(), err)
        self.assertEqual(status, lab.EXIT_USAGE)
        self.assertIn("not a twisted-keyx trace v1 file", err.getvalue())


class MitmTests(unittest.TestCase):
    timeout = 30

    async def test_two_handshakes(self):
        group = groups.named("x25519")
        daemon = DHServerFactory(group)
        finished = []
        daemon.handshakeFinished = lambda peer, result: finished.append(result)
        daemon_port = await listen(daemon)
        self.addCleanup(daemon_port.stopListening)
        out = io.StringIO()
        intercepted = defer.Deferred()
        middle = lab.mitm_factory(reactor, ("127.0.0.1", daemon_port.getHost().port), group,
                                  out, done=intercepted.callback)
        middle_port = await listen(middle)
        self.addCleanup(middle_port.stopListening)
        protocol = await connect(middle_port, DHClientFactory())
        client_result = await protocol.finished
        await intercepted
        while not finished:
            await defer.Deferred(lambda d: None).addTimeout(0.05, reactor).addErrback(
                lambda f: None)
        server_result = finished[0]
        self.assertNotEqual(client_result.session_key, server_result.session_key)
        text = out.getvalue()
        self.assertIn(f"with the CLIENT: shared secret {client_result.shared_secret[:16].hex()}",
                      text)
        self.assertIn(client_result.session_key.hex(), text)
        while server_result.session_key.hex() not in out.getvalue():
            await defer.Deferred(lambda d: None).addTimeout(0.05, reactor).addErrback(
                lambda f: None)
        self.assertIn("with the SERVER", out.getvalue())


class AsksHostKey(DHClientHandshake):
    """A client whose message 1 is docs/hostkey.rst's ``Host key?``."""

    def _on_start(self, payload):
        super()._on_start(payload)
        return b"Host key?"


class MitmHostKeyTests(unittest.TestCase):
    timeout = 30

    async def test_host_key_request_refused(self):
        group = groups.named("x25519")
        daemon_port = await listen(DHServerFactory(group))
        self.addCleanup(daemon_port.stopListening)
        out = io.StringIO()
        middle = lab.mitm_factory(reactor, ("127.0.0.1", daemon_port.getHost().port), group, out)
        middle_port = await listen(middle)
        self.addCleanup(middle_port.stopListening)
        factory = DHClientFactory()
        factory.protocol = type("P", (DHClientProtocol,), {
            "newHandshake": classmethod(lambda cls, **o: AsksHostKey())})
        protocol = await connect(middle_port, factory)
        with self.assertRaises(HandshakeFailed):
            await protocol.finished
        text = out.getvalue()
        self.assertIn("'Host key?'", text)
        self.assertIn("refused", text)
        self.assertIn("stops here", text)
        # Let the lab's own handshake with the daemon end before the ports close.
        while "with the SERVER" not in out.getvalue():
            await defer.Deferred(lambda d: None).addTimeout(0.05, reactor).addErrback(
                lambda f: None)


class LoopbackOnlyTests(unittest.TestCase):
    def test_refused(self):
        parser = lab.build_parser()
        for argv in (["mitm", "--listen", "tcp:7000", "--target", "127.0.0.1:7777"],
                     ["mitm", "--listen", "tcp:7000:interface=0.0.0.0", "--target", "127.0.0.1:1"],
                     ["mitm", "--listen", "ssl:7000", "--target", "127.0.0.1:1"],
                     ["mitm", "--listen", "unix:/tmp/x", "--target", "192.0.2.1:7777"],
                     ["mitm", "--listen", "unix:/tmp/x", "--target", "example.com:7777"]):
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                self.assertRaises(SystemExit, parser.parse_args, argv)
            self.assertIn("loopback only", err.getvalue())

    def test_accepted(self):
        args = lab.build_parser().parse_args(
            ["mitm", "--listen", "tcp:7000:interface=127.0.0.1", "--target", "[::1]:7777"])
        self.assertEqual(args.target, ("::1", 7777))

    def test_help_says_so(self):
        self.assertIn("loopback only", lab.build_parser().format_help())
