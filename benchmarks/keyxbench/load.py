"""The load generator: ``python -m keyxbench.load --client KIND --port N``.

Runs ``--concurrency`` clients against 127.0.0.1:PORT, each doing handshakes
back to back, for ``--warmup`` unmeasured then ``--seconds`` measured
seconds.  It prints JSON lines on stdout: ``{"phase": "measuring"}`` and
``{"phase": "stopped"}`` as the measured window opens and closes, then the
result (handshakes, handshakes/s, p50/p99/mean latency in ms, failures by
kind, its own CPU seconds).

:func:`drive` is the other end: it starts the load generator on the load
core and reads the server's CPU time exactly when the window opens and
closes, so the server's CPU per handshake covers the measured handshakes
only.
"""

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import time

from keyxbench import process


def percentile(sorted_values, fraction):
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * fraction))]


def summary(recorder, elapsed, cpu_seconds):
    """The result line of a run, from what its :class:`Recorder` counted."""
    latencies = sorted(recorder.latencies)

    def ms(value):
        return None if value is None else 1e3 * value

    return {
        "handshakes": len(latencies),
        "elapsed": elapsed,
        "per_second": len(latencies) / elapsed if elapsed else 0.0,
        "p50_ms": ms(percentile(latencies, 0.50)),
        "p99_ms": ms(percentile(latencies, 0.99)),
        "mean_ms": ms(statistics.fmean(latencies)) if latencies else None,
        "failures": recorder.failures,
        "failure_kinds": recorder.failure_kinds,
        "checked": recorder.checked,
        "load_cpu_s": cpu_seconds,
    }


def source_addresses(count):
    """``count`` loopback addresses, 127.1.0.0 and up (all of 127/8 is local)."""
    if not 0 < count <= 1 << 16:
        raise ValueError(f"between 1 and 65536 sources, not {count}")
    return [f"127.1.{i >> 8}.{i & 255}" for i in range(count)]


def ports_argument(text):
    """``--port``: one port, or several comma-separated."""
    try:
        ports = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port or a comma-separated list of ports: {text!r}")
    if not all(0 < port < 65536 for port in ports):
        raise argparse.ArgumentTypeError(f"a port is out of range: {text!r}")
    return ports


def parser():
    p = argparse.ArgumentParser(prog="python -m keyxbench.load", description=__doc__.split("\n\n")[0])
    p.add_argument("--client", required=True, help="dh-framed, dh-raw, eke, opaque or tls")
    p.add_argument("--port", type=ports_argument, required=True,
                   help="the server's port; or ports, comma-separated: client i uses the "
                        "(i mod n)th, for n servers that share the load")
    p.add_argument("--group", default="ffdhe2048")
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--tls-ca", metavar="PEM", help="the TLS server's certificate, to verify it")
    p.add_argument("--tls-groups", metavar="LIST",
                   help="client tls-pyopenssl: the only TLS groups offered (X25519MLKEM768)")
    p.add_argument("--sources", type=int, default=0, metavar="N",
                   help="connect from N loopback addresses in turn (127.1.0.0 and up), so "
                        "that the server sees N sources [default: 0, from 127.0.0.1 only]")
    p.add_argument("--opaque-prestart", type=int, metavar="N",
                   help="OPAQUE logins to start before the clock (keyxbench.clients.OpaquePool); "
                        "more are started on the spot and counted "
                        f"[default: {OPAQUE_RATE} per second of warm-up and run, plus one second]")
    return p


#: The most OPAQUE logins a second the load generator can finish on its
#: core (about 1 ms of its CPU each), so the most it needs started.
OPAQUE_RATE = 1000


def opaque_prestart(args):
    """How many OPAQUE logins to start before the clock (0 for other clients)."""
    if args.client != "opaque":
        return 0
    if args.opaque_prestart is not None:
        return args.opaque_prestart
    return int(OPAQUE_RATE * (args.warmup + args.seconds + 1))


def main(argv=None):
    args = parser().parse_args(argv)
    process.raise_fd_limit()
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor

    from keyxbench.clients import HandshakeFactory, Recorder, Settings

    settings = Settings(args.group, tls_ca=args.tls_ca, tls_groups=args.tls_groups,
                        eke=args.client == "eke",
                        opaque_logins=opaque_prestart(args))
    recorder = Recorder()
    window = {}

    def say(message):
        print(json.dumps(message), flush=True)

    def start_measuring():
        recorder.measuring = True
        window["started"] = time.perf_counter()
        say({"phase": "measuring"})

    def stop():
        recorder.measuring = False
        recorder.stopping = True
        window["elapsed"] = time.perf_counter() - window["started"]
        say({"phase": "stopped"})
        reactor.callLater(1.0, reactor.stop)  # let the handshakes under way end

    sources = itertools.cycle(source_addresses(args.sources)) if args.sources else None
    for i in range(args.concurrency):
        port = args.port[i % len(args.port)]
        HandshakeFactory(reactor, port, args.client, settings, recorder, sources).next()
    reactor.callLater(args.warmup, start_measuring)
    reactor.callLater(args.warmup + args.seconds, stop)
    cpu = time.process_time()
    reactor.run()
    result = summary(recorder, window["elapsed"], time.process_time() - cpu)
    if settings.opaque_pool is not None:
        result["opaque_prestarted"] = settings.opaque_pool.size
        result["opaque_started_live"] = settings.opaque_pool.live
    say(result)


def drive(server, client, port, group="ffdhe2048", concurrency=50, seconds=20.0, warmup=2.0,
          tls_ca=None, on_phase=None, sources=0, tls_groups=None):
    """Run the load generator against ``server`` (a
    :class:`~keyxbench.process.ServerProcess`) and return its result, with
    the server's CPU over the measured window added.  ``on_phase("measuring")``
    and ``on_phase("stopped")`` are called as the window opens and closes."""
    if isinstance(port, (list, tuple)):
        port = ",".join(map(str, port))
    command = process.python_module(
        "keyxbench.load", "--client", client, "--port", port, "--group", group,
        "--concurrency", concurrency, "--seconds", seconds, "--warmup", warmup,
        *(["--tls-ca", tls_ca] if tls_ca else []),
        *(["--tls-groups", tls_groups] if tls_groups else []),
        *(["--sources", sources] if sources else []),
        core=process.LOAD_CORE)
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=process.environment())
    cpu, parent, result = {}, {}, None
    for line in child.stdout:
        message = json.loads(line)
        if message.get("phase") in ("measuring", "stopped"):
            cpu[message["phase"]] = server.cpu_seconds()
            parent[message["phase"]] = server.own_cpu_seconds()
            if on_phase is not None:
                on_phase(message["phase"])
        else:
            result = message
    if child.wait() != 0 or result is None:
        raise SystemExit(f"the load generator failed ({child.returncode}): {command}")
    result["server_cpu_s"] = cpu["stopped"] - cpu["measuring"]
    result["server_cpu_ms"] = 1e3 * result["server_cpu_s"] / max(result["handshakes"], 1)
    result["server_busy"] = result["server_cpu_s"] / result["elapsed"]
    # The server's own process alone (with --workers: the parent's share).
    result["parent_cpu_ms"] = (1e3 * (parent["stopped"] - parent["measuring"])
                               / max(result["handshakes"], 1))
    return result


if __name__ == "__main__":
    sys.exit(main())
