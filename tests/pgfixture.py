"""A PostgreSQL server for the tests: ``initdb`` and ``pg_ctl`` in a
temporary folder, a unix socket there, no TCP, trust authentication.

One server per test process, started by the first test that asks
(:func:`server`) and stopped when the process exits; each test makes a
database of its own (:meth:`Server.database`).  PostgreSQL refuses to run as
root: as root the server runs as the ``postgres`` user (``runuser``).

Where PostgreSQL cannot start, the tests that need it are skipped, except
under CI (``CI=true``, as ``.ci/run`` sets it), where they fail: CI must not
pass by skipping them.
"""

import atexit
import getpass
import glob
import os
import shutil
import subprocess
import tempfile
import uuid

from twisted.trial import unittest


def _binary(name):
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else None


class Unavailable(Exception):
    pass


class Server:
    """One PostgreSQL cluster in a temporary folder."""

    def __init__(self, preload=""):
        #: shared_preload_libraries (the benchmarks' pg_stat_statements).
        self.preload = preload
        self.initdb, self.pg_ctl = _binary("initdb"), _binary("pg_ctl")
        if not (self.initdb and self.pg_ctl):
            raise Unavailable("initdb/pg_ctl not found (apt-get install postgresql)")
        self.root = os.geteuid() == 0
        self.user = "postgres" if self.root else getpass.getuser()
        self.folder = tempfile.mkdtemp(prefix="keyx-pg-")
        self.data = os.path.join(self.folder, "data")
        if self.root:
            try:
                shutil.chown(self.folder, "postgres", "postgres")
            except LookupError:
                raise Unavailable("no postgres user to run PostgreSQL as") from None
        self._run(self.initdb, "-D", self.data, "-A", "trust", "-U", self.user,
                  "--no-sync", "-E", "UTF8")
        self.running = False
        self.start()

    def _run(self, *args):
        command = list(args)
        if self.root:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                cwd=self.folder)
        if result.returncode != 0:
            raise Unavailable(f"{' '.join(args[:2])}: {result.stdout.decode(errors='replace')}")
        return result

    def start(self):
        self._run(self.pg_ctl, "-D", self.data, "-l", os.path.join(self.folder, "log"), "-w",
                  "-o", f"-k {self.folder} -c listen_addresses= -F -c max_connections=200"
                  + (f" -c shared_preload_libraries={self.preload}" if self.preload else ""),
                  "start")
        self.running = True

    def stop(self, mode="fast"):
        self._run(self.pg_ctl, "-D", self.data, "-m", mode, "-w", "stop")
        self.running = False

    def url(self, database="postgres"):
        return f"postgresql://{self.user}@/{database}?host={self.folder}"

    def database(self):
        """A new empty database; its URL."""
        import psycopg

        name = "keyx_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def cleanup(self):
        if self.running:
            try:
                self.stop("immediate")
            except Unavailable:
                pass
        shutil.rmtree(self.folder, ignore_errors=True)


_server = None
_failure = None


def server():
    """The process's PostgreSQL server, started at the first call; or
    SkipTest (outside CI) / RuntimeError (CI=true) if it cannot start."""
    global _server, _failure
    if _server is None and _failure is None:
        try:
            import psycopg  # noqa: F401 (only whether it is there)
        except ImportError:
            _failure = "psycopg is not installed (pip install -e '.[test]')"
        else:
            try:
                _server = Server()
                atexit.register(_server.cleanup)
            except (Unavailable, OSError) as e:
                _failure = f"PostgreSQL cannot start: {e}"
    if _server is None:
        if os.environ.get("CI") == "true":
            raise RuntimeError(f"{_failure} (CI=true: the PostgreSQL tests must run)")
        raise unittest.SkipTest(_failure)
    if not _server.running:
        _server.start()
    return _server


class PostgreSQLTestCase(unittest.TestCase):
    """A test on the process's server (``self.server``); ``self.server.database()``
    makes each test a database of its own."""

    def setUp(self):
        self.server = server()

    def upgraded_database(self):
        """A new database of its own with this version's schema: its URL."""
        from twisted_keyx.service import pgstore

        url = self.server.database()
        connection = pgstore.connect(url)
        try:
            pgstore.upgrade(connection)
        finally:
            connection.close()
        return url
