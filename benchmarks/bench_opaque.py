"""How much one OPAQUE login costs each side, without the network.

Runs ClientLogin against ServerLogin (twisted_keyx.opaque.login) and times
the calls of each side separately, in CPU seconds of this process
(time.process_time) and wall time: the server's respond + finish (OPRF
evaluation, masking, 3DH; it never runs Argon2id), the same for an unknown
user (the fake record), and the client's start + finish (dominated by
Argon2id), with a cheap cost and the default one.

    python benchmarks/bench_opaque.py [--rounds N] [--client-rounds N]
"""

import argparse
import statistics
import time

from twisted_keyx.opaque import (
    DEFAULT_ARGON2ID,
    Argon2idParameters,
    ClientLogin,
    KsfLimits,
    OpaqueError,
    ServerLogin,
    ServerSetup,
    register,
)

CHEAP = Argon2idParameters(memory_cost=64, iterations=1, lanes=1)
ANY = KsfLimits(min_memory_cost=8, min_work=8)


def timed(call, *args):
    c, w = time.process_time(), time.perf_counter()
    result = call(*args)
    return result, time.process_time() - c, time.perf_counter() - w


def one_login(setup, record, name):
    client = ClientLogin("open sesame", ANY)
    server = ServerLogin(setup, record, name)
    ke1, c1, w1 = timed(client.start)
    ke2, s1, v1 = timed(server.respond, ke1)
    try:
        result, c2, w2 = timed(client.finish, ke2)
    except OpaqueError:
        # The fake record: the client fails; time the server's refusal.
        _, s2, v2 = timed(_refuse, server)
        return None, (s1 + s2, v1 + v2)
    session_key, s2, v2 = timed(server.finish, result.ke3)
    assert session_key == result.session_key
    return (c1 + c2, w1 + w2), (s1 + s2, v1 + v2)


def _refuse(server):
    try:
        server.finish(b"\0" * 64)
    except OpaqueError:
        pass


def ms(values):
    return f"{1000 * statistics.median(values):8.3f} ms"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200, help="server logins timed")
    parser.add_argument("--client-rounds", type=int, default=5,
                        help="client logins timed with the default Argon2id")
    args = parser.parse_args()

    setup = ServerSetup.generate(CHEAP)
    cheap_record, _ = register("open sesame", setup, b"alice", CHEAP)
    t = time.perf_counter()
    default_record, _ = register("open sesame", setup, b"bob", DEFAULT_ARGON2ID)
    print(f"registration ({DEFAULT_ARGON2ID}): {1000 * (time.perf_counter() - t):.1f} ms")

    medians = []
    for label, record, name, rounds in (
        ("registered user, cheap", cheap_record, b"alice", args.rounds),
        ("unknown user (fake)", None, b"nobody", args.rounds),
        ("registered user, default", default_record, b"bob", args.client_rounds),
    ):
        client_cpu, client_wall, server_cpu, server_wall = [], [], [], []
        medians.append(server_cpu)
        for _ in range(rounds):
            client, server = one_login(setup, record, name)
            if client:
                client_cpu.append(client[0])
                client_wall.append(client[1])
            server_cpu.append(server[0])
            server_wall.append(server[1])
        ksf = record.ksf if record else setup.default_ksf
        print(f"{label} ({ksf}), median of {rounds}:")
        print(f"  server respond+finish: cpu {ms(server_cpu)}  wall {ms(server_wall)}"
              f"  ({1 / statistics.median(server_cpu):.0f} logins/s per core)")
        if client_cpu:
            print(f"  client start+finish:   cpu {ms(client_cpu)}  wall {ms(client_wall)}")
    real, fake = (statistics.median(m) for m in medians[:2])
    print(f"server cpu, unknown minus registered user: {1e6 * (fake - real):+.1f} us "
          f"({100 * (fake - real) / real:+.1f}%)")


if __name__ == "__main__":
    main()
