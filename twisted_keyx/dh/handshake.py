"""The DH handshake as two state machines, one per side, with no I/O.

Each machine is fed one message at a time (bytes, already unframed) and
answers with the message to send back, or raises :class:`HandshakeFailed`.
Which message is legal in which state is written down once, in the
``TRANSITIONS`` table of each class; everything else is refused.  The
framing (:mod:`twisted_keyx.dh.protocol`) and the crypto (the groups of
:mod:`twisted_keyx.groups`) live elsewhere; every group runs the same machines.

Server states, with the tutorial's state numbers (docs/protocols.rst, DH handshake)::

    AWAIT_HELLO --Hello--> AWAIT_PARAMS_REQUEST --Params?--> AWAIT_CLIENT_KEY
      (0)                     (1)                              (2)
    AWAIT_CLIENT_KEY --Client public key:...--> DONE (0)

Client states::

    START --start()--> AWAIT_GREETING --Hey there!--> AWAIT_PARAMETERS
    AWAIT_PARAMETERS --PEM parameters--> AWAIT_SERVER_KEY
    AWAIT_SERVER_KEY --Server public key:...--> DONE
"""

import enum
from dataclasses import dataclass

from twisted_keyx import groups
from twisted_keyx.dh import messages
from twisted_keyx.dh.messages import ClientMessage, ServerMessage
from twisted_keyx.machine import START, HandshakeFailed, StateMachine
from twisted_keyx.session import Transcript, derive_session_key


class UnexpectedMessage(HandshakeFailed):
    """Server side: a message that is not the one expected now."""

    reply = messages.UNEXPECTED_MESSAGE_REPLY


class InvalidClientKey(HandshakeFailed):
    """Server side: message 5 carries a key that cannot be used."""

    reply = messages.INVALID_CLIENT_KEY_REPLY


class ServerRefused(HandshakeFailed):
    """Client side: the server sent one of its error replies."""


class BadResponse(HandshakeFailed):
    """Client side: the server sent something other than the expected reply."""


class BadParameters(HandshakeFailed):
    """Client side: the server's group (message 4) is unknown or unusable."""


class InvalidServerKey(HandshakeFailed):
    """Client side: message 6 carries a key that cannot be used."""


@dataclass(frozen=True)
class HandshakeResult:
    group: groups.Group
    #: The shared secret, ``group.secret_length`` bytes (FFDH: len(p),
    #: left-padded with zeros; X25519: the 32-byte output).
    shared_secret: bytes
    #: HKDF-SHA256 of the shared secret with the transcript hash bound in.
    session_key: bytes
    transcript_hash: bytes


def server_max_message_length(group):
    """The largest legal client message in ``group``: message 5."""
    return len(messages.CLIENT_KEY_PREFIX) + group.max_public_key_message


#: The largest legal server message for any group a client accepts.
CLIENT_MAX_MESSAGE_LENGTH = max(
    groups.MAX_PARAMETERS_MESSAGE, len(messages.SERVER_KEY_PREFIX) + groups.MAX_PUBLIC_KEY_MESSAGE
)


def _default_private_key(group):
    return group.generate_private_key()


def _as_is(message):
    return message


class _Machine(StateMachine):
    """What both DH sides share: the transcript and the key derivation (the
    table-driven dispatch is :class:`twisted_keyx.machine.StateMachine`)."""

    def __init__(self, initial_state, private_key_factory, received_form):
        super().__init__(initial_state)
        self.result = None
        self._private_key_factory = private_key_factory
        self._received_form = received_form
        self._transcript = Transcript()

    def _exchanged(self, received, sent=None):
        """Add a message received and the reply sent to the transcript.

        The transcript holds every message exactly as the receiving machine
        gets it: what arrived, as is, and what is sent in the form the
        framing will hand it to the peer (``received_form``: the unframed
        wire strips surrounding whitespace, Int32 framing changes nothing).
        """
        self._transcript.add(received)
        if sent is not None:
            self._transcript.add(self._received_form(sent))
        return sent

    def _finish(self, group, private_key, peer_key):
        # May raise groups.InvalidPublicKey (an all-zero X25519 output): the
        # callers turn it into their side's error.
        shared_secret = group.exchange(private_key, peer_key)
        transcript_hash = self._transcript.digest()
        self.result = HandshakeResult(
            group=group,
            shared_secret=shared_secret,
            session_key=derive_session_key(
                shared_secret, messages.SESSION_KEY_LABEL, transcript_hash
            ),
            transcript_hash=transcript_hash,
        )


class ServerState(enum.Enum):
    AWAIT_HELLO = "awaiting Hello"
    AWAIT_PARAMS_REQUEST = "awaiting Params?"
    AWAIT_CLIENT_KEY = "awaiting the client's public key"
    DONE = "done"
    FAILED = "failed"


