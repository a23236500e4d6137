"""The DH handshake, client side, on plain blocking sockets: no Twisted, no
twisted_keyx, only ``cryptography``.  It speaks the unframed wire (each
message written as is; docs/protocols.rst, "Unframed wire"), as
``twistd keyx --dh-raw`` serves it, and prints what ``keyx-client dh --raw``
prints.

    python examples/socket_client.py 127.0.0.1 7778

Read it beside docs/sequences/dh-x25519-unframed.txt: each step below is one
row of that chart.
"""

import hashlib
import hmac
import socket
import sys
import warnings

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dh, x25519
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.utils import CryptographyDeprecationWarning

# cryptography deprecates finite-field DH; this tutorial still shows it.
warnings.filterwarnings("ignore", category=CryptographyDeprecationWarning)

LABEL = b"twisted-keyx dh session key v1"


class Transcript:
    """SHA-256 over each message as 4-byte big-endian length || message."""

    def __init__(self):
        self.hash = hashlib.sha256()

    def add(self, message):
        self.hash.update(len(message).to_bytes(4, "big") + message)


class Reader:
    """Reads messages whose end is found from their content."""

    def __init__(self, sock):
        self.sock = sock
        self.buffer = b""

    def _fill(self):
        data = self.sock.recv(4096)
        if not data:
            raise SystemExit("the server closed the connection")
        self.buffer += data
        if len(self.buffer) > 16384:
            raise SystemExit("the server sent too much")

    def starts_with(self, text):
        """Whether the next message starts with ``text`` (read as far as needed)."""
        while len(self.buffer.lstrip()) < len(text):
            self._fill()
        return self.buffer.lstrip().startswith(text)

    def exactly(self, text):
        while len(self.buffer.lstrip()) < len(text):
            self._fill()
        self.buffer = self.buffer.lstrip()
        message, self.buffer = self.buffer[: len(text)], self.buffer[len(text):]
        if message != text:
            raise SystemExit(f"expected {text!r}, got {message!r}")
        return message

    def until_pem_end(self):
        """Up to and including the ``-----END ...-----`` line."""
        while True:
            start = self.buffer.find(b"-----END ")
            if start >= 0:
                end = self.buffer.find(b"-----", start + 9)
                if end >= 0:
                    end += 5
                    message, self.buffer = self.buffer[:end].strip(), self.buffer[end:]
                    return message + b"\n"
            self._fill()

    def parameters(self):
        while len(self.buffer.lstrip()) < 13:
            self._fill()
        if self.buffer.lstrip().startswith(b"Group: x25519"):
            return self.exactly(b"Group: x25519")
        return self.until_pem_end()


USAGE = "usage: python examples/socket_client.py HOST PORT"


def handshake(host, port):
    try:
        sock = socket.create_connection((host, port), timeout=10)
    except OSError as e:
        raise SystemExit(f"socket_client.py: cannot connect to {host}:{port}: "
                         f"{e.strerror or e}")
    with sock:
        reader, transcript = Reader(sock), Transcript()

        def send(message):
            sock.sendall(message)
            transcript.add(message.strip())

        send(b"Hello")                                          # 1
        transcript.add(reader.exactly(b"Hey there!"))           # 2
        send(b"Params?")                                        # 3
        parameters = reader.parameters()                        # 4
        transcript.add(parameters.strip())
        if parameters == b"Group: x25519":
            name, private_key = "x25519", x25519.X25519PrivateKey.generate()
        else:
            group = serialization.load_pem_parameters(parameters)
            name = f"{group.parameter_numbers().p.bit_length()}-bit finite field"
            private_key = group.generate_private_key()
        public_pem = private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        send(b"Client public key:" + public_pem)                # 5
        reader.exactly(b"Server public key:")                   # 6
        server_pem = reader.until_pem_end()
        transcript.add(b"Server public key:" + server_pem.strip())
    peer = serialization.load_pem_public_key(server_pem)
    secret = private_key.exchange(peer)
    if isinstance(private_key, dh.DHPrivateKey):
        size = (private_key.key_size + 7) // 8
        secret = secret.rjust(size, b"\0")
    session_key = HKDF(SHA256(), 32, salt=None,
                       info=LABEL + transcript.hash.digest()).derive(secret)
    return name, secret, session_key


def main(argv):
    if len(argv) != 3 or not argv[2].isdigit():
        print(USAGE, file=sys.stderr)
        raise SystemExit(2)
    host, port = argv[1], int(argv[2])
    try:
        name, secret, session_key = handshake(host, port)
    except OSError as e:  # a timeout, a reset
        raise SystemExit(f"socket_client.py: {host}:{port}: {e.strerror or e}")
    fingerprint = hmac.new(session_key, b"twisted-keyx fingerprint", hashlib.sha256)
    print(f"Group: {name}")
    print(f"Shared Secret: {secret.hex()}")
    print(f"Session key: {session_key.hex()}")
    print(f"Session key fingerprint: {fingerprint.hexdigest()[:16]}")


if __name__ == "__main__":
    main(sys.argv)
