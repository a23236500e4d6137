"""PostgreSQL behind the store interfaces: what a fleet of daemons shares
(docs/fleet.rst).

``--store postgresql://...`` (``twistd keyx`` and ``keyx-admin``) puts in one
database the users (EKE and OPAQUE records, as the user file holds them),
the OPAQUE server setup (made once, shared by every daemon), and the guess
throttle's buckets and familiar sources
(:class:`~twisted_keyx.service.sqlstore.SQLThrottleStore`).

The schema is versioned (:data:`MIGRATIONS`); ``keyx-admin store-upgrade``
creates or upgrades it, each upgrade one transaction under an advisory
lock.  A daemon checks the version at start-up and refuses, in one line, a
schema that is missing, older or newer than its own (:func:`check_schema`).

The daemon reads through adbapi (:mod:`twisted_keyx.service.sqlstore`, where
the choice is explained); ``keyx-admin`` and the daemon's start-up checks use
one plain psycopg connection.  Every write that must not be lost is one
transaction: a user added with the change counter that tells the daemons to
reload, a guess charged to all its buckets.
"""

import json
import re

from twisted.application import internet, service
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from twisted_keyx.core import schemes
from twisted_keyx.core.interfaces import (
    IServerSetupStore, IUserStore, StoreConflict, StoreUnavailable)
from twisted_keyx.service.sqlstore import (
    THROTTLE_TABLES, Pool, PostgreSQLDialect, SQLStore, SQLThrottleStore)

#: The schema version this code reads and writes.
SCHEMA_VERSION = 1

#: Version -> the statements that bring the schema from the version before
#: to it (run in one transaction).
MIGRATIONS = {
    1: (
        "CREATE TABLE keyx_schema (version INTEGER NOT NULL)",
        "INSERT INTO keyx_schema (version) VALUES (0)",
        # Bumped in every transaction that changes a user: the daemons
        # reload their users when it moves.
        "CREATE TABLE keyx_users_version (id INTEGER PRIMARY KEY CHECK (id = 1), "
        "version BIGINT NOT NULL)",
        "INSERT INTO keyx_users_version (id, version) VALUES (1, 0)",
        "CREATE TABLE keyx_users (name TEXT PRIMARY KEY, scheme TEXT NOT NULL, "
        "record TEXT NOT NULL)",
        "CREATE TABLE keyx_opaque_setup (id INTEGER PRIMARY KEY CHECK (id = 1), "
        "setup TEXT NOT NULL)",
        *THROTTLE_TABLES,
    ),
}

#: How often a daemon asks whether the users changed (seconds).
REFRESH_EVERY = 1.0


class StoreError(Exception):
    """A store that cannot be used: one line for the user."""


def is_url(text):
    return text.startswith(("postgresql://", "postgres://"))


def shown(url):
    """``url`` without its password, for messages and logs."""
    url = re.sub(r"(://[^:/@?]*:)[^@/?]*@", r"\1***@", url)
    return re.sub(r"(?i)(password=)[^&]*", r"\1***", url)


def _psycopg():
    try:
        import psycopg
    except ImportError:
        raise StoreError("--store postgresql://... needs psycopg: "
                         "pip install 'twisted-keyx[postgresql]'") from None
    return psycopg


def _one_line(error):
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def connect(url, timeout=10):
    """A plain psycopg connection to ``url``, or :class:`StoreError`."""
    psycopg = _psycopg()
    try:
        return psycopg.connect(url, connect_timeout=timeout)
    except psycopg.Error as e:
        raise StoreError(f"cannot connect to the store {shown(url)}: {_one_line(e)}") from None


