"""Instructions per DH handshake on the server, ours and the naive server's,
counted by valgrind: ``python benchmarks/bench_instructions.py``.

CPU time on a shared machine moves by 15-20 % between runs; instructions
retired do not.  Each server runs the server's side of ffdhe2048 handshakes
in a child process (keyxbench.inproc: the real factories, no sockets, one
canned client) under ``valgrind --tool=callgrind``, twice, with two counts of
handshakes; the difference divided by the difference of the counts is the
cost of one handshake, start-up excluded.  ``--servers ours,naive,flat``
adds ours without its layers (keyxbench.flat: our checks, transcript,
session key and line in the naive server's shape), to tell what the checks
cost from what the layers do.  It is split by where the
instructions ran (the Python interpreter, cryptography's OpenSSL, the
system's OpenSSL behind hashlib and hmac, GMP, libc).

An instruction is not a unit of time: crypto code retires several per cycle,
the interpreter far fewer, and this counts no cache miss.  So the ratio of
instructions says how much more work ours does and where, not how much more
CPU it takes (``benchmarks/bench_daemon.py`` measures that).  Needs valgrind
(``apt-get install valgrind``).  Results: docs/benchmarks.rst.
"""

import argparse
import concurrent.futures
import os
import re
import shutil
import subprocess
import sys
import tempfile

BENCHMARKS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(BENCHMARKS), BENCHMARKS]

from keyxbench.inproc import BASELINE, SERVERS, servers_argument  # noqa: E402

#: Where instructions ran, by the source file or the library of the code
#: (first match wins).
CATEGORIES = [
    ("Python's cyclic garbage collector", re.compile(r"Modules/gcmodule\.c")),
    ("cryptography (its OpenSSL)", re.compile(r"cryptography/hazmat/bindings/_rust")),
    ("system OpenSSL (hashlib, hmac)", re.compile(r"libcrypto\.so|_hashlib\.")),
    ("GMP (gmpy2)", re.compile(r"libgmp|gmpy2")),
    ("libc (malloc, memcpy...)", re.compile(r"/libc\.so|/libm\.so|^\./(malloc|string|nptl)/")),
    ("Python interpreter and C modules", re.compile(r"libpython|/Python-3\.[\d.]+/|"
                                                   r"python3\.\d+/lib-dynload|"
                                                   r"_zope_interface|_cffi_backend")),
]
OTHER = "other"
TOTAL = "total"

_LINE = re.compile(r"^\s*([\d,]+)\s+\([^)]*\)\s+(.*?)\s*$")


def category(where):
    """The category of ``where``: a line's ``file:function [object]``."""
    for name, pattern in CATEGORIES:
        if pattern.search(where):
            return name
    return OTHER


def split(annotation):
    """Instructions by category (and ``total``) from ``callgrind_annotate``'s
    per-function lines (``N (pct)  file:function [object]``)."""
    found = {TOTAL: 0}
    for line in annotation.splitlines():
        m = _LINE.match(line)
        if not m or "PROGRAM TOTALS" in m.group(2):
            continue
        count = int(m.group(1).replace(",", ""))
        key = category(m.group(2))
        found[key] = found.get(key, 0) + count
        found[TOTAL] += count
    return found


def per_handshake(low, high, counts):
    """Per-category instructions of one handshake, from the splits of two
    runs of ``counts`` = (fewer, more) handshakes."""
    spread = counts[1] - counts[0]
    return {key: (high.get(key, 0) - low.get(key, 0)) / spread for key in set(low) | set(high)}


def counted(server, count, sources, group, directory):
    """One child under callgrind; its split."""
    out = os.path.join(directory, f"cg.{server}.{sources}.{count}")
    env = dict(os.environ, PYTHONHASHSEED="0")
    subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
         os.path.join(BENCHMARKS, "keyxbench", "inproc.py"), "--server", server, "--count",
         str(count), "--sources", str(sources), "--group", group,
         "--log", os.path.join(directory, f"{server}.{sources}.{count}.log")],
        check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    annotation = subprocess.run(["callgrind_annotate", "--threshold=100", out], check=True,
                                capture_output=True, text=True).stdout
    return split(annotation)


def parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--counts", default="100,300", help="the two counts of handshakes [100,300]")
    p.add_argument("--sources", default="0,16384",
                   help="source addresses, per case: 0 (all from 127.0.0.1: ours summarises its "
                        "lines) and 16384 (ours logs every handshake, as the naive server always "
                        "does) [0,16384]")
    p.add_argument("--servers", default="ours,naive",
                   help="which of " + ", ".join(SERVERS) + " (flat: ours' checks, transcript, "
                        "session key and line in the naive server's shape) [ours,naive]")
    p.add_argument("--group", default="ffdhe2048")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="children at once")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        counts = tuple(sorted(int(c) for c in args.counts.split(",")))
        cases = [int(s) for s in args.sources.split(",")]
    except ValueError:
        sys.exit("--counts and --sources take comma-separated whole numbers")
    if len(counts) != 2 or counts[0] == counts[1] or counts[0] < 0:
        sys.exit("--counts takes two different numbers of handshakes, such as 100,300")
    try:
        servers = servers_argument(args.servers)
    except ValueError as e:
        sys.exit(str(e))
    for tool in ("valgrind", "callgrind_annotate"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed (apt-get install valgrind)")
    runs = [(server, count, sources) for sources in cases for server in servers
            for count in counts]
    with tempfile.TemporaryDirectory(prefix="keyx-instructions-") as directory:
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            futures = {run: pool.submit(counted, *run, args.group, directory) for run in runs}
            splits = {run: future.result() for run, future in futures.items()}
    print(f"instructions per handshake, server side, {args.group}; counts {counts[0]} and "
          f"{counts[1]}; valgrind {subprocess.run(['valgrind', '--version'], capture_output=True, text=True).stdout.strip()}")
    names = [name for name, _ in CATEGORIES] + [OTHER, TOTAL]
    for sources in cases:
        result = {server: per_handshake(splits[(server, counts[0], sources)],
                                        splits[(server, counts[1], sources)], counts)
                  for server in servers}
        others = [server for server in servers if server != BASELINE]
        where = f"from {sources} sources" if sources else "from one source"
        print(f"\n{where}:")
        print(f"  {'':34s}" + "".join(f" {server:>12s}" for server in servers)
              + "".join(f" {server + '-' + BASELINE:>12s}" for server in others))
        for name in names:
            counted_here = {server: result[server].get(name, 0) for server in servers}
            print(f"  {name:34s}" + "".join(f" {counted_here[s]:12,.0f}" for s in servers)
                  + "".join(f" {counted_here[s] - counted_here[BASELINE]:+12,.0f}" for s in others))
        if result[BASELINE][TOTAL]:
            for server in others:
                print(f"  {server} / {BASELINE}, instructions: "
                      f"{result[server][TOTAL] / result[BASELINE][TOTAL]:.3f}")


if __name__ == "__main__":
    main()
