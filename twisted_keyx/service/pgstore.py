"""PostgreSQL behind the store interfaces: what a fleet of daemons shares
(docs/fleet.rst).

``--store postgresql://...`` (``twistd keyx`` and ``keyx-admin``) puts in one
database the users (EKE and OPAQUE records, as the user file holds them),
the OPAQUE server setup (made once, shared by every daemon), the
invitations of OPAQUE registration over the network, and the guess
throttle's buckets and familiar sources
(:class:`~twisted_keyx.service.sqlstore.SQLThrottleStore`).

The daemon looks each user up when a login asks for it (one SELECT by
primary key), as the handshakes ask :class:`~twisted_keyx.core.interfaces.IUserStore`;
it holds no copy of the user table (docs/fleet.rst, "Users per login").

The schema is versioned (:data:`MIGRATIONS`); ``keyx-admin store-upgrade``
creates or upgrades it, each upgrade one transaction under an advisory
lock.  A daemon checks the version at start-up and refuses, in one line, a
schema that is missing, older or newer than its own (:func:`check_schema`).

The daemon reads through adbapi (:mod:`twisted_keyx.service.sqlstore`, where
the choice is explained); ``keyx-admin`` and the daemon's start-up checks use
one plain psycopg connection.  Every write that must not be lost is one
transaction: a user added, an invitation redeemed with its user added (a
registration), a guess charged to all its buckets.
"""

import hmac
import json
import re

from twisted.internet import defer
from zope.interface import implementer

from twisted_keyx.core import schemes
from twisted_keyx.core.interfaces import (
    IInvitationStore, IServerSetupStore, Invitation, IUserStore, StoreConflict,
    StoreUnavailable)
from twisted_keyx.service.sqlstore import (
    THROTTLE_TABLES, Pool, PostgreSQLDialect, SQLStore, SQLThrottleStore)

#: The schema version this code reads and writes.
SCHEMA_VERSION = 2

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
    2: (
        # The invitations of OPAQUE registration over the network (at most
        # one per user name; the code's hash, never the code).
        "CREATE TABLE keyx_invitations (name TEXT PRIMARY KEY, code_hash BYTEA NOT NULL "
        "CHECK (length(code_hash) = 32), created DOUBLE PRECISION NOT NULL, "
        "expires DOUBLE PRECISION NOT NULL, state TEXT NOT NULL "
        "CHECK (state IN ('pending', 'used', 'revoked')))",
        # The daemons look users up per login: no snapshot to reload, so no
        # change counter (it made every user change one hot row).
        "DROP TABLE keyx_users_version",
    ),
}


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


def read_users(connection):
    """Every user (admin, start-up): ``{name: record}``."""
    with connection.transaction(), connection.cursor() as cursor:
        return _users(cursor)


def has_user(connection, name):
    """Whether user ``name`` is in the store (one indexed SELECT, not the
    whole table)."""
    with connection.transaction(), connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM keyx_users WHERE name = %s", (name,))
        return cursor.fetchone() is not None


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
        return cursor.rowcount == 1


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
    # Autocommit: a one-statement read is one round trip; the transactions
    # begin themselves (PostgreSQLDialect.begin).
    made = Pool("psycopg", url, connect_timeout=5, autocommit=True, cp_min=1,
                cp_max=connections, cp_noisy=False)
    made.broken = (psycopg.OperationalError, psycopg.InterfaceError)
    return made


def sql_store(url, connections=3):
    """The daemon's :class:`~twisted_keyx.service.sqlstore.SQLStore` on ``url``
    (an outage logged once, with its end)."""
    return SQLStore(pool(url, connections), PostgreSQLDialect(), where=f"the store {shown(url)}")


