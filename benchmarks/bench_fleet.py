"""Benchmark issue 22's goals: ``python benchmarks/bench_fleet.py [throttle|fleet]``.

``throttle``: one daemon (``twistd -n keyx``, EKE on 127.0.0.1).  The real
user alice logs in once from 127.0.0.2 (that source becomes familiar); then
``--attackers`` threads guess her password as fast as they can from 10,000
source addresses (127.1.0.1 upwards, each connection from the next one), for
``--seconds``; meanwhile alice logs in 20 times from 127.0.0.2, each timed.
Printed: guesses answered per second for alice (a step-4 answer), refused
per second (``too many attempts ...``), alice's login times, and the failures
the daemon logged alone or counted in its summaries against the answers
the attackers got.

``fleet``: PostgreSQL (started as tests/pgfixture.py does), HAProxy, and 1,
2, then 3 daemons with ``--store`` behind it; ``--clients`` threads log in
(whole EKE logins, from 30 familiar sources) for ``--seconds`` through
HAProxy.  Printed per size: logins/s, the daemons' CPU per login and
PostgreSQL's (from /proc), and the store's transactions per login
(pg_stat_database.xact_commit) and statements per login (pg_stat_statements,
BEGIN/COMMIT not counted).

``lookup``: what a login's user lookup costs the daemon (docs/fleet.rst,
"Users per login"): ``IUserStore.lookup`` through the daemon's adbapi pool
on PostgreSQL, 2,000 times, in one process on the reactor; printed: CPU and
wall time per lookup, against the same SELECT in a transaction of its own
(BEGIN, SELECT, COMMIT) and an empty interaction (the thread hop alone).

Ports: ``--base-port`` (24000) to 200 above it.  Not a test: it prints numbers.
Recorded results: docs/fleet.rst.
"""

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.helpers import make_user  # noqa: E402
from tests.test_eke_protocol import client_machine  # noqa: E402
from twisted_keyx.service import userfile  # noqa: E402

HZ = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / HZ


def children(pid):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except OSError:
                pass
    return out


def login(port, user="alice", password="correct horse", source="127.0.0.2", guess=False):
    """One EKE login (or a guess up to step 4): "ok", "answered",
    "refused", or the failure."""
    client = client_machine(password, user)
    with socket.create_connection(("127.0.0.1", port), timeout=30,
                                  source_address=(source, 0)) as s:
        stream = s.makefile("rwb")
        line = client.start()
        step = 0
        try:
            while line is not None:
                stream.write(line + b"\n")
                stream.flush()
                answer = stream.readline()
                step += 1
                if not answer:
                    return "closed"
                if answer.startswith(b"too many attempts"):
                    return "refused"
                if guess and step == 2:
                    return "answered"
                line = client.receive(answer[:-1])
        except Exception as e:
            return type(e).__name__
    return "ok"


def twistd(folder, *options, log="keyx.log"):
    os.makedirs(folder, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
         "--logfile", os.path.join(folder, log), "--pidfile", "", "keyx", *options],
        cwd=folder, env=dict(os.environ, PYTHONPATH=ROOT),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_port(port, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port}")


