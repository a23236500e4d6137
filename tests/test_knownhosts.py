"""Trust on first use over OpenSSH known_hosts files.

known_hosts-plain and known_hosts-hashed (tests/data/README) hold the same
hosts, the second hashed by ``ssh-keygen -H``; where ssh-keygen is installed,
the files written here are also read back with ``ssh-keygen -F`` and edited
with ``ssh-keygen -R``.
"""

import base64
import hashlib
import hmac
import os
import re
import shutil
import stat
import subprocess
import sys

from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import load_ssh_public_key
from twisted.trial import unittest

from twisted_keyx.trust import knownhosts
from twisted_keyx.trust.knownhosts import CHANGED, KNOWN, NEW, REVOKED, Action, KnownHosts
from twisted_keyx.trust.tofu import TrustCheck

from .helpers import data_path, read_data

FIXTURE_PUB = read_data("ed25519-host-key.pub")
FIXTURE_KEY = load_ssh_public_key(FIXTURE_PUB)
OTHER_PUB = read_data("other-ed25519.pub")
OTHER_KEY = load_ssh_public_key(OTHER_PUB)
FIXTURE_FINGERPRINT = "SHA256:aFGkTkwV3UgZq1obgxxCV2XzClavtBr8zKx4hleXRZc"
OTHER_FINGERPRINT = knownhosts.host_key_fingerprint(OTHER_KEY)

SSH_KEYGEN = shutil.which("ssh-keygen")


def third_key():
    return ed25519.Ed25519PrivateKey.from_private_bytes(bytes(range(32))).public_key()


class NamesTests(unittest.TestCase):
    def test_host_name(self):
        self.assertEqual(knownhosts.host_name("127.0.0.1", 7777), "[127.0.0.1]:7777")
        self.assertEqual(knownhosts.host_name("Example.ORG", 22), "example.org")
        self.assertEqual(knownhosts.host_name("example.org", 2222), "[example.org]:2222")
        self.assertEqual(knownhosts.host_name("::1", 7777), "[::1]:7777")
        self.assertEqual(knownhosts.host_name("::1", 22), "::1")

    def test_default_path(self):
        self.patch(os.path, "expanduser", lambda path: path.replace("~", "/home/u"))
        expected = "/home/u/.config/twisted-keyx/known_hosts"
        for environ in ({}, {"XDG_CONFIG_HOME": ""}, {"XDG_CONFIG_HOME": "relative/dir"}):
            self.assertEqual(knownhosts.default_path(environ), expected)
        self.assertEqual(knownhosts.default_path({"XDG_CONFIG_HOME": "/etc/xdg-u"}),
                         "/etc/xdg-u/twisted-keyx/known_hosts")

    def test_default_path_of_known_hosts(self):
        self.patch(knownhosts, "default_path", lambda: "/somewhere/known_hosts")
        self.assertEqual(KnownHosts().path, "/somewhere/known_hosts")


