"""The DH handshake with the server's host key signature (docs/hostkey.rst):
the machines, tampering, loopback framed and unframed, a man in the middle."""

import functools
import io
import json
import os
import signal
import stat

from twisted.internet import defer, endpoints, protocol, reactor, task, threads
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.logger import Logger, formatEvent
from twisted.protocols.basic import Int32StringReceiver
from twisted.python import usage
from twisted.trial import unittest

from twisted_keyx.cli import client
from twisted_keyx.groups import registry as groups
from twisted_keyx.trust import hostkey
from twisted_keyx.trust import knownhosts
from twisted_keyx.service import tap
from twisted_keyx.dh import entry as dh_entry
from twisted_keyx.dh import hostauth, messages
from twisted_keyx.dh.handshake import (
    DHClientState,
    DHClientHandshake,
    DHServerHandshake,
    HostKeyVerificationFailed,
    DHServerState,
    UnexpectedMessage,
)
from twisted_keyx.dh.protocol import DHClientProtocol, DHServerFactory
from twisted_keyx.dh.raw import RawDHClientProtocol, RawDHServerFactory
from twisted_keyx.core.machine import HandshakeFailed

from .helpers import data_path, read_data, tracked
from .test_dh_raw import tutorial_client

HOST_KEY = hostkey.parse_host_key(read_data("ed25519-host-key"))
OTHER_KEY = hostkey.HostKey.from_private_key(hostkey.generate_private_key())


def run_machines(group, client=None, server=None, tamper=None):
    """Run a client and a server machine against each other; ``tamper(index,
    message) -> message`` may change message ``index`` (1-7) on its way.
    Return the client machine (its failure, if any, in ``client.error``)."""
    client = client or DHClientHandshake(ask_host_key=True)
    server = server or DHServerHandshake(group, host_key=HOST_KEY)
    client.error = None
    tamper = tamper or (lambda index, message: message)
    index = 1
    outgoing = [client.start()]
    to_server = True
    try:
        while outgoing:
            replies = []
            for message in outgoing:
                message = tamper(index, message)
                index += 1
                reply = (server if to_server else client).receive(message)
                if reply is not None:
                    replies.extend(reply if isinstance(reply, tuple) else [reply])
            outgoing = replies
            to_server = not to_server
    except HandshakeFailed as e:
        client.error = e
    return client


