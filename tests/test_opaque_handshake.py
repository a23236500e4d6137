"""The OPAQUE wire machines (twisted_keyx.opaque.handshake) and their
factories on the session adapter (twisted_keyx.opaque.protocol)."""

import base64
import threading

from hypothesis import given, settings, strategies as st
from twisted.internet import defer, endpoints, reactor
from twisted.internet.testing import StringTransport
from twisted.test import iosim
from twisted.trial import unittest

from tests.opaque_helpers import CHEAP_LIMITS, CountingRandom, cheap_setup
from twisted_keyx.chat.records import derive_chat_keys
from twisted_keyx.core.machine import HandshakeFailed
from twisted_keyx.opaque import handshake as hs, ksf
from twisted_keyx.opaque.protocol import OPAQUEClientFactory, OPAQUEServerFactory
from twisted_keyx.opaque.scheme import OpaqueUser, new_user

PASSWORD = "correct horse"
SETUP = cheap_setup()


class Users(dict):
    """A user store: lookup(name, scheme) as UserFile's."""

    def lookup(self, name, scheme="eke"):
        record = self.get(name)
        return record if record is not None and record.scheme == scheme else None


ALICE = new_user("alice", PASSWORD, SETUP)


def users():
    return Users(alice=ALICE)


def machines(password=PASSWORD, user="alice", seed=1):
    store = users()
    server = hs.OPAQUEServerHandshake(SETUP, lambda n: store.lookup(n, "opaque"),
                                      rng=CountingRandom(seed))
    client = hs.OPAQUEClientHandshake(user, password, ksf_limits=CHEAP_LIMITS,
                                      rng=CountingRandom(seed + 100))
    return server, client


def run(server, client):
    """The lines in order: (1), (2), (3), (4)."""
    lines = [client.start()]
    lines.append(server.receive(lines[0]))
    lines.append(client.receive(lines[1]))
    try:
        lines.append(server.receive(lines[2]))
    except HandshakeFailed as failure:
        lines.append(failure.reply)
        try:
            client.receive(failure.reply)
        except HandshakeFailed:
            pass
    else:
        client.receive(lines[3])
    return lines


class MachineTests(unittest.TestCase):
    def test_login(self):
        server, client = machines()
        lines = run(server, client)
        self.assertEqual([len(line) for line in lines], [128 + 1 + 5, 444, 88, 2])
        self.assertTrue(lines[0].endswith(b" alice"))
        self.assertEqual(lines[3], b"ok")
        self.assertTrue(server.finished and client.finished)
        self.assertEqual(server.result.session_key, client.result.session_key)
        self.assertEqual(server.result.transcript_hash, client.result.transcript_hash)
        self.assertEqual(server.result.chat_keys, client.result.chat_keys)
        self.assertEqual(client.result.server_public_key, SETUP.server_public_key)
        self.assertEqual(
            client.result.chat_keys,
            derive_chat_keys(client.result.session_key, client.result.transcript_hash,
                             b"twisted-keyx opaque chat"))

    def test_exact_bytes(self):
        """Injected randomness: the same run gives the same bytes."""
        first, second = run(*machines()), run(*machines())
        self.assertEqual(first, second)
        self.assertNotEqual(first, run(*machines(seed=2)))

    def test_wrong_password(self):
        server, client = machines(password="wrong")
        lines = run(server, client)
        self.assertEqual(lines[3], b"authentication failed")
        self.assertTrue(server.failed and client.failed)

    def test_unknown_user_looks_like_wrong_password(self):
        wrong = run(*machines(password="wrong"))
        unknown = run(*machines(user="mallory"))
        self.assertEqual([len(x) for x in wrong[1:]], [len(x) for x in unknown[1:]])
        self.assertEqual(wrong[3], unknown[3])

    def test_eke_user_is_unknown(self):
        from tests.helpers import make_user

        store = Users(alice=make_user("alice"))
        server = hs.OPAQUEServerHandshake(SETUP, lambda n: store.lookup(n, "opaque"))
        client = hs.OPAQUEClientHandshake("alice", PASSWORD, ksf_limits=CHEAP_LIMITS)
        lines = run(server, client)
        self.assertEqual(lines[3], b"authentication failed")
        self.assertFalse(server.known_user)

    def test_cost_outside_limits_refused_by_client(self):
        server, _ = machines()
        client = hs.OPAQUEClientHandshake("alice", PASSWORD)  # default limits: too cheap
        ke2 = server.receive(client.start())
        self.assertRaises(hs.UnexpectedReply, client.receive, ke2)

    def test_limits(self):
        server, client = machines()
        self.assertEqual(server.max_message_length, 128 + 1 + 64)
        line = client.start()
        self.assertEqual(client.max_message_length, 444)
        server.receive(line)
        self.assertEqual(server.max_message_length, 88)


