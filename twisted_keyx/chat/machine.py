"""The chat after a password handshake, as two small state machines.

A chat line travels as one record (:mod:`twisted_keyx.chat.records`).  The
words are the original EKE homework's: the user sends a line, the server
answers ``receive <line>``; ``quit`` ends the session.  Here the server also
answers ``quit`` with ``quit``, inside a record, so each side knows the other
saw every record before the end: a connection that closes without it may
have been cut short.

Server::

    OPEN --a line / receive <line>--> OPEN --quit / quit--> CLOSED

Client (``say`` and ``quit`` are the local user's, the rest the server's)::

    OPEN --say / record--> OPEN --receive <line>--> OPEN
    OPEN --quit / record--> QUITTING --receive <line>--> QUITTING
    QUITTING --quit (after a reply to every line)--> CLOSED
    OPEN or QUITTING --closing <why>--> FAILED (ServerClosedChat: the server's
        idle timeout; the server sent it with :meth:`ServerChat.closing`)

Both refuse text that is not UTF-8 or longer than
:data:`~twisted_keyx.chat.records.MAX_CHAT_TEXT_BYTES`.  Either machine is
built from the :class:`~twisted_keyx.chat.records.ChatKeys` of a finished
handshake (or from its result, which carries them as ``chat_keys``).
"""

import enum

from twisted_keyx.core.b64 import MalformedLine, decode_item, encode_item
from twisted_keyx.chat import records
from twisted_keyx.core.machine import ProtocolFailed, StateMachine


class ChatFailed(ProtocolFailed):
    """A record that does not decrypt, is not UTF-8 or comes out of turn:
    the session ends (the server closes without a reply)."""


class ServerClosedChat(ChatFailed):
    """The server said ``closing <why>`` (its idle timeout): the session
    ends; :attr:`reason` is the server's why."""


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
    CLOSING = "closing <why>"
    OTHER = "neither receive <line> nor quit"
    SAY = "say (local)"
    LOCAL_QUIT = "quit (local)"


class _Chat(StateMachine):
    INITIAL = ChatState.OPEN
    FAILED = ChatState.FAILED
    DONE = ChatState.CLOSED

    def __init__(self, send_key, receive_key):
        super().__init__()
        self._outgoing = records.RecordCipher(send_key)
        self._incoming = records.RecordCipher(receive_key)

    @staticmethod
    def _keys(keys):
        return getattr(keys, "chat_keys", keys)

    def _seal(self, text):
        return encode_item(self._outgoing.seal(text.encode("utf-8")))

    def _opener(self, max_text_bytes, classify):
        """The decoding step of :meth:`_dispatch` for one record line."""
        def decode(line):
            try:
                text = self._incoming.open(decode_item(line)).decode("utf-8")
            except (MalformedLine, records.RecordError) as e:
                raise ChatFailed(str(e)) from None
            except UnicodeDecodeError:
                raise ChatFailed("a chat record that is not UTF-8") from None
            if len(text.encode("utf-8")) > max_text_bytes:
                raise ChatFailed("a chat line longer than the limit")
            return classify(text), text
        return decode

    def _unexpected(self, event, payload):
        what = event.value if event is not None else "a record"
        return ChatFailed(f"{what} while {self.state.value}")

    def _too_long(self, reason):
        return ChatFailed(reason)


class ServerChat(_Chat):
    """The server's side of the chat."""

    TRANSITIONS = {
        (ChatState.OPEN, ChatEvent.LINE): ("_on_line", ChatState.OPEN),
        (ChatState.OPEN, ChatEvent.QUIT): ("_on_quit", ChatState.CLOSED),
    }
    PEER = "client"
    max_message_length = records.MAX_CLIENT_RECORD_LINE

    def __init__(self, keys):
        keys = self._keys(keys)
        super().__init__(send_key=keys.server_to_client, receive_key=keys.client_to_server)
        #: The text of the last record received (for the observer's log).
        self.said = None

    def receive(self, line):
        """Open one record; return the reply line.  The text is :attr:`said`;
        after ``quit`` the session is over: :attr:`finished` is true."""
        return self._dispatch(None, line, decode=self._opener(
            records.MAX_CHAT_TEXT_BYTES,
            lambda text: ChatEvent.QUIT if text == records.QUIT else ChatEvent.LINE))

    def _on_line(self, text):
        self.said = text
        return self._seal(records.RECEIVE_PREFIX + text)

    def _on_quit(self, text):
        self.said = text
        return self._seal(records.QUIT)

    def closing(self, why):
        """The record that tells the client why the server closes the chat
        on its own (``closing <why>``, the idle timeout); the chat is over."""
        record = self._seal(records.CLOSING_PREFIX + why)
        self.state = ChatState.CLOSED
        return record