class MachineTests(unittest.TestCase):
    def test_signed_handshake_verifies(self):
        for name in ("ffdhe2048", "x25519"):
            client = run_machines(groups.named(name))
            self.assertIsNone(client.error)
            self.assertIs(client.state, DHClientState.DONE)
            self.assertEqual(client.result.host_key_fingerprint, HOST_KEY.fingerprint)
            self.assertEqual(hostkey.public_key_blob(client.result.host_public_key),
                             HOST_KEY.blob)

    def test_parameter_file_group_signs_custom(self):
        group = groups.load_parameters_file(data_path("dhparam-2048.pem"))
        self.assertEqual(hostauth.signed_group_name(group), "custom")
        self.assertTrue(group.name.startswith("file:"))
        client = run_machines(group)
        self.assertIsNone(client.error)
        self.assertEqual(client.group.name, "custom")

    def test_plain_client_gets_no_message_7(self):
        server = DHServerHandshake(groups.named("x25519"), host_key=HOST_KEY)
        client = run_machines(groups.named("x25519"), client=DHClientHandshake(), server=server)
        self.assertIsNone(client.error)
        self.assertIsNone(client.result.host_public_key)
        self.assertEqual(server.result.session_key, client.result.session_key)

    def test_server_without_host_key_refuses_request(self):
        server = DHServerHandshake(groups.named("x25519"))
        with self.assertRaises(UnexpectedMessage) as e:
            server.receive(b"Host key?")
        self.assertEqual(e.exception.reply, b"I do not understand you, hanging up")
        self.assertIs(server.state, DHServerState.FAILED)

    def test_client_requires_message_7(self):
        # After message 6 an asking client is not done: it waits for message 7,
        # and anything else there (another message 6) fails it.
        group = groups.named("x25519")
        client = DHClientHandshake(ask_host_key=True)
        server = DHServerHandshake(group, host_key=HOST_KEY)
        self.assertEqual(server.receive(client.start()), b"Hey there!")
        parameters = server.receive(client.receive(b"Hey there!"))
        message6, message7 = server.receive(client.receive(parameters))
        self.assertFalse(client.awaiting_signature)
        self.assertIsNone(client.receive(message6))
        self.assertIs(client.state, DHClientState.AWAIT_HOST_KEY_SIGNATURE)
        self.assertTrue(client.awaiting_signature)
        self.assertFalse(client.finished)
        with self.assertRaises(HandshakeFailed):
            client.receive(message6)
        self.assertIs(client.state, DHClientState.FAILED)
        self.assertFalse(client.awaiting_signature)

    def test_requests_differ_in_session_key(self):
        group = groups.named("x25519")
        key = lambda group: group.generate_private_key()  # noqa: E731
        asked = run_machines(group)
        plain = run_machines(group, client=DHClientHandshake(private_key_factory=key),
                             server=DHServerHandshake(group, host_key=HOST_KEY))
        self.assertNotEqual(asked.result.transcript_hash, plain.result.transcript_hash)

    def test_signature_not_for_another_group_key_or_transcript(self):
        transcript = bytes(range(32))
        signature = hostauth.sign(HOST_KEY, "x25519", transcript)
        hostauth.verify(HOST_KEY.public_key, "x25519", transcript, signature)
        for name, key, h in [("ffdhe2048", HOST_KEY, transcript),
                             ("custom", HOST_KEY, transcript),
                             ("x25519", OTHER_KEY, transcript),
                             ("x25519", HOST_KEY, bytes(32))]:
            with self.assertRaises(hostauth.BadHostKeySignature):
                hostauth.verify(key.public_key, name, h, signature)

    def test_message_7_signed_by_another_key_refused(self):
        def swap(index, message):
            if index == 7:
                public_key, signature = hostauth.parse_signature_message(message)
                return hostauth.signature_message(OTHER_KEY, signature)
            return message
        client = run_machines(groups.named("x25519"), tamper=swap)
        self.assertIsInstance(client.error, HostKeyVerificationFailed)
        self.assertIsNone(client.result)


def _flip_every_byte(test, group_name):
    """Every byte of every message, either direction, changed: the client
    never ends with a verified host key."""
    group = groups.named(group_name)
    lengths = {}
    # Fixed keys: the same lengths in every run (an FFDH PEM's varies).
    client_key, server_key = group.generate_private_key(), group.generate_private_key()

    def run(tamper):
        return run_machines(
            group, client=DHClientHandshake(private_key_factory=lambda g: client_key,
                                            ask_host_key=True),
            server=DHServerHandshake(group, private_key_factory=lambda g: server_key,
                                     host_key=HOST_KEY),
            tamper=tamper)

    def measure(index, message):
        lengths[index] = len(message)
        return message
    client = run(measure)
    test.assertIsNone(client.error)
    test.assertEqual(sorted(lengths), [1, 2, 3, 4, 5, 6, 7])
    checked = 0
    for index, length in lengths.items():
        for position in range(length):
            def flip(i, message, index=index, position=position):
                if i != index:
                    return message
                changed = bytearray(message)
                changed[position] ^= 0x01 if changed[position] not in b"\n" else 0x24
                return bytes(changed)
            client = run(flip)
            verified = client.error is None and client.state is DHClientState.DONE
            test.assertFalse(verified, f"message {index}, byte {position} changed: verified")
            checked += 1
    return checked


class TamperTests(unittest.TestCase):
    def test_x25519_every_byte(self):
        self.assertGreater(_flip_every_byte(self, "x25519"), 500)

    def test_ffdhe2048_every_byte(self):
        # Messages 4 to 6 are long: about 3,000 positions, each a full handshake.
        self.assertGreater(_flip_every_byte(self, "ffdhe2048"), 2000)


