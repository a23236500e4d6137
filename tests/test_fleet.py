"""A fleet, for real: PostgreSQL (tests.pgfixture), HAProxy, and three
``twistd keyx --store`` daemons behind it on 127.0.0.1 (docs/fleet.rst); a
user invited with ``keyx-admin invite --store`` registers through one daemon
with ``keyx-client opaque register`` and logs in through the others.

Skipped where PostgreSQL or HAProxy is missing, failed instead under CI
(``CI=true``; ``.ci/run`` installs both with apt-get when they are missing).
"""

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

from twisted.trial import unittest

from twisted_keyx.cli import admin
from twisted_keyx.core.refusals import ServerUnavailable
from twisted_keyx.opaque.ksf import MiB, Argon2idParameters
from twisted_keyx.opaque.records import ServerSetup
from twisted_keyx.service import pgstore, tap

from tests.helpers import PASSWORD, make_user
from tests.pgfixture import PostgreSQLTestCase
from tests.test_eke_protocol import client_machine, guess_over_tcp

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(tap.__file__))))
DAEMONS = 3


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def haproxy_binary():
    found = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy")
                                        else None)
    if found is None:
        if os.environ.get("CI") == "true":
            raise RuntimeError("haproxy is not installed (CI=true: the fleet test must run)")
        raise unittest.SkipTest("haproxy is not installed (apt-get install haproxy)")
    return found


def eke_login(port, password=PASSWORD, user="alice", source="127.0.0.2"):
    """A whole EKE login through ``port`` from ``source``: "ok", or the
    exception the client machine ended with."""
    client = client_machine(password, user)
    with socket.create_connection(("127.0.0.1", port), timeout=20,
                                  source_address=(source, 0)) as s:
        stream = s.makefile("rwb")
        line = client.start()
        try:
            while line is not None:
                stream.write(line + b"\n")
                stream.flush()
                answer = stream.readline()
                if not answer:
                    return ConnectionError("closed")
                line = client.receive(answer[:-1])
        except Exception as e:  # the machine's failure is the outcome
            return e
    return "ok"


def eke_guess(port, source="127.0.0.3", password="wrong guess"):
    """A guess up to the server's step 4; the seconds it waited for it."""
    started, answered, answer = guess_over_tcp(port, password, source, timeout=20)
    return answered - started, answer


def guesses_at_once(port, count, waits=None, join=True):
    """``count`` wrong guesses from 127.0.0.3 started together; their waits
    (or the threads, with ``join`` False)."""
    waits = [] if waits is None else waits
    threads = []
    for _ in range(count):
        threads.append(threading.Thread(target=lambda: waits.append(eke_guess(port)[0])))
        threads[-1].start()
        time.sleep(0.05)
    if not join:
        return threads
    for thread in threads:
        thread.join()
    return waits


HAPROXY_CFG = """\
global
    maxconn 2000
    log stderr format raw local0 info
defaults
    mode tcp
    log global
    option tcplog
    timeout connect 1s
    timeout client 60s
    timeout server 60s
    retries 2
    option redispatch
    default-server send-proxy-v2 check check-send-proxy inter 300ms fall 1 rise 1
frontend dh
    bind 127.0.0.1:{dh}
    default_backend dh
backend dh
    balance roundrobin
{dh_servers}
frontend eke
    bind 127.0.0.1:{eke}
    default_backend eke
backend eke
    balance roundrobin
{eke_servers}
"""


