"""keyx-admin adduser / deluser / listusers."""

import getpass
import io
import os
import stat
import sys
import threading
import time

from twisted.trial import unittest

from twisted_keyx.cli import admin
from twisted_keyx.eke import crypto
from twisted_keyx.service import userfile as userstore

from tests.helpers import TEST_KDF, expected_password_key


class AdminUserTests(unittest.TestCase):
    def setUp(self):
        self.users = self.mktemp()
        self.password_file = self.mktemp()
        with open(self.password_file, "w") as f:
            f.write("s3cret p\u00e4ss\n")
        os.chmod(self.password_file, 0o600)  # a looser file is warned about
        # adduser runs the real (32 MiB) scrypt; make it cheap for tests.
        self.patch(crypto, "DEFAULT_SCRYPT", TEST_KDF)

    def admin(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        if argv[:1] == ("adduser",) and "--scheme" not in argv:
            argv += ("--scheme", "eke")  # these are EKE's tests; OPAQUE is the default
        status = admin.main(list(argv), out, err)
        return status, out.getvalue(), err.getvalue()

    def adduser(self, name="alice", *extra):
        return self.admin("adduser", name, "--users", self.users,
                          "--password-file", self.password_file, *extra)

    def test_adduser_creates_the_file(self):
        status, out, err = self.adduser()
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(out, f"added user alice to {self.users} (scrypt n=16 r=2 p=1)\n")
        self.assertEqual(stat.S_IMODE(os.stat(self.users).st_mode), 0o600)
        record = userstore.read_users(self.users)["alice"]
        self.assertEqual(record.key, expected_password_key("s3cret p\u00e4ss", record.salt, TEST_KDF))
        with open(self.users, "rb") as f:
            self.assertNotIn("s3cret".encode(), f.read())

    def test_adduser_keeps_the_other_users(self):
        self.adduser("alice")
        self.adduser("bob")
        self.assertEqual(sorted(userstore.read_users(self.users)), ["alice", "bob"])

    def test_adduser_existing(self):
        self.adduser()
        status, out, err = self.adduser()
        self.assertEqual(status, 1)
        self.assertEqual(err, f"keyx-admin: user 'alice' already exists in {self.users}; "
                              "remove it first with keyx-admin deluser\n")

    def test_adduser_bad_name_is_a_usage_error(self):
        # Exit status 2, as for keyx-client eke --user.
        for name, why in [("two words", "a user name is printable and has no whitespace"),
                          ("x" * 65, "a user name has 1 to 64 bytes, not 65")]:
            stderr = io.StringIO()
            self.patch(sys, "stderr", stderr)
            with self.assertRaises(SystemExit) as caught:
                self.adduser(name)
            self.assertEqual(caught.exception.code, 2)
            self.assertEqual(stderr.getvalue().splitlines()[-1],
                             f"keyx-admin adduser: error: argument NAME: "
                             f"bad user name {name!r}: {why}")
        self.assertFalse(os.path.exists(self.users))

    def test_adduser_empty_password_file(self):
        with open(self.password_file, "w") as f:
            f.write("\n")
        status, out, err = self.adduser()
        self.assertEqual(status, 1)
        self.assertEqual(err, f"keyx-admin: {self.password_file}: the password is empty\n")
        self.assertFalse(os.path.exists(self.users))

    def test_adduser_unreadable_password_file(self):
        status, out, err = self.admin("adduser", "alice", "--users", self.users,
                                      "--password-file", self.password_file + ".missing")
        self.assertEqual(status, 1)
        self.assertEqual(
            err, f"keyx-admin: cannot read {self.password_file}.missing: No such file or directory\n"
        )

    def test_adduser_broken_user_file(self):
        with open(self.users, "w") as f:
            f.write("not json")
        status, out, err = self.adduser()
        self.assertEqual(status, 1)
        self.assertTrue(err.startswith(f"keyx-admin: {self.users}: not JSON"))

    def test_deeply_nested_user_file(self):
        with open(self.users, "wb") as f:
            f.write(b"[" * 100000)
        for command in (self.adduser, lambda: self.admin("listusers", "--users", self.users),
                        lambda: self.admin("deluser", "alice", "--users", self.users)):
            self.assertEqual(command(), (1, "", f"keyx-admin: {self.users}: nested more than "
                                                f"{userstore.MAX_DEPTH} levels deep\n"))

    def test_adduser_prompts_twice(self):
        answers = iter(["pw one", "pw one"])
        prompts = []
        self.patch(getpass, "getpass", lambda prompt: prompts.append(prompt) or next(answers))
        status, out, err = self.admin("adduser", "alice", "--users", self.users)
        self.assertEqual(status, 0)
        self.assertEqual(prompts, ["Password for alice: ", "Again: "])
        record = userstore.read_users(self.users)["alice"]
        self.assertEqual(record.key, expected_password_key("pw one", record.salt, TEST_KDF))

    def test_adduser_prompts_must_match(self):
        answers = iter(["pw one", "pw two"])
        self.patch(getpass, "getpass", lambda prompt: next(answers))
        status, out, err = self.admin("adduser", "alice", "--users", self.users)
        self.assertEqual((status, err), (1, "keyx-admin: the two passwords differ\n"))
        self.assertFalse(os.path.exists(self.users))

    def test_adduser_prompt_empty(self):
        self.patch(getpass, "getpass", lambda prompt: "")
        status, out, err = self.admin("adduser", "alice", "--users", self.users)
        self.assertEqual((status, err), (1, "keyx-admin: the password is empty\n"))

    def test_adduser_ctrl_c_at_the_prompt(self):
        def interrupted(prompt):
            raise KeyboardInterrupt

        self.patch(getpass, "getpass", interrupted)
        status, out, err = self.admin("adduser", "alice", "--users", self.users)
        self.assertEqual((status, out, err), (130, "", "keyx-admin: interrupted\n"))
        self.assertFalse(os.path.exists(self.users))

    def test_password_file_readable_by_others_is_warned_about(self):
        os.chmod(self.password_file, 0o644)
        status, out, err = self.adduser()
        self.assertEqual((status, err), (0, (
            f"keyx-admin: warning: {self.password_file} is readable by group or others "
            f"(mode 0644); chmod 600 {self.password_file}\n")))

    def test_user_file_readable_by_others_is_warned_about(self):
        self.adduser("alice")
        os.chmod(self.users, 0o640)
        status, out, err = self.admin("listusers", "--users", self.users)
        self.assertEqual((status, out), (0, "alice  eke, scrypt n=16 r=2 p=1\n"))
        self.assertEqual(err, (
            f"keyx-admin: warning: {self.users} is readable by group or others (mode 0640): "
            f"its keys log in without the passwords; chmod 600 {self.users}\n"))
        # adduser and deluser write it back with mode 0600.
        self.adduser("bob")
        self.assertEqual(stat.S_IMODE(os.stat(self.users).st_mode), 0o600)
        self.assertEqual(self.admin("listusers", "--users", self.users)[2], "")

    def test_deluser(self):
        self.adduser("alice")
        self.adduser("bob")
        status, out, err = self.admin("deluser", "alice", "--users", self.users)
        self.assertEqual((status, out), (0, f"removed user alice from {self.users}\n"))
        self.assertEqual(list(userstore.read_users(self.users)), ["bob"])

    def test_deluser_missing_user(self):
        self.adduser("alice")
        status, out, err = self.admin("deluser", "bob", "--users", self.users)
        self.assertEqual((status, err), (1, f"keyx-admin: no user 'bob' in {self.users}\n"))

    def test_deluser_missing_file(self):
        status, out, err = self.admin("deluser", "bob", "--users", self.users)
        self.assertEqual((status, err), (1, f"keyx-admin: cannot read {self.users}: no such file\n"))

    def test_listusers(self):
        self.adduser("bob")
        self.adduser("alice")
        status, out, err = self.admin("listusers", "--users", self.users)
        self.assertEqual(status, 0)
        self.assertEqual(out, "alice  eke, scrypt n=16 r=2 p=1\nbob  eke, scrypt n=16 r=2 p=1\n")

    def test_listusers_no_users(self):
        self.adduser("alice")
        self.admin("deluser", "alice", "--users", self.users)
        status, out, err = self.admin("listusers", "--users", self.users)
        self.assertEqual((status, out, err), (0, "", f"keyx-admin: no users in {self.users}\n"))

    def test_listusers_missing_file(self):
        # As README says: a file not made yet has no users (deluser still
        # says it cannot read it).
        status, out, err = self.admin("listusers", "--users", self.users)
        self.assertEqual((status, out, err), (0, "", f"keyx-admin: no users in {self.users}\n"))
        self.assertFalse(os.path.exists(self.users))

    def test_long_user_name_is_cut_in_messages(self):
        self.adduser("alice")
        name = "x" * 1000
        status, out, err = self.admin("deluser", name, "--users", self.users)
        self.assertEqual((status, err), (1, (
            f"keyx-admin: no user '{'x' * 80}'... (1000 characters) in {self.users}\n")))
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        with self.assertRaises(SystemExit):
            self.adduser(name)
        self.assertEqual(stderr.getvalue().splitlines()[-1], (
            f"keyx-admin adduser: error: argument NAME: bad user name '{'x' * 80}'... "
            "(1000 characters): a user name has 1 to 64 bytes, not 1000"))

    def race(self, *commands):
        """Run each ``keyx-admin`` command line in its own thread, at once,
        with the write slowed down so that the unlocked read-modify-writes
        would overlap."""
        real_serialize = userstore.serialize_users

        def slow_serialize(users):
            time.sleep(0.05)
            return real_serialize(users)

        self.patch(userstore, "serialize_users", slow_serialize)
        results = [None] * len(commands)
        start = threading.Barrier(len(commands))

        def one(index, argv):
            start.wait()
            results[index] = self.admin(*argv)

        threads = [threading.Thread(target=one, args=(i, argv)) for i, argv in enumerate(commands)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return results

    def test_concurrent_addusers_keep_every_user(self):
        names = [f"user{i}" for i in range(6)]
        results = self.race(*[("adduser", name, "--users", self.users,
                               "--password-file", self.password_file) for name in names])
        self.assertEqual([status for status, _, _ in results], [0] * len(names))
        self.assertEqual(sorted(userstore.read_users(self.users)), names)
        self.assertTrue(os.path.exists(self.users + ".lock"))

    def test_concurrent_deluser_and_adduser(self):
        self.adduser("alice")
        self.race(("deluser", "alice", "--users", self.users),
                  ("adduser", "bob", "--users", self.users,
                   "--password-file", self.password_file))
        self.assertEqual(list(userstore.read_users(self.users)), ["bob"])

    def test_adduser_rechecks_under_the_lock(self):
        """Two adds of one name: one wins, the other says the user exists."""
        results = self.race(*[("adduser", "alice", "--users", self.users,
                               "--password-file", self.password_file)] * 2)
        self.assertEqual(sorted(status for status, _, _ in results), [0, 1])
        [(_, _, err)] = [r for r in results if r[0] == 1]
        self.assertTrue(err.startswith(f"keyx-admin: user 'alice' already exists in {self.users}"))

    def test_lock_that_cannot_be_taken(self):
        os.mkdir(self.users + ".lock")
        status, out, err = self.admin("deluser", "alice", "--users", self.users)
        self.assertEqual((status, err),
                         (1, f"keyx-admin: cannot lock {self.users}.lock: Is a directory\n"))

    def test_default_path(self):
        directory = self.mktemp()
        os.mkdir(directory)
        cwd = os.getcwd()
        os.chdir(directory)
        self.addCleanup(os.chdir, cwd)
        status, out, err = self.admin("adduser", "alice", "--password-file",
                                      os.path.join(cwd, self.password_file))
        self.assertEqual(status, 0)
        self.assertTrue(os.path.exists("keyx-users.json"))