class CheckFixtureTests(unittest.TestCase):
    """The same questions of the plain and the hashed file: the same answers,
    with the hashed file's line numbers (ssh-keygen -H split line 5 in two)."""

    FILES = {
        "known_hosts-plain": {"localhost": 5, "::1": 5},
        "known_hosts-hashed": {"localhost": 5, "::1": 6},
    }

    def check(self, name, host, port, key):
        return KnownHosts(data_path(name)).check(host, port, key)

    def test_answers(self):
        for name, lines in self.FILES.items():
            path = data_path(name)
            cases = [
                (("127.0.0.1", 7777, FIXTURE_KEY), KNOWN, "[127.0.0.1]:7777", 2),
                (("127.0.0.1", 7777, OTHER_KEY), CHANGED, "[127.0.0.1]:7777", 2),
                (("example.org", 22, OTHER_KEY), KNOWN, "example.org", 3),
                (("EXAMPLE.org", 22, OTHER_KEY), KNOWN, "example.org", 3),
                (("example.org", 22, FIXTURE_KEY), CHANGED, "example.org", 3),
                (("localhost", 7777, FIXTURE_KEY), KNOWN, "[localhost]:7777", lines["localhost"]),
                (("::1", 7777, FIXTURE_KEY), KNOWN, "[::1]:7777", lines["::1"]),
                (("::1", 7777, third_key()), CHANGED, "[::1]:7777", lines["::1"]),
                (("127.0.0.1", 7778, FIXTURE_KEY), NEW, "[127.0.0.1]:7778", None),
                (("127.0.0.1", 22, FIXTURE_KEY), NEW, "127.0.0.1", None),
                (("example.org", 7777, OTHER_KEY), NEW, "[example.org]:7777", None),
            ]
            for arguments, status, host, line in cases:
                self.assertEqual(self.check(name, *arguments),
                                 TrustCheck(status, host, path, line),
                                 (name, arguments))

    def test_find(self):
        for name, lines in self.FILES.items():
            known_hosts = KnownHosts(data_path(name))
            self.assertEqual(known_hosts.find("127.0.0.1", 7777), 2)
            self.assertEqual(known_hosts.find("::1", 7777), lines["::1"])
            self.assertIsNone(known_hosts.find("127.0.0.1", 7778))

    def test_missing_file_is_new(self):
        path = os.path.join(self.mktemp(), "known_hosts")
        self.assertEqual(KnownHosts(path).check("127.0.0.1", 7777, FIXTURE_KEY),
                         TrustCheck(NEW, "[127.0.0.1]:7777", path, None))
        self.assertFalse(os.path.exists(os.path.dirname(path)))  # checking creates nothing


