"""The benchmark's helpers (benchmarks/keyxbench), without timing anything:
the DH and OPAQUE load clients' decisions, their reading of framed,
unframed and line replies, the OPAQUE mode's user and key files, the load
summary, and the reading of py-spy's collapsed stacks.  Results of the
benchmark itself: docs/benchmarks.rst."""

import contextlib
import io
import os
import sys

from twisted.internet.testing import StringTransportWithDisconnection
from twisted.trial import unittest

BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
if BENCHMARKS not in sys.path:
    sys.path.insert(0, BENCHMARKS)

from keyxbench import clients, floor, load, modes, process, project, spy  # noqa: E402
from keyxbench.project import messages  # noqa: E402

from .helpers import frame, unframe  # noqa: E402

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
            def decapsulate(self, private_key, pem):
                checked.append((private_key, pem))

        steps = clients.DHSteps(KEY_MESSAGE, check=(Group(), "the client's key"))
        for reply in (messages.HEY_THERE, PARAMS, SERVER_KEY.rstrip()):
            steps.receive(reply)
        self.assertEqual(checked, [("the client's key",
                                    SERVER_KEY[len(messages.SERVER_KEY_PREFIX):])])

    def test_an_xwing_ciphertext_is_decapsulated_when_asked(self):
        group = project.named_group("xwing")
        key = group.generate_private_key()
        ciphertext, _ = group.encapsulate(group.load_peer_key(group.public_key_pem(key)))
        steps = clients.DHSteps(KEY_MESSAGE, check=(group, key))
        for reply in (messages.HEY_THERE, b"Group: xwing"):
            steps.receive(reply)
        self.assertIsNone(steps.receive(messages.SERVER_KEY_PREFIX + ciphertext))
        self.assertTrue(steps.finished)
        broken = clients.DHSteps(KEY_MESSAGE, check=(group, key))
        for reply in (messages.HEY_THERE, b"Group: xwing"):
            broken.receive(reply)
        with self.assertRaises(ValueError):
            broken.receive(messages.SERVER_KEY_PREFIX + ciphertext[:200])


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

    def test_lines_for_the_canned_line_server(self):
        client, transport, factory = connect(clients.FiveLinesClient)
        for _ in range(4):
            self.assertEqual(transport.value(), clients.LinesClient.LINE + b"\n")
            transport.clear()
            client.dataReceived(b"reply\n")
            self.assertEqual(factory.recorder.latencies, [])
        transport.clear()
        client.dataReceived(b"reply\n")
        self.assertEqual(transport.value(), b"")
        self.assertEqual(len(factory.recorder.latencies), 1)
        self.assertFalse(transport.connected)
        self.assertEqual(factory.nexts, 1)

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
        "run (twistd.py:35);doRead (tcp.py:10);jacobi (twisted_keyx/groups/ffdh.py:130) 6\n",
        "run (twistd.py:35);doRead (tcp.py:10);jacobi (twisted_keyx/groups/ffdh.py:131) 2\n",
        "run (twistd.py:35);Logger.emit (twisted/logger/_logger.py:1);untilConcludes (u.py:3) 2\n",
        "not a stack line\n",
    ]

    def test_shares_add_lines_of_a_function(self):
        total, own, inclusive = spy.shares(spy.read_stacks(self.LINES))
        self.assertEqual(total, 10)
        self.assertEqual(own["jacobi (twisted_keyx/groups/ffdh.py)"], 8)
        self.assertEqual(inclusive["run (twistd.py)"], 10)

    def test_categories_from_the_innermost_frame(self):
        categories = spy.categorise(spy.read_stacks(self.LINES))
        self.assertEqual(categories, {"subgroup check (jacobi)": 8, "log line": 2})

    def test_password_crypto_claims_the_library_calls_under_it(self):
        lines = [
            # HMAC under OPAQUE's key schedule: not "session key, transcript".
            "run (t.py:1);respond (twisted_keyx/opaque/login.py:9);"
            "mac (twisted_keyx/opaque/primitives.py:3);digest (hmac.py:7) 3\n",
            # A scalar multiplication inside 3DH: the group, not the logic.
            "run (t.py:1);server_ikm (twisted_keyx/opaque/ake.py:2);"
            "scalar_mult (twisted_keyx/opaque/group.py:5);"
            "crypto_scalarmult_ristretto255 (rbcl/rbcl.py:1) 4\n",
            "run (t.py:1);respond (twisted_keyx/opaque/login.py:9) 1\n",
            "run (t.py:1);_on_sealed_public_key (twisted_keyx/eke/handshake.py:1);"
            "rsa_encrypt (twisted_keyx/eke/crypto.py:2);encrypt (cryptography/x.py:1) 2\n",
            "run (t.py:1);_result (twisted_keyx/opaque/handshake.py:1);"
            "derive_chat_keys (twisted_keyx/chat/records.py:1);"
            "hkdf_sha256 (twisted_keyx/core/transcript.py:1) 5\n",
            # Not crypto: the transcript, the adapter, a log line from the factory.
            "run (t.py:1);add (twisted_keyx/core/transcript.py:1) 6\n",
            "run (t.py:1);dataReceived (twisted/x.py:1);_step (twisted_keyx/core/adapter.py:1) 7\n",
            "run (t.py:1);machineFinished (twisted_keyx/eke/protocol.py:1);"
            "Logger.info (twisted/logger/_logger.py:1) 8\n",
        ]
        self.assertEqual(spy.categorise(spy.read_stacks(lines)), {
            "OPAQUE HKDF, HMAC, SHA-512 (key schedule, masking)": 3,
            "OPAQUE ristretto255: scalar mults, hash to group (rbcl)": 4,
            "OPAQUE login logic (oprf, ake, credentials, login, messages)": 1,
            "EKE crypto (RSA-OAEP, AES-GCM boxes)": 2,
            "chat keys and records (HKDF, AES-GCM)": 5,
            "session key, transcript, fingerprint": 6,
            "session adapter and the factory's observers": 7,
            "log line": 8,
        })


