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
    IInvitationStore, Invitation, IServerSetupStore, IThrottleStore, IUserStore, StoreConflict,
    StoreUnavailable)
from twisted_keyx.opaque.invitation import code_hash, new_code
from twisted_keyx.opaque.handshake import AuthenticationFailed, RegistrationFailed
from twisted_keyx.opaque.protocol import OPAQUEClientFactory, OPAQUERegistrationFactory
from twisted_keyx.opaque.records import ServerSetup
from twisted_keyx.service import pgstore
from twisted_keyx.service.sqlstore import SQLThrottleStore
from twisted_keyx.service.throttle import GuessLimits

from tests.helpers import PASSWORD, TEST_KDF, TEST_LIMITS, make_user, tap_options
from tests.opaque_helpers import CHEAP_ARGON2ID, CHEAP_LIMITS, cheap_setup
from tests.pgfixture import PostgreSQLTestCase

CODE = new_code()
NOW = 1_000_000.0


def refuse_user_inserts(test, url):
    """A trigger in ``url``'s database that makes every insert into
    keyx_users fail (a store that breaks between a registration's steps);
    the connection that made it, open until ``test`` ends (DROP TRIGGER
    keyx_test_refuse ON keyx_users on it lifts it)."""
    connection = pgstore.connect(url)
    test.addCleanup(connection.close)
    with connection.transaction():
        connection.execute(
            "CREATE FUNCTION keyx_test_refuse() RETURNS trigger AS $$ BEGIN "
            "RAISE EXCEPTION 'no insert today'; END $$ LANGUAGE plpgsql")
        connection.execute(
            "CREATE TRIGGER keyx_test_refuse BEFORE INSERT ON keyx_users "
            "FOR EACH ROW EXECUTE FUNCTION keyx_test_refuse()")
    return connection

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
        current = pgstore.SCHEMA_VERSION
        later = dict(pgstore.MIGRATIONS)
        later[current + 1] = ("CREATE TABLE keyx_later (x INTEGER)",)
        self.patch(pgstore, "MIGRATIONS", later)
        self.patch(pgstore, "SCHEMA_VERSION", current + 1)
        error = self.assertRaises(pgstore.StoreError, pgstore.check_schema,
                                  self.connection, "postgresql:///x")
        self.assertIn(f"has schema version {current}, older than this twisted-keyx's "
                      f"({current + 1})", str(error))
        self.assertEqual(pgstore.upgrade(self.connection), (current, current + 1))
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
        self.url = self.upgraded_database()
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
            self.assertIsNone(await self.users[0].lookup("alice", "eke"))
        return defer.Deferred.fromCoroutine(run())

    def test_replace_compares_records_not_their_text(self):
        """The compare-and-swap compared the stored JSON text with this
        version's encoding of the old record: a row written otherwise (key
        order, spacing: psql, another version) was 'changed meanwhile'
        for ever, and its user could never change the password.  The user
        file compares the records; so does this store now."""
        import json

        from twisted_keyx.core import schemes

        async def run():
            alice = make_user("alice")
            fields = schemes.serialise_record(alice)
            text = json.dumps(dict(reversed(list(fields.items()))), indent=1)

            def insert(cursor):
                self.sql[0].execute(cursor, "INSERT INTO keyx_users (name, scheme, record) "
                                            "VALUES (?, ?, ?)", ("alice", alice.scheme, text))
            await self.sql[0].transact(insert)
            old = await self.users[0].lookup("alice", "eke")
            new = make_user("alice", password="other")
            await self.users[1].replace("alice", old, new)
            self.assertEqual((await self.users[0].lookup("alice", "eke")).key, new.key)
            with self.assertRaises(StoreConflict):
                await self.users[0].replace("alice", old, make_user("alice"))
            with self.assertRaises(StoreConflict):
                await self.users[0].replace("nobody", old, new)
            self.assertEqual((await self.users[0].lookup("alice", "eke")).key, new.key)
        return defer.Deferred.fromCoroutine(run())

    def test_a_change_of_password_inside_an_opaque_session(self):
        """keyx-client opaque passwd's protocol against PostgreSQL: the record
        the login used is replaced (compare-and-swap on its stored text);
        the other daemon then logs in with the new password only."""
        from tests.opaque_helpers import CHEAP_ARGON2ID, CHEAP_LIMITS, cheap_setup
        from twisted_keyx.opaque.handshake import AuthenticationFailed
        from twisted_keyx.opaque.protocol import OPAQUEClientFactory, OPAQUEServerFactory
        from twisted_keyx.opaque.scheme import new_user

        setup = cheap_setup()
        ports = []
        for users in self.users:
            port = reactor.listenTCP(0, OPAQUEServerFactory(users, setup),
                                     interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            ports.append(port.getHost().port)

        async def connect(port, password):
            endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port)
            client = OPAQUEClientFactory("carol", password, ksf_limits=CHEAP_LIMITS,
                                         worker=None).buildProtocol(None)
            await endpoints.connectProtocol(endpoint, client)
            return client

        async def logs_in(port, password):
            client = await connect(port, password)
            try:
                await client.authenticated
            except AuthenticationFailed:
                await client.disconnected
                return False
            client.quit()
            await client.finished
            await client.disconnected
            return True

        async def run():
            old = new_user("carol", "old password", setup)
            await self.users[0].add("carol", old)
            client = await connect(ports[0], "old password")
            await client.authenticated
            await client.passwd("new password")
            client.quit()
            await client.finished
            await client.disconnected
            stored = await self.users[1].lookup("carol", "opaque")
            self.assertNotEqual(stored.record, old.record)
            self.assertTrue(await logs_in(ports[1], "new password"))
            self.assertFalse(await logs_in(ports[1], "old password"))
            # The record changed under a session: that session's change is refused.
            client = await connect(ports[1], "new password")
            await client.authenticated
            await self.users[0].replace("carol", stored, new_user("carol", "admin's", setup))
            with self.assertRaises(Exception) as caught:
                await client.passwd("third password")
            self.assertIn("refused the change", str(caught.exception))
            client.finished.addErrback(lambda reason: None)
            await client.disconnected
            self.assertTrue(await logs_in(ports[0], "admin's"))

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

    def test_a_user_added_elsewhere_logs_in_at_once(self):
        """No snapshot to reload: the next lookup sees the new user."""
        async def run():
            self.assertIsNone(await self.users[0].lookup("carol", "eke"))
            before = self.sql[0].queries
            await self.users[1].add("carol", make_user("carol"))
            self.assertIsNotNone(await self.users[0].lookup("carol", "eke"))
            self.assertEqual(self.sql[0].queries - before, 1)  # one SELECT per lookup
        return defer.Deferred.fromCoroutine(run())


