"""One worker of ``twistd keyx --workers N``: ``python -m twisted_keyx.service.workerprocess
INDEX COUNT SPEC THROTTLE -- KEYX-OPTIONS``, started by
:class:`twisted_keyx.service.workers.WorkerPool`.

SPEC is JSON: ``[[option, description, fd, family], ...]``, the listening
sockets the parent bound, inherited on those file descriptors.  The worker
parses the keyx options as ``twistd keyx`` does, divides the connection
limits by COUNT (:func:`twisted_keyx.service.workers.worker_limits`), adopts each
socket, and writes its log to stdout, one ``LEVEL text`` line per event
(written together every :data:`LOG_FLUSH_DELAY` seconds), for the parent to
log as ``[worker INDEX]``.  THROTTLE is the SQLite file of the guess
throttle the workers share ("" : the store the options name).  See docs in
:mod:`twisted_keyx.service.workers`.
"""

import ctypes
import dataclasses
import json
import os
import signal
import socket
import stat
import sys
import threading
import traceback

from twisted.application import service
from twisted.logger import formatEvent, globalLogBeginner

from twisted_keyx.core.twistedshim import server_tls_context_factory, share_listening_port
from twisted_keyx.service import endpointspec, proxied
from twisted_keyx.service import workers

#: prctl(2) option: the signal this process gets when its parent dies.
PR_SET_PDEATHSIG = 1


class AdoptedPort(service.Service):
    """Serve ``factory`` on the listening socket ``fd`` (inherited), with
    TLS for an ``ssl:`` description and the PROXY header read for a
    ``haproxy:`` one."""

    def __init__(self, reactor, description, fd, family, factory):
        self.reactor = reactor
        self.description = description
        self.fd = fd
        self.family = family
        self.factory = factory
        self.port = None

    def startService(self):
        super().startService()
        factory = self.factory
        description = proxied.inner(self.description)
        if proxied.is_proxied(self.description):
            # Behind HAProxy: the PROXY header read first, the daemon's
            # protocol built for the client's address (as tap's listen does).
            factory = proxied.ProxiedFactory(factory, self.reactor)
        if endpointspec.parse(description).kind == "ssl":
            from twisted.internet import endpoints
            from twisted.protocols.tls import TLSMemoryBIOFactory

            # As Twisted's haproxy:ssl:, the header inside TLS.
            endpoint = endpoints.serverFromString(self.reactor, description)
            factory = TLSMemoryBIOFactory(server_tls_context_factory(endpoint), False, factory)
        self.port = self.reactor.adoptStreamPort(self.fd, self.family, factory)
        os.close(self.fd)  # adoptStreamPort listens on a duplicate
        # The socket is shared: closing this worker's copy must not shut it
        # down for the others (Twisted's Port calls shutdown() first), and
        # the unix socket's path is the parent's to remove.
        share_listening_port(self.port, unix=self.family == socket.AF_UNIX)

    def stopService(self):
        super().stopService()
        if self.port is not None:
            return self.port.stopListening()


#: Seconds a worker keeps its log lines before it writes them to the parent,
#: all in one write: the parent wakes up once for them, not once a line.
LOG_FLUSH_DELAY = 0.1
#: A worker writes its log lines at once when they are this many bytes.
LOG_FLUSH_BYTES = 32768