class FleetTests(PostgreSQLTestCase):
    timeout = 150

    def setUp(self):
        super().setUp()
        self.haproxy_path = haproxy_binary()
        self.folder = os.path.abspath(self.mktemp())
        os.mkdir(self.folder)
        self.url = self.server.database()
        self.processes = []
        self.addCleanup(self._stop_all)
        # One host key for the fleet: a client sees the same key whichever
        # daemon HAProxy picks.
        self.host_key = os.path.join(self.folder, "host-key")
        assert admin.main(["hostkey", "-o", self.host_key], io.StringIO(), io.StringIO()) == 0
        self.addCleanup(lambda: self.server.running or self.server.start())

    def _stop_all(self):
        for process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait()

    def twistd(self, index, *options, output=subprocess.DEVNULL):
        folder = os.path.join(self.folder, f"keyx{index}")
        os.makedirs(folder, exist_ok=True)
        log = os.path.join(folder, "keyx.log")
        process = subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
             "-n", "--logfile", log, "--pidfile", "", "keyx", "--store", self.url,
             "--host-key", self.host_key, *options],
            env=dict(os.environ, PYTHONPATH=ROOT), cwd=folder,
            stdout=output, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process, log

    def log(self, index):
        try:
            with open(os.path.join(self.folder, f"keyx{index}", "keyx.log"),
                      errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def wait_until(self, predicate, seconds, what):
        deadline = time.monotonic() + seconds
        while not predicate():
            if time.monotonic() > deadline:
                self.fail(f"timed out waiting for {what}; logs:\n"
                          + "\n".join(self.log(i) for i in range(1, DAEMONS + 1)))
            time.sleep(0.1)

    def start_fleet(self):
        ports = [(free_port(), free_port()) for _ in range(DAEMONS)]
        # OPAQUE straight to each daemon (no HAProxy), to register through
        # one and log in through the others.
        self.opaque_ports = [free_port() for _ in range(DAEMONS)]
        for index, (dh, eke) in enumerate(ports, 1):
            self.twistd(index, "--dh", f"haproxy:tcp:{dh}:interface=127.0.0.1",
                        "--eke", f"haproxy:tcp:{eke}:interface=127.0.0.1",
                        "--opaque", f"tcp:{self.opaque_ports[index - 1]}:interface=127.0.0.1")
            if index == 1:  # the first makes the shared OPAQUE setup
                self.wait_until(lambda: "Limits (0: none)" in self.log(1), 60, "daemon 1")
        for index in range(1, DAEMONS + 1):
            self.wait_until(lambda: "Limits (0: none)" in self.log(index), 60, f"daemon {index}")
        self.dh, self.eke = free_port(), free_port()
        config = os.path.join(self.folder, "haproxy.cfg")
        with open(config, "w") as f:
            f.write(HAPROXY_CFG.format(
                dh=self.dh, eke=self.eke,
                dh_servers="\n".join(f"    server keyx{i} 127.0.0.1:{dh}"
                                     for i, (dh, _) in enumerate(ports, 1)),
                eke_servers="\n".join(f"    server keyx{i} 127.0.0.1:{eke}"
                                      for i, (_, eke) in enumerate(ports, 1))))
        self.haproxy_log = open(os.path.join(self.folder, "haproxy.log"), "wb")
        self.addCleanup(self.haproxy_log.close)
        self.processes.append(subprocess.Popen(
            [self.haproxy_path, "-f", config, "-db"], cwd=self.folder,
            stdout=self.haproxy_log, stderr=subprocess.STDOUT))
        self.wait_until(lambda: self.logs_in(), 20, "HAProxy")
        time.sleep(0.7)  # every server checked up

    def haproxy_tail(self):
        with open(os.path.join(self.folder, "haproxy.log"), errors="replace") as f:
            return f.read()[-3000:]

    def logs_in(self):
        try:
            return eke_login(self.eke) == "ok"
        except OSError:
            return False

    def run_cli(self, module, *argv, input=None):
        """``python -m twisted_keyx.cli.MODULE ARGV``: (exit status, stdout,
        stderr); the client's files in the test's folder."""
        result = subprocess.run(
            [sys.executable, "-m", f"twisted_keyx.cli.{module}", *argv],
            env=dict(os.environ, PYTHONPATH=ROOT, XDG_CONFIG_HOME=self.folder),
            capture_output=True, text=True, input=input, timeout=60)
        return result.returncode, result.stdout, result.stderr

    def secret_file(self, name, text):
        path = os.path.join(self.folder, name)
        with open(path, "w") as f:
            f.write(text + "\n")
        os.chmod(path, 0o600)
        return path

    def opaque(self, index, user, *more):
        """``keyx-client opaque`` straight to daemon ``index`` (1-based)."""
        return self.run_cli("client", "opaque", *more, "--user", user, "--host", "127.0.0.1",
                            "--port", str(self.opaque_ports[index - 1]), "--timeout", "20",
                            "--password-file", self.password_file, input="")

    def dh_handshake(self):
        result = subprocess.run(
            [sys.executable, "-m", "twisted_keyx.cli.client", "dh", "--host", "127.0.0.1",
             "--port", str(self.dh), "--timeout", "20", "--accept-new",
             "--known-hosts", os.path.join(self.folder, "known_hosts")],
            env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True)
        return result.returncode, result.stderr

    def test_a_fleet_behind_haproxy(self):
        connection = pgstore.connect(self.url)
        self.addCleanup(connection.close)
        pgstore.upgrade(connection)
        pgstore.add_users(connection, {"alice": make_user("alice")})
        # The fleet's OPAQUE setup at the client's lowest Argon2id cost, so
        # that registering and logging in cost the test little.
        pgstore.store_setup(connection, ServerSetup.generate(
            Argon2idParameters(memory_cost=19 * MiB, iterations=2, lanes=1)))
        self.password_file = self.secret_file("password", "bob's new password")
        self.start_fleet()

        self.assertEqual(self.dh_handshake()[0], 0)
        # Logins through HAProxy reach every daemon, which sees the client.
        self.assertEqual([eke_login(self.eke) for _ in range(2 * DAEMONS)], ["ok"] * 2 * DAEMONS)
        for index in range(1, DAEMONS + 1):
            self.assertIn("EKE: user alice from 127.0.0.2:", self.log(index))
            self.assertNotIn("Failed guess", self.log(index))
        # A user added meanwhile logs in through each daemon at once (each
        # login looks its user up in the store).
        pgstore.add_users(connection, {"carol": make_user("carol")})
        self.assertEqual([eke_login(self.eke, user="carol") for _ in range(DAEMONS)],
                         ["ok"] * DAEMONS)
        for index in range(1, DAEMONS + 1):
            self.assertIn("EKE: user carol from 127.0.0.2:", self.log(index))

        # A user invited with keyx-admin registers over the network through
        # daemon 1, then logs in through each of the others; the code worked
        # once, on every daemon.
        status, code, err = self.run_cli("admin", "invite", "bob", "--store", self.url)
        self.assertEqual(status, 0, err)
        code_file = self.secret_file("code", code.strip())
        status, out, err = self.opaque(1, "bob", "register", "--code-file", code_file)
        self.assertEqual(status, 0, err + self.log(1)[-2000:])
        self.assertIn("Registered bob on 127.0.0.1:", out)
        self.assertIn("OPAQUE: registered user 'bob' from 127.0.0.1:", self.log(1))
        for index in range(2, DAEMONS + 1):
            status, out, err = self.opaque(index, "bob")
            self.assertEqual(status, 0, err + self.log(index)[-2000:])
            self.assertIn("Authentication success", out)
            self.assertIn("OPAQUE: user bob from 127.0.0.1:", self.log(index))
        for index in (2, 3):
            status, _, err = self.opaque(index, "bob", "register", "--code-file", code_file)
            self.assertEqual(status, 1, err)
            self.assertIn("registration refused", err)
        status, out, _ = self.run_cli("admin", "listusers", "--store", self.url)
        self.assertIn("bob  opaque", out)

        # Guessing spread over every daemon is throttled as one: seven wrong
        # guesses at once, round robin over the three daemons (none sees more
        # than three): three free, the fourth too (a little of the first
        # three forgotten meanwhile), the fifth takes the slot of now, the
        # sixth and seventh one and two seconds after it.  A loaded machine
        # only adds to the waits, so only the held ones are checked.
        waits = []
        threads = guesses_at_once(self.eke, 7, waits, join=False)
        time.sleep(0.5)  # every guess reserved; their slots run 2 s ahead
        # The real user, from where she logged in before, is answered now;
        # from a source she never used, she waits for the guessers' slots.
        # Both at once, so that a slow machine does not let the slots pass
        # while the first is under way.
        stranger = []
        strangers = threading.Thread(target=lambda: stranger.append(
            eke_guess(self.eke, source="127.0.0.9", password=PASSWORD)[0]))
        strangers.start()
        familiar = eke_guess(self.eke, source="127.0.0.2", password=PASSWORD)[0]
        strangers.join()
        stranger = stranger[0]
        for thread in threads:
            thread.join()
        waits.sort()
        self.assertGreater(waits[-2], 0.5, waits)
        self.assertGreater(waits[-1], 1.2, waits)
        self.assertLess(familiar, 1.2)
        self.assertGreater(stranger, 1.5)
        guessed = [i for i in range(1, DAEMONS + 1)
                   if "user 'alice' from 127.0.0.3" in self.log(i)
                   or "Guessing user 'alice'" in self.log(i)]
        self.assertEqual(len(guessed), DAEMONS)
        self.assertEqual(eke_login(self.eke), "ok")

        # A daemon killed: the others carry on, and the guesses it counted
        # stay counted.
        self.processes[0].send_signal(signal.SIGKILL)
        self.processes[0].wait()
        self.assertEqual([eke_login(self.eke) for _ in range(DAEMONS)], ["ok"] * DAEMONS)
        self.assertGreater(max(guesses_at_once(self.eke, 2)), 0.8)

        # PostgreSQL stopped: password logins refused with their own line,
        # DH served; started again: the daemons reconnect by themselves.
        self.server.stop()
        outcomes = [eke_login(self.eke) for _ in range(2)]
        for outcome in outcomes:
            self.assertIsInstance(outcome, ServerUnavailable, self.haproxy_tail())
        for index in range(2, DAEMONS + 1):
            # Each daemon says so, in one line, to each client.
            status, _, err = self.opaque(index, "bob")
            self.assertEqual(status, 5, err)
            self.assertIn("the server cannot check passwords right now", err)
            self.assertIn("does not answer", self.log(index))
        self.assertEqual(self.dh_handshake()[0], 0, "\n".join(self.log(i)[-3000:] for i in (2, 3)))
        self.server.start()
        self.wait_until(lambda: self.logs_in(), 20, "a login after the restart")
        for _ in range(DAEMONS):
            self.assertEqual(eke_login(self.eke), "ok")
        for index in range(2, DAEMONS + 1):
            self.assertEqual(self.opaque(index, "bob")[0], 0)
        connection = pgstore.connect(self.url)
        self.addCleanup(connection.close)
        self.assertEqual(sorted(pgstore.read_users(connection)), ["alice", "bob", "carol"])
        for index in range(2, DAEMONS + 1):
            log = self.log(index)
            self.assertNotIn("Traceback", log)
            # The outage: one line when it began, one when it ended.
            self.assertEqual(log.count("does not answer"), 1, log[-3000:])
            self.assertEqual(log.count("answers again"), 1, log[-3000:])

    def test_a_daemon_against_an_empty_schema_says_so_in_one_line(self):
        process, _ = self.twistd(1, "--dh", "tcp:0:interface=127.0.0.1",
                                 "--eke", "tcp:0:interface=127.0.0.1",
                                 "--opaque", "tcp:0:interface=127.0.0.1",
                                 output=subprocess.PIPE)
        output = process.communicate(timeout=60)[0].decode()
        self.assertEqual(process.returncode, 1)
        lines = output.strip().splitlines()
        self.assertEqual(len(lines), 2, output)
        self.assertRegex(lines[0], r"^twistd keyx: the store .* has no twisted-keyx schema "
                                   r"\(empty\); run: keyx-admin store-upgrade --store")
        self.assertEqual(lines[1], "See 'twistd keyx --help' for the options.")