class StringTransportTests(unittest.TestCase):
    """The server's session on a StringTransport: exact bytes on the wire."""

    def connect(self, factory):
        server = factory.buildProtocol(None)
        transport = StringTransport()
        server.makeConnection(transport)
        return server, transport

    def test_framed_messages_6_and_7_in_two_frames(self):
        group = groups.named("x25519")
        factory = DHServerFactory(group, host_key=HOST_KEY)
        server, transport = self.connect(factory)
        client = DHClientHandshake(ask_host_key=True)
        first = client.start()
        self.assertEqual(first, b"Host key?")
        server.dataReceived(len(first).to_bytes(4, "big") + first)
        self.assertEqual(transport.value(), b"\x00\x00\x00\x0aHey there!")
        transport.clear()
        server.dataReceived(b"\x00\x00\x00\x07Params?")
        self.assertEqual(transport.value(), b"\x00\x00\x00\x0dGroup: x25519")
        transport.clear()
        message5 = client.receive(b"Hey there!") and client.receive(b"Group: x25519")
        server.dataReceived(len(message5).to_bytes(4, "big") + message5)
        wire = transport.value()
        length6 = int.from_bytes(wire[:4], "big")
        message6 = wire[4:4 + length6]
        rest = wire[4 + length6:]
        length7 = int.from_bytes(rest[:4], "big")
        message7 = rest[4:]
        self.assertEqual(length7, len(message7))
        self.assertEqual(length7, hostauth.SIGNATURE_MESSAGE_LENGTH)
        self.assertTrue(message6.startswith(b"Server public key:-----BEGIN PUBLIC KEY-----\n"))
        self.assertTrue(message7.startswith(
            b"Host key signature:-----BEGIN KEYX HOST KEY SIGNATURE-----\n"))
        self.assertTrue(message7.endswith(b"-----END KEYX HOST KEY SIGNATURE-----\n"))
        self.assertIsNone(client.receive(message6))
        self.assertIs(client.state, DHClientState.AWAIT_HOST_KEY_SIGNATURE)
        self.assertIsNone(client.receive(message7))
        self.assertEqual(client.result.host_key_fingerprint, HOST_KEY.fingerprint)
        self.assertTrue(transport.disconnecting)

    def test_without_host_key_request_refused(self):
        factory = DHServerFactory(groups.named("x25519"))
        server, transport = self.connect(factory)
        server.dataReceived(b"\x00\x00\x00\x09Host key?")
        self.assertEqual(transport.value(),
                         b"\x00\x00\x00\x23I do not understand you, hanging up")
        self.assertTrue(transport.disconnecting)

    def test_unframed_request(self):
        factory = RawDHServerFactory(groups.named("x25519"), host_key=HOST_KEY)
        server, transport = self.connect(factory)
        server.dataReceived(b"Host key?")
        self.assertEqual(transport.value(), b"Hey there!")


