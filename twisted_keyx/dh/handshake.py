"""The DH handshake as two state machines, one per side, with no I/O.

Each machine is fed one message at a time (bytes, already unframed) and
answers with the message to send back, or raises :class:`HandshakeFailed`.
Which message is legal in which state is written down once, in the
``TRANSITIONS`` table of each class; everything else is refused.  The
framing (:mod:`twisted_keyx.dh.protocol`) and the crypto (the groups of
:mod:`twisted_keyx.groups.registry`) live elsewhere; every group runs the same machines.

Server states, with the socket tutorial's state numbers (docs/protocols.rst,
"DH handshake", "Server states")::

    AWAIT_HELLO --Hello--> AWAIT_PARAMS_REQUEST --Params?--> AWAIT_CLIENT_KEY
      (0)                     (1)                              (2)
    AWAIT_CLIENT_KEY --Client public key:...--> DONE (0)

Client states::

    START --start()--> AWAIT_GREETING --Hey there!--> AWAIT_PARAMETERS
    AWAIT_PARAMETERS --PEM parameters--> AWAIT_SERVER_KEY
    AWAIT_SERVER_KEY --Server public key:...--> DONE
"""

import dataclasses
import enum
from dataclasses import dataclass
from functools import partial
from typing import Optional

from twisted_keyx.groups import registry as groups
from twisted_keyx.trust import hostkey
from twisted_keyx.dh import hostauth, messages
from twisted_keyx.dh.messages import DHClientMessage, DHServerMessage
from twisted_keyx.core.decisions import CheckGroup
from twisted_keyx.core.machine import START, HandshakeFailed, StateMachine, UnexpectedReply
from twisted_keyx.core.transcript import Transcript, derive_session_key


class UnexpectedMessage(HandshakeFailed):
    """Server side: a message that is not the one expected now."""

    reply = messages.UNEXPECTED_MESSAGE_REPLY


class InvalidClientKey(HandshakeFailed):
    """Server side: message 5 carries a key that cannot be used."""

    reply = messages.INVALID_CLIENT_KEY_REPLY


class ServerRefused(HandshakeFailed):
    """Client side: the server sent one of its error replies."""


class HostKeyRequestRefused(ServerRefused):
    """Client side: the server answered ``Host key?`` with its error reply:
    it has no host key (the tutorial's, or ``--no-host-key``; docs/hostkey.rst,
    "Asking")."""


class BadParameters(HandshakeFailed):
    """Client side: the server's group (message 4) is unknown or unusable."""


class InvalidServerKey(HandshakeFailed):
    """Client side: message 6 carries a key that cannot be used."""


class HostKeyVerificationFailed(HandshakeFailed):
    """Client side: message 7 is malformed or its signature does not verify
    (docs/hostkey.rst)."""


@dataclass(frozen=True)
class HandshakeResult:
    group: groups.Group
    #: The shared secret, ``group.secret_length`` bytes (FFDH: len(p),
    #: left-padded with zeros; X25519: the 32-byte output).
    shared_secret: bytes
    #: HKDF-SHA256 of the shared secret with the transcript hash bound in.
    session_key: bytes
    transcript_hash: bytes
    #: The server's Ed25519 host public key whose signature over the
    #: transcript verified (message 7), or None: unauthenticated.
    host_public_key: object = None
    #: ``SHA256:...`` of ``host_public_key``, or None.
    host_key_fingerprint: Optional[str] = None


def server_max_message_length(group):
    """The largest legal client message in ``group``: message 5."""
    return len(messages.CLIENT_KEY_PREFIX) + group.max_public_key_message


#: The largest legal server message for any group a client accepts
#: (message 7 is shorter than these).
CLIENT_MAX_MESSAGE_LENGTH = max(
    groups.MAX_PARAMETERS_MESSAGE, len(messages.SERVER_KEY_PREFIX) + groups.MAX_REPLY_MESSAGE,
    hostauth.MAX_SIGNATURE_MESSAGE_LENGTH,
)


def _default_private_key(group):
    return group.generate_private_key()


def _as_is(message):
    return message


class _Machine(StateMachine):
    """What both DH sides share: the transcript and the key derivation (the
    table-driven dispatch is :class:`twisted_keyx.core.machine.StateMachine`)."""

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

    def _finish(self, group, shared_secret):
        transcript_hash = self._transcript.digest()
        self.result = HandshakeResult(
            group=group,
            shared_secret=shared_secret,
            session_key=derive_session_key(
                shared_secret, messages.SESSION_KEY_LABEL, transcript_hash
            ),
            transcript_hash=transcript_hash,
        )


