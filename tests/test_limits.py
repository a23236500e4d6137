"""Connection limits and timeouts (twisted_keyx.service.limits), on a fake clock."""

from twisted.internet import protocol
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger, formatEvent
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure
from twisted.trial import unittest

from twisted_keyx.opaque.protocol import OPAQUEServerFactory
from twisted_keyx.core import peers
from twisted_keyx.groups import ffdh
from twisted_keyx.core import lograte
from twisted_keyx.service import limits
from twisted_keyx.service import tap
from twisted_keyx.dh import messages
from twisted_keyx.dh.protocol import DHServerFactory
from twisted_keyx.dh.raw import RawDHServerFactory
from twisted_keyx.eke.protocol import EKEServerFactory

from .helpers import frame


def address(host="192.0.2.1", port=40000):
    return IPv4Address("TCP", host, port)


class LoggedPolicy:
    """A ConnectionPolicy on a fake clock whose log lines are kept in a list."""

    def __init__(self, test, **kwargs):
        self.clock = Clock()
        self.events = []
        self.policy = limits.ConnectionPolicy(limits.Limits(**kwargs), self.clock)
        self.policy.log = Logger(observer=self.events.append)
        test.addCleanup(self.policy.stopService)

    def lines(self):
        return [formatEvent(e) for e in self.events]


def connect(factory, addr):
    """Build a protocol for ``addr`` and connect it to a StringTransport."""
    proto = factory.buildProtocol(addr)
    transport = StringTransport(peerAddress=addr)
    proto.makeConnection(transport)
    return proto, transport


def close(proto):
    proto.connectionLost(Failure(ConnectionDone()))


class CountingFactory(protocol.Factory):
    """Counts the protocols it builds; they do nothing."""

    protocol = protocol.Protocol

    def __init__(self):
        self.built = 0

    def buildProtocol(self, addr):
        self.built += 1
        return super().buildProtocol(addr)


class ChatLike(Int32StringReceiver):
    """A session that goes on after its handshake: the first frame is the
    'handshake', then it echoes frames (what EKE's chat will do)."""

    def stringReceived(self, string):
        if string == b"handshake":
            limits.handshake_finished(self.transport)
        self.sendString(string)


class DHFixture:
    """A DH server factory behind a policy, with both log streams kept."""

    def __init__(self, test, **kwargs):
        self.logged = LoggedPolicy(test, **kwargs)
        self.clock = self.logged.clock
        self.policy = self.logged.policy
        self.dh = DHServerFactory(ffdh.named_group("ffdhe2048"))
        self.dh.log = Logger(observer=self.logged.events.append)
        self.factory = self.policy.wrap(self.dh)

    def lines(self):
        return self.logged.lines()


