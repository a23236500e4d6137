"""Stores in SQL: SQLite (the guess throttle shared by the workers of one
daemon) and PostgreSQL (everything a fleet of daemons shares).

Both go through :class:`twisted.enterprise.adbapi.ConnectionPool`: each call
is one transaction (:meth:`~twisted.enterprise.adbapi.ConnectionPool.runInteraction`)
run in the pool's threads, its outcome a Deferred on the reactor.  Why
adbapi and not psycopg's asyncio API: psycopg's async connections need an
asyncio event loop, which a twistd daemon (epoll reactor) does not run, and a
loop in another thread bridged to Deferreds is a second event loop to keep
alive; adbapi gives a transaction per interaction with commit and rollback,
reconnection (``cp_reconnect``) and the same code for SQLite's and
psycopg's DB-API connections.  A query costs a thread hop; a login makes a
handful (docs/fleet.rst, "Store queries per login"), next to an scrypt or
Argon2id computation that costs far more.

A store that cannot reach its database fails its Deferreds with
:class:`~twisted_keyx.core.interfaces.StoreUnavailable`; the pool makes a new
connection on the next call, so a database that comes back is used again
without a restart.
"""

import sqlite3
from typing import Tuple, Type

from twisted.enterprise import adbapi
from twisted.logger import Logger
from zope.interface import implementer

from twisted_keyx.core.interfaces import IThrottleStore, StoreUnavailable
from twisted_keyx.service.throttle import DAY, Bucket, Charge, charge_buckets

log = Logger()


class Dialect:
    """What differs between SQLite and PostgreSQL in our statements."""

    name = "sql"
    #: The DB-API parameter marker.
    mark = "?"
    #: What locks the rows a SELECT reads until the transaction ends.
    lock = ""
    #: The statement that starts a writing transaction ("" : implicit).
    begin = ""
    #: Exceptions that mean the database cannot be reached.
    unavailable: Tuple[Type[BaseException], ...] = ()

    def sql(self, statement):
        return statement.replace("?", self.mark)


class SQLiteDialect(Dialect):
    name = "sqlite"
    mark = "?"
    lock = ""
    # The database is locked for writing from the first statement: two
    # processes' charges never interleave.
    begin = "BEGIN IMMEDIATE"
    unavailable = (sqlite3.OperationalError,)


class PostgreSQLDialect(Dialect):
    name = "postgresql"
    mark = "%s"
    lock = " FOR UPDATE"
    # The pool's connections are in autocommit mode (pgstore.pool), so that
    # a read of one statement (a login's user lookup) is one round trip,
    # not BEGIN, SELECT, COMMIT; a transaction says BEGIN itself.
    begin = "BEGIN"

    def __init__(self):
        import psycopg

        self.unavailable = (psycopg.OperationalError, psycopg.InterfaceError)


#: The throttle's tables (also in the PostgreSQL schema, migration 1).
THROTTLE_TABLES = (
    """CREATE TABLE IF NOT EXISTS throttle_bucket (
        key TEXT PRIMARY KEY,
        failures DOUBLE PRECISION NOT NULL,
        updated DOUBLE PRECISION NOT NULL,
        next_answer DOUBLE PRECISION NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS throttle_familiar (
        user_name TEXT NOT NULL,
        source TEXT NOT NULL,
        last_login DOUBLE PRECISION NOT NULL,
        failures DOUBLE PRECISION NOT NULL,
        updated DOUBLE PRECISION NOT NULL,
        next_answer DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (user_name, source))""",
)


class Pool(adbapi.ConnectionPool):
    """adbapi's pool, each interaction given a plain DB-API cursor, and a
    connection the database broke (its server restarted, the network cut)
    dropped quietly, a new one made on the next call: adbapi's own
    reconnection logs a traceback for each broken rollback."""

    #: Exceptions that mean the connection is gone (the dialect's).
    broken = ()

    def _runInteraction(self, interaction, *args, **kw):
        try:
            return self._once(interaction, *args, **kw)
        except self.broken:
            # A connection the database broke while it sat in the pool (a
            # restart): dropped; the interaction once more on a new one.
            return self._once(interaction, *args, **kw)

    def _once(self, interaction, *args, **kw):
        connection = self.connect()
        try:
            cursor = connection.cursor()
            try:
                result = interaction(cursor, *args, **kw)
            finally:
                cursor.close()
            connection.commit()
            return result
        except BaseException as error:
            try:
                connection.rollback()
            except BaseException:
                self._drop(connection)
            else:
                if isinstance(error, self.broken):
                    self._drop(connection)
            raise

    def _drop(self, connection):
        try:
            self.disconnect(connection)
        except Exception:  # already gone
            pass


