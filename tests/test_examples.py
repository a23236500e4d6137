"""examples/: each one run as its own process against the daemon's
factories listening on 127.0.0.1 (and on a unix socket, and over TLS with
tests/data/tls-server.pem), its output checked against the server's side of
the same handshake: DH with and without a host key (and a pinned key that
is not the server's, refused), and an OPAQUE login."""

import os
import re
import socket
import sys

from twisted.internet import defer, endpoints, reactor, utils
from twisted.internet.error import ConnectionRefusedError
from twisted.trial import unittest

from twisted_keyx.groups import registry as groups
from twisted_keyx.trust import hostkey
from twisted_keyx.trust import knownhosts
from twisted_keyx.dh.protocol import DHServerFactory
from twisted_keyx.dh.raw import RawDHClientFactory, RawDHServerFactory
from twisted_keyx.core.transcript import session_key_fingerprint

from tests.helpers import CollectingProcess, data_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
sys.path.insert(0, EXAMPLES)
import twisted_dh  # noqa: E402  (examples/twisted_dh.py, for its key derivation)


def recording(factory):
    factory.results = []
    factory.handshakeFinished = lambda peer, result: factory.results.append(result)
    return factory


def field(out, name):
    match = re.search(rf"^{re.escape(name)}: (.*)$", out, re.M)
    if match is None:
        raise AssertionError(f"no {name!r} in {out!r}")
    return match.group(1)


