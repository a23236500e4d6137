"""``twistd keyx --workers N`` (twisted_keyx.workers): options, and a real
two-worker daemon in its own interpreter."""

import os
import re
import signal
import socket
import sys
import time

from twisted.internet import defer, reactor, task, utils
from twisted.python import usage
from twisted.trial import unittest

from twisted_keyx import limits, tap, workers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(tap.__file__)))


def parse(*args):
    options = tap.Options()
    options.parseOptions(["--dh", "tcp:0", "--eke", "tcp:0", "--users",
                          os.path.abspath("users.json"), *args])
    return options


class OptionTests(unittest.TestCase):
    def test_default_is_one(self):
        self.assertEqual(parse()["workers"], 1)

    def test_number(self):
        self.assertEqual(parse("--workers", "3")["workers"], 3)

    def test_auto_is_one_per_usable_cpu(self):
        self.assertEqual(parse("--workers", "auto")["workers"], len(os.sched_getaffinity(0)))

    def test_zero_negative_and_garbage_are_refused(self):
        for value in ("0", "-2", "two", "1.5", ""):
            with self.assertRaises(usage.UsageError, msg=value) as caught:
                parse("--workers", value)
            self.assertIn("--workers must be a number, 1 or more, or auto", str(caught.exception))

    def test_endpoints_that_cannot_be_shared_are_refused(self):
        with self.assertRaises(usage.UsageError) as caught:
            workers.check_description("systemd:domain=INET:index=0")
        self.assertIn("only tcp:, tcp6:, ssl: and unix: endpoints", str(caught.exception))

    def test_limits_are_divided_rounding_up(self):
        shared = workers.worker_limits(limits.Limits(max_connections=10001, max_per_ip=3), 2)
        self.assertEqual((shared.max_connections, shared.max_per_ip), (5001, 2))
        self.assertEqual(workers.worker_limits(limits.Limits(max_per_ip=0), 4).max_per_ip, 0)

    def test_workers_option_is_removed_for_the_workers(self):
        self.assertEqual(workers.strip_workers_option(
            ["--dh", "tcp:1", "--workers", "2", "--workers=3", "--timeout", "5"]),
            ["--dh", "tcp:1", "--timeout", "5"])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sleep(seconds):
    return task.deferLater(reactor, seconds, lambda: None)


class DaemonTests(unittest.TestCase):
    """A real ``twistd -n keyx --workers 2`` on 127.0.0.1."""

    timeout = 120

    def setUp(self):
        self.folder = os.path.abspath(self.mktemp())
        os.mkdir(self.folder)
        self.log = os.path.join(self.folder, "keyx.log")
        self.port = free_port()
        env = dict(os.environ, PYTHONPATH=ROOT)
        import subprocess

        self.daemon = subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
             "-n", "--logfile", self.log, "--pidfile", "", "keyx", "--workers", "2",
             "--dh", f"tcp:{self.port}:interface=127.0.0.1", "--eke", "tcp:0:interface=127.0.0.1",
             "--opaque", "tcp:0:interface=127.0.0.1", "--users", os.path.join(self.folder, "users.json")],
            env=env, cwd=self.folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(self._kill)

    def _kill(self):
        if self.daemon.poll() is None:
            self.daemon.kill()
            self.daemon.wait()
        for pid in self.worker_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def lines(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def worker_pids(self):
        return [int(m.group(2)) for m in
                (re.search(r"worker (\d+) started \(pid (\d+)\)", line) for line in self.lines()) if m]

    async def wait_for(self, predicate, seconds=60):
        deadline = time.monotonic() + seconds
        while not predicate():
            if time.monotonic() > deadline:
                self.fail("timed out; log:\n" + "\n".join(self.lines()))
            await sleep(0.2)

    async def handshake(self):
        out, err, code = await utils.getProcessOutputAndValue(
            sys.executable, ["-m", "twisted_keyx.client", "dh", "--host", "127.0.0.1",
                             "--port", str(self.port), "--timeout", "30", "--accept-new",
                             "--known-hosts", os.path.join(self.folder, "known_hosts")],
            env=dict(os.environ, PYTHONPATH=ROOT))
        self.assertEqual(code, 0, err)

    def finished(self):
        return [line for line in self.lines() if "DH handshake with" in line and "finished" in line]

    def serving(self):
        return sum("DHServerFactory (GuardedFactory) starting on" in line
                   for line in self.lines()) >= 2

    def test_handshakes_from_both_workers_then_sigterm_stops_all(self):
        async def run():
            await self.wait_for(self.serving)
            for _ in range(40):
                await self.handshake()
                names = {re.search(r"\[(worker \d)\]", line).group(1)
                         for line in self.finished() if "[worker " in line}
                if names == {"worker 1", "worker 2"}:
                    break
            self.assertEqual(names, {"worker 1", "worker 2"})
            for line in self.finished():
                self.assertRegex(line, r"\[worker [12]\] DH handshake with")
            pids = self.worker_pids()
            self.assertEqual(len(pids), 2)
            self.daemon.send_signal(signal.SIGTERM)
            await self.wait_for(lambda: self.daemon.poll() is not None, 30)
            for pid in pids:
                self.assertFalse(os.path.exists(f"/proc/{pid}") and
                                 open(f"/proc/{pid}/stat").read().split(")")[1].split()[0] != "Z",
                                 f"worker {pid} still runs")
            self.assertEqual([line for line in self.lines() if "Traceback" in line], [])

        return defer.Deferred.fromCoroutine(run())

    def test_killed_worker_is_restarted(self):
        async def run():
            await self.wait_for(self.serving)
            first = self.worker_pids()[0]
            os.kill(first, signal.SIGKILL)
            await self.wait_for(lambda: len(self.worker_pids()) >= 3)
            self.assertTrue(any("worker 1 exited (signal 9)" in line and "restarting it in" in line
                                for line in self.lines()), self.lines())
            await self.wait_for(lambda: sum("DHServerFactory (GuardedFactory) starting on" in line
                                            for line in self.lines()) >= 3)
            await self.handshake()

        return defer.Deferred.fromCoroutine(run())
