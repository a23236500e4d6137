"""``twistd keyx --workers N``: the same endpoints served from N processes.

The parent (the process twistd runs) binds every listening socket once --
``tcp:``, ``tcp6:``, ``ssl:`` and ``unix:`` endpoints -- and starts N
workers, ``python -m twisted_keyx.service.workerprocess``, each handed the listening
sockets as inherited file descriptors.  A worker parses the same ``keyx``
options, builds the same factories as a single-process daemon
(:func:`twisted_keyx.service.tap.makeService`) and adopts each socket
(``reactor.adoptStreamPort``; an ``ssl:`` socket gets the endpoint's own TLS
context through :class:`~twisted.protocols.tls.TLSMemoryBIOFactory`).  The
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
  shared.  Each worker keeps its own :class:`~twisted_keyx.service.throttle.GuessThrottle`
  and decides the pacing itself, on its own clock, without asking anyone;
  what the others must count -- a failed guess, a login, an answer slot
  taken ("held"), a refusal -- it writes to its stdout as a ``guess`` line
  (:func:`twisted_keyx.service.throttle.encode`) among its log lines.  The parent
  (:meth:`WorkerPool.guessLine`) counts each in the daemon's own throttle,
  which logs the failed guesses and the bursts once for the daemon (a
  failed guess as ``[worker N] Failed guess ...``), and writes it to every
  other worker's stdin, where the worker's throttle counts it as its own.
  A new or restarted worker gets the parent's counts first.  A line that is
  not a message is logged and dropped.  Only throttle events cross
  processes, none per ordinary handshake.  The race accepted: a message
  takes a pass through the parent's reactor to reach the others (well under
  a millisecond on an idle machine, more on a loaded one); guesses that
  reach two workers within that window are not yet counted against each
  other, so they may share one answer slot or both be answered free --
  at most N - 1 answers more than one process gives, per window.  A
  worker that does not read its stdin for a while gets its messages late
  (the parent keeps up to :data:`MAX_BACKLOG`, 1 MiB, beyond Twisted's
  64 KiB buffer); one that stops reading (stopped, stuck) past that gets
  its messages dropped and counted, and both ends of the gap are logged,
  so the parent's memory stays bounded; that worker's throttle then counts
  fewer guesses than the others' until it is restarted;
- the user file: each worker stats and re-reads it as one daemon does;
- stopping: SIGTERM or Ctrl-C to the parent stops every worker (SIGTERM to
  each; a worker that is still there after :data:`STOP_GRACE` seconds is
  killed).  A worker also gets SIGTERM from the kernel when the parent dies
  (``PR_SET_PDEATHSIG``), so none outlives it;
- a worker that exits while the daemon runs is logged and started again,
  after a delay that doubles (from :data:`RESTART_DELAY` up to
  :data:`MAX_RESTART_DELAY`) while workers keep dying within
  :data:`STABLE_SECONDS` of their start.
"""

import collections
import json
import math
import os
import socket
import stat
import sys

from twisted.application import service
from twisted.internet import defer, protocol
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger, LogLevel
from twisted.python import usage
from zope.interface import implementer

from twisted_keyx.service import endpointspec
from twisted_keyx.service import limits
from twisted_keyx.service import throttle

#: Seconds before the first restart of a worker that died.
RESTART_DELAY = 0.5
#: The longest delay between restarts of a worker that keeps dying.
MAX_RESTART_DELAY = 30.0
#: A worker that ran this long before it died is restarted after RESTART_DELAY again.
STABLE_SECONDS = 10.0
#: Seconds a worker has to stop after SIGTERM before it is killed.
STOP_GRACE = 10.0
#: listen() backlog of the sockets the parent binds (Twisted's default),
#: unless the endpoint gives ``backlog=``.
BACKLOG = 50

#: The first file descriptor a worker receives a listening socket on.
FIRST_FD = 3


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
    if endpointspec.parse(description).kind not in ("tcp", "tcp6", "ssl", "unix"):
        raise usage.UsageError(
            f"--workers: {description!r}: only tcp:, tcp6:, ssl: and unix: endpoints "
            "can be shared between workers")


def bind(description):
    """A listening socket for ``description`` (tcp, tcp6, ssl, unix), bound
    as Twisted would bind it; the socket and the address family."""
    spec = endpointspec.parse(description)
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
    return endpointspec.parse(description).path


#: The first word of a worker's stdout line that is a guess throttle message
#: (:func:`twisted_keyx.service.throttle.encode`) and not a log line.
GUESS = "guess"
#: The messages a worker may send; those the other workers get too.
FROM_WORKERS = ("failed", "succeeded", "refused", "held")
FORWARDED = ("failed", "succeeded", "held")

_LEVELS = {level.name: level for level in
           (LogLevel.debug, LogLevel.info, LogLevel.warn, LogLevel.error, LogLevel.critical)}


#: Bytes of guess messages the parent keeps for a worker beyond Twisted's
#: buffer (64 KiB) while that worker does not read: a burst is delivered
#: late, not lost; past this much, the worker is taken to be stuck.
MAX_BACKLOG = 1 << 20


