"""The client's side of the chat at the terminal: standard input to the
server, the server's replies to standard output (``keyx-client eke``).

Meant for :class:`twisted.internet.stdio.StandardIO`, so it works the same
with a terminal, a pipe or a file.  Input lines end with LF (a CR before it
is dropped); ``quit`` or the end of input ends the session.  A line that is
not UTF-8 or longer than the chat allows is not sent: it is reported on
standard error and skipped.
"""

import sys

from twisted.internet import defer, interfaces
from twisted.internet.protocol import Protocol
from zope.interface import implementer

from twisted_keyx.chat import records as messages
from twisted_keyx.core.peers import printable


@implementer(interfaces.IHalfCloseableProtocol)
class ChatConsole(Protocol):
    """Connects standard input and output to an
    :class:`~twisted_keyx.eke.protocol.EKEClientProtocol` (any client session with ``say`` and ``quit``) (``session``);
    ``on_quit()`` is called once, when the console sends ``quit``.
    ``closed`` fires once standard output is flushed and closed."""

    def __init__(self, err=None):
        self.session = None
        self._err = err if err is not None else sys.stderr
        self._buffer = b""
        self._discarding = False
        self._quit_sent = False
        self.on_quit = None
        self.closed = defer.Deferred()

    def attach(self, session, on_quit=None):
        self.session = session
        self.on_quit = on_quit

    # --- from the server

    def show(self, text):
        """Print one reply (non-printable characters escaped)."""
        if self.transport is not None:
            self.transport.write(printable(text, backslash=False).encode("utf-8") + b"\n")

    def close(self):
        """Stop reading; flush and close standard output."""
        if self.transport is not None:
            self.transport.loseConnection()

    # --- from standard input

    def dataReceived(self, data):
        self._buffer += data
        while not self._quit_sent:
            line, newline, rest = self._buffer.partition(b"\n")
            if not newline:
                if len(self._buffer) > messages.MAX_CHAT_TEXT_BYTES + 1:
                    if not self._discarding:
                        self._tooLong()
                    self._buffer = b""
                    self._discarding = True
                return
            self._buffer = rest
            if self._discarding:
                self._discarding = False
                continue
            self._line(line)

    def _tooLong(self):
        self._warn(f"line longer than {messages.MAX_CHAT_TEXT_BYTES} bytes; not sent")

    def _warn(self, message):
        self._err.write(f"keyx-client: {message}\n")
        self._err.flush()

    def _line(self, line):
        if line.endswith(b"\r"):
            line = line[:-1]
        if len(line) > messages.MAX_CHAT_TEXT_BYTES:
            self._tooLong()
            return
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            self._warn("line is not UTF-8; not sent")
            return
        if text == messages.QUIT:
            self._quit()
        else:
            self.session.say(text)

    def _quit(self):
        if self._quit_sent:
            return
        self._quit_sent = True
        self._buffer = b""
        if self.transport is not None:
            self.transport.pauseProducing()
        self.session.quit()
        if self.on_quit is not None:
            self.on_quit()

    def readConnectionLost(self):
        # End of input: a last line without LF still counts.
        if self._buffer and not self._discarding and not self._quit_sent:
            line, self._buffer = self._buffer, b""
            self._line(line)
        self._quit()

    def writeConnectionLost(self):
        # Nobody reads our output any more (a closed pipe): end the session.
        self._quit()

    def connectionLost(self, reason):
        self.closed.callback(None)
