"""examples/: each one run as its own process against the daemon's
factories listening on 127.0.0.1 (and on a unix socket, and over TLS with
tests/data/tls-server.pem), its output checked against the server's side of
the same handshake."""

import os
import re
import socket
import sys

from twisted.internet import defer, endpoints, reactor, utils
from twisted.internet.error import ConnectionRefusedError
from twisted.trial import unittest

from twisted_keyx import groups
from twisted_keyx.dh.protocol import DHServerFactory
from twisted_keyx.dh.raw import RawDHClientFactory, RawDHServerFactory
from twisted_keyx.session import fingerprint

from tests.helpers import data_path

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

    async def example(self, *args):
        env = dict(os.environ, PYTHONPATH=ROOT)
        out, err, code = await utils.getProcessOutputAndValue(
            sys.executable, [os.path.join(EXAMPLES, args[0])] + list(args[1:]),
            env=env, path=EXAMPLES)
        self.assertEqual((code, err), (0, b""), out)
        return out.decode()

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
        self.assertEqual(field(out, "Session key fingerprint"), fingerprint(result.session_key))
        # The server's side of the handshake opens what the example sealed.
        key = twisted_dh.message_key(result.session_key, result.transcript_hash)
        sealed = bytes.fromhex(field(out, "Sealed message"))
        self.assertEqual(twisted_dh.open_sealed(key, sealed), "one message")

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

