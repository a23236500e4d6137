"""The EKE protocols: on a StringTransport (every state and error path, exact
replies), then over real TCP on 127.0.0.1."""

import socket
import time
import base64
import threading

from twisted.internet import defer, endpoints, reactor, task
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport, StringTransportWithDisconnection
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial import unittest

from twisted_keyx.chat import records

from twisted_keyx.eke import crypto, messages
from twisted_keyx.chat.machine import ChatFailed
from twisted_keyx.chat.machine import ClientChat, ServerChat
from twisted_keyx.eke.handshake import (
    AuthenticationFailed,
    UnexpectedReply,
    EKEClientState,
    EKEClientHandshake,
    EKEServerHandshake,
    EKEServerState,
    UnknownUser,
)
from twisted_keyx.eke.protocol import (
    CLIENT_LINE_LIMITS,
    SERVER_LINE_LIMITS,
    EKEClientFactory,
    EKEClientProtocol,
    EKEServerFactory,
)
from twisted_keyx.service.userfile import DecoyUsers
from twisted_keyx.core.machine import ServerHungUp
from twisted_keyx.core.transcript import session_key_fingerprint

from tests.helpers import (
    PASSWORD,
    TEST_LIMITS,
    RecordingRandom,
    TrackingEKEServerFactory,
    Users,
    flip,
    log_text,
    make_user,
    rsa_key,
    take_lines as take,
)

USERS = Users(alice=make_user("alice"), bob=make_user("bob", password="bob's password"))
PEER = IPv4Address("TCP", "192.0.2.7", 4242)
FAILED = b"authentication failed\n"


def client_machine(password=PASSWORD, user="alice"):
    return EKEClientHandshake(user, password, kdf_limits=TEST_LIMITS, rsa_key_factory=rsa_key)


def connect(protocol, peer=PEER):
    transport = StringTransportWithDisconnection(peerAddress=peer)
    transport.protocol = protocol
    protocol.makeConnection(transport)
    return transport


def up_to_step_4(factory, password, peer=PEER):
    """An EKE login with ``password`` on a StringTransport, steps 1 and 3
    sent (step 4, where a guess is answered, is what comes next):
    ``(protocol, transport, client)``, the transport's step 2 cleared."""
    protocol = factory.buildProtocol(None)
    transport = connect(protocol, peer)
    client = client_machine(password)
    protocol.dataReceived(client.start() + b"\n")
    answer = transport.value()
    transport.clear()
    protocol.dataReceived(client.receive(answer[:-1]) + b"\n")
    return protocol, transport, client


def guess_over_tcp(port, password="wrong guess", source=None, timeout=30):
    """An EKE login with ``password`` to 127.0.0.1:``port`` up to the
    server's step 4 (where a guess is answered), from the address
    ``source`` if given: ``(started, answered, answer)``, the monotonic
    seconds when step 3 had gone and when step 4 came, and step 4's line."""
    client = client_machine(password)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                  source_address=None if source is None else (source, 0)) as s:
        stream = s.makefile("rwb")
        stream.write(client.start() + b"\n")
        stream.flush()
        step3 = client.receive(stream.readline()[:-1])
        stream.write(step3 + b"\n")
        stream.flush()
        started = time.monotonic()
        answer = stream.readline()
        answered = time.monotonic()
    return started, answered, answer


