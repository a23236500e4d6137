"""The DH handshake without framing: the socket tutorial's own wire format
(docs/protocols.rst, "Unframed wire").

In the tutorial each message is one ``sendall`` with no
length and no delimiter, and the reader does one ``recv(3072)`` and strips
whitespace.  TCP promises no such thing: a message may arrive in pieces and
two may arrive together.  So here the boundaries come from the content, which
works because no message of the handshake is a prefix of another:

- an exact token (``Hello``, ``Params?``, ``Hey there!``, the server's two
  error replies) ends with its last byte; it is handed over at once, since
  the peer is waiting for the answer;
- a message carrying a PEM block (``Client public key:`` + PEM,
  ``Server public key:`` + PEM, the bare PEM parameters) ends with the closing
  dashes of its ``-----END ...-----`` line, whether a newline follows or not;
- whitespace around a message is not part of it, as the tutorial's
  ``strip()`` has it: the splitter removes it before a machine sees the
  message, and the machines hash what they send in that form too
  (:attr:`twisted_keyx.core.framing.UnframedFraming.received_form`).

Bytes that cannot be the start of any legal message are handed over as a
message at once, for the state machine to refuse with the usual reply.  More
bytes than the largest legal message without a complete one raise
:class:`MessageTooLong`.

:class:`MessageSplitter` does all this with no I/O.  The framings
:class:`UnframedClientMessages` (the server's) and
:class:`UnframedServerMessages` (the client's) put it under the sessions of
:mod:`twisted_keyx.dh.protocol`: the state machine, the validation and the
error replies are those of the framed handshake; only the framing differs.
Each message goes out in one write, PEM with its trailing newline, as the
tutorial's ``sendall`` sends it.
"""

import re
from dataclasses import dataclass

from twisted_keyx.groups import registry as groups
from twisted_keyx.dh import messages
from twisted_keyx.dh.protocol import (
    DHClientFactory,
    DHClientProtocol,
    DHServerFactory,
    DHServerProtocol,
)
from twisted_keyx.core.framing import MessageTooLong, UnframedFraming  # noqa: F401 (part of this API)


@dataclass(frozen=True)
class MessageShapes:
    """The messages one side can receive: exact tokens, and prefixes that a
    PEM block follows (``b""`` for a bare PEM block)."""

    tokens: tuple
    pem_prefixes: tuple


#: What the server receives: messages 1 (``Hello`` or ``Host key?``), 3 and 5.
CLIENT_MESSAGES = MessageShapes(
    tokens=(messages.HELLO, messages.HOST_KEY_REQUEST, messages.PARAMS_REQUEST),
    pem_prefixes=(messages.CLIENT_KEY_PREFIX,),
)

#: What the client receives: messages 2, 4 (PEM parameters, or a group's
#: token such as ``Group: x25519``), 6 and 7, and the server's error replies.
SERVER_MESSAGES = MessageShapes(
    tokens=(messages.HEY_THERE,) + groups.PARAMETERS_TOKENS + messages.ERROR_REPLIES,
    pem_prefixes=(b"", messages.SERVER_KEY_PREFIX, messages.HOST_KEY_SIGNATURE_PREFIX),
)


# Scanning a buffer gives the index just past the first message, or one of:
_MORE = -1  # the bytes so far may still become a legal message
_NEVER = -2  # they cannot: no legal message starts like this

#: What ``bytes.strip()`` removes, i.e. what the tutorial's reader ignores.
_WHITESPACE = b" \t\n\r\x0b\x0c"
#: RFC 7468 section 3: a PEM body is base64 lines; CRLF line ends are allowed.
_PEM_BODY_BYTES = (
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=" + _WHITESPACE
)
#: RFC 7468 section 3: a label is printable ASCII (no control bytes, no newline).
_PEM_LABEL_BYTES = bytes(range(0x20, 0x7F))
_DASHES = b"-----"
_END_LINE_START = b"-----END "


def _literal(data, pos, literal):
    """Match ``literal`` at ``data[pos:]``."""
    got = data[pos:pos + len(literal)]
    if got == literal:
        return pos + len(literal)
    return _MORE if literal.startswith(got) else _NEVER


def _pem_boundary_line(data, pos, keyword):
    """Match ``-----BEGIN label-----`` or ``-----END label-----`` at ``data[pos:]``."""
    pos = _literal(data, pos, _DASHES + keyword + b" ")
    if pos < 0:
        return pos
    close = data.find(_DASHES, pos)
    label = data[pos:] if close < 0 else data[pos:close]
    if label.translate(None, _PEM_LABEL_BYTES):
        return _NEVER
    return _MORE if close < 0 else close + len(_DASHES)


