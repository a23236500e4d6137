"""Benchmark the daemon against its peers: ``python benchmarks/bench_daemon.py``.

What it does, in one run (each piece is a module of benchmarks/keyxbench/):

1. The floors, in this process on the server core: cryptography's own work
   for the server's side of one DH handshake (the floor), the same through
   the project's group (with its checks), and for EKE and OPAQUE the
   server's side of one login (its machine) and the chat's quit, with
   OPAQUE's crypto alone beside it (keyxbench.floor).
2. For each mode (keyxbench.modes): starts the server as its own process on
   core 0 (``twistd -n keyx`` with this checkout on PYTHONPATH, or a peer:
   ``benchmarks/peer_naive.py``, ``benchmarks/peer_tls.py``, or the
   canned-reply server, first, for the framework-only ceiling), and drives it
   from a load generator on core 1 (keyxbench.load): N clients running
   handshakes back to back for T seconds, as a real client does.  Reported:
   handshakes/s, p50/p99 latency, failures, and the server's CPU per
   handshake over the measured window, read from /proc (keyxbench.process):
   on a shared machine that is the number to compare.
3. The ratios between ours, the peers and the floor (keyxbench.modes.RATIOS).
4. The stall test: S connections held mid-handshake; what they cost the
   daemon in RSS, and a fresh handshake timed meanwhile (keyxbench.stall).

Not a test: it prints numbers.  Recorded results: docs/benchmarks.rst.
``--help`` lists the knobs.
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time

BENCHMARKS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(BENCHMARKS), BENCHMARKS]

from keyxbench import floor, load, modes, process, project, stall  # noqa: E402
from keyxbench.process import mb  # noqa: E402

#: Options of ``twistd keyx`` for the throughput runs: no connection limits
#: (the load is 50 clients on one address).
THROUGHPUT_OPTIONS = ("--max-per-ip", "0", "--max-connections", "0")


def summarised_finished(log):
    """Handshakes the daemon counted in its per-source summaries instead of
    logging a line each (twisted_keyx.service.limits.PeerLines: after the first
    lines of a burst from one source)."""
    return sum(int(n) for n in re.findall(r"not logged over [0-9.]+ s \([^)]*?(\d+) finished", log))


def versions():
    import cryptography
    import twisted

    return (f"Python {platform.python_version()}, Twisted {twisted.__version__}, "
            f"cryptography {cryptography.__version__}")


def start_py_spy(pid, output, seconds):
    """Sample ``pid`` with py-spy for ``seconds`` (on the load core), into
    ``output`` (a flame graph for .svg, collapsed stacks otherwise)."""
    fmt = "flamegraph" if output.endswith(".svg") else "raw"
    command = process.pin_prefix(process.LOAD_CORE) + [
        "py-spy", "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))),
        "--rate", "250", "--nonblocking", "--format", fmt, "--output", output]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_mode(name, args, profile_to=None):
    mode = modes.MODES[name]
    group = mode.group or args.group
    run_options = THROUGHPUT_OPTIONS if mode.server.is_ours else ()
    running = mode.server.start(group, run_options, profile=args.profile)
    server = running.server
    spy = []

    def on_phase(phase):
        if phase == "measuring" and profile_to:
            spy.append(start_py_spy(server.pid, profile_to, args.seconds))

    try:
        rss_before = server.rss()
        result = load.drive(server, mode.client, server.port, group=group,
                            concurrency=args.concurrency, seconds=args.seconds,
                            warmup=args.warmup, on_phase=on_phase, **running.client_options,
                            **mode.load_options)
        result.update(rss_before=rss_before, rss_after=server.rss(), rss_peak=server.peak_rss())
    finally:
        log, last_line = running.stop()
        for p in spy:
            p.wait(30)
    result.update(mode=name, group=group, label=mode.label.format(group=group), ours=mode.server.is_ours,
                  log_tracebacks=log.count("Traceback"),
                  log_finished=log.count("finished (") + log.count("authenticated;"),
                  log_summarised=summarised_finished(log))
    if last_line.startswith("{"):
        result["server_report"] = json.loads(last_line)
    return result


def floor_key(floors, group, what="floor"):
    """Where ``floors`` keeps ``what`` for ``group``: "floor" for the run's
    group, "floor:x25519" for another."""
    return what if group == floors["group"] else f"{what}:{group}"


#: The password handshakes' floors: (key in the floors, what it is), by mode.
LOGIN_FLOORS = {
    "eke": (("floor:eke", "EKE login, server machine + quit"),),
    "opaque": (("floor:opaque", "OPAQUE login, server machine + quit"),
               ("crypto:opaque", "OPAQUE crypto only (ServerLogin, chat keys, quit)")),
}


def measure_floors(group, others=(), eke=False, opaque=False, seconds=3.0):
    """The floors, measured in this process on the server core: for the
    run's ``group`` and for the ``others`` some modes fix; for EKE and
    OPAQUE if asked."""
    process.pin_self(process.SERVER_CORE)
    floors = {"group": group}
    for g in dict.fromkeys([group, *others]):  # each group once, in order
        floors[floor_key(floors, g)] = floor.cryptography_floor(g, seconds)
        floors[floor_key(floors, g, "group_crypto")] = floor.group_crypto(g, seconds)
        print(f"floor ({g}, cryptography's own work per server handshake: load the key, "
              f"keygen, serialise, exchange): {1e3 * floors[floor_key(floors, g)]:.3f} ms "
              f"= {1 / floors[floor_key(floors, g)]:.0f} handshakes/s", flush=True)
        print(f"  the same through the project's group (its key checks included): "
              f"{1e3 * floors[floor_key(floors, g, 'group_crypto')]:.3f} ms", flush=True)
    measure = {"floor:eke": floor.eke_floor, "floor:opaque": floor.opaque_floor,
               "crypto:opaque": floor.opaque_crypto}
    for mode, wanted in (("eke", eke), ("opaque", opaque)):
        for key, text in LOGIN_FLOORS[mode] if wanted else ():
            floors[key] = measure[key](seconds)
            print(f"{'  ' if key.startswith('crypto') else 'floor '}({text}): "
                  f"{1e3 * floors[key]:.3f} ms", flush=True)
    process.pin_self(None)
    return floors


def median_round(rounds):
    """One (floors, results) from several rounds: each floor's median, and
    for each mode the round whose server CPU per handshake is the median."""
    def middle(values):
        return sorted(values)[(len(values) - 1) // 2]

    floors = dict(rounds[0][0])
    for key in floors:
        if key != "group":
            floors[key] = middle([f[key] for f, _ in rounds])
    results = {}
    for name in rounds[0][1]:
        runs = [r[name] for _, r in rounds]
        cpu = middle([r["server_cpu_ms"] for r in runs])
        results[name] = next(r for r in runs if r["server_cpu_ms"] == cpu)
    return floors, results


def show(r, floors, canned=None):
    """Print one mode's result; ``canned`` is the round's results so far
    (the canned-reply servers' among them)."""
    kinds = f" {r['failure_kinds']}" if r["failure_kinds"] else ""
    p50 = "-" if r["p50_ms"] is None else f"{r['p50_ms']:.1f}"
    p99 = "-" if r["p99_ms"] is None else f"{r['p99_ms']:.1f}"
    print(f"{r['label']}: {r['per_second']:.0f} handshakes/s, p50 {p50} ms, p99 {p99} ms, "
          f"failures {r['failures']}{kinds}")
    print(f"  server CPU {r['server_cpu_ms']:.3f} ms per handshake "
          f"(server {100 * r['server_busy']:.0f}% busy; load generator CPU "
          f"{r['load_cpu_s']:.1f} s); server RSS {mb(r['rss_before'])} -> {mb(r['rss_after'])} "
          f"(peak {mb(r['rss_peak'])})", end="")
    if r["ours"]:
        print(f"; handshakes logged {r['log_finished']} (+{r.get('log_summarised', 0)} counted in "
              f"per-source summaries); tracebacks in log: {r['log_tracebacks']}", end="")
    if (modes.MODES[r["mode"]].server.is_ours and (modes.MODES[r["mode"]].server.workers or 1) > 1
            and "parent_cpu_ms" in r):
        print(f"; of the CPU per handshake, the parent's {r['parent_cpu_ms']:.3f} ms", end="")
    if "server_report" in r:
        print(f"; server says {r['server_report']}", end="")
    print(flush=True)
    mode = r["mode"]
    mode_floor = floors[floor_key(floors, r["group"])]
    if mode == "canned":
        best = mode_floor / (mode_floor + r["server_cpu_ms"] / 1e3)
        print(f"  so on this stack floor / CPU can be at most about {best:.3f}", flush=True)
    elif modes.MODES[mode].client.startswith("dh-"):
        print(f"  floor / CPU = {1e3 * mode_floor / r['server_cpu_ms']:.3f}", flush=True)
    elif mode in LOGIN_FLOORS and f"floor:{mode}" in floors:
        login_floor = 1e3 * floors[f"floor:{mode}"]
        print(f"  CPU / floor:{mode} = {r['server_cpu_ms'] / login_floor:.3f} (target <= 1.5)",
              flush=True)
        same_io = (canned or {}).get(f"canned-{mode}")
        if same_io is not None:
            best = (login_floor + same_io["server_cpu_ms"]) / login_floor
            print(f"  (floor:{mode} + canned-{mode}) / floor:{mode} = {best:.3f}: the best "
                  f"this stack can do with {mode}'s I/O", flush=True)
    if "opaque_started_live" in r:
        print(f"  OPAQUE logins started before the clock: {r['opaque_prestarted']}, "
              f"on the spot: {r['opaque_started_live']}", flush=True)


def table(results, floors):
    """The results as a reStructuredText table (for docs/benchmarks.rst)."""
    rows = [("server", "handshakes/s", "p50 ms", "p99 ms", "failures", "CPU ms/hs")]
    logins = {key: text for texts in LOGIN_FLOORS.values() for key, text in texts}
    for key, value in floors.items():
        what, _, group = key.partition(":")
        group = group or floors["group"]
        if key in logins:
            rows.append((f"{'floor: ' if what == 'floor' else ''}{logins[key]} (in process)",
                         "-", "-", "-", "-", f"{1e3 * value:.3f}"))
        elif what == "floor":
            rows.append((f"floor: cryptography's own work, {group}", "-", "-", "-", "-",
                         f"{1e3 * value:.3f}"))
        elif what == "group_crypto":
            rows.append((f"project group ops, {group} (in process)", "-", "-", "-", "-",
                         f"{1e3 * value:.3f}"))
    for name, r in results.items():
        rows.append((r["label"], f"{r['per_second']:.0f}",
                     "-" if r["p50_ms"] is None else f"{r['p50_ms']:.0f}",
                     "-" if r["p99_ms"] is None else f"{r['p99_ms']:.0f}",
                     str(r["failures"]), f"{r['server_cpu_ms']:.3f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    rule = "  ".join("=" * w for w in widths)
    lines = [rule, "  ".join(c.ljust(w) for c, w in zip(rows[0], widths)), rule]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows[1:]]
    return "\n".join(lines + [rule])


def ratios(results, floors):
    cpu = {name: r["server_cpu_ms"] / 1e3 for name, r in results.items() if r["handshakes"]}
    cpu.update((key, value) for key, value in floors.items() if key.startswith("floor"))
    out = []
    for text, top, bottom in modes.RATIOS:
        if top in cpu and bottom in cpu:
            out.append((text, cpu[top] / cpu[bottom]))
    return out


def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--group", default="ffdhe2048",
                   help="group of the DH runs [default: ffdhe2048]")
    p.add_argument("--concurrency", type=int, default=50,
                   help="clients running handshakes back to back [default: 50]")
    p.add_argument("--seconds", type=float, default=20.0,
                   help="measured seconds per mode [default: 20]")
    p.add_argument("--warmup", type=float, default=2.0,
                   help="unmeasured seconds before each run [default: 2]")
    p.add_argument("--stall", type=int, default=10000,
                   help="connections to hold mid-handshake (0: skip) [default: 10000]")
    p.add_argument("--settle", type=float, default=2.0, help=argparse.SUPPRESS)
    p.add_argument("--modes", default=",".join(modes.DEFAULT_MODES),
                   help="what to drive, comma-separated, after the canned-reply server: "
                        f"{', '.join(n for n in modes.MODES if n != 'canned')} "
                        f"[default: {','.join(modes.DEFAULT_MODES)}]")
    p.add_argument("--profile", metavar="FILE",
                   help="run the daemon under cProfile, stats saved to FILE")
    p.add_argument("--py-spy", metavar="FILE", dest="py_spy",
                   help="sample the server with py-spy over the measured window: a flame graph "
                        "if FILE ends in .svg, else collapsed stacks, summed up by "
                        "'python -m keyxbench.spy' (needs py-spy, and the right to trace: root "
                        "or ptrace_scope 0)")
    p.add_argument("--py-spy-modes", metavar="MODES", default="dh",
                   help="the modes to sample; with more than one, each writes FILE with -MODE "
                        "before its extension [default: dh]")
    p.add_argument("--rounds", type=int, default=1,
                   help="measure every mode this many times, interleaved, and report each "
                        "mode's median (the lower middle one for an even N; a shared machine drifts) "
                        "[default: 1]")
    p.add_argument("--json", metavar="FILE", help="also write every result to FILE as JSON")
    return p


def main():
    args = parser().parse_args()
    names = [m for m in args.modes.split(",") if m]
    unknown = [m for m in names if m not in modes.MODES]
    if unknown:
        parser().error(f"unknown mode(s) {', '.join(unknown)}; known: {', '.join(modes.MODES)}")
    if "canned" not in names:
        names.insert(0, "canned")
    for login in ("opaque", "eke"):
        # The same I/O with canned replies, for the login's best possible ratio.
        if login in names and f"canned-{login}" not in names:
            names.insert(1, f"canned-{login}")
    for name in list(names):
        group = modes.MODES[name].group
        if group:
            try:
                project.named_group(group)
            except ValueError as e:
                print(f"skipping mode {name}: this checkout has no group {group} ({e})")
                names.remove(name)
    process.raise_fd_limit()
    print(f"twisted-keyx benchmark: {time.strftime('%Y-%m-%d %H:%M %Z')}, {os.cpu_count()} cores, "
          f"{versions()}; pinning: "
          f"{'server core 0, load core 1' if process.can_pin() else 'none'}", flush=True)

    rounds = []  # per round: (floors, {mode: result})
    spied = [m for m in args.py_spy_modes.split(",") if m in names] if args.py_spy else []
    for number in range(1, args.rounds + 1):
        if args.rounds > 1:
            print(f"-- round {number} of {args.rounds}", flush=True)
        # Quick runs get quick floors (3 s each by default).
        floors = measure_floors(args.group, [modes.MODES[n].group for n in names if modes.MODES[n].group],
                                eke="eke" in names, opaque="opaque" in names,
                                seconds=min(3.0, args.seconds / 2))
        results = {}
        for name in names:
            profiled = None
            if name in spied and number == 1:
                stem, ext = os.path.splitext(args.py_spy)
                profiled = args.py_spy if len(spied) == 1 else f"{stem}-{name}{ext}"
            results[name] = r = run_mode(name, args, profile_to=profiled)
            show(r, floors, results)
            if profiled:
                r["py_spy"] = profiled
                print(f"  py-spy samples: {profiled}", flush=True)
                if not profiled.endswith(".svg") and os.path.exists(profiled):
                    subprocess.run([sys.executable, "-m", "keyxbench.spy", profiled, "--top", "0",
                                    "--cpu-ms", f"{r['server_cpu_ms']:.4f}"],
                                   env=process.environment())
        rounds.append((floors, results))

    floors, results = median_round(rounds)
    print()
    if args.rounds > 1:
        print(f"medians over {args.rounds} rounds (each mode's round with the median server CPU "
              f"per handshake; the floors' medians):")
    for text, value in ratios(results, floors):
        print(f"{text}: {value:.3f}")
    print()
    print(table(results, floors), flush=True)

    if args.stall:
        running = modes.Keyx("--dh", *THROUGHPUT_OPTIONS, "--timeout", "300").start(args.group)
        try:
            s = stall.run(running.server, args.stall, settle=args.settle)
        finally:
            log, _ = running.stop()
        s["log_tracebacks"] = log.count("Traceback")
        results["stall"] = s
        print(f"stall: {s['held']} connections held mid-handshake "
              f"(opened in {s['open_seconds']:.1f} s, {s['lost_while_opening']} lost); "
              f"server RSS {mb(s['rss_before'])} -> {mb(s['rss_held'])}: "
              f"+{mb(s['rss_held'] - s['rss_before'])} "
              f"({(s['rss_held'] - s['rss_before']) / max(s['held'], 1) / 1024:.1f} KB each; "
              f"target < 50 MB in total); "
              f"fresh handshake meanwhile: {s['fresh_handshake_ms']:.1f} ms; "
              f"still held after it: {s['still_held']}; "
              f"tracebacks in log: {s['log_tracebacks']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"floors": floors, "results": results, "argv": sys.argv,
                       "rounds": rounds}, f, indent=1)


if __name__ == "__main__":
    main()