class LoopbackTests(unittest.TestCase):
    def listen(self, factory):
        factory.protocol = tracked(factory.protocol)
        connections = []
        build = factory.buildProtocol

        def buildProtocol(addr):
            p = build(addr)
            connections.append(p)
            return p
        factory.buildProtocol = buildProtocol
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port, connections

    async def handshake(self, client_class, port, **options):
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5)
        client = tracked(client_class)(client_class.newHandshake(**options))
        await endpoints.connectProtocol(endpoint, client)
        try:
            return await client.finished
        finally:
            await client.lost

    def check(self, factory_class, client_class, name):
        async def run():
            port, connections = self.listen(factory_class(groups.named(name), host_key=HOST_KEY))
            result = await self.handshake(client_class, port, ask_host_key=True)
            await defer.gatherResults([c.lost for c in connections])
            self.assertEqual(result.host_key_fingerprint, HOST_KEY.fingerprint)
            self.assertEqual(result.group.name, name)
            plain = await self.handshake(client_class, port)
            self.assertIsNone(plain.host_key_fingerprint)
            await defer.gatherResults([c.lost for c in connections])
        return defer.Deferred.fromCoroutine(run())

    def test_framed_x25519(self):
        return self.check(DHServerFactory, DHClientProtocol, "x25519")

    def test_framed_ffdhe2048(self):
        return self.check(DHServerFactory, DHClientProtocol, "ffdhe2048")

    def test_unframed_x25519(self):
        return self.check(RawDHServerFactory, RawDHClientProtocol, "x25519")

    def test_unframed_ffdhe2048(self):
        return self.check(RawDHServerFactory, RawDHClientProtocol, "ffdhe2048")

    def test_framed_xwing(self):
        return self.check(DHServerFactory, DHClientProtocol, "xwing")

    def test_unframed_xwing(self):
        return self.check(RawDHServerFactory, RawDHClientProtocol, "xwing")

    def test_framed_mlkem768x25519(self):
        return self.check(DHServerFactory, DHClientProtocol, "mlkem768x25519-sha256")

    def test_unframed_mlkem768x25519(self):
        return self.check(RawDHServerFactory, RawDHClientProtocol, "mlkem768x25519-sha256")

    @defer.inlineCallbacks
    def test_tutorial_client_against_raw_server_with_host_key(self):
        factory = RawDHServerFactory(groups.named("ffdhe2048"), host_key=HOST_KEY)
        port, connections = self.listen(factory)
        secret = yield threads.deferToThread(tutorial_client, port)
        yield defer.gatherResults([c.lost for c in connections])
        self.assertEqual(len(secret), 256)
        self.assertEqual(secret, connections[0].handshake.result.shared_secret)


# --- the daemon: twistd keyx --host-key / --no-host-key ----------------------

class TapHostKeyTests(unittest.TestCase):
    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.mkdir(self.directory)
        cwd = os.getcwd()
        os.chdir(self.directory)
        self.addCleanup(os.chdir, cwd)

    def parse(self, *args):
        options = tap.Options()
        options.parseOptions(["--users", os.path.join(self.directory, "users.json"), *args])
        return options

    def start(self, options):
        """What twistd does next: the service, started as far as listening."""
        service = tap.makeService(options, reactor=MemoryReactor())
        service.privilegedStartService()
        return service

    def test_default_key_created_once_with_mode_0600(self):
        options = self.parse("--dh", "tcp:0", "--eke", "tcp:0", "--opaque", "tcp:0")
        self.assertTrue(options.config.settings["dh"].host_key_created)
        path = os.path.join(self.directory, dh_entry.DEFAULT_HOST_KEY)
        # Written when the daemon starts, not when the options are read.
        self.assertFalse(os.path.exists(path))
        self.start(options)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertTrue(os.path.exists(path + ".pub"))
        again = self.parse()
        self.assertFalse(again.config.settings["dh"].host_key_created)
        self.assertEqual(again.config.settings["dh"].host_key.fingerprint,
                         options.config.settings["dh"].host_key.fingerprint)

    def test_start_up_line_names_the_fingerprint(self):
        options = self.parse("--dh", "tcp:0", "--eke", "tcp:0")
        service = tap.KeyxService(options.config)
        events = []
        service.log = Logger(observer=events.append)
        service.startService()
        self.addCleanup(service.stopService)
        fingerprint = options.config.settings["dh"].host_key.fingerprint
        self.assertIn(f"; host key {fingerprint} (created now)", formatEvent(events[0]))

    def test_given_key_loaded(self):
        path = os.path.join(self.directory, "key")
        with open(path, "wb") as f:
            f.write(read_data("ed25519-host-key"))
        os.chmod(path, 0o600)
        loaded = self.parse("--host-key", path).config.settings["dh"].host_key
        self.assertEqual(loaded.fingerprint, HOST_KEY.fingerprint)
        self.assertFalse(os.path.exists(dh_entry.DEFAULT_HOST_KEY))

    def assertUsageError(self, args, *words):
        with self.assertRaises(usage.UsageError) as e:
            self.parse(*args)
        for word in words:
            self.assertIn(word, str(e.exception))

    def test_missing_given_key(self):
        self.assertUsageError(["--host-key", "nothere"], "--host-key", "nothere",
                              "does not exist")
        self.assertFalse(os.path.exists("nothere"))

    def test_readable_by_others(self):
        path = os.path.join(self.directory, "key")
        with open(path, "wb") as f:
            f.write(read_data("ed25519-host-key"))
        for mode in (0o640, 0o604):
            os.chmod(path, mode)
            self.assertUsageError(["--host-key", path], "group or others", "chmod 600")

    def test_not_ed25519(self):
        path = os.path.join(self.directory, "key")
        with open(path, "wb") as f:
            f.write(read_data("rsa-host-key"))
        os.chmod(path, 0o600)
        self.assertUsageError(["--host-key", path], "--host-key", path)

    def test_no_host_key(self):
        options = self.parse("--no-host-key")
        self.assertIsNone(options.config.settings["dh"].host_key)
        self.assertFalse(os.path.exists(dh_entry.DEFAULT_HOST_KEY))
        self.assertUsageError(["--no-host-key", "--host-key", "x"], "not both")


