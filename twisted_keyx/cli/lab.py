"""``keyx-lab``: the attack lab, on loopback only (docs/protocols.rst, "Attack lab").

- ``keyx-lab mitm --listen ENDPOINT --target HOST:PORT``: a man in the middle
  of the unauthenticated DH handshake.  It serves the client one handshake
  and runs another with the daemon, and prints the secrets it now shares with
  each side: nothing in the DH handshake tells either end that the other end
  is not who it thinks.  A client that asks for the server's host key (its
  message 1 is ``Host key?``, which asks for message 7, the server's
  signature over the transcript; docs/hostkey.rst) has its question relayed:
  the lab asks the daemon ``Host key?`` too, runs its two handshakes as
  before and passes the daemon's message 7 on unchanged.  That signature
  covers the transcript of the lab's handshake with the daemon, not the
  client's, so the client refuses it; the lab says so, with both transcript
  hashes.  A daemon without a host key refuses ``Host key?``: so does the
  lab, with the daemon's reply.  With ``--host-key FILE`` the lab signs
  message 7 with a key of its own instead: a client that pinned the
  daemon's key refuses it as changed, and one meeting the host for the first
  time (``--accept-new``) records the lab's key (trust on first use).
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
import enum
import ipaddress
import sys
import time

from twisted_keyx import __version__
from twisted_keyx.observe import trace

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
    from twisted_keyx.service import endpointspec

    spec = endpointspec.parse(text)
    if spec.kind == "unix":
        return text
    if spec.kind == "tcp":
        interface = spec.keywords.get("interface")
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
    parser.add_argument("--version", action="version", version=f"twisted-keyx {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    mitm = commands.add_parser(
        "mitm", help="sit between a DH client and the daemon",
        description="Listen for a keyx-client dh, run a DH handshake with it and "
                    "another with the daemon at --target, and print the secrets "
                    "shared with each side. A client's 'Host key?' is relayed to the "
                    "daemon, and the daemon's signature (message 7) passed on: the lab "
                    "explains why a client that checks it refuses. " + LOOPBACK_ONLY)
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
    mitm.add_argument("--host-key", metavar="FILE",
                      help="sign message 7 with this host key of the lab's own (keyx-admin "
                           "hostkey -o FILE) instead of passing the daemon's on: a client that "
                           "pinned the daemon's key refuses it as changed, one meeting the host "
                           "for the first time may accept it")
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

def offline_attack(events):
    """What the recorded handshake in ``events`` gives an offline attacker:
    a :class:`twisted_keyx.core.handshakes.OfflineAttack`, or the text that
    says why there is nothing to attack.  The handshake is the registry
    entry (:mod:`twisted_keyx.core.handshakes`) whose machines recorded the
    first message that one knows how to read."""
    from twisted_keyx.core import handshakes

    for event in events:
        entry = handshakes.handshake_of_machine(event.machine)
        if entry is not None and entry.recording is not None:
            break
    else:
        raise LabError("the trace holds no password handshake keyx-lab can attack",
                       EXIT_NOT_FOUND)
    own = [e for e in events if handshakes.handshake_of_machine(e.machine) is entry]
    try:
        return handshakes.load_path(entry.recording)(own) if isinstance(
            entry.recording, str) else entry.recording(own)
    except ValueError as e:
        raise LabError(str(e), EXIT_NOT_FOUND) from None


def _bar(done, total, width=30):
    filled = width * done // total if total else width
    return "[" + "#" * filled + "." * (width - filled) + "]"


def crack(attack, guesses, err, clock=time.monotonic):
    """Try each guess against ``attack`` (an
    :class:`~twisted_keyx.core.handshakes.OfflineAttack`); return
    ``(password or None, tried, seconds)``."""
    start = clock()
    tried = 0
    total = len(guesses)
    for guess in guesses:
        found = guess if attack.test(guess) else None
        tried += 1
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
    attack = offline_attack(events)
    if isinstance(attack, str):
        out.write(attack)
        return EXIT_NOT_FOUND
    try:
        with open(args.wordlist, encoding="utf-8") as f:
            guesses = [line.rstrip("\r\n") for line in f if line.rstrip("\r\n")]
    except (OSError, UnicodeDecodeError) as e:
        raise LabError(f"cannot read the word list: {e}")
    out.write(f"{attack.summary}: {len(guesses)} guesses\n")
    out.flush()
    password, tried, seconds = crack(attack, guesses, err)
    rate = tried / seconds if seconds > 0 else 0.0
    if password is None:
        out.write(f"not found in {tried} guesses ({seconds:.1f} s, {rate:.1f} guesses/s)\n")
        return EXIT_NOT_FOUND
    out.write(f"password found after {tried} guesses ({seconds:.1f} s, "
              f"{rate:.1f} guesses/s): {password}\n")
    return EXIT_OK


# --- mitm ---------------------------------------------------------------------


def _secrets(result):
    from twisted_keyx.core.transcript import session_key_fingerprint

    return (f"shared secret {result.shared_secret[:16].hex()}..., session key "
            f"{result.session_key.hex()} (fingerprint {session_key_fingerprint(result.session_key)})")


class LabEvent(enum.Enum):
    """What moves the lab's side of the client's handshake on, besides the
    client's own messages: the daemon's answers, relayed."""

    DAEMON_GREETED = "the daemon's Hey there!"
    CLIENT_KEY_ASKED = "Client public key (host key asked)"
    DAEMON_SIGNED = "the daemon's message 7"


class RelayState(enum.Enum):
    AWAIT_DAEMON_GREETING = "waiting for the daemon's answer to Host key?"
    AWAIT_DAEMON_SIGNATURE = "waiting for the daemon's message 7"


def _relaying_handshake_class():
    from twisted_keyx.dh import messages
    from twisted_keyx.dh.handshake import DHServerHandshake, DHServerState, UnexpectedMessage
    from twisted_keyx.dh.messages import DHClientMessage

    class LabToClientHandshake(DHServerHandshake):
        """The lab's side of the client's DH handshake.  ``Hello`` is
        answered at once, as any server does; ``Host key?`` is relayed: the
        answer (``Hey there!``) waits for the daemon's (:meth:`daemon_greeted`),
        and after message 6 the machine waits for the daemon's message 7,
        which it passes on as it is (:meth:`relay_signature`).  The lab holds
        no host key of its own here: the signature is the daemon's."""

        TRANSITIONS = {
            **DHServerHandshake.TRANSITIONS,
            (DHServerState.AWAIT_HELLO, DHClientMessage.HOST_KEY_REQUEST):
                ("_on_relayed_request", RelayState.AWAIT_DAEMON_GREETING),
            (RelayState.AWAIT_DAEMON_GREETING, LabEvent.DAEMON_GREETED):
                ("_on_daemon_greeted", DHServerState.AWAIT_PARAMS_REQUEST),
            (DHServerState.AWAIT_CLIENT_KEY, LabEvent.CLIENT_KEY_ASKED):
                ("_on_client_key", RelayState.AWAIT_DAEMON_SIGNATURE),
            (RelayState.AWAIT_DAEMON_SIGNATURE, LabEvent.DAEMON_SIGNED):
                ("_on_daemon_signed", DHServerState.DONE),
        }

        #: Whether the client asked ``Host key?`` (and the lab relays it).
        relaying = False

        def receive(self, payload):
            kind = messages.classify_client_message(payload)
            if self.relaying and kind is DHClientMessage.CLIENT_KEY:
                kind = LabEvent.CLIENT_KEY_ASKED
            return self._dispatch(kind, payload)

        def _on_relayed_request(self, payload):
            self.relaying = True
            self._transcript.add(payload)
            return None  # Hey there! when the daemon has said it

        def daemon_greeted(self):
            """The daemon answered ``Host key?`` with ``Hey there!``: so do we."""
            return self._dispatch(LabEvent.DAEMON_GREETED, None)

        def _on_daemon_greeted(self, payload):
            self._transcript.add(self._received_form(messages.HEY_THERE))
            return messages.HEY_THERE

        def relay_signature(self, message):
            """Send the daemon's message 7 on, unchanged."""
            return self._dispatch(LabEvent.DAEMON_SIGNED, message)

        def _on_daemon_signed(self, message):
            return message

        def daemon_refused(self, reason):
            """The daemon cannot sign (or its handshake failed): refuse the
            client as the daemon refused us; returns the failure."""
            return self.refuse(UnexpectedMessage(reason))

    return LabToClientHandshake


