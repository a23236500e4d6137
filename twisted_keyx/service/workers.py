"""``twistd keyx --workers N``: the same endpoints served from N processes.

The parent (the process twistd runs) binds every listening socket once --
``tcp:``, ``tcp6:``, ``ssl:`` and ``unix:`` endpoints, each also behind
``haproxy:`` -- and starts N
workers, ``python -m twisted_keyx.service.workerprocess``, each handed the listening
sockets as inherited file descriptors.  A worker parses the same ``keyx``
options, builds the same factories as a single-process daemon
(:func:`twisted_keyx.service.tap.makeService`) and adopts each socket
(``reactor.adoptStreamPort``; an ``ssl:`` socket gets the endpoint's own TLS
context through :class:`~twisted.protocols.tls.TLSMemoryBIOFactory`; a
``haproxy:`` socket's connections are read through
:class:`~twisted_keyx.service.proxied.ProxiedFactory`, so that each worker
takes the client's address from the PROXY header, as one daemon does).  The
kernel hands each new connection to one of the workers that wait in
``accept``.

What holds across workers:

- the log: a worker formats each event as one line (``LEVEL text``) for its
  stdout, a pipe to the parent, which logs it with the system ``worker N``
  through twistd's own log (so ``--logfile``, its rotation and ``-`` stay
  twistd's); twistd's log then shows ``[worker 2] DH handshake with ...
  finished``.  A worker keeps its lines up to
  :data:`twisted_keyx.service.workerprocess.LOG_FLUSH_DELAY` seconds (0.1) and writes them
  together, so that the parent wakes up a few times a second, not once a
  handshake (what that saves: docs/benchmarks.rst, "the log relay"); a
  line's time in the log is when the parent got it, and a worker killed
  by SIGKILL loses its last 0.1 s of lines.  What
  a worker writes to stderr (a crash) is logged the same way, as errors;
- connection limits: divided, not shared.  Each worker allows
  ``--max-connections`` / N and ``--max-per-ip`` / N (rounded up, so a limit
  never becomes 0, which would mean none), counted by itself
  (:func:`worker_limits`).  The kernel spreads connections over the workers
  only roughly, so a source may be refused by a busy worker a little before
  it holds its whole share; and in all the daemon allows at most N - 1 more
  than the option says;
- the guess throttle (:mod:`twisted_keyx.service.throttle`; README.rst, ``--max-guesses``):
  shared through its store, not relayed.  Without ``--store``, the parent
  makes a SQLite file in a private temporary folder
  (:meth:`~twisted_keyx.service.sqlstore.SQLThrottleStore.sqlite`) and every
  worker's throttle charges each guess there, in one transaction that
  locks the file, so that guesses spread over the workers are counted and
  paced as in one process, and a worker that dies has lost none of the
  guesses it counted; with ``--store postgresql://...`` the workers share
  the database's throttle tables as the daemons of a fleet do.  Each
  worker logs its own failed guesses and bursts;
- the user file: each worker stats and re-reads it as one daemon does;
- stopping: SIGTERM or Ctrl-C to the parent stops every worker (SIGTERM to
  each; a worker that is still there after :data:`STOP_GRACE` seconds is
  killed).  A worker also gets SIGTERM from the kernel when the parent dies
  (``PR_SET_PDEATHSIG``), so none outlives it;
- a worker is watched: the parent pings it every :data:`WATCH_EVERY`
  seconds on its stdin and it answers on its stdout; one that leaves a ping
  unanswered for :data:`WATCH_TIMEOUT` seconds (stopped by SIGSTOP, its
  reactor stuck) is logged and killed, which closes its connections, and
  started again as one that died;
- a worker that exits while the daemon runs is logged and started again,
  after a delay that doubles (from :data:`RESTART_DELAY` up to
  :data:`MAX_RESTART_DELAY`) while workers keep dying within
  :data:`STABLE_SECONDS` of their start.
"""