def throttle_benchmark(args):
    folder = tempfile.mkdtemp(prefix="keyx-bench-")
    userfile.write_users(os.path.join(folder, "keyx-users.json"), {"alice": make_user("alice")})
    port = args.base_port + 10
    daemon = twistd(folder, "--dh", f"tcp:{port + 1}:interface=127.0.0.1",
                    "--eke", f"tcp:{port}:interface=127.0.0.1",
                    "--opaque", f"tcp:{port + 2}:interface=127.0.0.1")
    try:
        wait_port(port)
        assert login(port) == "ok"  # 127.0.0.2 is familiar from now on
        stop = threading.Event()
        counts = {"answered": 0, "refused": 0, "other": 0}
        lock = threading.Lock()
        sources = iter(range(10_000 * 1000))

        def attacker():
            while not stop.is_set():
                with lock:
                    i = next(sources) % 10_000
                source = f"127.{1 + (i >> 16)}.{(i >> 8) & 255}.{(i & 255) or 1}"
                try:
                    outcome = login(port, password="wrong guess", source=source, guess=True)
                except OSError:
                    outcome = "other"
                with lock:
                    counts[outcome if outcome in counts else "other"] += 1

        threads = [threading.Thread(target=attacker, daemon=True) for _ in range(args.attackers)]
        started = time.monotonic()
        cpu0 = cpu_seconds(daemon.pid)
        for thread in threads:
            thread.start()
        time.sleep(2)
        times = []
        for _ in range(20):
            t0 = time.monotonic()
            outcome = login(port)
            times.append((time.monotonic() - t0, outcome))
            time.sleep(max(0.0, (args.seconds - 2) / 20 - times[-1][0]))
        stop.set()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        cpu = cpu_seconds(daemon.pid) - cpu0
        time.sleep(12)  # the last summaries
    finally:
        daemon.terminate()
        daemon.wait()
    with open(os.path.join(folder, "keyx.log"), errors="replace") as f:
        text = f.read()
    singles = len(re.findall(r"Failed guess for user 'alice'", text))
    counted = sum(int(n) for n in re.findall(
        r"Guessing user 'alice': (\d+) failed guess\(es\)", text))
    refused_counted = sum(int(n) for n in re.findall(
        r"Guessing user 'alice': \d+ failed guess\(es\) in [\d.]+ s.*?; (\d+) more refused", text))
    print(f"throttle: {args.attackers} attackers, 10,000 sources, {elapsed:.1f} s, "
          f"daemon CPU {cpu:.1f} s")
    print(f"  guesses answered for alice: {counts['answered']} "
          f"({counts['answered'] / elapsed:.2f}/s); refused unchecked: {counts['refused']} "
          f"({counts['refused'] / elapsed:.0f}/s); other: {counts['other']}")
    ok = [t for t, outcome in times if outcome == "ok"]
    print(f"  alice from her familiar source: {len(ok)}/20 logged in; "
          f"max {max(t for t, _ in times):.3f} s, median {sorted(t for t, _ in times)[10]:.3f} s")
    print(f"  failures logged alone {singles} + counted in alice's summaries {counted} = "
          f"{singles + counted} (answered guesses: {counts['answered']}); refusals counted "
          f"{refused_counted} (refused: {counts['refused']})")
    shutil.rmtree(folder, ignore_errors=True)


HAPROXY = """\
global
    maxconn 4000
defaults
    mode tcp
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    default-server send-proxy-v2 check check-send-proxy inter 1s
frontend eke
    bind 127.0.0.1:{port}
    default_backend eke
backend eke
    balance leastconn
{servers}
"""


