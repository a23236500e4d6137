"""A change of password inside a logged-in OPAQUE session
(twisted_keyx.opaque.passwd; docs/opaque.rst, Changing the password): the
machines driven by hand, the factories over StringTransport and in memory,
and what an interrupted or refused change leaves (the old password)."""

import unicodedata

from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.test import iosim
from twisted.trial import unittest

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tests.opaque_helpers import CHEAP_LIMITS, CountingRandom, cheap_setup
from twisted_keyx.chat import records as ChatRecords
from twisted_keyx.chat.machine import ChatState
from twisted_keyx.core.decisions import PasswordChanged, ReplaceUser
from twisted_keyx.core.interfaces import StoreConflict, StoreUnavailable
from twisted_keyx.core.machine import ServerHungUp
from twisted_keyx.core.refusals import UNAVAILABLE_REPLY, ServerUnavailable
from twisted_keyx.opaque import handshake as hs, invitation as invited, passwd
from twisted_keyx.opaque.login import ServerLogin
from twisted_keyx.opaque.protocol import OPAQUEClientFactory, OPAQUEServerFactory
from twisted_keyx.opaque.scheme import OpaqueUser, new_user

SETUP = cheap_setup()
OLD = "correct horse"
NEW = "battery staple"
ALICE = new_user("alice", OLD, SETUP)


def login(record=ALICE, password=OLD, seed=1):
    """A login by hand: the server's and the client's machines after it."""
    server = hs.OPAQUEServerHandshake(SETUP, lambda name: record if name == "alice" else None,
                                      rng=CountingRandom(seed))
    client = hs.OPAQUEClientHandshake("alice", password, ksf_limits=CHEAP_LIMITS,
                                      rng=CountingRandom(seed + 100))
    ke2 = server.receive(client.start())
    ok = server.receive(client.receive(ke2))
    client.receive(ok)
    return server, client


def opens(record, password):
    """Whether ``password`` logs in with ``record`` (by hand)."""
    try:
        login(record, password, seed=7)
    except hs.HandshakeFailed:
        return False
    return True


