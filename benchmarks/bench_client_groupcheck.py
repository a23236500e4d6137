"""What a hostile server's custom group costs ``keyx-client dh``, and
whether ``--timeout`` holds while the client checks it.

    python benchmarks/bench_client_groupcheck.py [--timeout 1]

A scripted server (a thread of this script, on 127.0.0.1) answers
message 1 and ``Params?`` with a custom group: at 4096 bits ffdhe4096's
safe prime with g = 5 (not the named group, so fully checked), at 8192
bits ffdhe8192 (which twisted-keyx does not name), from ``openssl genpkey``.
For each size, the real ``keyx-client dh --max-bits 8192`` runs twice:

- with a long timeout: the wall time from message 4 sent to message 5
  received (the check, child process start included), the client's
  wall, and its CPU seconds, children included (``os.wait4``);
- with ``--timeout T``: its wall (Python's start-up included), how long
  after message 4 it hung up, its exit status and its last line, which
  should be within T and the usual timeout message, whatever the check
  still needs.
"""

import argparse
import os
import socket
import subprocess
import sys
import threading
import time

from twisted_keyx.groups import ffdh
from twisted_keyx.dh import messages


def group_pem(bits):
    if bits == 4096:
        return ffdh.encode_parameters_pem(ffdh.FFDHE4096_P, 5)
    return subprocess.run(
        ["openssl", "genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt", f"group:ffdhe{bits}"],
        check=True, capture_output=True).stdout


def read_frame(conn):
    header = b""
    while len(header) < 4:
        chunk = conn.recv(4 - len(header))
        if not chunk:
            return None
        header += chunk
    length, payload = int.from_bytes(header, "big"), b""
    while len(payload) < length:
        chunk = conn.recv(length - len(payload))
        if not chunk:
            return None
        payload += chunk
    return payload


def send_frame(conn, payload):
    conn.sendall(len(payload).to_bytes(4, "big") + payload)


class Server(threading.Thread):
    """Answers one connection at a time; records when message 4 went and
    message 5 came."""

    def __init__(self, pem):
        super().__init__(daemon=True)
        self.pem = pem
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.check_seconds = None
        self.hung_up_after = None

    def run(self):
        while True:
            conn, _ = self.listener.accept()
            self.check_seconds = self.hung_up_after = None
            with conn:
                sent = None
                while True:
                    try:
                        message = read_frame(conn)
                    except ConnectionResetError:
                        message = None
                    if message is None:
                        self.hung_up_after = time.perf_counter() - sent
                        break
                    if message in (messages.HELLO, messages.HOST_KEY_REQUEST):
                        send_frame(conn, messages.HEY_THERE)
                    elif message == messages.PARAMS_REQUEST:
                        send_frame(conn, self.pem)
                        sent = time.perf_counter()
                    elif message.startswith(messages.CLIENT_KEY_PREFIX):
                        self.check_seconds = time.perf_counter() - sent
                        break  # hang up: the client has done its check


def run_client(port, timeout, home):
    argv = [sys.executable, "-m", "twisted_keyx.cli.client", "dh", "--host", "127.0.0.1",
            "--port", str(port), "--max-bits", "8192", "--timeout", str(timeout),
            "--known-hosts", os.path.join(home, "known_hosts")]
    start = time.perf_counter()
    child = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    last = stderr.decode().strip().splitlines()[-1] if stderr.strip() else ""
    return wall, usage.ru_utime + usage.ru_stime, child.returncode, last


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=1.0)
    args = parser.parse_args()
    home = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"bench-groupcheck-{os.getpid()}")
    os.makedirs(home, exist_ok=True)
    for bits in (4096, 8192):
        server = Server(group_pem(bits))
        server.start()
        wall, cpu, status, last = run_client(server.port, 600, home)
        print(f"{bits} bits, --timeout 600: check {server.check_seconds:.2f} s wall "
              f"(message 4 to 5), client {wall:.2f} s wall, {cpu:.2f} s CPU with its "
              f"child; exit {status}")
        wall, cpu, status, last = run_client(server.port, args.timeout, home)
        if server.hung_up_after is not None:
            what = f"it hung up {server.hung_up_after:.2f} s after message 4"
        else:
            what = f"it sent message 5 {server.check_seconds:.2f} s after message 4"
        print(f"{bits} bits, --timeout {args.timeout:g}: client {wall:.2f} s wall ({what}), "
              f"{cpu:.2f} s CPU, exit {status}: {last}")


if __name__ == "__main__":
    main()
