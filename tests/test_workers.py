"""``twistd keyx --workers N`` (twisted_keyx.service.workers): options, and a real
two-worker daemon in its own interpreter."""

import os
import re
import signal
import socket
import sys
import time

from twisted.internet import defer, reactor, task, utils
from twisted.logger import LogLevel
from twisted.python import usage
from twisted.trial import unittest

from twisted_keyx.service import limits
from twisted_keyx.service import tap
from twisted_keyx.service import workerprocess as worker
from twisted_keyx.service import workers
from twisted_keyx.service import userfile as userstore

from tests.helpers import make_user
from tests.test_eke_protocol import client_machine, guess_over_tcp

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(tap.__file__))))


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

    def test_too_many_is_refused(self):
        # --workers 99999 started worker after worker until the machine gave out.
        self.assertEqual(parse("--workers", str(workers.MAX_WORKERS))["workers"],
                         workers.MAX_WORKERS)
        with self.assertRaises(usage.UsageError) as caught:
            parse("--workers", "99999")
        self.assertIn(f"--workers: at most {workers.MAX_WORKERS} (got 99999)",
                      str(caught.exception))

    def test_endpoints_that_cannot_be_shared_are_refused(self):
        for description in ("systemd:domain=INET:index=0", "haproxy:systemd:domain=INET:index=0"):
            with self.assertRaises(usage.UsageError) as caught:
                workers.check_description(description)
            self.assertIn("only tcp:, tcp6:, ssl: and unix: endpoints (each also behind "
                          "haproxy:)", str(caught.exception))

    def test_haproxy_endpoints_are_shared(self):
        for description in ("haproxy:tcp:0:interface=127.0.0.1", "haproxy:unix:/tmp/k.sock"):
            workers.check_description(description)
        self.assertEqual(parse("--workers", "2", "--eke", "haproxy:tcp:0")["workers"], 2)
        s, family = workers.bind("haproxy:tcp:0:interface=127.0.0.1")
        self.addCleanup(s.close)
        self.assertEqual((family, s.getsockname()[0]), (socket.AF_INET, "127.0.0.1"))

    def test_limits_are_divided_rounding_up(self):
        shared = workers.worker_limits(limits.Limits(max_connections=10001, max_per_ip=3), 2)
        self.assertEqual((shared.max_connections, shared.max_per_ip), (5001, 2))
        self.assertEqual(workers.worker_limits(limits.Limits(max_per_ip=0), 4).max_per_ip, 0)

    def test_workers_option_is_removed_for_the_workers(self):
        self.assertEqual(workers.strip_workers_option(
            ["--dh", "tcp:1", "--workers", "2", "--workers=3", "--timeout", "5"]),
            ["--dh", "tcp:1", "--timeout", "5"])


