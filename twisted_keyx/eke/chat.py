"""The chat after a successful EKE handshake, as two small state machines.

A chat line travels as one record (see :class:`~twisted_keyx.eke.crypto.RecordCipher`):
base64 of AES-256-GCM under the key of its direction, numbered by an
implicit counter.  The words are the original's: the user sends a line, the
server answers ``receive <line>``; ``quit`` ends the session.  Here the
server also answers ``quit`` with ``quit``, inside a record, so each side
knows the other saw every record before the end: a connection that closes
without it may have been cut short.

Server::

    OPEN --a line / receive <line>--> OPEN --quit / quit--> CLOSED

Client (``say`` and ``quit`` are the local user's, the rest the server's)::

    OPEN --say / record--> OPEN --receive <line>--> OPEN
    OPEN --quit / record--> QUITTING --receive <line>--> QUITTING
    QUITTING --quit (after a reply to every line)--> CLOSED

Both refuse text that is not UTF-8 or longer than
:data:`~twisted_keyx.eke.messages.MAX_CHAT_TEXT_BYTES`.
"""

import enum

from twisted_keyx.eke import crypto, messages
from twisted_keyx.eke.messages import MalformedLine
from twisted_keyx.machine import ProtocolFailed, StateMachine


class ChatFailed(ProtocolFailed):
    """A record that does not decrypt, is not UTF-8 or comes out of turn:
    the session ends (the server closes without a reply)."""


class ChatState(enum.Enum):
    OPEN = "chatting"
    QUITTING = "waiting for the server to confirm quit"
    CLOSED = "closed after quit"
    FAILED = "failed"


class ChatEvent(enum.Enum):
    """What a record holds, once opened, or what the local user does."""

    LINE = "a line"
    RECEIVE = "receive <line>"
    QUIT = "quit"
    OTHER = "neither receive <line> nor quit"
    SAY = "say (local)"
    LOCAL_QUIT = "quit (local)"


class _Chat(StateMachine):
    FAILED = ChatState.FAILED
    DONE = ChatState.CLOSED

    def __init__(self, send_key, receive_key):
        super().__init__(ChatState.OPEN)
        self._outgoing = crypto.RecordCipher(send_key)
        self._incoming = crypto.RecordCipher(receive_key)

    def _seal(self, text):
        return messages.encode_item(self._outgoing.seal(text.encode("utf-8")))

    def _open(self, line, max_text_bytes):
        if self.state in (ChatState.CLOSED, ChatState.FAILED):
            raise self._unexpected(None, line)
        try:
            record = messages.decode_item(line)
            text = self._incoming.open(record).decode("utf-8")
        except (MalformedLine, crypto.CryptoError) as e:
            self.state = ChatState.FAILED
            raise ChatFailed(str(e)) from None
        except UnicodeDecodeError:
            self.state = ChatState.FAILED
            raise ChatFailed("a chat record that is not UTF-8") from None
        if len(text.encode("utf-8")) > max_text_bytes:
            self.state = ChatState.FAILED
            raise ChatFailed("a chat line longer than the limit")
        return text

    def _unexpected(self, event, payload):
        state = self.state
        self.state = ChatState.FAILED
        what = event.value if event is not None else "a record"
        return ChatFailed(f"{what} while {state.value}")


class ServerChat(_Chat):
    """The server's side of the chat, from an :class:`~twisted_keyx.eke.handshake.EKEResult`."""

    TRANSITIONS = {
        (ChatState.OPEN, ChatEvent.LINE): ("_on_line", ChatState.OPEN),
        (ChatState.OPEN, ChatEvent.QUIT): ("_on_quit", ChatState.CLOSED),
    }

    def __init__(self, result):
        keys = result.chat_keys
        super().__init__(send_key=keys.server_to_client, receive_key=keys.client_to_server)

    def receive(self, line):
        """Open one record; return ``(text, reply line)``.  After ``quit``
        (text ``quit``) the session is over: :attr:`finished` is true."""
        text = self._open(line, messages.MAX_CHAT_TEXT_BYTES)
        event = ChatEvent.QUIT if text == messages.QUIT else ChatEvent.LINE
        return text, self._dispatch(event, text)

    def _on_line(self, text):
        return self._seal(messages.RECEIVE_PREFIX + text)

    def _on_quit(self, text):
        return self._seal(messages.QUIT)


class ClientChat(_Chat):
    """The user's side of the chat, from an :class:`~twisted_keyx.eke.handshake.EKEResult`."""

    TRANSITIONS = {
        (ChatState.OPEN, ChatEvent.SAY): ("_on_say", ChatState.OPEN),
        (ChatState.OPEN, ChatEvent.LOCAL_QUIT): ("_on_local_quit", ChatState.QUITTING),
        (ChatState.OPEN, ChatEvent.RECEIVE): ("_on_receive", ChatState.OPEN),
        (ChatState.QUITTING, ChatEvent.RECEIVE): ("_on_receive", ChatState.QUITTING),
        (ChatState.QUITTING, ChatEvent.QUIT): ("_on_quit_confirmed", ChatState.CLOSED),
    }

    def __init__(self, result):
        keys = result.chat_keys
        super().__init__(send_key=keys.client_to_server, receive_key=keys.server_to_client)
        #: Lines sent and not yet answered.
        self.unanswered = 0

    @property
    def quitting(self):
        return self.state is ChatState.QUITTING

    def say(self, text):
        """Return the record line for ``text`` (str, at most
        ``MAX_CHAT_TEXT_BYTES`` of UTF-8; ``quit`` is :meth:`quit`)."""
        if text == messages.QUIT:
            raise ValueError("use quit() to send quit")
        if len(text.encode("utf-8")) > messages.MAX_CHAT_TEXT_BYTES:
            raise ValueError(f"a chat line has at most {messages.MAX_CHAT_TEXT_BYTES} bytes")
        return self._local(ChatEvent.SAY, text)

    def quit(self):
        """Return the record line of ``quit``."""
        return self._local(ChatEvent.LOCAL_QUIT, messages.QUIT)

    def _local(self, event, text):
        if (self.state, event) not in self.TRANSITIONS:
            raise RuntimeError(f"cannot {event.value} while {self.state.value}")
        return self._dispatch(event, text)

    def receive(self, line):
        """Open one record from the server; return the reply text to show,
        or None for the confirmation of ``quit`` (then :attr:`finished`)."""
        text = self._open(line, len(messages.RECEIVE_PREFIX) + messages.MAX_CHAT_TEXT_BYTES)
        if text == messages.QUIT:
            event = ChatEvent.QUIT
        elif text.startswith(messages.RECEIVE_PREFIX):
            event = ChatEvent.RECEIVE
        else:
            event = ChatEvent.OTHER
        return self._dispatch(event, text)

    def _on_say(self, text):
        self.unanswered += 1
        return self._seal(text)

    def _on_local_quit(self, text):
        return self._seal(text)

    def _on_receive(self, text):
        if self.unanswered == 0:
            raise ChatFailed("a reply to no line")
        self.unanswered -= 1
        return text

    def _on_quit_confirmed(self, text):
        if self.unanswered:
            raise ChatFailed(f"quit confirmed with {self.unanswered} line(s) unanswered")
        return None
