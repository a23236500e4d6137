"""keyx-admin adduser/listusers/deluser with both schemes, the OPAQUE key
file, twistd keyx --opaque options, the known-servers file."""

import base64
import io
import json
import os
import sys

from twisted.python import usage
from twisted.internet.testing import MemoryReactor
from twisted.trial import unittest

from tests.helpers import TEST_KDF
from tests.opaque_helpers import cheap_setup
from twisted_keyx.cli import admin
from twisted_keyx.core import schemes
from twisted_keyx.service import tap
from twisted_keyx.eke import crypto
from twisted_keyx.service import userfile as userstore
from twisted_keyx.opaque import scheme as opaque_scheme
from twisted_keyx.trust.knownservers import KnownServers, server_key_fingerprint
from twisted_keyx.trust.tofu import TrustStatus


#: Long and unlike base64, so that finding it in a file means it was stored.
PASSWORD = "a password never stored"

class AdminSchemeTests(unittest.TestCase):
    def setUp(self):
        self.dir = self.mktemp()
        os.mkdir(self.dir)
        self.users = os.path.join(self.dir, "users.json")
        self.key = os.path.join(self.dir, "opaque-key")
        self.password_file = os.path.join(self.dir, "pw")
        with open(self.password_file, "w") as f:
            f.write(PASSWORD + "\n")
        os.chmod(self.password_file, 0o600)
        self.patch(crypto, "DEFAULT_SCRYPT", TEST_KDF)
        # A cheap Argon2id default for the key file keyx-admin creates.
        setup = cheap_setup()
        with open(self.key, "wb") as f:
            f.write(setup.dumps())
        os.chmod(self.key, 0o600)

    def admin(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        status = admin.main(list(argv), out, err)
        return status, out.getvalue(), err.getvalue()

    def add(self, name, *scheme):
        return self.admin("adduser", name, "--users", self.users, "--opaque-key", self.key,
                          "--password-file", self.password_file, *scheme)

    def test_the_scheme_adds_a_user_through_a_setup_store(self):
        """OPAQUE's ``add_user`` with a store (keyx-admin --store): the
        setup of its IServerSetupStore, made there when it has none, and
        the key file of --opaque-key left alone; one that cannot be used is
        a ValueError of one line."""
        from twisted.internet import defer

        from twisted_keyx.core.interfaces import IServerSetupStore, StoreUnavailable
        from twisted_keyx.opaque.setupfile import SetupInMemory

        said = []
        store = SetupInMemory(None)
        self.patch(opaque_scheme, "ServerSetup", type("Cheap", (), {
            "generate": staticmethod(cheap_setup)}))
        options = {"opaque_key": os.path.join(self.dir, "not-made")}
        first, _ = opaque_scheme.SCHEME.add_user("bob", PASSWORD, options, said.append,
                                                 {IServerSetupStore: store}.get)
        self.assertEqual(said, ["made the OPAQUE server setup in memory"])
        self.assertEqual(first.server_key,
                         server_key_fingerprint(store.setup.server_public_key))
        second, detail = opaque_scheme.SCHEME.add_user("carol", PASSWORD, options,
                                                       said.append,
                                                       {IServerSetupStore: store}.get)
        self.assertEqual((len(said), second.server_key, detail),
                         (1, first.server_key, f"opaque, {second.record.ksf}"))
        self.assertFalse(os.path.exists(options["opaque_key"]))

        class Down:
            where = "the store"

            def load(self):
                return defer.fail(StoreUnavailable("postgresql: connection refused"))

        error = self.assertRaises(ValueError, opaque_scheme.SCHEME.add_user, "dave", PASSWORD,
                                  options, said.append, {IServerSetupStore: Down()}.get)
        self.assertEqual(str(error), "postgresql: connection refused")

    def test_both_schemes(self):
        self.assertEqual(self.add("alice", "--scheme", "eke")[0], 0)
        status, out, err = self.add("bob")  # OPAQUE by default
        self.assertEqual((status, out, err),
                         (0, f"added user bob to {self.users} (opaque, argon2id m=64 KiB t=1 p=1)\n",
                          ""))
        status, out, _ = self.admin("listusers", "--users", self.users)
        self.assertEqual(out, "alice  eke, scrypt n=16 r=2 p=1\n"
                              "bob  opaque, argon2id m=64 KiB t=1 p=1\n")
        with open(self.users) as f:
            document = json.load(f)
        self.assertNotIn("scheme", document["users"]["alice"])  # as before schemes
        self.assertEqual(document["users"]["bob"]["scheme"], "opaque")
        # Not the password, nor its base64 (a two-letter password turned up
        # by chance inside a random base64 field).
        text = json.dumps(document)
        self.assertNotIn(PASSWORD, text)
        self.assertNotIn(base64.b64encode(PASSWORD.encode()).decode().rstrip("="), text)
        for name in ("alice", "bob"):
            self.assertEqual(self.admin("deluser", name, "--users", self.users)[0], 0)
        self.assertEqual(userstore.read_users(self.users), {})

    def test_key_file_created_when_first_needed(self):
        os.remove(self.key)
        self.patch(opaque_scheme, "create_key_file",
                   lambda path: _write(path, cheap_setup()))
        status, out, err = self.add("bob", "--scheme", "opaque")
        self.assertEqual(status, 0)
        self.assertEqual(err, f"keyx-admin: created the OPAQUE key file {self.key} (mode 0600)\n")

    def test_key_file_never_replaced(self):
        """Two keyx-admin adduser runs that both find no key file: the
        second used to replace the first's file (os.replace), and the users
        registered against the first could never log in (6 runs at once:
        2 key files made, 1 of 6 users locked out).  Creating never replaces
        a file; the one who comes second uses the first one's."""
        with open(self.key, "rb") as f:
            first = f.read()
        with self.assertRaises(opaque_scheme.KeyFileError):
            opaque_scheme.create_key_file(self.key)
        with open(self.key, "rb") as f:
            self.assertEqual(f.read(), first)
        # The race: the file appears after the check that it is missing.
        self.patch(opaque_scheme.os.path, "exists", lambda path: False)
        setup, created = opaque_scheme.load_or_create_key_file(self.key)
        self.assertFalse(created)
        self.assertEqual(setup.dumps(), first)
        self.assertEqual(sorted(os.listdir(self.dir)), ["opaque-key", "pw"])  # no temporary left

    def test_open_key_file_refused(self):
        os.chmod(self.key, 0o644)
        status, _, err = self.add("bob", "--scheme", "opaque")
        self.assertEqual(status, 1)
        self.assertIn("readable by group or others", err)

    def test_lookup_by_scheme(self):
        self.add("alice", "--scheme", "eke")
        self.add("bob", "--scheme", "opaque")
        users = userstore.UserFile(self.users)
        users.load()
        self.assertIsNotNone(self.successResultOf(users.lookup("alice")))
        self.assertIsNone(self.successResultOf(users.lookup("bob")))  # EKE does not see OPAQUE users
        self.assertIsNotNone(self.successResultOf(users.lookup("bob", scheme="opaque")))
        self.assertIsNone(self.successResultOf(users.lookup("alice", scheme="opaque")))
        self.assertEqual((self.successResultOf(users.count("eke")),
                          self.successResultOf(users.count("opaque"))), (1, 1))
        self.assertEqual((users.loaded_count("eke"), users.loaded_count("opaque")), (1, 1))

    def test_unknown_scheme_refused(self):
        with open(self.users, "w") as f:
            json.dump({"version": 1, "users": {"x": {"scheme": "pake9"}}}, f)
        self.assertRaises(userstore.UserFileError, userstore.read_users, self.users)

    def test_registry(self):
        self.assertEqual(schemes.names(), ["eke", "opaque"])
        self.assertRaises(schemes.UnknownScheme, schemes.named, "nope")

    # --- twistd keyx --opaque ---------------------------------------------------

    def parse(self, *argv):
        options = tap.Options()
        options.parseOptions(["--users", self.users, *argv])
        return options

    def test_tap_options(self):
        options = self.parse("--opaque", "tcp:9001", "--opaque-key", self.key)
        self.assertEqual(options["opaque"], ["tcp:9001"])
        self.assertFalse(options.config.settings["opaque"].created)

    def test_tap_missing_key_without_users_is_created(self):
        path = os.path.join(self.dir, "fresh-key")
        options = self.parse("--opaque-key", path, "--dh", "tcp:0", "--eke", "tcp:0",
                             "--opaque", "tcp:0")
        self.assertTrue(options.config.settings["opaque"].created)
        # Written when the daemon starts, not when the options are read.
        self.assertFalse(os.path.exists(path))
        tap.makeService(options, reactor=MemoryReactor()).privilegedStartService()
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)

    def test_tap_missing_key_with_users_is_an_error(self):
        self.add("bob", "--scheme", "opaque")
        with self.assertRaises(usage.UsageError) as caught:
            self.parse("--opaque-key", os.path.join(self.dir, "gone"))
        self.assertIn("1 OPAQUE user(s)", str(caught.exception))

    def test_tap_open_key_refused(self):
        os.chmod(self.key, 0o640)
        self.assertRaises(usage.UsageError, self.parse, "--opaque-key", self.key)

    def test_deeply_nested_key_file(self):
        """One clear error, no RecursionError traceback, from keyx-admin and
        twistd keyx; the file is well under the size limit."""
        with open(self.key, "wb") as f:
            f.write(b"[" * 30000 + b"]" * 30000)
        status, out, err = self.add("bob", "--scheme", "opaque")
        self.assertEqual(status, 1)
        self.assertEqual(err, f"keyx-admin: {self.key}: the OPAQUE server setup is nested "
                         "too deeply\n")
        with self.assertRaises(usage.UsageError) as caught:
            self.parse("--opaque-key", self.key)
        self.assertIn("nested too deeply", str(caught.exception))

    # --- the client's known servers -------------------------------------------

    def test_known_servers(self):
        path = os.path.join(self.dir, "cfg", "opaque_servers")
        known = KnownServers(path)

        def check(host, port, key):
            result = known.check_and_record(host, port, key)
            self.assertEqual((result.host, result.path), (f"{host}:{port}", path))
            return result.status, result.previous

        self.assertEqual(check("h", 1, b"a" * 32), (TrustStatus.NEW, None))
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        first = server_key_fingerprint(b"a" * 32)
        self.assertEqual(check("h", 1, b"a" * 32), (TrustStatus.KNOWN, first))
        self.assertEqual(check("h", 1, b"b" * 32), (TrustStatus.CHANGED, first))
        self.assertEqual(check("h", 2, b"a" * 32), (TrustStatus.NEW, None))


    def test_known_servers_concurrent_clients_lose_nothing(self):
        """Clients run at once (a script logging in to several servers):
        each adds its servers; none rewrites the file from a stale read
        (8 processes of 30 servers each kept 38 of 240 entries)."""
        import subprocess
        import sys
        path = os.path.join(self.dir, "cfg", "opaque_servers")
        code = ("import os, sys; from twisted_keyx.trust.knownservers import KnownServers\n"
                "for port in range(30): KnownServers(sys.argv[1]).check_and_record("
                "sys.argv[2], port, os.urandom(32))")
        children = [subprocess.Popen([sys.executable, "-c", code, path, f"h{i}"])
                    for i in range(8)]
        self.assertEqual([child.wait() for child in children], [0] * 8)
        with open(path) as f:
            entries = f.read().splitlines()
        self.assertEqual(len(entries), 240)

    def test_known_servers_too_large_is_not_cut(self):
        path = os.path.join(self.dir, "opaque_servers")
        lines = [f"h:{port} SHA256:{'x' * 43}\n" for port in range(30000)]
        data = "".join(lines).encode()
        self.assertGreater(len(data), 1 << 20)
        with open(path, "wb") as f:
            f.write(data)
        KnownServers(path).check_and_record("new", 1, b"a" * 32)
        with open(path, "rb") as f:
            self.assertEqual(f.read(), data)  # not rewritten from its first MiB

