"""PostgreSQL behind the stores (twisted_keyx.service.pgstore), on a real
server started for these tests (tests.pgfixture: skipped where PostgreSQL
cannot start, failed under CI)."""

import io
import os

from twisted.application import service
from twisted.internet import defer, endpoints, reactor
from twisted.logger import capturedLogs, formatEvent
from twisted.python import usage
from zope.interface.verify import verifyObject

from twisted_keyx.cli import admin
from twisted_keyx.core.refusals import ServerUnavailable
from twisted_keyx.eke import crypto
from twisted_keyx.eke.protocol import EKEClientFactory
from twisted_keyx.service import tap
from twisted_keyx.service import userfile as userstore

from twisted_keyx.core.interfaces import (
    IServerSetupStore, IThrottleStore, IUserStore, StoreConflict, StoreUnavailable)
from twisted_keyx.opaque.records import ServerSetup
from twisted_keyx.service import pgstore
from twisted_keyx.service.sqlstore import SQLThrottleStore
from twisted_keyx.service.throttle import GuessLimits

from tests.helpers import PASSWORD, TEST_KDF, TEST_LIMITS, make_user, tap_options
from tests.pgfixture import PostgreSQLTestCase


class SchemaTests(PostgreSQLTestCase):
    def setUp(self):
        super().setUp()
        self.connection = pgstore.connect(self.server.database())
        self.addCleanup(self.connection.close)

    def test_an_empty_database_is_refused_in_one_line(self):
        error = self.assertRaises(pgstore.StoreError, pgstore.check_schema,
                                  self.connection, "postgresql://u:secret@/db?host=/x")
        self.assertNotIn("\n", str(error))
        self.assertIn("has no twisted-keyx schema (empty); run: keyx-admin store-upgrade --store", str(error))
        self.assertIn("store-upgrade", str(error))
        self.assertNotIn("secret", str(error))

    def test_upgrade_creates_then_finds_it_done(self):
        self.assertEqual(pgstore.upgrade(self.connection), (0, pgstore.SCHEMA_VERSION))
        self.assertEqual(pgstore.upgrade(self.connection),
                         (pgstore.SCHEMA_VERSION, pgstore.SCHEMA_VERSION))
        pgstore.check_schema(self.connection, "postgresql:///x")

    def test_an_older_schema_is_refused_then_upgraded_by_its_migrations(self):
        pgstore.upgrade(self.connection)
        later = dict(pgstore.MIGRATIONS)
        later[2] = ("CREATE TABLE keyx_later (x INTEGER)",)
        self.patch(pgstore, "MIGRATIONS", later)
        self.patch(pgstore, "SCHEMA_VERSION", 2)
        error = self.assertRaises(pgstore.StoreError, pgstore.check_schema,
                                  self.connection, "postgresql:///x")
        self.assertIn("has schema version 1, older than this twisted-keyx's (2)", str(error))
        self.assertEqual(pgstore.upgrade(self.connection), (1, 2))
        pgstore.check_schema(self.connection, "postgresql:///x")

    def test_a_newer_schema_is_refused(self):
        pgstore.upgrade(self.connection)
        with self.connection.transaction():
            self.connection.execute("UPDATE keyx_schema SET version = 99")
        error = self.assertRaises(pgstore.StoreError, pgstore.check_schema,
                                  self.connection, "postgresql:///x")
        self.assertIn("newer than this twisted-keyx's", str(error))

    def test_a_store_that_does_not_answer_is_one_line(self):
        error = self.assertRaises(pgstore.StoreError, pgstore.connect,
                                  "postgresql://nobody@/nowhere?host=/nonexistent", 2)
        self.assertIn("cannot connect to the store", str(error))
        self.assertNotIn("\n", str(error))


