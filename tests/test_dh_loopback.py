"""The DH handshake over real TCP on 127.0.0.1: both sides agree."""

from twisted.internet import defer, endpoints, reactor
from twisted.trial import unittest

from twisted_keyx.groups import ffdh
from twisted_keyx.dh.protocol import DHClientProtocol

from .helpers import TrackingDHServerFactory, data_path, tracked

TrackedClient = tracked(DHClientProtocol)


class LoopbackTests(unittest.TestCase):
    def listen(self, group):
        factory = TrackingDHServerFactory(group)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return factory, port.getHost().port

    async def handshake(self, port):
        """Run one client handshake; return its result once the socket is closed."""
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5)
        client = await endpoints.connectProtocol(endpoint, TrackedClient())
        result = await client.finished
        await client.lost
        return result

    async def check_group(self, group):
        factory, port = self.listen(group)
        client_result = await self.handshake(port)
        await factory.allLost()
        [server_result] = factory.results
        self.assertEqual((client_result.group.p, client_result.group.g), (group.p, group.g))
        self.assertEqual(len(client_result.shared_secret), group.byte_length)
        self.assertEqual(client_result.shared_secret, server_result.shared_secret)
        self.assertEqual(client_result.session_key, server_result.session_key)
        self.assertEqual(client_result.transcript_hash, server_result.transcript_hash)
        self.assertEqual(len(client_result.session_key), 32)
        return client_result

    def test_named_groups(self):
        async def run():
            for name in ffdh.NAMED_GROUP_PRIMES:
                result = await self.check_group(ffdh.named_group(name))
                self.assertIs(result.group, ffdh.named_group(name))
        return defer.Deferred.fromCoroutine(run())

    def test_parameter_file_group(self):
        # The client checks the group it receives once (about 0.1 s at
        # 2048 bits); the handshake itself then costs what a named group's does.
        group = ffdh.load_parameters_file(data_path("dhparam-2048.pem"))
        return defer.Deferred.fromCoroutine(self.check_group(group))

    def test_concurrent_clients(self):
        async def run():
            factory, port = self.listen(ffdh.named_group("ffdhe2048"))
            results = await defer.gatherResults(
                [defer.Deferred.fromCoroutine(self.handshake(port)) for _ in range(5)]
            )
            await factory.allLost()
            self.assertEqual(len(factory.connections), 5)
            self.assertEqual(sorted(r.session_key for r in results),
                             sorted(r.session_key for r in factory.results))
            self.assertEqual(len({r.shared_secret for r in results}), 5)
        return defer.Deferred.fromCoroutine(run())
