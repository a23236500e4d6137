"""The stores behind the interfaces of twisted_keyx.core.interfaces: the
JSON user file as an IUserStore (reloaded off the reactor thread, written
under its lock), and how the password servers take a store that answers
later or not at all."""

import os

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransportWithDisconnection
from twisted.logger import capturedLogs, formatEvent
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from twisted_keyx.core.adapter import PauseReason
from twisted_keyx.core.interfaces import IUserStore, StoreConflict, StoreUnavailable
from twisted_keyx.core.refusals import UNAVAILABLE_REPLY, ServerUnavailable
from twisted_keyx.eke.protocol import EKEServerFactory
from twisted_keyx.opaque.protocol import OPAQUEServerFactory
from twisted_keyx.service import userfile
from twisted_keyx.service.userfile import UserFile, run_now

from tests.helpers import RecordingRandom, make_user
from tests.test_eke_protocol import USERS, client_machine

PEER = IPv4Address("TCP", "192.0.2.7", 4242)


class InThread:
    """A ``run_in_thread`` that holds each call until the test runs it."""

    def __init__(self):
        self.calls = []

    def __call__(self, function, *args):
        done = defer.Deferred()
        self.calls.append((function, args, done))
        return done

    def run_next(self):
        function, args, done = self.calls.pop(0)
        done.callback(function(*args))


class UserFileStoreTests(unittest.TestCase):
    def setUp(self):
        self.path = os.path.abspath(self.mktemp())
        userfile.write_users(self.path, {"alice": make_user("alice")})

    def test_it_provides_the_interface(self):
        self.assertTrue(verifyObject(IUserStore, UserFile(self.path)))

    def test_a_changed_file_is_parsed_off_the_reactor_thread(self):
        thread = InThread()
        users = UserFile(self.path, run_in_thread=thread)
        users.load()
        self.assertIsNotNone(self.successResultOf(users.lookup("alice")))  # unchanged: at once
        self.assertEqual(thread.calls, [])
        userfile.write_users(self.path, {"bob": make_user("bob")})
        parsed = []
        real_parse = userfile.parse_users
        self.patch(userfile, "parse_users", lambda data: parsed.append(1) or real_parse(data))
        first, second = users.lookup("bob"), users.lookup("alice")
        # Nothing parsed here: one read for both lookups, waiting in its thread.
        self.assertNoResult(first)
        self.assertNoResult(second)
        self.assertEqual((parsed, len(thread.calls)), ([], 1))
        with capturedLogs():
            thread.run_next()
        self.assertEqual(parsed, [1])
        self.assertEqual(self.successResultOf(first).name, "bob")
        self.assertIsNone(self.successResultOf(second))

    def test_a_reload_that_breaks_is_unavailable_not_a_hang(self):
        def broken(function, *args):
            return defer.fail(MemoryError())

        users = UserFile(self.path, run_in_thread=broken)
        with capturedLogs() as events:
            self.failureResultOf(users.lookup("alice"), StoreUnavailable)
        self.assertTrue(any("reading user file" in formatEvent(e) for e in events))
        self.assertEqual(len(self.flushLoggedErrors(MemoryError)), 1)

    def test_writes(self):
        users = UserFile(self.path, run_in_thread=run_now)
        bob, bob2 = make_user("bob"), make_user("bob", seed=b"2")
        self.successResultOf(users.add("bob", bob))
        self.failureResultOf(users.add("bob", bob), StoreConflict)
        self.failureResultOf(users.replace("bob", bob2, bob), StoreConflict)
        self.successResultOf(users.replace("bob", bob, bob2))
        self.assertEqual(userfile.read_users(self.path)["bob"], bob2)
        self.assertTrue(self.successResultOf(users.remove("bob")))
        self.assertFalse(self.successResultOf(users.remove("bob")))
        self.assertEqual(self.successResultOf(users.count("eke")), 1)
        self.assertEqual(list(self.successResultOf(users.users())), ["alice"])

    def test_an_interrupted_replace_keeps_the_old_record(self):
        """A change of password whose write fails midway (the disk full at
        the rename): the file keeps the old record, and the store says it
        is unavailable (the machine then says: not changed)."""
        users = UserFile(self.path, run_in_thread=run_now)
        alice = userfile.read_users(self.path)["alice"]
        with open(self.path, "rb") as f:
            before = f.read()

        def broken_replace(source, destination):
            raise OSError(28, "No space left on device")

        self.patch(os, "replace", broken_replace)
        self.failureResultOf(users.replace("alice", alice, make_user("alice", seed=b"2")),
                             StoreUnavailable)
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), before)
        self.assertEqual(userfile.read_users(self.path)["alice"], alice)

    def test_a_write_that_cannot_be_made_is_unavailable(self):
        users = UserFile(os.path.join(self.path, "not-a-directory", "users.json"),
                         run_in_thread=run_now)
        self.failureResultOf(users.add("bob", make_user("bob")), StoreUnavailable)