class DownTests(PostgreSQLTestCase):
    """PostgreSQL stopped and started: the stores say so, then reconnect."""

    def setUp(self):
        super().setUp()
        self.url = self.upgraded_database()
        self.sql = pgstore.sql_store(self.url)
        self.throttle = SQLThrottleStore(self.sql)
        self.users = pgstore.PostgreSQLUserStore(self.sql)
        self.addCleanup(self.sql.close)
        self.addCleanup(lambda: self.server.running or self.server.start())

    def test_unavailable_while_down_then_reconnected(self):
        limits = GuessLimits()

        async def run():
            await self.throttle.charge("alice", "192.0.2.1", 1e6, limits)
            self.server.stop()
            with capturedLogs() as events:
                with self.assertRaises(StoreUnavailable) as caught:
                    await self.throttle.charge("alice", "192.0.2.1", 1e6, limits)
                self.assertIn("postgresql: ", str(caught.exception))
                for _ in range(2):
                    with self.assertRaises(StoreUnavailable):
                        await self.users.lookup("alice", "eke")
                self.server.start()
                charge = await self.throttle.charge("alice", "192.0.2.1", 1e6, limits)
                self.assertIsNone(await self.users.lookup("alice", "eke"))
            self.assertEqual(charge.delay, 0)
            text = [formatEvent(e) for e in events]
            # One line for the outage, one for its end, however many calls.
            self.assertEqual(len([line for line in text if "does not answer" in line]), 1, text)
            self.assertEqual(len([line for line in text if "answers again" in line]), 1, text)
            self.assertIn(f"the store {self.url} answers again", text)
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
        version = pgstore.SCHEMA_VERSION
        self.assertEqual(self.admin("store-upgrade", "--store", self.url),
                         (0, f"the store {self.url}: schema upgraded from version 0 to "
                             f"{version}\n", ""))
        self.assertEqual(self.admin("store-upgrade", "--store", self.url)[1],
                         f"the store {self.url} has schema version {version}: nothing to do\n")
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

    def test_invitations_in_a_store(self):
        self.admin("store-upgrade", "--store", self.url)
        self.patch(admin, "clock", lambda: NOW)
        status, code, err = self.admin("invite", "bob", "--store", self.url)
        self.assertEqual(status, 0, err)
        self.assertRegex(code, r"^[a-z0-9-]{39}\n\Z")
        self.assertEqual(err, f"keyx-admin: invited 'bob' in {self.url} until 1970-01-19 "
                              "13:46 UTC; the code is shown once, for: keyx-client opaque "
                              "register --user bob\n")
        self.assertEqual(self.admin("listusers", "--store", self.url)[1],
                         "bob  invited, code unused, expires 1970-01-19 13:46 UTC\n")
        # The daemon's side finds the code the admin made.
        connection = pgstore.connect(self.url)
        self.addCleanup(connection.close)
        store = pgstore.PostgreSQLInvitationStore(pgstore.ConnectionStore(connection))
        self.assertTrue(self.successResultOf(store.redeem("bob", code_hash(code.strip()), NOW)))
        self.assertEqual(self.admin("listusers", "--store", self.url)[1],
                         "bob  invitation used\n")
        # Revoked; a user who exists is not invited.
        self.admin("invite", "carol", "--store", self.url)
        self.assertEqual(self.admin("revoke", "carol", "--store", self.url),
                         (0, f"revoked the invitation of carol in {self.url}\n", ""))
        self.assertEqual(self.admin("revoke", "carol", "--store", self.url),
                         (1, "", f"keyx-admin: no pending invitation for 'carol' in {self.url}\n"))
        self.admin("adduser", "alice", "--scheme", "eke", "--store", self.url,
                   "--password-file", self.password_file)
        status, _, err = self.admin("invite", "alice", "--store", self.url)
        self.assertEqual((status, err), (1, f"keyx-admin: user 'alice' already exists in "
                                            f"{self.url}; remove it first with keyx-admin "
                                            "deluser\n"))
        status, _, err = self.admin("invite", "dave", "--store", self.url, "--invitations", "x")
        self.assertEqual((status, err), (1, "keyx-admin: give --store or --invitations, not "
                                            "both (a store keeps its invitations)\n"))

    def test_an_opaque_user_in_a_store(self):
        """OPAQUE's scheme adds the user through the store's
        IServerSetupStore: the setup made there by the first adduser (and
        said so), the one the daemons of the store then serve."""
        from twisted_keyx.opaque import scheme as opaque_scheme
        from twisted_keyx.trust.knownservers import server_key_fingerprint

        class CheapSetup:
            generate = staticmethod(cheap_setup)

        self.patch(opaque_scheme, "ServerSetup", CheapSetup)
        self.admin("store-upgrade", "--store", self.url)
        status, out, err = self.admin("adduser", "alice", "--store", self.url,
                                      "--password-file", self.password_file)
        self.assertEqual((status, err),
                         (0, f"keyx-admin: made the OPAQUE server setup in {self.url}\n"))
        self.assertEqual(out, f"added user alice to {self.url} (opaque, argon2id m=64 KiB t=1 "
                              "p=1)\n")
        status, out, err = self.admin("adduser", "bob", "--scheme", "opaque", "--store",
                                      self.url, "--password-file", self.password_file)
        self.assertEqual((status, err), (0, ""))
        connection = pgstore.connect(self.url)
        self.addCleanup(connection.close)
        setup = pgstore.load_setup(connection)
        users = pgstore.read_users(connection)
        self.assertEqual({u.scheme for u in users.values()}, {"opaque"})
        self.assertEqual({u.server_key for u in users.values()},
                         {server_key_fingerprint(setup.server_public_key)})
        options = tap_options("--store", self.url, "--no-host-key")
        self.addCleanup(options.config.deployment.close)
        self.assertEqual(options.config.settings["opaque"].setup.dumps(), setup.dumps())

    def test_a_toy_password_scheme_in_a_store(self):
        """A password scheme registered from outside (tests.test_registry's
        toy) is added to --store with no edit to keyx-admin, and finds the
        store's IServerSetupStore as OPAQUE does."""
        from twisted_keyx.core import handshakes

        from tests.test_registry import TOY_PASSWORD

        handshakes.register(TOY_PASSWORD)
        self.addCleanup(handshakes.unregister, TOY_PASSWORD.name)
        self.admin("store-upgrade", "--store", self.url)
        status, out, err = self.admin("adduser", "bob", "--scheme", "toypw", "--store", self.url,
                                      "--password-file", self.password_file,
                                      "--toy-pepper", "p:")
        self.assertEqual((status, out, err),
                         (0, f"added user bob to {self.url} (toypw)\n",
                          f"keyx-admin: peppered with p:\nkeyx-admin: a setup store in "
                          f"{self.url}\n"))
        self.assertEqual(self.admin("listusers", "--store", self.url)[1],
                         "bob  toypw, 8 characters\n")

    def test_copying_opaque_users_carries_their_server_setup(self):
        """copy-users with OPAQUE users: their server setup goes with them
        (a key file into a store, a store's into a key file), and a
        destination that holds another one is refused."""
        import stat

        from twisted_keyx.opaque import scheme as opaque_scheme

        folder = os.path.abspath(self.mktemp())
        os.mkdir(folder)
        users, key = os.path.join(folder, "users.json"), os.path.join(folder, "key")
        opaque_scheme.write_new_key_file(key, cheap_setup())
        status, _, err = self.admin("adduser", "alice", "--users", users, "--opaque-key", key,
                                    "--password-file", self.password_file)
        self.assertEqual(status, 0, err)
        self.admin("store-upgrade", "--store", self.url)
        # A key file's users into a store: the store gets the key file's setup.
        self.assertEqual(self.admin("copy-users", users, self.url, "--opaque-key", key),
                         (0, f"copied 1 user(s) from {users} to {self.url}\n", ""))
        connection = pgstore.connect(self.url)
        self.addCleanup(connection.close)
        setup = opaque_scheme.load_key_file(key)
        self.assertEqual(pgstore.load_setup(connection).dumps(), setup.dumps())
        # Without the key file, the source's OPAQUE users cannot be copied.
        missing = os.path.join(folder, "missing")
        status, out, err = self.admin("copy-users", users, self.url, "--opaque-key", missing,
                                      "--replace")
        self.assertEqual((status, out, err),
                         (1, "", f"keyx-admin: {users} has OPAQUE users: no OPAQUE key file "
                                 f"{missing}\n"))
        # A store with another setup is refused, and nothing copied.
        other = self.server.database()
        self.admin("store-upgrade", "--store", other)
        elsewhere = pgstore.connect(other)
        self.addCleanup(elsewhere.close)
        pgstore.store_setup(elsewhere, ServerSetup.generate(CHEAP_ARGON2ID))
        status, out, err = self.admin("copy-users", users, other, "--opaque-key", key)
        self.assertEqual((status, out, err),
                         (1, "", f"keyx-admin: {other} has another OPAQUE server setup: the "
                                 "OPAQUE users alice would not log in there\n"))
        self.assertEqual(pgstore.read_users(elsewhere), {})
        # A store's users into a file: its setup written to a new key file.
        copied, new_key = os.path.join(folder, "copied.json"), os.path.join(folder, "new-key")
        self.assertEqual(self.admin("copy-users", self.url, copied, "--opaque-key", new_key),
                         (0, f"copied 1 user(s) from {self.url} to {copied}\n", ""))
        self.assertEqual(opaque_scheme.load_key_file(new_key).dumps(), setup.dumps())
        self.assertEqual(stat.S_IMODE(os.stat(new_key).st_mode), 0o600)
        self.assertEqual(set(userstore.read_users(copied)), {"alice"})
        # Into a file beside a key file that holds another setup: refused.
        another = os.path.join(folder, "another-key")
        opaque_scheme.write_new_key_file(another, ServerSetup.generate(CHEAP_ARGON2ID))
        refused = os.path.join(folder, "refused.json")
        self.assertEqual(self.admin("copy-users", self.url, refused, "--opaque-key", another),
                         (1, "", f"keyx-admin: {another} holds another OPAQUE server setup\n"))
        self.assertFalse(os.path.exists(refused))
        # Into a file beside the same key file: copied.
        self.assertEqual(self.admin("copy-users", self.url, refused, "--opaque-key", key)[0], 0)

    def test_invite_into_an_old_schema_says_so(self):
        status, _, err = self.admin("invite", "bob", "--store", self.url)
        self.assertEqual(status, 1)
        self.assertIn("has no twisted-keyx schema (empty); run: keyx-admin store-upgrade", err)

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

    def prepare(self):
        """The schema, alice (EKE) and a cheap OPAQUE setup (so that
        registering costs the tests little)."""
        connection = pgstore.connect(self.url)
        pgstore.upgrade(connection)
        pgstore.add_users(connection, {"alice": make_user("alice")})
        pgstore.store_setup(connection, cheap_setup())
        connection.close()

    def start(self):
        """One daemon on the store (a call more: another daemon, its own
        pool); its DH, EKE and OPAQUE ports."""
        if not getattr(self, "prepared", False):
            self.prepare()
            self.prepared = True
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

    def invite(self, name):
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(admin.main(["invite", name, "--store", self.url], out, err), 0,
                         err.getvalue())
        return out.getvalue().strip()

    async def register(self, port, user, code, password=PASSWORD):
        factory = OPAQUERegistrationFactory(user, password, code, ksf_limits=CHEAP_LIMITS)
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        client = factory.buildProtocol(None)
        await endpoints.connectProtocol(endpoint, client)
        try:
            return await client.authenticated
        finally:
            await client.disconnected

    async def opaque_login(self, port, user, password=PASSWORD):
        factory = OPAQUEClientFactory(user, password, ksf_limits=CHEAP_LIMITS)
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        client = factory.buildProtocol(None)
        await endpoints.connectProtocol(endpoint, client)
        try:
            result = await client.authenticated
        except BaseException:
            await client.disconnected
            raise
        client.quit()
        await client.finished
        await client.disconnected
        return result.user

    def test_register_through_one_daemon_log_in_through_another(self):
        async def run():
            first, second = self.start()[2], self.start()[2]
            code = self.invite("bob")
            with capturedLogs() as events:
                self.assertEqual(await self.register(first, "bob", code), "bob")
            self.assertTrue(any("OPAQUE: registered user 'bob'" in formatEvent(e)
                                for e in events))
            # At once, no reload: the other daemon looks bob up at his login.
            self.assertEqual(await self.opaque_login(second, "bob"), "bob")
            with self.assertRaises(AuthenticationFailed):
                await self.opaque_login(second, "bob", password="not it")
            # The code worked once: not again, on either daemon.
            for port in (first, second):
                with self.assertRaises(RegistrationFailed):
                    await self.register(port, "bob", code, password="another")
            self.assertEqual(await self.opaque_login(first, "bob"), "bob")
            status = io.StringIO()
            admin.main(["listusers", "--store", self.url], status, io.StringIO())
            self.assertIn("bob  opaque", status.getvalue())
            self.assertNotIn("invit", status.getvalue())
        return defer.Deferred.fromCoroutine(run())

    def test_two_daemons_racing_with_one_code_register_once(self):
        async def run():
            first, second = self.start()[2], self.start()[2]
            code = self.invite("carol")
            outcomes = []
            for outcome in await defer.DeferredList(
                    [defer.Deferred.fromCoroutine(self.register(port, "carol", code, password))
                     for port, password in ((first, "one"), (second, "two"))],
                    consumeErrors=True):
                outcomes.append(outcome[1] if outcome[0] else outcome[1].type)
            self.assertEqual(sorted(map(str, outcomes)),
                             sorted(["carol", str(RegistrationFailed)]), outcomes)
            winner = "one" if outcomes[0] == "carol" else "two"
            loser = "two" if winner == "one" else "one"
            self.assertEqual(await self.opaque_login(second, "carol", winner), "carol")
            with self.assertRaises(AuthenticationFailed):
                await self.opaque_login(first, "carol", loser)
        return defer.Deferred.fromCoroutine(run())

    def test_a_registration_whose_insert_fails_leaves_the_code_usable(self):
        """The user's insert fails after the invitation's row was marked
        used (a trigger here): one transaction, rolled back; the client is
        refused, the code still registers (a redeem then an add used it up)."""
        async def run():
            port = self.start()[2]
            code = self.invite("bob")
            connection = refuse_user_inserts(self, self.url)
            with capturedLogs() as events:
                with self.assertRaises(RegistrationFailed):
                    await self.register(port, "bob", code)
            log = [formatEvent(e) for e in events]
            self.assertTrue([line for line in log if "registration of 'bob' not stored: "
                             "no insert today" in line], log)
            self.assertFalse([line for line in log if "Traceback" in line], log)
            status = io.StringIO()
            admin.main(["listusers", "--store", self.url], status, io.StringIO())
            self.assertIn("bob  invited", status.getvalue())
            with connection.transaction():
                connection.execute("DROP TRIGGER keyx_test_refuse ON keyx_users")
            self.assertEqual(await self.register(port, "bob", code), "bob")
            self.assertEqual(await self.opaque_login(port, "bob"), "bob")
        return defer.Deferred.fromCoroutine(run())

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


