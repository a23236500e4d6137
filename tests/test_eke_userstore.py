"""The EKE user file: format, atomic writes, permissions, reload on change."""

import base64
import json
import os
import stat

from twisted.logger import capturedLogs
from twisted.trial import unittest

from twisted_keyx.eke import crypto
from twisted_keyx.service import userfile as userstore
from twisted_keyx.service.userfile import UserFile, UserFileError, run_now

from tests.helpers import PASSWORD, TEST_KDF, expected_password_key, log_text, make_user


class FormatTests(unittest.TestCase):
    def setUp(self):
        self.path = self.mktemp()

    def test_round_trip(self):
        users = {"alice": make_user("alice"), "b\u00e9a": make_user("b\u00e9a", seed=b"2")}
        userstore.write_users(self.path, users)
        loaded = userstore.read_users(self.path)
        self.assertEqual(loaded, users)
        self.assertEqual(loaded["alice"].key, expected_password_key(
            PASSWORD, users["alice"].salt, TEST_KDF))

    def test_documented_layout(self):
        alice = make_user("alice")
        userstore.write_users(self.path, {"alice": alice})
        with open(self.path, "rb") as f:
            document = json.loads(f.read())
        self.assertEqual(document, {
            "version": 1,
            "users": {"alice": {
                "salt": base64.b64encode(alice.salt).decode(),
                "kdf": {"name": "scrypt", "n": 16, "r": 2, "p": 1},
                "key": base64.b64encode(alice.key).decode(),
            }},
        })

    def test_a_file_too_large_to_read_is_not_written(self):
        # write_users wrote what read_users then refused ("larger than
        # 8388608 bytes"): one user too many (about 14,000 OPAQUE users)
        # and the daemon could read no user at all.
        users = {"alice": make_user("alice")}
        userstore.write_users(self.path, users)
        size = os.path.getsize(self.path)
        self.patch(userstore, "MAX_FILE_SIZE", size + 10)
        more = dict(users, bob=make_user("bob"))
        with self.assertRaises(userstore.UserFileError) as caught:
            userstore.write_users(self.path, more)
        self.assertIn(f"cannot write {self.path}: 2 users take ", str(caught.exception))
        self.assertIn(f"over the {size + 10} a user file may have", str(caught.exception))
        self.assertEqual(userstore.read_users(self.path), users)

    def test_mode_0600(self):
        userstore.write_users(self.path, {"alice": make_user()})
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        os.chmod(self.path, 0o644)
        userstore.write_users(self.path, {})
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)

    def test_no_password_in_the_file(self):
        password = "unmistakable password 42"
        user = userstore.new_user("alice", password, kdf=TEST_KDF)
        userstore.write_users(self.path, {"alice": user})
        with open(self.path, "rb") as f:
            data = f.read()
        for form in (password.encode(), base64.b64encode(password.encode()),
                     password.encode().hex().encode(), b"unmistakable"):
            self.assertNotIn(form, data)

    def test_atomic_replacement(self):
        """A failure mid-write leaves the old file whole and no temporary file."""
        userstore.write_users(self.path, {"alice": make_user()})
        with open(self.path, "rb") as f:
            before = f.read()
        directory = os.path.dirname(os.path.abspath(self.path))
        entries = set(os.listdir(directory))

        def crash(src, dst):
            raise OSError(28, "No space left on device")

        self.patch(os, "replace", crash)
        with self.assertRaises(UserFileError) as caught:
            userstore.write_users(self.path, {})
        self.assertEqual(
            str(caught.exception), f"cannot write {self.path}: No space left on device"
        )
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), before)
        self.assertEqual(set(os.listdir(directory)), entries)

    def test_replacement_is_a_new_inode(self):
        userstore.write_users(self.path, {"alice": make_user()})
        before = os.stat(self.path).st_ino
        with open(self.path, "rb") as held:  # a reader keeps the old file
            userstore.write_users(self.path, {})
            self.assertIn(b"alice", held.read())
        self.assertNotEqual(os.stat(self.path).st_ino, before)

    def test_missing_file(self):
        self.assertEqual(userstore.read_users(self.path, missing_ok=True), {})
        with self.assertRaises(UserFileError) as caught:
            userstore.read_users(self.path)
        self.assertEqual(str(caught.exception), f"cannot read {self.path}: no such file")

    def test_broken_files(self):
        good = json.loads(userstore.serialize_users({"alice": make_user()}))
        entry = good["users"]["alice"]

        def variant(**changes):
            document = json.loads(json.dumps(good))
            document["users"]["alice"].update(changes)
            return json.dumps(document).encode()

        cases = [
            (b"\xff", "not UTF-8"),
            (b"{", "not JSON"),
            (b"[]", "top level: expected an object with exactly version, users"),
            (json.dumps({"version": 2, "users": {}}).encode(), "unsupported version 2"),
            (json.dumps({"version": True, "users": {}}).encode(), "unsupported version True"),
            (variant(salt="AAAA"), "user 'alice', salt: 3 bytes where 16 are expected"),
            (variant(key=entry["salt"]), "user 'alice', key: 16 bytes where 32 are expected"),
            (variant(kdf={"name": "argon2", "n": 1, "r": 1, "p": 1}), "unknown KDF 'argon2'"),
            (variant(kdf={"name": "scrypt", "n": 1000, "r": 8, "p": 1}), "power of two"),
            (variant(kdf={"name": "scrypt", "n": "16", "r": 8, "p": 1}), "kdf n: not an integer"),
            (variant(password="x"), "expected an object with exactly salt, kdf, key"),
            (json.dumps({"version": 1, "users": {"a b": entry}}).encode(), "user 'a b'"),
            (b'{"version": 1, "users": {}, "users": {}}', "'users' appears twice"),
        ]
        for data, message in cases:
            with self.assertRaises(UserFileError) as caught:
                userstore.parse_users(data)
            self.assertIn(message, str(caught.exception))

    def test_deep_nesting_is_a_broken_file(self):
        """json.loads recurses once per level: 100,000 levels would raise
        RecursionError, a traceback wherever the file is read."""
        deep = b"[" * 100000 + b"]" * 100000
        inside = b'{"version": 1, "users": {"alice": ' + deep + b"}}"
        for data in (deep, inside, b"{" * 100000):
            with self.assertRaises(UserFileError) as caught:
                userstore.parse_users(data)
            self.assertEqual(str(caught.exception),
                             f"nested more than {userstore.MAX_DEPTH} levels deep")

    def test_brackets_inside_strings_do_not_count(self):
        name = "[" * 40 + "\\\"" + "{" * 20
        userstore.write_users(self.path, {name: make_user(name)})
        self.assertEqual(list(userstore.read_users(self.path)), [name])

    def test_size_is_bounded(self):
        self.patch(userstore, "MAX_FILE_SIZE", 1000)
        with open(self.path, "wb") as f:  # as an editor may write it
            f.write(userstore.serialize_users(
                {f"user{i}": make_user(f"user{i}") for i in range(10)}))
        with self.assertRaises(UserFileError) as caught:
            userstore.read_users(self.path)
        self.assertEqual(str(caught.exception), f"{self.path}: larger than 1000 bytes")

    def test_new_user_checks(self):
        self.assertRaises(ValueError, userstore.new_user, "alice", "", kdf=TEST_KDF)
        self.assertRaises(ValueError, userstore.new_user, "a b", "pw", kdf=TEST_KDF)
        one = userstore.new_user("alice", "pw", kdf=TEST_KDF)
        two = userstore.new_user("alice", "pw", kdf=TEST_KDF)
        self.assertNotEqual(one.salt, two.salt)  # a fresh salt each time
        self.assertNotEqual(one.key, two.key)

    def test_default_kdf(self):
        user = userstore.new_user("alice", "pw")
        self.assertEqual(user.kdf, crypto.DEFAULT_SCRYPT)
        self.assertNotIn("key=", repr(user).replace("<key>", ""))