class _ToParent:
    """What a worker writes to the parent on ``fd`` (its stdout): its log
    events, one ``LEVEL text`` line each, kept up to :data:`LOG_FLUSH_DELAY`
    seconds (or :data:`LOG_FLUSH_BYTES`) and written together, and the
    lines :meth:`send` writes at once after the lines before them.
    ``clock``: the reactor (None: every line written at once)."""

    def __init__(self, fd, clock=None):
        self.fd = fd
        self.clock = clock
        self.pending = []
        self.size = 0
        self.timer = None
        self.thread = threading.get_ident()

    def observe(self, event):
        text = formatEvent(event)
        failure = event.get("log_failure")
        if failure is not None:
            text += "\n" + failure.getTraceback()
        level = event.get("log_level")
        name = level.name if level is not None else "info"
        for line in text.splitlines() or [""]:
            self.pending.append(f"{name} {line}\n")
            self.size += len(line)
        if (self.clock is None or self.size >= LOG_FLUSH_BYTES
                or threading.get_ident() != self.thread):
            self.flush()
        elif self.timer is None:
            self.timer = self.clock.callLater(LOG_FLUSH_DELAY, self.flush)

    def send(self, line):
        """``line`` now, after the log lines before it."""
        self.pending.append(line + "\n")
        self.flush()

    def flush(self):
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        if not self.pending:
            return
        data = "".join(self.pending).encode("utf-8", "surrogateescape")
        self.pending, self.size = [], 0
        while data:
            try:
                data = data[os.write(self.fd, data):]
            except InterruptedError:
                continue
            except OSError:  # the parent is gone; its death signal stops this process
                return


class _Pings:
    """Answers the parent's pings (``ping`` lines on stdin) with ``pong`` on
    stdout, from the reactor: a worker whose reactor is stuck or stopped
    does not answer, and is replaced (:meth:`twisted_keyx.service.workers.WorkerPool.watch`)."""

    def __init__(self, to_parent):
        self.to_parent = to_parent
        self.buffer = b""

    def childDataReceived(self, name, data):
        *lines, self.buffer = (self.buffer + data).split(b"\n")
        self.buffer = self.buffer[-64:]
        for line in lines:
            if line == b"ping":
                self.to_parent.send(workers.PONG)

    def childConnectionLost(self, name, reason):
        pass  # the parent is gone; its death signal stops this process


def _die_with_parent():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # not Linux: the parent's SIGTERM still stops it


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    _index, count, spec = int(argv[0]), int(argv[1]), json.loads(argv[2])  # the index: for ps
    throttle_path = argv[3]
    keyx_argv = argv[5:] if argv[4:5] == ["--"] else argv[4:]
    parent = os.getppid()
    _die_with_parent()
    if os.getppid() != parent:  # the parent died before prctl
        return 1

    from twisted.internet import epollreactor

    try:
        epollreactor.install()
    except Exception:
        pass  # a reactor is installed already
    from twisted.internet import reactor

    from twisted.internet import process

    from twisted_keyx.service import tap

    to_parent = _ToParent(sys.stdout.fileno(), reactor)
    globalLogBeginner.beginLoggingTo([to_parent.observe], redirectStandardIO=False)
    options = tap.Options()
    options.parseOptions(keyx_argv)
    # The guess throttle's state is shared with the other workers through
    # the parent's SQLite file (twisted_keyx.service.workers).
    options.config = dataclasses.replace(
        options.config, limits=workers.worker_limits(options.config.limits, count),
        throttle_path=throttle_path)
    # Two options may give the same description (tcp:0 for --eke and
    # --opaque): each gets its own socket, in the order makeService asks.
    adopted = {}
    for _, description, fd, family in spec:
        adopted.setdefault(description, []).append((fd, family))

    def listen(description, factory):
        fd, family = adopted[endpointspec.parse(description).private()].pop(0)
        return AdoptedPort(reactor, description, fd, family, factory)

    top = tap.makeService(options, reactor=reactor, listen=listen)
    if stat.S_ISFIFO(os.fstat(0).st_mode):  # the parent's pipe (not a test's terminal)
        process.ProcessReader(reactor, _Pings(to_parent), "stdin", 0)
    # The parent bound the sockets: no privileged start (it would test that
    # the ports are free, and they are not).
    reactor.callWhenRunning(top.startService)
    reactor.addSystemEventTrigger("before", "shutdown", top.stopService)
    try:
        reactor.run()
    finally:
        to_parent.flush()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        sys.exit(1)