class MachineTests(unittest.TestCase):
    """The two session machines, driven by hand."""

    def setUp(self):
        server, client = login()
        self.result = client.result
        self.server, self.client = server.chat(), client.chat()

    def change(self, new=NEW):
        """p1, p2, p3: returns the server's question."""
        p1 = self.client.passwd(new)
        self.assertTrue(p1.startswith(passwd.PASSWD + b" "))
        self.assertEqual(len(p1), passwd.P1_LINE)
        self.assertEqual(self.client.state, passwd.PasswdState.AWAIT_P2)
        p2 = self.server.feed(p1)
        self.assertEqual(len(p2), passwd.P2_LINE)
        self.assertEqual(self.server.state, passwd.PasswdState.AWAIT_P3)
        self.assertEqual(self.server.max_message_length, passwd.P3_LINE)
        p3 = self.client.feed(p2)
        self.assertEqual(len(p3), passwd.P3_LINE)
        self.assertTrue(self.client.record_sent)
        return self.server.feed(p3)

    def test_change_then_chat(self):
        question = self.change()
        self.assertIsInstance(question, ReplaceUser)
        self.assertEqual((question.user, question.old), ("alice", ALICE))
        self.assertIsInstance(question.new, OpaqueUser)
        self.assertEqual(question.new.name, "alice")
        self.assertNotEqual(question.new.record, ALICE.record)
        # Still awaiting p3 until the store answers.
        self.assertEqual(self.server.state, passwd.PasswdState.AWAIT_P3)
        output = self.server.answer(question, None)
        self.assertEqual(output, (passwd.CHANGED, PasswordChanged("alice")))
        self.assertEqual(self.client.feed(passwd.CHANGED), (PasswordChanged("alice"),))
        self.assertEqual((self.server.state, self.client.state), (ChatState.OPEN, ChatState.OPEN))
        # The new record opens with the new password only.
        self.assertTrue(opens(question.new, NEW))
        self.assertFalse(opens(question.new, OLD))
        # The chat goes on, its records counted from where they were.
        reply = self.server.receive(self.client.say("hello"))
        self.assertEqual(self.client.receive(reply), "receive hello")
        self.assertEqual(self.server.said, "hello")
        self.client.receive(self.server.receive(self.client.quit()))
        self.assertTrue(self.server.finished and self.client.finished)

    def test_second_change_replaces_the_first(self):
        first = self.change()
        self.server.answer(first, None)
        self.client.feed(passwd.CHANGED)
        second = self.change("a third one")
        self.assertEqual(second.old, first.new)

    def test_password_normalised_as_at_registration(self):
        decomposed = unicodedata.normalize("NFD", "caf\u00e9\u00a0cr\u00e8me")
        question = self.change(decomposed)
        self.assertTrue(opens(question.new, "caf\u00e9 cr\u00e8me"))

    def test_refused_store_answers(self):
        question = self.change()
        with self.assertRaises(passwd.PasswordNotChanged) as caught:
            self.server.answer(question, StoreConflict("user 'alice' has changed meanwhile"))
        self.assertEqual(caught.exception.reply, passwd.NOT_CHANGED)
        self.assertIn("changed meanwhile", caught.exception.reason)
        self.assertTrue(self.server.failed)
        with self.assertRaises(passwd.PasswordNotChanged):
            self.client.feed(passwd.NOT_CHANGED)
        self.assertTrue(self.client.failed)

    def test_store_down_is_the_documented_refusal(self):
        question = self.change()
        with self.assertRaises(ServerUnavailable) as caught:
            self.server.answer(question, StoreUnavailable("down"))
        self.assertEqual(caught.exception.reply, UNAVAILABLE_REPLY)
        with self.assertRaises(ServerUnavailable):
            self.client.feed(UNAVAILABLE_REPLY)

    def test_receive_by_hand_replaces_nothing(self):
        p1 = self.client.passwd(NEW)
        p3 = self.client.feed(self.server.receive(p1))
        question = self.server.receive(p3)
        with self.assertRaises(ServerUnavailable):
            self.server.settle(question, lambda q: hs.answer_by_hand(q, None))

    def test_garbled_p3_refused_no_question(self):
        p1 = self.client.passwd(NEW)
        p3 = bytearray(self.client.feed(self.server.feed(p1)))
        p3[10] = ord("A") if p3[10] != ord("A") else ord("B")
        with self.assertRaises(passwd.PasswordNotChanged) as caught:
            self.server.feed(bytes(p3))
        self.assertEqual(caught.exception.reply, passwd.NOT_CHANGED)
        self.assertIn("does not open", caught.exception.reason)

    def test_p3_that_opens_but_holds_no_record_refused(self):
        """A record encrypted under the right key, whose public key is not a
        group element: refused before the store is asked."""
        secret = invited.session_secret(self.result.session_key, self.result.transcript_hash)
        p1 = self.client.passwd(NEW)
        r1 = hs.decode_item(p1[len(passwd.PASSWD) + 1:], invited.R1_SIZE)
        r2 = hs.decode_item(self.server.feed(p1), invited.R2_SIZE)
        _, record_key = invited._keys(secret, r1[:32], r2[:32], "alice", invited.PASSWD_LABEL)
        bad = b"\xff" * 32 + bytes(invited.R3_SIZE - 16 - 32)
        p3 = AESGCM(record_key).encrypt(bytes(12), bad, invited._aad(r1, r2))
        with self.assertRaises(passwd.PasswordNotChanged) as caught:
            self.server.feed(hs.encode_item(p3))
        self.assertIn("the new record refused", caught.exception.reason)

    def test_server_without_the_session_key_refused_by_client(self):
        """A p2 made under another session's key (a man in the middle):
        the client sends no record."""
        other, _ = login(seed=50)
        impostor = other.chat()
        p1 = self.client.passwd(NEW)
        p2 = impostor.feed(p1)
        with self.assertRaises(passwd.PasswordNotChanged) as caught:
            self.client.feed(p2)
        self.assertIn("does not hold this session's key", caught.exception.reason)
        self.assertFalse(self.client.record_sent)

    def test_malformed_p1_refused(self):
        lines = [b"passwd ", b"passwd " + b"A" * (passwd.P1_LINE - 7),
                 b"passwd " + b"!" * (passwd.P1_LINE - 7),
                 # A user name after p1: the user is the session's, never named.
                 self.client.passwd(NEW) + b" bob"]
        for line in lines:
            server, _ = login()
            chat = server.chat()
            with self.assertRaises(passwd.PasswordNotChanged, msg=line) as caught:
                chat.feed(line)
            self.assertEqual(caught.exception.reply, passwd.NOT_CHANGED)

    def test_unexpected_line_while_awaiting_p3(self):
        self.server.feed(self.client.passwd(NEW))
        with self.assertRaises(passwd.PasswordNotChanged):
            self.server.feed(passwd.PASSWD + b" " + b"A" * 88)

    def test_too_long_while_awaiting_p3(self):
        self.server.feed(self.client.passwd(NEW))
        failure = self.server.too_long("too long")
        self.assertIsInstance(failure, passwd.PasswordNotChanged)
        self.assertEqual(failure.reply, passwd.NOT_CHANGED)

    def test_a_chat_line_saying_passwd_is_a_chat_line(self):
        reply = self.server.receive(self.client.say("passwd hunter2"))
        self.assertEqual(self.client.receive(reply), "receive passwd hunter2")
        self.assertEqual(self.server.state, ChatState.OPEN)

    def test_client_refuses_to_start_with_lines_unanswered_or_a_bad_password(self):
        self.client.say("hello")
        self.assertRaises(RuntimeError, self.client.passwd, NEW)
        server, client = login()
        chat = client.chat()
        self.assertRaises(ValueError, chat.passwd, "tab\there")
        self.assertEqual(chat.state, ChatState.OPEN)

    def test_client_bad_p2(self):
        self.client.passwd(NEW)
        with self.assertRaises(passwd.PasswordNotChanged):
            self.client.feed(b"A" * passwd.P2_LINE)
        self.assertTrue(self.client.failed)
        self.assertFalse(self.client.record_sent)

    def test_client_limits(self):
        self.assertEqual(self.client.max_message_length, ChatRecords.MAX_SERVER_RECORD_LINE)
        p1 = self.client.passwd(NEW)
        self.assertEqual(self.client.max_message_length,
                         max(passwd.P2_LINE, len(UNAVAILABLE_REPLY)))
        self.client.feed(self.server.feed(p1))
        self.assertEqual(self.client.max_message_length,
                         max(len(passwd.NOT_CHANGED), len(UNAVAILABLE_REPLY)))


