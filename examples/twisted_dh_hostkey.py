"""The DH handshake with a host key, from your own Twisted program: ask the
server to sign the handshake, check its host key against a known_hosts
file, then use the session key as ``examples/twisted_dh.py`` does.

    python examples/twisted_dh_hostkey.py HOST PORT KNOWN_HOSTS "a message" [--accept-new]

against ``twistd -n keyx --dh tcp:7777:interface=127.0.0.1 --host-key
keyx-host-key``.  ``DHClientFactory(ask_host_key=True)`` sends ``Host key?``
as message 1, and the handshake only finishes if message 7, the server's
Ed25519 signature over the transcript, verifies (docs/hostkey.rst;
``docs/sequences/dh-hostkey.txt`` is the chart).  A verified signature says
that *some* key signed this handshake; KNOWN_HOSTS (OpenSSH's format, the
file ``keyx-client dh --known-hosts`` uses) says whether it is the key you
expect for HOST:PORT:

- pinned there: go on, print both fingerprints, seal the message;
- another key pinned there (a changed key: someone in the middle, or a
  replaced key), or the key revoked: refuse, one line, exit 1;
- not there: refuse, unless ``--accept-new``, which records it (first
  contact, trust on first use: check the fingerprint with the operator).

Pin a key by hand with its ``.pub`` line: ``echo "[127.0.0.1]:7777 $(cat
keyx-host-key.pub)" >> KNOWN_HOSTS``, or let ``keyx-client dh --accept-new
--known-hosts KNOWN_HOSTS`` record it.
"""

import sys

from twisted.internet import defer, endpoints, error, task

from twisted_keyx.trust import hostkey
from twisted_keyx.trust import knownhosts
from twisted_keyx.dh.protocol import DHClientFactory
from twisted_keyx.core.machine import HandshakeFailed
from twisted_keyx.core.transcript import session_key_fingerprint

# The key derivation and the sealing are twisted_dh.py's (same folder).
from twisted_dh import message_key, open_sealed, seal

PROGRAM = "twisted_dh_hostkey.py"


def refuse(text):
    """One line on stderr and exit status 1 (task.react turns a SystemExit
    into the exit; no traceback)."""
    raise SystemExit(f"{PROGRAM}: {text}")


def check_pin(known, host, port, public_key, accept_new):
    """Carry out what KNOWN_HOSTS says about the key that signed."""
    check = known.check(host, port, public_key)
    name = knownhosts.host_name(host, port)
    got = hostkey.host_key_fingerprint(public_key)
    if check.status is knownhosts.KNOWN:
        return
    if check.status is knownhosts.CHANGED:
        refuse(f"REFUSED: {name} signed with host key {got}, but {check.location} pins "
               "another key for it (someone in the middle, or a replaced key: ask the "
               "operator before you trust it)")
    if check.status is knownhosts.REVOKED:
        refuse(f"REFUSED: {name} signed with host key {got}, which {check.location} "
               "marks as revoked")
    if not accept_new:
        refuse(f"REFUSED: {name} is not in {known.path}; if {got} is its host key, "
               "pin it or run again with --accept-new")
    known.record(host, port, public_key)
    print(f"Recorded {name} with host key {got} in {known.path}")


async def run(reactor, host, port, known_hosts, text, accept_new):
    known = knownhosts.KnownHosts(known_hosts)
    endpoint = endpoints.HostnameEndpoint(reactor, host, port, timeout=10)
    try:
        protocol = await endpoint.connect(DHClientFactory(ask_host_key=True))
        result = await protocol.finished.addTimeout(10, reactor)
    except HandshakeFailed as e:
        # Among others: a server without a host key refuses "Host key?";
        # a signature that does not verify.
        refuse(f"the handshake failed: {e.reason}")
    except (error.ConnectError, OSError, defer.TimeoutError, defer.CancelledError) as e:
        refuse(f"cannot run the handshake with {host}:{port}: {e}")
    try:
        check_pin(known, host, port, result.host_public_key, accept_new)
    except knownhosts.KnownHostsError as e:
        refuse(str(e))
    key = message_key(result.session_key, result.transcript_hash)
    sealed = seal(key, text)
    print(f"Group: {result.group.name}")
    print(f"Host key fingerprint: {result.host_key_fingerprint}")
    print(f"Session key fingerprint: {session_key_fingerprint(result.session_key)}")
    print(f"Sealed message: {sealed.hex()}")
    print(f"Opens as: {open_sealed(key, sealed)!r}")


def main(argv):
    args = [a for a in argv[1:] if a != "--accept-new"]
    if len(args) != 4 or not args[1].isdigit():
        raise SystemExit(f"usage: {PROGRAM} HOST PORT KNOWN_HOSTS MESSAGE [--accept-new]")
    host, port, known_hosts, text = args[0], int(args[1]), args[2], args[3]
    accept_new = "--accept-new" in argv[1:]
    task.react(lambda reactor: defer.Deferred.fromCoroutine(
        run(reactor, host, port, known_hosts, text, accept_new)))


if __name__ == "__main__":
    main(sys.argv)