class HandshakeTimeoutTests(unittest.TestCase):
    def test_silent_client_is_cut_off_at_the_deadline(self):
        f = DHFixture(self, timeout=30)
        proto, transport = connect(f.factory, address())
        f.clock.advance(29.9)
        self.assertFalse(transport.disconnecting)
        f.clock.advance(0.2)
        self.assertTrue(transport.disconnected)  # aborted, not a graceful close
        close(proto)
        self.assertEqual(
            f.lines(),
            ["DH handshake with 192.0.2.1:40000 timed out after 30 s while awaiting Hello"],
        )
        self.assertEqual(f.clock.getDelayedCalls(), [])
        self.assertEqual((f.policy.open_connections, f.policy.per_ip), (0, {}))

    def test_trickling_bytes_do_not_move_the_deadline(self):
        f = DHFixture(self, timeout=30)
        proto, transport = connect(f.factory, address())
        for byte in frame(messages.HELLO) + frame(messages.PARAMS_REQUEST):
            f.clock.advance(1)
            proto.dataReceived(bytes([byte]))
        self.assertIn(b"Hey there!", transport.value())
        self.assertIn(b"BEGIN DH PARAMETERS", transport.value())
        f.clock.advance(30 - f.clock.seconds() - 0.01)
        self.assertFalse(transport.disconnected)
        f.clock.advance(0.02)
        self.assertTrue(transport.disconnected)
        close(proto)
        self.assertEqual(
            f.lines(),
            ["DH handshake with 192.0.2.1:40000 timed out after 30 s "
             "while awaiting the client's public key"],
        )

    def test_finished_handshake_leaves_no_timer(self):
        f = DHFixture(self, timeout=30)
        proto, transport = connect(f.factory, address())
        client_key = ffdh.named_group("ffdhe2048").generate_private_key()
        pem = ffdh.named_group("ffdhe2048").public_key_pem(client_key)
        proto.dataReceived(
            frame(messages.HELLO) + frame(messages.PARAMS_REQUEST)
            + frame(messages.CLIENT_KEY_PREFIX + pem)
        )
        self.assertTrue(transport.disconnecting)
        close(proto)
        self.assertEqual(f.clock.getDelayedCalls(), [])
        self.assertEqual(len(f.lines()), 1)
        self.assertIn("finished (ffdhe2048)", f.lines()[0])

    def test_peer_that_never_reads_is_aborted_without_a_second_log_line(self):
        # The handshake succeeded and the server closed gracefully, but the
        # peer does not read: the close waits, the deadline still aborts.
        f = DHFixture(self, timeout=30)
        proto, transport = connect(f.factory, address())
        pem = ffdh.named_group("ffdhe2048").public_key_pem(
            ffdh.named_group("ffdhe2048").generate_private_key()
        )
        proto.dataReceived(
            frame(messages.HELLO) + frame(messages.PARAMS_REQUEST)
            + frame(messages.CLIENT_KEY_PREFIX + pem)
        )
        self.assertFalse(transport.disconnected)
        f.clock.advance(30)
        self.assertTrue(transport.disconnected)
        close(proto)
        self.assertEqual(len(f.lines()), 1)
        self.assertIn("finished", f.lines()[0])

    def test_zero_means_no_deadline(self):
        f = DHFixture(self, timeout=0)
        proto, transport = connect(f.factory, address())
        self.assertEqual(f.clock.getDelayedCalls(), [])
        f.clock.advance(10 ** 6)
        self.assertFalse(transport.disconnecting)
        close(proto)
        self.assertEqual(f.lines(), ["DH handshake with 192.0.2.1:40000 abandoned by the "
                                     "peer while awaiting Hello"])

    def test_protocol_without_hook_gets_the_generic_line(self):
        logged = LoggedPolicy(self, timeout=5)
        factory = logged.policy.wrap(protocol.Factory.forProtocol(protocol.Protocol))
        proto, transport = connect(factory, address())
        logged.clock.advance(5)
        self.assertTrue(transport.disconnected)
        close(proto)
        self.assertEqual(logged.lines(), ["192.0.2.1:40000: handshake timed out after 5 s; closing"])