def schema_version(connection):
    """The schema's version in the database (0: none)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('keyx_schema') IS NOT NULL")
        if not cursor.fetchone()[0]:
            return 0
        cursor.execute("SELECT version FROM keyx_schema")
        row = cursor.fetchone()
        return row[0] if row else 0


def upgrade(connection):
    """Create or upgrade the schema to :data:`SCHEMA_VERSION`, in one
    transaction (two keyx-admins at once: the second waits, then finds it
    done); return (version before, version after)."""
    with connection.transaction():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(7322001)")
        before = schema_version(connection)
        if before > SCHEMA_VERSION:
            raise StoreError(f"the store's schema is version {before}, newer than this "
                             f"twisted-keyx's ({SCHEMA_VERSION}): upgrade twisted-keyx")
        with connection.cursor() as cursor:
            for version in range(before + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version]:
                    cursor.execute(statement)
                cursor.execute("UPDATE keyx_schema SET version = %s", (version,))
    return before, SCHEMA_VERSION


def check_schema(connection, url):
    """Raise :class:`StoreError` (one line) unless the schema is this code's."""
    version = schema_version(connection)
    connection.rollback()
    if version == SCHEMA_VERSION:
        return
    fix = f"run: keyx-admin store-upgrade --store '{shown(url)}'"
    if version == 0:
        raise StoreError(f"the store {shown(url)} has no twisted-keyx schema (empty); {fix}")
    if version < SCHEMA_VERSION:
        raise StoreError(f"the store {shown(url)} has schema version {version}, older than "
                         f"this twisted-keyx's ({SCHEMA_VERSION}); {fix}")
    raise StoreError(f"the store {shown(url)} has schema version {version}, newer than "
                     f"this twisted-keyx's ({SCHEMA_VERSION}): upgrade twisted-keyx")


# --- users and the OPAQUE setup, as SQL ---------------------------------------

def _encode(record):
    return json.dumps(schemes.serialise_record(record), sort_keys=True, separators=(",", ":"))


def _decode(name, text):
    return schemes.parse_record(name, json.loads(text))


def _bump(cursor, mark):
    cursor.execute(f"UPDATE keyx_users_version SET version = version + 1 WHERE id = {mark}",
                   (1,))


def _users(cursor):
    cursor.execute("SELECT name, record FROM keyx_users ORDER BY name")
    return {name: _decode(name, text) for name, text in cursor.fetchall()}


def _add(cursor, mark, name, record, replace=False):
    statement = (f"INSERT INTO keyx_users (name, scheme, record) VALUES ({mark}, {mark}, {mark})"
                 " ON CONFLICT (name) DO ")
    if replace:
        statement += "UPDATE SET scheme = excluded.scheme, record = excluded.record"
    else:
        statement += "NOTHING"
    cursor.execute(statement, (name, record.scheme, _encode(record)))
    if cursor.rowcount != 1:
        raise StoreConflict(f"user {name!r} already exists")
    _bump(cursor, mark)


def read_users(connection):
    """Every user (admin, start-up): ``{name: record}``."""
    with connection.transaction(), connection.cursor() as cursor:
        return _users(cursor)


def add_users(connection, users, replace=False):
    """Add ``users`` (``{name: record}``) in one transaction: all or none
    (:class:`StoreConflict` if one exists, unless ``replace``)."""
    with connection.transaction(), connection.cursor() as cursor:
        for name, record in sorted(users.items()):
            _add(cursor, "%s", name, record, replace)


