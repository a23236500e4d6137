"""``keyx-client``: run a handshake against a twisted-keyx daemon.

Exit status: 0 success; 1 the handshake failed (the server refused, sent
something wrong or an invalid key; for EKE also a failed authentication or a
broken chat); 2 usage error; 3 network error (connection refused, timeout,
connection lost before the server answered); 4 too many attempts for this
user, refused unchecked by the server's guess throttle (the line says when to
try again); 5 the server cannot check passwords right now (its store is
down); 130 interrupted (Ctrl-C).
"""

import argparse
import contextlib
import functools
import ipaddress
import json
import re
import signal
import sys
import threading

from twisted.internet import defer, endpoints, error, fdesc, stdio, task

from twisted_keyx import __version__
from twisted_keyx.groups import ffdh
from twisted_keyx.groups import check as groupcheck
from twisted_keyx.groups import registry as groups
from twisted_keyx.trust import knownhosts
from twisted_keyx.observe import trace
from twisted_keyx.dh.handshake import (
    UnexpectedReply,
    HostKeyRequestRefused,
    HostKeyVerificationFailed,
)
from twisted_keyx.dh import messages as dh_messages
from twisted_keyx.dh.protocol import DHClientFactory
from twisted_keyx.dh.raw import RawDHClientFactory
from twisted_keyx.chat.machine import ChatFailed, ServerClosedChat
from twisted_keyx.cli.console import ChatConsole
from twisted_keyx.login.prompts import (
    PasswordError,
    ask_password,
    password_file_warning,
    read_password_file,
    user_name_argument,
)
from twisted_keyx.core import handshakes
from twisted_keyx.core.machine import AuthenticationFailed, HandshakeFailed, ServerHungUp
from twisted_keyx.core.refusals import ServerUnavailable, TooManyAttempts
from twisted_keyx.core.peers import host_port
from twisted_keyx.core.transcript import session_key_fingerprint

EXIT_OK = 0
EXIT_HANDSHAKE_FAILED = 1
EXIT_USAGE = 2
EXIT_NETWORK = 3
#: The server refused the attempt without checking the password
#: (twisted_keyx.core.refusals): the guess throttle, or its store down.
EXIT_TOO_MANY_ATTEMPTS = 4
EXIT_SERVER_UNAVAILABLE = 5
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C

EXIT_STATUS_HELP = (
    "Exit status: 0 success; 1 the handshake failed; 2 usage error; "
    "3 network error; 4 too many attempts for this user (try again later); "
    "5 the server cannot check passwords right now; 130 interrupted (Ctrl-C)."
)


class ClientError(Exception):
    """A failure to report in one line on stderr, with an exit status."""

    def __init__(self, message, status):
        super().__init__(message)
        self.status = status


class Interruption:
    """Tells Ctrl-C from a server that hangs up.

    Under :func:`task.react`, SIGINT (or SIGTERM) stops the reactor, and
    stopping it closes the connection: the handshake or the chat would then
    report a lost connection.  Nothing else stops the reactor before the
    command is done, so a shutdown that begins while it runs is an
    interruption.  It is reported at once, on ``err``: once the reactor
    stops, a pending connection attempt or timer never ends, and the command
    may never get to say anything.
    """

    MESSAGE = "keyx-client: interrupted\n"

    def __init__(self, err):
        self.err = err
        self.happened = False
        self.done = False

    def watch(self, reactor):
        reactor.addSystemEventTrigger("before", "shutdown", self.reactorStopping)

    def reactorStopping(self):
        if not self.done and not self.happened:
            self.happened = True
            self.err.write(self.MESSAGE)
            self.err.flush()