class LaterStore:
    """An IUserStore over ``USERS`` that answers when told to."""

    def __init__(self, down=False):
        self.asked = []
        self.down = down

    def lookup(self, name, scheme):
        answer = defer.Deferred()
        self.asked.append((name, scheme, answer))
        return answer

    def answer_all(self):
        for name, scheme, answer in self.asked:
            if self.down:
                answer.errback(StoreUnavailable("postgresql: connection refused"))
            else:
                answer.callback(USERS.lookup(name, scheme))
        self.asked = []


class StoreAnswersLaterTests(unittest.TestCase):
    """The server's machine asks for the record; the adapter waits for the
    store without blocking, reading nothing meanwhile."""

    def serve(self, store, factory=EKEServerFactory, *args):
        server = factory(store, *args, random_bytes=RecordingRandom(b"s")) \
            if factory is EKEServerFactory else factory(store, *args)
        protocol = server.buildProtocol(PEER)
        transport = StringTransportWithDisconnection(peerAddress=PEER)
        transport.protocol = protocol
        protocol.makeConnection(transport)
        return protocol, transport

    def test_step_2_waits_for_the_record(self):
        store = LaterStore()
        protocol, transport = self.serve(store)
        client = client_machine()
        # Step 1 and, in the same read, a line that must wait its turn.
        protocol.dataReceived(client.start() + b"\n" + b"early\n")
        self.assertEqual([(n, s) for n, s, _ in store.asked], [("alice", "eke")])
        self.assertEqual(transport.value(), b"")
        self.assertIn(PauseReason.WORKING, protocol.paused)
        store.answer_all()
        # The answer, then the queued line, refused in its turn as step 3.
        self.assertEqual(transport.value().split(b"\n")[0][:4], b"yes ")
        self.assertEqual(transport.value().split(b"\n")[1], b"authentication failed")
        self.assertFalse(transport.connected)

    def test_the_login_goes_on_after_the_answer(self):
        store = LaterStore()
        protocol, transport = self.serve(store)
        client = client_machine()
        line = client.start()
        while line is not None:
            protocol.dataReceived(line + b"\n")
            store.answer_all()
            reply = transport.value()
            transport.clear()
            line = client.receive(reply[:-1])
        self.assertTrue(client.finished)
        self.assertIsNotNone(protocol.chat)

    def test_a_store_down_is_a_documented_refusal(self):
        store = LaterStore(down=True)
        protocol, transport = self.serve(store)
        client = client_machine()
        with capturedLogs() as events:
            protocol.dataReceived(client.start() + b"\n")
            store.answer_all()
        self.assertEqual(transport.value(), UNAVAILABLE_REPLY + b"\n")
        self.assertFalse(transport.connected)
        text = [formatEvent(e) for e in events]
        self.assertTrue(any("the store is unavailable (postgresql: connection refused)" in line
                            for line in text), text)
        self.assertFalse(any("Traceback" in line for line in text), text)
        self.assertRaises(ServerUnavailable, client.receive, UNAVAILABLE_REPLY)

    def test_a_store_that_raises_is_a_refusal_too(self):
        class Broken:
            def lookup(self, name, scheme):
                raise KeyError(name)  # a bug in the store

        protocol, transport = self.serve(Broken())
        with capturedLogs() as events:
            protocol.dataReceived(b"alice\n")
        self.assertEqual(transport.value(), UNAVAILABLE_REPLY + b"\n")
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)
        self.assertTrue(any("a store failed" in formatEvent(e) for e in events))

    def test_opaque_asks_for_its_own_scheme(self):
        from twisted_keyx.opaque.handshake import OPAQUEClientHandshake
        from tests.opaque_helpers import CHEAP_LIMITS, cheap_setup
        store = LaterStore()
        server = OPAQUEServerFactory(store, cheap_setup())
        protocol = server.buildProtocol(PEER)
        transport = StringTransportWithDisconnection(peerAddress=PEER)
        transport.protocol = protocol
        protocol.makeConnection(transport)
        client = OPAQUEClientHandshake("alice", "a password", ksf_limits=CHEAP_LIMITS)
        protocol.dataReceived(client.start() + b"\n")
        self.assertEqual([(n, s) for n, s, _ in store.asked], [("alice", "opaque")])
        self.assertEqual(transport.value(), b"")


