"""keyx-lab: the man in the middle of DH and the offline attack on EKE,
against real handshakes on 127.0.0.1 (cheap scrypt for the recorded users)."""

import contextlib
import io
import json
import os
import sys

from twisted.internet import defer, endpoints, reactor
from twisted.trial import unittest

import twisted_keyx
from twisted_keyx.groups import registry as groups
from twisted_keyx.trust import hostkey
from twisted_keyx.trust import knownhosts
from twisted_keyx.cli import lab
from twisted_keyx.observe import trace
from twisted_keyx.dh.handshake import DHClientHandshake, HostKeyRequestRefused
from twisted_keyx.dh.protocol import DHClientFactory, DHClientProtocol, DHServerFactory
from twisted_keyx.dh.raw import RawDHServerFactory
from twisted_keyx.core.machine import HandshakeFailed
from twisted_keyx.eke.protocol import EKEClientFactory, EKEServerFactory

from tests.helpers import PASSWORD, TEST_KDF, TEST_LIMITS, CollectingProcess, make_user

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(twisted_keyx.__file__)))


class Users:
    def __init__(self, *records):
        self.records = {r.name: r for r in records}

    def lookup(self, name, scheme="eke"):
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
        self.assertIn("password found after 3 guesses", out)
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
            f.write(json.dumps({"direction": "out", "machine": "OPAQUEClientHandshake",
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

    def __init__(self, **options):
        super().__init__(ask_host_key=True, **options)


def new_host_key():
    return hostkey.HostKey.from_private_key(hostkey.generate_private_key())


async def _sleep(seconds):
    await defer.Deferred(lambda d: None).addTimeout(seconds, reactor).addErrback(
        lambda f: None)


class RelayingMachineTests(unittest.TestCase):
    """The lab's side of the client's handshake, without I/O."""

    def setUp(self):
        self.group = groups.named("x25519")
        self.machine = lab._relaying_handshake_class()(self.group)
        self.client = DHClientHandshake(ask_host_key=True)

    def test_relayed_in_order(self):
        self.assertIsNone(self.machine.receive(self.client.start()))  # waits for the daemon
        self.assertIs(self.machine.state, lab.RelayState.AWAIT_DAEMON_GREETING)
        hey = self.machine.daemon_greeted()
        self.assertEqual(hey, b"Hey there!")
        parameters = self.machine.receive(self.client.receive(hey))
        message6 = self.machine.receive(self.client.receive(parameters))
        self.assertTrue(message6.startswith(b"Server public key:"))  # 6 alone: no 7 of its own
        self.assertIs(self.machine.state, lab.RelayState.AWAIT_DAEMON_SIGNATURE)
        self.assertIsNone(self.client.receive(message6))
        self.assertFalse(self.machine.finished)
        # Whatever message 7 the daemon sent goes on unchanged.
        self.assertEqual(self.machine.relay_signature(b"Host key signature:..."),
                         b"Host key signature:...")
        self.assertTrue(self.machine.finished)
        # Both ends of the client's handshake hashed the same messages.
        self.assertEqual(self.machine.result.transcript_hash,
                         self.client._transcript.digest())

    def test_nothing_before_the_daemon_answers(self):
        self.machine.receive(b"Host key?")
        with self.assertRaises(HandshakeFailed):
            self.machine.receive(b"Params?")

    def test_hello_is_not_held(self):
        self.assertEqual(self.machine.receive(b"Hello"), b"Hey there!")
        self.assertFalse(self.machine.relaying)


class MitmHostKeyTests(unittest.TestCase):
    """A client that asks ``Host key?`` through the lab, against a real daemon
    factory with a host key: the lab relays the question and the daemon's
    message 7, which does not verify for the client."""

    timeout = 60

    async def setUpLab(self, daemon_host_key, lab_host_key=None, raw=False):
        self.daemon_results = []
        daemon = (RawDHServerFactory if raw else DHServerFactory)(
            groups.named("x25519"), host_key=daemon_host_key)
        daemon.handshakeFinished = lambda peer, result: self.daemon_results.append(result)
        daemon_port = await listen(daemon)
        self.addCleanup(daemon_port.stopListening)
        self.out = io.StringIO()
        self.intercepted = defer.Deferred()  # the first client's handshake with the lab

        def done(peer):
            if not self.intercepted.called:
                self.intercepted.callback(peer)

        middle = lab.mitm_factory(reactor, ("127.0.0.1", daemon_port.getHost().port),
                                  groups.named("x25519"), self.out,
                                  raw=raw, done=done, host_key=lab_host_key)
        self.middle_port = await listen(middle)
        self.addCleanup(self.middle_port.stopListening)
        self.known_hosts = os.path.abspath(self.mktemp())

    def pin(self, key):
        knownhosts.KnownHosts(self.known_hosts).record(
            "127.0.0.1", self.middle_port.getHost().port, key.public_key)

    async def keyx_client(self, *argv):
        process = CollectingProcess()
        args = [sys.executable, "-m", "twisted_keyx.cli.client", "dh", "--host", "127.0.0.1",
                "--port", str(self.middle_port.getHost().port),
                "--known-hosts", self.known_hosts, *argv]
        reactor.spawnProcess(process, sys.executable, args,
                             env=dict(os.environ, PYTHONPATH=ROOT, PYTHONWARNINGS="error"))
        status = await process.ended
        return status, process.out.decode(), process.err.decode()

    async def test_pinned_client_refuses_unframed(self):
        daemon_key = new_host_key()
        await self.setUpLab(daemon_key, raw=True)
        self.pin(daemon_key)
        status, out, err = await self.keyx_client("--raw")
        self.assertEqual((status, out), (1, ""), err)
        self.assertIn("host key signature does not verify", err)
        await self.intercepted
        self.assertIn("it verifies over H_daemon: yes; over H_client: NO.", self.out.getvalue())

    async def test_pinned_client_refuses(self):
        daemon_key = new_host_key()
        await self.setUpLab(daemon_key)
        self.pin(daemon_key)
        status, out, err = await self.keyx_client()
        self.assertEqual((status, out), (1, ""), err)
        port = self.middle_port.getHost().port
        self.assertEqual(
            err, f"keyx-client: host key verification failed for [127.0.0.1]:{port}: the "
            "server's host key signature does not verify: the handshake was tampered with, "
            "or the server does not hold the key it names (its key is known in "
            f"{self.known_hosts}:1)\n")
        await self.intercepted
        # The daemon signed its own handshake with the lab, with its key.
        [daemon_result] = self.daemon_results
        self.assertEqual(daemon_result.host_key_fingerprint, daemon_key.fingerprint)
        text = self.out.getvalue()
        self.assertIn("the client asked 'Host key?'", text)
        self.assertIn("asks the daemon the same question", text)
        self.assertIn("trace: -> LabToDaemonHandshake START -> AWAIT_GREETING [9 bytes] 'Host key?'",
                      text)
        self.assertIn(f"the daemon proved its host key {daemon_key.fingerprint}", text)
        self.assertIn("passed the daemon's message 7 on to the client, unchanged", text)
        self.assertIn(daemon_result.transcript_hash.hex()[:32], text)
        self.assertIn("The signature binds the daemon's key to the\n"
                      "    messages the daemon saw, which are not the ones the client saw", text)
        self.assertIn("it verifies over H_daemon: yes; over H_client: NO.", text)
        self.assertNotIn("Traceback", text + err)

    async def test_daemon_without_host_key(self):
        """The daemon refuses Host key?: so does the lab, with the daemon's
        reply, and the client falls back to an unauthenticated Hello."""
        await self.setUpLab(None)
        factory = DHClientFactory()
        factory.protocol = type("P", (DHClientProtocol,), {
            "newHandshake": classmethod(lambda cls, **o: AsksHostKey())})
        protocol = await connect(self.middle_port, factory)
        with self.assertRaises(HostKeyRequestRefused):
            await protocol.finished
        text = self.out.getvalue()
        self.assertIn("the handshake with the server failed: the server refused Host key?", text)
        self.assertIn("refused: relayed: the daemon did not complete the handshake", text)
        status, out, err = await self.keyx_client()
        self.assertEqual(status, 0, err)
        self.assertIn("offered no host key signature: this handshake is unauthenticated", err)
        self.assertIn("Host key fingerprint: none (unauthenticated)", out)
        await self.intercepted
        self.assertIn("neither side can tell", self.out.getvalue())

    async def test_first_contact_accepts_the_labs_key(self):
        """With a host key of its own, the lab fools a client that has never
        met the host (--accept-new) and not one that pinned the daemon's key."""
        daemon_key, lab_key = new_host_key(), new_host_key()
        await self.setUpLab(daemon_key, lab_host_key=lab_key)
        status, out, err = await self.keyx_client("--accept-new")
        self.assertEqual(status, 0, err)
        self.assertIn(f"Host key fingerprint: {lab_key.fingerprint}", out)
        self.assertIn("Permanently added", err)
        await self.intercepted
        text = self.out.getvalue()
        self.assertIn(f"signs message 7 with its OWN host key {lab_key.fingerprint}", text)
        self.assertIn("That is trust on first\n  use", text)
        # The same lab against a client that pinned the daemon's key.
        os.remove(self.known_hosts)
        self.pin(daemon_key)
        status, out, err = await self.keyx_client()
        self.assertEqual((status, out), (1, ""))
        self.assertIn("REMOTE HOST IDENTIFICATION HAS CHANGED", err)
        self.assertNotIn("Traceback", err)


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

    def test_host_key_file_refused_in_one_line(self):
        err = io.StringIO()
        status = lab.main(["mitm", "--listen", "tcp:0:interface=127.0.0.1", "--target",
                           "127.0.0.1:7777", "--host-key", self.mktemp()], io.StringIO(), err)
        self.assertEqual(status, lab.EXIT_USAGE)
        self.assertTrue(err.getvalue().startswith("keyx-lab: "), err.getvalue())
        self.assertEqual(err.getvalue().count("\n"), 1)

    def test_help_says_so(self):
        self.assertIn("loopback only", lab.build_parser().format_help())
