"""A naive DH server, for comparison: what one would write in an afternoon.

    python benchmarks/peer_naive.py --port 8123 --params FILE [--log FILE]

Int32StringReceiver, cryptography for a group such as RFC 7919's ffdhe2048
(``--params``: PEM DH parameters; the benchmark writes the daemon's), the
same six messages as ``twistd keyx --dh`` (docs/benchmarks.rst), a range
check on the client's key (1 < y < p - 1, same p and g), one log line per
handshake, and nothing else: no limits, no timeouts, no subgroup check, no
transcript or session key.  It does not use twisted_keyx: it is the peer
``benchmarks/bench_daemon.py`` measures our server against.
"""

import argparse
import sys
import warnings

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.utils import CryptographyDeprecationWarning


def naive_protocol(parameters_pem, log):
    """The naive server's protocol class, serving ``parameters_pem`` (message
    4) and logging one line per handshake to ``log`` (a twisted.logger
    Logger).  Imports no reactor: keyxbench.inproc builds it in process.
    cryptography's FFDH deprecation warnings are the caller's to silence
    (:func:`main` does)."""
    from twisted.protocols.basic import Int32StringReceiver

    parameters = serialization.load_pem_parameters(parameters_pem)
    numbers = parameters.parameter_numbers()

    class NaiveDH(Int32StringReceiver):
        MAX_LENGTH = 8192

        def stringReceived(self, message):
            if message == b"Hello":
                self.sendString(b"Hey there!")
            elif message == b"Params?":
                self.sendString(parameters_pem)
            elif message.startswith(b"Client public key:"):
                try:
                    peer = serialization.load_pem_public_key(message[len(b"Client public key:"):])
                    y = peer.public_numbers().y
                    pn = peer.public_numbers().parameter_numbers
                    if (pn.p, pn.g) != (numbers.p, numbers.g) or not 1 < y < numbers.p - 1:
                        raise ValueError("bad key")
                except (ValueError, TypeError, AttributeError):
                    self.sendString(b"Invalid client public key, hanging up")
                    self.transport.loseConnection()
                    return
                key = parameters.generate_private_key()
                secret = key.exchange(peer)
                self.sendString(b"Server public key:" + key.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
                digest = hashes.Hash(hashes.SHA256())
                digest.update(secret)
                log.info("handshake with {peer} finished, secret {fp}",
                         peer=self.transport.getPeer().host, fp=digest.finalize()[:8].hex())
            else:
                self.sendString(b"I do not understand you, hanging up")
                self.transport.loseConnection()

    return NaiveDH


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--params", required=True, help="PEM DH parameters of the group")
    parser.add_argument("--log", help="log file [default: standard output]")
    args = parser.parse_args()
    # cryptography deprecates finite-field DH; the comparison is about it.
    warnings.simplefilter("ignore", CryptographyDeprecationWarning)

    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import protocol, reactor
    from twisted.logger import Logger, globalLogBeginner, textFileLogObserver

    out = open(args.log, "a") if args.log else sys.stdout
    globalLogBeginner.beginLoggingTo([textFileLogObserver(out)], redirectStandardIO=False)
    with open(args.params, "rb") as f:
        parameters_pem = f.read()  # message 4, as the file has it
    reactor.listenTCP(args.port, protocol.Factory.forProtocol(naive_protocol(parameters_pem, Logger())),
                      interface="127.0.0.1", backlog=1024)
    reactor.run()


if __name__ == "__main__":
    main()