class HostKeyDHStepsTests(unittest.TestCase):
    """The load client with a host key verifies message 7 against the
    library's server machine, and refuses a tampered one."""

    def run_steps(self, tamper=lambda message: message):
        from twisted_keyx.groups import registry as groups
        from twisted_keyx.trust import hostkey
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


class OpaqueLogin:
    """A server for the OPAQUE load client: the library's server machine
    and chat, with a user registered at the benchmark's cheap cost."""

    def __init__(self, setup=None, user=None):
        self.setup = setup or project.opaque.ServerSetup.generate(project.cheap_argon2id())
        self.user = user or project.opaque_bench_user(clients.OPAQUE_USER, clients.OPAQUE_PASSWORD,
                                                      self.setup)
        self.handshake = project.opaque.OPAQUEServerHandshake(
            self.setup, {clients.OPAQUE_USER: self.user}.get)
        self.chat = None

    def receive(self, line):
        """The reply to ``line``; a refusal is ``authentication failed``,
        as the daemon sends it."""
        if self.chat is None:
            try:
                reply = self.handshake.receive(line)
            except project.opaque.ProtocolFailed:
                return project.opaque.FAILURE_REPLY
            if self.handshake.finished:
                self.chat = project.eke.ServerChat(self.handshake.result)
            return reply
        return self.chat.receive(line)


def run_opaque(steps, server, tamper=lambda number, line: line):
    """Lines between ``steps`` and ``server`` until ``steps`` has no more;
    ``tamper(number, line)`` may change the server's line number 1, 2, 3."""
    line, number = steps.start(), 0
    while line is not None:
        number += 1
        line = steps.receive(tamper(number, server.receive(line)))
    return number