def sqlite_pool(path):
    """A pool of one connection to the SQLite file ``path`` (one writer per
    process; processes wait for each other's transactions, up to 10 s)."""
    pool = Pool("sqlite3", path, check_same_thread=False, isolation_level=None, timeout=10.0,
                cp_min=1, cp_max=1, cp_noisy=False)
    pool.broken = (sqlite3.OperationalError,)
    return pool


class SQLStore:
    """A pool and its dialect; each call one transaction.

    With ``where`` (``"the store postgresql://..."``), an outage is logged
    once when a call first finds the database unreachable, and its end when
    a call succeeds again: one line each, whatever the number of logins
    refused meanwhile."""

    def __init__(self, pool, dialect, where=None):
        self.pool = pool
        self.dialect = dialect
        self.where = where
        #: Whether the last call found the database unreachable.
        self.down = False
        #: Statements sent, for the benchmarks (docs/fleet.rst).
        self.queries = 0

    def execute(self, txn, statement, args=()):
        self.queries += 1
        txn.execute(self.dialect.sql(statement), args)

    def transact(self, interaction, *args):
        """Deferred: ``interaction(txn, *args)`` in one transaction; a
        database that cannot be reached fails it with StoreUnavailable."""
        def run(txn):
            if self.dialect.begin:
                txn.execute(self.dialect.begin)
            return interaction(txn, *args)

        outcome = self.pool.runInteraction(run)
        return outcome.addCallbacks(self._answered, self._unavailable)

    def read(self, interaction, *args):
        """Deferred: ``interaction(txn, *args)``, one statement that only
        reads, without a transaction of its own (with PostgreSQL's autocommit
        connections: one round trip); as :meth:`transact` otherwise."""
        outcome = self.pool.runInteraction(interaction, *args)
        return outcome.addCallbacks(self._answered, self._unavailable)

    def _answered(self, result):
        if self.down:
            self.down = False
            if self.where is not None:
                log.info("{where} answers again", where=self.where)
        return result

    def _unavailable(self, failure):
        if failure.check(*self.dialect.unavailable):
            why = f"{self.dialect.name}: {_one_line(failure.value)}"
            if not self.down:
                self.down = True
                if self.where is not None:
                    log.warn("{where} does not answer ({why}); password logins are refused "
                             "until it answers", where=self.where, why=why)
            raise StoreUnavailable(why)
        # An answer that is an error of its own (a conflict...): it answered.
        self._answered(None)
        return failure

    def close(self):
        self.pool.close()


def _one_line(error):
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


