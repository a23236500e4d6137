"""Framings: how one connection's bytes become messages, and back.

A framing is the first of the three parts a session owns (the adapter,
:mod:`twisted_keyx.core.adapter`, holds it beside a state machine and an
observer).  Each one takes bytes with ``dataReceived(data)``, hands every
complete message to ``session.messageReceived(payload)``, reports an
over-long message with ``session.messageTooLong(length, limit)``, and sends a
message with ``send(payload)``.  ``MAX_LENGTH`` bounds the next message; the
session sets it before every message from what its machine may legally
receive next.  ``buffered`` says how many bytes it holds.

- :class:`Int32Framing`: a 4-byte big-endian length, then the payload
  (Twisted's ``Int32StringReceiver``): the DH handshake's default;
- :class:`LineFraming`: LF-terminated lines (Twisted's ``LineReceiver``): EKE;
- :class:`UnframedFraming`: the socket tutorial's wire, no length and no
  delimiter: message boundaries come from the content (docs/protocols.rst, "Unframed wire")
  (:class:`twisted_keyx.dh.raw.MessageSplitter`).

``received_form(payload)`` says what the peer's framing will hand its machine
for a message this side sends: the bytes as they are, except on the unframed
wire, where surrounding whitespace is not part of a message.  Machines hash
messages in that form (docs/protocols.rst, "Unframed wire").  ``TOO_LONG``
words an over-long message, keyed by who sent it.

A session that is over drops its framing, and with it whatever it buffered.
Once dropped (``detach()``), a framing delivers nothing more, even from the
rest of the chunk it is parsing.
"""

from twisted.protocols.basic import Int32StringReceiver, LineReceiver


class MessageTooLong(Exception):
    """A peer sent more than the largest legal message without completing one."""

    def __init__(self, length, limit):
        super().__init__(
            f"{length} bytes without a complete message exceed the limit of {limit}"
        )
        self.length = length
        self.limit = limit


def as_is(payload):
    return payload


class _TwistedFraming:
    """What the two framings built on Twisted's receivers share."""

    def __init__(self, session, max_length):
        self.session = session
        self.MAX_LENGTH = max_length

    def attach(self, transport):
        # The receivers write through ``self.transport``; nothing else of
        # IProtocol is used.
        self.transport = transport

    def detach(self):
        self.session = None

    received_form = staticmethod(as_is)


class Int32Framing(_TwistedFraming, Int32StringReceiver):
    """A 4-byte big-endian length, then the payload."""

    @property
    def buffered(self):
        """Bytes received and not yet handed over (read, never written)."""
        return len(self._unprocessed)

    TOO_LONG = {
        "client": "frame of {length} bytes exceeds the limit of {limit}",
        "server": "the server sent a frame of {length} bytes",
    }

    def stringReceived(self, string):
        if self.session is not None:
            self.session.messageReceived(string)

    def lengthLimitExceeded(self, length):
        if self.session is not None:
            self.session.messageTooLong(length, self.MAX_LENGTH)

    def send(self, payload):
        self.sendString(payload)


class LineFraming(_TwistedFraming, LineReceiver):
    """One message per LF-terminated line (the LF is not part of it)."""

    delimiter = b"\n"
    TOO_LONG = {
        "client": "a line longer than {limit} bytes",
        "server": "the server sent a line longer than {limit} bytes",
    }

    @property
    def buffered(self):
        """Bytes received and not yet handed over (read, never written)."""
        return len(self._buffer)

    def lineReceived(self, line):
        if self.session is not None:
            self.session.messageReceived(line)

    def lineLengthExceeded(self, line):
        if self.session is not None:
            self.session.messageTooLong(len(line), self.MAX_LENGTH)

    def send(self, payload):
        self.sendLine(payload)


class UnframedFraming:
    """The socket tutorial's wire (docs/protocols.rst, "Unframed wire"):
    each message written as is, boundaries found by ``splitter`` (a :class:`twisted_keyx.dh.raw.MessageSplitter`, or anything
    with its ``feed``, ``next_message`` raising :class:`MessageTooLong`,
    ``discard``, ``buffered`` and ``max_length``)."""

    TOO_LONG = {
        "client": "{length} bytes without a complete message exceed the limit of {limit}",
        "server": "bad response from the server: "
                  "{length} bytes without a complete message exceed the limit of {limit}",
    }

    def __init__(self, session, splitter):
        self.session = session
        self.splitter = splitter

    @property
    def MAX_LENGTH(self):
        return self.splitter.max_length

    @MAX_LENGTH.setter
    def MAX_LENGTH(self, value):
        self.splitter.max_length = value

    @property
    def buffered(self):
        return self.splitter.buffered

    def attach(self, transport):
        self.transport = transport

    def detach(self):
        self.session = None
        self.splitter.discard()

    def dataReceived(self, data):
        self.splitter.feed(data)
        try:
            while self.session is not None:
                message = self.splitter.next_message()
                if message is None:
                    return
                self.session.messageReceived(message)
        except MessageTooLong as e:
            if self.session is not None:
                self.session.messageTooLong(e.length, e.limit)

    def send(self, payload):
        # One write per message, as the tutorial's sendall: PEM payloads
        # already end with their newline.
        self.transport.write(payload)

    @staticmethod
    def received_form(payload):
        # What the tutorial's reader ignores: bytes.strip()'s whitespace.
        return payload.strip()