def mangle(data, line):
    kind, position, value = data
    if kind == "truncate":
        return line[: position % max(len(line), 1)]
    if kind == "extend":
        return line + value
    if not line:
        return value
    index = position % len(line)
    changed = bytes([line[index] ^ (value[0] | 1 if value else 1)])
    return line[:index] + changed + line[index + 1 :]


mangling = st.tuples(st.sampled_from(["truncate", "extend", "flip"]),
                     st.integers(0, 1000), st.binary(min_size=1, max_size=40))


class HostileTests(unittest.TestCase):
    @settings(max_examples=60, deadline=None)
    @given(step=st.sampled_from([0, 2]), how=mangling)
    def test_mangled_client_line_generic_failure(self, step, how):
        server, client = machines()
        line = client.start()
        if step == 2:
            line = client.receive(server.receive(line))
        bad = mangle(how, line)
        try:
            reply = server.receive(bad)
        except hs.AuthenticationFailed as failure:
            self.assertEqual(failure.reply, b"authentication failed")
            self.assertTrue(server.failed)
        else:
            # Only a flip inside the name can still parse (another user).
            self.assertEqual(step, 0)
            self.assertEqual(len(reply), 444)

    @settings(max_examples=40, deadline=None)
    @given(how=mangling)
    def test_mangled_ke2_never_authenticates(self, how):
        server, client = machines()
        ke2 = mangle(how, server.receive(client.start()))
        try:
            ke3 = client.receive(ke2)
        except HandshakeFailed:
            return
        self.assertRaises(hs.AuthenticationFailed, server.receive, ke3)


class MalformedKE2Tests(unittest.TestCase):
    def test_invalid_element_is_a_bad_response(self):
        """A KE2 whose evaluated element or key share is not a ristretto255
        point is a malformed message, refused as one (docs/protocols.rst,
        OPAQUE: any element that is not a canonical, non-identity encoding);
        it was taken for a wrong password, the client answering a random KE3
        and the user told to check a password that was right."""
        import base64
        header = CHEAP_LIMITS.header_size
        for offset in (header, header + 32 + 32 + 128 + 32):  # evaluated, key share
            for element in (bytes(32), b"\xff" * 32):
                server, client = machines()
                ke2 = bytearray(base64.b64decode(server.receive(client.start())))
                ke2[offset:offset + 32] = element
                with self.assertRaises(hs.UnexpectedReply) as caught:
                    client.receive(base64.b64encode(bytes(ke2)))
                self.assertTrue(caught.exception.reason.startswith("(2): "),
                                caught.exception.reason)
                self.assertTrue(client.failed)