def _write(path, setup):
    with open(path, "wb") as f:
        f.write(setup.dumps())
    os.chmod(path, 0o600)
    return setup


class HelpTextTests(unittest.TestCase):
    """What --help and the descriptions say about the two password schemes
    (issue 24 item 10): each of these left OPAQUE out or claimed scrypt."""

    def help_of(self, parser_main, *argv):
        stdout = io.StringIO()
        self.patch(sys, "stdout", stdout)
        with self.assertRaises(SystemExit) as caught:
            parser_main([*argv, "--help"], io.StringIO(), io.StringIO())
        self.assertEqual(caught.exception.code, 0)
        return " ".join(stdout.getvalue().split())

    def test_adduser_help(self):
        text = self.help_of(admin.main, "adduser")
        self.assertIn("for an OPAQUE user (the default) the OPAQUE registration record", text)
        self.assertIn("for an EKE user a random salt, the scrypt parameters", text)
        self.assertIn("[default: opaque]", text)
        self.assertNotIn("EKE user file", text)
        self.assertIn("the user file, which holds the EKE and the OPAQUE users", text)

    def test_listusers_and_deluser_users_option(self):
        for command in ("listusers", "deluser"):
            self.assertNotIn("EKE user file", self.help_of(admin.main, command))

    def test_twistd_keyx_help(self):
        from twisted_keyx.service import tap

        text = " ".join(str(tap.Options()).split())
        self.assertIn("EKE on tcp:8088 and OPAQUE on tcp:8089", text)
        self.assertNotIn("EKE user file", text)
        self.assertIn("User file (EKE and OPAQUE users)", text)

    def test_plugin_line_and_package_description(self):
        import configparser

        from twisted.plugins import keyx_plugin

        for text in (keyx_plugin.keyx.description,):
            self.assertIn("OPAQUE on 8089", text)
        config = configparser.ConfigParser()
        config.read(os.path.join(os.path.dirname(os.path.dirname(__file__)), "setup.cfg"))
        self.assertIn("OPAQUE", config["metadata"]["description"])

    def test_keyx_lab_version(self):
        from twisted_keyx import __version__
        from twisted_keyx.cli import lab

        stdout = io.StringIO()
        self.patch(sys, "stdout", stdout)
        with self.assertRaises(SystemExit) as caught:
            lab.main(["--version"], io.StringIO(), io.StringIO())
        self.assertEqual((caught.exception.code, stdout.getvalue()),
                         (0, f"twisted-keyx {__version__}\n"))