class StoreTests(PostgreSQLTestCase):
    """The daemon's stores on one schema; two pools act as two daemons."""

    def setUp(self):
        super().setUp()
        self.url = self.server.database()
        connection = pgstore.connect(self.url)
        pgstore.upgrade(connection)
        connection.close()
        self.sql = [pgstore.sql_store(self.url), pgstore.sql_store(self.url)]
        self.users = [pgstore.PostgreSQLUserStore(s) for s in self.sql]
        self.throttles = [SQLThrottleStore(s) for s in self.sql]
        self.now = 1_000_000.0
        self.limits = GuessLimits()

    def tearDown(self):
        for store in self.sql:
            store.close()

    def test_interfaces(self):
        self.assertTrue(verifyObject(IUserStore, self.users[0]))
        self.assertTrue(verifyObject(IServerSetupStore, pgstore.PostgreSQLSetupStore(self.sql[0])))
        self.assertTrue(verifyObject(IThrottleStore, self.throttles[0]))

    def test_users_added_in_one_daemon_are_seen_by_the_other(self):
        async def run():
            alice = make_user("alice")
            await self.users[0].add("alice", alice)
            found = await self.users[1].lookup("alice", "eke")
            self.assertEqual((found.salt, found.key), (alice.salt, alice.key))
            self.assertIsNone(await self.users[1].lookup("alice", "opaque"))
            self.assertEqual(await self.users[1].count("eke"), 1)
            with self.assertRaises(StoreConflict):
                await self.users[1].add("alice", make_user("alice"))
            new = make_user("alice", password="other")
            await self.users[1].replace("alice", alice, new)
            with self.assertRaises(StoreConflict):
                await self.users[0].replace("alice", alice, new)  # no longer the old one
            self.assertEqual((await self.users[0].users())["alice"].key, new.key)
            self.assertTrue(await self.users[0].remove("alice"))
            self.assertFalse(await self.users[1].remove("alice"))
            self.assertEqual(await self.users[0].version(), 3)
        return defer.Deferred.fromCoroutine(run())

    def test_the_opaque_setup_is_made_once(self):
        connection = pgstore.connect(self.url)
        self.addCleanup(connection.close)
        first, second = ServerSetup.generate(), ServerSetup.generate()
        self.assertEqual(pgstore.store_setup(connection, first).dumps(), first.dumps())
        self.assertEqual(pgstore.store_setup(connection, second).dumps(), first.dumps())

        async def run():
            loaded = await pgstore.PostgreSQLSetupStore(self.sql[1]).load()
            self.assertEqual(loaded.dumps(), first.dumps())
        return defer.Deferred.fromCoroutine(run())

    def test_the_setup_store_creates_once(self):
        first, second = ServerSetup.generate(), ServerSetup.generate()
        # At start-up, before the reactor runs: answered at once.
        startup = pgstore.ConnectionSetupStore(self.url)
        self.assertTrue(verifyObject(IServerSetupStore, startup))
        self.assertIsNone(self.successResultOf(startup.load()))
        self.assertEqual(self.successResultOf(startup.create(first)).dumps(), first.dumps())
        self.assertEqual(self.successResultOf(startup.create(second)).dumps(), first.dumps())

        async def run():
            store = pgstore.PostgreSQLSetupStore(self.sql[0])
            self.assertEqual((await store.create(second)).dumps(), first.dumps())
            self.assertEqual((await store.load()).dumps(), first.dumps())
        return defer.Deferred.fromCoroutine(run())

    def test_the_startup_setup_store_down(self):
        store = pgstore.ConnectionSetupStore("postgresql://nobody@/nowhere?host=/nonexistent")
        failure = self.failureResultOf(store.load(), StoreUnavailable)
        self.assertIn("cannot connect to the store", str(failure.value))

    def test_sixty_guesses_at_once_over_two_daemons_are_counted_as_one(self):
        async def run():
            charges = await defer.gatherResults([
                self.throttles[i % 2].charge("bob", f"198.51.100.{i}", self.now, self.limits)
                for i in range(60)])
            delays = sorted(c.delay for c in charges if c.delay is not None)
            self.assertEqual(delays, [0, 0, 0, 0] + list(range(1, 11)))
        return defer.Deferred.fromCoroutine(run())

    def test_familiar_sources_are_shared(self):
        async def run():
            await self.throttles[0].charge("alice", "192.0.2.1", self.now, self.limits)
            await self.throttles[0].settle("alice", "192.0.2.1", self.now, self.limits)
            for i in range(40):
                await self.throttles[1].charge("alice", f"127.0.0.{i + 1}", self.now, self.limits)
            charge = await self.throttles[1].charge("alice", "192.0.2.1", self.now, self.limits)
            self.assertEqual((charge.delay, charge.familiar), (0, True))
        return defer.Deferred.fromCoroutine(run())

    def test_the_snapshot_sees_a_user_added_elsewhere(self):
        async def run():
            snapshot = pgstore.UserSnapshot(self.users[0], "the store", {}, 0)
            with capturedLogs() as events:
                await snapshot.refresh()
                self.assertIsNone(snapshot.lookup("carol"))
                await self.users[1].add("carol", make_user("carol"))
                await snapshot.refresh()
            self.assertIsNotNone(snapshot.lookup("carol"))
            self.assertEqual(snapshot.count("eke"), 1)
            self.assertIn("reloaded the users from the store: 1 user(s)",
                          [formatEvent(e) for e in events])
        return defer.Deferred.fromCoroutine(run())