def fleet_benchmark(args):
    from tests.pgfixture import Server
    from twisted_keyx.service import pgstore

    base = args.base_port
    server = Server(preload="pg_stat_statements")
    folder = tempfile.mkdtemp(prefix="keyx-fleet-")
    try:
        url = server.database()
        connection = pgstore.connect(url)
        pgstore.upgrade(connection)
        pgstore.add_users(connection, {"alice": make_user("alice")})
        connection.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        connection.commit()
        subprocess.run([sys.executable, "-m", "twisted_keyx.cli.admin", "hostkey", "-o",
                        os.path.join(folder, "host-key")], env=dict(os.environ, PYTHONPATH=ROOT),
                       check=True, stdout=subprocess.DEVNULL)
        print("fleet: logins through HAProxy, EKE, users and throttle in PostgreSQL")
        for size in (1, 2, 3):
            daemons = []
            for index in range(size):
                daemons.append(twistd(
                    os.path.join(folder, f"d{size}{index}"), "--store", url,
                    "--host-key", os.path.join(folder, "host-key"),
                    "--dh", f"tcp:{base + 120 + index}:interface=127.0.0.1",
                    "--opaque", f"tcp:{base + 130 + index}:interface=127.0.0.1",
                    "--eke", f"haproxy:tcp:{base + 110 + index}:interface=127.0.0.1"))
            for index in range(size):
                wait_port(base + 110 + index)
            config = os.path.join(folder, f"haproxy{size}.cfg")
            with open(config, "w") as f:
                f.write(HAPROXY.format(port=base + 100, servers="\n".join(
                    f"    server d{i} 127.0.0.1:{base + 110 + i}" for i in range(size))))
            proxy = subprocess.Popen([shutil.which("haproxy") or "/usr/sbin/haproxy", "-f",
                                      config, "-db"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
            try:
                wait_port(base + 100)
                time.sleep(1.5)
                for i in range(30):  # familiar sources
                    login(base + 100, source=f"127.0.1.{i + 1}")
                backends = [p for p in children(server_pid(server))]
                commits0, statements0 = xact(connection), statements(connection)
                cpu0 = sum(cpu_seconds(d.pid) for d in daemons)
                pg0 = sum(cpu_seconds(p) for p in backends if os.path.exists(f"/proc/{p}"))
                done = []
                stop = threading.Event()

                def client(n):
                    i = 0
                    while not stop.is_set():
                        outcome = login(base + 100, source=f"127.0.1.{(n + i) % 30 + 1}")
                        done.append(outcome)
                        i += 1

                threads = [threading.Thread(target=client, args=(n,), daemon=True)
                           for n in range(args.clients)]
                started = time.monotonic()
                for thread in threads:
                    thread.start()
                time.sleep(args.seconds)
                stop.set()
                for thread in threads:
                    thread.join()
                elapsed = time.monotonic() - started
                backends = [p for p in children(server_pid(server))]
                cpu = sum(cpu_seconds(d.pid) for d in daemons) - cpu0
                pg = sum(cpu_seconds(p) for p in backends if os.path.exists(f"/proc/{p}")) - pg0
                commits = xact(connection) - commits0
                sent = statements(connection) - statements0
                ok = done.count("ok")
                print(f"  {size} daemon(s): {ok / elapsed:.1f} logins/s ({ok} ok, "
                      f"{len(done) - ok} not), daemons' CPU {1000 * cpu / max(ok, 1):.1f} ms/login, "
                      f"PostgreSQL's {1000 * pg / max(ok, 1):.1f} ms/login, "
                      f"{commits / max(ok, 1):.2f} store transactions/login, "
                      f"{sent / max(ok, 1):.2f} statements/login")
            finally:
                proxy.terminate()
                proxy.wait()
                for daemon in daemons:
                    daemon.terminate()
                for daemon in daemons:
                    daemon.wait()
        connection.close()
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


def server_pid(server):
    with open(os.path.join(server.data, "postmaster.pid")) as f:
        return int(f.readline())


def xact(connection):
    row = connection.execute(
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").fetchone()
    connection.commit()
    return row[0]


def statements(connection):
    """Statements the daemons sent (pg_stat_statements), not counting
    BEGIN/COMMIT/ROLLBACK and the benchmark's own."""
    row = connection.execute(
        "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s JOIN pg_database d "
        "ON d.oid = s.dbid WHERE d.datname = current_database() "
        "AND upper(s.query) NOT IN ('BEGIN', 'COMMIT', 'ROLLBACK') "
        "AND s.query NOT LIKE '%pg_stat%'").fetchone()
    connection.commit()
    return int(row[0])


def lookup_benchmark(args):
    from twisted.internet import defer, reactor

    from tests.pgfixture import Server
    from twisted_keyx.service import pgstore

    server = Server()
    try:
        url = server.database()
        connection = pgstore.connect(url)
        pgstore.upgrade(connection)
        pgstore.add_users(connection, {"alice": make_user("alice")})
        connection.close()
        sql = pgstore.sql_store(url)
        users = pgstore.PostgreSQLUserStore(sql)

        def in_a_transaction(cursor):
            cursor.execute("SELECT record FROM keyx_users WHERE name = %s AND scheme = %s",
                           ("alice", "eke"))
            return cursor.fetchone()

        async def run():
            print("lookup: IUserStore.lookup on PostgreSQL through the daemon's adbapi pool")
            for what, call in (
                    ("lookup (one statement, autocommit)", lambda: users.lookup("alice", "eke")),
                    ("the same SELECT in a transaction", lambda: sql.transact(in_a_transaction)),
                    ("an empty interaction (thread hop)", lambda: sql.read(lambda cursor: None))):
                for _ in range(50):
                    await call()
                count = 2000
                cpu, wall = time.process_time(), time.monotonic()
                for _ in range(count):
                    await call()
                cpu, wall = time.process_time() - cpu, time.monotonic() - wall
                print(f"  {what}: {1000 * cpu / count:.3f} ms CPU, "
                      f"{1000 * wall / count:.3f} ms wall each")

        def done(result):
            sql.close()
            reactor.stop()
            return result

        reactor.callWhenRunning(lambda: defer.Deferred.fromCoroutine(run()).addBoth(done))
        reactor.run()
    finally:
        server.cleanup()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["throttle", "fleet", "lookup", "both"], nargs="?",
                        default="both")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--attackers", type=int, default=24)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--base-port", type=int, default=24000,
                        help="the ports used: this one to 200 above it [default: 24000]")
    args = parser.parse_args()
    if args.what in ("throttle", "both"):
        throttle_benchmark(args)
    if args.what in ("fleet", "both"):
        fleet_benchmark(args)
    if args.what == "lookup":
        lookup_benchmark(args)


if __name__ == "__main__":
    main()