@implementer(IUserStore)
class PostgreSQLUserStore:
    """:class:`~twisted_keyx.core.interfaces.IUserStore` in PostgreSQL: each
    call one transaction; :meth:`lookup` (what a login asks) one SELECT by
    primary key."""

    def __init__(self, store, path="the store"):
        self.store = store
        #: Where the users are, for the log (the URL without its password).
        self.path = path

    def lookup(self, name, scheme):
        def run(cursor):
            self.store.execute(cursor, "SELECT record FROM keyx_users WHERE name = ? "
                                       "AND scheme = ?", (name, scheme))
            row = cursor.fetchone()
            return _decode(name, row[0]) if row else None
        # One statement: one round trip, no transaction around it.
        return self.store.read(run)

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

    def add(self, name, record):
        def run(cursor):
            self.store.queries += 1
            _add(cursor, "%s", name, record)
        return self.store.transact(run)

    def replace(self, name, old, new):
        def run(cursor):
            # The records compared, not their text: a row written otherwise
            # than _encode writes it (psql, another version) is the same record.
            self.store.execute(cursor, "SELECT record FROM keyx_users WHERE name = ? "
                                       "FOR UPDATE", (name,))
            row = cursor.fetchone()
            try:
                current = _decode(name, row[0]) if row else None
            except ValueError:
                current = None
            if current is None or current != old:
                raise StoreConflict(f"user {name!r} changed meanwhile")
            self.store.execute(cursor, "UPDATE keyx_users SET scheme = ?, record = ? "
                                       "WHERE name = ?", (new.scheme, _encode(new), name))
        return self.store.transact(run)

    def remove(self, name):
        def run(cursor):
            self.store.execute(cursor, "DELETE FROM keyx_users WHERE name = ?", (name,))
            return cursor.rowcount == 1
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


# --- invitations ----------------------------------------------------------------

_INVITATION_COLUMNS = "name, code_hash, created, expires, state"


def _invitation(row):
    name, code_hash, created, expires, state = row
    return Invitation(name, bytes(code_hash), created, expires, state)


@implementer(IInvitationStore)
class PostgreSQLInvitationStore:
    """:class:`~twisted_keyx.core.interfaces.IInvitationStore` in PostgreSQL
    (table ``keyx_invitations``, schema version 2), shared by every daemon
    of a fleet and ``keyx-admin invite/revoke/listusers --store``.

    ``store`` is anything with ``transact(interaction, *args)`` that runs
    ``interaction(cursor, *args)`` in one transaction and returns a
    Deferred: the daemon's :class:`~twisted_keyx.service.sqlstore.SQLStore`
    (adbapi), or keyx-admin's :class:`ConnectionStore`.

    A redeem is one transaction that locks the invitation's row
    (``SELECT ... FOR UPDATE``) before it compares the code's hash
    (:func:`hmac.compare_digest`) and marks it used: of two redeems of one
    code at once, on any daemons, the second waits for the first and then
    finds the invitation used.  A registration (:meth:`register`) is the
    same transaction with the user's insert in it: a user that exists, a
    failed insert or a connection lost before the commit rolls the redeem
    back, and the code stays usable."""

    def __init__(self, store, path="the store"):
        self.store = store
        #: Where the invitations are, for messages (the URL without its password).
        self.path = path

    def _run(self, cursor, statement, args=()):
        self.store.queries = getattr(self.store, "queries", 0) + 1
        cursor.execute(statement, args)

    def invite(self, invitation):
        if invitation.state != "pending":
            return defer.fail(StoreConflict("a new invitation must be pending"))

        def run(cursor):
            self._run(cursor,
                      f"INSERT INTO keyx_invitations ({_INVITATION_COLUMNS}) "
                      "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET "
                      "code_hash = excluded.code_hash, created = excluded.created, "
                      "expires = excluded.expires, state = excluded.state",
                      (invitation.user, invitation.code_hash, invitation.created,
                       invitation.expires, invitation.state))
        return self.store.transact(run)

    def lookup(self, name):
        def run(cursor):
            self._run(cursor, f"SELECT {_INVITATION_COLUMNS} FROM keyx_invitations "
                              "WHERE name = %s", (name,))
            row = cursor.fetchone()
            return _invitation(row) if row else None
        return getattr(self.store, "read", self.store.transact)(run)

    def _redeem(self, cursor, name, code_hash, now):
        """In a transaction: lock user ``name``'s invitation, and mark it
        used if it is pending with ``code_hash`` at ``now``; whether it was."""
        self._run(cursor, f"SELECT {_INVITATION_COLUMNS} FROM keyx_invitations "
                          "WHERE name = %s FOR UPDATE", (name,))
        row = cursor.fetchone()
        current = _invitation(row) if row else None
        if (current is None or not current.usable(now)
                or not hmac.compare_digest(current.code_hash, code_hash)):
            return False
        self._run(cursor, "UPDATE keyx_invitations SET state = 'used' "
                          "WHERE name = %s AND state = 'pending'", (name,))
        return cursor.rowcount == 1

    def redeem(self, name, code_hash, now):
        return self.store.transact(self._redeem, name, code_hash, now)

    def register(self, name, code_hash, now, record):
        def run(cursor):
            if not self._redeem(cursor, name, code_hash, now):
                return False
            # In the same transaction: a user that exists (StoreConflict),
            # or any failure of the insert, rolls the redeem back.
            self.store.queries = getattr(self.store, "queries", 0) + 1
            _add(cursor, "%s", name, record)
            return True
        return self.store.transact(run)

    def revoke(self, name):
        def run(cursor):
            self._run(cursor, "UPDATE keyx_invitations SET state = 'revoked' "
                              "WHERE name = %s AND state = 'pending'", (name,))
            return cursor.rowcount == 1
        return self.store.transact(run)

    def invitations(self):
        def run(cursor):
            self._run(cursor, f"SELECT {_INVITATION_COLUMNS} FROM keyx_invitations "
                              "ORDER BY name")
            return {row[0]: _invitation(row) for row in cursor.fetchall()}
        return self.store.transact(run)