# --- the client: known hosts, TOFU, a man in the middle ----------------------

class _Relay(Int32StringReceiver):
    """A man in the middle, framed: runs its own x25519 keys with each side
    (swaps the keys in messages 5 and 6), and relays or strips message 7;
    ``mode`` "refuse" answers Host key? as a server without a host key would,
    then relays the plain handshake unchanged."""

    def connectionMade(self):
        self.factory.connections.append(self)
        self.pending = []
        self.upstream = None
        self.from_client = self.from_server = 0
        self.group = groups.named("x25519")
        self.key = self.group.generate_private_key()
        factory = protocol.ClientFactory()
        factory.protocol = _Upstream
        factory.relay = self
        reactor.connectTCP("127.0.0.1", self.factory.target, factory)

    def stringReceived(self, string):
        self.from_client += 1
        if self.from_client == 1 and string == b"Host key?" and self.factory.mode == "refuse":
            self.sendString(messages.UNEXPECTED_MESSAGE_REPLY)
            self.transport.loseConnection()
            return
        if self.from_client == 3 and self.factory.mode != "refuse":
            string = messages.CLIENT_KEY_PREFIX + self.group.public_key_pem(self.key)
        if self.upstream is None:
            self.pending.append(string)
        else:
            self.upstream.sendString(string)

    def fromServer(self, string):
        self.from_server += 1
        if self.factory.mode != "refuse":
            if self.from_server == 3:
                string = messages.SERVER_KEY_PREFIX + self.group.public_key_pem(self.key)
            if self.from_server == 4 and self.factory.mode == "strip":
                self.transport.loseConnection()
                return
        self.sendString(string)

    def connectionLost(self, reason):
        if self.upstream is not None:
            self.upstream.transport.loseConnection()


class _Upstream(Int32StringReceiver):
    def connectionMade(self):
        relay = self.factory.relay
        relay.upstream = self
        for string in relay.pending:
            self.sendString(string)

    def stringReceived(self, string):
        self.factory.relay.fromServer(string)

    def connectionLost(self, reason):
        self.factory.relay.transport.loseConnection()