def _signature_keeping_protocol(client_class):
    """The lab's client protocol to the daemon: it keeps message 7's bytes
    (``handshake.signature_message``) and fires ``greeted`` on ``Hey there!``."""
    from twisted.internet import defer

    from twisted_keyx.dh.handshake import DHClientState, DHClientHandshake

    class LabToDaemonHandshake(DHClientHandshake):
        signature_message = None

        def _on_host_key_signature(self, payload):
            self.signature_message = bytes(payload)
            return super()._on_host_key_signature(payload)

    class Upstream(client_class.protocol):
        def __init__(self, handshake=None):
            super().__init__(handshake)
            self.greeted = defer.Deferred()

        @classmethod
        def newHandshake(cls, **options):
            return LabToDaemonHandshake(received_form=cls.FRAMING.received_form, **options)

        def machineStepped(self, session, machine, payload, reply):
            if machine.state is DHClientState.AWAIT_PARAMETERS and not self.greeted.called:
                self.greeted.callback(None)

    return Upstream


def explain_pinned_refusal(number, client_result, daemon_result, signature_message):
    """Why the daemon's message 7, passed on, does not verify for the client:
    in plain words, with the two transcript hashes, each checked here."""
    from twisted_keyx.dh import hostauth

    public_key, signature = hostauth.parse_signature_message(signature_message)
    group_name = hostauth.signed_group_name(daemon_result.group)

    def verifies(transcript_hash):
        try:
            hostauth.verify(public_key, group_name, transcript_hash, signature)
        except hostauth.BadHostKeySignature:
            return "NO"
        return "yes"

    h_daemon = daemon_result.transcript_hash.hex()
    h_client = client_result.transcript_hash.hex()
    return (
        f"#{number} the lab passed the daemon's message 7 on to the client, unchanged: the\n"
        f"  daemon's host key {daemon_result.host_key_fingerprint} and its signature.  A client\n"
        "  that checks it (keyx-client dh does, always) refuses here, loudly (exit 1):\n"
        "  - The daemon signed H_daemon, the hash of the messages IT exchanged with the lab\n"
        f"    (the lab's public key, not the client's): {h_daemon[:32]}...\n"
        "  - The client checks the signature against H_client, the hash of the messages IT\n"
        f"    exchanged with the lab (its own key and the lab's other key): {h_client[:32]}...\n"
        "  - Two handshakes, two transcripts.  The signature binds the daemon's key to the\n"
        "    messages the daemon saw, which are not the ones the client saw.  Checked here:\n"
        f"    it verifies over H_daemon: {verifies(daemon_result.transcript_hash)}; "
        f"over H_client: {verifies(client_result.transcript_hash)}.\n"
        "  - A signature over H_client needs the daemon's private host key, which the lab\n"
        "    does not have; one made with a key of the lab's own would name another key\n"
        "    than the one the client pinned in known_hosts, refused as a changed key.\n"
        "  - Nor can the lab hide message 7: answering 'Host key?' as a server without a\n"
        "    host key does is refused too by a client whose known_hosts lists this host\n"
        "    (it expects a signature); only a client meeting the host for the first time\n"
        "    falls back to an unauthenticated Hello, with a warning.\n"
        "  So the client hangs up, and the session key the lab holds with it\n"
        "  (above) protects nothing: nothing was sent under it.\n")