class OpaqueStepsTests(unittest.TestCase):
    """The OPAQUE load client runs a real login (the server's machine
    verifies KE3) and a real quit, and names the step a wrong line came at."""

    def setUp(self):
        self.pool = clients.OpaquePool(0)

    def test_a_login_and_its_quit(self):
        server = OpaqueLogin()
        steps = self.pool.take()
        self.assertEqual(run_opaque(steps, server), 3)
        self.assertTrue(steps.authenticated and steps.finished)
        self.assertTrue(server.handshake.finished)
        self.assertTrue(server.chat.finished)
        self.assertEqual(server.handshake.result.user, clients.OPAQUE_USER)

    def test_a_refusal_instead_of_KE2(self):
        steps = self.pool.take()
        steps.start()
        with self.assertRaises(clients.BadReply) as caught:
            steps.receive(project.opaque.FAILURE_REPLY)
        self.assertTrue(str(caught.exception).startswith("KE2: "))
        self.assertFalse(steps.authenticated)

    def test_another_server_is_refused_at_ok(self):
        # A server with another setup: the envelope does not open, the
        # client sends a random KE3, the server refuses it.
        stranger = OpaqueLogin(setup=project.opaque.ServerSetup.generate(project.cheap_argon2id()),
                               user=OpaqueLogin().user)
        steps = self.pool.take()
        with self.assertRaises(clients.BadReply) as caught:
            run_opaque(steps, stranger)
        self.assertTrue(str(caught.exception).startswith("ok: "), str(caught.exception))
        self.assertFalse(steps.authenticated or stranger.handshake.finished)

    def test_a_tampered_KE2_is_refused(self):
        def tamper(number, line):
            return line[:-5] + (b"A" if line[-5:-4] != b"A" else b"B") + line[-4:] \
                if number == 1 else line

        with self.assertRaises(clients.BadReply):
            run_opaque(self.pool.take(), OpaqueLogin(), tamper)

    def test_the_quit_must_be_confirmed(self):
        server = OpaqueLogin()

        def tamper(number, line):
            if number != 3:
                return line
            # The server's first record, but the reply to a line, not to quit.
            result = server.handshake.result
            return project.eke.ServerChat(result).receive(project.eke.ClientChat(result).say("hi"))

        steps = self.pool.take()
        with self.assertRaises(clients.BadReply) as caught:
            run_opaque(steps, server, tamper)
        self.assertEqual(str(caught.exception), "quit: a reply to no line")
        self.assertTrue(steps.authenticated)
        self.assertFalse(steps.finished)

    def test_nothing_after_the_quit(self):
        steps = self.pool.take()
        run_opaque(steps, OpaqueLogin())
        with self.assertRaises(clients.BadReply):
            steps.receive(b"ok")


class OpaquePoolTests(unittest.TestCase):
    def test_started_in_advance_then_on_the_spot(self):
        pool = clients.OpaquePool(2)
        lines = [pool.take().start() for _ in range(3)]
        self.assertEqual(pool.live, 1)
        # Each login its own blind and key share: no line (1) repeats.
        self.assertEqual(len(set(lines)), 3)
        self.assertTrue(all(line.endswith(b" " + clients.OPAQUE_USER.encode()) for line in lines))

    def test_how_many_the_load_generator_starts(self):
        args = load.parser().parse_args(["--client", "opaque", "--port", "1", "--seconds", "10",
                                         "--warmup", "2"])
        self.assertEqual(load.opaque_prestart(args), 13 * load.OPAQUE_RATE)
        args.opaque_prestart = 5
        self.assertEqual(load.opaque_prestart(args), 5)
        args.client = "eke"
        self.assertEqual(load.opaque_prestart(args), 0)


class OpaqueSettings:
    def __init__(self):
        self.pool = clients.OpaquePool(1)

    def opaque_steps(self, recorder):
        return self.pool.take()


class OPAQUEClientWireTests(unittest.TestCase):
    def test_a_login_over_lines_in_pieces(self):
        factory = FakeFactory()
        factory.settings = OpaqueSettings()
        client = clients.OPAQUEClient()
        client.factory = factory
        transport = Transport()
        transport.protocol = client
        client.makeConnection(transport)
        server = OpaqueLogin()
        while transport.connected and transport.value():
            sent, _ = transport.value(), transport.clear()
            self.assertTrue(sent.endswith(b"\n"))
            reply = server.receive(sent[:-1]) + b"\n"
            for i in range(0, len(reply), 50):
                client.dataReceived(reply[i:i + 50])
        self.assertTrue(server.chat.finished)
        self.assertFalse(transport.connected)
        self.assertEqual(factory.recorder.failures, 0)
        self.assertEqual(len(factory.recorder.latencies), 1)
        self.assertEqual(factory.nexts, 1)


class OpaqueModeFilesTests(unittest.TestCase):
    """The OPAQUE mode's daemon gets files its own loaders accept, with a
    user the load client logs in as."""

    def test_the_user_file_and_the_key_file(self):
        from twisted_keyx.service.userfile import UserFile

        directory = self.mktemp()
        os.mkdir(directory)
        options = modes.bench_users(directory)
        self.assertEqual(options[0::2], ["--users", "--opaque-key"])
        users = UserFile(options[1])
        self.assertEqual(users.load(), 2)
        self.assertIsNotNone(self.successResultOf(users.lookup(clients.EKE_USER)))
        user = self.successResultOf(users.lookup(clients.OPAQUE_USER, scheme="opaque"))
        self.assertEqual(user.record.ksf, project.cheap_argon2id())
        setup = project.opaque.scheme.load_key_file(options[3])
        self.assertEqual(setup.default_ksf, project.cheap_argon2id())
        steps = clients.OpaquePool(0).take()
        run_opaque(steps, OpaqueLogin(setup, user))
        self.assertTrue(steps.finished)