class ServerProtocolTests(unittest.TestCase):
    def setUp(self):
        self.factory = EKEServerFactory(USERS, random_bytes=RecordingRandom(b"s"))

    def serve(self, factory=None):
        protocol = (factory or self.factory).buildProtocol(PEER)
        return protocol, connect(protocol)

    def send(self, protocol, transport, line):
        protocol.dataReceived(line + b"\n")
        return take(transport)

    def authenticate(self, password=PASSWORD, user="alice"):
        """Run the handshake on a StringTransport; return the protocol, its
        transport and the client machine (at whatever state it ended)."""
        protocol, transport = self.serve()
        client = client_machine(password, user)
        line = client.start()
        while line is not None:
            replies = self.send(protocol, transport, line)
            if not transport.connected:
                return protocol, transport, client, replies
            self.assertEqual(len(replies), 1)
            line = client.receive(replies[0])
        return protocol, transport, client, []

    def login_say_quit(self, text):
        """Log in, say ``text``, quit; check the replies and the three log
        lines; return the log events and the session key."""
        with capturedLogs() as events:
            protocol, transport, client, _ = self.authenticate()
            self.assertIsNotNone(protocol.chat)
            self.assertTrue(transport.connected)
            chat = ClientChat(client.result)
            [reply] = self.send(protocol, transport, chat.say(text))
            self.assertEqual(chat.receive(reply), "receive " + text)
            [confirmation] = self.send(protocol, transport, chat.quit())
            self.assertIsNone(chat.receive(confirmation))
            self.assertFalse(transport.connected)
        ks = protocol.handshake.result.session_key
        self.assertEqual(log_text(events), [
            "EKE: user alice from 192.0.2.7:4242 authenticated; "
            f"session key fingerprint {session_key_fingerprint(ks)}",
            f"User alice say: {text}",
            "EKE: user alice from 192.0.2.7:4242 quit",
        ])
        return events, ks

    def test_success_then_chat_then_quit(self):
        events, ks = self.login_say_quit("hello")
        self.assertNotIn(ks.hex(), " ".join(log_text(events)))

    def test_show_secrets_logs_ks(self):
        self.factory.show_secrets = True
        with capturedLogs() as events:
            protocol, transport, client, _ = self.authenticate()
        ks = protocol.handshake.result.session_key
        self.assertEqual(
            log_text(events),
            [f"EKE: user alice from 192.0.2.7:4242 authenticated; Ks: {ks.hex()}"],
        )

    def test_wrong_password(self):
        with capturedLogs() as events:
            protocol, transport, client, replies = self.authenticate(password="nope")
        self.assertEqual(replies, [b"authentication failed"])
        self.assertFalse(transport.connected)
        self.assertIsNone(protocol.chat)
        # Logged once, at step 3, where the server knows: not again at step 5.
        self.assertEqual(log_text(events), [
            "Failed guess for user 'alice' from 192.0.2.7:4242: EKE, wrong password for "
            "user 'alice' (step 3 does not decrypt under the password key)"
        ])

    def test_unknown_user(self):
        protocol, transport = self.serve()
        with capturedLogs() as events:
            self.assertEqual(self.send(protocol, transport, b"carol"), [b"no"])
        self.assertFalse(transport.connected)
        self.assertEqual(
            log_text(events), ["EKE handshake with 192.0.2.7:4242 failed: unknown user 'carol'"]
        )

    def test_hidden_unknown_user(self):
        factory = EKEServerFactory(USERS, hide_unknown_users=True, decoys=DecoyUsers(b"x" * 32))
        protocol, transport = self.serve(factory)
        [answer] = self.send(protocol, transport, b"carol")
        self.assertEqual(
            answer,
            b"yes " + base64.b64encode(crypto.decoy_salt(b"x" * 32, "carol")) + b" scrypt 32768 8 1",
        )
        with capturedLogs() as events:
            [step4] = self.send(
                protocol, transport, base64.b64encode(bytes(messages.BOX_SIZES[3])))
            self.assertEqual(len(step4), 380)
            replies = self.send(protocol, transport, base64.b64encode(bytes(messages.BOX_SIZES[5])))
        self.assertEqual(replies, [b"authentication failed"])
        self.assertFalse(transport.connected)
        self.assertEqual(log_text(events), [
            "Failed guess for user 'carol' from 192.0.2.7:4242: EKE, unknown user 'carol' (hidden)"
        ])

    def test_hide_unknown_users_makes_its_own_decoys(self):
        factory = EKEServerFactory(USERS, hide_unknown_users=True)
        self.assertIsInstance(factory.decoys, DecoyUsers)
        self.assertIsNone(EKEServerFactory(USERS, decoys=DecoyUsers()).decoys)

    def test_tampered_step_5(self):
        protocol, transport = self.serve()
        client = client_machine()
        step3 = client.receive(self.send(protocol, transport, client.start())[0])
        step5 = client.receive(self.send(protocol, transport, step3)[0])
        self.assertEqual(self.send(protocol, transport, flip(step5)), [b"authentication failed"])
        self.assertFalse(transport.connected)

    def test_over_long_lines_in_every_state(self):
        for state, limit in SERVER_LINE_LIMITS.items():
            protocol, transport = self.serve()
            client = client_machine()
            line = client.start()
            while protocol.handshake.state is not state:
                line = client.receive(self.send(protocol, transport, line)[0])
            self.assertEqual(protocol.MAX_LENGTH, limit)
            with capturedLogs() as events:
                replies = self.send(protocol, transport, b"A" * (limit + 1))
            self.assertEqual(replies, [b"authentication failed"], state)
            self.assertFalse(transport.connected)
            self.assertEqual(log_text(events), [
                f"EKE handshake with 192.0.2.7:4242 failed: a line longer than {limit} "
                f"bytes while {state.value}"
            ])

    def test_the_limits_are_the_real_line_lengths(self):
        """Not too tight: each box line is exactly as long as its limit."""
        protocol, transport = self.serve()
        client = client_machine()
        line = client.start()
        while line is not None:
            state = protocol.handshake.state
            if state is not EKEServerState.AWAIT_USER_NAME:
                self.assertEqual(len(line), SERVER_LINE_LIMITS[state])
            [reply] = self.send(protocol, transport, line)
            if client.state in CLIENT_LINE_LIMITS and client.state is not EKEClientState.AWAIT_ANSWER:
                self.assertEqual(len(reply), CLIENT_LINE_LIMITS[client.state])
            line = client.receive(reply)
        self.assertIsNotNone(protocol.chat)

    def test_over_long_line_without_newline(self):
        protocol, transport = self.serve()
        protocol.dataReceived(b"a" * 200)
        self.assertEqual(transport.value(), FAILED)
        self.assertFalse(transport.connected)

    def test_non_utf8_name(self):
        protocol, transport = self.serve()
        self.assertEqual(self.send(protocol, transport, b"\xff\xfe"), [b"authentication failed"])

    def test_crlf_is_not_a_line_ending(self):
        protocol, transport = self.serve()
        self.assertEqual(self.send(protocol, transport, b"alice\r"), [b"authentication failed"])

    def test_nothing_after_a_failure(self):
        protocol, transport = self.serve()
        protocol.dataReceived(b"bad name\nalice\nalice\n")
        self.assertEqual(transport.value(), FAILED)

    def test_nothing_is_kept_after_hanging_up(self):
        # Without the daemon's connection policy in front, the protocol itself
        # lets go of the lines behind the one it refused, and of any more.
        # A plain StringTransport stays open, marked disconnecting, as a TLS
        # connection does while it keeps reading to close.
        protocol = self.factory.buildProtocol(PEER)
        transport = StringTransport(peerAddress=PEER)
        protocol.makeConnection(transport)
        protocol.dataReceived(b"bad name\n" + b"alice\n" * 1000 + b"partial")
        self.assertEqual(transport.value(), FAILED)
        self.assertIsNone(protocol.framing)  # let go, with what it buffered
        protocol.dataReceived(b"alice\n" * 1000)
        self.assertIsNone(protocol.framing)  # let go, with what it buffered

    def test_abandoned_handshake_is_logged(self):
        protocol, transport = self.serve()
        self.send(protocol, transport, b"alice")
        with capturedLogs() as events:
            protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(log_text(events), [
            "EKE handshake with 192.0.2.7:4242 abandoned by the peer while "
            "awaiting E_pw(pk) (step 3)"
        ])

    def test_chat_closed_without_quit_is_logged(self):
        protocol, transport, client, _ = self.authenticate()
        with capturedLogs() as events:
            protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(log_text(events), [
            "EKE: connection of user alice from 192.0.2.7:4242 closed without quit "
            "(possibly cut short)"
        ])

    def test_replayed_chat_line_closes_without_reply(self):
        protocol, transport, client, _ = self.authenticate()
        chat = ClientChat(client.result)
        record = chat.say("pay 10")
        self.assertEqual(len(self.send(protocol, transport, record)), 1)
        with capturedLogs() as events:
            self.assertEqual(self.send(protocol, transport, record), [])
        self.assertFalse(transport.connected)
        self.assertEqual(log_text(events), [
            "EKE: chat with user alice from 192.0.2.7:4242 broken, closing: chat record 1 "
            "does not decrypt (altered, replayed, reordered or one was dropped)"
        ])

    def test_reordered_chat_lines(self):
        protocol, transport, client, _ = self.authenticate()
        chat = ClientChat(client.result)
        chat.say("one")
        second = chat.say("two")
        self.assertEqual(self.send(protocol, transport, second), [])
        self.assertFalse(transport.connected)

    def test_over_long_chat_line(self):
        protocol, transport, client, _ = self.authenticate()
        self.assertEqual(protocol.MAX_LENGTH, records.MAX_CLIENT_RECORD_LINE)
        with capturedLogs() as events:
            self.assertEqual(
                self.send(protocol, transport, b"A" * (records.MAX_CLIENT_RECORD_LINE + 1)), []
            )
        self.assertFalse(transport.connected)
        self.assertIn("a line longer than", log_text(events)[0])

    def test_chat_text_is_escaped_in_the_log(self):
        protocol, transport, client, _ = self.authenticate()
        chat = ClientChat(client.result)
        with capturedLogs() as events:
            [reply] = self.send(protocol, transport, chat.say("a\x1b[2Jb\nforged"))
        self.assertEqual(log_text(events), ["User alice say: a\\x1b[2Jb\\nforged"])
        self.assertEqual(chat.receive(reply), "receive a\x1b[2Jb\nforged")

    def test_a_login_lines_are_written_whole_with_their_fields_beside(self):
        # A login's lines (authenticated, each chat line, quit) are made
        # before twisted.logger sees them: braces a user typed stay as they
        # are, and observers still get the fields.
        events, ks = self.login_say_quit("{user} {0} {")
        authenticated, said, quit = events
        self.assertEqual((authenticated["user"], authenticated["peer"], authenticated["fingerprint"]),
                         ("alice", "192.0.2.7:4242", session_key_fingerprint(ks)))
        self.assertEqual((said["user"], said["line"]), ("alice", "{user} {0} {"))
        self.assertEqual((quit["user"], quit["peer"]), ("alice", "192.0.2.7:4242"))
        for event in events:
            self.assertNotIn("{user}", event["log_format"].replace("{{user}}", ""))

    def test_a_user_name_with_braces_is_logged_as_it_is(self):
        # Printable names may hold braces; the lines are made before
        # twisted.logger formats them, so they must not be read as fields.
        result = type("Result", (), {"user": "{peer}{0}", "session_key": bytes(32)})()
        with capturedLogs() as events:
            self.factory.userAuthenticated("192.0.2.7:4242", result)
            self.factory.chatEnded("192.0.2.7:4242", "{peer}{0}")
        self.assertEqual(log_text(events), [
            "EKE: user {peer}{0} from 192.0.2.7:4242 authenticated; "
            f"session key fingerprint {session_key_fingerprint(bytes(32))}",
            "EKE: user {peer}{0} from 192.0.2.7:4242 quit",
        ])

    def test_a_user_name_with_a_backslash_is_logged_unambiguously(self):
        # The legal name \x1b\n (a backslash, x, 1, b...) read like the
        # escape character and a newline, which a chat line with those
        # characters shows as \x1b\n: the backslash is escaped.
        name = "\\x1b\\n"
        self.assertEqual(len(name), 6)
        result = type("Result", (), {"user": name, "session_key": bytes(32)})()
        with capturedLogs() as events:
            self.factory.userAuthenticated("192.0.2.7:4242", result)
            self.factory.userSaid("192.0.2.7:4242", name, "\x1b\n")
            self.factory.userSaid("192.0.2.7:4242", name, name)
            self.factory.chatIdle("192.0.2.7:4242", name, 300)
            self.factory.chatEnded("192.0.2.7:4242", name)
        self.assertEqual(log_text(events), [
            "EKE: user \\\\x1b\\\\n from 192.0.2.7:4242 authenticated; "
            f"session key fingerprint {session_key_fingerprint(bytes(32))}",
            "User \\\\x1b\\\\n say: \\x1b\\n",
            "User \\\\x1b\\\\n say: \\\\x1b\\\\n",
            "EKE: chat with user \\\\x1b\\\\n from 192.0.2.7:4242 silent for 300 s, closing",
            "EKE: user \\\\x1b\\\\n from 192.0.2.7:4242 quit",
        ])