import json
import math
import os
import socket
import stat
import sys

from twisted.application import service
from twisted.internet import defer, protocol
from twisted.logger import Logger, LogLevel
from twisted.python import usage

from twisted_keyx.service import endpointspec
from twisted_keyx.service import limits, proxied

#: Seconds before the first restart of a worker that died.
RESTART_DELAY = 0.5
#: The longest delay between restarts of a worker that keeps dying.
MAX_RESTART_DELAY = 30.0
#: A worker that ran this long before it died is restarted after RESTART_DELAY again.
STABLE_SECONDS = 10.0
#: Seconds a worker has to stop after SIGTERM before it is killed.
STOP_GRACE = 10.0
#: Seconds between the parent's pings of each worker.
WATCH_EVERY = 2.0
#: A worker that has not answered a ping for this long is taken to be stuck
#: (stopped, or its reactor blocked) and replaced.
WATCH_TIMEOUT = 10.0
#: The line a worker answers a ping with (on its stdout, among its log lines).
PONG = "pong"

#: listen() backlog of the sockets the parent binds (Twisted's default),
#: unless the endpoint gives ``backlog=``.
BACKLOG = 50

#: The first file descriptor a worker receives a listening socket on.
FIRST_FD = 3


#: The most ``--workers`` accepts.
MAX_WORKERS = 256


def parse_workers(value):
    """``--workers`` as a number: a positive integer, or ``auto`` for one
    per CPU this process may run on."""
    if value.strip().lower() == "auto":
        return len(os.sched_getaffinity(0))
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1 or str(n) != value.strip():
        raise usage.UsageError(f"--workers must be a number, 1 or more, or auto (got {value!r})")
    if n > MAX_WORKERS:
        # A slip of the keyboard (--workers 40000) started that many processes.
        raise usage.UsageError(f"--workers: at most {MAX_WORKERS} (got {n}); auto is one per CPU "
                               f"({len(os.sched_getaffinity(0))} here)")
    return n


def worker_limits(connection_limits, workers):
    """The limits one of ``workers`` workers applies: the connection counts
    divided (rounded up; 0, no limit, stays 0), the timeouts unchanged."""
    def share(n):
        return math.ceil(n / workers) if n else 0

    fields = {name: getattr(connection_limits, name)
              for name in connection_limits.__dataclass_fields__}
    fields.update(max_connections=share(connection_limits.max_connections),
                  max_per_ip=share(connection_limits.max_per_ip))
    return limits.Limits(**fields)


