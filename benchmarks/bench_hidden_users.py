"""--hide-unknown-users against timing: the server's step-1 and step-3 times
for a real user (wrong password) and for a decoy name, median over RUNS.

    python benchmarks/bench_hidden_users.py [RUNS]

Runs the server machine directly (no network), the guesser's step-3 line
computed once per name (a wrong password: what a prober sends).  The
difference between the medians is what a timing classifier works with.
"""

import statistics
import sys
import time

from twisted_keyx.eke import crypto, userstore
from twisted_keyx.eke.handshake import EKEClientHandshake, EKEServerHandshake

KDF = crypto.ScryptParameters(n=2**15, r=8, p=1)


def main(runs=3000):
    users = {"alice": userstore.new_user("alice", "correct horse", kdf=KDF)}
    decoys = userstore.DecoyUsers()
    rsa_key = crypto.generate_rsa_key()
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


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3000)