class ClientProtocolTests(unittest.TestCase):
    def start(self, password=PASSWORD, user="alice"):
        self.replies = []
        protocol = EKEClientProtocol(client_machine(password, user), self.replies.append)
        transport = connect(protocol)
        return protocol, transport

    def authenticate(self):
        protocol, transport = self.start()
        server = EKEServerHandshake(USERS.lookup)
        while not server.finished:
            [line] = take(transport)
            protocol.dataReceived(server.receive(line) + b"\n")
        results = []
        protocol.authenticated.addCallback(results.append)
        self.assertEqual(len(results), 1)
        return protocol, transport, ServerChat(server.result)

    def test_chat_and_quit(self):
        protocol, transport, server = self.authenticate()
        self.assertEqual(protocol.MAX_LENGTH, records.MAX_SERVER_RECORD_LINE)
        protocol.say("hello")
        [record] = take(transport)
        reply = server.receive(record)
        text = server.said
        self.assertEqual(text, "hello")
        protocol.dataReceived(reply + b"\n")
        self.assertEqual(self.replies, ["receive hello"])
        finished = []
        protocol.finished.addCallback(finished.append)
        protocol.quit()
        protocol.quit()  # once only
        [record] = take(transport)
        confirmation = server.receive(record)
        text = server.said
        self.assertEqual(text, "quit")
        self.assertEqual(finished, [])
        protocol.dataReceived(confirmation + b"\n")
        self.assertEqual(finished, [None])
        self.assertFalse(transport.connected)

    def test_unknown_user(self):
        protocol, transport = self.start(user="carol")
        self.assertEqual(take(transport), [b"carol"])
        protocol.dataReceived(b"no\n")
        self.failureResultOf(protocol.authenticated, UnknownUser)
        self.assertFalse(transport.connected)

    def test_generic_failure_reply(self):
        protocol, transport = self.start()
        protocol.dataReceived(FAILED)
        failure = self.failureResultOf(protocol.authenticated, AuthenticationFailed)
        self.assertIn("the server refused", failure.value.reason)

    def test_nothing_is_kept_after_hanging_up(self):
        protocol = EKEClientProtocol(client_machine())
        protocol.makeConnection(StringTransport())
        protocol.dataReceived(FAILED + b"yes\n" * 1000)
        self.failureResultOf(protocol.authenticated, AuthenticationFailed)
        self.assertIsNone(protocol.framing)  # let go, with what it buffered
        protocol.dataReceived(b"yes\n" * 1000)
        self.assertIsNone(protocol.framing)  # let go, with what it buffered

    def test_over_long_lines_in_every_state(self):
        for state, limit in CLIENT_LINE_LIMITS.items():
            protocol, transport = self.start()
            server = EKEServerHandshake(USERS.lookup)
            while protocol.handshake.state is not state:
                [line] = take(transport)
                protocol.dataReceived(server.receive(line) + b"\n")
            self.assertEqual(protocol.MAX_LENGTH, limit)
            protocol.dataReceived(b"A" * (limit + 1) + b"\n")
            failure = self.failureResultOf(protocol.authenticated, UnexpectedReply)
            self.assertEqual(
                failure.value.reason, f"the server sent a line longer than {limit} bytes"
            )
            self.assertFalse(transport.connected)

    def test_server_hangs_up_during_the_handshake(self):
        protocol, transport = self.start()
        transport.loseConnection()
        failure = self.failureResultOf(protocol.authenticated, ServerHungUp)
        self.assertEqual(
            failure.value.reason,
            "the server closed the connection while awaiting yes or no (step 2)",
        )
        self.successResultOf(protocol.disconnected)

    def test_server_hangs_up_during_the_chat(self):
        protocol, transport, server = self.authenticate()
        transport.loseConnection()
        failure = self.failureResultOf(protocol.finished, ServerHungUp)
        self.assertEqual(failure.value.reason, "the server closed the connection during the chat")

    def test_replayed_reply(self):
        protocol, transport, server = self.authenticate()
        protocol.say("one")
        protocol.say("two")
        first, second = take(transport)
        reply = server.receive(first)
        server.receive(second)
        protocol.dataReceived(reply + b"\n" + reply + b"\n")
        self.assertEqual(self.replies, ["receive one"])
        self.failureResultOf(protocol.finished, ChatFailed)
        self.assertFalse(transport.connected)

    def test_timeout_aborts_the_connection_once(self):
        protocol, transport = self.start()
        clock = task.Clock()
        timed = protocol.authenticated.addTimeout(10, clock)
        clock.advance(10)
        self.failureResultOf(timed, defer.TimeoutError)
        self.assertFalse(transport.connected)
        self.successResultOf(protocol.disconnected)

    def test_say_before_authentication(self):
        protocol, transport = self.start()
        self.assertRaises(RuntimeError, protocol.say, "too early")
        self.assertRaises(RuntimeError, protocol.quit)

    def test_factory_builds_a_fresh_handshake(self):
        factory = EKEClientFactory("alice", PASSWORD, kdf_limits=TEST_LIMITS)
        one, two = factory.buildProtocol(PEER), factory.buildProtocol(PEER)
        self.assertIsNot(one.handshake, two.handshake)
        self.assertEqual(one.handshake.user, "alice")


