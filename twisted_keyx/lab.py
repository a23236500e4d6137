"""``keyx-lab``: the attack lab, on loopback only (docs/protocols.rst, "Attack lab").

- ``keyx-lab mitm --listen ENDPOINT --target HOST:PORT``: a man in the middle
  of the unauthenticated DH handshake.  It serves the client one handshake
  and runs another with the daemon, and prints the secrets it now shares with
  each side: nothing in the DH handshake tells either end that the other end
  is not who it thinks.  A client that asks for the server's host key (its
  message 1 is ``Host key?``, which asks for the signature of message 7,
  docs/hostkey.rst) is refused, traced, by the lab's machines: the lab has
  no host key to sign with, so a client that pins the server's key stops
  there instead of being intercepted.
- ``keyx-lab crack --trace-file F --wordlist W``: the offline dictionary
  attack on a recorded EKE handshake (``keyx-client eke --trace-file F``).
  Step 2 gives the salt and the scrypt cost, step 3 the box E_pw(pk); for
  each guess, scrypt(guess, salt) is tried as the AES-GCM key of that box,
  and the tag says at once whether the guess is right.  On a recorded OPAQUE
  login it explains why there is nothing to test a guess against.

Both refuse any address that is not loopback (127.0.0.0/8, ::1, a unix
socket): this is a lab for one's own machine.
"""

import argparse
import ipaddress
import sys
import time

from twisted_keyx import trace

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2

LOOPBACK_ONLY = ("keyx-lab works on loopback only: it refuses any address that is "
                 "not 127.0.0.0/8, ::1, localhost or a unix socket.")


class LabError(Exception):
    def __init__(self, message, status=EXIT_USAGE):
        super().__init__(message)
        self.status = status


def _is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def loopback_target(text):
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"not HOST:PORT: {text!r}")
    if not _is_loopback(host):
        raise argparse.ArgumentTypeError(f"{host!r} is not a loopback address; {LOOPBACK_ONLY}")
    return host.strip("[]"), int(port)


def loopback_listen(text):
    """A server endpoint string that listens on loopback only: ``unix:PATH``,
    or ``tcp:PORT:interface=ADDR`` with ADDR loopback."""
    kind = text.partition(":")[0]
    if kind == "unix":
        return text
    if kind == "tcp":
        interface = None
        for field in text.split(":")[2:]:
            name, _, value = field.partition("=")
            if name == "interface":
                interface = value.replace("\\:", ":")
        if interface is not None and _is_loopback(interface):
            return text
        raise argparse.ArgumentTypeError(
            f"{text!r} does not listen on loopback only (add :interface=127.0.0.1); "
            + LOOPBACK_ONLY)
    raise argparse.ArgumentTypeError(f"{text!r}: only tcp:PORT:interface=127.0.0.1 or "
                                     "unix:PATH; " + LOOPBACK_ONLY)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keyx-lab",
        description="Attack the handshakes, on your own machine: a man in the middle "
                    "of the DH handshake, and the offline dictionary attack on EKE. "
                    + LOOPBACK_ONLY,
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    mitm = commands.add_parser(
        "mitm", help="sit between a DH client and the daemon",
        description="Listen for a keyx-client dh, run a DH handshake with it and "
                    "another with the daemon at --target, and print the secrets "
                    "shared with each side. " + LOOPBACK_ONLY)
    mitm.add_argument("--listen", required=True, type=loopback_listen, metavar="ENDPOINT",
                      help="where the client connects (tcp:PORT:interface=127.0.0.1 "
                           "or unix:PATH)")
    mitm.add_argument("--target", required=True, type=loopback_target, metavar="HOST:PORT",
                      help="the daemon's DH port (a loopback address)")
    mitm.add_argument("--group", default="ffdhe2048",
                      help="the group served to the client [default: ffdhe2048]")
    mitm.add_argument("--raw", action="store_true", help="the unframed wire on both sides")
    mitm.add_argument("--count", type=int, default=0, metavar="N",
                      help="stop after N intercepted clients [default: 0, never]")
    mitm.set_defaults(run=run_mitm)

    crack = commands.add_parser(
        "crack", help="the offline dictionary attack on a recorded EKE handshake",
        description="Read a handshake recorded with keyx-client eke --trace-file and "
                    "test each word of the word list against it: scrypt(word, salt) "
                    "opens the step 3 box only for the right password.")
    crack.add_argument("--trace-file", required=True, metavar="F")
    crack.add_argument("--wordlist", required=True, metavar="W",
                       help="one guess per line (UTF-8)")
    crack.set_defaults(run=run_crack)
    return parser