class LoopbackTests(unittest.TestCase):
    def connect(self, user="alice", password=PASSWORD, failures=None):
        replies = []
        server_factory = OPAQUEServerFactory(users(), SETUP,
                                             login_failed=lambda u, p: failures.append((u, p))
                                             if failures is not None else None)
        client_factory = OPAQUEClientFactory(user, password, reply_received=replies.append,
                                             ksf_limits=CHEAP_LIMITS, worker=None)
        server = server_factory.buildProtocol(None)
        client = client_factory.buildProtocol(None)
        pump = iosim.connect(server, iosim.makeFakeServer(server),
                             client, iosim.makeFakeClient(client))
        return server, client, pump, replies

    @defer.inlineCallbacks
    def test_the_factorys_client_runs_argon2id_in_a_thread(self):
        threads = []
        real = ksf.Argon2idParameters.stretch

        def recorded(parameters, data):
            threads.append(threading.current_thread())
            return real(parameters, data)

        self.patch(ksf.Argon2idParameters, "stretch", recorded)
        port = reactor.listenTCP(0, OPAQUEServerFactory(users(), SETUP), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = OPAQUEClientFactory("alice", PASSWORD, ksf_limits=CHEAP_LIMITS).buildProtocol(None)
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        yield endpoints.connectProtocol(endpoint, client)
        result = yield client.authenticated
        client.quit()
        yield client.finished
        yield client.disconnected
        self.assertEqual(result.user, "alice")
        self.assertEqual(len(threads), 1)
        self.assertIsNot(threads[0], threading.main_thread())

    def test_login_chat_quit(self):
        server, client, pump, replies = self.connect()
        result = self.successResultOf(client.authenticated)
        self.assertEqual(result.user, "alice")
        client.say("hello")
        pump.flush()
        self.assertEqual(replies, ["receive hello"])
        client.quit()
        pump.flush()
        self.successResultOf(client.finished)
        self.successResultOf(client.disconnected)

    def test_wrong_password(self):
        failures = []
        server, client, pump, _ = self.connect(password="nope", failures=failures)
        self.failureResultOf(client.authenticated, hs.AuthenticationFailed)
        self.assertEqual([user for user, peer in failures], ["alice"])

    def test_unknown_user(self):
        failures = []
        server, client, pump, _ = self.connect(user="bob", failures=failures)
        self.failureResultOf(client.authenticated, hs.AuthenticationFailed)
        self.assertEqual([user for user, peer in failures], ["bob"])

    def test_unknown_user_indistinguishable_on_the_wire(self):
        def wire(user, password):
            server = OPAQUEServerFactory(users(), SETUP).buildProtocol(None)
            transport = StringTransport()
            server.makeConnection(transport)
            client = hs.OPAQUEClientHandshake(user, password, ksf_limits=CHEAP_LIMITS)
            server.dataReceived(client.start() + b"\n")
            ke2 = transport.value()
            transport.clear()
            server.dataReceived(client.receive(ke2[:-1]) + b"\n")
            return [len(ke2), transport.value()]

        self.assertEqual(wire("alice", "wrong"), wire("nobody", "wrong"))
        self.assertEqual(wire("alice", "wrong")[1], b"authentication failed\n")

    def test_garbage_gets_generic_reply(self):
        server = OPAQUEServerFactory(users(), SETUP).buildProtocol(None)
        transport = StringTransport()
        server.makeConnection(transport)
        server.dataReceived(b"x" * 500 + b"\n")
        self.assertEqual(transport.value(), b"authentication failed\n")
        self.assertTrue(transport.disconnecting)

    def test_record_types(self):
        self.assertIsInstance(users()["alice"], OpaqueUser)
        self.assertEqual(len(base64.b64decode(hs.first_line(bytes(96), "a")[:128])), 96)


class HostileServerTests(unittest.TestCase):
    """Whatever a client sends, the factory answers with the generic reply
    (or keeps reading an incomplete line), logs no traceback, and serves the
    next connection."""

    @settings(max_examples=40, deadline=None)
    @given(chunks=st.lists(st.binary(max_size=300), max_size=4))
    def test_garbage_then_a_good_login(self, chunks):
        from twisted.logger import capturedLogs, formatEvent

        factory = OPAQUEServerFactory(users(), SETUP)
        with capturedLogs() as events:
            server = factory.buildProtocol(None)
            transport = StringTransport()
            server.makeConnection(transport)
            for chunk in chunks:
                server.dataReceived(chunk)
            sent = transport.value()
            # Nothing, the generic reply, or (a valid KE1 by chance) a KE2 line.
            self.assertTrue(sent in (b"", b"authentication failed\n") or len(sent) == 445, sent)
            client, client_transport = (factory.buildProtocol(None), StringTransport())
            client.makeConnection(client_transport)
            machine = hs.OPAQUEClientHandshake("alice", PASSWORD, ksf_limits=CHEAP_LIMITS)
            client.dataReceived(machine.start() + b"\n")
            ke3 = machine.receive(client_transport.value()[:-1])
            client_transport.clear()
            client.dataReceived(ke3 + b"\n")
            self.assertEqual(client_transport.value(), b"ok\n")
        self.assertFalse([e for e in events if "log_failure" in e])
        self.assertFalse([formatEvent(e) for e in events if PASSWORD in formatEvent(e)])
