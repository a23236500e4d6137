"""A Twisted TLS 1.3 server, for comparison: an authenticated key exchange
(X25519, the server signs with an Ed25519 certificate) as Twisted serves it.

    python benchmarks/peer_tls.py --port 8124 --directory DIR [--groups X25519MLKEM768]

Makes a self-signed Ed25519 certificate for ``localhost`` in DIR
(``cert.pem``, ``key.pem``: the load generator verifies the server against
``cert.pem``), then serves TLS 1.3 only on Twisted's ``ssl:`` endpoint
(:class:`~twisted.internet.endpoints.SSL4ServerEndpoint`), key exchange
X25519 as the client offers it (the report at exit
shows the groups negotiated).  Each connection: a full handshake, then the client
sends ``Hello`` and the server answers ``Hey there!`` and closes.  On
SIGINT it prints a JSON line with the protocol versions and key-exchange
groups it negotiated, so that the benchmark can show what was measured.
``--groups`` restricts the server's key-exchange groups (OpenSSL's list
syntax): ``X25519MLKEM768``, the hybrid post-quantum group of TLS, which
cryptography's bundled OpenSSL offers (the load generator's client for it
is then pyOpenSSL's, on the same OpenSSL: keyxbench.clients.PyOpenSSLTLSClient).
"""

import argparse
import collections
import datetime
import json
import os
import signal

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID


def make_certificate(directory):
    """A self-signed Ed25519 certificate for localhost; returns (cert, key) paths."""
    key = ed25519.Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, None))
    cert_path, key_path = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--directory", required=True, help="where to write the certificate")
    parser.add_argument("--groups", metavar="LIST",
                        help="the only key-exchange groups the server accepts, in OpenSSL's "
                             "syntax (X25519MLKEM768) [default: OpenSSL's]")
    args = parser.parse_args()
    cert_path, key_path = make_certificate(args.directory)

    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import protocol, reactor, ssl
    from twisted.internet.endpoints import SSL4ServerEndpoint

    with open(cert_path, "rb") as f:
        certificate = ssl.PrivateCertificate.loadPEM(f.read() + open(key_path, "rb").read())

    # TLS 1.3 only.  The key-exchange group is the client's first choice
    # that the server supports; the benchmark's client (the ssl module, on
    # the system's OpenSSL 3.0) offers a key share for X25519 only, and the
    # report at exit shows what was negotiated.
    options = ssl.CertificateOptions(privateKey=certificate.privateKey.original,
                                     certificate=certificate.original,
                                     raiseMinimumTo=ssl.TLSVersion.TLSv1_3)
    if args.groups:
        from OpenSSL._util import lib

        context = options.getContext()  # built once, then cached by CertificateOptions
        if lib.SSL_CTX_set1_curves_list(context._context, args.groups.encode("ascii")) != 1:
            parser.error(f"OpenSSL does not know the groups {args.groups!r}")
    seen = collections.Counter()

    class Answer(protocol.Protocol):
        def dataReceived(self, data):
            connection = self.transport.getHandle()
            seen[f"{connection.get_protocol_version_name()} {connection.get_group_name()} "
                 f"{connection.get_cipher_name()}"] += 1
            self.transport.write(b"Hey there!")
            self.transport.loseConnection()

    endpoint = SSL4ServerEndpoint(reactor, args.port, options, backlog=1024, interface="127.0.0.1")
    endpoint.listen(protocol.Factory.forProtocol(Answer))

    def report(*_):
        print(json.dumps({"negotiated": dict(seen)}), flush=True)
        reactor.callFromThread(reactor.stop)

    signal.signal(signal.SIGINT, report)
    reactor.run(installSignalHandlers=False)


if __name__ == "__main__":
    main()
