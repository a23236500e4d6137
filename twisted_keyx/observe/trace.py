"""Wire traces: every message of a session, as it crosses the wire.

A :class:`twisted_keyx.core.adapter.Session` with a ``tracer`` tells it of each
message in and out: ``tracer.message(session, direction, machine, before,
after, payload)``.  This module has the tracers and the summaries
(docs/protocols.rst, "Traces"):

- :class:`TextTracer`: one readable line per message, to a stream
  (``keyx-client --trace``: stderr) or to the log (``twistd keyx --trace``,
  with a connection id);
- :class:`FileTracer`: the exact bytes, as JSON lines (``keyx-client
  --trace-file``), which ``keyx-lab`` reads back with :func:`read_trace`;
- :class:`Recorder`: the events in a list (the sequence charts, tests).

A summary says what a message is without printing what it hides: a PEM group
as its name and bits, a public key as its first bytes, a base64 box as its
sizes.  :func:`describe` finds the summary for a machine's message: the
machine's own ``describe(payload)`` method if it has one, else the function
its handshake's registry entry gives for its class (or a base class) by
name (:attr:`twisted_keyx.core.handshakes.Handshake.summaries`), else the
generic :func:`describe_bytes`, which knows the shapes every handshake here
uses (text, PEM, ``prefix:`` + PEM, base64 boxes).  A new handshake needs no
edit here: its entry names its summaries.

Secrets never travel in the clear, so a trace holds none; with
``show_secrets`` the line of the message that finishes a handshake also
gives its session key (and shared secret, when the result has one).
"""

import base64
import binascii
import itertools
import json
from dataclasses import dataclass

from twisted.logger import Logger

from twisted_keyx.core import handshakes
from twisted_keyx.core.handshakes import Summary  # noqa: F401 (part of this API)
from twisted_keyx.core.peers import printable

#: The first line of a trace file; a reader refuses any other.
FILE_FORMAT = "twisted-keyx trace v1"

#: How many leading bytes of a public key a summary shows.
KEY_PREFIX_BYTES = 8

ARROWS = {"in": "<-", "out": "->"}


@dataclass(frozen=True)
class Event:
    """One message: ``direction`` (``in``: from the peer, ``out``: to it),
    the machine's class name, its state before and after (their values),
    the payload as the machine saw or sent it (no framing)."""

    direction: str
    machine: str
    before: str
    after: str
    payload: bytes


def _state(state):
    return getattr(state, "name", str(state))


def event(direction, machine, before, after, payload):
    return Event(direction, type(machine).__name__, _state(before), _state(after), bytes(payload))


# --- summaries ---------------------------------------------------------------


def _summary_function(machine_name):
    return handshakes.summary_function(machine_name)


def describe(machine, payload):
    """The :class:`Summary` of ``payload``, a message ``machine`` received or sent."""
    own = getattr(machine, "describe", None)
    if callable(own):
        return own(payload)
    for cls in type(machine).__mro__:
        function = _summary_function(cls.__name__)
        if function is not None:
            return function(payload) or describe_bytes(payload)
    return describe_bytes(payload)


def describe_event(event):
    """The summary of a recorded :class:`Event` (its machine known by name)."""
    function = _summary_function(event.machine)
    if function is not None:
        return function(event.payload) or describe_bytes(event.payload)
    return describe_bytes(event.payload)


def _printable(data):
    return all(32 <= b < 127 for b in data)