class DHServerState(enum.Enum):
    AWAIT_HELLO = "awaiting Hello"
    AWAIT_PARAMS_REQUEST = "awaiting Params?"
    AWAIT_CLIENT_KEY = "awaiting the client's public key"
    DONE = "done"
    FAILED = "failed"


class DHServerHandshake(_Machine):
    """The server side: answers messages 1, 3 and 5 with 2, 4 and 6."""

    TRANSITIONS = {
        (DHServerState.AWAIT_HELLO, DHClientMessage.HELLO):
            ("_on_hello", DHServerState.AWAIT_PARAMS_REQUEST),
        (DHServerState.AWAIT_HELLO, DHClientMessage.HOST_KEY_REQUEST):
            ("_on_host_key_request", DHServerState.AWAIT_PARAMS_REQUEST),
        (DHServerState.AWAIT_PARAMS_REQUEST, DHClientMessage.PARAMS_REQUEST):
            ("_on_params_request", DHServerState.AWAIT_CLIENT_KEY),
        (DHServerState.AWAIT_CLIENT_KEY, DHClientMessage.CLIENT_KEY):
            ("_on_client_key", DHServerState.DONE),
    }
    INITIAL = DHServerState.AWAIT_HELLO
    FAILED = DHServerState.FAILED
    DONE = DHServerState.DONE
    PEER = "client"

    def __init__(self, group, private_key_factory=_default_private_key,
                 received_form=_as_is, host_key=None):
        super().__init__(DHServerState.AWAIT_HELLO, private_key_factory, received_form)
        self.group = group
        #: A :class:`twisted_keyx.trust.hostkey.HostKey`, or None: ``Host key?`` is
        #: then refused as the tutorial's server refuses it (docs/hostkey.rst,
        #: "Asking").
        self.host_key = host_key
        self._asked_for_host_key = False

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

    def _on_host_key_request(self, payload):
        if self.host_key is None:
            raise UnexpectedMessage("Host key? message, and this server has no host key")
        self._asked_for_host_key = True
        return self._on_hello(payload)

    def _on_params_request(self, payload):
        return self._exchanged(payload, self.group.parameters_message)

    def _on_client_key(self, payload):
        try:
            peer_key = self.group.load_peer_key(payload[len(messages.CLIENT_KEY_PREFIX):])
            # DH: a key of the server's own and its public key; a KEM: a
            # ciphertext to the client's key (twisted_keyx.groups.api).
            answer, shared_secret = self.group.encapsulate(peer_key, self._private_key_factory)
        except groups.InvalidPublicKey as e:
            raise InvalidClientKey(f"invalid client public key: {e}") from None
        reply = self._exchanged(payload, messages.SERVER_KEY_PREFIX + answer)
        self._finish(self.group, shared_secret)
        if not self._asked_for_host_key:
            return reply
        # Message 7, right after message 6 (docs/hostkey.rst).
        host_key = self.host_key
        signature = hostauth.sign(host_key, hostauth.signed_group_name(self.group),
                                  self.result.transcript_hash)
        self.result = dataclasses.replace(
            self.result, host_public_key=host_key.public_key,
            host_key_fingerprint=host_key.fingerprint)
        return reply, hostauth.signature_message(host_key, signature)


class HostKeyAsked(enum.Enum):
    """Client side: message 6 when this client asked for the host key
    signature (``Host key?``): message 7 must follow."""

    SERVER_KEY = "Server public key (host key asked)"


class DHClientState(enum.Enum):
    START = "not started"
    AWAIT_GREETING = "awaiting Hey there!"
    AWAIT_PARAMETERS = "awaiting the parameters"
    AWAIT_SERVER_KEY = "awaiting the server's public key or ciphertext"
    AWAIT_HOST_KEY_SIGNATURE = "awaiting the host key signature"
    DONE = "done"
    FAILED = "failed"


