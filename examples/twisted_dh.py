"""Use the library from your own Twisted program: run the DH handshake with
``DHClientFactory``, then use the session key.

The key is only the start: derive a key for each purpose from it (HKDF with
a label of your own), never use it twice for two things.  Here: one
AES-256-GCM key, and one message sealed under it, which the server's side of
the same handshake can open (it derives the same key).

    python examples/twisted_dh.py tcp:host=127.0.0.1:port=7777 "a message"

prints the session key fingerprint (compare it with the daemon's log) and
the sealed message in hex.
"""

import os
import sys

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from twisted.internet import defer, endpoints, task

from twisted_keyx.dh.protocol import DHClientFactory
from twisted_keyx.core.transcript import session_key_fingerprint, hkdf_sha256

#: Our own label: a key for this program only.
AEAD_LABEL = b"examples/twisted_dh.py message key v1"


def message_key(session_key, transcript_hash):
    """One AES-256-GCM key from the session key, bound to this handshake."""
    return hkdf_sha256(session_key, AEAD_LABEL + transcript_hash)


def seal(key, text):
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, text.encode("utf-8"), None)


def open_sealed(key, sealed):
    return AESGCM(key).decrypt(sealed[:12], sealed[12:], None).decode("utf-8")


async def run(reactor, description, text):
    endpoint = endpoints.clientFromString(reactor, description)
    protocol = await endpoint.connect(DHClientFactory())
    result = await protocol.finished.addTimeout(10, reactor)
    key = message_key(result.session_key, result.transcript_hash)
    sealed = seal(key, text)
    print(f"Group: {result.group.name}")
    print(f"Session key fingerprint: {session_key_fingerprint(result.session_key)}")
    print(f"Sealed message: {sealed.hex()}")
    print(f"Opens as: {open_sealed(key, sealed)!r}")


def main(argv):
    description, text = argv[1], argv[2]
    task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor, description, text)))


if __name__ == "__main__":
    main(sys.argv)
