"""Files opened the one way (twisted_keyx.core.fileutil.open_regular): a
named pipe in place of the user file, the known-servers file or a lock's
symbolic link must neither block nor be followed (issue 24 item 15)."""

import os
import subprocess
import sys

from twisted.trial import unittest

from twisted_keyx.core import fileutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_child(code, *argv):
    """Run ``code`` in a child Python: a blocking open fails the test by
    running out of time instead of hanging the suite."""
    try:
        return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True,
                              text=True, timeout=30, env=dict(os.environ, PYTHONPATH=ROOT))
    except subprocess.TimeoutExpired:
        raise unittest.FailTest("opening a named pipe did not return within 30 s") from None


class OpenRegularTests(unittest.TestCase):
    def setUp(self):
        self.folder = os.path.abspath(self.mktemp())
        os.mkdir(self.folder)
        self.path = os.path.join(self.folder, "f")

    def test_regular_file(self):
        with open(self.path, "wb") as f:
            f.write(b"abc")
        self.assertEqual(fileutil.read_regular(self.path, 2), b"ab")

    def test_fifo_and_folder_refused(self):
        os.mkfifo(self.path)
        for path in (self.path, self.folder):
            with self.assertRaises(OSError) as raised:
                fileutil.open_regular(path)
            self.assertEqual(raised.exception.strerror, "not a regular file")

    def test_symlink_refused_when_asked(self):
        with open(self.path, "wb") as f:
            f.write(b"abc")
        link = os.path.join(self.folder, "link")
        os.symlink(self.path, link)
        os.close(fileutil.open_regular(link))
        self.assertRaises(OSError, fileutil.open_regular, link, follow_symlinks=False)


class NamedPipeTests(unittest.TestCase):
    def setUp(self):
        self.folder = os.path.abspath(self.mktemp())
        os.mkdir(self.folder)
        self.path = os.path.join(self.folder, "keyx-users.json")
        os.mkfifo(self.path)

    def test_daemon_user_file(self):
        """The daemon's lookup: it blocked the reactor (8 s for an OPAQUE
        login, the DH port silent meanwhile)."""
        result = run_child(
            "import sys\n"
            "from twisted_keyx.service.userfile import UserFile, UserFileError\n"
            "users = UserFile(sys.argv[1])\n"
            "try: users.load()\n"
            "except UserFileError as e: print(e)\n", self.path)
        self.assertEqual(result.stdout,
                         f"cannot read {self.path}: not a regular file\n", result.stderr)

    def test_keyx_admin_listusers(self):
        result = run_child(
            "import sys\n"
            "from twisted_keyx.cli import admin\n"
            "sys.exit(admin.main(['listusers', '--users', sys.argv[1]]))\n", self.path)
        self.assertEqual((result.returncode, result.stderr),
                         (1, f"keyx-admin: cannot read {self.path}: not a regular file\n"))

    def test_client_known_servers_file(self):
        result = run_child(
            "import sys\n"
            "from twisted_keyx.trust.knownservers import KnownServers\n"
            "print(KnownServers(sys.argv[1]).check_and_record('localhost', 8089, bytes(32))"
            ".status.name)\n",
            self.path)
        self.assertEqual(result.stdout, "NEW\n", result.stderr)
        self.assertTrue(stat_is_fifo(self.path))  # not replaced


def stat_is_fifo(path):
    import stat

    return stat.S_ISFIFO(os.lstat(path).st_mode)


class LockSymlinkTests(unittest.TestCase):
    def test_dangling_symlink_at_the_lock_is_not_followed(self):
        """keyx-admin created the target of a dangling users.json.lock."""
        from twisted_keyx.cli import admin
        import io

        folder = os.path.abspath(self.mktemp())
        os.mkdir(folder)
        users = os.path.join(folder, "users.json")
        target = os.path.join(folder, "elsewhere")
        os.symlink(target, users + ".lock")
        err = io.StringIO()
        status = admin.main(["deluser", "alice", "--users", users], io.StringIO(), err)
        self.assertEqual(status, 1)
        self.assertTrue(err.getvalue().startswith(f"keyx-admin: cannot lock {users}.lock: "),
                        err.getvalue())
        self.assertFalse(os.path.lexists(target))


class KeyFilePipeTests(unittest.TestCase):
    """The daemon's key files: a named pipe is refused at start-up, in one
    line, instead of hanging it."""

    def setUp(self):
        self.path = os.path.join(os.path.abspath(self.mktemp()))
        os.mkdir(self.path)
        self.path = os.path.join(self.path, "key")
        os.mkfifo(self.path, 0o600)

    def test_host_key(self):
        result = run_child(
            "import sys\n"
            "from twisted_keyx.trust.hostkey import load_host_key, HostKeyError\n"
            "try: load_host_key(sys.argv[1])\n"
            "except HostKeyError as e: print(e)\n", self.path)
        self.assertEqual(result.stdout, f"host key {self.path} is not a regular file\n",
                         result.stderr)

    def test_opaque_key(self):
        result = run_child(
            "import sys\n"
            "from twisted_keyx.opaque.scheme import load_key_file, KeyFileError\n"
            "try: load_key_file(sys.argv[1])\n"
            "except KeyFileError as e: print(e)\n", self.path)
        self.assertEqual(result.stdout, f"cannot read {self.path}: not a regular file\n",
                         result.stderr)