class CheckTests(unittest.TestCase):
    def setUp(self):
        self.path = self.mktemp()
        self.blob = FIXTURE_PUB.split()[1]

    def write(self, *lines):
        with open(self.path, "wb") as f:
            f.write(b"".join(line + b"\n" for line in lines))

    def check(self, host="127.0.0.1", port=7777, key=FIXTURE_KEY):
        return KnownHosts(self.path).check(host, port, key)

    def test_patterns(self):
        self.write(b"*.example.com,!bad.example.com ssh-ed25519 " + self.blob,
                   b"?ost ssh-ed25519 " + self.blob,
                   b"[10.0.0.?]:7777 ssh-ed25519 " + self.blob)
        self.assertEqual(self.check("a.example.com", 22).status, KNOWN)
        self.assertEqual(self.check("A.Example.COM", 22).status, KNOWN)
        self.assertEqual(self.check("bad.example.com", 22).status, NEW)
        self.assertEqual(self.check("example.com", 22).status, NEW)
        self.assertEqual(self.check("host", 22).line, 2)
        self.assertEqual(self.check("hoost", 22).status, NEW)
        self.assertEqual(self.check("10.0.0.7", 7777).line, 3)
        self.assertEqual(self.check("10.0.0.7", 7778).status, NEW)
        self.assertEqual(self.check("10.0.0.77", 7777).status, NEW)

    def test_patterns_as_openssh_matches_them(self):
        """'*' any run, '?' one byte, all else literal, against a reference
        written here as a regular expression, on every pattern of up to 5
        bytes of 'a', 'b', '*', '?' and names of up to 5 bytes of 'a', 'b'."""
        import itertools

        def reference(pattern, name):
            regex = b"".join(b".*" if c == b"*" else b"." if c == b"?" else re.escape(c)
                             for c in (pattern[i:i + 1] for i in range(len(pattern))))
            return re.fullmatch(regex, name, re.DOTALL) is not None

        def words(alphabet, longest):
            for n in range(longest + 1):
                yield from (bytes(w) for w in itertools.product(alphabet, repeat=n))

        names = list(words(b"ab", 5))
        for pattern in words(b"ab*?", 5):
            for name in names:
                self.assertEqual(knownhosts._glob_match(pattern, name),
                                 reference(pattern, name), (pattern, name))

    def test_hostile_patterns_do_not_hang(self):
        """A pattern of many '*' made the regular expression backtrack
        exponentially (12 took 0.25 s, each 2 more about three times as
        long): a 100-byte line hung keyx-client dh.  A 4 MiB line was
        compiled into a regular expression whole.  Run in a child process,
        so that the old code fails by running out of time."""
        self.write(b"*" * 60 + b"x ssh-ed25519 " + self.blob,
                   b"*a" * 30 + b"*x ssh-ed25519 " + self.blob,
                   b"a" * (4 << 20) + b" ssh-ed25519 " + self.blob,
                   b"*" * (4 << 20) + b"[127.0.0.1]:7777 ssh-ed25519 " + self.blob)
        code = ("import sys; from cryptography.hazmat.primitives.serialization import "
                "load_ssh_public_key as load; from twisted_keyx.trust.knownhosts import KnownHosts; "
                "check = KnownHosts(sys.argv[1]).check('127.0.0.1', 7777, "
                "load(open(sys.argv[2], 'rb').read())); print(check.status.value, check.line)")
        try:
            result = subprocess.run([sys.executable, "-c", code, self.path,
                                     data_path("ed25519-host-key.pub")],
                                    capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            self.fail("checking the file did not finish within 60 s")
        self.assertEqual((result.stdout, result.stderr), ("known 4\n", ""))

    def test_revoked_wins_wherever_it_is(self):
        known = b"[127.0.0.1]:7777 ssh-ed25519 " + self.blob
        revoked = b"@revoked * ssh-ed25519 " + self.blob
        for lines, line in (((known, revoked), 2), ((revoked, known), 1)):
            self.write(*lines)
            self.assertEqual(self.check(), TrustCheck(
                REVOKED, "[127.0.0.1]:7777", self.path, line))
        # A revoked key is only that key: another one for the host is NEW.
        self.assertEqual(self.check(key=third_key()).status, CHANGED)
        self.write(revoked)
        self.assertEqual(self.check(key=third_key()).status, NEW)

    def test_known_beats_changed(self):
        # Two keys for one host (a rotation in progress): either is known.
        other = OTHER_PUB.split()[1]
        self.write(b"[127.0.0.1]:7777 ssh-ed25519 " + other,
                   b"[127.0.0.1]:7777 ssh-ed25519 " + self.blob)
        self.assertEqual(self.check().line, 2)
        self.assertEqual(self.check().status, KNOWN)
        self.assertEqual(self.check(key=OTHER_KEY).line, 1)

    def test_skipped_lines(self):
        self.write(b"# [127.0.0.1]:7777 ssh-ed25519 " + self.blob,
                   b"   ",
                   b"garbage",
                   b"[127.0.0.1]:7777 ssh-ed25519 not*base64",
                   b"[127.0.0.1]:7777 ssh-rsa " + self.blob,
                   b"@cert-authority [127.0.0.1]:7777 ssh-ed25519 " + self.blob,
                   b"|1|bad|hash ssh-ed25519 " + self.blob,
                   b"|1|*|* ssh-ed25519 " + self.blob,
                   b"[127.0.0.1]:7777")
        self.assertEqual(self.check().status, NEW)
        with open(self.path, "ab") as f:
            f.write(b"  [127.0.0.1]:7777   ssh-ed25519   " + self.blob + b"   a comment\r\n")
        self.assertEqual(self.check(), TrustCheck(
            KNOWN, "[127.0.0.1]:7777", self.path, 10))

    def test_no_final_newline(self):
        with open(self.path, "wb") as f:
            f.write(b"\n[127.0.0.1]:7777 ssh-ed25519 " + self.blob)
        self.assertEqual(self.check().line, 2)

    def assertUnreadable(self, message):
        with self.assertRaises(knownhosts.KnownHostsError) as caught:
            self.check()
        self.assertEqual(str(caught.exception), message)

    def test_unreadable(self):
        self.write(b"")
        real_open = os.open

        def refuse(path, flags, *args):
            if path == self.path:
                raise PermissionError(13, "Permission denied")
            return real_open(path, flags, *args)

        self.patch(os, "open", refuse)
        self.assertUnreadable(f"cannot read known hosts file {self.path}: Permission denied")

    def test_directory(self):
        os.mkdir(self.path)
        self.assertUnreadable(f"known hosts file {self.path} is not a regular file")

    def test_fifo(self):
        """A named pipe with no writer is refused, not waited on forever
        (opening it for reading blocked keyx-client dh before its check
        that the file is a regular one).  In a child process, so that the
        old code fails by running out of time."""
        os.mkfifo(self.path)
        code = ("import sys; from twisted_keyx.trust.knownhosts import KnownHosts, KnownHostsError\n"
                "try: KnownHosts(sys.argv[1]).find('127.0.0.1', 7777)\n"
                "except KnownHostsError as e: print(e)")
        try:
            result = subprocess.run([sys.executable, "-c", code, self.path],
                                    capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            self.fail("reading a named pipe did not return within 30 s")
        self.assertEqual(result.stdout, f"known hosts file {self.path} is not a regular file\n")

    def test_too_large(self):
        self.patch(knownhosts, "MAX_FILE_SIZE", 100)
        self.write(b"#" * 101)
        self.assertUnreadable(f"known hosts file {self.path} is larger than 100 bytes")


class ManyPatternsTests(unittest.TestCase):
    """A line of millions of comma-separated names cost 7.5-10.7 s of CPU a
    check, one glob each in Python: names without wildcards are now compared
    in one pass, and patterns with wildcards are bounded in the file."""

    setUp = CheckTests.setUp
    write = CheckTests.write
    check = CheckTests.check
    assertUnreadable = CheckTests.assertUnreadable

    def count_globs(self):
        calls = []
        glob = knownhosts._glob_match

        def counted(pattern, name):
            calls.append(pattern)
            return glob(pattern, name)

        self.patch(knownhosts, "_glob_match", counted)
        return calls

    def test_a_million_names_in_one_pass(self):
        names = b",".join(b"h%d" % i for i in range(1000000))
        self.write(names + b",[127.0.0.1]:7777 ssh-ed25519 " + self.blob,
                   names + b",!example.org,example.org ssh-ed25519 " + self.blob)
        calls = self.count_globs()
        self.assertEqual(self.check().status, KNOWN)
        self.assertEqual(self.check("h999999", 22).status, KNOWN)
        self.assertEqual(self.check("h1000000", 22).status, NEW)
        self.assertEqual(self.check("example.org", 22).status, NEW)  # vetoed by !example.org
        self.assertEqual(calls, [])

    def test_wildcard_patterns_bounded_in_the_file(self):
        self.patch(knownhosts, "MAX_WILDCARD_PATTERNS", 5)
        self.write(b"*.a,b?,c ssh-ed25519 " + self.blob,
                   b"d*x*,e*,!f*,g? ssh-ed25519 " + self.blob)
        calls = self.count_globs()
        self.assertUnreadable(f"known hosts file {self.path} has more than 5 host patterns "
                              "with * or ? (line 2)")
        self.assertEqual(calls, [])
        self.write(b"*.a,b?,c ssh-ed25519 " + self.blob, b"d*,!f* ssh-ed25519 " + self.blob)
        self.assertEqual(self.check("x.a", 22).status, KNOWN)
        self.assertEqual(self.check("c", 22).status, KNOWN)
        self.assertEqual(self.check("f", 22).status, NEW)


class RecordTests(unittest.TestCase):
    def setUp(self):
        self.config = self.mktemp()
        self.path = os.path.join(self.config, "twisted-keyx", "known_hosts")
        os.makedirs(os.path.dirname(self.path), exist_ok=True)

    def mode(self, path):
        return stat.S_IMODE(os.stat(path).st_mode)

    def test_creates_default_folder_and_file_with_safe_modes(self):
        for umask in (0o022, 0o000):
            config = os.path.abspath(self.mktemp())
            self.patch(os, "environ", dict(os.environ, XDG_CONFIG_HOME=config))
            previous = os.umask(umask)
            try:
                KnownHosts().record("127.0.0.1", 7777, FIXTURE_KEY)
            finally:
                os.umask(previous)
            path = os.path.join(config, "twisted-keyx", "known_hosts")
            self.assertEqual(self.mode(path), 0o600, umask)
            self.assertEqual(self.mode(os.path.dirname(path)), 0o700, umask)

    def test_no_folder_made_for_a_named_file(self):
        """--known-hosts /missing/dir/kh: refused in one line, no folder
        made (they were made, as root even /nonexistent/dir)."""
        missing = os.path.abspath(self.mktemp())
        path = os.path.join(missing, "dir", "known_hosts")
        with self.assertRaises(knownhosts.KnownHostsError) as raised:
            KnownHosts(path).record("127.0.0.1", 7777, FIXTURE_KEY)
        self.assertEqual(str(raised.exception),
                         f"cannot write known hosts file {path}: no folder "
                         f"{os.path.dirname(path)} (only the default file's folder is created)")
        self.assertFalse(os.path.exists(missing))

    def test_hashed_by_default(self):
        known_hosts = KnownHosts(self.path)
        self.assertEqual(known_hosts.record("127.0.0.1", 7777, FIXTURE_KEY), 1)
        with open(self.path, "rb") as f:
            content = f.read()
        self.assertRegex(content, rb"^\|1\|[A-Za-z0-9+/]{27}=\|[A-Za-z0-9+/]{27}= "
                                  rb"ssh-ed25519 " + re.escape(FIXTURE_PUB.split()[1]) + rb"\n\Z")
        self.assertNotIn(b"127.0.0.1", content)
        self.assertEqual(known_hosts.check("127.0.0.1", 7777, FIXTURE_KEY),
                         TrustCheck(KNOWN, "[127.0.0.1]:7777", self.path, 1))
        self.assertEqual(known_hosts.check("127.0.0.1", 7778, FIXTURE_KEY).status, NEW)

    def test_hashed_name_is_hmac_sha1_of_the_name(self):
        line = knownhosts._line_for(b"[127.0.0.1]:7777", b"blob", True, salt=bytes(20))
        # HMAC-SHA1(key = 20 zero bytes, "[127.0.0.1]:7777"), computed with
        # Python's hmac module independently of the code under test.
        expected = hmac.new(bytes(20), b"[127.0.0.1]:7777", hashlib.sha1).digest()
        self.assertEqual(line, b"|1|AAAAAAAAAAAAAAAAAAAAAAAAAAA=|" + base64.b64encode(expected)
                         + b" ssh-ed25519 YmxvYg==\n")

    def test_plain(self):
        known_hosts = KnownHosts(self.path, hash_names=False)
        known_hosts.record("127.0.0.1", 7777, FIXTURE_KEY)
        known_hosts.record("Example.org", 22, OTHER_KEY)
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(),
                             b"[127.0.0.1]:7777 " + b" ".join(FIXTURE_PUB.split()[:2]) + b"\n"
                             + b"example.org " + b" ".join(OTHER_PUB.split()[:2]) + b"\n")

    def test_appends_and_ends_an_unfinished_last_line(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path, "wb") as f:
            f.write(b"# mine\nexample.org " + b" ".join(OTHER_PUB.split()[:2]))
        os.chmod(self.path, 0o644)
        line = KnownHosts(self.path).record("127.0.0.1", 7777, FIXTURE_KEY)
        self.assertEqual(line, 3)
        with open(self.path, "rb") as f:
            lines = f.read().split(b"\n")
        self.assertEqual(lines[1], b"example.org " + b" ".join(OTHER_PUB.split()[:2]))
        self.assertEqual(lines[3], b"")
        self.assertEqual(KnownHosts(self.path).check("127.0.0.1", 7777, FIXTURE_KEY).line, 3)
        self.assertEqual(KnownHosts(self.path).check("example.org", 22, OTHER_KEY).line, 2)
        self.assertEqual(self.mode(self.path), 0o644)  # an existing file keeps its mode

    def test_unwritable(self):
        def refuse(path, flags, *args):
            raise PermissionError(13, "Permission denied")

        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self.patch(os, "open", refuse)
        with self.assertRaises(knownhosts.KnownHostsError) as caught:
            KnownHosts(self.path).record("127.0.0.1", 7777, FIXTURE_KEY)
        self.assertEqual(str(caught.exception),
                         f"cannot write known hosts file {self.path}: Permission denied")

    def test_openssh_reads_and_edits_what_is_written(self):
        if SSH_KEYGEN is None:
            raise unittest.SkipTest("ssh-keygen is not installed (apt-get install openssh-client)")
        for hashed in (True, False):
            folder = self.mktemp()
            os.mkdir(folder)
            path = os.path.join(folder, "known_hosts")
            known_hosts = KnownHosts(path, hash_names=hashed)
            known_hosts.record("example.org", 22, OTHER_KEY)
            known_hosts.record("127.0.0.1", 7777, FIXTURE_KEY)
            found = subprocess.run([SSH_KEYGEN, "-F", "[127.0.0.1]:7777", "-f", path],
                                   capture_output=True, timeout=30)
            self.assertEqual(found.returncode, 0, found.stderr)
            self.assertIn(b"# Host [127.0.0.1]:7777 found: line 2", found.stdout)
            # Rotating a key: ssh-keygen -R forgets it, and the host is new again.
            removed = subprocess.run([SSH_KEYGEN, "-R", "[127.0.0.1]:7777", "-f", path],
                                     capture_output=True, timeout=30)
            self.assertEqual(removed.returncode, 0, removed.stderr)
            self.assertEqual(known_hosts.check("127.0.0.1", 7777, FIXTURE_KEY).status, NEW)
            self.assertEqual(known_hosts.check("example.org", 22, OTHER_KEY).status, KNOWN)


def changed_check():
    return TrustCheck(CHANGED, "[127.0.0.1]:7777", "/home/u/known_hosts", 4)


class TextTests(unittest.TestCase):
    def test_first_contact_prompt(self):
        self.assertEqual(
            knownhosts.first_contact_prompt("[127.0.0.1]:7777", FIXTURE_KEY),
            "The authenticity of host '[127.0.0.1]:7777' can't be established.\n"
            f"ED25519 key fingerprint is {FIXTURE_FINGERPRINT}.\n"
            "Are you sure you want to continue connecting (yes/no)? ")

    def test_added(self):
        self.assertEqual(knownhosts.added_text("[127.0.0.1]:7777"),
                         "Warning: Permanently added '[127.0.0.1]:7777' (ED25519) to the list "
                         "of known hosts.\n")

    def test_changed(self):
        self.assertEqual(knownhosts.changed_text(changed_check(), OTHER_KEY), (
            "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n"
            "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n"
            "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n"
            "IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\n"
            "Someone could be eavesdropping on you right now (man-in-the-middle attack)!\n"
            "It is also possible that a host key has just been changed.\n"
            "The fingerprint for the ED25519 key sent by the remote host is\n"
            f"{OTHER_FINGERPRINT}.\n"
            "Please contact your system administrator.\n"
            "Add correct host key in /home/u/known_hosts to get rid of this message.\n"
            "Offending ED25519 key in /home/u/known_hosts:4\n"
            "To trust the new key, remove the old one with: "
            "ssh-keygen -R '[127.0.0.1]:7777' -f /home/u/known_hosts\n"
            "Host key for [127.0.0.1]:7777 has changed and keyx-client refuses to connect.\n"
            "Host key verification failed.\n"))

    def test_banners_are_as_wide_as_openssh_s(self):
        texts = [
            knownhosts.changed_text(changed_check(), OTHER_KEY),
            knownhosts.revoked_text(changed_check()),
            knownhosts.unsigned_known_host_text("[127.0.0.1]:7777", "/k", 4),
        ]
        for text in texts:
            banner = text.splitlines()[:3]
            self.assertEqual([len(line) for line in banner], [59, 59, 59], banner)
            self.assertTrue(banner[1].startswith("@ ") and banner[1].endswith(" @"))

    def test_refusals_name_file_and_line(self):
        self.assertIn("known in /k:4.\n",
                      knownhosts.unsigned_known_host_text("[127.0.0.1]:7777", "/k", 4))
        revoked = TrustCheck(REVOKED, "[127.0.0.1]:7777", "/k", 9)
        self.assertIn("The ED25519 host key for [127.0.0.1]:7777 is marked as revoked in /k:9.\n",
                      knownhosts.revoked_text(revoked))

    def test_one_line_texts(self):
        for text in (knownhosts.no_terminal_text("[127.0.0.1]:7777", FIXTURE_KEY, "/k"),
                     knownhosts.unauthenticated_text("[127.0.0.1]:7777"),
                     knownhosts.require_host_key_text("[127.0.0.1]:7777"),
                     knownhosts.bad_signature_text("[127.0.0.1]:7777", "it does not verify")):
            self.assertEqual(text.count("\n"), 1, text)
            self.assertTrue(text.endswith("\n"))
            self.assertIn("[127.0.0.1]:7777", text)
        self.assertIn(FIXTURE_FINGERPRINT,
                      knownhosts.no_terminal_text("[127.0.0.1]:7777", FIXTURE_KEY, "/k"))


class ConfirmTests(unittest.TestCase):
    def ask(self, *lines):
        answers = list(lines)
        written = []
        result = knownhosts.ask_first_contact(
            "[127.0.0.1]:7777", FIXTURE_KEY,
            read_line=lambda: answers.pop(0) if answers else "",
            write=written.append)
        return result, written, answers

    PROMPT = knownhosts.first_contact_prompt("[127.0.0.1]:7777", FIXTURE_KEY)

    def test_yes(self):
        for answer in ("yes\n", "YES\n", "Yes", "  yes\n", "\tyes please\n"):
            self.assertEqual(self.ask(answer), (True, [self.PROMPT], []), answer)

    def test_no(self):
        for answer in ("no\n", "NO\n", "\n", "   \n", "no way\n"):
            self.assertEqual(self.ask(answer, "yes\n"), (False, [self.PROMPT], ["yes\n"]),
                             answer)

    def test_end_of_input_is_no(self):
        self.assertEqual(self.ask(), (False, [self.PROMPT], []))

    def test_asks_again_until_yes_or_no(self):
        self.assertEqual(self.ask("y\n", "maybe\n", "yes\n"),
                         (True, [self.PROMPT, "Please type 'yes' or 'no': ",
                                 "Please type 'yes' or 'no': "], []))
        self.assertEqual(self.ask("y\n", "no\n"),
                         (False, [self.PROMPT, "Please type 'yes' or 'no': "], []))
        self.assertEqual(self.ask("yess\n"),  # then the end of input
                         (False, [self.PROMPT, "Please type 'yes' or 'no': "], []))

    def test_fingerprint_is_not_an_answer(self):
        # OpenSSH takes the fingerprint only when it offers it: (yes/no/[fingerprint]).
        self.assertEqual(self.ask(FIXTURE_FINGERPRINT + "\n")[1][1:],
                         ["Please type 'yes' or 'no': "])


class DecideTests(unittest.TestCase):
    def setUp(self):
        self.known_hosts = KnownHosts(data_path("known_hosts-hashed"))

    def decide(self, port, key, **options):
        return knownhosts.decide(self.known_hosts, "127.0.0.1", port, key, **options)

    def test_known(self):
        for options in ({}, {"require_host_key": True}, {"accept_new": True}):
            self.assertEqual(self.decide(7777, FIXTURE_KEY, **options),
                             knownhosts.HostKeyDecision(Action.PROCEED))

    def test_changed_is_refused_whatever_the_options(self):
        expected = knownhosts.changed_text(TrustCheck(
            CHANGED, "[127.0.0.1]:7777", self.known_hosts.path, 2), OTHER_KEY)
        for options in ({}, {"accept_new": True}, {"interactive": True}):
            self.assertEqual(self.decide(7777, OTHER_KEY, **options),
                             knownhosts.HostKeyDecision(Action.REFUSE, expected))

    def test_revoked(self):
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"@revoked * " + b" ".join(FIXTURE_PUB.split()[:2]) + b"\n")
        decision = knownhosts.decide(KnownHosts(path), "127.0.0.1", 7777, FIXTURE_KEY,
                                     accept_new=True)
        self.assertEqual(decision.action, Action.REFUSE)
        self.assertIn("REVOKED HOST KEY", decision.text)

    def test_new(self):
        name = "[127.0.0.1]:7778"
        self.assertEqual(self.decide(7778, FIXTURE_KEY, accept_new=True),
                         knownhosts.HostKeyDecision(Action.RECORD, knownhosts.added_text(name)))
        self.assertEqual(self.decide(7778, FIXTURE_KEY, interactive=True),
                         knownhosts.HostKeyDecision(Action.ASK,
                                             knownhosts.first_contact_prompt(name, FIXTURE_KEY)))
        self.assertEqual(self.decide(7778, FIXTURE_KEY),
                         knownhosts.HostKeyDecision(Action.REFUSE, knownhosts.no_terminal_text(
                             name, FIXTURE_KEY, self.known_hosts.path)))

    def test_known_host_without_signature_is_refused(self):
        # A man in the middle who strips the signature meets this.
        for options in ({}, {"accept_new": True}, {"interactive": True}):
            self.assertEqual(self.decide(7777, None, **options), knownhosts.HostKeyDecision(
                Action.REFUSE, knownhosts.unsigned_known_host_text(
                    "[127.0.0.1]:7777", self.known_hosts.path, 2)))

    def test_unknown_host_without_signature(self):
        self.assertEqual(self.decide(7778, None), knownhosts.HostKeyDecision(
            Action.WARN, knownhosts.unauthenticated_text("[127.0.0.1]:7778")))
        self.assertEqual(self.decide(7778, None, require_host_key=True), knownhosts.HostKeyDecision(
            Action.REFUSE, knownhosts.require_host_key_text("[127.0.0.1]:7778")))