HOST_HELP = ("server host name or IP address (no :PORT, which is --port's job) "
             "[default: localhost]")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keyx-client",
        description="Run a twisted-keyx handshake against a server and print the result.",
        epilog=EXIT_STATUS_HELP,
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
        epilog=EXIT_STATUS_HELP,
    )
    dh.add_argument("--host", type=_host, default="localhost", help=HOST_HELP)
    dh.add_argument("--port", type=_port, default=7777, help="server port [default: 7777]")
    dh.add_argument("--timeout", type=_positive, default=10.0,
                    help="seconds to wait for the connection and for the whole "
                         "handshake [default: 10]")
    dh.add_argument("--json", action="store_true",
                    help="print one JSON object (group, bits, shared_secret, "
                         "session_key, fingerprint, host_key_fingerprint) instead of text")
    dh.add_argument("--max-bits", type=ffdh.bits_argument, default=groups.DEFAULT_MAX_BITS, metavar="N",
                    help="refuse a finite-field group of more than N bits from the "
                         f"server, before checking it ({ffdh.MIN_BITS} to {ffdh.MAX_BITS}) "
                         f"[default: {groups.DEFAULT_MAX_BITS}]")
    dh.add_argument("--groups", type=_groups, default=None, metavar="NAME[,NAME...]",
                    help="the groups this client accepts from the server, which picks one "
                         "(message 4); another is refused before the client sends its key. "
                         f"Names: {', '.join(groups.policy_names())} ({groups.CUSTOM}: "
                         "any other finite-field group) [default: all of them]")
    dh.add_argument("--raw", action="store_true",
                    help="speak the socket tutorial's unframed wire format (each "
                         "message sent as is, no length prefix), for a daemon "
                         "listening with --dh-raw or for the tutorial's own server "
                         "(docs/howto/tutorial-scripts.rst)")
    dh.add_argument("--known-hosts", metavar="FILE", default=None,
                    help="known hosts file, OpenSSH format: the host keys this client "
                         "trusts (docs/hostkey.rst) [default: "
                         "$XDG_CONFIG_HOME/twisted-keyx/known_hosts, i.e. "
                         "~/.config/twisted-keyx/known_hosts]")
    dh.add_argument("--accept-new", action="store_true",
                    help="record the host key of a server not yet known without asking "
                         "(for scripts); a changed key is still refused")
    dh.add_argument("--require-host-key", action="store_true",
                    help="refuse a server that does not sign the handshake with a host key "
                         "(the tutorial's server, twistd keyx --no-host-key)")
    dh.set_defaults(run=run_dh)

    password_commands = []
    for entry in handshakes.password_handshakes():
        command = commands.add_parser(entry.name, help=entry.title,
                                      description=entry.client_description)
        _password_command_arguments(command, entry.client_port)
        for flags, keywords in entry.client_options:
            command.add_argument(*flags, **keywords)
        command.set_defaults(run=functools.partial(run_password, entry))
        add_commands = entry.load("client_commands")
        if add_commands is not None:  # OPAQUE's register and passwd
            add_commands(command, ClientKit(entry))
        password_commands.append(command)
    for command in (dh, *password_commands):
        add_trace_options(command)
    return parser


def add_trace_options(command):
    """``--trace``, ``--show-secrets`` and ``--trace-file`` (docs/protocols.rst, Traces)."""
    command.add_argument("--trace", action="store_true",
                         help="print every message on stderr as it crosses the wire: "
                              "direction, state before and after, size, summary")
    command.add_argument("--show-secrets", action="store_true",
                         help="with --trace: also print the session key (and DH "
                              "shared secret) when the handshake finishes")
    command.add_argument("--trace-file", metavar="FILE",
                         help="write the exact bytes of every message to FILE as JSON "
                              "lines (docs/protocols.rst, Traces), which keyx-lab reads")


def with_tracing(args, factory, err=None):
    """``factory`` with the tracers ``args`` asks for; returns it and the
    file tracer (or None), to close."""
    err = err if err is not None else _err(args)
    file_tracer = open_trace_file(args)
    text = trace.TextTracer(err, show_secrets=args.show_secrets) if getattr(
        args, "trace", False) else None
    if file_tracer is not None or text is not None:
        tracer = trace.Tracers(text, file_tracer)
        trace.traced(factory, lambda protocol: tracer)
    return factory, file_tracer