class MemoryUsers:
    """lookup and replace of IUserStore, at once; ``hold`` keeps replace's
    Deferred pending (a store that has not answered yet)."""

    def __init__(self, **users):
        self.records = dict(users)
        self.hold = False
        self.pending = []

    def lookup(self, name, scheme):
        record = self.records.get(name)
        return defer.succeed(record if record is not None and record.scheme == scheme else None)

    def replace(self, name, old, new):
        if self.records.get(name) != old:
            return defer.fail(StoreConflict(f"user {name!r} has changed meanwhile"))
        if self.hold:
            waiting = defer.Deferred()
            self.pending.append((waiting, name, new))
            return waiting
        self.records[name] = new
        return defer.succeed(None)


class ProtocolTests(unittest.TestCase):
    """The factories, pumped in memory (iosim) or over StringTransport."""

    def setUp(self):
        self.users = MemoryUsers(alice=ALICE)
        self.factory = OPAQUEServerFactory(self.users, SETUP)

    def connect(self, password=OLD):
        server = self.factory.buildProtocol(None)
        client = OPAQUEClientFactory("alice", password, ksf_limits=CHEAP_LIMITS,
                                     worker=None).buildProtocol(None)
        pump = iosim.connect(server, iosim.makeFakeServer(server), client,
                             iosim.makeFakeClient(client))
        return server, client, pump

    def logged_in_by_hand(self):
        """alice logged in with OLD on a StringTransport, her machine driven
        by hand: ``(server protocol, transport, client chat machine)``, the
        transport cleared."""
        server = self.factory.buildProtocol(None)
        transport = StringTransport()
        server.makeConnection(transport)
        client = hs.OPAQUEClientHandshake("alice", OLD, ksf_limits=CHEAP_LIMITS)
        server.dataReceived(client.start() + b"\n")
        ke3 = client.receive(transport.value().strip())
        transport.clear()
        server.dataReceived(ke3 + b"\n")
        client.receive(transport.value().strip())
        transport.clear()
        return server, transport, client.chat()

    def logs_in(self, password):
        _, client, pump = self.connect(password)
        outcome = []
        client.authenticated.addBoth(outcome.append)
        pump.flush()
        if isinstance(outcome[0], hs.OPAQUEResult):
            client.quit()
            pump.flush()
            self.successResultOf(client.finished)
            return True
        outcome[0].trap(hs.AuthenticationFailed)
        return False

    def test_change_then_quit(self):
        with capturedLogs() as events:
            server, client, pump = self.connect()
            self.successResultOf(client.authenticated)
            changing = client.passwd(NEW)
            pump.flush()
            self.assertIsNone(self.successResultOf(changing))
            self.assertIsNot(self.users.records["alice"], ALICE)
            client.say("still here")
            client.quit()
            pump.flush()
            self.successResultOf(client.finished)
        log = [formatEvent(e) for e in events]
        changed = [line for line in log if "changed the password" in line]
        self.assertEqual(len(changed), 1, log)
        self.assertTrue(changed[0].startswith("OPAQUE: user alice from "), changed)
        self.assertIn("User alice say: still here", log)
        self.assertTrue(any(line.endswith(" quit") for line in log), log)
        self.assertFalse([line for line in log if NEW in line or "None" in line], log)
        self.assertTrue(self.logs_in(NEW))
        self.assertFalse(self.logs_in(OLD))

    def test_chat_unchanged_for_users_who_do_not_change(self):
        _, client, pump = self.connect()
        replies = []
        client._replyReceived = replies.append
        self.successResultOf(client.authenticated)
        client.say("hello")
        client.quit()
        pump.flush()
        self.successResultOf(client.finished)
        self.assertEqual(replies, ["receive hello"])
        self.assertIs(self.users.records["alice"], ALICE)

    def test_connection_dropped_before_p3_leaves_the_old_password(self):
        server, transport, chat = self.logged_in_by_hand()
        server.dataReceived(chat.passwd(NEW) + b"\n")
        self.assertEqual(len(transport.value()), passwd.P2_LINE + 1)
        with capturedLogs() as events:
            server.connectionLost(Failure(ConnectionDone()))
        self.assertIs(self.users.records["alice"], ALICE)
        log = [formatEvent(e) for e in events]
        self.assertTrue(any("closed without quit" in line for line in log), log)
        self.assertTrue(self.logs_in(OLD))
        self.assertFalse(self.logs_in(NEW))

    def test_client_drops_before_p3(self):
        _, client, pump = self.connect()
        self.successResultOf(client.authenticated)
        changing = client.passwd(NEW)
        pump.pump()  # p1 to the server, which answers p2
        client.connectionLost(Failure(ConnectionDone()))  # the network fails first
        failure = self.failureResultOf(changing, ServerHungUp)
        self.assertIn("before the new record was sent: the password is not changed",
                      failure.getErrorMessage())
        self.failureResultOf(client.finished)
        self.assertIs(self.users.records["alice"], ALICE)
        self.assertTrue(self.logs_in(OLD))

    def test_cancelling_the_change_closes_the_connection(self):
        """keyx-client's --timeout cancels it: the connection is cut, so
        nothing more goes out."""
        self.users.hold = True
        _, client, pump = self.connect()
        self.successResultOf(client.authenticated)
        changing = client.passwd(NEW)
        pump.flush()
        changing.cancel()
        self.failureResultOf(changing, defer.CancelledError)
        self.assertTrue(client.transport.disconnecting)
        pump.flush()
        self.successResultOf(client.disconnected)

    def test_store_that_never_answers_and_a_drop(self):
        """The connection drops while the store writes: the store's outcome
        decides (here it fails: the old record stays)."""
        self.users.hold = True
        _, client, pump = self.connect()
        self.successResultOf(client.authenticated)
        changing = client.passwd(NEW)
        pump.flush()
        self.assertNoResult(changing)
        [(waiting, name, new)] = self.users.pending
        client.transport.abortConnection()
        pump.flush()
        failure = self.failureResultOf(changing)
        self.assertIn("may or may not be stored", failure.getErrorMessage())
        self.failureResultOf(client.finished)
        waiting.errback(StoreUnavailable("the write did not happen"))
        self.assertIs(self.users.records["alice"], ALICE)
        self.assertTrue(self.logs_in(OLD))

    def test_garbled_p3_over_the_wire(self):
        server, transport, chat = self.logged_in_by_hand()
        server.dataReceived(chat.passwd(NEW) + b"\n")
        transport.clear()
        with capturedLogs() as events:
            server.dataReceived(b"A" * passwd.P3_LINE + b"\n")
        self.assertEqual(transport.value(), passwd.NOT_CHANGED + b"\n")
        self.assertTrue(transport.disconnecting)
        self.assertIs(self.users.records["alice"], ALICE)
        log = [formatEvent(e) for e in events]
        self.assertTrue(any(line.startswith("OPAQUE: password of user alice from ")
                            and "not changed, closing: (p3)" in line for line in log), log)
        self.assertTrue(self.logs_in(OLD))

    def test_over_long_p3_line(self):
        server = self.factory.buildProtocol(None)
        transport = StringTransport()
        server.makeConnection(transport)
        client = hs.OPAQUEClientHandshake("alice", OLD, ksf_limits=CHEAP_LIMITS)
        server.dataReceived(client.start() + b"\n")
        ke3 = client.receive(transport.value().strip())
        server.dataReceived(ke3 + b"\n")
        transport.clear()
        server.dataReceived(b"passwd " + b"A" * 88 + b"\n")  # not a valid p1
        self.assertEqual(transport.value(), passwd.NOT_CHANGED + b"\n")
        self.assertTrue(transport.disconnecting)

    def test_store_without_replace_refuses(self):
        class LookupOnly:
            def lookup(self, name, scheme):
                return ALICE if name == "alice" else None

        self.factory = OPAQUEServerFactory(LookupOnly(), SETUP)
        _, client, pump = self.connect()
        self.successResultOf(client.authenticated)
        changing = client.passwd(NEW)
        pump.flush()
        self.failureResultOf(changing, passwd.PasswordNotChanged)
        self.failureResultOf(client.finished, passwd.PasswordNotChanged)

    def test_conflict_over_the_wire(self):
        _, client, pump = self.connect()
        self.successResultOf(client.authenticated)
        self.users.records["alice"] = new_user("alice", "set by the admin meanwhile", SETUP)
        changing = client.passwd(NEW)
        pump.flush()
        failure = self.failureResultOf(changing, passwd.PasswordNotChanged)
        self.assertIn("refused the change", failure.getErrorMessage())
        self.failureResultOf(client.finished)
        self.assertTrue(self.logs_in("set by the admin meanwhile"))