class _RecordingClient(EKEClientProtocol):
    def __init__(self, handshake):
        self.received_lines = []
        self.replies = []
        super().__init__(handshake, self.replies.append)

    def messageReceived(self, line):
        self.received_lines.append(line)
        super().messageReceived(line)


class LoopbackTests(unittest.TestCase):
    """Real TCP on 127.0.0.1, port 0."""

    async def serve(self, factory):
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    async def open_client(self, port, user="alice", password=PASSWORD):
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        return await endpoints.connectProtocol(endpoint, _RecordingClient(client_machine(password, user)))

    async def chat(self, client, lines):
        await client.authenticated
        for line in lines:
            client.say(line)
        client.quit()
        await client.finished
        await client.disconnected
        return client.replies

    @defer.inlineCallbacks
    def test_session_chats_and_quits(self):
        factory = TrackingEKEServerFactory(USERS)
        port = yield defer.ensureDeferred(self.serve(factory))
        client = yield defer.ensureDeferred(self.open_client(port))
        with capturedLogs() as events:
            replies = yield defer.ensureDeferred(self.chat(client, ["hello", "\u00e7a va ?"]))
            yield factory.allLost()
        self.assertEqual(replies, ["receive hello", "receive \u00e7a va ?"])
        text = log_text(events)
        self.assertTrue(text[0].startswith("EKE: user alice from 127.0.0.1:"))
        self.assertEqual(text[1:3], ["User alice say: hello", "User alice say: \u00e7a va ?"])
        self.assertTrue(text[3].endswith(" quit"))
        self.assertEqual(len(text), 4)

    @defer.inlineCallbacks
    def test_the_factorys_client_runs_scrypt_in_a_thread(self):
        threads = []
        real = crypto.derive_password_key

        def recorded(*args):
            threads.append(threading.current_thread())
            return real(*args)

        self.patch(crypto, "derive_password_key", recorded)
        factory = TrackingEKEServerFactory(USERS)
        port = yield defer.ensureDeferred(self.serve(factory))
        client = EKEClientFactory("alice", PASSWORD, kdf_limits=TEST_LIMITS).buildProtocol(None)
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        yield endpoints.connectProtocol(endpoint, client)
        result = yield client.authenticated
        client.quit()
        yield client.finished
        yield factory.allLost()
        self.assertEqual(result.user, "alice")
        self.assertEqual(len(threads), 1)
        self.assertIsNot(threads[0], threading.main_thread())

    @defer.inlineCallbacks
    def test_several_sessions_at_once(self):
        factory = TrackingEKEServerFactory(USERS)
        port = yield defer.ensureDeferred(self.serve(factory))
        clients = []
        for i in range(6):
            user, password = ("alice", PASSWORD) if i % 2 else ("bob", "bob's password")
            clients.append((yield defer.ensureDeferred(self.open_client(port, user, password))))
        sessions = [
            defer.ensureDeferred(self.chat(client, [f"line {i}.{j}" for j in range(3)]))
            for i, client in enumerate(clients)
        ]
        results = yield defer.gatherResults(sessions)
        yield factory.allLost()
        for i, replies in enumerate(results):
            self.assertEqual(replies, [f"receive line {i}.{j}" for j in range(3)])
        keys = {c.handshake.result.session_key for c in clients}
        self.assertEqual(len(keys), 6)

    @defer.inlineCallbacks
    def test_wrong_password_fails_at_the_nonce_step(self):
        factory = TrackingEKEServerFactory(USERS)
        port = yield defer.ensureDeferred(self.serve(factory))
        client = yield defer.ensureDeferred(self.open_client(port, password="guess"))
        with capturedLogs() as events:
            with self.assertRaises(AuthenticationFailed):
                yield client.authenticated
            yield factory.allLost()
        # yes / random step 4 / the failure, after the client's step 5.
        self.assertEqual(len(client.received_lines), 3)
        self.assertTrue(client.received_lines[0].startswith(b"yes "))
        self.assertEqual(len(client.received_lines[1]), 380)
        self.assertEqual(client.received_lines[2], b"authentication failed")
        [server] = factory.connections
        self.assertIsNone(server.chat)
        self.assertEqual(log_text(events)[0].split(": ", 1)[1],
                         "EKE, wrong password for user 'alice' (step 3 does not decrypt under "
                         "the password key)")
        self.assertEqual(len(log_text(events)), 1)

    @defer.inlineCallbacks
    def test_hidden_unknown_user_looks_like_a_wrong_password(self):
        factory = TrackingEKEServerFactory(USERS, hide_unknown_users=True)
        port = yield defer.ensureDeferred(self.serve(factory))
        shapes = []
        for user, password in [("alice", "guess"), ("nobody", "guess")]:
            endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port)
            # The decoy asks for the default 32 MiB scrypt: accept it.
            client = yield endpoints.connectProtocol(endpoint, _RecordingClient(
                EKEClientHandshake(user, password, rsa_key_factory=rsa_key)
                if user == "nobody" else client_machine(password, user)))
            with self.assertRaises(AuthenticationFailed):
                yield client.authenticated
            yield client.disconnected
            shapes.append([len(line) for line in client.received_lines[1:]])
            self.assertEqual(client.received_lines[-1], b"authentication failed")
        yield factory.allLost()
        self.assertEqual(shapes[0], shapes[1])


class ChatLogEndTests(unittest.TestCase):
    """The chat lines counted and not logged are said when the chat ends,
    not only before the next line logged."""

    def test_counted_lines_are_said_when_the_user_leaves(self):
        helper = ServerProtocolTests()
        helper.factory = EKEServerFactory(USERS, random_bytes=RecordingRandom(b"s"))
        protocol, transport, client, _ = helper.authenticate()
        chat = ClientChat(client.result)
        with capturedLogs() as events:
            for i in range(50):
                protocol.dataReceived(chat.say(f"line {i}") + b"\n")
            protocol.connectionLost(Failure(ConnectionDone()))
        text = [formatEvent(event) for event in events]
        self.assertEqual(len(text), 22)
        self.assertEqual(text[20], "EKE: 30 chat line(s) of user alice from 192.0.2.7:4242 "
                                   "not logged (more than 20 at once)")
        self.assertIn("closed without quit", text[21])