def open_trace_file(args):
    """The :class:`~twisted_keyx.observe.trace.FileTracer` ``--trace-file``
    asks for, its file open, or None; a file that cannot be written is a
    usage error, said in one line before anything goes on the wire."""
    if not getattr(args, "trace_file", None):
        return None
    file_tracer = trace.FileTracer(args.trace_file)
    try:
        file_tracer.open()
    except OSError as e:
        raise ClientError(f"cannot write the trace file {args.trace_file}: "
                          f"{e.strerror or e}", EXIT_USAGE) from None
    return file_tracer


def _password_command_arguments(command, port):
    """The options ``eke`` and ``opaque`` share."""
    command.add_argument("--user", required=True, type=user_name_argument, metavar="NAME",
                         help="the user name")
    command.add_argument("--host", type=_host, default="localhost", help=HOST_HELP)
    command.add_argument("--port", type=_port, default=port,
                         help=f"server port [default: {port}]")
    command.add_argument("--password-file", metavar="F",
                         help="read the password from the first line of F; without it "
                              "the password is asked on the terminal")
    command.add_argument("--timeout", type=_positive, default=10.0,
                         help="seconds to wait for the connection, for the handshake, "
                              "and for the server to confirm quit [default: 10]")


def _port(text):
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"port out of range: {port}")
    return port


NOT_A_HOST = "not a host name or an IP address: {!r}"

#: One label of a host name (RFC 1123 section 2.1): letters, digits and
#: inner hyphens, 63 characters at most.
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")


def _host(text):
    """A host name or an IP address, as HostnameEndpoint accepts them: the
    endpoint only says "invalid hostname" when it is asked to connect."""
    try:
        ipaddress.ip_address(text)
        return text
    except ValueError:
        pass
    try:
        ascii_name = text.encode("idna").decode("ascii")  # an IDN: its xn-- form
    except UnicodeError:
        ascii_name = None
    name = ascii_name[:-1] if ascii_name and ascii_name.endswith(".") else ascii_name
    if name and len(name) <= 253 and all(map(_HOST_LABEL.match, name.split("."))):
        return text
    if text.startswith("["):
        hint = "; write an IPv6 address without brackets"
    elif ":" in text:
        hint = "; give the port with --port, not as host:port"
    elif "/" in text:
        hint = "; keyx-client connects over TCP only"
    else:
        hint = ""
    raise argparse.ArgumentTypeError(f"{NOT_A_HOST.format(text)}{hint}")


def _groups(text):
    try:
        return groups.parse_groups_option(text)
    except groups.GroupError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


async def connect(reactor, args, factory):
    """Connect ``factory``'s protocol to ``args.host``/``args.port`` and
    return it; raise :class:`ClientError`."""
    endpoint = endpoints.HostnameEndpoint(reactor, args.host, args.port, timeout=args.timeout)
    where = host_port(args.host, args.port)
    try:
        return await endpoint.connect(factory)
    except error.ConnectionRefusedError:
        raise ClientError(f"cannot connect to {where}: connection refused", EXIT_NETWORK)
    except (error.TimeoutError, defer.CancelledError):
        raise ClientError(f"cannot connect to {where}: timed out", EXIT_NETWORK)
    except error.DNSLookupError:
        raise ClientError(f"cannot connect to {where}: unknown host", EXIT_NETWORK)
    except ValueError:
        # What _host let through but the endpoint's IDNA 2008 check refuses.
        raise ClientError(NOT_A_HOST.format(args.host), EXIT_USAGE)
    except (error.ConnectError, OSError) as e:
        raise ClientError(f"cannot connect to {where}: {e}", EXIT_NETWORK)


async def aborted(reactor):
    """Give the reactor the turn in which an aborted connection closes its
    socket.  Cancelling a handshake aborts its connection, and Twisted closes
    the socket on its next turn, which never comes if the command returns and
    the reactor stops first (the socket would leak: ResourceWarning)."""
    await task.deferLater(reactor, 0, lambda: None)