class MedianOfSlicesTests(unittest.TestCase):
    def test_a_burst_does_not_move_the_floor(self):
        # Every 300th login costs 50 times the others: the slices it lands
        # in are not the median one.
        calls = [0]

        def one():
            calls[0] += 1
            return 0.05 if calls[0] % 300 == 0 else 0.001

        self.assertAlmostEqual(floor.median_of_slices(one, seconds=0.7, slices=7), 0.001)
        self.assertGreaterEqual(calls[0], 600)


class FakeServer:
    def __init__(self, port, cpu, rss):
        self.port, self.pid, self.cpu, self.memory = port, port + 1000, cpu, rss

    def cpu_seconds(self):
        return self.cpu

    def rss(self):
        return self.memory

    def peak_rss(self):
        return self.memory * 2


class SeveralServersTests(unittest.TestCase):
    """The peer of ``--workers 2``: two separate daemons measured as one."""

    def test_ports_argument(self):
        self.assertEqual(load.ports_argument("8123"), [8123])
        self.assertEqual(load.ports_argument("8123,8124"), [8123, 8124])
        for bad in ("", "x", "8123,", "0", "65536"):
            self.assertRaises(load.argparse.ArgumentTypeError, load.ports_argument, bad)

    def test_the_clients_are_spread_over_the_ports(self):
        args = load.parser().parse_args(["--client", "dh-framed", "--port", "7,8"])
        self.assertEqual(args.port, [7, 8])

    def test_cpu_and_memory_are_summed(self):
        servers = process.ServerSet([FakeServer(7, 1.5, 10), FakeServer(8, 2.0, 20)])
        self.assertEqual(servers.port, [7, 8])
        self.assertEqual(servers.cpu_seconds(), 3.5)
        self.assertEqual(servers.own_cpu_seconds(), 3.5)
        self.assertEqual((servers.rss(), servers.peak_rss()), (30, 60))

    def test_the_mode_starts_unpinned_single_processes(self):
        peer = modes.MODES["dh-2x1"].server
        self.assertIsInstance(peer, modes.Independent)
        self.assertEqual((peer.copies, peer.server.workers, peer.server.pinned), (2, None, False))


class FloorsTests(unittest.TestCase):
    def test_each_group_is_measured_once(self):
        import bench_daemon

        measured = []
        self.patch(bench_daemon.floor, "cryptography_floor",
                   lambda group, seconds: measured.append(group) or 0.001)
        self.patch(bench_daemon.floor, "group_crypto", lambda group, seconds: 0.001)
        self.patch(bench_daemon.process, "pin_self", lambda core: None)
        with contextlib.redirect_stdout(io.StringIO()):
            floors = bench_daemon.measure_floors("ffdhe2048", ["x25519", "x25519", "ffdhe2048"])
        self.assertEqual(measured, ["ffdhe2048", "x25519"])
        self.assertEqual(set(floors), {"group", "floor", "group_crypto", "floor:x25519",
                                       "group_crypto:x25519"})


class SourcesTests(unittest.TestCase):
    """Clients from many loopback addresses (modes dh-sources, naive-sources)."""

    def test_addresses(self):
        addresses = load.source_addresses(300)
        self.assertEqual(addresses[:2] + addresses[-1:], ["127.1.0.0", "127.1.0.1", "127.1.1.43"])
        self.assertEqual(len(set(addresses)), 300)
        self.assertRaises(ValueError, load.source_addresses, 0)
        self.assertRaises(ValueError, load.source_addresses, (1 << 16) + 1)

    def test_option_and_modes(self):
        args = load.parser().parse_args(["--client", "dh-framed", "--port", "7", "--sources", "9"])
        self.assertEqual(args.sources, 9)
        self.assertEqual(load.parser().parse_args(["--client", "x", "--port", "7"]).sources, 0)
        for name in ("dh-sources", "naive-sources"):
            self.assertEqual(modes.MODES[name].load_options, {"sources": 16384})
        self.assertEqual(modes.MODES["dh"].load_options, {})

    def test_each_connection_binds_the_next_source(self):
        class Reactor:
            def __init__(self):
                self.binds = []

            def connectTCP(self, host, port, factory, bindAddress=None):
                self.binds.append(bindAddress)

        reactor = Reactor()
        sources = iter(["127.1.0.0", "127.1.0.1"])
        factory = clients.HandshakeFactory(reactor, 7, "dh-framed", None, clients.Recorder(),
                                           sources)
        factory.next()
        factory.next()
        plain = clients.HandshakeFactory(reactor, 7, "dh-framed", None, clients.Recorder())
        plain.next()
        self.assertEqual(reactor.binds, [("127.1.0.0", 0), ("127.1.0.1", 0), None])