class ServerSetupStoreTests(unittest.TestCase):
    def test_key_file(self):
        from twisted_keyx.core.interfaces import IServerSetupStore
        from twisted_keyx.opaque.scheme import create_key_file
        from twisted_keyx.opaque.setupfile import KeyFileSetup, SetupInMemory
        from tests.opaque_helpers import CHEAP_ARGON2ID

        path = os.path.abspath(self.mktemp())
        store = KeyFileSetup(path, run_in_thread=run_now)
        self.assertTrue(verifyObject(IServerSetupStore, store))
        self.assertIsNone(self.successResultOf(store.load()))
        setup = create_key_file(path, CHEAP_ARGON2ID)
        self.assertEqual(self.successResultOf(store.load()).dumps(), setup.dumps())
        os.chmod(path, 0o644)
        failure = self.failureResultOf(store.load(), StoreUnavailable)
        self.assertIn("readable by group or others", str(failure.value))
        memory = SetupInMemory(setup)
        self.assertTrue(verifyObject(IServerSetupStore, memory))
        self.assertIs(self.successResultOf(memory.load()), setup)

    def test_create(self):
        from twisted_keyx.opaque.records import ServerSetup
        from twisted_keyx.opaque.setupfile import KeyFileSetup, SetupInMemory
        from tests.opaque_helpers import CHEAP_ARGON2ID

        path = os.path.abspath(self.mktemp())
        store = KeyFileSetup(path, run_in_thread=run_now)
        self.assertEqual(store.where, path)
        first = ServerSetup.generate(CHEAP_ARGON2ID)
        second = ServerSetup.generate(CHEAP_ARGON2ID)
        self.assertIs(self.successResultOf(store.create(first)), first)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        # Another one is not written: the first one stays every daemon's.
        self.assertEqual(self.successResultOf(store.create(second)).dumps(), first.dumps())
        self.assertEqual(self.successResultOf(store.load()).dumps(), first.dumps())
        memory = SetupInMemory(None)
        self.assertIs(self.successResultOf(memory.create(first)), first)
        self.assertIs(self.successResultOf(memory.create(second)), first)

    def test_create_where_it_cannot(self):
        from twisted_keyx.opaque.records import ServerSetup
        from twisted_keyx.opaque.setupfile import KeyFileSetup
        from tests.opaque_helpers import CHEAP_ARGON2ID

        store = KeyFileSetup(os.path.join(os.path.abspath(self.mktemp()), "no", "key"),
                             run_in_thread=run_now)
        failure = self.failureResultOf(store.create(ServerSetup.generate(CHEAP_ARGON2ID)),
                                       StoreUnavailable)
        self.assertIn("cannot write", str(failure.value))