class ExampleTests(unittest.TestCase):
    timeout = 60

    async def listen(self, factory, description="tcp:0:interface=127.0.0.1"):
        port = await endpoints.serverFromString(reactor, description).listen(factory)
        self.addCleanup(port.stopListening)
        return port

    async def example(self, *args, status=0, stdin=None):
        """Run examples/ARGS[0] with ARGS[1:]; return its output (stdout, or
        stderr when ``status`` is not 0, stdout then being empty)."""
        env = dict(os.environ, PYTHONPATH=ROOT)
        argv = [sys.executable, os.path.join(EXAMPLES, args[0])] + list(args[1:])
        if stdin is None:
            out, err, code = await utils.getProcessOutputAndValue(
                sys.executable, argv[1:], env=env, path=EXAMPLES)
        else:
            process = CollectingProcess(stdin)
            reactor.spawnProcess(process, sys.executable, argv, env=env, path=EXAMPLES)
            code = await process.ended
            out, err = process.out, process.err
        if status == 0:
            self.assertEqual((code, err), (0, b""), out)
            return out.decode()
        self.assertEqual((code, out), (status, b""), err)
        return err.decode()

    async def check_socket_client(self, group_name):
        daemon = recording(RawDHServerFactory(groups.named(group_name)))
        port = await self.listen(daemon)
        out = await self.example("socket_client.py", "127.0.0.1", str(port.getHost().port))
        [result] = daemon.results
        self.assertEqual(field(out, "Session key"), result.session_key.hex())
        self.assertEqual(field(out, "Shared Secret"), result.shared_secret.hex())

    def test_socket_client_x25519(self):
        return defer.Deferred.fromCoroutine(self.check_socket_client("x25519"))

    def test_socket_client_ffdhe2048(self):
        return defer.Deferred.fromCoroutine(self.check_socket_client("ffdhe2048"))

    async def test_socket_server(self):
        with socket.socket() as probe:  # a free port for the child to take
            probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]
        process = utils.getProcessOutputAndValue(
            sys.executable, [os.path.join(EXAMPLES, "socket_server.py"), str(free), "--once"],
            env=dict(os.environ, PYTHONPATH=ROOT), path=EXAMPLES)
        client = None
        for _ in range(200):  # until the child listens (at most 10 s)
            try:
                client = await endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", free).connect(
                    RawDHClientFactory())
                break
            except ConnectionRefusedError:
                await _sleep(0.05)
        self.assertIsNotNone(client, "socket_server.py did not listen")
        result = await client.finished
        out, err, code = await process
        self.assertEqual((code, err), (0, b""))
        self.assertEqual(field(out.decode(), "Session key"), result.session_key.hex())

    async def test_twisted_dh(self):
        daemon = recording(DHServerFactory(groups.named("x25519")))
        port = await self.listen(daemon)
        out = await self.example("twisted_dh.py", f"tcp:host=127.0.0.1:port={port.getHost().port}",
                                 "one message")
        [result] = daemon.results
        self.assertEqual(field(out, "Session key fingerprint"), session_key_fingerprint(result.session_key))
        # The server's side of the handshake opens what the example sealed.
        key = twisted_dh.message_key(result.session_key, result.transcript_hash)
        sealed = bytes.fromhex(field(out, "Sealed message"))
        self.assertEqual(twisted_dh.open_sealed(key, sealed), "one message")

    async def hostkey_daemon(self, pinned):
        """A daemon with a host key; a known_hosts file pinning ``pinned``
        (the daemon's key, or another) for it.  Returns (factory, port, file)."""
        key = hostkey.HostKey.from_private_key(hostkey.generate_private_key())
        daemon = recording(DHServerFactory(groups.named("x25519"), host_key=key))
        port = await self.listen(daemon)
        known_hosts = os.path.abspath(self.mktemp())
        knownhosts.KnownHosts(known_hosts).record(
            "127.0.0.1", port.getHost().port, (pinned or key).public_key)
        return daemon, port.getHost().port, known_hosts

    async def test_twisted_dh_hostkey(self):
        daemon, port, known_hosts = await self.hostkey_daemon(None)
        out = await self.example("twisted_dh_hostkey.py", "127.0.0.1", str(port), known_hosts,
                                 "one message")
        [result] = daemon.results
        self.assertEqual(field(out, "Host key fingerprint"), daemon.host_key.fingerprint)
        self.assertEqual(field(out, "Session key fingerprint"), session_key_fingerprint(result.session_key))
        key = twisted_dh.message_key(result.session_key, result.transcript_hash)
        sealed = bytes.fromhex(field(out, "Sealed message"))
        self.assertEqual(twisted_dh.open_sealed(key, sealed), "one message")

    async def test_twisted_dh_hostkey_changed_key_refused(self):
        other = hostkey.HostKey.from_private_key(hostkey.generate_private_key())
        daemon, port, known_hosts = await self.hostkey_daemon(other)
        with open(known_hosts, "rb") as f:
            pinned = f.read()
        err = await self.example("twisted_dh_hostkey.py", "127.0.0.1", str(port), known_hosts,
                                 "one message", status=1)
        self.assertEqual(len(daemon.results), 1)  # the handshake ran; the pin refused it
        self.assertEqual(err.count("\n"), 1, err)
        self.assertNotIn("Traceback", err)
        self.assertTrue(err.startswith(
            f"twisted_dh_hostkey.py: REFUSED: [127.0.0.1]:{port} signed with host key "
            f"{daemon.host_key.fingerprint}, but {known_hosts}:1 pins another key"), err)
        with open(known_hosts, "rb") as f:
            self.assertEqual(f.read(), pinned)  # and the file is left alone

    async def test_twisted_dh_hostkey_new_host(self):
        """Not pinned: refused, unless --accept-new, which records the key."""
        key = hostkey.HostKey.from_private_key(hostkey.generate_private_key())
        daemon = recording(DHServerFactory(groups.named("x25519"), host_key=key))
        port = (await self.listen(daemon)).getHost().port
        known_hosts = os.path.abspath(self.mktemp())
        err = await self.example("twisted_dh_hostkey.py", "127.0.0.1", str(port), known_hosts,
                                 "m", status=1)
        self.assertIn(f"is not in {known_hosts}", err)
        out = await self.example("twisted_dh_hostkey.py", "127.0.0.1", str(port), known_hosts,
                                 "m", "--accept-new")
        self.assertIn(f"Recorded [127.0.0.1]:{port} with host key {key.fingerprint}", out)
        check = knownhosts.KnownHosts(known_hosts).check("127.0.0.1", port, key.public_key)
        self.assertIs(check.status, knownhosts.KNOWN)

    async def test_opaque_login(self):
        from twisted_keyx.opaque.ksf import Argon2idParameters, MiB
        from twisted_keyx.opaque.protocol import OPAQUEServerFactory
        from twisted_keyx.opaque.records import ServerSetup
        from twisted_keyx.opaque.scheme import new_user
        from twisted_keyx.trust.knownservers import server_key_fingerprint

        from tests.test_opaque_handshake import Users

        # The cheapest Argon2id cost the example's client (default limits) accepts.
        setup = ServerSetup.generate(Argon2idParameters(memory_cost=19 * MiB, iterations=2,
                                                        lanes=1))
        daemon = OPAQUEServerFactory(Users(alice=new_user("alice", "open sesame", setup)), setup)
        results, said = [], []
        daemon.userAuthenticated = lambda peer, result: results.append(result)
        daemon.userSaid = lambda peer, user, text: said.append((user, text))
        port = await self.listen(daemon)
        out = await self.example("opaque_login.py", "127.0.0.1", str(port.getHost().port),
                                 "alice", "hello from an example", stdin=b"open sesame\n")
        [result] = results
        self.assertEqual(field(out, "Session key fingerprint"), session_key_fingerprint(result.session_key))
        self.assertEqual(field(out, "Server key fingerprint"),
                         server_key_fingerprint(setup.server_public_key))
        self.assertEqual(said, [("alice", "hello from an example")])
        self.assertEqual(field(out, "Server replied"), "receive hello from an example")
        self.assertNotIn("open sesame", out)
        err = await self.example("opaque_login.py", "127.0.0.1", str(port.getHost().port),
                                 "alice", "x", stdin=b"guess\n", status=1)
        self.assertEqual(err, "opaque_login.py: wrong password or unknown user\n")

    async def test_unix_endpoint(self):
        path = os.path.abspath(self.mktemp())
        daemon = recording(DHServerFactory(groups.named("x25519")))
        await self.listen(daemon, f"unix:{path}")
        out = await self.example("endpoints_client.py", f"unix:path={path}")
        [result] = daemon.results
        self.assertEqual(field(out, "Session key"), result.session_key.hex())

    async def test_ssl_endpoint(self):
        daemon = recording(DHServerFactory(groups.named("x25519")))
        pem = data_path("tls-server.pem")
        port = await self.listen(daemon, f"ssl:0:interface=127.0.0.1:privateKey={pem}")
        out = await self.example("endpoints_client.py",
                                 f"ssl:host=127.0.0.1:port={port.getHost().port}")
        [result] = daemon.results
        self.assertEqual(field(out, "Session key"), result.session_key.hex())
        # Twisted's ssl: server endpoint hands pyOpenSSL its own key and
        # certificate objects, which pyOpenSSL now deprecates: not ours.
        for warning in self.flushWarnings():
            self.assertIn("pyOpenSSL", str(warning["message"]))


def _sleep(seconds):
    d = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d