async def await_handshake(reactor, timeout, outcome, wording=None, hint=None):
    """Wait at most ``timeout`` seconds for the handshake's ``outcome`` (a
    Deferred); return its result or raise :class:`ClientError`.

    A :class:`HandshakeFailed` is reported as its reason, or as the format
    string ``wording`` gives for its class (``{}`` is the reason).
    ``hint(timed_out)``, if given, says what to add to a failure (e.g. that
    this looks like the other handshake's port); a hint replaces ``wording``.
    """
    hint = hint or (lambda timed_out: "")
    try:
        return await outcome.addTimeout(timeout, reactor)
    except defer.TimeoutError:
        await aborted(reactor)
        raise ClientError(
            f"the handshake did not finish within {timeout:g} seconds{hint(True)}", EXIT_NETWORK
        )
    except ServerHungUp as e:
        raise ClientError(e.reason + hint(False), EXIT_NETWORK)
    except TooManyAttempts as e:
        raise ClientError(e.reason, EXIT_TOO_MANY_ATTEMPTS)
    except ServerUnavailable as e:
        raise ClientError(e.reason, EXIT_SERVER_UNAVAILABLE)
    except HandshakeFailed as e:
        message = e.reason
        extra = hint(False)
        for kind, template in (wording or {}).items() if not extra else ():
            if isinstance(e, kind):
                message = template.format(e.reason)
                break
        raise ClientError(message + extra, EXIT_HANDSHAKE_FAILED)


#: How many of the server's first bytes the client keeps to tell the two
#: handshakes apart.
_FIRST_BYTES = 64


def recording_first_bytes(factory):
    """``factory``, its protocols keeping the server's first bytes in
    ``first_bytes``: which handshake they look like says whether the user
    gave the other handshake's port."""
    base = factory.protocol

    class Recording(base):
        first_bytes = b""

        def dataReceived(self, data):
            if len(self.first_bytes) < _FIRST_BYTES:
                self.first_bytes += data[: _FIRST_BYTES - len(self.first_bytes)]
            super().dataReceived(data)

    Recording.__name__ = base.__name__
    factory.protocol = Recording
    return factory


SILENT_SERVER_HINT = ("; the server sent nothing: is this an EKE port? "
                      "(an EKE server waits for a user name)")
LINE_SERVER_HINT = ": is this an EKE port? (the server answered with a line, as EKE does)"
FRAMED_SERVER_HINT = ": is this a DH port? (the server answered in the DH handshake's framing)"
UNFRAMED_SERVER_HINT = ": is this a DH port? (the server answered as an unframed DH server does)"


def _looks_like_a_line(first_bytes):
    """What an EKE server sends: printable ASCII up to a newline."""
    line, newline, _ = first_bytes.partition(b"\n")
    return bool(newline and line) and all(32 <= b < 127 for b in line.rstrip(b"\r"))


def dh_port_hint(protocol):
    """For ``keyx-client dh``: a hint when the server seems to speak EKE."""

    def hint(timed_out):
        if timed_out and not protocol.first_bytes:
            return SILENT_SERVER_HINT
        return LINE_SERVER_HINT if _looks_like_a_line(protocol.first_bytes) else ""

    return hint


def eke_port_hint(protocol):
    """For ``keyx-client eke``: a hint when the server seems to speak DH:
    a framed DH message starts with its 4-byte length, whose first byte is
    0 (no DH message is 16 MiB); an unframed DH server refuses the user
    name with its ``I do not understand you``."""

    def hint(timed_out):
        first = protocol.first_bytes
        if first[:1] == b"\0":
            return FRAMED_SERVER_HINT
        if first.startswith(dh_messages.UNEXPECTED_MESSAGE_PREFIX):
            return UNFRAMED_SERVER_HINT
        return ""

    return hint