class ConnectionStore:
    """keyx-admin's side of the stores above: one plain psycopg
    ``connection``, each :meth:`transact` one transaction run at once, its
    outcome a fired Deferred (a connection that fails:
    :class:`~twisted_keyx.core.interfaces.StoreUnavailable`)."""

    def __init__(self, connection):
        self.connection = connection
        self.queries = 0

    def transact(self, interaction, *args):
        psycopg = _psycopg()
        try:
            with self.connection.transaction(), self.connection.cursor() as cursor:
                result = interaction(cursor, *args)
        except StoreConflict as e:
            return defer.fail(e)
        except psycopg.Error as e:
            return defer.fail(StoreUnavailable(f"postgresql: {_one_line(e)}"))
        return defer.succeed(result)


def count_users(connection):
    """The number of users in the store of each scheme (the daemon's
    start-up lines): ``{scheme: count}``."""
    with connection.transaction(), connection.cursor() as cursor:
        cursor.execute("SELECT scheme, count(*) FROM keyx_users GROUP BY scheme")
        return dict(cursor.fetchall())


class Deployment:
    """What ``--store postgresql://...`` gives the daemon, made at start-up:
    the schema checked and the users counted (not loaded: each login looks
    its user up).  The OPAQUE setup is the OPAQUE entry's to read or make
    (:class:`ConnectionSetupStore`)."""

    def __init__(self, url):
        connection = connect(url)
        try:
            check_schema(connection, url)
            #: scheme -> its number of users, at start-up.
            self.user_counts = count_users(connection)
            self.user_count = sum(self.user_counts.values())
        finally:
            connection.close()
        self.url = url
        self.where = shown(url)
        self.sql = sql_store(url)
        self.users = PostgreSQLUserStore(self.sql, self.where)
        self.setup_store = PostgreSQLSetupStore(self.sql, self.where)
        self.invitations = PostgreSQLInvitationStore(self.sql, self.where)
        self.throttle = SQLThrottleStore(self.sql)

    def close(self):
        self.sql.close()
