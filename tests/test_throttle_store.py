"""The guess throttle behind a store that answers later or not at all, the
refusal lines on the client's side, and the SQL throttle store (SQLite here;
PostgreSQL in tests.test_postgresql)."""

import os

from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.logger import capturedLogs, formatEvent
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from twisted_keyx.cli import client as cli_client
from twisted_keyx.core.adapter import PauseReason
from twisted_keyx.core.interfaces import IThrottleStore, StoreUnavailable
from twisted_keyx.core.refusals import (
    UNAVAILABLE_REPLY, ServerUnavailable, TooManyAttempts, too_many_line)
from twisted_keyx.eke.protocol import EKEServerFactory
from twisted_keyx.opaque import handshake as opaque_hs
from twisted_keyx.service.sqlstore import SQLThrottleStore
from twisted_keyx.service.throttle import DAY, GuessLimits, GuessThrottle, MemoryThrottleStore

from tests.helpers import PASSWORD, RecordingRandom, Users, make_user
from tests.opaque_helpers import CHEAP_LIMITS
from tests.test_eke_protocol import client_machine, up_to_step_4

USERS = Users(alice=make_user("alice"))


class SlowStore:
    """A MemoryThrottleStore whose answers come ``delay`` seconds later on
    ``clock``, or fail with StoreUnavailable when ``down``."""

    def __init__(self, clock, delay=0.5):
        self.clock = clock
        self.delay = delay
        self.down = False
        self.inner = MemoryThrottleStore()

    def _later(self, method, *args):
        if self.down:
            return task.deferLater(self.clock, self.delay, self._fail)
        return task.deferLater(self.clock, self.delay, lambda: None).addCallback(
            lambda _: method(*args))

    @staticmethod
    def _fail():
        raise StoreUnavailable("postgresql: connection refused")

    def charge(self, *args):
        return self._later(self.inner.charge, *args)

    def release(self, *args):
        return self._later(self.inner.release, *args)

    def settle(self, *args):
        return self._later(self.inner.settle, *args)


class SlowStoreTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.store = SlowStore(self.clock)
        self.factory = EKEServerFactory(
            USERS, random_bytes=RecordingRandom(b"s"),
            throttle=GuessThrottle(GuessLimits(), self.clock, store=self.store))

    def attempt(self, password=PASSWORD):
        return up_to_step_4(self.factory, password, IPv4Address("TCP", "192.0.2.7", 4000))

    def test_step_4_waits_for_the_store_then_the_login_goes_on(self):
        protocol, transport, client = self.attempt()
        self.assertEqual(transport.value(), b"")
        self.assertIn(PauseReason.WORKING, protocol.paused)  # nothing read meanwhile
        self.clock.advance(0.5)
        step5 = client.receive(transport.value()[:-1])
        transport.clear()
        protocol.dataReceived(step5 + b"\n")
        step7 = client.receive(transport.value()[:-1])
        transport.clear()
        protocol.dataReceived(step7 + b"\n")
        self.assertIsNone(client.receive(transport.value()[:-1]))
        self.assertTrue(client.finished)

    def test_a_store_down_refuses_with_its_own_line(self):
        self.store.down = True
        with capturedLogs() as events:
            protocol, transport, client = self.attempt()
            self.clock.advance(0.5)
        self.assertEqual(transport.value(), UNAVAILABLE_REPLY + b"\n")
        self.assertFalse(transport.connected)
        text = [formatEvent(e) for e in events]
        self.assertTrue(any("the store is unavailable (postgresql: connection refused)" in line
                            for line in text), text)
        self.assertFalse(any("Traceback" in line for line in text))
        failure = self.assertRaises(ServerUnavailable, client.receive, UNAVAILABLE_REPLY)
        self.assertEqual(failure.reason,
                         "the server cannot check passwords right now; try again later")

    def test_a_connection_lost_while_waiting_ends_when_the_store_answers(self):
        protocol, transport, client = self.attempt()
        with capturedLogs() as events:
            transport.loseConnection()
            self.assertFalse(protocol.ended)
            self.clock.advance(0.5)
        self.assertTrue(protocol.ended)
        self.assertFalse(any("Traceback" in formatEvent(e) for e in events))