#: A bad response is most often the other framing: say what to try.
OTHER_FRAMING_HINT = {
    False: " (an unframed server, such as twistd keyx --dh-raw or the tutorial's, needs --raw)",
    True: " (a framed server, such as twistd keyx --dh, needs no --raw)",
}


def dh_client_factory(raw=False, max_bits=groups.DEFAULT_MAX_BITS, ask_host_key=False,
                      reactor=None, accepted=None):
    """The DH client factory for one framing, whose handshakes refuse groups
    of more than ``max_bits`` bits from the server, and any group not in
    ``accepted`` (``--groups``; None: all), and, with ``ask_host_key``, ask
    for the host key signature (docs/hostkey.rst).
    A custom group is checked in a child process
    (:mod:`twisted_keyx.groups.check`), so that the reactor, and with it
    ``--timeout``, runs on meanwhile."""
    accept = functools.partial(groups.from_parameters_message, max_bits=max_bits,
                               accepted=accepted)
    check = functools.partial(groupcheck.check_parameters_message, max_bits=max_bits,
                              reactor=reactor, accepted=accepted)
    return (RawDHClientFactory if raw else DHClientFactory)(
        check_parameters=check, accept_parameters=accept, ask_host_key=ask_host_key)


class _NoHostKey(Exception):
    """The server answered ``Host key?`` with its error reply."""


def _no_host_key(failure):
    failure.trap(HostKeyRequestRefused)
    raise _NoHostKey()


def _bad_signature(args):
    """A message 7 that does not verify: refused, naming the known_hosts
    entry the host has, if any."""
    def refuse(failure):
        failure.trap(HostKeyVerificationFailed)
        name = knownhosts.host_name(args.host, args.port)
        text = knownhosts.bad_signature_text(name, failure.value.reason).rstrip("\n")
        known = knownhosts.KnownHosts(args.known_hosts)
        try:
            line = known.find(args.host, args.port)
        except knownhosts.KnownHostsError:
            line = None
        if line is not None:
            text += f" (its key is known in {known.path}:{line})"
        raise ClientError(text, EXIT_HANDSHAKE_FAILED)
    return refuse


def _cut_before_signature(args, protocol):
    """The connection ended after message 6, before message 7: for a known
    host (or --require-host-key) that is a stripped signature, refused as
    loudly as a missing one; otherwise the hang-up it is."""
    def check(failure):
        failure.trap(ServerHungUp)
        if protocol.handshake.awaiting_signature:
            check_unsigned(args, _QuietWarnings())
        return failure
    return check


class _QuietWarnings:
    """Where check_unsigned's warning goes when the hang-up is reported instead."""

    def write(self, text):
        pass


async def _dh_handshake(reactor, args, ask_host_key):
    factory, file_tracer = with_tracing(
        args, dh_client_factory(args.raw, args.max_bits, ask_host_key, reactor,
                                accepted=args.groups))
    try:
        protocol = await connect(reactor, args, recording_first_bytes(factory))
        outcome = protocol.finished.addErrback(_no_host_key).addErrback(_bad_signature(args))
        outcome.addErrback(_cut_before_signature(args, protocol))
        return await await_handshake(
            reactor, args.timeout, outcome,
            {UnexpectedReply: "{}" + OTHER_FRAMING_HINT[args.raw]},
            hint=dh_port_hint(protocol),
        )
    finally:
        if file_tracer is not None:
            file_tracer.close()


def _refuse(text):
    raise ClientError(text.rstrip("\n"), EXIT_HANDSHAKE_FAILED)


