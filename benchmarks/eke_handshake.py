"""How long one EKE handshake takes on each side, without the network.

Runs the two sans-I/O machines against each other and times the calls of
each side separately: the client's cost is dominated by scrypt and the RSA
key generation, the server's by one RSA-OAEP encryption (it never runs
scrypt).  Then times a chat line and its reply.

    python benchmarks/eke_handshake.py [--rounds N] [--kdf-n N]
"""

import argparse
import statistics
import time

from twisted_keyx.eke import crypto
from twisted_keyx.chat.machine import ClientChat, ServerChat
from twisted_keyx.eke.handshake import EKEClientHandshake, EKEServerHandshake
from twisted_keyx.service.userfile import new_user


def one_handshake(users, password):
    server = EKEServerHandshake(users.get)
    client = EKEClientHandshake("alice", password)
    spent = {"client": 0.0, "server": 0.0}
    t = time.perf_counter()
    line = client.start()
    spent["client"] += time.perf_counter() - t
    while line is not None:
        t = time.perf_counter()
        line = server.receive(line)
        spent["server"] += time.perf_counter() - t
        t = time.perf_counter()
        line = client.receive(line)
        spent["client"] += time.perf_counter() - t
    return spent, server, client


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--kdf-n", type=int, default=crypto.DEFAULT_SCRYPT.n,
                        help="scrypt N of the user (r=8, p=1) [default: 32768]")
    args = parser.parse_args()
    kdf = crypto.ScryptParameters(args.kdf_n, 8, 1)
    t = time.perf_counter()
    users = {"alice": new_user("alice", "open sesame", kdf=kdf)}
    print(f"keyx-admin adduser ({kdf}): {1000 * (time.perf_counter() - t):.1f} ms")

    client_ms, server_ms, chat_us = [], [], []
    for _ in range(args.rounds):
        spent, server, client = one_handshake(users, "open sesame")
        assert server.finished and client.finished
        client_ms.append(1000 * spent["client"])
        server_ms.append(1000 * spent["server"])
        server_chat, client_chat = ServerChat(server.result), ClientChat(client.result)
        t = time.perf_counter()
        for i in range(100):
            client_chat.receive(server_chat.receive(client_chat.say(f"line {i}")))
        chat_us.append(1e6 * (time.perf_counter() - t) / 100)

    def show(label, values, unit):
        print(f"{label}: median {statistics.median(values):.2f} {unit}, "
              f"min {min(values):.2f}, max {max(values):.2f} ({args.rounds} rounds)")

    show("one handshake, client side", client_ms, "ms")
    show("one handshake, server side", server_ms, "ms")
    show("one chat line and its reply, both sides", chat_us, "us")


if __name__ == "__main__":
    main()
