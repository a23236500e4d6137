"""An OPAQUE login from your own Twisted program, then one chat line under
the session's keys.

    echo "$PASSWORD" | python examples/opaque_login.py HOST PORT USER "a line"

against ``twistd -n keyx --opaque tcp:8089:interface=127.0.0.1`` with a
user made by ``keyx-admin adduser --scheme opaque``.  The password is the
first line of standard input, never a command-line argument (which ``ps``
shows every user); on a terminal it is asked without echo.

``OPAQUEClientFactory`` runs the four lines of the login (RFC 9807's KE1,
KE2, KE3, then ``ok``; docs/protocols.rst, OPAQUE, and
``docs/sequences/opaque.txt``).  The password never crosses the wire, not
even sealed under a key made from it: a recording of this login gives
nothing to test guesses against (``keyx-lab crack`` explains why).
``authenticated`` fires with the result: the 64-byte session key, which
both sides hold, and the server's public key from the envelope (print its
fingerprint and compare it with last time: ``keyx-client opaque`` does).
The session key is not used directly: the chat keys, one per direction, are
derived from it and the transcript, and ``say`` sends a line sealed under
the client's one.  The program prints the server's reply and quits.

Exit status 0, or 1 with one line on stderr (a wrong password and an
unknown user look the same: ``authentication failed``).
"""

import getpass
import sys

from twisted.internet import defer, endpoints, error, task

from twisted_keyx.core.machine import ProtocolFailed
from twisted_keyx.opaque.protocol import OPAQUEClientFactory
from twisted_keyx.trust.knownservers import server_key_fingerprint
from twisted_keyx.core.transcript import session_key_fingerprint

PROGRAM = "opaque_login.py"


def read_password():
    if sys.stdin.isatty():
        return getpass.getpass("Password: ")
    line = sys.stdin.readline()
    if not line:
        raise SystemExit(f"{PROGRAM}: no password on standard input")
    return line.rstrip("\r\n")


async def run(reactor, host, port, user, password, text):
    replies = []
    factory = OPAQUEClientFactory(user, password, reply_received=replies.append)
    try:
        protocol = await endpoints.HostnameEndpoint(reactor, host, port, timeout=10).connect(
            factory)
        result = await protocol.authenticated.addTimeout(30, reactor)
        print(f"Authenticated as {result.user}")
        print(f"Server key fingerprint: {server_key_fingerprint(result.server_public_key)}")
        print(f"Session key fingerprint: {session_key_fingerprint(result.session_key)}")
        protocol.say(text)
        protocol.quit()
        await protocol.finished.addTimeout(10, reactor)
    except ProtocolFailed as e:  # the login failed, or the chat broke
        raise SystemExit(f"{PROGRAM}: {e.reason}")
    except (error.ConnectError, OSError, defer.TimeoutError, defer.CancelledError) as e:
        raise SystemExit(f"{PROGRAM}: cannot log in at {host}:{port}: {e}")
    for reply in replies:
        print(f"Server replied: {reply}")


def main(argv):
    if len(argv) != 5 or not argv[2].isdigit():
        raise SystemExit(f"usage: {PROGRAM} HOST PORT USER LINE (the password on stdin)")
    host, port, user, text = argv[1], int(argv[2]), argv[3], argv[4]
    password = read_password()
    task.react(lambda reactor: defer.Deferred.fromCoroutine(
        run(reactor, host, port, user, password, text)))


if __name__ == "__main__":
    main(sys.argv)