@implementer(IThrottleStore)
class SQLThrottleStore:
    """The throttle's buckets and familiar sources as rows
    (:mod:`twisted_keyx.service.throttle` holds the policy): exact, shared
    by every process using the database, one transaction per charge."""

    def __init__(self, store):
        self.store = store

    @classmethod
    def sqlite(cls, path):
        """A store in the SQLite file ``path``, its tables made if missing
        (a file the daemon owns, not a schema keyx-admin manages)."""
        connection = sqlite3.connect(path, timeout=10.0)
        try:
            for statement in THROTTLE_TABLES:
                connection.execute(statement)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.commit()
        finally:
            connection.close()
        return cls(SQLStore(sqlite_pool(path), SQLiteDialect()))

    def _familiar(self, txn, user, source, now, limits):
        self.store.execute(
            txn, "SELECT last_login, failures, updated, next_answer FROM throttle_familiar "
                 "WHERE user_name = ? AND source = ?" + self.store.dialect.lock, (user, source))
        row = txn.fetchone()
        if row is None or now - row[0] > limits.familiar_days * DAY:
            return None
        return Bucket(row[1], row[2], row[3])

    def _buckets(self, txn, keys, now):
        """The rows of ``keys`` (made if missing), locked; key -> Bucket."""
        keys = sorted(keys)  # one order for every transaction: no deadlock
        values = ", ".join("(?, 0, ?, 0)" for _ in keys)
        args = [arg for key in keys for arg in (key, now)]
        self.store.execute(
            txn, f"INSERT INTO throttle_bucket (key, failures, updated, next_answer) "
                 f"VALUES {values} ON CONFLICT (key) DO UPDATE SET key = excluded.key "
                 f"RETURNING key, failures, updated, next_answer", args)
        return {row[0]: Bucket(row[1], row[2], row[3]) for row in txn.fetchall()}

    def _write(self, txn, buckets):
        for key, bucket in sorted(buckets.items()):
            self.store.execute(
                txn, "UPDATE throttle_bucket SET failures = ?, updated = ?, next_answer = ? "
                     "WHERE key = ?", (bucket.failures, bucket.updated, bucket.next_answer, key))

    def charge(self, user, source, now, limits):
        return self.store.transact(self._charge, user, source, now, limits)

    def _charge(self, txn, user, source, now, limits):
        familiar = self._familiar(txn, user, source, now, limits)
        if familiar is not None:
            delay, retry, throttled = charge_buckets({"familiar": familiar}, now, limits)
            if delay is not None:
                self.store.execute(
                    txn, "UPDATE throttle_familiar SET failures = ?, updated = ?, "
                         "next_answer = ? WHERE user_name = ? AND source = ?",
                    (familiar.failures, familiar.updated, familiar.next_answer, user, source))
            return Charge(delay, retry, True, throttled)
        keys = {"user": "u " + user, "source": "s " + source}
        rows = self._buckets(txn, keys.values(), now)
        buckets = {kind: rows[key] for kind, key in keys.items()}
        delay, retry, throttled = charge_buckets(buckets, now, limits)
        if delay is not None:
            self._write(txn, {keys[kind]: bucket for kind, bucket in buckets.items()})
        return Charge(delay, retry, False, throttled)

    def release(self, user, source, now, limits):
        return self.store.transact(self._release, user, source, now, limits)

    def _release(self, txn, user, source, now, limits):
        familiar = self._familiar(txn, user, source, now, limits)
        if familiar is not None:
            familiar.decay(now, limits.forget)
            self.store.execute(
                txn, "UPDATE throttle_familiar SET failures = ?, updated = ? "
                     "WHERE user_name = ? AND source = ?",
                (max(0.0, familiar.failures - 1), familiar.updated, user, source))
        else:
            self._refund(txn, user, source, now, limits)

    def _refund(self, txn, user, source, now, limits):
        buckets = self._buckets(txn, ["u " + user, "s " + source], now)
        for bucket in buckets.values():
            bucket.decay(now, limits.forget)
            bucket.failures = max(0.0, bucket.failures - 1)
        self._write(txn, buckets)

    def settle(self, user, source, now, limits):
        return self.store.transact(self._settle, user, source, now, limits)

    def _settle(self, txn, user, source, now, limits):
        familiar = self._familiar(txn, user, source, now, limits)
        self.store.execute(
            txn, "INSERT INTO throttle_familiar (user_name, source, last_login, failures, "
                 "updated, next_answer) VALUES (?, ?, ?, 0, ?, 0) ON CONFLICT (user_name, source) "
                 "DO UPDATE SET last_login = excluded.last_login, failures = 0, "
                 "updated = excluded.updated, next_answer = excluded.updated",
            (user, source, now, now))
        if familiar is None:
            # The guess this login reserved was charged to the user's and
            # the source's buckets: refunded.
            self._refund(txn, user, source, now, limits)

    def familiar(self, user, source, now, limits):
        """Deferred: whether ``source`` is familiar to ``user``."""
        outcome = self.store.transact(self._familiar, user, source, now, limits)
        return outcome.addCallback(lambda bucket: bucket is not None)

    def prune(self, now, limits):
        """Deferred: delete the rows that hold nothing any more (failures
        all forgotten, no slot ahead; familiar sources older than
        ``familiar_days``), firing with how many."""
        return self.store.transact(self._prune, now, limits)

    def _prune(self, txn, now, limits):
        forget = limits.forget or 1e-9
        self.store.execute(
            txn, "DELETE FROM throttle_bucket WHERE next_answer < ? "
                 "AND failures - (? - updated) / ? <= 0", (now, now, forget))
        count = txn.rowcount
        self.store.execute(txn, "DELETE FROM throttle_familiar WHERE last_login < ?",
                           (now - limits.familiar_days * DAY,))
        return count + txn.rowcount

    def close(self):
        self.store.close()
