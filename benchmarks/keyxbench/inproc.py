"""The server's side of DH handshakes in this process, without sockets or a
running reactor: what ``benchmarks/bench_instructions.py`` counts.

One canned client (a key made once, its three messages replayed) talks to
each new server protocol over a ``StringTransport``: the server does all of
its work (key checks, keygen, exchange, transcript, session key, its log
line), the client none.  The servers:

- ``ours``: the daemon's DH factory as ``twistd keyx --dh`` builds it
  (``tap.makeService``), behind its connection policy;
- ``naive``: ``benchmarks/peer_naive.py``'s protocol;
- ``flat``: ours without its layers (:mod:`keyxbench.flat`): the daemon's
  checks, transcript, session key and line in the naive server's shape.

Both log to ``log_path`` through twisted.logger's text observer into a
twisted ``LogFile``, as twistd does.  ``sources`` > 0 makes connections come
from that many addresses in turn (127.1.0.0 and up), so that ours logs every
handshake as the naive server does; 0: all from 127.0.0.1.

As a child, for valgrind::

    python benchmarks/keyxbench/inproc.py --server ours --count 300 --sources 16384
"""

import argparse
import itertools
import os
import sys
import tempfile
import warnings

if __name__ == "__main__":
    sys.path[:0] = [os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                    os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]

from cryptography.utils import CryptographyDeprecationWarning  # noqa: E402
from twisted.internet.address import IPv4Address  # noqa: E402
from twisted.internet.error import ConnectionDone  # noqa: E402
from twisted.internet.testing import StringTransport  # noqa: E402
from twisted.python.failure import Failure  # noqa: E402

from keyxbench import load, project  # noqa: E402

SERVERS = ("ours", "naive", "flat")
#: What the others are compared with.
BASELINE = "naive"
#: Handshakes run before counting starts (imports, caches, first calls).
WARMUP = 50


def client_messages(group):
    """The canned client's three messages for ``group``, Int32-framed."""
    key = group.public_key_pem(group.generate_private_key())
    m = project.messages
    return [len(payload).to_bytes(4, "big") + payload
            for payload in (m.HELLO, m.PARAMS_REQUEST, m.CLIENT_KEY_PREFIX + key)]


def ours_factory(group_name, clock, directory):
    """``twistd keyx --dh``'s factory, behind the daemon's connection policy;
    the daemon's files (its host key, OPAQUE key) in ``directory``."""
    from twisted.application.service import Service

    from twisted_keyx.service import tap

    factories = {}

    def listen(description, factory):
        factories[description] = factory
        return Service()

    here = os.getcwd()
    # Where the daemon makes its files, as twistd's cwd: a folder of this
    # process's own, since bench_instructions.py runs children side by side
    # and a daemon refuses a key file another process made while it started.
    os.chdir(tempfile.mkdtemp(dir=directory))
    try:
        options = tap.Options()
        options.parseOptions(["--dh", "tcp:7777", "--group", group_name])
        tap.makeService(options, reactor=clock, listen=listen).startService()
    finally:
        os.chdir(here)
    return factories["tcp:7777"]


def naive_factory(group_name, log):
    from twisted.internet.protocol import Factory

    import peer_naive

    group = project.named_group(group_name)
    return Factory.forProtocol(peer_naive.naive_protocol(project.parameters_message(group), log))


def flat_factory(group_name, log):
    from twisted.internet.protocol import Factory

    from keyxbench import flat

    return Factory.forProtocol(flat.flat_protocol(project.named_group(group_name), log))


def factory(server, group_name, directory):
    """The factory of ``server`` (one of :data:`SERVERS`); ours makes its
    key files in ``directory``."""
    from twisted.internet import reactor  # not run: the policy's clock
    from twisted.logger import Logger

    if server == "ours":
        return ours_factory(group_name, reactor, directory)
    if server == "flat":
        return flat_factory(group_name, Logger(namespace="flat"))
    return naive_factory(group_name, Logger(namespace="naive"))


def servers_argument(text):
    """The servers a ``--servers`` list names, in :data:`SERVERS`' order;
    ValueError unless it names :data:`BASELINE` and another, and nothing else."""
    named = text.split(",")
    servers = [server for server in SERVERS if server in named]
    if set(named) - set(SERVERS) or BASELINE not in servers or len(servers) < 2:
        raise ValueError(f"--servers takes {BASELINE} and one or more of "
                         f"{', '.join(s for s in SERVERS if s != BASELINE)}, comma-separated")
    return servers


class Handshakes:
    """Runs handshakes against ``factory``; :meth:`run` checks each one got
    message 6 (the server's key)."""

    def __init__(self, factory, messages, sources=0):
        self.factory = factory
        self.messages = messages
        self.hosts = (itertools.cycle(load.source_addresses(sources)) if sources
                      else itertools.repeat("127.0.0.1"))
        self.ports = itertools.cycle(range(1024, 65536))
        self.server = IPv4Address("TCP", "127.0.0.1", 7777)

    def one(self):
        peer = IPv4Address("TCP", next(self.hosts), next(self.ports))
        protocol = self.factory.buildProtocol(peer)
        transport = StringTransport(hostAddress=self.server, peerAddress=peer)
        protocol.makeConnection(transport)
        for message in self.messages:
            protocol.dataReceived(message)
        if project.messages.SERVER_KEY_PREFIX not in transport.value():
            raise RuntimeError(f"no server key; the server sent {transport.value()[-200:]!r}")
        protocol.connectionLost(Failure(ConnectionDone()))

    def run(self, count):
        for _ in range(count):
            self.one()


def interleaved_cpu(runs, batches, size):
    """CPU milliseconds per handshake of each of ``runs`` (name ->
    :class:`Handshakes`), measured in turn: ``batches`` rounds of ``size``
    handshakes each, this process's CPU time (``time.process_time``) around
    every batch, so that a busy moment of the machine falls on every server
    alike.  Returns name -> the list of per-batch means, in order."""
    import time

    times = {name: [] for name in runs}
    for _ in range(batches):
        for name, handshakes in runs.items():
            start = time.process_time()
            handshakes.run(size)
            times[name].append((time.process_time() - start) / size * 1000)
    return times


def start_logging(log_path):
    """twistd's observer: text lines into a ``LogFile`` (never rotated here)."""
    from twisted.logger import globalLogBeginner, textFileLogObserver
    from twisted.python.logfile import LogFile

    log_file = LogFile.fromFullPath(log_path, rotateLength=None)
    globalLogBeginner.beginLoggingTo([textFileLogObserver(log_file)], redirectStandardIO=False)


def main(argv=None):
    p = argparse.ArgumentParser(description="Server-side DH handshakes in process (for valgrind).")
    p.add_argument("--server", choices=SERVERS, required=True)
    p.add_argument("--count", type=int, required=True, help="handshakes after the warm-up")
    p.add_argument("--sources", type=int, default=0)
    p.add_argument("--group", default="ffdhe2048")
    p.add_argument("--log", required=True,
                   help="the log file; ours makes its key files beside it")
    args = p.parse_args(argv)
    # The naive server uses cryptography's deprecated FFDH, as in its own main().
    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
    start_logging(args.log)
    handshakes = Handshakes(factory(args.server, args.group,
                                    os.path.dirname(os.path.abspath(args.log))),
                            client_messages(project.named_group(args.group)), args.sources)
    handshakes.run(WARMUP + args.count)


if __name__ == "__main__":
    main()