class KeyFileMatchTests(unittest.TestCase):
    """adduser --scheme opaque refuses a key file that is not the other
    OPAQUE users' (issue 21): the record keeps its key's fingerprint."""

    setUp = AdminSchemeTests.setUp
    admin = AdminSchemeTests.admin
    add = AdminSchemeTests.add

    def test_record_keeps_the_server_key(self):
        self.assertEqual(self.add("bob", "--scheme", "opaque")[0], 0)
        with open(self.users) as f:
            stored = json.load(f)["users"]["bob"]["server_key"]
        setup = opaque_scheme.load_key_file(self.key)
        self.assertEqual(stored, server_key_fingerprint(setup.server_public_key))
        user = userstore.read_users(self.users)["bob"]
        self.assertEqual(user.server_key, stored)

    def test_other_key_file_refused(self):
        self.assertEqual(self.add("bob", "--scheme", "opaque")[0], 0)
        other = os.path.join(self.dir, "other-key")
        with open(other, "wb") as f:
            f.write(cheap_setup(rng=os.urandom).dumps())
        os.chmod(other, 0o600)
        status, out, err = self.admin("adduser", "carol", "--users", self.users,
                                      "--opaque-key", other, "--password-file",
                                      self.password_file, "--scheme", "opaque")
        self.assertEqual(status, 1)
        self.assertIn("is not the one the OPAQUE users of the user file", err)
        self.assertIn("(bob: server key SHA256:", err)
        self.assertNotIn("carol", userstore.read_users(self.users))

    def test_missing_key_file_with_opaque_users_refused_and_not_created(self):
        self.assertEqual(self.add("bob", "--scheme", "opaque")[0], 0)
        missing = os.path.join(self.dir, "elsewhere")
        status, out, err = self.admin("adduser", "carol", "--users", self.users,
                                      "--opaque-key", missing, "--password-file",
                                      self.password_file, "--scheme", "opaque")
        self.assertEqual(status, 1)
        self.assertIn("no OPAQUE key file", err)
        self.assertFalse(os.path.exists(missing))

    def test_old_records_without_server_key_still_read(self):
        self.assertEqual(self.add("bob", "--scheme", "opaque")[0], 0)
        with open(self.users) as f:
            document = json.load(f)
        del document["users"]["bob"]["server_key"]
        with open(self.users, "w") as f:
            json.dump(document, f)
        self.assertIsNone(userstore.read_users(self.users)["bob"].server_key)
        self.assertEqual(self.add("carol", "--scheme", "opaque")[0], 0)


class KeyStretchingFailureTests(unittest.TestCase):
    setUp = AdminSchemeTests.setUp
    admin = AdminSchemeTests.admin
    add = AdminSchemeTests.add

    def test_adduser_reports_it_in_one_line(self):
        from twisted_keyx.opaque import ksf
        from twisted_keyx.opaque.errors import KeyStretchingFailed

        def fail(parameters, data):
            raise KeyStretchingFailed(f"key stretching ({parameters}) failed on this machine: "
                                      "Not enough memory to derive key")

        self.patch(ksf.Argon2idParameters, "stretch", fail)
        status, out, err = self.add("bob", "--scheme", "opaque")
        self.assertEqual(status, 1)
        self.assertEqual(err, "keyx-admin: key stretching (argon2id m=64 KiB t=1 p=1) failed "
                              "on this machine: Not enough memory to derive key\n")
        self.assertFalse(os.path.exists(self.users))