class UserFileTests(unittest.TestCase):
    def setUp(self):
        self.path = os.path.abspath(self.mktemp())

    def test_missing_file_means_no_users(self):
        users = UserFile(self.path, run_in_thread=run_now)
        self.assertIsNone(users.load())
        with capturedLogs() as events:
            self.assertIsNone(self.successResultOf(users.lookup("alice")))
            self.assertIsNone(self.successResultOf(users.lookup("alice")))
        self.assertEqual(events, [])  # said once, at start-up, by the service

    def test_broken_file_at_start_up_is_an_error(self):
        with open(self.path, "w") as f:
            f.write("{")
        self.assertRaises(UserFileError, UserFile(self.path, run_in_thread=run_now).load)

    def test_reload_on_change(self):
        userstore.write_users(self.path, {"alice": make_user()})
        users = UserFile(self.path, run_in_thread=run_now)
        self.assertEqual(users.load(), 1)
        self.assertIsNone(self.successResultOf(users.lookup("bob")))
        with capturedLogs() as events:
            userstore.write_users(self.path, {"bob": make_user("bob")})
            self.assertIsNotNone(self.successResultOf(users.lookup("bob")))
            self.assertIsNone(self.successResultOf(users.lookup("alice")))
        self.assertEqual(log_text(events), [f"reloaded user file {self.path}: 1 user(s)"])

    def test_no_reload_without_change(self):
        userstore.write_users(self.path, {"alice": make_user()})
        users = UserFile(self.path, run_in_thread=run_now)
        users.load()
        reads = []
        real_parse = userstore.parse_users
        self.patch(userstore, "parse_users", lambda data: reads.append(1) or real_parse(data))
        for _ in range(3):
            self.assertIsNotNone(self.successResultOf(users.lookup("alice")))
        self.assertEqual(reads, [])
        os.utime(self.path, ns=(1, 1))  # touched: read again
        self.assertIsNotNone(self.successResultOf(users.lookup("alice")))
        self.assertEqual(reads, [1])

    def test_broken_file_on_reload_keeps_the_users_and_is_logged_once(self):
        userstore.write_users(self.path, {"alice": make_user()})
        users = UserFile(self.path, run_in_thread=run_now)
        users.load()
        with open(self.path, "w") as f:
            f.write("{ broken")
        with capturedLogs() as events:
            self.assertIsNotNone(self.successResultOf(users.lookup("alice")))
            self.assertIsNotNone(self.successResultOf(users.lookup("alice")))
        [message] = log_text(events)
        self.assertTrue(message.startswith(f"{self.path}: not JSON"))
        self.assertTrue(message.endswith("; keeping the 1 user(s) loaded before"))
        with capturedLogs() as events:
            userstore.write_users(self.path, {"bob": make_user("bob")})
            self.assertIsNone(self.successResultOf(users.lookup("alice")))
            self.assertIsNotNone(self.successResultOf(users.lookup("bob")))
        self.assertEqual(log_text(events), [f"reloaded user file {self.path}: 1 user(s)"])

    def test_deeply_nested_file_on_reload_keeps_the_users(self):
        userstore.write_users(self.path, {"alice": make_user()})
        users = UserFile(self.path, run_in_thread=run_now)
        users.load()
        with open(self.path, "wb") as f:
            f.write(b"[" * 100000 + b"]" * 100000)
        with capturedLogs() as events:
            self.assertIsNotNone(self.successResultOf(users.lookup("alice")))
            self.assertIsNotNone(self.successResultOf(users.lookup("alice")))
        self.assertEqual(log_text(events), [
            f"{self.path}: nested more than {userstore.MAX_DEPTH} levels deep; "
            "keeping the 1 user(s) loaded before"])

    def test_deeply_nested_file_at_start_up(self):
        with open(self.path, "wb") as f:
            f.write(b"{" * 100000)
        with self.assertRaises(UserFileError) as caught:
            UserFile(self.path, run_in_thread=run_now).load()
        self.assertEqual(str(caught.exception),
                         f"{self.path}: nested more than {userstore.MAX_DEPTH} levels deep")

    def test_file_removed_while_running(self):
        userstore.write_users(self.path, {"alice": make_user()})
        users = UserFile(self.path, run_in_thread=run_now)
        users.load()
        os.unlink(self.path)
        with capturedLogs() as events:
            self.assertIsNone(self.successResultOf(users.lookup("alice")))
            self.assertIsNone(self.successResultOf(users.lookup("alice")))
        self.assertEqual(log_text(events), [f"user file {self.path} not found: no EKE users"])
