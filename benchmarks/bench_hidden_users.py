"""--hide-unknown-users against timing.

    python benchmarks/bench_hidden_users.py [RUNS]
    python benchmarks/bench_hidden_users.py --loopback [SAMPLES]

Without ``--loopback``: the server's step-1 and step-3 times for a real
user (wrong password) and for a decoy name, median over RUNS, the server
machine run directly (no network), the guesser's step-3 line computed once
per name (a wrong password: what a prober sends).  The difference between
the medians is what a timing classifier works with.

With ``--loopback``: the review's attack, blind.  A real daemon
(``twistd -n keyx --hide-unknown-users``, pinned to core 0 when there are
two) with 7 users; a prober probes 14 names, 7 of them users, SAMPLES times
each (default 200), interleaved, one connection per probe, timing step 1 to
step 2 and step 3 to step 4 over loopback.  A classifier that is not told
which names are real splits the 14 into two clusters by their medians
(k-means) and prints how many names it got right (chance: about 7), and
the real - decoy medians of each step.
"""

import os
import socket
import statistics
import sys
import time

from twisted_keyx.eke import crypto
from twisted_keyx.service import userfile as userstore
from twisted_keyx.eke.handshake import EKEClientHandshake, EKEServerHandshake

KDF = crypto.ScryptParameters(n=2**15, r=8, p=1)
RSA_KEY = crypto.generate_rsa_key()


def main(runs=3000):
    users = {"alice": userstore.new_user("alice", "correct horse", kdf=KDF)}
    decoys = userstore.DecoyUsers()
    rsa_key = RSA_KEY
    step3 = {}
    for name in ("alice", "nobody"):
        server = EKEServerHandshake(users.get, decoys=decoys)
        client = EKEClientHandshake(name, "a guess", rsa_key_factory=lambda: rsa_key)
        step3[name] = client.receive(server.receive(client.start()))
    times = {(name, step): [] for name in step3 for step in (1, 3)}
    for i in range(runs):
        for name in ("alice", "nobody") if i % 2 else ("nobody", "alice"):
            server = EKEServerHandshake(users.get, decoys=decoys)
            t0 = time.perf_counter()
            server.receive(name.encode())
            t1 = time.perf_counter()
            server.receive(step3[name])
            t2 = time.perf_counter()
            times[name, 1].append(t1 - t0)
            times[name, 3].append(t2 - t1)
    for step in (1, 3):
        real = statistics.median(times["alice", step]) * 1e6
        decoy = statistics.median(times["nobody", step]) * 1e6
        print(f"step {step}: real user {real:8.1f} us, decoy {decoy:8.1f} us, "
              f"real - decoy {real - decoy:+7.1f} us  (median of {runs})")



# --- the blind classifier over loopback ---------------------------------------

#: Seven users and seven names that are not (the classifier is not told which).
REAL = ("alice", "bob", "carol", "dave", "erin", "frank", "grace")
UNKNOWN = ("heidi", "ivan", "judy", "mallory", "niaj", "olivia", "peggy")


sys.path[:0] = [os.path.dirname(os.path.abspath(__file__))]
from keyxbench import process  # noqa: E402


def start_daemon(directory):
    """``twistd -n keyx --hide-unknown-users`` with REAL as its users (the
    default scrypt, as ``keyx-admin adduser`` makes them, so that a decoy's
    step 2 looks like a user's), on free ports of 127.0.0.1.  The guess
    throttle is off (``--guess-delay 0``): it holds every answer back alike,
    real user or not, and would make 2,800 probes take hours."""
    users = os.path.join(directory, "users.json")
    userstore.write_users(users, {name: userstore.new_user(name, "the real password")
                                  for name in REAL})
    ports = {name: process.free_port() for name in ("--dh", "--dh-raw", "--eke")}
    log = os.path.join(directory, "twistd.log")
    command = process.pin_prefix(process.SERVER_CORE) + [
        sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
        "-n", "--logfile", log, "--pidfile", "", "keyx", "--users", users,
        "--hide-unknown-users", "--guess-delay", "0", "--max-per-ip", "0"]
    for name, port in ports.items():
        command += [name, f"tcp:{port}:interface=127.0.0.1"]
    return process.ServerProcess(command, ports["--eke"], cwd=directory, log=log)