# --- crack --------------------------------------------------------------------

OPAQUE_EXPLANATION = """\
This is an OPAQUE login: there is nothing here to test a guess against.
  - The password never enters the wire, not even under a key derived from it:
    the client blinds it (an OPRF, RFC 9497), and the blinded element is a
    random-looking group element whatever the password is.
  - The server's OPRF evaluation uses the server's OPRF key, which never
    travels: without it, a guess cannot be turned into the randomized password
    that opens the envelope.
  - The key exchange messages are authenticated with keys that come from that
    randomized password; a recording gives no equation in the password alone.
Each guess needs the server's help: an online attack, one login per guess,
which the server can count and throttle (docs/opaque.rst).
"""


def load_eke_recording(events):
    """``(user, salt, kdf, box3)`` from a recorded EKE handshake."""
    from twisted_keyx.eke import crypto, messages

    eke = [e for e in events if e.machine.startswith("EKE")]
    if len(eke) < 3:
        raise LabError("the trace holds no EKE handshake up to step 3", EXIT_NOT_FOUND)
    user = eke[0].payload.decode("utf-8")
    try:
        salt, n, r, p = messages.parse_yes(eke[1].payload)
        box = messages.decode_box(eke[2].payload, 3)
    except messages.MalformedLine as e:
        raise LabError(f"the recorded steps 2 and 3 do not parse: {e}", EXIT_NOT_FOUND)
    return user, salt, crypto.ScryptParameters(n, r, p), box


def _bar(done, total, width=30):
    filled = width * done // total if total else width
    return "[" + "#" * filled + "." * (width - filled) + "]"


def crack(user, salt, kdf, box, guesses, err, clock=time.monotonic):
    """Try each guess; return ``(password or None, tried, seconds)``."""
    from twisted_keyx.eke import crypto

    start = clock()
    tried = 0
    total = len(guesses)
    for guess in guesses:
        key = crypto.derive_password_key(crypto.normalize_password(guess), salt, kdf)
        tried += 1
        try:
            crypto.open_box(key, 3, user, box)
            found = guess
        except crypto.CryptoError:
            found = None
        elapsed = clock() - start
        rate = tried / elapsed if elapsed > 0 else 0.0
        err.write(f"\r{_bar(tried, total)} {tried}/{total} {rate:.1f} guesses/s")
        err.flush()
        if found is not None:
            err.write("\n")
            return found, tried, elapsed
    err.write("\n")
    return None, tried, clock() - start


def run_crack(args, out, err):
    try:
        events = trace.read_trace(args.trace_file)
    except (OSError, trace.TraceFormatError) as e:
        raise LabError(str(e))
    if any("opaque" in e.machine.lower() for e in events):
        out.write(OPAQUE_EXPLANATION)
        return EXIT_NOT_FOUND
    user, salt, kdf, box = load_eke_recording(events)
    try:
        with open(args.wordlist, encoding="utf-8") as f:
            guesses = [line.rstrip("\r\n") for line in f if line.rstrip("\r\n")]
    except (OSError, UnicodeDecodeError) as e:
        raise LabError(f"cannot read the word list: {e}")
    out.write(f"user {user!r}, salt {salt.hex()}, {kdf}: {len(guesses)} guesses\n")
    out.flush()
    password, tried, seconds = crack(user, salt, kdf, box, guesses, err)
    rate = tried / seconds if seconds > 0 else 0.0
    if password is None:
        out.write(f"not found in {tried} guesses ({seconds:.1f} s, {rate:.1f} guesses/s)\n")
        return EXIT_NOT_FOUND
    out.write(f"password found after {tried} guesses ({seconds:.1f} s, "
              f"{rate:.1f} guesses/s): {password}\n")
    return EXIT_OK