class ToParentTests(unittest.TestCase):
    """A worker's side of the pipe to the parent: log lines kept a moment
    and written together; a guess throttle message written at once."""

    def setUp(self):
        self.clock = task.Clock()
        self.read_fd, write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        self.addCleanup(os.close, self.read_fd)
        self.addCleanup(os.close, write_fd)
        self.writes = []
        real_write = os.write

        def write(fd, data):
            if fd == write_fd:
                self.writes.append(data)
            return real_write(fd, data)

        self.patch(worker.os, "write", write)
        self.pipe = worker._ToParent(write_fd, self.clock)

    def read(self):
        try:
            return os.read(self.read_fd, 1 << 20)
        except BlockingIOError:
            return b""

    def event(self, text, level=LogLevel.info):
        self.pipe.observe({"log_format": "{text}", "text": text, "log_level": level})

    def test_lines_wait_then_go_in_one_write(self):
        for i in range(5):
            self.event(f"line {i}")
        self.event("two\nlines", LogLevel.warn)
        self.assertEqual(self.read(), b"")
        self.clock.advance(worker.LOG_FLUSH_DELAY)
        self.assertEqual(self.read(), b"".join(b"info line %d\n" % i for i in range(5))
                         + b"warn two\nwarn lines\n")
        self.assertEqual(len(self.writes), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_guess_message_goes_at_once_after_the_lines_before_it(self):
        self.event("before")
        self.pipe.send("guess [1]")
        self.assertEqual(self.read(), b"info before\nguess [1]\n")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_many_lines_go_before_the_delay(self):
        for i in range(worker.LOG_FLUSH_BYTES // 100 + 1):
            self.event("x" * 100)
        self.assertGreater(len(self.read()), worker.LOG_FLUSH_BYTES)
        self.assertEqual(len(self.writes), 1)

    def test_a_traceback_goes_with_its_event(self):
        try:
            1 / 0
        except ZeroDivisionError:
            from twisted.python.failure import Failure

            failure = Failure()
        self.pipe.observe({"log_format": "oops", "log_failure": failure,
                           "log_level": LogLevel.critical})
        self.pipe.flush()
        lines = self.read().decode().splitlines()
        self.assertEqual(lines[0], "critical oops")
        self.assertIn("critical builtins.ZeroDivisionError", "\n".join(lines))
        self.assertTrue(all(line.startswith("critical ") for line in lines))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sleep(seconds):
    return task.deferLater(reactor, seconds, lambda: None)


def eke_guess(port):
    """A wrong EKE guess on 127.0.0.1:``port``; the moment (monotonic
    seconds) its answer arrived."""
    _, answered, answer = guess_over_tcp(port)
    assert answer.endswith(b"\n"), answer
    return answered


class _Daemon(unittest.TestCase):
    """A real ``twistd -n keyx --workers 2`` on 127.0.0.1, its endpoints
    behind ``PREFIX``."""

    timeout = 120
    PREFIX = ""

    def setUp(self):
        self.folder = os.path.abspath(self.mktemp())
        os.mkdir(self.folder)
        self.log = os.path.join(self.folder, "keyx.log")
        self.port, self.eke_port = free_port(), free_port()
        users = os.path.join(self.folder, "users.json")
        userstore.write_users(users, {"alice": make_user("alice")})
        env = dict(os.environ, PYTHONPATH=ROOT)
        import subprocess

        self.daemon = subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
             "-n", "--logfile", self.log, "--pidfile", "", "keyx", "--workers", "2",
             "--dh", f"{self.PREFIX}tcp:{self.port}:interface=127.0.0.1",
             "--eke", f"{self.PREFIX}tcp:{self.eke_port}:interface=127.0.0.1",
             "--opaque", f"{self.PREFIX}tcp:0:interface=127.0.0.1", "--users", users],
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
            sys.executable, ["-m", "twisted_keyx.cli.client", "dh", "--host", "127.0.0.1",
                             "--port", str(self.port), "--timeout", "30", "--accept-new",
                             "--known-hosts", os.path.join(self.folder, "known_hosts")],
            env=dict(os.environ, PYTHONPATH=ROOT))
        self.assertEqual(code, 0, err)

    def finished(self):
        return [line for line in self.lines() if "DH handshake with" in line and "finished" in line]

    def serving(self):
        return sum("DHServerFactory (GuardedFactory) starting on" in line
                   for line in self.lines()) >= 2



