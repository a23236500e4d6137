"""Benchmark the daemon: ``python benchmarks/bench_daemon.py`` (from a checkout).

What it does, in one run:

1. The floors: the server's own crypto work for one handshake, measured in
   this process on one core (DH: load and check the client's key, make a key
   pair, serialise its public key, compute the shared secret; EKE: the
   server's four steps and the chat's quit), and a framework-only baseline
   (canned replies, no crypto).
2. Starts ``twistd -n keyx`` as its own process (pinned to core 0 with
   ``taskset`` when there is one), with this checkout on PYTHONPATH.
3. Drives it from another process (core 1) over loopback: N clients, each
   running handshakes back to back for T seconds, as a real client does
   (one message, wait for the reply, the next).  The load generator does no
   DH of its own per handshake (its keys come from a pool made before the
   clock starts, and every 50th server key is loaded and checked), so that
   it is never the bottleneck.  It reports handshakes/s, p50/p99 latency
   and failures; this script adds the server's RSS and CPU time, and
   throughput / floor.
4. The stall test: S connections that send ``Hello`` and ``Params?`` and
   then go silent (the server holds each in "awaiting the client's public
   key"); reports what they cost the server in RSS, and times a fresh
   handshake while they are held.

Not a test: it prints numbers.  Targets and recorded results:
docs/benchmarks.rst.  ``--help`` lists the knobs.
"""

import argparse
import glob
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def pin_prefix(core):
    if shutil.which("taskset") and (os.cpu_count() or 1) > 1:
        return ["taskset", "-c", str(core)]
    return []


# -- the floor --------------------------------------------------------------

def measure_floor(group_name, seconds=3.0):
    """Seconds of server crypto per handshake, on this core."""
    from twisted_keyx import ffdh

    group = ffdh.named_group(group_name)
    client_pems = [group.public_key_pem(group.generate_private_key()) for _ in range(16)]

    def one(pem):
        peer = group.load_peer_key(pem)
        private = group.generate_private_key()
        group.public_key_pem(private)
        group.exchange(private, peer)

    for pem in client_pems:
        one(pem)
    runs = 0
    start = time.process_time()
    while time.process_time() - start < seconds:
        for pem in client_pems:
            one(pem)
        runs += len(client_pems)
    return (time.process_time() - start) / runs


def measure_eke_floor(seconds=3.0):
    """Seconds of server work per EKE handshake (and its quit), in process:
    the server's four steps and the chat's quit, timed alone; the client's
    work in between is not counted."""
    from twisted_keyx.eke import crypto, userstore
    from twisted_keyx.chat.machine import ClientChat, ServerChat
    from twisted_keyx.eke.handshake import EKEClientHandshake, EKEServerHandshake

    kdf = crypto.ScryptParameters(n=16, r=2, p=1)
    users = {EKE_USER: userstore.new_user(EKE_USER, EKE_PASSWORD, kdf=kdf)}
    rsa_pool = [crypto.generate_rsa_key() for _ in range(4)]
    cheap = crypto.KdfLimits(min_memory=1)
    spent = 0.0
    runs = 0
    while spent < seconds:
        key = rsa_pool[runs % len(rsa_pool)]
        client = EKEClientHandshake(EKE_USER, EKE_PASSWORD, kdf_limits=cheap,
                                    rsa_key_factory=lambda: key)
        line = client.start()
        t = time.process_time()
        server = EKEServerHandshake(users.get)
        spent += time.process_time() - t
        while line is not None:
            t = time.process_time()
            reply = server.receive(line)
            spent += time.process_time() - t
            line = client.receive(reply)
        quit_line = ClientChat(client.result).quit()
        t = time.process_time()
        ServerChat(server.result).receive(quit_line)
        spent += time.process_time() - t
        runs += 1
    return spent / runs


# -- the load generator (runs in its own process) ---------------------------