class RegistrationRefusedLogTests(unittest.TestCase):
    """A refused registration is logged as refused, with why, not as a
    handshake abandoned while awaiting r3 (issue 21)."""

    NOW = 1_800_000_000.0

    class Invitations:
        """lookup of IInvitationStore, any state."""

        def __init__(self):
            self.stored = {}

        def lookup(self, name):
            return defer.succeed(self.stored.get(name))

    def setUp(self):
        from tests.test_opaque_register import MemoryUsers as Users

        self.code = invited.new_code(CountingRandom(3))
        self.users = Users()
        self.invitations = self.Invitations()
        self.factory = OPAQUEServerFactory(self.users, SETUP, invitations=self.invitations,
                                           clock=lambda: self.NOW)

    def invite(self, state="pending", expires=None):
        from twisted_keyx.core.interfaces import Invitation

        self.invitations.stored["bob"] = Invitation(
            "bob", invited.code_hash(self.code), self.NOW - 10,
            expires if expires is not None else self.NOW + 3600, state)

    def register(self, code=None):
        from twisted_keyx.opaque.protocol import OPAQUERegistrationFactory

        server = self.factory.buildProtocol(None)
        client = OPAQUERegistrationFactory("bob", "pw", code or self.code,
                                           ksf_limits=CHEAP_LIMITS,
                                           worker=None).buildProtocol(None)
        with capturedLogs() as events:
            iosim.connect(server, iosim.makeFakeServer(server), client,
                          iosim.makeFakeClient(client)).flush()
        self.failureResultOf(client.authenticated, hs.RegistrationFailed)
        self.assertEqual(self.users.records, {})
        return [formatEvent(e) for e in events]

    def test_an_old_client_that_says_authentication_failed(self):
        """Before this, our client sent ``authentication failed`` where r3
        goes: logged as the refusal too, not as r3 that is not base64."""
        self.invite()
        server = self.factory.buildProtocol(None)
        transport = StringTransport()
        server.makeConnection(transport)
        client = hs.OPAQUERegistrationClient("bob", "pw", invited.new_code(CountingRandom(9)),
                                             ksf_limits=CHEAP_LIMITS)
        server.dataReceived(client.start() + b"\n")
        with capturedLogs() as events:
            server.dataReceived(hs.FAILURE_REPLY + b"\n")
            server.connectionLost(Failure(ConnectionDone()))
        self.assertRefused([formatEvent(e) for e in events],
                           "the client sent no record: its code is not the invitation's "
                           "(or it gave up)")

    def test_client_closes_without_a_word(self):
        self.invite()
        server = self.factory.buildProtocol(None)
        client = hs.OPAQUERegistrationClient("bob", "pw", invited.new_code(CountingRandom(9)),
                                             ksf_limits=CHEAP_LIMITS)
        transport = StringTransport()
        server.makeConnection(transport)
        server.dataReceived(client.start() + b"\n")
        with self.assertRaises(hs.RegistrationFailed) as caught:
            client.receive(transport.value().strip())
        self.assertIsNone(caught.exception.reply)

    def assertRefused(self, log, why):
        self.assertFalse([line for line in log if "abandoned" in line], log)
        refused = [line for line in log if "registration of user 'bob' from " in line]
        self.assertEqual(len(refused), 1, log)
        self.assertTrue(refused[0].endswith(f" refused: {why}"), refused)
        self.assertFalse([line for line in log if self.code in line], log)

    def test_wrong_code(self):
        self.invite()
        self.assertRefused(self.register(invited.new_code(CountingRandom(9))),
                           "the client sent no record: its code is not the invitation's "
                           "(or it gave up)")

    def test_no_invitation(self):
        self.assertRefused(self.register(), "no invitation for this user")

    def test_used_revoked_expired(self):
        for state, expires, why in (("used", None, "its invitation was used"),
                                    ("revoked", None, "its invitation was revoked"),
                                    ("pending", self.NOW - 1, "its invitation expired")):
            self.invite(state, expires)
            self.assertRefused(self.register(), why)


    def test_a_flood_of_refused_registrations_is_summarised(self):
        """Anyone may send ``register`` lines: each refusal was one log
        line, with no bound per source (120 lines from one source in a
        second against the daemon).  They go through the connection
        policy's PeerLines as the other lines about strangers do."""
        from twisted.internet import task

        from twisted_keyx.service.limits import PEER_LINES, ConnectionPolicy

        clock = task.Clock()
        policy = ConnectionPolicy(clock=clock)
        self.factory = policy.wrap(self.factory).wrappedFactory
        self.invite()
        log = []
        for _ in range(PEER_LINES + 5):
            log += self.register(invited.new_code(CountingRandom(9)))
        refused = [line for line in log if "registration of user 'bob' from " in line]
        self.assertEqual(len(refused), PEER_LINES, log)
        self.assertFalse([line for line in log if "abandoned" in line], log)