@contextlib.contextmanager
def ctrl_c_interrupts():
    """Within the block, Ctrl-C raises KeyboardInterrupt, as Python's own
    handler does.  The first-contact question reads the terminal while the
    reactor waits; the reactor's SIGINT handler only asks the reactor to stop
    once it gets the turn back, so the question went on as if nothing had
    happened, and the answer then met a stopped reactor."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def check_host_key(args, result, err, open_terminal=knownhosts.open_terminal):
    """Carry out :func:`twisted_keyx.trust.knownhosts.decide` for a handshake whose
    message 7 verified; raise :class:`ClientError` to refuse."""
    known = knownhosts.KnownHosts(args.known_hosts)
    terminal = None if args.accept_new else open_terminal()
    try:
        decision = knownhosts.decide(
            known, args.host, args.port, result.host_public_key,
            accept_new=args.accept_new, require_host_key=args.require_host_key,
            interactive=terminal is not None)
        action = decision.action
        if action is knownhosts.Action.REFUSE:
            _refuse(decision.text)
        if action is knownhosts.Action.ASK:
            name = knownhosts.host_name(args.host, args.port)
            try:
                with ctrl_c_interrupts():
                    accepted = knownhosts.ask_first_contact(
                        name, result.host_public_key, terminal.read_line, terminal.write)
            except KeyboardInterrupt:
                raise ClientError("interrupted", EXIT_INTERRUPTED) from None
            if not accepted:
                _refuse("host key verification failed: not accepted")
            action = knownhosts.Action.RECORD
            decision = knownhosts.HostKeyDecision(action, knownhosts.added_text(name))
        if action is knownhosts.Action.RECORD:
            known.record(args.host, args.port, result.host_public_key)
            err.write(decision.text)
    except knownhosts.KnownHostsError as e:
        raise ClientError(str(e), EXIT_HANDSHAKE_FAILED) from None
    finally:
        if terminal is not None:
            terminal.close()


def check_unsigned(args, err):
    """A server that offered no signature: refuse if the host is known or
    --require-host-key, else warn (docs/hostkey.rst, "The client")."""
    known = knownhosts.KnownHosts(args.known_hosts)
    try:
        decision = knownhosts.decide(known, args.host, args.port, None,
                                     require_host_key=args.require_host_key)
    except knownhosts.KnownHostsError as e:
        raise ClientError(str(e), EXIT_HANDSHAKE_FAILED) from None
    if decision.action is knownhosts.Action.REFUSE:
        _refuse(decision.text)
    err.write("keyx-client: " + decision.text)


async def run_dh(reactor, args, out):
    err = getattr(args, "err", sys.stderr)
    try:
        result = await _dh_handshake(reactor, args, ask_host_key=True)
    except _NoHostKey:
        # A server without a host key (the tutorial's, --no-host-key): the
        # design's fallback, a new connection with plain Hello
        # (docs/hostkey.rst, "Asking").
        check_unsigned(args, err)
        result = await _dh_handshake(reactor, args, ask_host_key=False)
    else:
        check_host_key(args, result, err)
    report = {
        "group": result.group.name,
        "bits": result.group.bits,
        "shared_secret": result.shared_secret.hex(),
        "session_key": result.session_key.hex(),
        "fingerprint": session_key_fingerprint(result.session_key),
        "host_key_fingerprint": result.host_key_fingerprint,
    }
    if args.json:
        out.write(json.dumps(report) + "\n")
    else:
        out.write(
            f"Group: {report['group']} ({report['bits']} bits)\n"
            f"Host key fingerprint: {report['host_key_fingerprint'] or 'none (unauthenticated)'}\n"
            f"Shared Secret: {report['shared_secret']}\n"
            f"Session key: {report['session_key']}\n"
            f"Session key fingerprint: {report['fingerprint']}\n"
        )
    return EXIT_OK


def _err(args):
    """Where warnings go: the ``err`` :func:`run` was given."""
    return getattr(args, "err", sys.stderr)


def _read_password(args):
    try:
        if args.password_file:
            password = read_password_file(args.password_file)
            warning = password_file_warning(args.password_file)
            if warning:
                _err(args).write(f"keyx-client: warning: {warning}\n")
            return password
        return ask_password(f"Password for {args.user}: ")
    except PasswordError as e:
        raise ClientError(str(e), EXIT_USAGE)
    except KeyboardInterrupt:
        # Asked before task.react runs the reactor: Python's own SIGINT
        # handler is still in place.
        raise ClientError("interrupted", EXIT_INTERRUPTED)


async def run_password(entry, reactor, args, out, password=None, then=None):
    """``keyx-client NAME`` for the password handshake ``entry`` of the
    handshake registry (:mod:`twisted_keyx.core.handshakes`): log in, then
    chat (or, given ``then``, ``await then(protocol)`` instead: its return
    is the exit status).  ``password``: the one already asked, if any."""
    # A pin of what the server showed at the first login (EKE's salt and
    # cost: twisted_keyx.eke.pins), found before the password is asked.
    pin = _client_pin(entry, args)
    if password is None:
        password = _read_password(args)
    console = ChatConsole()
    after_login = entry.load("after_login")

    def authenticated(result, protocol):
        if pin is not None:
            warning = pin.logged_in(protocol.handshake)
            if warning:
                _err(args).write(f"keyx-client: warning: {warning}\n")
        if after_login is not None:
            after_login(result, args.host, args.port, out, _err(args))

    extra = {k["dest"]: getattr(args, k["dest"]) for _, k in entry.client_options}
    if pin is not None:
        extra.update(pin.options)
    try:
        return await _password_session(
            reactor, args, out, console,
            entry.load("client")(args.user, password, reply_received=console.show, **extra),
            {AuthenticationFailed: "authentication failed ({})"},
            authenticated=authenticated, then=then)
    except ClientError as e:
        refusal = None if pin is None or e.__context__ is None else pin.refusal(e.__context__)
        if refusal is not None:
            raise ClientError(refusal, EXIT_HANDSHAKE_FAILED) from None
        raise


def _client_pin(entry, args):
    """The entry's pin for this user at this server (its ``client_pin``), or None."""
    make = entry.load("client_pin")
    if make is None:
        return None
    try:
        return make(args.host, args.port, args.user)
    except handshakes.ClientHookError as e:
        raise ClientError(str(e), EXIT_HANDSHAKE_FAILED) from None