def _server_event(text):
    if text == records.QUIT:
        return ChatEvent.QUIT
    if text.startswith(records.RECEIVE_PREFIX):
        return ChatEvent.RECEIVE
    if text.startswith(records.CLOSING_PREFIX):
        return ChatEvent.CLOSING
    return ChatEvent.OTHER


class ClientChat(_Chat):
    """The user's side of the chat."""

    TRANSITIONS = {
        (ChatState.OPEN, ChatEvent.SAY): ("_on_say", ChatState.OPEN),
        (ChatState.OPEN, ChatEvent.LOCAL_QUIT): ("_on_local_quit", ChatState.QUITTING),
        (ChatState.OPEN, ChatEvent.RECEIVE): ("_on_receive", ChatState.OPEN),
        (ChatState.QUITTING, ChatEvent.RECEIVE): ("_on_receive", ChatState.QUITTING),
        (ChatState.QUITTING, ChatEvent.QUIT): ("_on_quit_confirmed", ChatState.CLOSED),
        (ChatState.OPEN, ChatEvent.CLOSING): ("_on_closing", ChatState.FAILED),
        (ChatState.QUITTING, ChatEvent.CLOSING): ("_on_closing", ChatState.FAILED),
    }
    PEER = "server"
    max_message_length = records.MAX_SERVER_RECORD_LINE

    def __init__(self, keys):
        keys = self._keys(keys)
        super().__init__(send_key=keys.client_to_server, receive_key=keys.server_to_client)
        #: Lines sent and not yet answered.
        self.unanswered = 0
        #: The reply text of the last record received (None for quit's).
        self.reply = None

    @property
    def quitting(self):
        return self.state is ChatState.QUITTING

    def say(self, text):
        """Return the record line for ``text`` (str, at most
        ``MAX_CHAT_TEXT_BYTES`` of UTF-8; ``quit`` is :meth:`quit`)."""
        if text == records.QUIT:
            raise ValueError("use quit() to send quit")
        if len(text.encode("utf-8")) > records.MAX_CHAT_TEXT_BYTES:
            raise ValueError(f"a chat line has at most {records.MAX_CHAT_TEXT_BYTES} bytes")
        return self._local(ChatEvent.SAY, text)

    def quit(self):
        """Return the record line of ``quit``."""
        return self._local(ChatEvent.LOCAL_QUIT, records.QUIT)

    def _local(self, event, text):
        if (self.state, event) not in self.TRANSITIONS:
            raise RuntimeError(f"cannot {event.value} while {self.state.value}")
        return self._dispatch(event, text)

    def receive(self, line):
        """Open one record from the server; return the reply text to show,
        or None for the confirmation of ``quit`` (then :attr:`finished`)."""
        self.reply = self._dispatch(None, line, decode=self._opener(
            len(records.RECEIVE_PREFIX) + records.MAX_CHAT_TEXT_BYTES, _server_event))
        return self.reply

    def feed(self, line):
        """For the session adapter: a record from the server needs no answer;
        its text is :attr:`reply`."""
        self.receive(line)
        return None

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

    def _on_closing(self, text):
        raise ServerClosedChat(text[len(records.CLOSING_PREFIX):])

    def _on_quit_confirmed(self, text):
        if self.unanswered:
            raise ChatFailed(f"quit confirmed with {self.unanswered} line(s) unanswered")
        return None