class ClientRefusalTests(unittest.TestCase):
    """The clients tell a refusal from a wrong password."""

    def test_eke_client(self):
        client = client_machine()
        client.start()
        client.receive(b"yes " + b"A" * 22 + b"== scrypt 1024 8 1")
        failure = self.assertRaises(TooManyAttempts, client.receive, too_many_line(7))
        self.assertEqual(failure.retry_after, 7)
        self.assertEqual(str(failure), "too many attempts for this user; try again in 7 s")

    def test_opaque_client(self):
        client = opaque_hs.OPAQUEClientHandshake("alice", "pw", ksf_limits=CHEAP_LIMITS)
        client.start()
        self.assertRaises(TooManyAttempts, client.receive, too_many_line(3))
        client = opaque_hs.OPAQUEClientHandshake("alice", "pw", ksf_limits=CHEAP_LIMITS)
        client.start()
        self.assertRaises(ServerUnavailable, client.receive, UNAVAILABLE_REPLY)

    def test_keyx_client_exit_statuses(self):
        for exception, status, text in (
                (TooManyAttempts(3), cli_client.EXIT_TOO_MANY_ATTEMPTS,
                 "too many attempts for this user; try again in 3 s"),
                (ServerUnavailable(), cli_client.EXIT_SERVER_UNAVAILABLE,
                 "the server cannot check passwords right now; try again later")):
            outcome = defer.Deferred.fromCoroutine(cli_client.await_handshake(
                task.Clock(), 10, defer.fail(exception),
                {opaque_hs.AuthenticationFailed: "authentication failed ({})"}))
            error = self.failureResultOf(outcome, cli_client.ClientError).value
            self.assertEqual((str(error), error.status), (text, status))
        self.assertNotEqual(cli_client.EXIT_TOO_MANY_ATTEMPTS, cli_client.EXIT_HANDSHAKE_FAILED)
        self.assertIn("4 too many attempts", cli_client.EXIT_STATUS_HELP)


class SQLThrottleStoreTests(unittest.TestCase):
    """The SQL store on SQLite, through adbapi's threads: the policy of the
    memory store, and two stores on one file (two workers) counting as one."""

    def setUp(self):
        self.path = os.path.abspath(self.mktemp())
        self.now = 1_000_000.0
        self.limits = GuessLimits()
        self.stores = []

    def tearDown(self):
        for store in self.stores:
            store.close()

    def store(self, path=None):
        store = SQLThrottleStore.sqlite(path or self.path)
        self.stores.append(store)
        return store

    async def delays(self, store, count, user="alice", source="192.0.2.1"):
        out = []
        for _ in range(count):
            charge = await store.charge(user, source, self.now, self.limits)
            out.append(charge.delay)
        return out

    def test_it_provides_the_interface(self):
        self.assertTrue(verifyObject(IThrottleStore, self.store()))

    def test_two_processes_count_as_one(self):
        async def run():
            one, two = self.store(), self.store()
            delays = []
            for i in range(8):
                delays += await self.delays(one if i % 2 else two, 1,
                                            source=f"198.51.100.{i}")
            self.assertEqual(delays, [0, 0, 0, 0, 1, 2, 3, 4])
            self.assertEqual((await self.delays(one, 12))[-1], None)
        return defer.Deferred.fromCoroutine(run())

    def test_familiar_sources_and_refunds(self):
        async def run():
            store = self.store()
            await self.delays(store, 1)
            await store.settle("alice", "192.0.2.1", self.now, self.limits)
            self.assertTrue(await store.familiar("alice", "192.0.2.1", self.now, self.limits))
            # The refunded login left the user's bucket empty.
            self.assertEqual(await self.delays(store, 4, source="203.0.113.1"), [0, 0, 0, 0])
            for i in range(30):
                await self.delays(store, 1, source=f"127.0.0.{i + 1}")
            self.assertEqual(await self.delays(store, 1, source="203.0.113.2"), [None])
            charge = await store.charge("alice", "192.0.2.1", self.now, self.limits)
            self.assertEqual((charge.delay, charge.familiar), (0, True))
            await store.release("alice", "192.0.2.1", self.now, self.limits)
            self.now += 31 * DAY
            self.assertFalse(await store.familiar("alice", "192.0.2.1", self.now, self.limits))
            # 34 buckets (alice, 32 sources) and one familiar pair, all past.
            self.assertEqual(await store.prune(self.now, self.limits), 35)
            self.assertEqual(await store.prune(self.now, self.limits), 0)
        return defer.Deferred.fromCoroutine(run())

    def test_a_file_that_cannot_be_opened_is_unavailable(self):
        store = SQLThrottleStore.sqlite(self.path)
        self.stores.append(store)
        os.unlink(self.path)
        os.mkdir(self.path)  # a folder where the file was: SQLite cannot write
        outcome = store.charge("alice", "192.0.2.1", self.now, self.limits)
        return self.assertFailure(outcome, StoreUnavailable)
