"""Registration with an invitation code on the OPAQUE endpoint: the wire
machines (twisted_keyx.opaque.handshake: ``register``), the factory's store
calls (twisted_keyx.opaque.protocol), and a registration then a login over
a real socket (docs/opaque.rst, Registration)."""

import os

from twisted.internet import defer, endpoints, reactor
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent
from twisted.test import iosim
from twisted.trial import unittest

from tests.opaque_helpers import CHEAP_LIMITS, CountingRandom, cheap_setup
from twisted_keyx.core.decisions import NeedInvitation, Register, Registered
from twisted_keyx.core.interfaces import Invitation, StoreConflict, StoreUnavailable
from twisted_keyx.core.machine import HandshakeFailed
from twisted_keyx.core.refusals import UNAVAILABLE_REPLY
from twisted_keyx.opaque import handshake as hs, invitation as protocol
from twisted_keyx.opaque.protocol import (
    OPAQUEClientFactory,
    OPAQUERegistrationFactory,
    OPAQUEServerFactory,
)
from twisted_keyx.opaque.scheme import OpaqueUser, new_user
from twisted_keyx.service import invitations as invitationfile, userfile
from twisted_keyx.service.invitations import InvitationFile
from twisted_keyx.service.userfile import UserFile, run_now

SETUP = cheap_setup()
PASSWORD = "a new password"
NOW = 1_800_000_000.0
CODE = protocol.new_code(CountingRandom(3))


def pending(user="bob", code=CODE, expires=NOW + 3600):
    return Invitation(user, protocol.code_hash(code), NOW - 10, expires)