class DaemonTests(_Daemon):
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

    def test_guesses_spread_over_both_workers_are_paced_as_in_one_process(self):
        """Three failed guesses on worker 1, two on worker 2, one on worker
        1, one on worker 2 (the other worker stopped each time, so that the
        kernel hands the connection to the one that runs).  As in one
        process: the fourth failure (the first with more than 3, a little
        of the first three forgotten meanwhile) starts the throttle, the
        fifth guess takes the slot of now, the sixth and seventh wait their
        second, though each worker saw fewer than four failures itself: the
        workers charge every guess in one SQLite file."""
        port = self.eke_port

        async def run():
            await self.wait_for(lambda: sum("EKEServerFactory (GuardedFactory) starting on" in line
                                            for line in self.lines()) >= 2)
            first, second = self.worker_pids()
            self.addCleanup(self._continue, first, second)

            def on(pid):
                os.kill(pid, signal.SIGCONT)
                os.kill(second if pid == first else first, signal.SIGSTOP)

            def failed():
                return [line for line in self.lines() if "Failed guess for user 'alice'" in line]

            def throttle_noticed():
                return [line for line in self.lines()
                        if "Guessing user 'alice': more than 3" in line]

            on(first)
            answered = [eke_guess(port) for _ in range(3)]
            await self.wait_for(lambda: len(failed()) == 3)  # charged in the shared file
            self.assertEqual(throttle_noticed(), [])  # three failures are free
            on(second)
            answered += [eke_guess(port), eke_guess(port)]
            await sleep(0.2)  # the slot worker 2 took, passed on to worker 1
            on(first)
            answered.append(eke_guess(port))
            await sleep(0.2)
            on(second)
            answered.append(eke_guess(port))
            self._continue(first, second)
            # The sixth and seventh answers each waited for their slot, a
            # --guess-delay (1 s) after the one before, whichever worker gave
            # it.  The gaps between answers, not each guess's own wait, which
            # a loaded machine's slow client could use up before it asked
            # (a guess that asks late waits less; its answer still cannot
            # come before its slot).
            gaps = [later - earlier for earlier, later in zip(answered[4:], answered[5:])]
            self.assertGreater(min(gaps), 0.8, answered)
            self.assertEqual([line.split("] ")[0].split("[")[1] for line in failed()],
                             ["worker 1"] * 3 + ["worker 2"])
            # Each worker that meets the throttled user says so once.
            self.assertIn(len(throttle_noticed()), (1, 2), self.lines())
            self.assertEqual([line for line in self.lines() if "Traceback" in line
                              or "bad guess throttle message" in line], [])

        return defer.Deferred.fromCoroutine(run())

    def test_a_stopped_worker_is_replaced_and_its_connections_closed(self):
        async def run():
            await self.wait_for(lambda: sum("EKEServerFactory (GuardedFactory) starting on" in line
                                            for line in self.lines()) >= 2)
            pids = self.worker_pids()
            self.addCleanup(self._continue, *pids)
            # A connection one of the workers has accepted and answered.
            connection = socket.create_connection(("127.0.0.1", self.eke_port), timeout=30)
            self.addCleanup(connection.close)
            connection.sendall(b"alice\n")
            self.assertTrue(connection.recv(100).startswith(b"yes "))
            started = time.monotonic()
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            try:
                data = connection.recv(100)
            except ConnectionResetError:
                data = b""
            self.assertEqual(data, b"")  # closed, not left hanging
            self.assertLess(time.monotonic() - started,
                            workers.WATCH_TIMEOUT + 3 * workers.WATCH_EVERY)
            await self.wait_for(lambda: len(self.worker_pids()) >= 4)
            self.assertTrue(any("has not answered for" in line for line in self.lines()))
            await self.wait_for(lambda: sum("DHServerFactory (GuardedFactory) starting on" in line
                                            for line in self.lines()) >= 4)
            await self.handshake()

        return defer.Deferred.fromCoroutine(run())

    @staticmethod
    def _continue(*pids):
        for pid in pids:
            try:
                os.kill(pid, signal.SIGCONT)
            except OSError:
                pass

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


