"""How much one OPAQUE login costs each side, without the network.

Runs ClientLogin against ServerLogin (twisted_keyx.opaque.login) and times
the calls of each side separately, in CPU seconds of this process
(time.process_time) and wall time: the server's respond + finish (OPRF
evaluation, masking, 3DH; it never runs Argon2id), the same for an unknown
user (the fake record), and the client's start + finish (dominated by
Argon2id), with a cheap cost and the default one.  Then the same for EKE
(twisted_keyx.eke.handshake, default scrypt) in the same run, for comparison.
Last, the server's CPU per registration and per login beside opaque-ke's
own server, @serenity-kit/opaque in WebAssembly under node
(interop/bench_server.js, after ``npm ci`` in interop/), timed in the same
run: ours in process (the RFC 9807 registration response alone, then with
the invitation layer: InvitedRegistrationServer's respond + finish, HKDF,
HMAC and AES-GCM included), and over the network: a real ``twistd keyx``
(rfc9807 profile, empty context), N users invited by ``keyx-admin invite``,
each registering with its code over TCP (docs/opaque.rst, The registration
wire) and then logging in, the daemon's own CPU per registration and per
login read from /proc (store writes, reloads, logging, Twisted included).

    python benchmarks/bench_opaque.py [--rounds N] [--client-rounds N] [--eke-rounds N]
                                      [--opaque-ke-rounds N] [--network-rounds N]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from twisted_keyx.eke.handshake import EKEClientHandshake, EKEServerHandshake
from twisted_keyx.service.userfile import new_user
from twisted_keyx.opaque import (
    DEFAULT_ARGON2ID,
    Argon2idParameters,
    ClientLogin,
    KsfLimits,
    OpaqueError,
    ServerLogin,
    ServerSetup,
    register,
    registration_response,
)
from twisted_keyx.opaque.profile import rfc9807
from twisted_keyx.opaque.registration import RegistrationClient

INTEROP = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "interop")

CHEAP = Argon2idParameters(memory_cost=64, iterations=1, lanes=1)
CHEAP_RFC = Argon2idParameters(memory_cost=1024, iterations=1, lanes=1)
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


def one_wire_login(setup, users):
    """The wire machines (twisted_keyx.opaque.handshake), default Argon2id:
    (client cpu, client wall, server cpu)."""
    from twisted_keyx.opaque.handshake import OPAQUEClientHandshake, OPAQUEServerHandshake

    server = OPAQUEServerHandshake(setup, users.get)
    client = OPAQUEClientHandshake("bob", "open sesame")
    c, w = time.process_time(), time.perf_counter()
    line = client.start()
    client_cpu, client_wall = time.process_time() - c, time.perf_counter() - w
    server_cpu = 0.0
    while line is not None:
        line, spent, _ = timed(server.receive, line)
        server_cpu += spent
        line, spent, wall = timed(client.receive, line)
        client_cpu += spent
        client_wall += wall
    assert server.finished and client.finished
    return client_cpu, client_wall, server_cpu


def _refuse(server):
    try:
        server.finish(b"\0" * 64)
    except OpaqueError:
        pass


def one_eke_handshake(users):
    """Both EKE machines against each other: (client cpu, server cpu)."""
    server = EKEServerHandshake(users.get)
    client = EKEClientHandshake("alice", "open sesame")
    line, client_cpu, _ = timed(client.start)
    server_cpu = 0.0
    while line is not None:
        line, spent, _ = timed(server.receive, line)
        server_cpu += spent
        line, spent, _ = timed(client.receive, line)
        client_cpu += spent
    assert server.finished and client.finished
    return client_cpu, server_cpu


def _record(lists, client, server):
    client_cpu, client_wall, server_cpu, server_wall = lists
    if client:
        client_cpu.append(client[0])
        client_wall.append(client[1])
    server_cpu.append(server[0])
    server_wall.append(server[1])


def registration_cpu(setup, rounds):
    """The server's CPU per registration: CreateRegistrationResponse."""
    spent = []
    for i in range(rounds):
        request = RegistrationClient("open sesame", CHEAP).start()
        _, cpu, _ = timed(registration_response, setup, request, b"alice")
        spent.append(cpu)
    return spent


def invited_registration_cpu(setup, rounds):
    """The server's CPU per registration with the invitation layer, in
    process: InvitedRegistrationServer's respond (r1 -> r2) + finish (r3)."""
    from twisted_keyx.core.interfaces import Invitation
    from twisted_keyx.opaque.invitation import (
        InvitedRegistrationClient,
        InvitedRegistrationServer,
        code_hash,
        new_code,
    )

    spent = []
    for i in range(rounds):
        code = new_code()
        invitation = Invitation("alice", code_hash(code), 0.0, 1e12)
        client = InvitedRegistrationClient("alice", code, "open sesame", profile=setup.profile,
                                           ksf_limits=ANY)
        r1 = client.start()
        c = time.process_time()
        server = InvitedRegistrationServer(setup, "alice", invitation, 1.0)
        r2 = server.respond(r1)
        cpu = time.process_time() - c
        r3 = client.finish(r2)
        c = time.process_time()
        server.finish(r3)
        spent.append(cpu + time.process_time() - c)
    return spent