class InvitationStoreTests(PostgreSQLTestCase):
    """IInvitationStore in PostgreSQL: the file store's behaviour
    (tests.test_invitation_store), shared by two pools as by two daemons."""

    def setUp(self):
        super().setUp()
        self.url = self.upgraded_database()
        self.sql = [pgstore.sql_store(self.url, connections=8), pgstore.sql_store(self.url)]
        self.stores = [pgstore.PostgreSQLInvitationStore(s) for s in self.sql]
        self.store = self.stores[0]

    def tearDown(self):
        for store in self.sql:
            store.close()

    def test_interface(self):
        self.assertTrue(verifyObject(IInvitationStore, self.store))
        connection = pgstore.connect(self.url)
        self.addCleanup(connection.close)
        admin_side = pgstore.PostgreSQLInvitationStore(pgstore.ConnectionStore(connection))
        self.assertTrue(verifyObject(IInvitationStore, admin_side))

    def test_invite_lookup_list_and_replace(self):
        async def run():
            self.assertIsNone(await self.store.lookup("bob"))
            await self.store.invite(invited())
            self.assertEqual(await self.stores[1].lookup("bob"), invited())
            self.assertEqual(await self.stores[1].invitations(), {"bob": invited()})
            # A new invitation replaces the old one, whatever its state.
            await self.store.revoke("bob")
            other = invited(code=new_code())
            await self.store.invite(other)
            self.assertEqual(await self.stores[1].lookup("bob"), other)
            with self.assertRaises(StoreConflict):
                await self.store.invite(invited(state="used"))
        return defer.Deferred.fromCoroutine(run())

    def test_the_code_is_never_stored(self):
        async def run():
            await self.store.invite(invited())
            connection = pgstore.connect(self.url)
            self.addCleanup(connection.close)
            rows = connection.execute("SELECT * FROM keyx_invitations").fetchall()
            self.assertEqual(len(rows), 1)
            self.assertNotIn(CODE.encode(), repr(rows).encode())
            self.assertEqual(bytes(rows[0][1]), code_hash(CODE))
        return defer.Deferred.fromCoroutine(run())

    def test_redeem_once_on_any_daemon(self):
        async def run():
            await self.store.invite(invited())
            self.assertFalse(await self.store.redeem("bob", code_hash(new_code()), NOW))
            self.assertTrue(await self.stores[1].redeem("bob", code_hash(CODE), NOW))
            self.assertFalse(await self.store.redeem("bob", code_hash(CODE), NOW))
            self.assertFalse(await self.stores[1].redeem("bob", code_hash(CODE), NOW))
            self.assertEqual((await self.store.lookup("bob")).state, "used")
        return defer.Deferred.fromCoroutine(run())

    def test_expired_revoked_and_unknown(self):
        async def run():
            await self.store.invite(invited(expires=NOW))
            self.assertFalse(await self.store.redeem("bob", code_hash(CODE), NOW))
            self.assertEqual((await self.store.lookup("bob")).state, "pending")  # kept, expired
            await self.store.invite(invited())
            self.assertTrue(await self.store.revoke("bob"))
            self.assertFalse(await self.stores[1].revoke("bob"))
            self.assertFalse(await self.store.redeem("bob", code_hash(CODE), NOW))
            self.assertEqual((await self.store.lookup("bob")).state, "revoked")
            self.assertFalse(await self.store.revoke("nobody"))
            self.assertFalse(await self.store.redeem("nobody", code_hash(CODE), NOW))
        return defer.Deferred.fromCoroutine(run())

    def test_concurrent_redeems_one_wins(self):
        """Sixteen redeems of one code at once over two pools (nine
        connections): one True, whatever the interleaving."""
        async def run():
            await self.store.invite(invited())
            results = await defer.gatherResults([
                self.stores[i % 2].redeem("bob", code_hash(CODE), NOW) for i in range(16)])
            self.assertEqual(sorted(results), [False] * 15 + [True])
        return defer.Deferred.fromCoroutine(run())

    def users_in_db(self):
        connection = pgstore.connect(self.url)
        try:
            return pgstore.read_users(connection)
        finally:
            connection.close()

    def test_register_once_on_any_daemon(self):
        """A register is the redeem and the user's insert in one
        transaction; the user is then every daemon's."""
        bob = make_user("bob")

        async def run():
            await self.store.invite(invited())
            self.assertFalse(await self.store.register("bob", code_hash(new_code()), NOW, bob))
            self.assertEqual(self.users_in_db(), {})
            self.assertTrue(await self.stores[1].register("bob", code_hash(CODE), NOW, bob))
            self.assertEqual(self.users_in_db(), {"bob": bob})
            self.assertEqual((await self.store.lookup("bob")).state, "used")
            self.assertFalse(await self.store.register("bob", code_hash(CODE), NOW, bob))
            users = pgstore.PostgreSQLUserStore(self.sql[0])
            self.assertEqual(await users.lookup("bob", "eke"), bob)
            await self.store.invite(invited(user="carol", expires=NOW))
            self.assertFalse(await self.store.register("carol", code_hash(CODE), NOW, bob))
            self.assertEqual(list(self.users_in_db()), ["bob"])
        return defer.Deferred.fromCoroutine(run())

    def test_register_insert_fails_code_kept(self):
        """The user's insert fails after the invitation was marked used (a
        trigger refuses it here; a disk full or a connection lost would do
        the same): the transaction rolls back, the code works again."""
        bob = make_user("bob")
        connection = refuse_user_inserts(self, self.url)

        async def run():
            await self.store.invite(invited())
            with self.assertRaises(Exception) as caught:
                await self.store.register("bob", code_hash(CODE), NOW, bob)
            self.assertIn("no insert today", str(caught.exception))
            self.assertEqual((await self.store.lookup("bob")).state, "pending")
            self.assertEqual(self.users_in_db(), {})
            with connection.transaction():
                connection.execute("DROP TRIGGER keyx_test_refuse ON keyx_users")
            self.assertTrue(await self.stores[1].register("bob", code_hash(CODE), NOW, bob))
            self.assertEqual(self.users_in_db(), {"bob": bob})
        return defer.Deferred.fromCoroutine(run())

    def test_register_existing_user_changes_nothing(self):
        bob, other = make_user("bob"), make_user("bob", password="another")

        async def run():
            await self.store.invite(invited())
            await pgstore.PostgreSQLUserStore(self.sql[1]).add("bob", other)
            with self.assertRaises(StoreConflict):
                await self.store.register("bob", code_hash(CODE), NOW, bob)
            self.assertEqual(self.users_in_db(), {"bob": other})
            self.assertEqual((await self.store.lookup("bob")).state, "pending")
        return defer.Deferred.fromCoroutine(run())

    def test_concurrent_registers_one_wins(self):
        async def run():
            await self.store.invite(invited())
            results = await defer.gatherResults([
                self.stores[i % 2].register("bob", code_hash(CODE), NOW,
                                            make_user("bob", password=f"pw{i}"))
                for i in range(12)])
            self.assertEqual(sorted(results), [False] * 11 + [True])
            self.assertEqual(list(self.users_in_db()), ["bob"])
        return defer.Deferred.fromCoroutine(run())

    def test_register_on_keyx_admins_connection(self):
        connection = pgstore.connect(self.url)
        self.addCleanup(connection.close)
        store = pgstore.PostgreSQLInvitationStore(pgstore.ConnectionStore(connection))
        bob = make_user("bob")
        self.successResultOf(store.invite(invited()))
        other = make_user("bob", password="another")
        pgstore.add_users(connection, {"bob": other})
        self.failureResultOf(store.register("bob", code_hash(CODE), NOW, bob), StoreConflict)
        self.assertEqual(self.successResultOf(store.lookup("bob")).state, "pending")
        pgstore.remove_user(connection, "bob")
        self.assertTrue(self.successResultOf(store.register("bob", code_hash(CODE), NOW, bob)))
        self.assertEqual(pgstore.read_users(connection), {"bob": bob})

    def test_a_store_down_is_store_unavailable(self):
        self.addCleanup(lambda: self.server.running or self.server.start())

        async def run():
            await self.store.invite(invited())
            self.server.stop()
            with capturedLogs():
                with self.assertRaises(StoreUnavailable):
                    await self.store.redeem("bob", code_hash(CODE), NOW)
            self.server.start()
            self.assertTrue(await self.store.redeem("bob", code_hash(CODE), NOW))
        return defer.Deferred.fromCoroutine(run())

    def test_schema_1_upgraded_keeps_its_users(self):
        other = self.server.database()
        connection = pgstore.connect(other)
        self.addCleanup(connection.close)
        with self.connection_at_version(1):
            self.assertEqual(pgstore.upgrade(connection), (0, 1))
            pgstore.add_users(connection, {"alice": make_user("alice")})
        self.assertEqual(pgstore.upgrade(connection), (1, pgstore.SCHEMA_VERSION))
        self.assertEqual(sorted(pgstore.read_users(connection)), ["alice"])
        store = pgstore.PostgreSQLInvitationStore(pgstore.ConnectionStore(connection))
        self.assertEqual(self.successResultOf(store.invitations()), {})

    def connection_at_version(self, version):
        import contextlib

        @contextlib.contextmanager
        def patched():
            saved = pgstore.SCHEMA_VERSION
            pgstore.SCHEMA_VERSION = version
            try:
                yield
            finally:
                pgstore.SCHEMA_VERSION = saved
        return patched()


def invited(user="bob", code=CODE, expires=NOW + 60, state="pending"):
    return Invitation(user, code_hash(code), NOW - 60, expires, state)