class IdleTimeoutTests(unittest.TestCase):
    def setUp(self):
        self.logged = LoggedPolicy(self, timeout=30, idle_timeout=60)
        factory = self.logged.policy.wrap(protocol.Factory.forProtocol(ChatLike))
        self.proto, self.transport = connect(factory, address())
        self.clock = self.logged.clock

    def test_deadline_gives_way_to_idle_timer(self):
        self.clock.advance(20)
        self.proto.dataReceived(frame(b"handshake"))
        self.clock.advance(30)  # past the handshake deadline: no longer applies
        self.assertFalse(self.transport.disconnected)
        self.clock.advance(30)  # 60 s of silence since the last data
        self.assertTrue(self.transport.disconnected)
        close(self.proto)
        self.assertEqual(self.logged.lines(),
                         ["192.0.2.1:40000: idle session timed out after 60 s; closing"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_data_resets_the_idle_timer(self):
        self.proto.dataReceived(frame(b"handshake"))
        for _ in range(5):
            self.clock.advance(50)
            self.proto.dataReceived(frame(b"still here"))
        self.assertFalse(self.transport.disconnected)
        self.clock.advance(59)
        self.assertFalse(self.transport.disconnected)
        self.clock.advance(1)
        self.assertTrue(self.transport.disconnected)
        close(self.proto)

    def test_handshake_not_finished_still_has_its_deadline(self):
        self.proto.dataReceived(frame(b"not yet"))
        self.clock.advance(30)
        self.assertTrue(self.transport.disconnected)
        close(self.proto)
        self.assertEqual(self.logged.lines(),
                         ["192.0.2.1:40000: handshake timed out after 30 s; closing"])


class ConnectionLimitTests(unittest.TestCase):
    def test_total_limit_refuses_at_once_and_logs_once_per_burst(self):
        logged = LoggedPolicy(self, max_connections=3, max_per_ip=0, timeout=0)
        inner = CountingFactory()
        factory = logged.policy.wrap(inner)
        open_ = [connect(factory, address(port=1000 + i)) for i in range(3)]
        refused = [connect(factory, address(host=f"192.0.2.{i}")) for i in range(2, 12)]
        self.assertEqual(inner.built, 3)
        self.assertTrue(all(t.disconnected for _, t in refused))
        self.assertFalse(any(t.disconnecting for _, t in open_))
        self.assertEqual(
            logged.lines(),
            ["Refusing new connections: 3 connections open (first refused: 192.0.2.2:40000)"],
        )
        # A slot frees: the next one is accepted.
        close(open_[0][0])
        proto, transport = connect(factory, address(port=2000))
        self.assertFalse(transport.disconnecting)
        self.assertEqual(inner.built, 4)
        logged.clock.advance(limits.BURST_QUIET)
        self.assertEqual(logged.lines()[1:], ["Refused 10 connection(s) over 0.0 s"])
        self.assertEqual(logged.clock.getDelayedCalls(), [])

    def test_burst_lasts_while_refusals_go_on(self):
        logged = LoggedPolicy(self, max_connections=1, max_per_ip=0, timeout=0)
        factory = logged.policy.wrap(CountingFactory())
        connect(factory, address())
        for _ in range(6):
            connect(factory, address(port=5))
            logged.clock.advance(limits.BURST_QUIET / 2)
        self.assertEqual(len(logged.lines()), 1)
        logged.clock.advance(limits.BURST_QUIET)
        self.assertEqual(logged.lines()[1], "Refused 6 connection(s) over 25.0 s")
        # A later burst is logged again.
        connect(factory, address(port=6))
        self.assertEqual(len(logged.lines()), 3)
        self.assertIn("Refusing new connections", logged.lines()[2])

    def test_per_ip_limit_spares_other_addresses(self):
        logged = LoggedPolicy(self, max_per_ip=2, timeout=0)
        inner = CountingFactory()
        factory = logged.policy.wrap(inner)
        mine = [connect(factory, address("198.51.100.7", 1 + i)) for i in range(2)]
        _, third = connect(factory, address("198.51.100.7", 3))
        _, other = connect(factory, address("203.0.113.9", 3))
        self.assertTrue(third.disconnected)
        self.assertFalse(other.disconnecting)
        self.assertEqual(inner.built, 3)
        self.assertEqual(logged.policy.per_ip, {"198.51.100.7": 2, "203.0.113.9": 1})
        self.assertEqual(
            logged.lines(),
            ["Refusing new connections: 2 connections open from 198.51.100.7 "
             "(first refused: 198.51.100.7:3)"],
        )
        close(mine[0][0])
        _, again = connect(factory, address("198.51.100.7", 4))
        self.assertFalse(again.disconnecting)
        logged.policy.stopService()
        self.assertEqual(logged.lines()[1], "Refused 1 connection(s) from 198.51.100.7 over 0.0 s")
        self.assertEqual(logged.clock.getDelayedCalls(), [])

    def test_ipv6_sources_are_grouped_by_64(self):
        logged = LoggedPolicy(self, max_per_ip=2, timeout=0)
        factory = logged.policy.wrap(CountingFactory())
        same = [connect(factory, IPv6Address("TCP", f"2001:db8:1:2::{i}", 5)) for i in (1, 2, 3)]
        _, other = connect(factory, IPv6Address("TCP", "2001:db8:1:3::1", 5))
        self.assertEqual([t.disconnected for _, t in same], [False, False, True])
        self.assertFalse(other.disconnecting)
        self.assertEqual(logged.policy.per_ip, {"2001:db8:1:2::/64": 2, "2001:db8:1:3::/64": 1})
        self.assertEqual(logged.lines(), [
            "Refusing new connections: 2 connections open from 2001:db8:1:2::/64 "
            "(first refused: [2001:db8:1:2::3]:5)"])
        for proto, _ in same[:2]:
            close(proto)
        self.assertEqual(logged.policy.per_ip, {"2001:db8:1:3::/64": 1})

    def test_prefix_lengths_are_configurable(self):
        """The review's case: eight loopback addresses, one source once
        IPv4 is grouped by /8."""
        logged = LoggedPolicy(self, max_per_ip=64, max_connections=500, ipv4_prefix=8,
                              ipv6_prefix=128, timeout=0)
        factory = logged.policy.wrap(CountingFactory())
        conns = [connect(factory, address(f"127.0.0.{1 + i % 8}", i)) for i in range(500)]
        self.assertEqual(sum(not t.disconnected for _, t in conns), 64)
        self.assertEqual(logged.policy.per_ip, {"127.0.0.0/8": 64})
        v6 = [connect(factory, IPv6Address("TCP", f"2001:db8::{i}", 5)) for i in (1, 2)]
        self.assertFalse(any(t.disconnecting for _, t in v6))
        self.assertEqual(logged.policy.per_ip["2001:db8::1"], 1)

    def test_ipv4_mapped_ipv6_counts_as_ipv4(self):
        logged = LoggedPolicy(self, max_per_ip=1, timeout=0)
        factory = logged.policy.wrap(CountingFactory())
        connect(factory, address("192.0.2.1"))
        _, mapped = connect(factory, IPv6Address("TCP", "::ffff:192.0.2.1", 5))
        self.assertTrue(mapped.disconnected)
        self.assertEqual(logged.policy.per_ip, {"192.0.2.1": 1})

    def test_no_source_holds_more_than_a_share_of_the_total(self):
        logged = LoggedPolicy(self, max_per_ip=64, max_connections=8, timeout=0)
        self.assertEqual(logged.policy.limits.per_source, 2)  # 8 * 1/4
        factory = logged.policy.wrap(CountingFactory())
        conns = [connect(factory, address("192.0.2.1", i)) for i in range(3)]
        self.assertEqual([t.disconnected for _, t in conns], [False, False, True])
        self.assertEqual(logged.lines(), [
            "Refusing new connections: 2 connections open from 192.0.2.1 "
            "(first refused: 192.0.2.1:2)"])
        self.assertEqual(limits.Limits(max_per_ip=64, max_connections=3).per_source, 1)
        self.assertEqual(limits.Limits(max_per_ip=64, max_connections=0).per_source, 64)
        self.assertEqual(limits.Limits(max_per_ip=0, max_connections=8).per_source, 0)

    def test_limits_are_shared_by_every_wrapped_factory(self):
        logged = LoggedPolicy(self, max_connections=2, max_per_ip=0)
        first = logged.policy.wrap(CountingFactory())
        second = logged.policy.wrap(CountingFactory())
        connect(first, address())
        connect(second, address())
        _, refused = connect(second, address())
        self.assertTrue(refused.disconnected)

    def test_zero_means_no_limit(self):
        logged = LoggedPolicy(self, max_connections=0, max_per_ip=0, timeout=0)
        factory = logged.policy.wrap(CountingFactory())
        conns = [connect(factory, address()) for _ in range(500)]
        self.assertFalse(any(t.disconnecting for _, t in conns))
        self.assertEqual(logged.policy.open_connections, 500)
        self.assertEqual(logged.lines(), [])
        for proto, _ in conns:
            close(proto)
        self.assertEqual((logged.policy.open_connections, logged.policy.per_ip), (0, {}))

    def test_unix_peers_count_only_towards_the_total(self):
        logged = LoggedPolicy(self, max_connections=3, max_per_ip=1)
        factory = logged.policy.wrap(CountingFactory())
        conns = [connect(factory, UNIXAddress(None)) for _ in range(4)]
        self.assertEqual([t.disconnected for _, t in conns], [False, False, False, True])
        self.assertEqual(logged.policy.per_ip, {})

    def test_inner_factory_declining_does_not_leak_a_slot(self):
        logged = LoggedPolicy(self, max_connections=1)

        class Declining(protocol.Factory):
            def buildProtocol(self, addr):
                return None

        factory = logged.policy.wrap(Declining())
        self.assertIsNone(factory.buildProtocol(address()))
        self.assertEqual((logged.policy.open_connections, logged.policy.per_ip), (0, {}))


class SourceGroupTests(unittest.TestCase):
    """Limits.source_of: which peers count together."""

    def setUp(self):
        limits._source_group.cache_clear()
        self.addCleanup(limits._source_group.cache_clear)

    def test_groups(self):
        self.assertEqual(limits.Limits().source_of("192.0.2.1"), "192.0.2.1")
        self.assertEqual(limits.Limits().source_of("::ffff:192.0.2.1"), "192.0.2.1")
        self.assertEqual(limits.Limits().source_of("2001:db8::1"), "2001:db8::/64")
        self.assertEqual(limits.Limits(ipv4_prefix=24).source_of("192.0.2.1"), "192.0.2.0/24")
        self.assertEqual(limits.Limits().source_of("not an address"), "not an address")

    def test_an_ipv4_address_at_full_length_is_not_parsed(self):
        # Peers from more addresses than the cache holds miss it at every
        # connection: each must not cost a parse (bench_instructions.py).
        def parse(host):
            parsed.append(host)
            return real(host)

        parsed, real = [], peers.ipaddress.ip_address
        self.patch(peers.ipaddress, "ip_address", parse)
        for n in range(limits.SOURCE_CACHE_SIZE + 10):
            host = f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}"
            self.assertEqual(limits.Limits().source_of(host), host)
        self.assertEqual(parsed, [])
        # Not as the system writes it, or in a shorter prefix: parsed.
        self.assertEqual(limits.Limits(ipv4_prefix=24).source_of("192.0.2.1"), "192.0.2.0/24")
        self.assertEqual(limits.Limits().source_of("::ffff:192.0.2.1"), "192.0.2.1")
        self.assertEqual(parsed, ["192.0.2.1", "::ffff:192.0.2.1"])


class OptionsTests(unittest.TestCase):
    def test_defaults(self):
        options = tap.Options()
        options.parseOptions(["--dh", "tcp:0:interface=127.0.0.1"])
        self.assertEqual(options.config.limits, limits.Limits())
        self.assertEqual(
            (limits.Limits().timeout, limits.Limits().max_per_ip), (30.0, 64)
        )

    def test_values_parse(self):
        options = tap.Options()
        options.parseOptions([
            "--dh", "tcp:0:interface=127.0.0.1", "--timeout", "2.5", "--idle-timeout", "0",
            "--max-per-ip", "0", "--max-connections", "7",
        ])
        self.assertEqual(
            options.config.limits,
            limits.Limits(timeout=2.5, idle_timeout=0, max_per_ip=0, max_connections=7),
        )

    def test_prefix_options(self):
        options = tap.Options()
        options.parseOptions(["--dh", "tcp:0:interface=127.0.0.1", "--ipv4-prefix", "24",
                              "--ipv6-prefix", "48"])
        self.assertEqual((options.config.limits.ipv4_prefix, options.config.limits.ipv6_prefix), (24, 48))
        self.assertEqual((limits.Limits().ipv4_prefix, limits.Limits().ipv6_prefix), (32, 64))
        from twisted.python.usage import UsageError

        for argv, message in [
            (["--ipv4-prefix", "33"], "--ipv4-prefix must be 0 to 32"),
            (["--ipv6-prefix", "-1"], "--ipv6-prefix must be 0 to 128"),
        ]:
            with self.assertRaises(UsageError) as caught:
                tap.Options().parseOptions(argv)
            self.assertEqual(str(caught.exception), message)

    def test_negative_and_junk_are_usage_errors(self):
        from twisted.python.usage import UsageError

        for argv in (["--timeout", "-1"], ["--max-per-ip", "-3"], ["--max-connections", "x"]):
            with self.assertRaises(UsageError):
                tap.Options().parseOptions(argv)

    def test_every_endpoint_is_guarded(self):
        options = tap.Options()
        options.parseOptions(["--dh", "tcp:0:interface=127.0.0.1", "--dh",
                              "tcp:0:interface=127.0.0.1", "--dh-raw", "tcp:0:interface=127.0.0.1",
                              "--eke", "tcp:0:interface=127.0.0.1", "--max-connections", "9"])
        top = tap.makeService(options, reactor=MemoryReactorClock())
        policies = [s for s in top if isinstance(s, limits.ConnectionPolicy)]
        self.assertEqual(len(policies), 1)
        self.assertEqual(policies[0].limits.max_connections, 9)
        listeners = [s for s in top if not isinstance(s, limits.ConnectionPolicy)
                     and s is not top.guess_throttle]
        for listener in listeners:
            self.assertIsInstance(listener.factory, limits.GuardedFactory)
            self.assertIs(listener.factory.policy, policies[0])
        self.assertEqual(
            [type(listener.factory.wrappedFactory) for listener in listeners],
            [DHServerFactory, DHServerFactory, RawDHServerFactory, EKEServerFactory,
             OPAQUEServerFactory],
        )


class OpenFileLimitTests(unittest.TestCase):
    def test_never_lowers_and_never_passes_the_hard_limit(self):
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.assertEqual(limits.raise_open_file_limit(1), soft)
        raised = limits.raise_open_file_limit(soft + 10)
        self.assertGreaterEqual(raised, soft)
        if hard != resource.RLIM_INFINITY:
            self.assertLessEqual(raised, hard)
        self.assertEqual(resource.getrlimit(resource.RLIMIT_NOFILE)[0], raised)


def self_signed_tls_options():
    """Server TLS options with a throwaway EC certificate."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    from twisted.internet import ssl

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return ssl.CertificateOptions(privateKey=key, certificate=cert)


class TLSEndpointTests(unittest.TestCase):
    """ssl: endpoints wrap our factory in TLS, which cannot take None from
    buildProtocol: a refused connection must still close cleanly there."""

    def test_refused_connection_under_tls_is_aborted(self):
        from twisted.protocols.tls import TLSMemoryBIOFactory

        logged = LoggedPolicy(self, max_connections=1, timeout=0)
        tls = TLSMemoryBIOFactory(self_signed_tls_options(), False,
                                  logged.policy.wrap(CountingFactory()))
        first, first_transport = connect(tls, address())
        second, second_transport = connect(tls, address(port=2))
        self.assertFalse(first_transport.disconnecting)
        self.assertTrue(second_transport.disconnected)
        self.assertEqual(logged.policy.open_connections, 1)


class EKETimeoutTests(unittest.TestCase):
    """The EKE server behind the guard: the handshake has its deadline, the
    chat its idle timeout, each logged once in EKE's words."""

    def setUp(self):
        from tests.helpers import Users, make_user

        self.logged = LoggedPolicy(self, timeout=30, idle_timeout=60)
        self.eke = EKEServerFactory(Users(alice=make_user("alice")))
        self.eke.log = Logger(observer=self.logged.events.append)
        self.proto, self.transport = connect(self.logged.policy.wrap(self.eke), address())
        self.clock = self.logged.clock

    def exchange(self, line):
        self.proto.dataReceived(line + b"\n")
        out = self.transport.value()
        self.transport.clear()
        return out.rstrip(b"\n")

    def authenticate(self):
        from twisted_keyx.chat.machine import ClientChat
        from twisted_keyx.eke.handshake import EKEClientHandshake

        from tests.helpers import PASSWORD, TEST_LIMITS, rsa_key

        client = EKEClientHandshake("alice", PASSWORD, kdf_limits=TEST_LIMITS,
                                    rsa_key_factory=rsa_key)
        line = client.start()
        while line is not None:
            line = client.receive(self.exchange(line))
        return ClientChat(client.result)

    def test_handshake_deadline(self):
        self.assertEqual(self.exchange(b"alice")[:4], b"yes ")
        self.clock.advance(29)
        self.assertFalse(self.transport.disconnected)
        self.clock.advance(1)
        self.assertTrue(self.transport.disconnected)
        close(self.proto)
        self.assertEqual(self.logged.lines(), [
            "EKE handshake with 192.0.2.1:40000 timed out after 30 s "
            "while awaiting E_pw(pk) (step 3)"])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_chat_idle_timeout_and_its_reset(self):
        self.clock.advance(20)
        chat = self.authenticate()
        self.clock.advance(59)  # long past the handshake deadline
        self.assertFalse(self.transport.disconnected)
        self.assertEqual(chat.receive(self.exchange(chat.say("still here"))), "receive still here")
        self.clock.advance(59)
        self.assertFalse(self.transport.disconnected)
        self.clock.advance(1)
        self.assertTrue(self.transport.disconnected)
        close(self.proto)
        lines = self.logged.lines()
        self.assertIn("authenticated", lines[0])
        self.assertEqual(lines[1:], [
            "User alice say: still here",
            "EKE: chat with user alice from 192.0.2.1:40000 silent for 60 s, closing",
        ])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class PeerLinesTests(unittest.TestCase):
    """What strangers make the daemon log is bounded per source
    (limits.PeerLines): a burst's first PEER_LINES lines, then a summary
    every BURST_QUIET seconds."""

    def rejected(self, f, host, port=40000):
        proto, transport = connect(f.factory, address(host, port))
        proto.dataReceived(frame(b"garbage"))
        self.assertTrue(transport.disconnecting)
        close(proto)

    def test_a_failing_source_gets_a_bounded_number_of_lines(self):
        f = DHFixture(self, timeout=30)
        for i in range(200):
            self.rejected(f, "192.0.2.9", 1000 + i)
        lines = f.lines()
        self.assertEqual(len(lines), limits.PEER_LINES + 1)
        self.assertTrue(all("192.0.2.9" in line and "rejected" in line
                            for line in lines[:limits.PEER_LINES]))
        self.assertEqual(lines[-1], "Many connections from 192.0.2.9: their lines are now "
                                    "summarised, one every 10 s")
        # Another source still gets its own line, at once.
        self.rejected(f, "192.0.2.10")
        self.assertEqual(len(f.lines()), limits.PEER_LINES + 2)
        self.assertIn("192.0.2.10:40000 rejected", f.lines()[-1])
        f.clock.advance(limits.BURST_QUIET)
        self.assertEqual(f.lines()[limits.PEER_LINES + 2:], [
            f"Connections from 192.0.2.9: {200 - limits.PEER_LINES} more line(s) "
            "not logged over 0.0 s (190 rejected)"])
        self.assertEqual(f.clock.getDelayedCalls(), [])
        # Quiet for BURST_QUIET: the next one is logged again.
        self.rejected(f, "192.0.2.9")
        self.assertIn("192.0.2.9:40000 rejected", f.lines()[-1])

    def test_summaries_while_a_burst_lasts_say_the_kinds(self):
        f = DHFixture(self, timeout=5)
        for second in range(30):
            self.rejected(f, "2001:db8::1", second)
            proto, transport = connect(f.factory, IPv6Address("TCP", "2001:db8::2", second))
            close(proto)  # abandoned
            f.clock.advance(1)
        summaries = [line for line in f.lines() if line.startswith("Connections from")]
        # One every 10 s while the burst lasts, the source a /64.
        self.assertEqual(summaries, [
            "Connections from 2001:db8::/64: 10 more line(s) not logged over 10.0 s "
            "(5 abandoned, 5 rejected)",
        ] + 2 * [
            "Connections from 2001:db8::/64: 20 more line(s) not logged over 10.0 s "
            "(10 abandoned, 10 rejected)",
        ])
        self.assertEqual(len(f.lines()), limits.PEER_LINES + 1 + 3)
        self.rejected(f, "2001:db8::1")
        f.policy.stopService()  # the daemon stops: what is counted is said
        self.assertEqual(f.lines()[-1], "Connections from 2001:db8::/64: 1 more line(s) "
                                        "not logged over 0.0 s (1 rejected)")
        self.assertEqual(f.clock.getDelayedCalls(), [])

    def test_a_logged_in_users_lines_are_not_counted(self):
        from tests.helpers import Users, make_user

        logged = LoggedPolicy(self, timeout=30)
        eke = EKEServerFactory(Users(alice=make_user("alice")))
        eke.log = Logger(observer=logged.events.append)
        factory = logged.policy.wrap(eke)
        for port in range(3 * limits.PEER_LINES):  # a flood of bad step 1 lines
            proto, transport = connect(factory, address(port=port))
            proto.dataReceived(b"\xff\n")
            close(proto)
        self.assertEqual(len(logged.lines()), limits.PEER_LINES + 1)
        # The real user, from the same source, mid-burst.
        test = EKETimeoutTests("test_handshake_deadline")
        test.proto, test.transport = connect(factory, address(port=9999))
        chat = test.authenticate()
        test.exchange(chat.say("hello"))
        test.exchange(chat.quit())
        lines = logged.lines()[limits.PEER_LINES + 1:]
        self.assertEqual(len(lines), 3)
        self.assertIn("EKE: user alice from 192.0.2.1:9999 authenticated", lines[0])
        self.assertEqual(lines[1:], ["User alice say: hello",
                                     "EKE: user alice from 192.0.2.1:9999 quit"])

    def test_bursts_are_bounded_in_number(self):
        events = []
        bursts = lograte.Bursts(Clock(), lambda key, burst, final: events.append(
            (key, burst.counted)), allowance=1, max_keys=3)
        for host in ("a", "b", "c", "d"):
            self.assertTrue(bursts.event(host))
        # d, e and f come beyond max_keys: one burst for them all, under None.
        self.assertFalse(bursts.event("e"))
        self.assertFalse(bursts.event("f"))
        self.assertEqual(len(bursts), 3 + 1)
        bursts.stop()
        self.assertEqual(events, [(None, 2)])

    def test_a_full_table_is_not_scanned_for_every_new_source(self):
        # Many sources within the quiet time: the table is full of bursts
        # still open, and a scan finds nothing to forget.  It is scanned
        # again only after PRUNE_PAUSE, not once per connection.
        clock = Clock()
        bursts = lograte.Bursts(clock, lambda *args: None, allowance=1, max_keys=3)
        scans = []
        real = bursts._prune
        self.patch(bursts, "_prune", lambda now: scans.append(now) or real(now))
        for host in ("a", "b", "c"):
            bursts.event(host)
        self.assertTrue(bursts.event("d"))  # the first under None
        for host in ("e", "f", "g"):
            self.assertFalse(bursts.event(host))  # counted together, under None
        self.assertEqual(scans, [0])
        clock.advance(lograte.PRUNE_PAUSE)
        bursts.event("h")
        self.assertEqual(scans, [0, lograte.PRUNE_PAUSE])
        # Once the old ones are quiet, a scan forgets them, and new sources
        # have bursts of their own again.
        clock.advance(limits.BURST_QUIET)
        self.assertTrue(bursts.event("i"))
        self.assertTrue(bursts.event("j"))
        self.assertEqual(len(scans), 3)