def eke_bench_user(directory):
    """A user file with one user whose scrypt is cheap: the server never runs
    scrypt, and a cheap one keeps the load generator from being the limit."""
    from twisted_keyx.eke import crypto, userstore

    kdf = crypto.ScryptParameters(n=16, r=2, p=1)
    path = os.path.join(directory, "users.json")
    userstore.write_users(path, {EKE_USER: userstore.new_user(EKE_USER, EKE_PASSWORD, kdf=kdf)})
    return path


EKE_USER, EKE_PASSWORD = "bench", "bench password"


def load_main(args):
    """Entry point of the load-generator process; prints JSON lines."""
    raise_fd_limit()
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import protocol, reactor

    from twisted_keyx import ffdh
    from twisted_keyx.dh import messages

    group = ffdh.named_group(args.group)
    key_messages = [
        messages.CLIENT_KEY_PREFIX + group.public_key_pem(group.generate_private_key())
        for _ in range(64)
    ]

    def frame(payload):
        return len(payload).to_bytes(4, "big") + payload

    if args.mode == "dh":
        wire = frame
        hello, params_request = frame(messages.HELLO), frame(messages.PARAMS_REQUEST)
    else:  # raw: each message in one write, PEM with its newline, as the tutorial
        wire = bytes
        hello, params_request = messages.HELLO, messages.PARAMS_REQUEST
    key_frames = [wire(m) for m in key_messages]
    stats = {"latencies": [], "failures": 0, "checked": 0, "failure_kinds": {}}
    state = {"measuring": False, "stop": False, "count": 0}

    def fail(kind):
        if state["measuring"]:
            stats["failures"] += 1
            stats["failure_kinds"][kind] = stats["failure_kinds"].get(kind, 0) + 1

    def framed_replies(client):
        while len(client.buffer) >= 4:
            length = int.from_bytes(client.buffer[:4], "big")
            if len(client.buffer) < 4 + length:
                return
            payload = client.buffer[4:4 + length]
            client.buffer = client.buffer[4 + length:]
            yield payload

    raw_ends = (messages.HEY_THERE, b"-----END DH PARAMETERS-----\n",
                b"-----END PUBLIC KEY-----\n")

    def raw_replies(client):
        # The replies come in order, each ending in a known way.
        while client.buffer:
            end = raw_ends[min(client.replies, 2)]
            at = client.buffer.find(end)
            if at < 0:
                if any(client.buffer.strip() == r for r in messages.ERROR_REPLIES):
                    yield client.buffer
                return
            payload = client.buffer[:at + len(end)].strip()
            client.buffer = client.buffer[at + len(end):]
            yield payload

    replies_of = framed_replies if args.mode == "dh" else raw_replies

    class LoadClient(protocol.Protocol):
        """One DH handshake in lock step, with as little client work as possible."""

        def connectionMade(self):
            self.buffer = b""
            self.replies = 0
            self.done = False
            self.transport.setTcpNoDelay(True)
            self.transport.write(hello)

        def dataReceived(self, data):
            self.buffer += data
            for payload in replies_of(self):
                self.replies += 1
                if self.replies == 1:
                    if payload != messages.HEY_THERE:
                        return self.bad("greeting")
                    self.transport.write(params_request)
                elif self.replies == 2:
                    if payload.strip() != group.parameters_pem.strip():
                        return self.bad("parameters")
                    state["count"] += 1
                    self.transport.write(key_frames[state["count"] % len(key_frames)])
                else:
                    if not payload.startswith(messages.SERVER_KEY_PREFIX):
                        return self.bad("server key")
                    if state["count"] % 50 == 0:
                        group.load_peer_key(payload[len(messages.SERVER_KEY_PREFIX):])
                        stats["checked"] += 1
                    self.succeeded()
                    self.transport.loseConnection()
                    return

        def succeeded(self):
            self.done = True
            if state["measuring"]:
                stats["latencies"].append(time.perf_counter() - self.factory.started)

        def bad(self, what):
            fail(f"bad {what}")
            self.done = True
            self.transport.abortConnection()

        def connectionLost(self, reason):
            if not self.done:
                fail("connection lost")
            self.factory.next()

    if args.mode == "eke":
        from twisted.protocols.basic import LineReceiver

        from twisted_keyx.eke import crypto
        from twisted_keyx.chat.machine import ClientChat
        from twisted_keyx.eke.handshake import EKEClientHandshake, HandshakeFailed

        # A few RSA keys made in advance: a real client makes one per session
        # (about 50 ms), which would make this process the bottleneck; the
        # server cannot tell the difference.
        rsa_pool = [crypto.generate_rsa_key() for _ in range(8)]
        cheap = crypto.KdfLimits(min_memory=1)

        class EKELoadClient(LineReceiver):
            """One EKE handshake, then quit; the latency is to step 8."""

            delimiter = b"\n"
            MAX_LENGTH = 4096

            def connectionMade(self):
                self.done = False
                self.chat = None
                self.transport.setTcpNoDelay(True)
                state["count"] += 1
                key = rsa_pool[state["count"] % len(rsa_pool)]
                self.handshake = EKEClientHandshake(EKE_USER, EKE_PASSWORD, kdf_limits=cheap,
                                                    rsa_key_factory=lambda: key)
                self.sendLine(self.handshake.start())

            def lineReceived(self, line):
                try:
                    if self.chat is not None:
                        self.chat.receive(line)
                        self.done = True
                        self.transport.loseConnection()
                        return
                    reply = self.handshake.receive(line)
                except HandshakeFailed as e:
                    return LoadClient.bad(self, type(e).__name__)
                except Exception as e:  # ChatFailed and the like
                    return LoadClient.bad(self, type(e).__name__)
                if reply is not None:
                    self.sendLine(reply)
                if self.handshake.finished:
                    if state["measuring"]:
                        stats["latencies"].append(time.perf_counter() - self.factory.started)
                    self.chat = ClientChat(self.handshake.result)
                    self.sendLine(self.chat.quit())

            def connectionLost(self, reason):
                LoadClient.connectionLost(self, reason)

        client_protocol = EKELoadClient
    else:
        client_protocol = LoadClient

    class OneHandshake(protocol.ClientFactory):
        protocol = client_protocol

        def next(self):
            if not state["stop"]:
                self.started = time.perf_counter()
                reactor.connectTCP("127.0.0.1", args.port, self)

        def clientConnectionFailed(self, connector, reason):
            fail("connect failed")
            self.next()

    def start_measuring():
        state["measuring"] = True
        stats["started"] = time.perf_counter()
        print(json.dumps({"phase": "measuring"}), flush=True)

    def stop():
        state["stop"] = True
        stats["elapsed"] = time.perf_counter() - stats["started"]
        state["measuring"] = False
        print(json.dumps({"phase": "stopped"}), flush=True)
        reactor.callLater(1.0, reactor.stop)

    for _ in range(args.concurrency):
        OneHandshake().next()
    reactor.callLater(args.warmup, start_measuring)
    reactor.callLater(args.warmup + args.seconds, stop)
    started_cpu = time.process_time()
    reactor.run()
    lat = sorted(stats.pop("latencies"))
    stats.update(
        handshakes=len(lat),
        per_second=len(lat) / stats["elapsed"],
        p50_ms=1e3 * lat[len(lat) // 2] if lat else None,
        p99_ms=1e3 * lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None,
        mean_ms=1e3 * statistics.fmean(lat) if lat else None,
        load_cpu_s=time.process_time() - started_cpu,
    )
    print(json.dumps(stats))


def stall_main(args):
    """Entry point of the staller process: hold S connections mid-handshake,
    report when they are all held, time a fresh handshake, then wait."""
    raise_fd_limit()
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import defer, protocol, reactor, task
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    from twisted_keyx.dh import messages
    from twisted_keyx.dh.protocol import DHClientProtocol

    def frame(payload):
        return len(payload).to_bytes(4, "big") + payload

    held = []
    lost = [0]

    class Staller(protocol.Protocol):
        def connectionMade(self):
            self.replies = b""
            self.transport.write(frame(messages.HELLO) + frame(messages.PARAMS_REQUEST))

        def dataReceived(self, data):
            self.replies += data
            if b"-----END DH PARAMETERS-----" in self.replies and self not in held:
                self.replies = b""
                held.append(self)

        def connectionLost(self, reason):
            lost[0] += 1

    class Stallers(protocol.ClientFactory):
        protocol = Staller

    factory = Stallers()

    async def run():
        out = {}
        t0 = time.perf_counter()
        batch = 250
        for start in range(0, args.stall, batch):
            for _ in range(min(batch, args.stall - start)):
                reactor.connectTCP("127.0.0.1", args.port, factory, timeout=60)
            target = min(start + batch, args.stall)
            while len(held) + lost[0] < target:
                await task.deferLater(reactor, 0.01)
        out["held"] = len(held)
        out["lost_while_opening"] = lost[0]
        out["open_seconds"] = time.perf_counter() - t0
        print(json.dumps({"phase": "held", **out}), flush=True)
        # Wait for the parent to read the server's RSS, then a fresh client.
        await task.deferLater(reactor, args.settle)
        t1 = time.perf_counter()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", args.port, timeout=10)
        client = await connectProtocol(endpoint, DHClientProtocol())
        await client.finished
        out["fresh_handshake_ms"] = 1e3 * (time.perf_counter() - t1)
        out["still_held"] = len(held) - lost[0]
        print(json.dumps({"phase": "fresh", **out}), flush=True)
        for staller in held:
            staller.transport.abortConnection()
        await task.deferLater(reactor, 0.5)

    def main(reactor):
        return defer.Deferred.fromCoroutine(run())

    task.react(main)


# -- the server -------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``twistd -n keyx`` in its own process, on core 0, serving every
    handshake on ports of its own; ``port`` is the one for ``mode``."""

    def __init__(self, args, extra=(), mode="dh"):
        self.ports = {name: free_port() for name in ("dh", "raw", "eke")}
        self.port = self.ports[mode]
        self.dir = tempfile.mkdtemp(prefix="keyx-bench-")
        self.log = os.path.join(self.dir, "twistd.log")
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        command = pin_prefix(0) + [
            sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "-n", "--logfile", self.log, "--pidfile", "", "--reactor", "epoll",
        ]
        if args.profile:
            command += ["--profiler", "cprofile", "--profile", args.profile, "--savestats"]

        def endpoint(name):
            return f"tcp:{self.ports[name]}:interface=127.0.0.1:backlog=1024"

        command += ["keyx", "--dh", endpoint("dh"), "--dh-raw", endpoint("raw"),
                    "--eke", endpoint("eke"), "--users", eke_bench_user(self.dir),
                    "--group", args.group, *extra]
        # The daemon raises its own soft limit at start-up (twisted_keyx.limits).
        self.process = subprocess.Popen(command, cwd=self.dir, env=env)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                if self.process.poll() is not None:
                    raise SystemExit(f"the daemon exited ({self.process.returncode}); see {self.log}")
                time.sleep(0.05)
        else:
            raise SystemExit("the daemon did not start listening")
        time.sleep(0.3)

    def status(self, field):
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
        return None

    def cpu_seconds(self):
        with open(f"/proc/{self.process.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def stop(self):
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        # twistd rotates its log every megabyte: read every piece.
        log = ""
        for path in glob.glob(self.log + "*"):
            with open(path, errors="replace") as f:
                log += f.read()
        shutil.rmtree(self.dir, ignore_errors=True)
        return log


def run_child(role, args, extra=()):
    command = pin_prefix(1) + [sys.executable, os.path.abspath(__file__), f"--{role}",
                               "--port", str(args.port), "--group", args.group, *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True)


def mb(n):
    return f"{n / 2 ** 20:.1f} MB"


def drive(args, cpu_seconds):
    """Run the load generator against ``args.port``; sample ``cpu_seconds()``
    of the server exactly over the measured window."""
    child = run_child("load", args, ["--concurrency", str(args.concurrency),
                                     "--seconds", str(args.seconds),
                                     "--warmup", str(args.warmup), "--mode", args.mode])
    cpu = {}
    for line in child.stdout:
        message = json.loads(line)
        if message.get("phase") in ("measuring", "stopped"):
            cpu[message["phase"]] = cpu_seconds()
        else:
            result = message
    child.wait()
    result["server_cpu_s"] = cpu["stopped"] - cpu["measuring"]
    result["server_cpu_ms_per_handshake"] = 1e3 * result["server_cpu_s"] / max(result["handshakes"], 1)
    result["server_busy"] = result["server_cpu_s"] / result["elapsed"]
    return result


def throughput(args):
    server = Server(args, ["--max-per-ip", "0", "--max-connections", "0"], mode=args.mode)
    args.port = server.port
    try:
        rss0 = server.status("VmRSS")
        result = drive(args, server.cpu_seconds)
        rss1, hwm = server.status("VmRSS"), server.status("VmHWM")
    finally:
        log = server.stop()
    result.update(rss_before=rss0, rss_after=rss1, rss_peak=hwm,
                  log_tracebacks=log.count("Traceback"),
                  log_finished=log.count("finished (") + log.count("authenticated;"))
    return result


def canned_main(args):
    """The framework alone: Int32 framing on Twisted's epoll reactor, the same
    replies as the daemon, made in advance (no crypto, no checks, no log)."""
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import protocol, reactor
    from twisted.protocols.basic import Int32StringReceiver

    from twisted_keyx import ffdh
    from twisted_keyx.dh import messages

    group = ffdh.named_group(args.group)
    replies = [messages.HEY_THERE, group.parameters_pem,
               messages.SERVER_KEY_PREFIX + group.public_key_pem(group.generate_private_key())]

    class Canned(Int32StringReceiver):
        MAX_LENGTH = 8192
        count = 0

        def stringReceived(self, string):
            self.sendString(replies[self.count])
            self.count += 1
            if self.count == 3:
                self.transport.loseConnection()

    reactor.listenTCP(args.port, protocol.Factory.forProtocol(Canned),
                      interface="127.0.0.1", backlog=1024)
    reactor.run()


def framework(args):
    """CPU per handshake of a canned-reply server under the same load."""
    args.port = free_port()
    command = pin_prefix(0) + [sys.executable, os.path.abspath(__file__), "--canned-server",
                               "--port", str(args.port), "--group", args.group]
    process = subprocess.Popen(command)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", args.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)

        def cpu_seconds():
            with open(f"/proc/{process.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        return drive(args, cpu_seconds)
    finally:
        process.terminate()
        process.wait()


def stall(args):
    server = Server(args, ["--max-per-ip", "0", "--max-connections", "0", "--timeout", "300"])
    args.port = server.port
    try:
        rss0 = server.status("VmRSS")
        child = run_child("stall-client", args, ["--stall", str(args.stall),
                                                 "--settle", "2"])
        held = json.loads(child.stdout.readline())
        time.sleep(1.0)
        rss_held = server.status("VmRSS")
        fresh = json.loads(child.stdout.readline())
        child.wait(60)
        hwm = server.status("VmHWM")
    finally:
        log = server.stop()
    return dict(held, **fresh, rss_before=rss0, rss_held=rss_held, rss_peak=hwm,
                log_tracebacks=log.count("Traceback"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--group", default="ffdhe2048",
                        help="RFC 7919 group for the DH runs [default: ffdhe2048]")
    parser.add_argument("--concurrency", type=int, default=50,
                        help="clients running handshakes back to back [default: 50]")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="measured seconds per handshake mode [default: 20]")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="unmeasured seconds before each run [default: 2]")
    parser.add_argument("--stall", type=int, default=10000,
                        help="connections to hold mid-handshake (0: skip) [default: 10000]")
    parser.add_argument("--settle", type=float, default=2.0, help=argparse.SUPPRESS)
    parser.add_argument("--profile", metavar="FILE",
                        help="run the daemon under cProfile, stats saved to FILE")
    parser.add_argument("--modes", default="dh,raw,eke",
                        help="handshakes to drive, comma-separated [default: dh,raw,eke]")
    parser.add_argument("--mode", default="dh", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--stall-client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--canned-server", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        return load_main(args)
    if args.canned_server:
        return canned_main(args)
    if args.stall_client:
        return stall_main(args)

    raise_fd_limit()
    print(f"twisted-keyx benchmark: {time.strftime('%Y-%m-%d %H:%M')}, "
          f"{os.cpu_count()} cores, Python {sys.version.split()[0]}, pinning: "
          f"{'taskset' if pin_prefix(0) else 'none'}", flush=True)
    if pin_prefix(0):
        os.sched_setaffinity(0, {0})
    modes = [m for m in args.modes.split(",") if m]
    floor = measure_floor(args.group)
    eke_floor = measure_eke_floor() if "eke" in modes else None
    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    print(f"floor ({args.group}, server crypto per handshake, one core): "
          f"{1e3 * floor:.3f} ms = {1 / floor:.0f} handshakes/s", flush=True)

    f = framework(args)
    print(f"framework only (Twisted + Int32 framing, canned replies, no crypto, no log): "
          f"{f['server_cpu_ms_per_handshake']:.3f} ms CPU per handshake "
          f"({f['per_second']:.0f} handshakes/s, server {100 * f['server_busy']:.0f}% busy)",
          flush=True)
    best = floor / (floor + f["server_cpu_ms_per_handshake"] / 1e3)
    print(f"  so on this stack throughput / floor can be at most about {best:.3f}", flush=True)

    if eke_floor is not None:
        print(f"floor (EKE, server work per handshake and quit, one core): "
              f"{1e3 * eke_floor:.3f} ms = {1 / eke_floor:.0f} handshakes/s", flush=True)
    for mode in modes:
        args.mode = mode
        mode_floor = eke_floor if mode == "eke" else floor
        target = 0.80 if mode == "eke" else 0.85
        r = throughput(args)
        name = {"dh": f"DH framed, {args.group}", "raw": f"DH raw, {args.group}",
                "eke": "EKE (handshake + quit)"}[mode]
        print(f"{name}, concurrency {args.concurrency}, {args.seconds:g} s: "
              f"{r['per_second']:.0f} handshakes/s, p50 {r['p50_ms']:.2f} ms, "
              f"p99 {r['p99_ms']:.2f} ms, failures {r['failures']} {r['failure_kinds'] or ''}")
        cpu_hs = r["server_cpu_ms_per_handshake"]
        print(f"  throughput / floor = {r['per_second'] * mode_floor:.3f}; "
              f"server CPU {cpu_hs:.3f} ms per handshake, floor / that = "
              f"{1e3 * mode_floor / cpu_hs:.3f} (target >= {target}); "
              f"server {100 * r['server_busy']:.0f}% busy; "
              f"load generator CPU {r['load_cpu_s']:.1f} s")
        print(f"  server RSS {mb(r['rss_before'])} -> {mb(r['rss_after'])} "
              f"(peak {mb(r['rss_peak'])}); handshakes logged {r['log_finished']}; "
              f"tracebacks in log: {r['log_tracebacks']}", flush=True)

    if args.stall:
        s = stall(args)
        print(f"stall: {s['held']} connections held mid-handshake "
              f"(opened in {s['open_seconds']:.1f} s, {s['lost_while_opening']} lost); "
              f"server RSS {mb(s['rss_before'])} -> {mb(s['rss_held'])}: "
              f"+{mb(s['rss_held'] - s['rss_before'])} "
              f"({(s['rss_held'] - s['rss_before']) / max(s['held'], 1) / 1024:.1f} KB each; "
              f"target < 50 MB in total); "
              f"fresh handshake meanwhile: {s['fresh_handshake_ms']:.1f} ms; "
              f"still held after it: {s['still_held']}; "
              f"tracebacks in log: {s['log_tracebacks']}")


if __name__ == "__main__":
    main()