class InProcessTests(unittest.TestCase):
    """keyxbench.inproc, the servers' side that bench_instructions.py counts."""

    def setUp(self):
        from keyxbench import inproc

        self.inproc = inproc
        self.messages = inproc.client_messages(project.named_group("ffdhe2048"))

    def ours(self):
        from twisted.internet.task import Clock
        from twisted.logger import globalLogPublisher

        directory = self.mktemp()
        os.mkdir(directory)
        lines = []

        def observer(event):
            if event.get("log_namespace") == "twisted_keyx.dh.protocol.DHServerFactory":
                lines.append(event)

        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        return self.inproc.ours_factory("ffdhe2048", Clock(), directory), lines, directory

    def test_ours_logs_every_handshake_only_from_many_sources(self):
        factory, lines, directory = self.ours()
        self.inproc.Handshakes(factory, self.messages).run(15)
        # One source: its first 10 lines, then they are counted (limits.PeerLines).
        self.assertEqual(len(lines), 10)
        self.inproc.Handshakes(factory, self.messages, sources=20).run(15)
        self.assertEqual(len(lines), 25)
        # The daemon's files, in a folder of this daemon's own under directory.
        [own] = os.listdir(directory)
        self.assertTrue(os.path.exists(os.path.join(directory, own, "keyx-host-key")))

    def test_naive_logs_every_handshake(self):
        import warnings

        from cryptography.utils import CryptographyDeprecationWarning
        from twisted.logger import Logger

        events = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            factory = self.inproc.naive_factory("ffdhe2048", Logger(observer=events.append))
            self.inproc.Handshakes(factory, self.messages).run(3)
        self.assertEqual([e["peer"] for e in events], ["127.0.0.1"] * 3)

    def flat(self):
        from twisted.internet.address import IPv4Address
        from twisted.internet.testing import StringTransport
        from twisted.logger import Logger

        events = []
        factory = self.inproc.flat_factory("ffdhe2048", Logger(observer=events.append))
        protocol = factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "192.0.2.7", 4242))
        protocol.makeConnection(transport)
        return protocol, transport, events

    def test_flat_is_ours_on_the_wire(self):
        # The library's client finishes a handshake with it, and the line is
        # the daemon's, with the session key the client derived.
        from twisted.logger import formatEvent

        from twisted_keyx.dh.handshake import DHClientHandshake
        from twisted_keyx.core.transcript import session_key_fingerprint

        protocol, transport, events = self.flat()
        client = DHClientHandshake()
        message = client.start()
        while message is not None:
            protocol.dataReceived(frame(message))
            [reply] = unframe(transport.value())
            transport.clear()
            message = client.receive(reply)
        self.assertTrue(client.finished)
        self.assertTrue(transport.disconnecting)
        [event] = events
        self.assertEqual(formatEvent(event), "DH handshake with 192.0.2.7:4242 finished "
                         f"(ffdhe2048); session key fingerprint "
                         f"{session_key_fingerprint(client.result.session_key)}")

    def test_flat_refuses_as_ours_does(self):
        from keyxbench import flat

        group = project.named_group("ffdhe2048")
        bad_key = group.public_key_pem(group.generate_private_key()).replace(b"A", b"B", 1)
        for sent, reply in [
            ([b"Params?"], flat.UNEXPECTED),
            ([b"Hello", b"Hello"], flat.UNEXPECTED),
            ([b"Hello", b"Params?", messages.CLIENT_KEY_PREFIX + b"nonsense"], flat.INVALID_KEY),
            ([b"Hello", b"Params?", messages.CLIENT_KEY_PREFIX + bad_key], flat.INVALID_KEY),
        ]:
            protocol, transport, events = self.flat()
            for message in sent:
                protocol.dataReceived(frame(message))
            self.assertEqual(unframe(transport.value())[-1], reply, sent)
            self.assertTrue(transport.disconnecting)
            self.assertEqual(events, [])

    def test_interleaved_cpu_takes_the_servers_in_turn(self):
        calls = []

        class Runs:
            def __init__(self, name):
                self.name = name

            def run(self, count):
                calls.append((self.name, count))

        times = self.inproc.interleaved_cpu({"a": Runs("a"), "b": Runs("b")}, 3, 7)
        self.assertEqual(calls, [("a", 7), ("b", 7)] * 3)
        self.assertEqual({name: len(values) for name, values in times.items()}, {"a": 3, "b": 3})

    def test_bench_inproc_prints_each_server_and_its_ratio(self):
        import bench_inproc

        # Not twistd's observer in this process: trial keeps its own log.
        self.patch(self.inproc, "start_logging", lambda path: None)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            bench_inproc.main(["--batches", "2", "--size", "3", "--core", "-1",
                               "--sources", "20"])
        text = out.getvalue()
        self.assertIn("from 20 sources; 2 batches of 3 each", text)
        for name in ("ours", "naive", "flat"):
            self.assertRegex(text, rf"\n  {name} +median \d+\.\d{{3}} ms")
        self.assertRegex(text, r"ours / naive: \d+\.\d{3}")
        self.assertRegex(text, r"flat / naive: \d+\.\d{3}")
        with self.assertRaises(SystemExit) as caught:
            bench_inproc.main(["--servers", "ours,flat"])
        self.assertIn("--servers takes naive", str(caught.exception))

    def test_a_handshake_without_the_servers_key_is_an_error(self):
        factory, _, _ = self.ours()
        wrong = self.messages[:2] + [frame(b"Client public key:nonsense")]
        with self.assertRaises(RuntimeError) as caught:
            self.inproc.Handshakes(factory, wrong).run(1)
        self.assertIn("Invalid client public key", str(caught.exception))