async def _password_session(reactor, args, out, console, factory, failures,
                            authenticated=None, then=None):
    """What ``keyx-client eke`` and ``opaque`` share: connect with
    ``factory`` (traced as ``args`` asks), await the handshake, say so, then
    the chat on standard input until quit (or ``await then(protocol)``)."""
    factory, file_tracer = with_tracing(args, factory)
    try:
        protocol = await connect(reactor, args, recording_first_bytes(factory))
        result = await await_handshake(reactor, args.timeout, protocol.authenticated,
                                       failures, hint=eke_port_hint(protocol))
    finally:
        if file_tracer is not None:
            file_tracer.close()
    out.write(
        f"Authentication success (session key fingerprint {session_key_fingerprint(result.session_key)})\n"
    )
    if authenticated is not None:
        authenticated(result, protocol)
    out.flush()
    if then is not None:
        return await then(protocol)

    quit_timer = []

    def quitSent():
        quit_timer.append(reactor.callLater(args.timeout, protocol.finished.cancel))

    console.attach(protocol, on_quit=quitSent)
    stdio.StandardIO(console, reactor=reactor)
    try:
        await protocol.finished
    except defer.CancelledError:
        await aborted(reactor)
        raise ClientError(
            f"the server did not confirm quit within {args.timeout:g} seconds", EXIT_NETWORK
        )
    except ServerHungUp as e:
        raise ClientError(e.reason, EXIT_NETWORK)
    except ServerClosedChat as e:
        raise ClientError(f"the server closed the chat: {e.reason}", EXIT_NETWORK)
    except ChatFailed as e:
        raise ClientError(f"the chat broke: {e.reason}", EXIT_HANDSHAKE_FAILED)
    finally:
        for call in quit_timer:
            if call.active():
                call.cancel()
        console.close()
        await console.closed
        # StandardIO made them non-blocking; give the shell its terminal back.
        for fd in (0, 1):
            try:
                fdesc.setBlocking(fd)
            except OSError:
                pass
    return EXIT_OK


