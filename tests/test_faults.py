"""Faulty clients over real loopback TCP, against the daemon's factory stack.

Each test runs the DH server behind a ConnectionPolicy on 127.0.0.1, lets a
faulty client loose on it, and checks that a good client completes
meanwhile, that the server logs one line per connection, and that nothing
is left behind (trial fails a test that leaves a DelayedCall or a socket).
"""

import os

from twisted.internet import defer, protocol, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.logger import Logger, formatEvent
from twisted.protocols.basic import Int32StringReceiver
from twisted.trial import unittest

from twisted_keyx.groups import ffdh
from twisted_keyx.service import limits
from twisted_keyx.dh import messages
from twisted_keyx.dh.handshake import HandshakeResult
from twisted_keyx.dh.protocol import DHClientProtocol, DHServerFactory

from .helpers import frame

GROUP = ffdh.named_group("ffdhe2048")


def client_key_message():
    return messages.CLIENT_KEY_PREFIX + GROUP.public_key_pem(GROUP.generate_private_key())


class ScriptedClient(Int32StringReceiver):
    """Sends the legal client messages one per reply, with a fault.

    ``stop_after``: hang up after that many of the server's replies.
    ``byte_by_byte``: write each message one byte per reactor turn.
    ``after_success``: bytes to send once the server's key has arrived.
    ``send``: how many messages to send in all before going silent.
    """

    def __init__(self, stop_after=None, byte_by_byte=False, after_success=None, send=3):
        self.script = [messages.HELLO, messages.PARAMS_REQUEST, client_key_message()][:send]
        self.stop_after = stop_after
        self.byte_by_byte = byte_by_byte
        self.after_success = after_success
        self.replies = []
        self.closed = defer.Deferred()
        self._pending = []

    def connectionMade(self):
        self.transport.setTcpNoDelay(True)
        self._sendNext()

    def _sendNext(self):
        if not self.script:
            return
        data = frame(self.script.pop(0))
        if not self.byte_by_byte:
            self.transport.write(data)
            return
        for i in range(len(data)):
            # One byte per reactor turn, each its own TCP segment (no delay).
            self._pending.append(reactor.callLater(0, self._writeByte, data[i:i + 1]))

    def _writeByte(self, byte):
        self._pending.pop(0)
        if self.transport.connected:
            self.transport.write(byte)

    def stringReceived(self, string):
        self.replies.append(string)
        if self.stop_after is not None and len(self.replies) >= self.stop_after:
            self.transport.loseConnection()
            return
        if string.startswith(messages.SERVER_KEY_PREFIX) and self.after_success:
            self.transport.write(self.after_success)
        self._sendNext()

    def connectionLost(self, reason):
        for call in self._pending:
            call.cancel()
        self.closed.callback(self.replies)


class FaultTests(unittest.TestCase):
    def setUp(self):
        self.lines = []
        dh_factory = DHServerFactory(GROUP)
        dh_factory.log = Logger(observer=lambda e: self.lines.append(formatEvent(e)))
        self.policy = limits.ConnectionPolicy(limits.Limits(timeout=2.0), reactor)
        self.port = reactor.listenTCP(0, self.policy.wrap(dh_factory), interface="127.0.0.1")
        self.addCleanup(self.policy.stopService)
        self.addCleanup(self.port.stopListening)
        self.endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port.getHost().port)

    async def connect(self, proto):
        return await connectProtocol(self.endpoint, proto)

    async def good_handshake(self):
        client = await self.connect(DHClientProtocol())
        result = await client.finished
        self.assertIsInstance(result, HandshakeResult)
        return result

    async def server_idle(self):
        """Wait until the server has closed every connection on its side."""
        for _ in range(500):
            if self.policy.open_connections == 0:
                return
            await task.deferLater(reactor, 0.01)
        self.fail(f"{self.policy.open_connections} connection(s) still open on the server")

    def test_disconnect_after_each_step(self):
        async def run():
            faulty = []
            for step in range(3):
                # Send `step` messages, hang up after the reply to the last.
                client = await self.connect(ScriptedClient(stop_after=step or None, send=step))
                if step == 0:
                    client.transport.loseConnection()
                faulty.append(client.closed)
            # And one that sends its key and hangs up without waiting.
            last = await self.connect(ScriptedClient(send=0))
            last.transport.write(b"".join(
                frame(m) for m in (messages.HELLO, messages.PARAMS_REQUEST, client_key_message())))
            last.transport.loseConnection()
            faulty.append(last.closed)
            await self.good_handshake()
            replies = await defer.gatherResults(faulty)
            self.assertEqual(replies[:3], [[], [messages.HEY_THERE],
                                           [messages.HEY_THERE, GROUP.parameters_pem]])
            await self.server_idle()
            abandoned = sorted(line.split(" while ")[1] for line in self.lines if "abandoned" in line)
            self.assertEqual(abandoned, ["awaiting Hello", "awaiting Params?",
                                         "awaiting the client's public key"])
            self.assertEqual(sum("finished" in line for line in self.lines), 2, self.lines)
            self.assertEqual(len(self.lines), 5, self.lines)

        return defer.ensureDeferred(run())

    def test_byte_by_byte(self):
        async def run():
            slow = await self.connect(ScriptedClient(byte_by_byte=True))
            other = defer.ensureDeferred(self.good_handshake())
            replies = await slow.closed
            await other
            self.assertEqual(len(replies), 3)
            self.assertTrue(replies[2].startswith(messages.SERVER_KEY_PREFIX))
            GROUP.load_peer_key(replies[2][len(messages.SERVER_KEY_PREFIX):])
            await self.server_idle()
            self.assertEqual(sum("finished" in line for line in self.lines), 2)
            self.assertEqual(len(self.lines), 2)

        return defer.ensureDeferred(run())

    def test_never_finishes(self):
        async def run():
            stalled = [await self.connect(ScriptedClient(send=n)) for n in (1, 2)]
            silent = await self.connect(protocol.Protocol())
            silent_closed = defer.Deferred()
            silent.connectionLost = lambda reason: silent_closed.callback(None)
            # The server keeps serving while they hang on.
            await self.good_handshake()
            self.assertEqual(self.policy.open_connections, 3)
            started = reactor.seconds()
            await defer.gatherResults([s.closed for s in stalled] + [silent_closed])
            self.assertGreaterEqual(reactor.seconds() - started, 1.0)
            await self.server_idle()
            timed_out = sorted(line for line in self.lines if "timed out after 2 s" in line)
            self.assertEqual(len(timed_out), 3, self.lines)
            self.assertEqual(
                sorted(line.split(" while ")[1] for line in timed_out),
                ["awaiting Hello", "awaiting Params?", "awaiting the client's public key"],
            )
            self.assertEqual(len(self.lines), 4)

        return defer.ensureDeferred(run())

    def test_garbage_after_success(self):
        async def run():
            garbage = os.urandom(3000) + frame(b"Hello") + b"\xff\xff\xff\xff"
            noisy = await self.connect(ScriptedClient(after_success=garbage))
            replies = await noisy.closed
            self.assertEqual(len(replies), 3)
            self.assertTrue(replies[2].startswith(messages.SERVER_KEY_PREFIX))
            await self.good_handshake()
            await self.server_idle()
            self.assertEqual(sum("finished" in line for line in self.lines), 2)
            self.assertEqual(len(self.lines), 2, self.lines)

        return defer.ensureDeferred(run())

    def test_refused_beyond_the_limit_while_others_are_served(self):
        async def run():
            self.policy.limits = limits.Limits(timeout=2.0, max_per_ip=2)
            held = [await self.connect(ScriptedClient(send=1)) for _ in range(2)]
            refused = [await self.connect(ScriptedClient(send=1)) for _ in range(3)]
            for client in refused:
                self.assertEqual(await client.closed, [])
            for client in held:
                client.transport.loseConnection()
                await client.closed
            await self.server_idle()
            await self.good_handshake()
            await self.server_idle()

        return defer.ensureDeferred(run())