class Prober:
    """One probe is one connection: step 1 (the name) timed to step 2, then
    a step 3 computed once per name (a wrong password) timed to step 4."""

    def __init__(self, port):
        self.port = port
        self.step3 = {}

    def probe(self, name):
        with socket.create_connection(("127.0.0.1", self.port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            buffer = [b""]
            t0 = time.perf_counter()
            sock.sendall(name.encode() + b"\n")
            step2 = process.read_line(sock, buffer)
            t1 = time.perf_counter()
            step3 = self.step3.get(name)
            if step3 is None:
                client = EKEClientHandshake(name, "a wrong guess", rsa_key_factory=lambda: RSA_KEY)
                client.start()
                step3 = self.step3[name] = client.receive(step2)
            t2 = time.perf_counter()
            sock.sendall(step3 + b"\n")
            process.read_line(sock, buffer)
            t3 = time.perf_counter()
        return t1 - t0, t3 - t2


def two_means(points):
    """Blind: split ``points`` (name -> feature vector, each feature scaled by
    its spread across names) into two clusters with Lloyd's k-means, started
    from the two points farthest apart.  Returns the two sets of names."""
    names = list(points)
    dims = len(next(iter(points.values())))
    scale = [statistics.pstdev([points[n][d] for n in names]) or 1.0 for d in range(dims)]
    z = {n: [points[n][d] / scale[d] for d in range(dims)] for n in names}

    def distance(a, b):
        return sum((x - y) ** 2 for x, y in zip(a, b))

    a, b = max(((p, q) for p in names for q in names), key=lambda pq: distance(z[pq[0]], z[pq[1]]))
    centres = [z[a], z[b]]
    for _ in range(100):
        groups = [set(), set()]
        for n in names:
            groups[0 if distance(z[n], centres[0]) <= distance(z[n], centres[1]) else 1].add(n)
        new = [[statistics.fmean(z[n][d] for n in g) for d in range(dims)] if g else c
               for g, c in zip(groups, centres)]
        if new == centres:
            break
        centres = new
    return groups


def loopback(samples):
    import random
    import shutil
    import tempfile

    directory = tempfile.mkdtemp(prefix="keyx-hidden-")
    server = start_daemon(directory)
    try:
        prober = Prober(server.port)
        process.pin_self(process.LOAD_CORE)
        names = list(REAL + UNKNOWN)
        for name in names:  # warm up, and compute each name's step 3
            prober.probe(name)
        times = {name: ([], []) for name in names}
        rounds = ([], [])
        rng = random.Random(11)
        for _ in range(samples):
            rng.shuffle(names)  # interleaved: drift hits every name alike
            probes = {name: prober.probe(name) for name in names}
            # Each probe against its round's median: what the load of a
            # shared machine adds to a whole round cancels out.
            for step in (0, 1):
                middle = statistics.median(p[step] for p in probes.values())
                rounds[step].append(middle)
                for name, p in probes.items():
                    times[name][step].append(p[step] - middle)
    finally:
        process.pin_self(None)
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
    round_median, round3 = (statistics.median(r) for r in rounds)
    medians = {name: (statistics.median(t1) * 1e6, statistics.median(t3) * 1e6)
               for name, (t1, t3) in times.items()}
    print(f"per name: the median of its probes' distance to their round's median "
          f"(rounds {round_median * 1e6:.0f} us at step 1, {round3 * 1e6:.0f} us at step 3, "
          "median)")
    for name in sorted(medians, key=lambda n: medians[n]):
        print(f"  {name:8} {'user' if name in REAL else 'unknown':8} step 1 "
              f"{medians[name][0]:+7.1f} us, step 3 {medians[name][1]:+7.1f} us")
    for step in (0, 1):
        real = statistics.median(medians[n][step] for n in REAL)
        decoy = statistics.median(medians[n][step] for n in UNKNOWN)
        print(f"step {(1, 3)[step]}: median of the names' medians: real users {real:+7.1f} us, "
              f"unknown {decoy:+7.1f} us, real - decoy {real - decoy:+6.1f} us "
              f"({samples} samples per name)")
    first, second = two_means(medians)
    # Which cluster is "real"?  The blind classifier guesses the slower one at
    # step 3 (what the review found: real users took longer at step 3).
    def mean3(group):
        return statistics.fmean(medians[n][1] for n in group) if group else 0
    real_guess = first if mean3(first) >= mean3(second) else second
    right = sum((name in real_guess) == (name in REAL) for name in medians)
    print(f"blind 2-means on (step 1, step 3) medians: clusters of {len(first)} and "
          f"{len(second)}; {right} of 14 names right with the slower step-3 cluster "
          f"called real ({max(right, 14 - right)} with the better of the two labellings; "
          "chance is about 7)")
    return right


if __name__ == "__main__":
    if sys.argv[1:2] == ["--loopback"]:
        loopback(int(sys.argv[2]) if len(sys.argv) > 2 else 200)
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 3000)
