"""The DH handshake over any Twisted client endpoint: TCP, a unix socket, or
TLS (``twistd keyx --dh unix:/tmp/keyx.sock`` or
``--dh ssl:7443:privateKey=key.pem``).

    python examples/endpoints_client.py unix:path=/tmp/keyx.sock
    python examples/endpoints_client.py ssl:host=127.0.0.1:port=7443:caCertsDir=DIR

Over TLS the handshake runs inside the TLS connection.  Give ``caCertsDir``
(a directory of trusted certificates) so the server's certificate is
checked; without it Twisted's ``ssl:`` client endpoint checks nothing, and
the DH handshake inside is as open to a man in the middle as ever (see
``keyx-lab mitm``).
"""

import sys

from twisted.internet import defer, endpoints, task

from twisted_keyx.dh.protocol import DHClientFactory
from twisted_keyx.core.transcript import session_key_fingerprint


async def run(reactor, description):
    protocol = await endpoints.clientFromString(reactor, description).connect(DHClientFactory())
    result = await protocol.finished.addTimeout(10, reactor)
    print(f"Group: {result.group.name} ({result.group.bits} bits)")
    print(f"Session key: {result.session_key.hex()}")
    print(f"Session key fingerprint: {session_key_fingerprint(result.session_key)}")


def main(argv):
    task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor, argv[1])))


if __name__ == "__main__":
    main(sys.argv)