#: The network part's profile: the client's Argon2id is cheap (the server
#: never runs it, so its cost does not change the server's CPU).
NETWORK_PROFILE = "rfc9807,m=1024,t=1,p=1,context="


def _over_tcp(port, machine):
    """Run a client wire machine (twisted_keyx.opaque.handshake) over a
    blocking TCP connection until it has nothing more to send."""
    import socket

    from keyxbench.process import read_line

    with socket.create_connection(("127.0.0.1", port)) as sock:
        buffer = [b""]
        line = machine.start()
        while line is not None:
            sock.sendall(line + b"\n")
            line = machine.receive(read_line(sock, buffer))
    return machine.result


def over_the_network(rounds):
    """A real ``twistd keyx`` (rfc9807 profile): ``rounds`` users invited by
    keyx-admin, each registering with its code over TCP, then each logging
    in; the daemon's own CPU (from /proc) per registration and per login."""
    import io

    from keyxbench import process
    from twisted_keyx.cli import admin
    from twisted_keyx.opaque.handshake import OPAQUEClientHandshake, OPAQUERegistrationClient
    from twisted_keyx.opaque.profile import Profile

    profile = Profile.parse(NETWORK_PROFILE)
    folder = tempfile.mkdtemp(prefix="keyx-bench-opaque-")
    key, users = os.path.join(folder, "key"), os.path.join(folder, "users.json")
    admin.main(["opaque-profile", "--opaque-key", key, "--create", NETWORK_PROFILE],
               io.StringIO(), io.StringIO())
    codes = {}
    for i in range(rounds):
        out = io.StringIO()
        if admin.main(["invite", "--users", users, f"user{i}"], out, io.StringIO()) != 0:
            raise SystemExit("keyx-admin invite failed")
        codes[f"user{i}"] = out.getvalue().strip()
    port, log = process.free_port(), os.path.join(folder, "twistd.log")
    server = process.ServerProcess(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
         "--logfile", log, "--pidfile", "", "keyx",
         "--opaque", f"tcp:{port}:interface=127.0.0.1", "--eke", "unix:eke", "--dh", "unix:dh",
         "--users", users, "--opaque-key", key], port, cwd=folder, log=log)
    try:
        before, t = server.own_cpu_seconds(), time.perf_counter()
        for name, code in codes.items():
            machine = OPAQUERegistrationClient(name, "open sesame", code, profile=profile)
            if _over_tcp(port, machine) != name:
                raise SystemExit(f"the registration of {name} failed")
        registration = (server.own_cpu_seconds() - before) / rounds
        registration_wall = (time.perf_counter() - t) / rounds
        before, t = server.own_cpu_seconds(), time.perf_counter()
        for name in codes:
            machine = OPAQUEClientHandshake(name, "open sesame", profile=profile)
            if _over_tcp(port, machine) is None:
                raise SystemExit(f"the login of {name} failed")
        login = (server.own_cpu_seconds() - before) / rounds
        login_wall = (time.perf_counter() - t) / rounds
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return registration, registration_wall, login, login_wall


def opaque_ke_server(rounds):
    """interop/bench_server.js's medians in seconds, or None and why not."""
    node = shutil.which("node")
    if node is None:
        return None, "node is not installed"
    if not os.path.isdir(os.path.join(INTEROP, "node_modules", "@serenity-kit", "opaque")):
        return None, "run 'npm ci' in interop/ first"
    done = subprocess.run([node, "bench_server.js", str(rounds)], cwd=INTEROP,
                          capture_output=True, text=True, check=True)
    result = json.loads(done.stdout)
    return (result["registration_us"] / 1e6, result["login_us"] / 1e6), None