def describe_pem(pem):
    """A PEM block: a group as its name and bits, a public key as its type,
    size and first bytes (parsed with the project's own readers)."""
    from twisted_keyx.groups import ffdh
    from twisted_keyx.groups import hybrid
    from twisted_keyx.groups import registry as groups
    from twisted_keyx.groups import x25519

    label = pem.split(b"-----", 2)[1].decode("ascii", "replace").removeprefix("BEGIN ")
    if label.endswith("PARAMETERS"):
        for name in groups.names():
            group = groups.named(name)
            if group.parameters_message == pem:
                return Summary(f"{label}: {name} ({group.bits} bits)", f"({len(pem)} bytes)")
        try:
            p = ffdh.parse_parameters_pem(pem)[0]
        except ValueError:
            return Summary(label, f"({len(pem)} bytes, unreadable)")
        return Summary(f"{label}: a group of {p.bit_length()} bits", f"({len(pem)} bytes)")
    if label == "PUBLIC KEY":
        try:
            p, g, q, y = ffdh.parse_public_key_pem(pem)
            value = y.to_bytes((y.bit_length() + 7) // 8 or 1, "big")
            kind = f"PEM DH public key ({p.bit_length()} bits)"
        except ValueError:
            try:
                value = x25519.parse_public_key_pem(pem)
                kind = "PEM X25519 public key"
            except ValueError:
                try:
                    value = hybrid.XWING.parse_public_key(pem)
                    kind = "PEM X-Wing encapsulation key (ML-KEM-768 + X25519)"
                except ValueError:
                    return Summary("PEM PUBLIC KEY", f"({len(pem)} bytes)")
        return Summary(kind, f"{len(pem)} bytes, {value[:KEY_PREFIX_BYTES].hex()}...")
    for group in hybrid.GROUPS:
        for wanted, parse, what in (
                (group.public_key_label, group.parse_public_key, "encapsulation key"),
                (group.ciphertext_label, group.parse_ciphertext, "ciphertext")):
            if label.encode("ascii", "replace") == wanted:
                try:
                    value = parse(pem)
                except ValueError:
                    return Summary(f"PEM {label}", f"({len(pem)} bytes, unreadable)")
                return Summary(f"PEM {group.name} {what} (ML-KEM-768 + X25519)",
                               f"{len(pem)} bytes, {value[:KEY_PREFIX_BYTES].hex()}...")
    return Summary(f"PEM {label}", f"({len(pem)} bytes)")


def describe_bytes(payload):
    """The generic summary: ``prefix:`` + PEM, PEM, short text, a base64
    box, or else a size and first bytes."""
    stripped = payload.strip()
    start = stripped.find(b"-----BEGIN ")
    if start >= 0 and _printable(stripped[:start]):
        pem = stripped[start:]
        if not pem.endswith(b"\n"):
            pem += b"\n"
        inner = describe_pem(pem)
        prefix = stripped[:start].decode("ascii")
        kind = f"{prefix} + {inner.kind}" if prefix else inner.kind
        return Summary(kind, inner.detail)
    if len(stripped) >= 24 and _printable(stripped) and b" " not in stripped:
        try:
            box = base64.b64decode(stripped, validate=True)
        except (binascii.Error, ValueError):
            box = None
        if box is not None and len(box) >= 28:
            return Summary(
                f"base64 box of {len(box)} bytes "
                f"(nonce 12 + ciphertext {len(box) - 28} + tag 16)")
    if _printable(payload) and len(payload) <= 120:
        return Summary(repr(payload.decode("ascii")))
    return Summary(f"{len(payload)} bytes", f"{payload[:KEY_PREFIX_BYTES].hex()}...")


def secrets_line(machine):
    """The finished handshake's secrets, for ``--show-secrets``."""
    result = getattr(machine, "result", None)
    parts = []
    for name in ("shared_secret", "session_key"):
        value = getattr(result, name, None)
        if isinstance(value, bytes):
            parts.append(f"{name.replace('_', ' ')}: {value.hex()}")
    return "; ".join(parts)


def format_event(machine, direction, before, after, payload, show_secrets=False):
    """The one line of a trace: direction, machine, states, size, summary."""
    # A summary may quote the peer's bytes (a PEM label, EKE's scrypt
    # words): escaped, so they can neither drive a terminal nor forge log lines.
    summary = printable(str(describe(machine, payload)))
    line = (f"{ARROWS[direction]} {type(machine).__name__} {_state(before)} -> "
            f"{_state(after)} [{len(payload)} bytes] {summary}")
    if show_secrets and getattr(machine, "finished", False):
        secrets = secrets_line(machine)
        if secrets:
            line += f" | {secrets}"
    return line


# --- tracers -------------------------------------------------------------------

_connection_ids = itertools.count(1)


class TextTracer:
    """One line per message, to ``out`` (a text stream) or, without it, to
    the log; ``connection`` names the connection (a fresh number by default)."""

    log = Logger()

    def __init__(self, out=None, show_secrets=False, connection=None):
        self.out = out
        self.show_secrets = show_secrets
        self.connection = next(_connection_ids) if connection is None else connection

    def message(self, session, direction, machine, before, after, payload):
        line = format_event(machine, direction, before, after, payload, self.show_secrets)
        if self.out is not None:
            self.out.write(f"trace: {line}\n")
            self.out.flush()
        else:
            self.log.info("trace #{connection} {peer}: {line}",
                          connection=self.connection, peer=session.peer, line=line)


class Recorder:
    """The :class:`Event` of every message, in ``events``."""

    def __init__(self):
        self.events = []

    def message(self, session, direction, machine, before, after, payload):
        self.events.append(event(direction, machine, before, after, payload))


class FileTracer(Recorder):
    """The exact bytes of a session as JSON lines (docs/protocols.rst,
    "Traces"): a header ``{"format": ..., "peer": ...}``, then one object per
    message, written as it happens."""

    def __init__(self, path):
        super().__init__()
        self.path = path
        self._file = None
        self._closed = False

    def message(self, session, direction, machine, before, after, payload):
        if self._closed:
            return  # the handshake is over: what follows is not recorded
        super().message(session, direction, machine, before, after, payload)
        if self._file is None:
            self._file = open(self.path, "w", encoding="ascii")
            self._write({"format": FILE_FORMAT, "peer": session.peer})
        e = self.events[-1]
        self._write({"direction": e.direction, "machine": e.machine, "before": e.before,
                     "after": e.after, "payload": base64.b64encode(e.payload).decode("ascii")})

    def _write(self, record):
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self):
        self._closed = True
        if self._file is not None:
            self._file.close()
            self._file = None