class DHClientHandshake(_Machine):
    """The client side: sends message 1 from :meth:`start`, then 3 and 5."""

    TRANSITIONS = {
        (DHClientState.START, START):
            ("_on_start", DHClientState.AWAIT_GREETING),
        (DHClientState.AWAIT_GREETING, DHServerMessage.HEY_THERE):
            ("_on_greeting", DHClientState.AWAIT_PARAMETERS),
        (DHClientState.AWAIT_PARAMETERS, DHServerMessage.PARAMETERS):
            ("_on_parameters", DHClientState.AWAIT_SERVER_KEY),
        (DHClientState.AWAIT_SERVER_KEY, DHServerMessage.SERVER_KEY):
            ("_on_server_key", DHClientState.DONE),
        (DHClientState.AWAIT_SERVER_KEY, HostKeyAsked.SERVER_KEY):
            ("_on_server_key", DHClientState.AWAIT_HOST_KEY_SIGNATURE),
        (DHClientState.AWAIT_HOST_KEY_SIGNATURE, DHServerMessage.HOST_KEY_SIGNATURE):
            ("_on_host_key_signature", DHClientState.DONE),
    }
    INITIAL = DHClientState.START
    FAILED = DHClientState.FAILED
    DONE = DHClientState.DONE
    PEER = "server"
    max_message_length = CLIENT_MAX_MESSAGE_LENGTH

    def __init__(self, private_key_factory=_default_private_key,
                 accept_parameters=groups.from_parameters_message, received_form=_as_is,
                 ask_host_key=False):
        super().__init__(DHClientState.START, private_key_factory, received_form)
        self._accept_parameters = accept_parameters
        #: Send ``Host key?`` instead of ``Hello`` and require message 7.
        self.ask_host_key = ask_host_key
        self.group = None
        self._private_key = None
        #: Ask for message 4's group to be checked (:class:`CheckGroup`)
        #: rather than check it here: set by a session whose observer
        #: answers (:class:`twisted_keyx.dh.protocol.DHClientProtocol`).
        self.ask_group_check = False

    def start(self):
        """Return message 1."""
        return self._start()

    def _on_start(self, payload):
        first = hostauth.HOST_KEY_REQUEST if self.ask_host_key else messages.HELLO
        self._transcript.add(self._received_form(first))
        return first

    def receive(self, payload):
        """Take one server message; return the next message to send, or None."""
        kind = messages.classify_server_message(payload)
        if self.ask_host_key and kind is DHServerMessage.SERVER_KEY:
            kind = HostKeyAsked.SERVER_KEY
        return self._dispatch(kind, payload)

    @property
    def awaiting_signature(self):
        """Whether the server's key has come and its host-key signature
        (message 7) has not: a hang-up now may be a stripped signature."""
        return self.state is DHClientState.AWAIT_HOST_KEY_SIGNATURE

    def _too_long(self, reason):
        return UnexpectedReply(reason)

    def _unexpected(self, kind, payload):
        if (kind is DHServerMessage.ERROR and self.ask_host_key
                and self.state is DHClientState.AWAIT_GREETING
                and payload == messages.UNEXPECTED_MESSAGE_REPLY):
            return HostKeyRequestRefused(
                f"the server refused Host key?: {payload.decode('ascii')}")
        if kind is DHServerMessage.ERROR:
            return ServerRefused(f"the server refused: {payload.decode('ascii')}")
        return UnexpectedReply(f"bad response from the server while {self.state.value}")

    def _on_greeting(self, payload):
        return self._exchanged(payload, messages.PARAMS_REQUEST)

    def _on_parameters(self, payload):
        if self.ask_group_check:
            # Checked elsewhere (off the reactor): the answer is the group,
            # or the GroupError that refuses it.
            return self._ask(CheckGroup(payload), partial(self._parameters_checked, payload))
        return self._parameters_checked(payload, self.check_group_here(payload))

    def check_group_here(self, payload):
        """Message 4's group, checked here by ``accept_parameters``, or the
        :class:`~twisted_keyx.groups.registry.GroupError` that refuses it."""
        try:
            return self._accept_parameters(payload)
        except groups.GroupError as e:
            return e

    def _parameters_checked(self, payload, group):
        if isinstance(group, groups.GroupNotAccepted):
            raise BadParameters(str(group))
        if isinstance(group, Exception):
            raise BadParameters(f"unusable parameters from the server: {group}")
        self.group = group
        self._private_key = self._private_key_factory(self.group)
        return self._exchanged(
            payload, messages.CLIENT_KEY_PREFIX + self.group.public_key_pem(self._private_key))

    def _on_server_key(self, payload):
        try:
            shared_secret = self.group.decapsulate(
                self._private_key, payload[len(messages.SERVER_KEY_PREFIX):])
        except groups.InvalidPublicKey as e:
            raise InvalidServerKey(f"invalid server public key: {e}") from None
        self._exchanged(payload)
        self._finish(self.group, shared_secret)
        self._private_key = None
        return None

    def _on_host_key_signature(self, payload):
        try:
            public_key, signature = hostauth.parse_signature_message(payload)
            hostauth.verify(public_key, hostauth.signed_group_name(self.group),
                            self.result.transcript_hash, signature)
        except hostauth.BadHostKeySignature as e:
            self.result = None
            raise HostKeyVerificationFailed(str(e)) from None
        self.result = dataclasses.replace(
            self.result, host_public_key=public_key,
            host_key_fingerprint=hostkey.host_key_fingerprint(public_key))
        return None