def ms(values):
    return f"{1000 * statistics.median(values):8.3f} ms"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200, help="server logins timed")
    parser.add_argument("--client-rounds", type=int, default=5,
                        help="client logins timed with the default Argon2id")
    parser.add_argument("--eke-rounds", type=int, default=10,
                        help="EKE handshakes timed (default scrypt); 0 to skip")
    parser.add_argument("--opaque-ke-rounds", type=int, default=200,
                        help="server registrations and logins timed for ours beside "
                             "opaque-ke's (node); 0 to skip")
    parser.add_argument("--network-rounds", type=int, default=100,
                        help="users invited, registered and logged in over TCP to a real "
                             "twistd keyx, whose CPU is read from /proc (Linux); 0 to skip")
    args = parser.parse_args()

    setup = ServerSetup.generate(CHEAP)
    cheap_record, _ = register("open sesame", setup, b"alice", CHEAP)
    t = time.perf_counter()
    default_record, _ = register("open sesame", setup, b"bob", DEFAULT_ARGON2ID)
    print(f"registration ({DEFAULT_ARGON2ID}): {1000 * (time.perf_counter() - t):.1f} ms")

    # Registered and unknown users alternate, round by round, so that a
    # busy machine slows both alike and their difference stays meaningful.
    cases = [
        ("registered user, cheap", cheap_record, b"alice"),
        ("unknown user (fake)", None, b"nobody"),
    ]
    samples = {label: ([], [], [], []) for label, _, _ in cases}
    for _ in range(args.rounds):
        for label, record, name in cases:
            client, server = one_login(setup, record, name)
            _record(samples[label], client, server)
    slow = ([], [], [], [])
    for _ in range(args.client_rounds):
        _record(slow, *one_login(setup, default_record, b"bob"))
    cases.append(("registered user, default", default_record, b"bob"))
    samples["registered user, default"] = slow

    for label, record, _ in cases:
        client_cpu, client_wall, server_cpu, server_wall = samples[label]
        ksf = record.ksf if record else setup.default_ksf
        print(f"{label} ({ksf}), median of {len(server_cpu)}:")
        print(f"  server respond+finish: cpu {ms(server_cpu)}  wall {ms(server_wall)}"
              f"  ({1 / statistics.median(server_cpu):.0f} logins/s per core)")
        if client_cpu:
            print(f"  client start+finish:   cpu {ms(client_cpu)}  wall {ms(client_wall)}")
    real, fake = (statistics.median(samples[label][2]) for label, _, _ in cases[:2])
    print(f"server cpu, unknown minus registered user: {1e6 * (fake - real):+.1f} us "
          f"({100 * (fake - real) / real:+.1f}%)")

    if args.eke_rounds:
        users = {"alice": new_user("alice", "open sesame")}
        runs = [one_eke_handshake(users) for _ in range(args.eke_rounds)]
        print(f"EKE (default scrypt), median of {args.eke_rounds}:")
        server_cpu = [r[1] for r in runs]
        print(f"  server, whole handshake: cpu {ms(server_cpu)}"
              f"  ({1 / statistics.median(server_cpu):.0f} logins/s per core)")
        print(f"  client, whole handshake: cpu {ms([r[0] for r in runs])}")

        from twisted_keyx.opaque.scheme import OpaqueUser

        wire_users = {"bob": OpaqueUser("bob", default_record)}
        wire = [one_wire_login(setup, wire_users) for _ in range(max(args.client_rounds, 1))]
        print("Side by side, one login over the wire machines (default costs):")
        print(f"  {'':8} {'server cpu':>12} {'client cpu':>12} {'client wall':>12}")
        print(f"  {'OPAQUE':8} {ms([r[2] for r in wire])} {ms([r[0] for r in wire])}"
              f" {ms([r[1] for r in wire])}")
        print(f"  {'EKE':8} {ms(server_cpu)} {ms([r[0] for r in runs])}")

    if args.opaque_ke_rounds or args.network_rounds:
        rounds = args.opaque_ke_rounds or 200
        theirs, why = opaque_ke_server(args.opaque_ke_rounds) if args.opaque_ke_rounds else (
            None, "--opaque-ke-rounds 0")
        rfc_setup = ServerSetup.generate(profile=rfc9807(b"", CHEAP_RFC))
        ours_registration = statistics.median(registration_cpu(rfc_setup, rounds))
        ours_invited = statistics.median(invited_registration_cpu(rfc_setup, rounds))
        ours_login = statistics.median(samples["registered user, cheap"][2])
        print(f"Server CPU per registration and per login (medians of {rounds} in process):")
        print(f"  {'':44} {'registration':>12} {'login':>12}")
        print(f"  {'ours, in process (RFC 9807 messages alone)':44} {ms([ours_registration])}"
              f" {ms([ours_login])}")
        print(f"  {'ours, in process, with the invitation layer':44} {ms([ours_invited])}")
        network = None
        if args.network_rounds:
            if not os.path.exists(f"/proc/{os.getpid()}/stat"):
                print("  over the network: not measured (no /proc)")
            else:
                network = over_the_network(args.network_rounds)
                label = f"ours, twistd keyx over TCP ({args.network_rounds} users)"
                print(f"  {label:44} {ms([network[0]])} {ms([network[2]])}"
                      "  (daemon CPU / count)")
                print(f"  {'  (client wall per operation, for scale)':44} {ms([network[1]])}"
                      f" {ms([network[3]])}")
        if theirs is None:
            print(f"  opaque-ke: not measured ({why})")
        else:
            print(f"  {'opaque-ke (WASM, node), in process':44} {ms([theirs[0]])}"
                  f" {ms([theirs[1]])}")
            print(f"  {'ours in process / opaque-ke':44} {ours_registration / theirs[0]:11.2f}x "
                  f"{ours_login / theirs[1]:11.2f}x")
            print(f"  {'ours with invitation / opaque-ke':44} {ours_invited / theirs[0]:11.2f}x")
            if network is not None:
                print(f"  {'ours over TCP / opaque-ke in process':44}"
                      f" {network[0] / theirs[0]:11.2f}x {network[2] / theirs[1]:11.2f}x")

if __name__ == "__main__":
    main()