@implementer(IPushProducer)
class _WorkerProcess(protocol.ProcessProtocol):
    """One worker, as the parent sees it: its lines go to the log; and the
    producer of what goes to its stdin (the other workers' guess throttle
    messages, :meth:`send`).  When Twisted's buffer for its stdin is full
    (64 KiB), Twisted pauses this producer, and its messages wait here, up
    to :data:`MAX_BACKLOG` bytes, until it reads again; past that (a worker
    stopped or stuck) they are dropped and counted, so that such a worker
    cannot grow the parent's memory, and both ends of the gap are logged."""

    def __init__(self, pool, index):
        self.pool = pool
        self.index = index
        self.buffers = {1: b"", 2: b""}
        self.ended = defer.Deferred()
        #: The worker's stdin takes more (Twisted has not paused us).
        self.reading = True
        #: What waits for it to read again, and its size in bytes.
        self.backlog = collections.deque()
        self.backlog_bytes = 0
        #: Messages dropped since the backlog filled.
        self.dropped = 0
        #: Bytes handed to its stdin.
        self.sent = 0
        #: Its stdin is closed for good.
        self.gone = False

    def send(self, line):
        """Write one line to the worker's stdin, or keep it while the
        worker does not read (dropped once :data:`MAX_BACKLOG` is kept)."""
        if self.gone:
            return  # its stdin is closed: it is ending, and will be restarted
        data = line.encode("ascii", "replace") + b"\n"
        if not self.reading or self.backlog:
            if self.backlog_bytes + len(data) <= MAX_BACKLOG:
                self.backlog.append(data)
                self.backlog_bytes += len(data)
                return
            if not self.dropped:
                self.pool.log.warn("worker {index} is not reading its standard input: "
                                   "guess throttle messages for it are dropped until it does",
                                   index=self.index)
            self.dropped += 1
            return
        self._write(data)

    def _write(self, data):
        try:
            self.transport.writeToChild(0, data)
        except Exception:  # the pipe is gone: the worker is ending
            return
        self.sent += len(data)

    def pauseProducing(self):
        self.reading = False

    def resumeProducing(self):
        self.reading = True
        while self.backlog and self.reading and not self.gone:
            data = self.backlog.popleft()
            self.backlog_bytes -= len(data)
            self._write(data)
        if self.dropped:
            self.pool.log.warn("worker {index} reads its standard input again; "
                               "{count} guess throttle messages for it were dropped",
                               index=self.index, count=self.dropped)
            self.dropped = 0

    def stopProducing(self):
        """Its stdin is closed (the worker is ending)."""
        self.reading = False
        self.gone = True
        self.backlog.clear()
        self.backlog_bytes = 0

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
        if self.dropped:
            self.pool.log.warn("worker {index} ended; {count} guess throttle messages "
                               "for it had been dropped", index=self.index, count=self.dropped)
            self.dropped = 0
        self.pool.workerEnded(self, reason)
        self.ended.callback(None)


class WorkerPool(service.Service):
    """The parent of ``workers`` processes serving ``listeners``, a list of
    ``(option, description)`` (``--dh``, ``tcp:7777``...); ``argv`` is the
    keyx options the workers parse (without ``--workers``)."""

    log = Logger()

    def __init__(self, workers, listeners, argv, reactor=None, python=sys.executable,
                 guesses=None):
        self.workers = workers
        #: The daemon's guess throttle (:class:`~twisted_keyx.service.throttle.GuessThrottle`,
        #: without ``share``): fed every worker's messages, it logs the
        #: failed guesses and the bursts once.
        self.guesses = guesses
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
                json.dumps(spec), "--", *self.argv]
        child = _WorkerProcess(self, index)
        self.processes[index] = child
        self.started[index] = self.reactor.seconds()
        self.reactor.spawnProcess(child, self.python, args, env=os.environ.copy(),
                                  childFDs={0: "w", 1: "r", 2: "r", **fds})
        self.log.info("worker {index} started (pid {pid})", index=index, pid=child.transport.pid)
        if self.guesses is not None:  # what the others counted so far
            for message in self.guesses.state():
                child.send(throttle.encode(message))
        # Only now: all of that state goes out (it is bounded by the
        # throttle's MAX_ENTRIES), however far past Twisted's buffer, even
        # though the new worker has not had the time to read any of it.
        child.transport.registerProducer(child, True)

    def workerLine(self, index, fd, line):
        """A line from worker ``index``: its log (stdout: ``LEVEL text``) or
        what it printed to stderr."""
        level, text = LogLevel.error, line
        if fd == 1:
            name, _, rest = line.partition(" ")
            if name in _LEVELS:
                level, text = _LEVELS[name], rest
            elif name == GUESS:
                self.guessLine(index, rest)
                return
        if not text.strip():
            return
        self.log.emit(level, "{text}", text=text, log_system=f"worker {index}")

    def guessLine(self, index, text):
        """A guess throttle message from worker ``index``: counted by the
        daemon's throttle (which logs it) and passed on to the other
        workers; a line that is not one is logged and dropped."""
        try:
            message = throttle.decode(text)
            if message[0] not in FROM_WORKERS:
                raise throttle.BadMessage(f"{message[0]} is not a worker's message")
        except throttle.BadMessage as e:
            self.log.warn("worker {index} sent a bad guess throttle message ({why}): {line}",
                          index=index, why=e, line=repr(text[:200]), log_system=f"worker {index}")
            return
        if self.guesses is not None:
            self.guesses.apply(message, system=f"worker {index}")
        if message[0] in FORWARDED:
            for other, child in self.processes.items():
                if other != index:
                    child.send(text)

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
