"""``keyx-admin genparams`` and the atomic write it relies on.

Generating a 2048-bit group takes seconds to tens of seconds, so the fast
tests replace the generator with a fixture made by ``openssl dhparam``; set
KEYX_SLOW_TESTS=1 to also generate one for real and check it with OpenSSL.
"""

import _thread
import io
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time

from twisted.trial import unittest

from twisted_keyx.cli import admin
from twisted_keyx.groups import ffdh
from twisted_keyx.core import fileutil
from twisted_keyx.service import tap

from .helpers import read_data

FIXTURE = read_data("dhparam-2048.pem")


class GenparamsTests(unittest.TestCase):
    def setUp(self):
        self.generated = []

        def generate(bits):
            self.generated.append(bits)
            return FIXTURE

        self.patch(ffdh, "generate_parameters_pem", generate)
        self.directory = self.mktemp()
        os.mkdir(self.directory)
        self.output = os.path.join(self.directory, "params.pem")

    def admin(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        status = admin.main(list(argv), out=out, err=err)
        return status, out.getvalue(), err.getvalue()

    def test_writes_the_file(self):
        status, out, err = self.admin("genparams", "-o", self.output)
        self.assertEqual(status, 0)
        self.assertEqual(self.generated, [2048])
        with open(self.output, "rb") as f:
            self.assertEqual(f.read(), FIXTURE)
        self.assertEqual(stat.S_IMODE(os.stat(self.output).st_mode), 0o644)
        self.assertEqual(os.listdir(self.directory), ["params.pem"])  # no temporary left
        self.assertEqual(
            out, f"wrote {self.output}; use it with: twistd -n keyx --params {self.output}\n")
        self.assertRegex(err, r"^generating a 2048-bit safe prime \(this takes a while\): "
                              r"done in \d+\.\d s\n$")

    def test_written_file_is_accepted_by_params(self):
        self.admin("genparams", "--bits", "3072", "-o", self.output)
        self.assertEqual(self.generated, [3072])
        options = tap.Options()
        options.parseOptions(["--params", self.output])
        self.assertEqual(options.config.settings["dh"].group.parameters_pem, FIXTURE)

    def test_existing_file_is_kept(self):
        with open(self.output, "wb") as f:
            f.write(b"precious")
        status, out, err = self.admin("genparams", "-o", self.output)
        self.assertEqual((status, out), (1, ""))
        self.assertEqual(err, f"keyx-admin: {self.output} exists; use --force to replace it\n")
        self.assertEqual(self.generated, [])
        with open(self.output, "rb") as f:
            self.assertEqual(f.read(), b"precious")

    def test_force_replaces(self):
        with open(self.output, "wb") as f:
            f.write(b"old")
        self.assertEqual(self.admin("genparams", "--force", "-o", self.output)[0], 0)
        with open(self.output, "rb") as f:
            self.assertEqual(f.read(), FIXTURE)

    def test_missing_directory_fails_before_generating(self):
        output = os.path.join(self.directory, "missing", "params.pem")
        status, out, err = self.admin("genparams", "-o", output)
        self.assertEqual((status, out), (1, ""))
        self.assertEqual(err, f"keyx-admin: cannot write {output}: no directory "
                              f"{os.path.abspath(os.path.dirname(output))}\n")
        self.assertEqual(self.generated, [])

    def test_directory_fails_before_generating(self):
        for force in ([], ["--force"]):
            status, out, err = self.admin("genparams", "-o", self.directory, *force)
            self.assertEqual((status, out, err), (
                1, "", f"keyx-admin: cannot write {self.directory}: it is a directory\n"))
        self.assertEqual(self.generated, [])

    def test_unwritable_directory_fails_before_generating(self):
        # Tests may run as root, for whom os.access says yes: ask a stand-in.
        directory = os.path.abspath(self.directory)
        checked = []

        def access(path, mode):
            checked.append((path, mode))
            return False

        self.patch(os, "access", access)
        status, out, err = self.admin("genparams", "-o", self.output)
        self.assertEqual((status, out, err), (
            1, "", f"keyx-admin: cannot write {self.output}: "
                   f"directory {directory} is not writable\n"))
        self.assertEqual(checked, [(directory, os.W_OK | os.X_OK)])
        self.assertEqual(self.generated, [])

    def test_write_error(self):
        def refuse(path, data, mode=0o644):
            raise PermissionError(13, "Permission denied")

        self.patch(admin, "write_file_atomically", refuse)
        status, _, err = self.admin("genparams", "-o", self.output)
        self.assertEqual(status, 1)
        self.assertTrue(err.endswith(f"keyx-admin: cannot write {self.output}: "
                                     "Permission denied\n"))

    def test_generation_error(self):
        def fail(bits):
            raise ffdh.ParameterError("no luck")

        self.patch(ffdh, "generate_parameters_pem", fail)
        status, _, err = self.admin("genparams", "-o", self.output)
        self.assertEqual(status, 1)
        self.assertRegex(err, r"^generating a 2048-bit safe prime \(this takes a while\): "
                              r"failed after \d+\.\d s\nkeyx-admin: no luck\n$")
        self.assertFalse(os.path.exists(self.output))

    def test_bits_out_of_range_is_a_usage_error(self):
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        for bits in ("1024", "8193", "many"):
            with self.assertRaises(SystemExit) as caught:
                self.admin("genparams", "--bits", bits, "-o", self.output)
            self.assertEqual(caught.exception.code, 2)
        self.assertIn("argument --bits: must be between 2048 and 8192, not 1024",
                      stderr.getvalue())
        self.assertEqual(self.generated, [])


class ProgressTests(unittest.TestCase):
    def test_non_interactive(self):
        err = io.StringIO()
        value = admin._with_progress(lambda: time.sleep(0.15) or 42, "working", err,
                                     interval=0.01)
        self.assertEqual(value, 42)
        lines = err.getvalue().splitlines()
        self.assertRegex(lines[0], r"^working\.\.\. 0 s$")
        self.assertRegex(lines[-1], r"^working: done in 0\.\d s$")
        self.assertNotIn("\r", err.getvalue())

    def test_interactive(self):
        class Terminal(io.StringIO):
            def isatty(self):
                return True

        err = Terminal()
        admin._with_progress(lambda: time.sleep(0.05), "working", err, interval=0.01)
        self.assertTrue(err.getvalue().startswith("\rworking...    0 s"))
        self.assertTrue(err.getvalue().endswith("\rworking: done in 0.1 s\n")
                        or err.getvalue().endswith("\rworking: done in 0.0 s\n"))


    def test_interrupted_progress_line_is_ended(self):
        # Ctrl-C while the progress line is on the terminal: the line ends,
        # so "keyx-admin: interrupted" starts a line of its own.
        class Terminal(io.StringIO):
            def isatty(self):
                return True

        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        self.addCleanup(signal.signal, signal.SIGINT, previous)
        err = Terminal()
        stop = threading.Event()
        self.addCleanup(stop.set)

        def work():
            # Wait for a progress line, then Ctrl-C (to the main thread).
            while "working..." not in err.getvalue() and not stop.wait(0.005):
                pass
            _thread.interrupt_main()
            stop.wait(5)

        with self.assertRaises(KeyboardInterrupt):
            admin._with_progress(work, "working", err, interval=0.01)
        self.assertRegex(err.getvalue(), r"^(\rworking\.\.\.    0 s)+\n$")


class AtomicWriteTests(unittest.TestCase):
    def setUp(self):
        self.directory = self.mktemp()
        os.mkdir(self.directory)
        self.path = os.path.join(self.directory, "file")

    def test_write(self):
        fileutil.write_file_atomically(self.path, b"data", mode=0o600)
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), b"data")
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        self.assertEqual(os.listdir(self.directory), ["file"])

    def test_failure_keeps_the_old_file_and_leaves_no_temporary(self):
        with open(self.path, "wb") as f:
            f.write(b"old")

        def broken_replace(source, destination):
            raise OSError(28, "No space left on device")

        self.patch(os, "replace", broken_replace)
        self.assertRaises(OSError, fileutil.write_file_atomically, self.path, b"new")
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), b"old")
        self.assertEqual(os.listdir(self.directory), ["file"])

    def test_relative_path(self):
        cwd = os.getcwd()
        self.addCleanup(os.chdir, cwd)
        os.chdir(self.directory)
        fileutil.write_file_atomically("relative", b"x")
        self.assertEqual(sorted(os.listdir(".")), ["relative"])


class RealGenerationTests(unittest.TestCase):
    """Generates a real 2048-bit group: seconds to tens of seconds."""

    if not os.environ.get("KEYX_SLOW_TESTS"):
        skip = "slow: set KEYX_SLOW_TESTS=1 to generate a real 2048-bit group"

    def test_generated_file_passes_params_and_openssl(self):
        directory = self.mktemp()
        os.mkdir(directory)
        output = os.path.join(directory, "params.pem")
        err = io.StringIO()
        self.assertEqual(admin.main(["genparams", "-o", output], out=io.StringIO(), err=err),
                         0, err.getvalue())
        group = ffdh.load_parameters_file(output)
        self.assertEqual((group.bits, group.g), (2048, 2))
        self.assertEqual(group.q, (group.p - 1) // 2)
        openssl = shutil.which("openssl")
        if openssl is None:
            raise unittest.SkipTest("openssl is not installed; the file loaded with --params")
        check = subprocess.run([openssl, "dhparam", "-in", output, "-check", "-noout"],
                               capture_output=True, timeout=120)
        self.assertEqual(check.returncode, 0, check.stderr)
        self.assertIn(b"DH parameters appear to be ok", check.stdout + check.stderr)