class OtherHandshakeFaultTests(unittest.TestCase):
    """The same policy in front of the unframed DH server and the EKE server,
    over loopback: a raw client that never finishes hits the deadline, an
    authenticated EKE user who goes silent hits the idle timeout, and a
    framed DH client is served meanwhile."""

    def setUp(self):
        from twisted_keyx.dh.raw import RawDHServerFactory
        from twisted_keyx.eke.protocol import EKEServerFactory

        from tests.helpers import Users, make_user

        self.lines = []

        def keep(event):
            self.lines.append(formatEvent(event))

        self.policy = limits.ConnectionPolicy(
            limits.Limits(timeout=1.0, idle_timeout=1.0), reactor)
        self.addCleanup(self.policy.stopService)
        self.ports = {}
        factories = {
            "dh": DHServerFactory(GROUP),
            "raw": RawDHServerFactory(GROUP),
            "eke": EKEServerFactory(Users(alice=make_user("alice"))),
        }
        for name, factory in factories.items():
            factory.log = Logger(observer=keep)
            port = reactor.listenTCP(0, self.policy.wrap(factory), interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            self.ports[name] = TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)

    def test_raw_deadline_and_eke_idle_timeout(self):
        from twisted_keyx.eke.protocol import EKEClientFactory

        from tests.helpers import PASSWORD, TEST_LIMITS, rsa_key

        async def run():
            raw = await connectProtocol(self.ports["raw"], protocol.Protocol())
            raw_closed = defer.Deferred()
            raw.connectionLost = lambda reason: raw_closed.callback(None)
            raw.transport.write(messages.HELLO)  # then nothing

            eke = await self.ports["eke"].connect(EKEClientFactory(
                "alice", PASSWORD, kdf_limits=TEST_LIMITS, rsa_key_factory=rsa_key))
            await eke.authenticated
            closed_why = []
            # The server says why and hangs up.
            eke.finished.addErrback(lambda failure: closed_why.append(failure.value))

            client = await connectProtocol(self.ports["dh"], DHClientProtocol())
            self.assertIsInstance(await client.finished, HandshakeResult)

            await raw_closed
            await eke.disconnected
            for _ in range(500):
                if self.policy.open_connections == 0:
                    break
                await task.deferLater(reactor, 0.01)
            self.assertEqual(self.policy.open_connections, 0)
            self.assertTrue(any("timed out after 1 s while awaiting Params?" in line
                                for line in self.lines), self.lines)
            self.assertTrue(any("EKE: chat with user alice" in line and "silent for 1 s" in line
                                for line in self.lines), self.lines)
            from twisted_keyx.chat.machine import ServerClosedChat
            [why] = closed_why
            self.assertIsInstance(why, ServerClosedChat)
            self.assertEqual(why.reason, "no line for 1 s")

        return defer.ensureDeferred(run())
