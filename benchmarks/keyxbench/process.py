"""Server processes for the benchmark: start one pinned to a core, wait for
its port, read its CPU time and memory from ``/proc``, stop it.

The machine the benchmark runs on is shared, so throughput moves with
whatever else runs; the server's own CPU time (utime + stime of its process,
``/proc/PID/stat`` fields 14 and 15) over the measured window, divided by the
handshakes completed in it, moves much less: that is the number the
comparisons use.
"""

import glob
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time

BENCHMARKS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(BENCHMARKS)

#: Where the server runs, and where the load generator runs.
SERVER_CORE, LOAD_CORE = 0, 1


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def can_pin():
    return bool(shutil.which("taskset")) and (os.cpu_count() or 1) > 1


def pin_prefix(core):
    """The command prefix that runs a program on ``core`` (none on one core)."""
    return ["taskset", "-c", str(core)] if can_pin() else []


def pin_self(core):
    """Run this process on ``core`` only (None: on every core again)."""
    if (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, set(range(os.cpu_count())) if core is None else {core})


def environment():
    """The environment of every child: this checkout and benchmarks/ first on
    the path, so that the daemon runs the checkout's code and its dropin."""
    path = [ROOT, BENCHMARKS] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(path))


def python_module(module, *args, core):
    """A command that runs ``python -m module args`` on ``core``."""
    return pin_prefix(core) + [sys.executable, "-m", module, *map(str, args)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    """User + system CPU seconds of process ``pid`` so far (not its children)."""
    with open(f"/proc/{pid}/stat") as f:
        # The command name (field 2) may hold spaces: split after its ")".
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid):
    """``pid``'s children, their children... (read from each process's
    ``/proc/PID/stat``, field 4, its parent)."""
    parents = {}
    for path in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(path) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(path.split("/")[2]))
    found, todo = [], [pid]
    while todo:
        kids = parents.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def tree_cpu_seconds(pid):
    """CPU seconds of ``pid`` and of its live descendants (the workers of
    ``twistd keyx --workers N``); a descendant that ends between the
    listing and the reading counts 0."""
    total = cpu_seconds(pid)
    for child in descendants(pid):
        try:
            total += cpu_seconds(child)
        except OSError:
            pass
    return total


def status_bytes(pid, field):
    """A ``kB`` field of ``/proc/PID/status`` (VmRSS, VmHWM), in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return None


class ServerProcess:
    """A server in its own process, listening on ``port`` of 127.0.0.1.

    ``log`` is a file the server writes (read back by :meth:`stop`), if any.
    """

    def __init__(self, command, port, cwd=None, log=None, stdout=None):
        self.port = port
        self.log = log
        self.process = subprocess.Popen(command, cwd=cwd, env=environment(), stdout=stdout,
                                        text=True)
        self.pid = self.process.pid  # taskset execs the program: the same pid
        self._wait_listening()

    def _wait_listening(self, seconds=30):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                time.sleep(0.3)  # let the probe's connection be forgotten
                return
            except OSError:
                if self.process.poll() is not None:
                    raise SystemExit(f"the server exited ({self.process.returncode}): "
                                     f"{self.process.args}; log: {self.log}")
                time.sleep(0.05)
        self.process.kill()
        raise SystemExit(f"the server did not start listening: {self.process.args}")

    def cpu_seconds(self):
        """The server's CPU seconds, its worker processes' included."""
        return tree_cpu_seconds(self.pid)

    def own_cpu_seconds(self):
        """The CPU seconds of the server's own process (with --workers: the parent's)."""
        return cpu_seconds(self.pid)

    def rss(self):
        return status_bytes(self.pid, "VmRSS")

    def peak_rss(self):
        return status_bytes(self.pid, "VmHWM")

    def stop(self):
        """Stop the server (SIGINT, as Ctrl-C); return its log's text."""
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        text = ""
        if self.log:
            # twistd rotates its log every megabyte: read every piece.
            for path in sorted(glob.glob(self.log + "*")):
                with open(path, errors="replace") as f:
                    text += f.read()
        return text


class ServerSet:
    """Several :class:`ServerProcess` measured as one: CPU and memory summed;
    ``port`` is their ports, for a load generator that spreads its clients
    over them (keyxbench.load ``--port P1,P2``)."""

    def __init__(self, servers):
        self.servers = list(servers)
        self.port = [server.port for server in self.servers]
        self.pid = self.servers[0].pid

    def cpu_seconds(self):
        return sum(server.cpu_seconds() for server in self.servers)

    own_cpu_seconds = cpu_seconds

    def rss(self):
        return sum(server.rss() or 0 for server in self.servers)

    def peak_rss(self):
        return sum(server.peak_rss() or 0 for server in self.servers)


def mb(n):
    return f"{n / 2 ** 20:.1f} MB"


def read_line(sock, buffer):
    """The next LF-terminated line from a blocking socket, without its LF;
    ``buffer`` is a one-item list holding what was read past it.  Raises
    ConnectionError if the server hangs up first."""
    while b"\n" not in buffer[0]:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server hung up")
        buffer[0] += chunk
    line, _, buffer[0] = buffer[0].partition(b"\n")
    return line