class TerminalTests(unittest.TestCase):
    """The question on a real pseudo-terminal, as a user would see it."""

    def setUp(self):
        import pty

        self.master, slave = pty.openpty()
        self.slave_path = os.ttyname(slave)
        os.close(slave)
        self.addCleanup(os.close, self.master)

    def read_screen(self, expected_length):
        import select

        data = b""
        while len(data) < expected_length:
            ready, _, _ = select.select([self.master], [], [], 10)
            if not ready:
                self.fail(f"the terminal showed only {data!r}")
            data += os.read(self.master, 4096)
        return data

    def test_asks_on_the_terminal(self):
        import threading

        terminal = knownhosts.open_terminal(self.slave_path)
        self.assertIsNotNone(terminal)
        self.addCleanup(terminal.close)
        prompt = knownhosts.first_contact_prompt("[127.0.0.1]:7777", FIXTURE_KEY)
        result = []
        asking = threading.Thread(target=lambda: result.append(knownhosts.ask_first_contact(
            "[127.0.0.1]:7777", FIXTURE_KEY, terminal.read_line, terminal.write)),
            daemon=True)  # never keeps the test run alive if the test fails
        asking.start()
        # The terminal shows LF as CRLF.
        screen = self.read_screen(len(prompt) + prompt.count("\n"))
        self.assertEqual(screen.decode(), prompt.replace("\n", "\r\n"))
        os.write(self.master, b"maybe\n")
        screen = self.read_screen(len("maybe\r\n") + len(knownhosts.REASK))
        self.assertEqual(screen.decode(), "maybe\r\n" + knownhosts.REASK)
        os.write(self.master, b"yes\n")
        asking.join(10)
        self.assertEqual(result, [True])

    def test_no_terminal(self):
        self.assertIsNone(knownhosts.open_terminal(os.path.join(self.mktemp(), "no-tty")))
        path = self.mktemp()
        open(path, "w").close()
        self.assertIsNone(knownhosts.open_terminal(path))  # a file is no terminal