class MachineTests(unittest.TestCase):
    """The server machine's questions, answered by hand."""

    def start(self, code=CODE, user="bob"):
        server = hs.OPAQUEServerHandshake(SETUP, rng=CountingRandom(1), clock=lambda: NOW)
        client = hs.OPAQUERegistrationClient(user, PASSWORD, code, ksf_limits=CHEAP_LIMITS,
                                             rng=CountingRandom(2))
        first = client.start()
        self.assertTrue(first.startswith(b"register "))
        self.assertTrue(first.endswith(b" " + user.encode()))
        question = server.feed(first)
        self.assertEqual(question, NeedInvitation(user))
        return server, client, question

    def test_register(self):
        server, client, question = self.start()
        r2 = server.answer(question, pending())
        self.assertEqual(len(r2), hs.R2_LINE)
        self.assertEqual(server.state, hs.OPAQUEServerState.AWAIT_R3)
        r3 = client.receive(r2)
        self.assertEqual(len(r3), hs.R3_LINE)
        # One question: redeem the code and add the user, both or neither.
        register = server.feed(r3)
        self.assertIsInstance(register, Register)
        self.assertEqual((register.user, register.code_hash), ("bob", protocol.code_hash(CODE)))
        self.assertIsInstance(register.record, OpaqueUser)
        self.assertEqual(register.record.name, "bob")
        self.assertEqual(register.record.record, client._client.record)
        # Stored: the machine says so (Registered), and no chat follows.
        self.assertEqual(server.answer(register, True), (hs.REGISTERED, Registered("bob")))
        self.assertTrue(server.registered)
        self.assertIsNone(server.result)  # not a login: no session
        self.assertEqual(client.receive(hs.REGISTERED), None)
        self.assertEqual(client.result, "bob")

    def refused_by_client(self, invitation, code=CODE):
        server, client, question = self.start(code=code)
        r2 = server.answer(question, invitation)
        with self.assertRaises(hs.RegistrationFailed) as caught:
            client.receive(r2)
        self.assertIn("does not know this invitation code", str(caught.exception))
        return r2

    def test_unknown_used_expired_revoked_wrong_code_same_reply(self):
        other = protocol.new_code(CountingRandom(9))
        replies = [
            self.refused_by_client(None),
            self.refused_by_client(Invitation("bob", protocol.code_hash(CODE), NOW - 10,
                                              NOW + 3600, "used")),
            self.refused_by_client(Invitation("bob", protocol.code_hash(CODE), NOW - 10,
                                              NOW + 3600, "revoked")),
            self.refused_by_client(pending(expires=NOW - 1)),
            self.refused_by_client(pending(code=other)),
        ]
        # The same size, and only random-looking bytes (server nonce fixed here).
        self.assertEqual({len(r) for r in replies}, {hs.R2_LINE})

    def register_answered(self, answer):
        server, client, question = self.start()
        r3 = client.receive(server.answer(question, pending()))
        register = server.feed(r3)
        with self.assertRaises(HandshakeFailed) as caught:
            server.answer(register, answer)
        self.assertFalse(server.registered)
        return caught.exception

    def test_redeem_refused_no_user_added(self):
        refused = self.register_answered(False)
        self.assertEqual(refused.reply, hs.FAILURE_REPLY)
        self.assertIn("the invitation was used meanwhile", str(refused))

    def test_user_exists_refused(self):
        refused = self.register_answered(StoreConflict("user 'bob' exists already"))
        self.assertEqual(refused.reply, hs.FAILURE_REPLY)
        self.assertIn("not stored: user 'bob' exists already", str(refused))

    def test_store_down_is_the_store_refusal(self):
        self.assertEqual(self.register_answered(StoreUnavailable("down")).reply,
                         UNAVAILABLE_REPLY)

    def test_store_error_refused_in_one_line(self):
        refused = self.register_answered(RuntimeError("insert refused\nDETAIL: a trigger"))
        self.assertEqual(refused.reply, hs.FAILURE_REPLY)
        self.assertTrue(str(refused).endswith("not stored: insert refused"), str(refused))

    def test_forged_r3_refused_before_redeem(self):
        server, client, question = self.start()
        client.receive(server.answer(question, pending()))
        forged = hs.encode_item(os.urandom(protocol.R3_SIZE))
        with self.assertRaises(HandshakeFailed) as caught:
            server.feed(forged)
        self.assertEqual(caught.exception.reply, hs.FAILURE_REPLY)

    def test_malformed_register_line(self):
        for line in (b"register", b"register xyz bob", b"register " + b"A" * hs.R1_LINE,
                     b"register " + b"!" * hs.R1_LINE + b" bob"):
            server = hs.OPAQUEServerHandshake(SETUP, clock=lambda: NOW)
            with self.assertRaises(HandshakeFailed) as caught:
                server.feed(line)
            self.assertEqual(caught.exception.reply, hs.FAILURE_REPLY, line)

    def test_bad_code_refused_by_client_before_connecting(self):
        with self.assertRaises(ValueError):
            hs.OPAQUERegistrationClient("bob", PASSWORD, "not a code", ksf_limits=CHEAP_LIMITS)


class MemoryUsers:
    """lookup and add of IUserStore, at once (UserFile's run in threads)."""

    def __init__(self):
        self.records = {}

    def lookup(self, name, scheme):
        record = self.records.get(name)
        return defer.succeed(record if record is not None and record.scheme == scheme else None)

    def add(self, name, record):
        if name in self.records:
            return defer.fail(StoreConflict(f"user {name!r} exists"))
        self.records[name] = record
        return defer.succeed(None)