class InstructionSplitTests(unittest.TestCase):
    """bench_instructions.py's reading of callgrind_annotate."""

    ANNOTATION = """\
--------------------------------------------------------------------------------
Ir
--------------------------------------------------------------------------------
1,000 (100.0%)  PROGRAM TOTALS
  600 (60.00%)  ???:bn_mul_mont [/v/site-packages/cryptography/hazmat/bindings/_rust.abi3.so]
  200 (20.00%)  /b/Python-3.11.7/Python/ceval.c:_PyEval_EvalFrameDefault [/p/libpython3.11.so.1.0]
   50 ( 5.00%)  /b/Python-3.11.7/Modules/gcmodule.c:visit_reachable
   40 ( 4.00%)  ./malloc/./malloc/malloc.c:_int_free [/usr/lib/x86_64-linux-gnu/libc.so.6]
   30 ( 3.00%)  ./malloc/./malloc/malloc.c:malloc
   20 ( 2.00%)  ???:__gmpn_hgcd2_jacobi [/v/gmpy2.libs/libgmp-a6f47472.so.10.5.0]
   10 ( 1.00%)  ./elf/./elf/dl-lookup.c:do_lookup_x [/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2]
"""

    def setUp(self):
        import bench_instructions

        self.bench = bench_instructions

    def test_split_by_where_the_code_is(self):
        found = self.bench.split(self.ANNOTATION)
        self.assertEqual(found, {
            "total": 950,
            "cryptography (its OpenSSL)": 600,
            "Python interpreter and C modules": 200,
            "Python's cyclic garbage collector": 50,
            "libc (malloc, memcpy...)": 70,
            "GMP (gmpy2)": 20,
            "other": 10,
        })

    def test_per_handshake_is_the_difference_over_the_extra_handshakes(self):
        low, high = {"total": 1000, "GMP (gmpy2)": 10}, {"total": 5000, "GMP (gmpy2)": 410}
        self.assertEqual(self.bench.per_handshake(low, high, (100, 300)),
                         {"total": 20.0, "GMP (gmpy2)": 2.0})

    def test_bad_counts_are_refused(self):
        for counts in ("100", "100,100", "a,b"):
            with self.assertRaises(SystemExit) as caught:
                self.bench.main(["--counts", counts])
            self.assertIsInstance(caught.exception.code, str)


class KEMFloorTests(unittest.TestCase):
    """The floors of a post-quantum group: what they run is the group's
    server side (one test that could not pass on a DH-only floor)."""

    def test_xwing_floors_run_the_kem(self):
        calls = []

        def counting(function, inputs, seconds):
            calls.append(len(inputs))
            for x in inputs:
                function(x)
            return 1.0

        self.patch(floor, "per_call", counting)
        self.assertEqual(floor.cryptography_floor("xwing", seconds=0), 1.0)
        self.assertEqual(floor.group_crypto("xwing", seconds=0), 1.0)
        self.assertEqual(calls, [16, 16])