def remove_user(connection, name):
    """True if user ``name`` existed and was removed."""
    with connection.transaction(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM keyx_users WHERE name = %s", (name,))
        if cursor.rowcount != 1:
            return False
        _bump(cursor, "%s")
        return True


def load_setup(connection):
    """The OPAQUE server setup stored, or None."""
    from twisted_keyx.opaque.records import ServerSetup

    with connection.transaction(), connection.cursor() as cursor:
        cursor.execute("SELECT setup FROM keyx_opaque_setup WHERE id = 1")
        row = cursor.fetchone()
    return ServerSetup.loads(row[0]) if row else None


def store_setup(connection, setup):
    """Store ``setup`` unless one is stored already; return the one stored
    (every daemon of a fleet gets the first one made)."""
    from twisted_keyx.opaque.records import ServerSetup

    with connection.transaction(), connection.cursor() as cursor:
        cursor.execute("INSERT INTO keyx_opaque_setup (id, setup) VALUES (1, %s) "
                       "ON CONFLICT (id) DO NOTHING", (setup.dumps().decode("ascii"),))
        cursor.execute("SELECT setup FROM keyx_opaque_setup WHERE id = 1")
        return ServerSetup.loads(cursor.fetchone()[0])


# --- the daemon's side: adbapi ------------------------------------------------

def pool(url, connections=3):
    """An adbapi pool of up to ``connections`` psycopg connections to ``url``."""
    psycopg = _psycopg()
    made = Pool("psycopg", url, connect_timeout=5, cp_min=1, cp_max=connections,
                cp_noisy=False)
    made.broken = (psycopg.OperationalError, psycopg.InterfaceError)
    return made


def sql_store(url, connections=3):
    """The daemon's :class:`~twisted_keyx.service.sqlstore.SQLStore` on ``url``."""
    return SQLStore(pool(url, connections), PostgreSQLDialect())


@implementer(IUserStore)
class PostgreSQLUserStore:
    """:class:`~twisted_keyx.core.interfaces.IUserStore` in PostgreSQL."""

    def __init__(self, store):
        self.store = store

    def lookup(self, name, scheme):
        def run(cursor):
            self.store.execute(cursor, "SELECT record FROM keyx_users WHERE name = ? "
                                       "AND scheme = ?", (name, scheme))
            row = cursor.fetchone()
            return _decode(name, row[0]) if row else None
        return self.store.transact(run)

    def count(self, scheme):
        def run(cursor):
            self.store.execute(cursor, "SELECT count(*) FROM keyx_users WHERE scheme = ?",
                               (scheme,))
            return cursor.fetchone()[0]
        return self.store.transact(run)

    def users(self):
        return self.store.transact(self._users)

    def _users(self, cursor):
        self.store.queries += 1
        return _users(cursor)

    def version(self):
        """Deferred: the users' change counter."""
        def run(cursor):
            self.store.execute(cursor, "SELECT version FROM keyx_users_version WHERE id = 1")
            return cursor.fetchone()[0]
        return self.store.transact(run)

    def add(self, name, record):
        return self.store.transact(lambda cursor: _add(cursor, "%s", name, record))

    def replace(self, name, old, new):
        def run(cursor):
            self.store.execute(cursor, "UPDATE keyx_users SET scheme = ?, record = ? "
                                       "WHERE name = ? AND record = ?",
                               (new.scheme, _encode(new), name, _encode(old)))
            if cursor.rowcount != 1:
                raise StoreConflict(f"user {name!r} changed meanwhile")
            _bump(cursor, "%s")
        return self.store.transact(run)

    def remove(self, name):
        def run(cursor):
            self.store.execute(cursor, "DELETE FROM keyx_users WHERE name = ?", (name,))
            if cursor.rowcount != 1:
                return False
            _bump(cursor, "%s")
            return True
        return self.store.transact(run)


@implementer(IServerSetupStore)
class PostgreSQLSetupStore:
    """:class:`~twisted_keyx.core.interfaces.IServerSetupStore` in PostgreSQL."""

    def __init__(self, store, where="PostgreSQL"):
        self.store = store
        self.where = where

    def load(self):
        from twisted_keyx.opaque.records import ServerSetup

        def run(cursor):
            self.store.execute(cursor, "SELECT setup FROM keyx_opaque_setup WHERE id = 1")
            row = cursor.fetchone()
            return ServerSetup.loads(row[0]) if row else None
        return self.store.transact(run)

    def create(self, setup):
        from twisted_keyx.opaque.records import ServerSetup

        def run(cursor):
            self.store.execute(cursor, "INSERT INTO keyx_opaque_setup (id, setup) VALUES (1, ?) "
                                       "ON CONFLICT (id) DO NOTHING",
                               (setup.dumps().decode("ascii"),))
            self.store.execute(cursor, "SELECT setup FROM keyx_opaque_setup WHERE id = 1")
            return ServerSetup.loads(cursor.fetchone()[0])
        return self.store.transact(run)


@implementer(IServerSetupStore)
class ConnectionSetupStore:
    """:class:`~twisted_keyx.core.interfaces.IServerSetupStore` on plain
    psycopg connections, for the daemon's start-up, before the reactor
    runs: each call connects, is done at once and returns a Deferred that
    has fired; a store that cannot be used fails it with
    :class:`~twisted_keyx.core.interfaces.StoreUnavailable` (one line)."""

    def __init__(self, url):
        self.url = url
        self.where = shown(url)

    def load(self):
        return defer.maybeDeferred(self._run, load_setup)

    def create(self, setup):
        return defer.maybeDeferred(self._run, store_setup, setup)

    def _run(self, function, *args):
        try:
            connection = connect(self.url)
        except StoreError as e:
            raise StoreUnavailable(str(e)) from None
        try:
            return function(connection, *args)
        finally:
            connection.close()


class UserSnapshot(service.Service):
    """The users, in memory, for the handshakes that look a user up at once
    (``lookup(name, scheme)``, as :class:`~twisted_keyx.service.userfile.UserFile`
    does): reloaded from the store within :data:`REFRESH_EVERY` seconds of a
    change (one small query a second), so that a user added through
    ``keyx-admin`` or another daemon can log in here.  A store that does
    not answer is logged once, the users loaded before kept, and its
    return logged."""

    log = Logger()

    def __init__(self, users, where, initial=None, version=None, clock=None):
        #: A :class:`PostgreSQLUserStore`.
        self.store = users
        self.where = where
        self.users = dict(initial or {})
        self._version = version
        self._down = False
        self._refreshing = None
        self._timer = internet.TimerService(REFRESH_EVERY, self.refresh)
        if clock is not None:
            self._timer.clock = clock

    @property
    def path(self):
        return self.where

    def lookup(self, name, scheme="eke"):
        record = self.users.get(name)
        return record if record is not None and record.scheme == scheme else None

    def count(self, scheme):
        return sum(1 for record in self.users.values() if record.scheme == scheme)

    def startService(self):
        super().startService()
        self._timer.startService()

    def stopService(self):
        super().stopService()
        return self._timer.stopService()

    def refresh(self):
        """Deferred: reload the users if they changed."""
        if self._refreshing is not None:
            return self._refreshing
        outcome = self.store.version()
        outcome.addCallback(self._versioned)
        outcome.addCallbacks(self._up, self._failed)
        self._refreshing = outcome

        def done(result):
            self._refreshing = None
            return result
        return outcome.addBoth(done)

    def _versioned(self, version):
        if version == self._version:
            return None
        outcome = self.store.users()

        def loaded(users):
            count = len(users)
            self.users, self._version = users, version
            self.log.info("reloaded the users from {where}: {count} user(s)",
                          where=self.where, count=count)
        return outcome.addCallback(loaded)

    def _up(self, _):
        if self._down:
            self._down = False
            self.log.info("the store {where} answers again", where=self.where)

    def _failed(self, failure):
        if not failure.check(StoreUnavailable):
            self.log.failure("reloading the users from {where} failed", failure,
                             where=self.where)
            return
        if not self._down:
            self._down = True
            self.log.warn("the store {where} does not answer ({why}); keeping the "
                          "{count} user(s) loaded before; password logins are refused "
                          "until it answers", where=self.where, why=failure.getErrorMessage(),
                          count=len(self.users))


class Deployment:
    """What ``--store postgresql://...`` gives the daemon, made at start-up:
    the schema checked, the users and the OPAQUE setup loaded (the setup
    made and stored once if there is none yet)."""

    def __init__(self, url, need_setup=True, clock=None):
        connection = connect(url)
        try:
            check_schema(connection, url)
            self.initial_users = read_users(connection)
            self.setup = load_setup(connection)
            self.setup_created = False
            if self.setup is None and need_setup:
                from twisted_keyx.opaque.records import ServerSetup

                self.setup = store_setup(connection, ServerSetup.generate())
                self.setup_created = True
            with connection.cursor() as cursor:
                cursor.execute("SELECT version FROM keyx_users_version WHERE id = 1")
                version = cursor.fetchone()[0]
            connection.rollback()
        finally:
            connection.close()
        self.url = url
        self.where = shown(url)
        self.sql = sql_store(url)
        self.users = PostgreSQLUserStore(self.sql)
        self.setup_store = PostgreSQLSetupStore(self.sql, self.where)
        self.throttle = SQLThrottleStore(self.sql)
        self.snapshot = UserSnapshot(self.users, self.where, self.initial_users, version, clock)

    def close(self):
        self.sql.close()