class ProxiedDaemonTests(_Daemon):
    """``--workers 2`` with ``haproxy:`` endpoints: the parent binds the
    plain sockets, each worker reads the PROXY header of its connections."""

    PREFIX = "haproxy:"

    def login(self, client_address):
        """A whole EKE login for alice, after a PROXY v1 header that says the
        client is ``client_address``: "ok" or the failure."""
        client = client_machine("correct horse", "alice")
        with socket.create_connection(("127.0.0.1", self.eke_port), timeout=30) as s:
            s.sendall(f"PROXY TCP4 {client_address} 127.0.0.1 40000 {self.eke_port}\r\n"
                      .encode("ascii"))
            stream = s.makefile("rwb")
            line = client.start()
            while line is not None:
                stream.write(line + b"\n")
                stream.flush()
                answer = stream.readline()
                if not answer:
                    return "closed"
                line = client.receive(answer[:-1])
        return "ok"

    def test_each_worker_sees_the_client_behind_the_proxy(self):
        async def run():
            # Three endpoints in each of two workers.
            await self.wait_for(lambda: sum("(PROXY) starting on" in line
                                            for line in self.lines()) >= 6)
            seen = set()
            for n in range(40):
                outcome = await task.deferLater(reactor, 0, self.login, f"203.0.113.{n + 1}")
                self.assertEqual(outcome, "ok")
                seen = {m.group(1) for m in (
                    re.search(r"\[(worker \d)\] EKE: user alice from 203\.0\.113\.\d+:40000",
                              line) for line in self.lines()) if m}
                if seen == {"worker 1", "worker 2"}:
                    break
            self.assertEqual(seen, {"worker 1", "worker 2"}, self.lines()[-20:])
            # A connection without the header is closed unserved.
            with socket.create_connection(("127.0.0.1", self.eke_port), timeout=30) as s:
                s.sendall(b"alice\n")
                try:
                    data = s.recv(100)
                except ConnectionResetError:  # aborted
                    data = b""
                self.assertEqual(data, b"")
            self.assertEqual([line for line in self.lines() if "Traceback" in line], [])

        return defer.Deferred.fromCoroutine(run())


class _Child:
    """A worker as the pool sees it, without a process."""

    def __init__(self, index):
        self.index = index
        self.pinged = None
        self.written = []
        self.signals = []
        self.transport = self

    def writeToChild(self, fd, data):
        self.written.append((fd, data))

    def signalProcess(self, name):
        self.signals.append(name)


class WatchTests(unittest.TestCase):
    """The parent pings each worker; one that stops answering is killed
    (and so restarted as a worker that died)."""

    def setUp(self):
        self.clock = task.Clock()
        self.pool = workers.WorkerPool(2, [], [], reactor=self.clock)
        self.children = {i: _Child(i) for i in (1, 2)}
        self.pool.processes.update(self.children)

    def test_an_answering_worker_is_left_alone(self):
        for _ in range(20):
            self.pool.watch()
            self.pool.workerLine(1, 1, workers.PONG)
            self.pool.workerLine(2, 1, workers.PONG)
            self.clock.advance(workers.WATCH_EVERY)
        self.assertEqual(self.children[1].written, [(0, b"ping\n")] * 20)
        self.assertEqual(self.children[1].signals, [])

    def test_a_worker_that_stops_answering_is_killed(self):
        from twisted.logger import capturedLogs, formatEvent

        with capturedLogs() as events:
            for _ in range(int(workers.WATCH_TIMEOUT / workers.WATCH_EVERY) + 1):
                self.pool.watch()
                self.pool.workerLine(2, 1, workers.PONG)
                self.clock.advance(workers.WATCH_EVERY)
            self.pool.watch()
        self.assertEqual(self.children[1].signals, ["KILL"])
        self.assertEqual(self.children[2].signals, [])
        self.assertIn("worker 1 has not answered for 10 s (stopped or stuck); killing it",
                      [formatEvent(e) for e in events])

    def test_a_pong_is_no_log_line(self):
        from twisted.logger import capturedLogs

        self.pool.watch()
        with capturedLogs() as events:
            self.pool.workerLine(1, 1, workers.PONG)
        self.assertEqual(events, [])
        self.assertIsNone(self.children[1].pinged)
