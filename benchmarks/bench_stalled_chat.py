"""The daemon's memory under a stalled chat: a logged-in user who sends and
never reads.

    python benchmarks/bench_stalled_chat.py [--seconds 30]

Starts ``twistd -n keyx`` (pinned to core 0 when there are two; its EKE
port on 127.0.0.1, one user with a cheap scrypt), logs in over a plain
socket, then sends chat lines of 4,000 characters as fast as the socket
takes them, reading nothing, for ``--seconds``; then closes the connection;
``--rounds`` times (a second stalled chat shows whether the memory of the
first is reused).  Prints the daemon's RSS (``/proc/PID/status`` VmRSS)
after a first login, every 5 s while the user sends, and 1 s and 5 s after
the user has left, with how many bytes the user got the kernel to take.  The target: a
stalled chat costs the daemon under 1 MB, and its memory comes back when
the connection closes.
"""

import argparse
import os
import select
import socket
import sys
import time

BENCHMARKS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(BENCHMARKS), BENCHMARKS]

from keyxbench import modes, process, project  # noqa: E402
from keyxbench.clients import EKE_PASSWORD, EKE_USER  # noqa: E402


def mib(n):
    return f"{n / 2 ** 20:.2f} MiB"


def log_in(port):
    """A logged-in connection and its client chat machine."""
    crypto = project.eke.crypto
    handshake = project.eke.EKEClientHandshake(
        EKE_USER, EKE_PASSWORD, kdf_limits=crypto.KdfLimits(min_memory=1))
    sock = socket.create_connection(("127.0.0.1", port))
    buffer = [b""]
    line = handshake.start()
    while line is not None:
        sock.sendall(line + b"\n")
        try:
            reply = process.read_line(sock, buffer)
        except ConnectionError:
            raise SystemExit("the server hung up during the login") from None
        line = handshake.receive(reply)
    assert handshake.finished
    return sock, project.eke.ClientChat(handshake.result)


def stall(server, seconds, before):
    """One stalled chat of ``seconds``; returns the peak RSS seen."""
    sock, chat = log_in(server.port)
    sock.setblocking(False)
    sent = lines = 0
    pending = b""
    start = time.monotonic()
    next_report = start + 5
    peak = server.rss()
    while True:
        now = time.monotonic()
        if now >= next_report:
            rss = server.rss()
            peak = max(peak, rss)
            print(f"  {now - start:4.0f} s: daemon RSS {mib(rss)} ({rss - before:+,} bytes); "
                  f"the user has sent {sent:,} bytes ({lines:,} lines), read none")
            next_report += 5
        if now - start >= seconds:
            break
        if not pending:
            pending = chat.say("x" * 4000) + b"\n"
            lines += 1
        select.select([], [sock], [], 0.2)
        try:
            n = sock.send(pending)
        except BlockingIOError:
            continue
        sent += n
        pending = pending[n:]
    sock.close()
    return peak


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=2,
                        help="stalled chats one after the other [default: 2]")
    args = parser.parse_args()
    running = modes.Keyx("--eke").start(project.DEFAULT_GROUP)
    server = running.server
    process.pin_self(process.LOAD_CORE)
    try:
        time.sleep(1)
        idle = server.rss()
        sock, chat = log_in(server.port)  # a first login: what any login costs
        sock.close()
        time.sleep(1)
        before = server.rss()
        print(f"daemon RSS: {mib(idle)} idle, {mib(before)} after a first login and quit")
        for round in range(1, args.rounds + 1):
            print(f"stalled chat {round}:")
            peak = stall(server, args.seconds, before)
            time.sleep(1)
            after1 = server.rss()
            time.sleep(4)
            after5 = server.rss()
            print(f"  after the user left: {mib(after1)} at 1 s, {mib(after5)} at 5 s "
                  f"({after5 - before:+,} bytes); at its peak the stalled chat cost "
                  f"{peak - before:+,} bytes (target: under 1 MB: "
                  f"{'met' if peak - before < 1_000_000 else 'NOT met'})")
    finally:
        process.pin_self(None)
        log, _ = running.stop()
    tail = [line for line in log.splitlines() if "not logged" in line or "closed" in line]
    if tail:
        print("daemon log, last lines about the chats:", *tail[-4:], sep="\n  ")


if __name__ == "__main__":
    main()
