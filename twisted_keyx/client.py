"""``keyx-client``: run a handshake against a twisted-keyx daemon.

Exit status: 0 success; 1 the handshake failed (the server refused, sent
something wrong or an invalid key); 2 usage error; 3 network error
(connection refused, timeout, connection lost before the server answered).
"""

import argparse
import json
import sys

from twisted.internet import defer, endpoints, error, task

from twisted_keyx import __version__
from twisted_keyx.dh.handshake import HandshakeFailed
from twisted_keyx.dh.protocol import DHClientProtocol, ServerHungUp
from twisted_keyx.session import fingerprint

EXIT_OK = 0
EXIT_HANDSHAKE_FAILED = 1
EXIT_USAGE = 2
EXIT_NETWORK = 3


class ClientError(Exception):
    """A failure to report in one line on stderr, with an exit status."""

    def __init__(self, message, status):
        super().__init__(message)
        self.status = status


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keyx-client",
        description="Run a twisted-keyx handshake against a server and print the result.",
    )
    parser.add_argument("--version", action="version", version=f"twisted-keyx {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    dh = commands.add_parser(
        "dh",
        help="the Diffie-Hellman handshake",
        description=(
            "Run the Diffie-Hellman handshake (Hello / Hey there! / Params? / "
            "parameters / public keys) and print the shared secret and the "
            "session key in hex."
        ),
    )
    dh.add_argument("--host", default="localhost", help="server host [default: localhost]")
    dh.add_argument("--port", type=_port, default=7777, help="server port [default: 7777]")
    dh.add_argument("--timeout", type=_positive, default=10.0,
                    help="seconds to wait for the connection and for the whole "
                         "handshake [default: 10]")
    dh.add_argument("--json", action="store_true",
                    help="print one JSON object (group, bits, shared_secret, "
                         "session_key, fingerprint) instead of text")
    dh.set_defaults(run=run_dh)
    return parser


def _port(text):
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"port out of range: {port}")
    return port


def _positive(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


async def connect(reactor, args, protocol_factory):
    """Connect to ``args.host``/``args.port``; raise :class:`ClientError`."""
    endpoint = endpoints.HostnameEndpoint(reactor, args.host, args.port, timeout=args.timeout)
    where = f"{args.host}:{args.port}"
    try:
        return await endpoints.connectProtocol(endpoint, protocol_factory())
    except error.ConnectionRefusedError:
        raise ClientError(f"cannot connect to {where}: connection refused", EXIT_NETWORK)
    except (error.TimeoutError, defer.CancelledError):
        raise ClientError(f"cannot connect to {where}: timed out", EXIT_NETWORK)
    except error.DNSLookupError:
        raise ClientError(f"cannot connect to {where}: unknown host", EXIT_NETWORK)
    except (error.ConnectError, OSError) as e:
        raise ClientError(f"cannot connect to {where}: {e}", EXIT_NETWORK)


async def run_dh(reactor, args, out):
    protocol = await connect(reactor, args, DHClientProtocol)
    finished = protocol.finished.addTimeout(args.timeout, reactor)
    try:
        result = await finished
    except defer.TimeoutError:
        raise ClientError(
            f"the handshake did not finish within {args.timeout:g} seconds", EXIT_NETWORK
        )
    except ServerHungUp as e:
        raise ClientError(e.reason, EXIT_NETWORK)
    except HandshakeFailed as e:
        raise ClientError(e.reason, EXIT_HANDSHAKE_FAILED)
    report = {
        "group": result.group.name,
        "bits": result.group.bits,
        "shared_secret": result.shared_secret.hex(),
        "session_key": result.session_key.hex(),
        "fingerprint": fingerprint(result.session_key),
    }
    if args.json:
        out.write(json.dumps(report) + "\n")
    else:
        out.write(
            f"Group: {report['group']} ({report['bits']} bits)\n"
            f"Shared Secret: {report['shared_secret']}\n"
            f"Session key: {report['session_key']}\n"
            f"Session key fingerprint: {report['fingerprint']}\n"
        )
    return EXIT_OK


async def run(reactor, args, out, err):
    """Run the command ``args`` names; return its exit status.

    A failure is one line on ``err``.  :func:`main` runs this under
    ``task.react``; tests await it in their own reactor.
    """
    try:
        return await args.run(reactor, args, out)
    except ClientError as e:
        err.write(f"keyx-client: {e}\n")
        return e.status


def main(argv=None, out=None, err=None):
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    args = build_parser().parse_args(argv)
    status = []

    async def run_and_keep_status(reactor):
        status.append(await run(reactor, args, out, err))

    def start(reactor):
        return defer.Deferred.fromCoroutine(run_and_keep_status(reactor))

    try:
        task.react(start)
    except SystemExit as e:
        if e.code not in (0, None) or not status:
            raise
    return status[0]


if __name__ == "__main__":
    sys.exit(main())