def mitm_factory(reactor, target, group, out, raw=False, done=None, host_key=None):
    """The factory to listen with: each client gets its own handshake with
    the lab, and the lab opens its own to the daemon once the client's
    message 1 has arrived (asking the daemon ``Host key?`` if the client
    did).  ``host_key`` (a :class:`twisted_keyx.trust.hostkey.HostKey`): the lab
    signs message 7 with it instead of relaying the daemon's (the
    first-contact weakness, docs/hostkey.rst)."""
    from twisted.internet import endpoints

    from twisted_keyx.dh import messages
    from twisted_keyx.dh.handshake import DHServerState
    from twisted_keyx.dh.protocol import DHClientFactory, DHServerFactory
    from twisted_keyx.dh.raw import RawDHClientFactory, RawDHServerFactory

    server_class = RawDHServerFactory if raw else DHServerFactory
    client_class = RawDHClientFactory if raw else DHClientFactory
    relaying_class = _relaying_handshake_class()
    upstream_protocol = _signature_keeping_protocol(client_class)
    counter = [0]

    def say(text):
        out.write(text)
        out.flush()

    class Connection:
        """One intercepted client: its session with the lab, the lab's
        connection to the daemon, and what the daemon sent."""

        def __init__(self, number, session):
            self.number = number
            self.session = session
            self.upstream = None
            self.daemon_result = None

        def connect(self, ask_host_key):
            factory = client_class(ask_host_key=ask_host_key)
            factory.protocol = upstream_protocol
            trace.traced(factory, lambda p: trace.TextTracer(out, connection=self.number))
            endpoint_class = (endpoints.TCP6ClientEndpoint if ":" in target[0]
                              else endpoints.TCP4ClientEndpoint)
            d = endpoint_class(reactor, *target).connect(factory)
            d.addCallback(self.connected)
            d.addErrback(self.daemonFailed)

        def connected(self, upstream):
            self.upstream = upstream
            upstream.greeted.addCallback(lambda _: self.daemonGreeted())
            return upstream.finished.addCallback(self.daemonFinished)

        def daemonGreeted(self):
            machine = self.session.machine
            if not self.session.ended and machine.state is RelayState.AWAIT_DAEMON_GREETING:
                self.session.perform(machine.daemon_greeted)

        def daemonFinished(self, result):
            self.daemon_result = result
            host = (f"; the daemon proved its host key {result.host_key_fingerprint} "
                    "in message 7" if result.host_key_fingerprint else "")
            say(f"#{self.number} with the SERVER: {_secrets(result)}{host}\n")
            self.relay()

        def daemonFailed(self, failure):
            say(f"#{self.number} the handshake with the server failed: "
                f"{failure.getErrorMessage()}\n")
            machine = self.session.machine
            if not self.session.ended and isinstance(machine.state, RelayState):
                self.session.fail(machine.daemon_refused(
                    f"relayed: the daemon did not complete the handshake the client asked "
                    f"for ({failure.getErrorMessage()})"))

        def relay(self):
            """Message 7 goes on once the daemon has sent it and the
            client's side has reached it."""
            machine = self.session.machine
            if (self.daemon_result is not None and not self.session.ended
                    and machine.state is RelayState.AWAIT_DAEMON_SIGNATURE):
                self.session.perform(machine.relay_signature,
                                     self.upstream.handshake.signature_message)

    class InterceptedSession(server_class.protocol):
        """A client's session with the lab."""

        #: Its :class:`Connection`: the lab's own to the daemon.
        lab_connection: "Connection | None" = None

    class Intercepting(server_class):
        protocol = InterceptedSession

        def newHandshake(self):
            if host_key is not None:
                return super().newHandshake()  # signs with the lab's own key
            return relaying_class(self.group, self.private_key_factory,
                                  received_form=self.protocol.FRAMING.received_form)

        def buildProtocol(self, addr):
            counter[0] += 1
            protocol = super().buildProtocol(addr)
            protocol.tracer = trace.TextTracer(out, connection=counter[0])
            protocol.lab_connection = Connection(counter[0], protocol)
            return protocol

        def machineReceiving(self, session, machine, payload):
            if machine.state is not DHServerState.AWAIT_HELLO:
                return
            asked = payload == messages.HOST_KEY_REQUEST
            if asked and host_key is None:
                say(f"#{session.lab_connection.number} the client asked 'Host key?': it wants "
                    "message 7, the server's signature over the handshake.  The lab has "
                    "no key of the daemon's to sign with, so it asks the daemon the same "
                    "question and will pass the daemon's answer on.\n")
            elif asked:
                say(f"#{session.lab_connection.number} the client asked 'Host key?': the lab "
                    f"signs message 7 with its OWN host key {host_key.fingerprint}, "
                    "not the daemon's.\n")
            session.lab_connection.connect(ask_host_key=asked)

        def machineStepped(self, session, machine, payload, reply):
            session.lab_connection.relay()

        def machineFinished(self, session, machine):
            connection = session.lab_connection
            number, result = connection.number, machine.result
            say(f"client {session.peer}: with the CLIENT: {_secrets(result)}\n")
            if getattr(machine, "relaying", False):
                say(explain_pinned_refusal(number, result, connection.daemon_result,
                                           connection.upstream.handshake.signature_message))
            elif host_key is not None and result.host_public_key is not None:
                say(f"#{number} the lab signed message 7 with its own host key "
                    f"{host_key.fingerprint}.  A client that has pinned the daemon's key\n"
                    "  refuses it as a changed key.  A client that has never met this host\n"
                    "  cannot tell: on first contact (keyx-client dh --accept-new, or a 'yes'\n"
                    "  to the question) it records the LAB's key as the server's, and from then\n"
                    "  on trusts the lab and refuses the real daemon.  That is trust on first\n"
                    "  use: compare the fingerprint with the operator's (docs/hostkey.rst).\n")
            else:
                say("  Two different session keys: the lab reads and can rewrite "
                    "everything between them, and neither side can tell.\n")
            if done is not None:
                done(session.peer)

        def handshakeRejected(self, peer, reason):
            say(f"client {peer}: refused: {reason}\n")

    return Intercepting(group, host_key=host_key)


def run_mitm(args, out, err):
    from twisted.internet import defer, endpoints, task

    from twisted_keyx.groups import registry as groups

    try:
        group = groups.named(args.group)
    except ValueError as e:
        raise LabError(str(e))
    host_key = None
    if args.host_key:
        from twisted_keyx.trust import hostkey
        try:
            host_key = hostkey.load_host_key(args.host_key)
        except hostkey.HostKeyError as e:
            raise LabError(str(e))

    def start(reactor):
        finished = defer.Deferred()
        seen = []

        def done(peer):
            seen.append(peer)
            if args.count and len(seen) >= args.count and not finished.called:
                reactor.callLater(0.5, finished.callback, None)

        factory = mitm_factory(reactor, args.target, group, out, args.raw, done, host_key)
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