class DownTests(PostgreSQLTestCase):
    """PostgreSQL stopped and started: the stores say so, then reconnect."""

    def setUp(self):
        super().setUp()
        self.url = self.server.database()
        connection = pgstore.connect(self.url)
        pgstore.upgrade(connection)
        connection.close()
        self.sql = pgstore.sql_store(self.url)
        self.throttle = SQLThrottleStore(self.sql)
        self.users = pgstore.PostgreSQLUserStore(self.sql)
        self.addCleanup(self.sql.close)
        self.addCleanup(lambda: self.server.running or self.server.start())

    def test_unavailable_while_down_then_reconnected(self):
        limits = GuessLimits()

        async def run():
            await self.throttle.charge("alice", "192.0.2.1", 1e6, limits)
            snapshot = pgstore.UserSnapshot(self.users, "the store", {}, 0)
            self.server.stop()
            with capturedLogs() as events:
                with self.assertRaises(StoreUnavailable) as caught:
                    await self.throttle.charge("alice", "192.0.2.1", 1e6, limits)
                self.assertIn("postgresql: ", str(caught.exception))
                await snapshot.refresh()
                await snapshot.refresh()
                self.server.start()
                charge = await self.throttle.charge("alice", "192.0.2.1", 1e6, limits)
                await snapshot.refresh()
            self.assertEqual(charge.delay, 0)
            text = [formatEvent(e) for e in events]
            self.assertEqual(len([line for line in text if "does not answer" in line]), 1, text)
            self.assertIn("the store the store answers again", text)
            self.assertFalse(any("Traceback" in line or "Rollback failed" in line
                                 for line in text), text)
        return defer.Deferred.fromCoroutine(run())