class ClientKit:
    """What ``keyx-client`` lends the commands a handshake adds to its own
    command (:attr:`twisted_keyx.core.handshakes.Handshake.client_commands`,
    OPAQUE's ``register`` and ``passwd``: :mod:`twisted_keyx.opaque.commands`),
    which live in the handshake's package and so cannot import this module:
    its error (:class:`ClientError`: one line and an exit status) and exit
    statuses, its password prompts, its connection and tracing, and its
    login then chat for the ``entry`` (:meth:`run_password`)."""

    ClientError = ClientError
    PasswordError = PasswordError
    EXIT_OK = EXIT_OK
    EXIT_HANDSHAKE_FAILED = EXIT_HANDSHAKE_FAILED
    EXIT_USAGE = EXIT_USAGE
    EXIT_NETWORK = EXIT_NETWORK
    EXIT_TOO_MANY_ATTEMPTS = EXIT_TOO_MANY_ATTEMPTS
    EXIT_SERVER_UNAVAILABLE = EXIT_SERVER_UNAVAILABLE
    EXIT_INTERRUPTED = EXIT_INTERRUPTED
    #: ``(prompt, confirm=False)``, ``(path)``, ``(path) -> warning or None``.
    ask_password = staticmethod(ask_password)
    read_password_file = staticmethod(read_password_file)
    password_file_warning = staticmethod(password_file_warning)
    #: ``(args)``: ``--password-file``'s password, or asked on the terminal.
    read_password = staticmethod(_read_password)
    #: ``(args)``: where warnings go.
    err = staticmethod(_err)
    connect = staticmethod(connect)
    await_handshake = staticmethod(await_handshake)
    with_tracing = staticmethod(with_tracing)
    aborted = staticmethod(aborted)
    ctrl_c_interrupts = staticmethod(ctrl_c_interrupts)

    def __init__(self, entry):
        self.entry = entry

    def run_password(self, reactor, args, out, password=None, then=None):
        """:func:`run_password` for the entry: log in, then chat, or
        ``await then(protocol)``; a coroutine whose result is the exit status."""
        return run_password(self.entry, reactor, args, out, password=password, then=then)


async def run(reactor, args, out, err, interruption=None):
    """Run the command ``args`` names; return its exit status.

    A failure is one line on ``err``.  :func:`main` runs this under
    ``task.react``; tests await it in their own reactor.  Once
    ``interruption`` (an :class:`Interruption`) has happened, what follows
    is its consequence, not the server's doing: it is not reported.
    """
    args.err = err  # for warnings that are not the outcome (keyx-client dh)
    try:
        # Before a password is asked or a connection made.
        tracer = open_trace_file(args)
        if tracer is not None:
            tracer.close()
        status = await args.run(reactor, args, out)
    except ClientError as e:
        if interruption is not None and interruption.happened:
            return EXIT_INTERRUPTED
        err.write(f"keyx-client: {e}\n")
        return e.status
    finally:
        if interruption is not None:
            interruption.done = True
    if interruption is not None and interruption.happened:
        return EXIT_INTERRUPTED
    return status


def main(argv=None, out=None, err=None):
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    try:
        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:  # before task.react has its own SIGINT handling
        err.write(Interruption.MESSAGE)
        return EXIT_INTERRUPTED
    interruption = Interruption(err)
    status = []

    async def run_and_keep_status(reactor):
        status.append(await run(reactor, args, out, err, interruption))

    def start(reactor):
        interruption.watch(reactor)
        return defer.Deferred.fromCoroutine(run_and_keep_status(reactor))

    try:
        task.react(start)
    except SystemExit as e:
        if interruption.happened:
            return EXIT_INTERRUPTED
        if e.code not in (0, None) or not status:
            raise
    return status[0]


if __name__ == "__main__":
    sys.exit(main())