class Tracers:
    """Several tracers as one."""

    def __init__(self, *tracers):
        self.tracers = [t for t in tracers if t is not None]

    def message(self, *args):
        for tracer in self.tracers:
            tracer.message(*args)


class TraceFormatError(ValueError):
    """Not a trace file this module wrote."""


#: A trace file is read whole; none of ours comes near this.
MAX_TRACE_FILE = 1 << 20


def read_trace(path):
    """The :class:`Event` list of a file :class:`FileTracer` wrote."""
    with open(path, "rb") as f:
        data = f.read(MAX_TRACE_FILE + 1)
    if len(data) > MAX_TRACE_FILE:
        raise TraceFormatError(f"{path}: more than {MAX_TRACE_FILE} bytes")
    lines = data.splitlines()
    try:
        header = json.loads(lines[0]) if lines else None
        if not isinstance(header, dict) or header.get("format") != FILE_FORMAT:
            raise TraceFormatError(f"{path}: not a {FILE_FORMAT} file")
        events = []
        for line in lines[1:]:
            record = json.loads(line)
            events.append(Event(record["direction"], record["machine"], record["before"],
                                record["after"],
                                base64.b64decode(record["payload"], validate=True)))
    except (ValueError, KeyError, TypeError) as e:
        if isinstance(e, TraceFormatError):
            raise
        raise TraceFormatError(f"{path}: not a {FILE_FORMAT} file ({e})") from None
    return events


def traced(factory, make_tracer):
    """``factory``, each protocol it builds given ``make_tracer(protocol)``
    as its tracer (for factories that build :class:`~twisted_keyx.core.adapter.Session`)."""
    build = factory.buildProtocol

    def buildProtocol(addr):
        protocol = build(addr)
        if protocol is not None:
            protocol.tracer = make_tracer(protocol)
        return protocol

    factory.buildProtocol = buildProtocol
    return factory