class DaemonTests(unittest.TestCase):
    """End to end: ``twistd keyx``'s service in this process (the real
    reactor, its user file and invitation file), ``keyx-admin invite``, and
    ``keyx-client opaque register``, ``passwd`` and logins as processes."""

    timeout = 120

    def setUp(self):
        import os

        self.directory = os.path.abspath(self.mktemp())
        os.mkdir(self.directory)
        self.config = os.path.join(self.directory, "config")
        self.users = os.path.join(self.directory, "keyx-users.json")

    def write(self, name, text):
        import os

        path = os.path.join(self.directory, name)
        with open(path, "w") as f:
            f.write(text + "\n")
        os.chmod(path, 0o600)
        return path

    async def client(self, port, *argv):
        import os
        import sys

        from tests.helpers import CollectingProcess
        from tests.test_opaque_client import ROOT

        process = CollectingProcess(b"quit\n")
        env = dict(os.environ, PYTHONPATH=ROOT, PYTHONWARNINGS="error",
                   XDG_CONFIG_HOME=self.config)
        args = [sys.executable, "-m", "twisted_keyx.cli.client", "opaque", "--host",
                "127.0.0.1", "--port", str(port), "--user", "alice", *argv]
        from twisted.internet import reactor

        reactor.spawnProcess(process, sys.executable, args, env=env)
        status = await process.ended
        return status, process.out.decode(), process.err.decode()

    def test_invite_register_login_passwd(self):
        import io
        import os

        from tests.helpers import tap_options
        from twisted_keyx.cli import admin
        from twisted_keyx.service import tap, userfile

        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(admin.main(["invite", "alice", "--users", self.users], out, err), 0)
        code = self.write("code", out.getvalue().strip())
        old = self.write("old", "first secret")
        new = self.write("new", "second secret")
        sockets = self.mktemp()  # relative: a socket path has at most 107 bytes
        options = tap_options(
            "--opaque", "tcp:0:interface=127.0.0.1", "--dh", f"unix:{sockets}-dh",
            "--eke", f"unix:{sockets}-eke", "--users", self.users,
            "--opaque-key", os.path.join(self.directory, "keyx-opaque-key"), "--no-host-key")
        service = tap.makeService(options)

        async def run():
            service.privilegedStartService()
            service.startService()
            try:
                [listening] = [child for child in service
                               if getattr(child, "endpoint", None) is not None
                               and "TCP" in type(child.endpoint).__name__]
                port = (await listening._waitingForPort).getHost().port
                with capturedLogs() as events:
                    results = [
                        await self.client(port, "register", "--code-file", code,
                                          "--password-file", old),
                        await self.client(port, "passwd", "--password-file", old,
                                          "--new-password-file", new),
                        await self.client(port, "--password-file", new),
                        await self.client(port, "--password-file", old),
                    ]
            finally:
                await service.stopService()
            return results, [formatEvent(e) for e in events]

        async def check():
            results, log = await run()
            (s1, out1, err1), (s2, out2, err2), (s3, out3, err3), (s4, out4, err4) = results
            self.assertEqual((s1, err1), (0, ""))
            self.assertEqual((s2, err2), (0, ""))
            lines = out2.splitlines()
            self.assertTrue(lines[0].startswith("Authentication success"), lines)
            self.assertTrue(lines[1].startswith("Server key fingerprint SHA256:"), lines)
            self.assertTrue(lines[2].startswith("Password of alice changed on 127.0.0.1:"), lines)
            self.assertEqual(len(lines), 3, lines)
            self.assertEqual((s3, err3), (0, ""))
            self.assertTrue(out3.startswith("Authentication success"))
            self.assertEqual((s4, out4), (1, ""))
            self.assertEqual(err4, "keyx-client: authentication failed "
                                   "(wrong password or unknown user)\n")
            changed = [line for line in log if "changed the password" in line]
            self.assertEqual(len(changed), 1, log)
            self.assertFalse([line for line in log if "secret" in line or "Traceback" in line])
            stored = userfile.read_users(self.users)
            self.assertEqual(list(stored), ["alice"])
            self.assertEqual(stored["alice"].scheme, "opaque")

        return defer.Deferred.fromCoroutine(check())

    def test_usage_errors(self):
        from twisted_keyx.cli import client

        async def check():
            results = []
            for argv in (("passwd", "--password-file", self.write("old", "x"),
                          "--new-password-file", self.write("new", "tab\there")),
                         ("--new-password-file", self.write("n", "y"),
                          "--password-file", self.write("o", "x"))):
                results.append(await self.client(1, *argv))
            return results

        async def verify():
            (s1, out1, err1), (s2, out2, err2) = await check()
            self.assertEqual((s1, out1), (client.EXIT_USAGE, ""))
            self.assertEqual(err1, "keyx-client: new password: the password holds a control "
                                   "character (a tab, a newline...)\n")
            self.assertEqual((s2, out2, err2), (client.EXIT_USAGE, "", "keyx-client: "
                                                "--new-password-file is for passwd\n"))

        return defer.Deferred.fromCoroutine(verify())