class DHServerHandshake(_Machine):
    """The server side: answers messages 1, 3 and 5 with 2, 4 and 6."""

    TRANSITIONS = {
        (ServerState.AWAIT_HELLO, ClientMessage.HELLO):
            ("_on_hello", ServerState.AWAIT_PARAMS_REQUEST),
        (ServerState.AWAIT_PARAMS_REQUEST, ClientMessage.PARAMS_REQUEST):
            ("_on_params_request", ServerState.AWAIT_CLIENT_KEY),
        (ServerState.AWAIT_CLIENT_KEY, ClientMessage.CLIENT_KEY):
            ("_on_client_key", ServerState.DONE),
    }
    INITIAL = ServerState.AWAIT_HELLO
    FAILED = ServerState.FAILED
    DONE = ServerState.DONE
    PEER = "client"

    def __init__(self, group, private_key_factory=_default_private_key,
                 received_form=_as_is):
        super().__init__(ServerState.AWAIT_HELLO, private_key_factory, received_form)
        self.group = group

    @property
    def max_message_length(self):
        return server_max_message_length(self.group)

    def receive(self, payload):
        """Take one client message; return the reply to send."""
        return self._dispatch(messages.classify_client_message(payload), payload)

    def _too_long(self, reason):
        return UnexpectedMessage(reason)

    def _unexpected(self, kind, payload):
        return UnexpectedMessage(f"{kind.value} message while {self.state.value}")

    def _on_hello(self, payload):
        return self._exchanged(payload, messages.HEY_THERE)

    def _on_params_request(self, payload):
        return self._exchanged(payload, self.group.parameters_message)

    def _on_client_key(self, payload):
        try:
            peer_key = self.group.load_peer_key(payload[len(messages.CLIENT_KEY_PREFIX):])
            private_key = self._private_key_factory(self.group)
            reply = self._exchanged(
                payload, messages.SERVER_KEY_PREFIX + self.group.public_key_pem(private_key))
            self._finish(self.group, private_key, peer_key)
        except groups.InvalidPublicKey as e:
            raise InvalidClientKey(f"invalid client public key: {e}") from None
        return reply


class ClientState(enum.Enum):
    START = "not started"
    AWAIT_GREETING = "awaiting Hey there!"
    AWAIT_PARAMETERS = "awaiting the parameters"
    AWAIT_SERVER_KEY = "awaiting the server's public key"
    DONE = "done"
    FAILED = "failed"


class DHClientHandshake(_Machine):
    """The client side: sends message 1 from :meth:`start`, then 3 and 5."""

    TRANSITIONS = {
        (ClientState.START, START):
            ("_on_start", ClientState.AWAIT_GREETING),
        (ClientState.AWAIT_GREETING, ServerMessage.HEY_THERE):
            ("_on_greeting", ClientState.AWAIT_PARAMETERS),
        (ClientState.AWAIT_PARAMETERS, ServerMessage.PARAMETERS):
            ("_on_parameters", ClientState.AWAIT_SERVER_KEY),
        (ClientState.AWAIT_SERVER_KEY, ServerMessage.SERVER_KEY):
            ("_on_server_key", ClientState.DONE),
    }
    INITIAL = ClientState.START
    FAILED = ClientState.FAILED
    DONE = ClientState.DONE
    PEER = "server"
    max_message_length = CLIENT_MAX_MESSAGE_LENGTH

    def __init__(self, private_key_factory=_default_private_key,
                 accept_parameters=groups.from_parameters_message, received_form=_as_is):
        super().__init__(ClientState.START, private_key_factory, received_form)
        self._accept_parameters = accept_parameters
        self.group = None
        self._private_key = None

    def start(self):
        """Return message 1."""
        return self._start()

    def _on_start(self, payload):
        self._transcript.add(self._received_form(messages.HELLO))
        return messages.HELLO

    def receive(self, payload):
        """Take one server message; return the next message to send, or None."""
        return self._dispatch(messages.classify_server_message(payload), payload)

    def _too_long(self, reason):
        return BadResponse(reason)

    def _unexpected(self, kind, payload):
        if kind is ServerMessage.ERROR:
            return ServerRefused(f"the server refused: {payload.decode('ascii')}")
        return BadResponse(f"bad response from the server while {self.state.value}")

    def _on_greeting(self, payload):
        return self._exchanged(payload, messages.PARAMS_REQUEST)

    def _on_parameters(self, payload):
        try:
            self.group = self._accept_parameters(payload)
        except groups.GroupError as e:
            raise BadParameters(f"unusable parameters from the server: {e}") from None
        self._private_key = self._private_key_factory(self.group)
        return self._exchanged(
            payload, messages.CLIENT_KEY_PREFIX + self.group.public_key_pem(self._private_key))

    def _on_server_key(self, payload):
        try:
            peer_key = self.group.load_peer_key(payload[len(messages.SERVER_KEY_PREFIX):])
            self._exchanged(payload)
            self._finish(self.group, self._private_key, peer_key)
        except groups.InvalidPublicKey as e:
            raise InvalidServerKey(f"invalid server public key: {e}") from None
        self._private_key = None
        return None