# --- mitm ---------------------------------------------------------------------


def _secrets(result):
    from twisted_keyx.session import fingerprint

    return (f"shared secret {result.shared_secret[:16].hex()}..., session key "
            f"{result.session_key.hex()} (fingerprint {fingerprint(result.session_key)})")


def mitm_factory(reactor, target, group, out, raw=False, done=None):
    """The factory to listen with: each client gets its own handshake with
    the lab, and the lab opens its own to the daemon."""
    from twisted.internet import endpoints

    from twisted_keyx.dh.protocol import DHClientFactory, DHServerFactory
    from twisted_keyx.dh.raw import RawDHClientFactory, RawDHServerFactory

    server_class = RawDHServerFactory if raw else DHServerFactory
    client_class = RawDHClientFactory if raw else DHClientFactory
    counter = [0]

    class Intercepting(server_class):
        def buildProtocol(self, addr):
            counter[0] += 1
            number = counter[0]
            protocol = super().buildProtocol(addr)
            protocol.tracer = trace.TextTracer(out, connection=number)
            protocol.intercepted = number
            upstream = trace.traced(client_class(), lambda p: trace.TextTracer(
                out, connection=number))
            d = endpoints.TCP4ClientEndpoint(reactor, *target).connect(upstream) if ":" not in \
                target[0] else endpoints.TCP6ClientEndpoint(reactor, *target).connect(upstream)
            d.addCallback(lambda p: p.finished)
            d.addCallbacks(
                lambda result: out.write(f"#{number} with the SERVER: {_secrets(result)}\n"),
                lambda f: out.write(f"#{number} the handshake with the server failed: "
                                    f"{f.getErrorMessage()}\n"))
            return protocol

        def handshakeFinished(self, peer, result):
            out.write(f"client {peer}: with the CLIENT: {_secrets(result)}\n"
                      "  Two different session keys: the lab reads and can rewrite "
                      "everything between them, and neither side can tell.\n")
            out.flush()
            if done is not None:
                done(peer)

        def handshakeRejected(self, peer, reason):
            out.write(f"client {peer}: refused: {reason} (if the client asked Host key?, "
                      "the lab has no host key to sign message 7 with: a client that "
                      "pins the server's host key stops here, not intercepted)\n")
            out.flush()

    return Intercepting(group)


def run_mitm(args, out, err):
    from twisted.internet import defer, endpoints, task

    from twisted_keyx import groups

    try:
        group = groups.named(args.group)
    except ValueError as e:
        raise LabError(str(e))

    def start(reactor):
        finished = defer.Deferred()
        seen = []

        def done(peer):
            seen.append(peer)
            if args.count and len(seen) >= args.count and not finished.called:
                reactor.callLater(0.5, finished.callback, None)

        factory = mitm_factory(reactor, args.target, group, out, args.raw, done)
        d = endpoints.serverFromString(reactor, args.listen).listen(factory)

        def listening(port):
            out.write(f"keyx-lab mitm: listening on {args.listen}, relaying to "
                      f"{args.target[0]}:{args.target[1]}\n")
            out.flush()
            return finished

        return d.addCallback(listening)

    task.react(start)
    return EXIT_OK


def main(argv=None, out=None, err=None):
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    args = build_parser().parse_args(argv)
    try:
        return args.run(args, out, err)
    except LabError as e:
        err.write(f"keyx-lab: {e}\n")
        return e.status


if __name__ == "__main__":
    sys.exit(main())