def strip_workers_option(argv):
    """``argv`` (the keyx options) without ``--workers`` and its value."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--workers":
            skip = True
        elif not arg.startswith("--workers="):
            out.append(arg)
    return out


def check_description(description):
    """Raise UsageError if ``description`` is an endpoint the workers cannot share."""
    if endpointspec.parse(proxied.inner(description)).kind not in ("tcp", "tcp6", "ssl", "unix"):
        raise usage.UsageError(
            f"--workers: {description!r}: only tcp:, tcp6:, ssl: and unix: endpoints "
            "(each also behind haproxy:) can be shared between workers")


def bind(description):
    """A listening socket for ``description`` (tcp, tcp6, ssl, unix, each
    also behind ``haproxy:``), bound as Twisted would bind it; the socket and
    the address family.  A ``haproxy:`` socket is plain here: each worker
    reads the PROXY header of its connections
    (:class:`twisted_keyx.service.proxied.ProxiedFactory`)."""
    spec = endpointspec.parse(proxied.inner(description))
    backlog = spec.backlog or BACKLOG
    if spec.kind == "unix":
        path = spec.path
        mode = spec.mode if spec.mode is not None else 0o666
        try:
            if stat.S_ISSOCK(os.stat(path).st_mode):
                os.unlink(path)  # a dead server's socket: nobody answers (tap checked)
        except FileNotFoundError:
            pass
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        os.chmod(path, mode)
        s.listen(backlog)
        s.setblocking(False)  # shared by the workers' reactors
        return s, socket.AF_UNIX
    port = spec.port or 0
    interface = spec.interface
    if spec.kind == "tcp6":
        family, interface = socket.AF_INET6, interface or "::"
    else:
        family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((interface, port))
    s.listen(backlog)
    s.setblocking(False)  # the flag is the socket's: every worker's reactor needs it
    return s, family


def unix_path(description):
    return endpointspec.parse(proxied.inner(description)).path


_LEVELS = {level.name: level for level in
           (LogLevel.debug, LogLevel.info, LogLevel.warn, LogLevel.error, LogLevel.critical)}


class _WorkerProcess(protocol.ProcessProtocol):
    """One worker, as the parent sees it: its lines go to the log."""

    def __init__(self, pool, index):
        self.pool = pool
        self.index = index
        self.buffers = {1: b"", 2: b""}
        self.ended = defer.Deferred()
        #: When the ping now unanswered was sent (None: none is).
        self.pinged = None

    def childDataReceived(self, fd, data):
        if fd not in self.buffers:
            return
        data = self.buffers[fd] + data
        *lines, self.buffers[fd] = data.split(b"\n")
        for line in lines:
            self.pool.workerLine(self.index, fd, line.decode("utf-8", "replace"))
        if len(self.buffers[fd]) > 65536:  # a line without end: log it in pieces
            self.pool.workerLine(self.index, fd, self.buffers[fd].decode("utf-8", "replace"))
            self.buffers[fd] = b""

    def processEnded(self, reason):
        for fd, rest in self.buffers.items():
            if rest:
                self.pool.workerLine(self.index, fd, rest.decode("utf-8", "replace"))
        self.pool.workerEnded(self, reason)
        self.ended.callback(None)


class WorkerPool(service.Service):
    """The parent of ``workers`` processes serving ``listeners``, a list of
    ``(option, description)`` (``--dh``, ``tcp:7777``...); ``argv`` is the
    keyx options the workers parse (without ``--workers``)."""

    log = Logger()

    def __init__(self, workers, listeners, argv, reactor=None, python=sys.executable,
                 throttle_path=""):
        self.workers = workers
        #: The SQLite file of the workers' guess throttle ("": they use the
        #: store their options name).
        self.throttle_path = throttle_path
        self.listeners = list(listeners)
        self.argv = list(argv)
        self.python = python
        self._reactor = reactor
        self.sockets = []
        self.processes = {}  # index -> _WorkerProcess
        self.started = {}  # index -> reactor time of the last start
        self.delays = {}  # index -> next restart delay
        self.pending = {}  # index -> IDelayedCall of a restart
        self.stopping = False

    @property
    def reactor(self):
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    def privilegedStartService(self):
        for _, description in self.listeners:
            self.sockets.append(bind(description))
        super().privilegedStartService()

    def addresses(self):
        """What each listener is bound to (a port 0 resolved): for the log and tests."""
        return [s.getsockname() for s, _ in self.sockets]

    def startService(self):
        super().startService()
        from twisted.internet import task

        self._watch = task.LoopingCall(self.watch)
        self._watch.clock = self.reactor
        self._watch.start(WATCH_EVERY, now=False)
        self.log.info("{count} workers serving {where}", count=self.workers,
                      where=", ".join(f"{option} {description}"
                                      for option, description in self.listeners))
        for index in range(1, self.workers + 1):
            self.spawn(index)

    def spawn(self, index):
        self.pending.pop(index, None)
        if self.stopping:
            return
        fds = {FIRST_FD + i: s.fileno() for i, (s, _) in enumerate(self.sockets)}
        spec = [[option, description, FIRST_FD + i, family]
                for i, ((option, description), (_, family))
                in enumerate(zip(self.listeners, self.sockets))]
        args = [self.python, "-m", "twisted_keyx.service.workerprocess", str(index), str(self.workers),
                json.dumps(spec), self.throttle_path, "--", *self.argv]
        child = _WorkerProcess(self, index)
        self.processes[index] = child
        self.started[index] = self.reactor.seconds()
        self.reactor.spawnProcess(child, self.python, args, env=os.environ.copy(),
                                  childFDs={0: "w", 1: "r", 2: "r", **fds})
        self.log.info("worker {index} started (pid {pid})", index=index, pid=child.transport.pid)

    def watch(self):
        """Ping every worker; one that left a ping unanswered for
        :data:`WATCH_TIMEOUT` seconds (stopped with SIGSTOP, its reactor
        stuck) is killed, which closes its connections (their clients see
        the connection end, not a hang), and started again as a worker that
        died is."""
        now = self.reactor.seconds()
        for index, child in list(self.processes.items()):
            if child.pinged is not None:
                if now - child.pinged >= WATCH_TIMEOUT:
                    self.log.warn("worker {index} has not answered for {seconds:.0f} s "
                                  "(stopped or stuck); killing it", index=index,
                                  seconds=now - child.pinged)
                    child.pinged = None
                    _signal(child, "KILL")
                continue
            child.pinged = now
            try:
                child.transport.writeToChild(0, b"ping\n")
            except Exception:  # its stdin is gone: it is ending
                pass

    def workerLine(self, index, fd, line):
        """A line from worker ``index``: its log (stdout: ``LEVEL text``) or
        what it printed to stderr."""
        level, text = LogLevel.error, line
        if fd == 1:
            name, _, rest = line.partition(" ")
            if line == PONG:
                child = self.processes.get(index)
                if child is not None:
                    child.pinged = None
                return
            if name in _LEVELS:
                level, text = _LEVELS[name], rest
        if not text.strip():
            return
        self.log.emit(level, "{text}", text=text, log_system=f"worker {index}")

    def workerEnded(self, child, reason):
        index = child.index
        if self.processes.get(index) is child:
            del self.processes[index]
        if self.stopping:
            return
        lived = self.reactor.seconds() - self.started.get(index, 0)
        delay = self.delays.get(index, RESTART_DELAY)
        if lived >= STABLE_SECONDS:
            delay = RESTART_DELAY
        self.delays[index] = min(delay * 2, MAX_RESTART_DELAY)
        self.log.warn("worker {index} exited ({why}) after {lived:.1f} s; "
                      "restarting it in {delay:g} s",
                      index=index, why=_describe_end(reason), lived=lived, delay=delay)
        self.pending[index] = self.reactor.callLater(delay, self.spawn, index)

    def stopService(self):
        super().stopService()
        self.stopping = True
        if getattr(self, "_watch", None) is not None and self._watch.running:
            self._watch.stop()
        for call in self.pending.values():
            call.cancel()
        self.pending.clear()
        waiting = []
        for child in list(self.processes.values()):
            waiting.append(child.ended)
            _signal(child, "TERM")
            kill = self.reactor.callLater(STOP_GRACE, _signal, child, "KILL")
            child.ended.addBoth(lambda result, kill=kill: kill.active() and kill.cancel())
        done = defer.DeferredList(waiting)
        done.addBoth(self._closeSockets)
        return done

    def _closeSockets(self, result=None):
        for (s, _), (_, description) in zip(self.sockets, self.listeners):
            s.close()
            path = unix_path(description)
            if path:
                try:
                    os.unlink(path)
                except OSError:
                    pass
        self.sockets = []
        self.log.info("all workers stopped")


def _signal(child, name):
    try:
        child.transport.signalProcess(name)
    except Exception:  # ProcessExitedAlready: it ended meanwhile
        pass


def _describe_end(reason):
    value = reason.value
    if getattr(value, "signal", None):
        return f"signal {value.signal}"
    return f"exit code {getattr(value, 'exitCode', None)}"