class ClientHostKeyTests(unittest.TestCase):
    def setUp(self):
        self.known_hosts = os.path.abspath(os.path.join(self.mktemp(), "sub", "known_hosts"))
        os.makedirs(os.path.dirname(self.known_hosts))
        self.port = self.listen(DHServerFactory(groups.named("x25519"), host_key=HOST_KEY))

    def listen(self, factory):
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def run_client(self, port, *options, terminal=None):
        args = client.build_parser().parse_args(
            ["dh", "--host", "127.0.0.1", "--port", str(port),
             "--known-hosts", self.known_hosts, *options])
        out, err = io.StringIO(), io.StringIO()
        self.patch(knownhosts, "open_terminal", lambda: terminal)
        self.patch(client, "check_host_key", functools.partial(
            client.check_host_key, open_terminal=lambda: terminal))

        async def run():
            status = await client.run(reactor, args, out, err)
            await task.deferLater(reactor, 0.05, lambda: None)  # sockets close
            return status, out.getvalue(), err.getvalue()
        return defer.Deferred.fromCoroutine(run())

    def test_accept_new_records_then_known(self):
        async def run():
            status, out, err = await self.run_client(self.port, "--accept-new", "--json")
            self.assertEqual(status, 0)
            self.assertEqual(json.loads(out)["host_key_fingerprint"], HOST_KEY.fingerprint)
            self.assertEqual(err, knownhosts.added_text(f"[127.0.0.1]:{self.port}"))
            self.assertEqual(stat.S_IMODE(os.stat(self.known_hosts).st_mode), 0o600)
            status, out, err = await self.run_client(self.port)
            self.assertEqual((status, err), (0, ""))
            self.assertIn(f"Host key fingerprint: {HOST_KEY.fingerprint}\n", out)
        return defer.Deferred.fromCoroutine(run())

    def test_known_hosts_in_a_missing_folder_refused(self):
        async def run():
            missing = os.path.abspath(self.mktemp())
            self.known_hosts = os.path.join(missing, "dir", "kh")
            status, out, err = await self.run_client(self.port, "--accept-new")
            self.assertEqual((status, out), (1, ""))
            self.assertEqual(err, f"keyx-client: cannot write known hosts file "
                                  f"{self.known_hosts}: no folder {os.path.dirname(self.known_hosts)}"
                                  " (only the default file's folder is created)\n")
            self.assertFalse(os.path.exists(missing))
        return defer.Deferred.fromCoroutine(run())

    def test_no_terminal_refuses_in_one_line(self):
        async def run():
            status, out, err = await self.run_client(self.port)
            self.assertEqual((status, out), (1, ""))
            self.assertEqual(err, "keyx-client: " + knownhosts.no_terminal_text(
                f"[127.0.0.1]:{self.port}", HOST_KEY.public_key, self.known_hosts))
            self.assertEqual(err.count("\n"), 1)
            self.assertFalse(os.path.exists(self.known_hosts))
        return defer.Deferred.fromCoroutine(run())

    def test_first_contact_asks_on_the_terminal(self):
        class Terminal:
            def __init__(self, answer):
                self.written, self.answer = [], answer

            def read_line(self):
                return self.answer

            def write(self, text):
                self.written.append(text)

            def close(self):
                pass

        async def run():
            name = f"[127.0.0.1]:{self.port}"
            no = Terminal("no\n")
            status, out, err = await self.run_client(self.port, terminal=no)
            self.assertEqual((status, out), (1, ""))
            self.assertEqual(no.written,
                             [knownhosts.first_contact_prompt(name, HOST_KEY.public_key)])
            self.assertIn(
                "The authenticity of host '" + name + "' can't be established.\n"
                f"ED25519 key fingerprint is {HOST_KEY.fingerprint}.\n"
                "Are you sure you want to continue connecting (yes/no)? ", no.written)
            yes = Terminal("yes\n")
            status, out, err = await self.run_client(self.port, terminal=yes)
            self.assertEqual((status, err), (0, knownhosts.added_text(name)))
            self.assertEqual(knownhosts.KnownHosts(self.known_hosts).check(
                "127.0.0.1", self.port, HOST_KEY.public_key).status, knownhosts.KNOWN)
        return defer.Deferred.fromCoroutine(run())

    def test_ctrl_c_at_the_first_contact_question_interrupts(self):
        """Ctrl-C while the question waits for an answer ends the command
        with 130, whatever is typed after it; nothing is recorded.  (Before,
        the reactor's handler only scheduled a stop: the question went on,
        ``yes`` finished with 0 and the stop met a stopped reactor.)"""
        stops = []
        # A stand-in for the reactor's handler, as task.react installs it.
        previous = signal.signal(signal.SIGINT, lambda number, frame: stops.append(number))
        self.addCleanup(signal.signal, signal.SIGINT, previous)

        class CtrlCThenYes:
            written = []

            def read_line(self):
                os.kill(os.getpid(), signal.SIGINT)
                return "yes\n"

            def write(self, text):
                self.written.append(text)

            def close(self):
                pass

        async def run():
            status, out, err = await self.run_client(self.port, terminal=CtrlCThenYes())
            self.assertEqual((status, out, err), (130, "", "keyx-client: interrupted\n"))
            self.assertEqual(stops, [])
            self.assertFalse(os.path.exists(self.known_hosts))
            # The handler in place before the question is back.
            self.assertIs(signal.getsignal(signal.SIGINT).__class__, type(lambda: 0))
        return defer.Deferred.fromCoroutine(run())

    def know(self, port, key=HOST_KEY):
        knownhosts.KnownHosts(self.known_hosts).record("127.0.0.1", port, key.public_key)

    def test_changed_key_refused_naming_file_and_line(self):
        async def run():
            self.know(self.port, OTHER_KEY)
            status, out, err = await self.run_client(self.port, "--accept-new")
            self.assertEqual((status, out), (1, ""))
            self.assertIn(f"{self.known_hosts}:1", err)
            self.assertIn("HOST IDENTIFICATION HAS CHANGED", err.upper())
        return defer.Deferred.fromCoroutine(run())

    def mitm(self, mode):
        relay = protocol.Factory()
        relay.protocol = _Relay
        relay.target = self.port
        relay.mode = mode
        relay.connections = []
        return self.listen(relay)

    def test_mitm_swapping_keys_refused(self):
        async def run():
            port = self.mitm("relay")
            self.know(port)
            status, out, err = await self.run_client(port, "--accept-new")
            self.assertEqual((status, out), (1, ""))
            self.assertIn("host key verification failed", err)
            self.assertIn("does not verify", err)
            self.assertIn(f"{self.known_hosts}:1", err)
            self.assertEqual(err.count("\n"), 1)
        return defer.Deferred.fromCoroutine(run())

    def test_mitm_stripping_message_7_refused(self):
        async def run():
            port = self.mitm("strip")
            self.know(port)
            status, out, err = await self.run_client(port)
            # Cut after message 6: a known host that offers no signature,
            # refused loudly (was exit 3, "the server closed the connection").
            self.assertEqual((status, out), (1, ""))
            self.assertIn("KNOWN HOST OFFERED NO HOST KEY SIGNATURE", err)
            self.assertIn(f"{self.known_hosts}:1", err)
        return defer.Deferred.fromCoroutine(run())

    def test_mitm_refusing_host_key_request_refused_for_known_host(self):
        async def run():
            port = self.mitm("refuse")
            self.know(port)
            status, out, err = await self.run_client(port)
            self.assertEqual((status, out), (1, ""))
            self.assertIn("KNOWN HOST OFFERED NO HOST KEY SIGNATURE", err)
            self.assertIn(f"{self.known_hosts}:1", err)
        return defer.Deferred.fromCoroutine(run())

    def test_require_host_key(self):
        async def run():
            port = self.listen(DHServerFactory(groups.named("x25519")))
            status, out, err = await self.run_client(port, "--require-host-key")
            self.assertEqual((status, out), (1, ""))
            self.assertIn("--require-host-key", err)
            status, out, err = await self.run_client(port)
            self.assertEqual(status, 0)
            self.assertIn("unauthenticated", err)
            self.assertIn("Host key fingerprint: none (unauthenticated)", out)
        return defer.Deferred.fromCoroutine(run())