def _pem_block(data, pos):
    """Match a PEM block at ``data[pos:]``; it ends with its END line's dashes."""
    pos = _pem_boundary_line(data, pos, b"BEGIN")
    if pos < 0:
        return pos
    end_line = data.find(_END_LINE_START, pos)
    if end_line < 0:
        body = data[pos:]
        dash = body.find(b"-")
        if dash >= 0:  # the END line may have begun: "-", "-----EN"...
            if not _END_LINE_START.startswith(body[dash:]):
                return _NEVER
            body = body[:dash]
        return _NEVER if body.translate(None, _PEM_BODY_BYTES) else _MORE
    if data[pos:end_line].translate(None, _PEM_BODY_BYTES):
        return _NEVER
    return _pem_boundary_line(data, end_line, b"END")


_WHITESPACE_RUN = re.compile(rb"[" + re.escape(_WHITESPACE) + rb"]*")


def _skip_whitespace(data, pos):
    return _WHITESPACE_RUN.match(data, pos).end()


def _message_end(shapes, data, start):
    """Where the message that starts at ``data[start]`` ends, or _MORE / _NEVER.

    Every shape is tried.  Since no legal message is a prefix of another, at
    most one shape can match, so the best outcome wins: a position (>= 0)
    over _MORE (-1) over _NEVER (-2).
    """
    outcome = _NEVER
    for token in shapes.tokens:
        outcome = max(outcome, _literal(data, start, token))
    for prefix in shapes.pem_prefixes:
        pos = _literal(data, start, prefix)
        if pos >= 0:
            # Whitespace between the prefix and the block: the tutorial's PEM
            # loader skips it, and so does ours (asn1.pem_decode).
            pos = _pem_block(data, _skip_whitespace(data, pos))
        outcome = max(outcome, pos)
    return outcome


class MessageSplitter:
    """Cuts an unframed byte stream into the handshake's messages; no I/O.

    ``feed(data)`` as bytes arrive, then call ``next_message()`` until it
    returns None.  ``max_length`` bounds what is kept: once the buffer is
    longer without a complete message, whitespace included, it is refused.
    """

    def __init__(self, shapes, max_length):
        self.shapes = shapes
        self.max_length = max_length
        self._buffer = b""

    def feed(self, data):
        self._buffer += data

    @property
    def buffered(self):
        """Bytes received and not yet handed over as a message."""
        return len(self._buffer)

    def discard(self):
        """Forget what is buffered (the session is over)."""
        self._buffer = b""

    def next_message(self):
        """The next message without surrounding whitespace, or None until more
        bytes arrive.  Raises :class:`MessageTooLong`."""
        buffer = self._buffer
        start = _skip_whitespace(buffer, 0)
        end = _MORE if start == len(buffer) else _message_end(self.shapes, buffer, start)
        if end == _NEVER:
            end = len(buffer)  # handed over now, for the state machine to refuse
        elif end == _MORE:
            if len(buffer) > self.max_length:
                raise MessageTooLong(len(buffer), self.max_length)
            return None
        if end > self.max_length:
            raise MessageTooLong(end, self.max_length)
        self._buffer = buffer[end:]
        return buffer[start:end].rstrip()  # rstrip: for garbage; a message ends on non-space


class UnframedClientMessages(UnframedFraming):
    """The server's framing: the client's messages 1, 3 and 5, unframed."""

    def __init__(self, session, max_length):
        super().__init__(session, MessageSplitter(CLIENT_MESSAGES, max_length))


class UnframedServerMessages(UnframedFraming):
    """The client's framing: the server's messages 2, 4 and 6 (and its error
    replies), unframed."""

    def __init__(self, session, max_length):
        super().__init__(session, MessageSplitter(SERVER_MESSAGES, max_length))


class RawDHServerProtocol(DHServerProtocol):
    """One server connection of the DH handshake in the tutorial's unframed format
    (docs/protocols.rst, "Unframed wire")."""

    FRAMING = UnframedClientMessages


class RawDHServerFactory(DHServerFactory):
    """Serves the DH handshake in the tutorial's unframed format
    (docs/protocols.rst, "Unframed wire")."""

    protocol = RawDHServerProtocol


class RawDHClientProtocol(DHClientProtocol):
    """The DH handshake's client side in the tutorial's unframed format
    (docs/protocols.rst, "Unframed wire")."""

    FRAMING = UnframedServerMessages


class RawDHClientFactory(DHClientFactory):
    """Builds :class:`RawDHClientProtocol`; use ``protocol.finished`` for the result."""

    protocol = RawDHClientProtocol