class AdminTests(PostgreSQLTestCase):
    """keyx-admin --store: the schema, users, copies between stores."""

    def setUp(self):
        super().setUp()
        self.url = self.server.database()
        self.password_file = self.mktemp()
        with open(self.password_file, "w") as f:
            f.write("s3cret\n")
        os.chmod(self.password_file, 0o600)
        self.patch(crypto, "DEFAULT_SCRYPT", TEST_KDF)

    def admin(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        status = admin.main(list(argv), out, err)
        return status, out.getvalue(), err.getvalue()

    def test_users_in_a_store(self):
        status, out, err = self.admin("listusers", "--store", self.url)
        self.assertEqual(status, 1)
        self.assertRegex(err, r"^keyx-admin: the store .* has no twisted-keyx schema \(empty\); "
                              r"run: keyx-admin store-upgrade --store '.*'\n\Z")
        self.assertEqual(self.admin("store-upgrade", "--store", self.url),
                         (0, f"the store {self.url}: schema upgraded from version 0 to 1\n", ""))
        self.assertEqual(self.admin("store-upgrade", "--store", self.url)[1],
                         f"the store {self.url} has schema version 1: nothing to do\n")
        status, out, err = self.admin("adduser", "alice", "--scheme", "eke", "--store", self.url,
                                      "--password-file", self.password_file)
        self.assertEqual((status, out), (0, f"added user alice to {self.url} (scrypt n=16 r=2 p=1)\n"))
        status, out, err = self.admin("adduser", "alice", "--scheme", "eke", "--store", self.url,
                                      "--password-file", self.password_file)
        self.assertEqual(status, 1)
        self.assertIn("user 'alice' already exists in", err)
        self.assertEqual(self.admin("listusers", "--store", self.url)[1],
                         "alice  eke, scrypt n=16 r=2 p=1\n")
        # Copied to a file and into a second store, then removed from the first.
        users = os.path.abspath(self.mktemp())
        self.assertEqual(self.admin("copy-users", self.url, users)[1],
                         f"copied 1 user(s) from {self.url} to {users}\n")
        self.assertEqual(set(userstore.read_users(users)), {"alice"})
        other = self.server.database()
        self.admin("store-upgrade", "--store", other)
        self.assertEqual(self.admin("copy-users", users, other)[0], 0)
        status, _, err = self.admin("copy-users", users, other)
        self.assertEqual(status, 1)
        self.assertIn("nothing copied; --replace to overwrite", err)
        self.assertEqual(self.admin("copy-users", users, other, "--replace")[0], 0)
        self.assertEqual(self.admin("deluser", "alice", "--store", self.url)[1],
                         f"removed user alice from {self.url}\n")
        self.assertEqual(self.admin("listusers", "--store", other)[1],
                         "alice  eke, scrypt n=16 r=2 p=1\n")

    def test_a_store_that_is_no_url(self):
        status, _, err = self.admin("listusers", "--store", "users.db")
        self.assertEqual((status, err),
                         (1, "keyx-admin: --store 'users.db': not a postgresql://... URL\n"))


class DaemonTests(PostgreSQLTestCase):
    """twistd keyx --store, in this process on 127.0.0.1: the schema checked
    at start-up, logins from the store, refused while PostgreSQL is down."""

    def setUp(self):
        super().setUp()
        self.url = self.server.database()
        self.addCleanup(lambda: self.server.running or self.server.start())

    def test_an_empty_store_is_refused_in_one_line(self):
        error = self.assertRaises(usage.UsageError, tap_options, "--store", self.url)
        self.assertIn("has no twisted-keyx schema (empty)", str(error))
        self.assertNotIn("\n", str(error))

    def test_the_opaque_setup_made_by_the_first_daemon_is_every_daemons(self):
        connection = pgstore.connect(self.url)
        pgstore.upgrade(connection)
        connection.close()
        first = tap_options("--store", self.url, "--no-host-key")
        self.addCleanup(first.config.deployment.close)
        second = tap_options("--store", self.url, "--no-host-key")
        self.addCleanup(second.config.deployment.close)
        made, read = first.config.settings["opaque"], second.config.settings["opaque"]
        # Read through IServerSetupStore, the database's, as the key file's is.
        self.assertTrue(verifyObject(IServerSetupStore, made.store))
        self.assertEqual(made.where, pgstore.shown(self.url))
        self.assertEqual((made.created, read.created), (True, False))
        self.assertEqual(read.setup.dumps(), made.setup.dumps())
        self.assertEqual(first.config.new_files, ())  # nothing left to write at start

    def start(self):
        connection = pgstore.connect(self.url)
        pgstore.upgrade(connection)
        pgstore.add_users(connection, {"alice": make_user("alice")})
        connection.close()
        options = tap_options("--store", self.url, "--dh", "tcp:0:interface=127.0.0.1",
                              "--eke", "tcp:0:interface=127.0.0.1",
                              "--opaque", "tcp:0:interface=127.0.0.1")
        self.addCleanup(options.config.deployment.close)
        ports = []

        def listen(description, factory):
            ports.append(reactor.listenTCP(0, factory, interface="127.0.0.1"))
            return service.Service()

        top = tap.makeService(options, reactor=reactor, listen=listen)
        top.startService()
        self.addCleanup(top.stopService)
        for port in ports:
            self.addCleanup(port.stopListening)
        return [port.getHost().port for port in ports]

    async def login(self, port, password=PASSWORD):
        factory = EKEClientFactory("alice", password, kdf_limits=TEST_LIMITS)
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        protocol = await endpoint.connect(factory)
        protocol.finished.addErrback(lambda _: None)  # hung up by us, not quit
        try:
            return await protocol.authenticated
        finally:
            protocol.transport.loseConnection()
            await protocol.disconnected

    def test_logins_from_the_store_and_while_it_is_down(self):
        async def run():
            _dh, eke, _opaque = self.start()
            result = await self.login(eke)
            self.assertEqual(result.user, "alice")
            self.server.stop()
            with capturedLogs():
                with self.assertRaises(ServerUnavailable):
                    await self.login(eke)
            self.server.start()
            result = await self.login(eke)
            self.assertEqual(result.user, "alice")
        return defer.Deferred.fromCoroutine(run())
