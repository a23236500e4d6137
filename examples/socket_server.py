"""The DH handshake, server side, on plain blocking sockets, in X25519: one
client at a time, no Twisted, no twisted_keyx, only ``cryptography``.  It
speaks the unframed wire (docs/protocols.rst, "Unframed wire"); try it with
``keyx-client dh --raw --port 7778`` or ``examples/socket_client.py``.

    python examples/socket_server.py 7778 [--once]

It listens on 127.0.0.1 only.  It prints the port it listens on (useful
with port 0), then each session key.  It has no host key: a client that
opens with ``Host key?`` (keyx-client does) gets the tutorial's ``I do not
understand you, hanging up``, and starts again with ``Hello``
(docs/hostkey.rst).
"""

import socket
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from socket_client import LABEL, Reader, Transcript

#: The tutorial server's answer to anything it does not expect.
UNEXPECTED = b"I do not understand you, hanging up"

USAGE = "usage: python examples/socket_server.py PORT [--once]"


def serve_one(conn):
    reader, transcript = Reader(conn), Transcript()

    def send(message):
        conn.sendall(message)
        transcript.add(message.strip())

    if not reader.starts_with(b"Hello"):                        # 1
        # "Host key?" (or anything else): no host key here.
        conn.sendall(UNEXPECTED)
        raise SystemExit("not Hello (a client asking for a host key?): answered "
                         + UNEXPECTED.decode())
    transcript.add(reader.exactly(b"Hello"))
    send(b"Hey there!")                                         # 2
    transcript.add(reader.exactly(b"Params?"))                  # 3
    send(b"Group: x25519")                                      # 4
    reader.exactly(b"Client public key:")                       # 5
    client_pem = reader.until_pem_end()
    transcript.add(b"Client public key:" + client_pem.strip())
    private_key = x25519.X25519PrivateKey.generate()
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    send(b"Server public key:" + public_pem)                    # 6
    peer = serialization.load_pem_public_key(client_pem)
    if not isinstance(peer, x25519.X25519PublicKey):
        raise SystemExit("not an X25519 key")
    secret = private_key.exchange(peer)
    return HKDF(SHA256(), 32, salt=None, info=LABEL + transcript.hash.digest()).derive(secret)


def main(argv):
    if len(argv) not in (2, 3) or not argv[1].isdigit() or argv[2:] not in ([], ["--once"]):
        print(USAGE, file=sys.stderr)
        raise SystemExit(2)
    port = int(argv[1])
    once = "--once" in argv
    try:
        server = socket.create_server(("127.0.0.1", port))
    except (OSError, OverflowError) as e:
        raise SystemExit(f"socket_server.py: cannot listen on 127.0.0.1:{port}: "
                         f"{getattr(e, 'strerror', None) or e}")
    with server:
        print(f"listening on 127.0.0.1:{server.getsockname()[1]}", flush=True)
        while True:
            conn, address = server.accept()
            with conn:
                conn.settimeout(10)
                try:
                    session_key = serve_one(conn)
                except SystemExit as e:
                    print(f"{address[0]}:{address[1]}: {e}", flush=True)
                    continue
                except OSError as e:  # a timeout, a reset
                    print(f"{address[0]}:{address[1]}: {e}", flush=True)
                    continue
            print(f"Session key: {session_key.hex()}", flush=True)
            if once:
                return


if __name__ == "__main__":
    main(sys.argv)
