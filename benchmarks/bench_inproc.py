"""Server CPU per DH handshake in process: ours, the naive server, and ours
without its layers, measured in turn in one process pinned to one core:
``python benchmarks/bench_inproc.py``.

Each server's side of ffdhe2048 handshakes runs as in
``bench_instructions.py`` (keyxbench.inproc: the real factories, no
sockets, one canned client, every line through twistd's text observer into
a log file): ``ours`` is the daemon's factory behind its connection policy,
``naive`` is ``peer_naive.py``'s protocol, ``flat`` is keyxbench.flat (our
checks, transcript, session key and line in the naive server's shape).
Batches of each alternate, so the machine's bursts fall on all alike; the
median of the batches is reported, and each server's over the naive one's.
With ``--sources 16384`` (the default) ours logs every handshake, as the
naive server always does; ``--sources 0``: all from 127.0.0.1, ours then
summarises its lines.  No network, no load generator: this is the servers'
own work per handshake, not the daemon's CPU under load
(``bench_daemon.py`` measures that).  About 15 seconds.  Results:
docs/benchmarks.rst.
"""

import argparse
import os
import statistics
import sys
import tempfile
import warnings

BENCHMARKS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(BENCHMARKS), BENCHMARKS]

from keyxbench import inproc, project  # noqa: E402

BASELINE = inproc.BASELINE


def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--servers", default="ours,naive,flat",
                   help="which of " + ", ".join(inproc.SERVERS) + " [ours,naive,flat]")
    p.add_argument("--sources", type=int, default=16384,
                   help="source addresses the connections come from in turn (0: all from "
                        "127.0.0.1) [16384]")
    p.add_argument("--batches", type=int, default=20, help="rounds of batches [20]")
    p.add_argument("--size", type=int, default=200, help="handshakes per batch [200]")
    p.add_argument("--core", type=int, default=0, help="the core to pin to (-1: none) [0]")
    p.add_argument("--group", default="ffdhe2048")
    return p


def build(servers, group_name, sources, directory):
    """name -> Handshakes, each warmed up."""
    messages = inproc.client_messages(project.named_group(group_name))
    runs = {name: inproc.Handshakes(inproc.factory(name, group_name, directory), messages, sources)
            for name in servers}
    for handshakes in runs.values():
        handshakes.run(inproc.WARMUP)
    return runs


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        servers = inproc.servers_argument(args.servers)
    except ValueError as e:
        sys.exit(str(e))
    if args.batches < 1 or args.size < 1 or args.sources < 0:
        sys.exit("--batches and --size take a positive number, --sources 0 or more")
    if args.core >= 0:
        try:
            os.sched_setaffinity(0, {args.core})
        except OSError as e:
            sys.exit(f"cannot pin to core {args.core}: {e}")
    # The naive server uses cryptography's deprecated FFDH, as in its own main().
    from cryptography.utils import CryptographyDeprecationWarning
    warnings.simplefilter("ignore", CryptographyDeprecationWarning)
    with tempfile.TemporaryDirectory(prefix="keyx-inproc-") as directory:
        inproc.start_logging(os.path.join(directory, "servers.log"))
        runs = build(servers, args.group, args.sources, directory)
        times = inproc.interleaved_cpu(runs, args.batches, args.size)
    where = f"from {args.sources} sources" if args.sources else "from one source"
    print(f"server CPU per handshake in process, {args.group}, {where}; "
          f"{args.batches} batches of {args.size} each, in turn"
          + (f", pinned to core {args.core}" if args.core >= 0 else ""))
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name in servers:
        print(f"  {name:6s} median {medians[name]:.3f} ms  "
              f"(batches {min(times[name]):.3f}-{max(times[name]):.3f})")
    for name in servers:
        if name != BASELINE:
            print(f"  {name} / {BASELINE}: {medians[name] / medians[BASELINE]:.3f}")


if __name__ == "__main__":
    main()