class StoreTests(unittest.TestCase):
    """The factory over the invitation file and the user file beside it
    (their I/O at once, not in threads), pumped in memory."""

    def setUp(self):
        directory = self.mktemp()
        os.mkdir(directory)
        self.users = UserFile(os.path.join(directory, "users.json"), run_in_thread=run_now)
        self.invitations = InvitationFile(os.path.join(directory, "invitations.json"),
                                          users=self.users)
        self.successResultOf(self.invitations.invite(pending()))
        self.factory = OPAQUEServerFactory(self.users, SETUP, invitations=self.invitations,
                                           clock=lambda: NOW)

    def stored(self):
        return self.successResultOf(self.users.users())

    def state(self):
        return self.successResultOf(self.invitations.lookup("bob")).state

    def connect(self, client_factory):
        server = self.factory.buildProtocol(None)
        client = client_factory.buildProtocol(None)
        transport = iosim.makeFakeServer(server)
        pump = iosim.connect(server, transport, client, iosim.makeFakeClient(client))
        return client, pump

    def register(self, code=CODE, user="bob", password=PASSWORD):
        return self.connect(OPAQUERegistrationFactory(user, password, code,
                                                      ksf_limits=CHEAP_LIMITS, worker=None))

    def login(self, password=PASSWORD):
        return self.connect(OPAQUEClientFactory("bob", password, ksf_limits=CHEAP_LIMITS,
                                                worker=None))

    def test_register_then_login(self):
        client, _ = self.register()
        self.assertEqual(self.successResultOf(client.authenticated), "bob")
        self.successResultOf(client.disconnected)
        stored = self.successResultOf(self.users.lookup("bob", "opaque"))
        self.assertEqual(stored.name, "bob")
        self.assertEqual(self.successResultOf(self.invitations.lookup("bob")).state, "used")
        client, _ = self.login()
        self.assertEqual(self.successResultOf(client.authenticated).user, "bob")
        client, _ = self.login(password="not it")
        self.failureResultOf(client.authenticated, hs.AuthenticationFailed)

    def test_code_works_once(self):
        client, _ = self.register()
        self.successResultOf(client.authenticated)
        client, _ = self.register(password="another")
        self.failureResultOf(client.authenticated, hs.RegistrationFailed)
        self.assertEqual(list(self.stored()), ["bob"])
        # The first password still logs in; the second does not.
        client, _ = self.login()
        self.successResultOf(client.authenticated)
        client, _ = self.login(password="another")
        self.failureResultOf(client.authenticated, hs.AuthenticationFailed)

    def test_wrong_code_refused_invitation_kept(self):
        client, _ = self.register(code=protocol.new_code(CountingRandom(9)))
        failure = self.failureResultOf(client.authenticated, hs.RegistrationFailed)
        self.assertIn("does not know this invitation code", failure.getErrorMessage())
        self.assertIsNone(self.successResultOf(self.users.lookup("bob", "opaque")))
        self.assertEqual(self.successResultOf(self.invitations.lookup("bob")).state, "pending")
        # The right code still works.
        client, _ = self.register()
        self.successResultOf(client.authenticated)

    def test_wrong_code_and_unknown_user_same_wire(self):
        def r2_length(user, code):
            server = self.factory.buildProtocol(None)
            transport = StringTransport()
            server.makeConnection(transport)
            client = hs.OPAQUERegistrationClient(user, PASSWORD, code, ksf_limits=CHEAP_LIMITS)
            server.dataReceived(client.start() + b"\n")
            return len(transport.value()), transport.disconnecting

        wrong = protocol.new_code(CountingRandom(9))
        self.assertEqual(r2_length("bob", wrong), r2_length("nobody", CODE))
        self.assertEqual(r2_length("bob", wrong), (hs.R2_LINE + 1, False))

    def test_existing_user_not_replaced_code_kept(self):
        existing = new_user("bob", "set by the admin", SETUP)
        self.successResultOf(self.users.add("bob", existing))
        with capturedLogs() as events:
            client, _ = self.register()
        self.failureResultOf(client.authenticated, hs.RegistrationFailed)
        self.assertEqual(self.stored(), {"bob": existing})
        # Nothing changed: the register was refused whole.
        self.assertEqual(self.state(), "pending")
        log = [formatEvent(e) for e in events]
        self.assertTrue([line for line in log if "exists already" in line], log)

    def test_user_file_not_written_code_still_works(self):
        """The user's write fails after the code was checked: the code is
        not used up (it was, with a redeem then an add)."""
        full, write_users = [True], userfile.write_users

        def unwritable(path, users):
            if full:
                raise userfile.UserFileError(f"cannot write {path}: No space left on device")
            write_users(path, users)

        self.patch(userfile, "write_users", unwritable)
        with capturedLogs() as events:
            client, _ = self.register()
        failure = self.failureResultOf(client.authenticated)
        self.assertIn("cannot check passwords right now", failure.getErrorMessage())
        self.assertTrue([e for e in events if "No space left" in formatEvent(e)])
        self.assertEqual(self.stored(), {})
        self.assertEqual(self.state(), "pending")
        # The disk has room again: the same code registers.
        full.clear()
        client, _ = self.register()
        self.assertEqual(self.successResultOf(client.authenticated), "bob")
        self.assertEqual(list(self.stored()), ["bob"])
        self.assertEqual(self.state(), "used")

    def test_invitation_not_marked_used_user_registered(self):
        """The user is stored, then the invitation file cannot be written
        (or the daemon dies between the two): registered, the invitation
        still says pending, and its code registers no one again."""
        def unwritable(path, data, mode):
            raise OSError(28, "No space left on device")

        self.patch(invitationfile, "write_file_atomically", unwritable)
        with capturedLogs() as events:
            client, _ = self.register()
        self.assertEqual(self.successResultOf(client.authenticated), "bob")
        self.assertEqual(list(self.stored()), ["bob"])
        self.assertEqual(self.state(), "pending")
        log = [formatEvent(e) for e in events]
        self.assertTrue([line for line in log if "registered, but the invitation file" in line
                         and "No space left" in line], log)
        client, _ = self.register(password="another")
        self.failureResultOf(client.authenticated, hs.RegistrationFailed)
        client, _ = self.login()
        self.successResultOf(client.authenticated)
        client, _ = self.login(password="another")
        self.failureResultOf(client.authenticated, hs.AuthenticationFailed)

    def test_without_invitation_store_no_one_registers(self):
        self.factory = OPAQUEServerFactory(self.users, SETUP, clock=lambda: NOW)
        client, _ = self.register()
        self.failureResultOf(client.authenticated, hs.RegistrationFailed)
        self.assertIsNone(self.successResultOf(self.users.lookup("bob", "opaque")))
        self.assertEqual(self.state(), "pending")


class SocketTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_register_and_login_over_tcp(self):
        directory = self.mktemp()
        os.mkdir(directory)
        users = UserFile(os.path.join(directory, "users.json"))
        invitations = InvitationFile(os.path.join(directory, "invitations.json"), users=users)
        code = protocol.new_code()
        yield invitations.invite(Invitation("carol", protocol.code_hash(code), 0,
                                            reactor.seconds() + 60))
        port = reactor.listenTCP(0, OPAQUEServerFactory(users, SETUP, invitations=invitations),
                                 interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port)
        client = OPAQUERegistrationFactory("carol", PASSWORD, code,
                                           ksf_limits=CHEAP_LIMITS).buildProtocol(None)
        yield endpoints.connectProtocol(endpoint, client)
        self.assertEqual((yield client.authenticated), "carol")
        yield client.disconnected
        client = OPAQUEClientFactory("carol", PASSWORD, ksf_limits=CHEAP_LIMITS).buildProtocol(None)
        yield endpoints.connectProtocol(endpoint, client)
        result = yield client.authenticated
        self.assertEqual(result.user, "carol")
        client.quit()
        yield client.finished
        yield client.disconnected


class ByHandTests(unittest.TestCase):
    def test_receive_without_stores_registers_no_one(self):
        """receive() answers the questions itself: no invitation store, so
        a registration gets r2 no client accepts."""
        server = hs.OPAQUEServerHandshake(SETUP, clock=lambda: NOW)
        client = hs.OPAQUERegistrationClient("bob", PASSWORD, CODE, ksf_limits=CHEAP_LIMITS)
        r2 = server.receive(client.start())
        self.assertEqual(len(r2), hs.R2_LINE)
        self.assertRaises(hs.RegistrationFailed, client.receive, r2)
