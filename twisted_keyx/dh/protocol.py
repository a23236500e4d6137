"""Twisted protocols and factories for the DH handshake.

The handshake logic is in :mod:`twisted_keyx.dh.handshake`; this module only
moves messages between it and a framing.  The session classes
(:class:`DHServerSession`, :class:`DHClientSession`) are framing-agnostic:
a framing feeds them with ``messageReceived(payload)`` and
``sessionLost(reason)``, and gives them ``sendMessage(payload)``.
:class:`DHServerProtocol` and :class:`DHClientProtocol` put them on
:class:`Int32Framing` (a 4-byte big-endian length, then the payload), the
project's default framing.
"""

import operator

from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver

from twisted_keyx import groups
from twisted_keyx.dh import messages
from twisted_keyx.dh.handshake import (
    BadResponse,
    DHClientHandshake,
    DHServerHandshake,
    HandshakeFailed,
)
from twisted_keyx.machine import ServerHungUp
from twisted_keyx.peers import describe_peer
from twisted_keyx.session import fingerprint


def server_max_message_length(group):
    """The largest legal client message in ``group``: message 5."""
    return len(messages.CLIENT_KEY_PREFIX) + group.max_public_key_message


#: The largest legal server message for any group a client accepts.
CLIENT_MAX_MESSAGE_LENGTH = max(
    groups.MAX_PARAMETERS_MESSAGE, len(messages.SERVER_KEY_PREFIX) + groups.MAX_PUBLIC_KEY_MESSAGE
)


class DHServerSession:
    """Runs one :class:`DHServerHandshake` over any framing.

    Needs ``self.factory`` (a :class:`DHServerFactory`), ``self.transport``
    and a ``sendMessage(payload)`` method from the framing.
    """

    handshake = None
    _closing = False

    def startSession(self):
        self.handshake = DHServerHandshake(self.factory.group, self.factory.private_key_factory)
        self._peer = describe_peer(self.transport.getPeer())

    def messageReceived(self, payload):
        if self._closing:
            return
        try:
            reply = self.handshake.receive(payload)
        except HandshakeFailed as e:
            self.rejectPeer(e.reason, e.reply)
            return
        self.sendMessage(reply)
        if self.handshake.finished:
            self._closing = True
            self.factory.handshakeFinished(self._peer, self.handshake.result)
            self.transport.loseConnection()

    def rejectPeer(self, reason, reply=messages.UNEXPECTED_MESSAGE_REPLY):
        """Send the documented error reply, log why, and hang up."""
        if self._closing:
            return
        self._closing = True
        self.sendMessage(reply)
        self.factory.handshakeRejected(self._peer, reason)
        self.transport.loseConnection()

    def connectionTimedOut(self, phase, seconds):
        """Called by :mod:`twisted_keyx.limits` just before it aborts a peer
        that did not finish in time; logs it once, in the handshake's words."""
        if self._closing or self.handshake is None:
            return
        self._closing = True
        self.factory.handshakeTimedOut(self._peer, seconds, self.handshake.state.value)

    def sessionLost(self, reason):
        if not self._closing and self.handshake is not None:
            self._closing = True
            self.factory.handshakeAbandoned(self._peer, self.handshake.state.value)


class Int32Framing(Int32StringReceiver):
    """What both framed protocols share: one message, one Int32 string."""

    def dataReceived(self, data):
        # Once the session has hung up, what the peer still sends is dropped
        # unread, and what is buffered (an over-long frame, which
        # Int32StringReceiver keeps after lengthLimitExceeded) is let go.
        if not self._closing:
            super().dataReceived(data)
        if self._closing:
            self._unprocessed = b""

    def stringReceived(self, string):
        self.messageReceived(string)

    def sendMessage(self, payload):
        self.sendString(payload)

    def connectionLost(self, reason):
        self.sessionLost(reason)


class DHServerProtocol(DHServerSession, Int32Framing):
    """The DH handshake's server side, framed by :class:`Int32Framing`."""

    def connectionMade(self):
        self.MAX_LENGTH = self.factory.max_message_length
        self.startSession()

    def lengthLimitExceeded(self, length):
        self.rejectPeer(f"frame of {length} bytes exceeds the limit of {self.MAX_LENGTH}")


class DHServerFactory(Factory):
    """Serves the DH handshake in one group; logs one line per connection."""

    protocol = DHServerProtocol
    noisy = False
    log = Logger()

    def __init__(self, group, show_secrets=False,
                 private_key_factory=operator.methodcaller("generate_private_key")):
        self.group = group
        self.show_secrets = show_secrets
        #: Makes the server's key pair for each handshake (tests pass a fixed key).
        self.private_key_factory = private_key_factory
        self.max_message_length = server_max_message_length(group)

    def handshakeFinished(self, peer, result):
        if self.show_secrets:
            self.log.info(
                "DH handshake with {peer} finished ({group}); "
                "Shared Secret: {secret} Session key: {session_key}",
                peer=peer, group=result.group.name,
                secret=result.shared_secret.hex(), session_key=result.session_key.hex(),
            )
        else:
            self.log.info(
                "DH handshake with {peer} finished ({group}); "
                "session key fingerprint {fingerprint}",
                peer=peer, group=result.group.name,
                fingerprint=fingerprint(result.session_key),
            )

    def handshakeRejected(self, peer, reason):
        self.log.info("DH handshake with {peer} rejected: {reason}", peer=peer, reason=reason)

    def handshakeTimedOut(self, peer, seconds, state):
        self.log.info(
            "DH handshake with {peer} timed out after {seconds:g} s while {state}",
            peer=peer, seconds=seconds, state=state,
        )

    def handshakeAbandoned(self, peer, state):
        self.log.info(
            "DH handshake with {peer} abandoned by the peer while {state}",
            peer=peer, state=state,
        )


class DHClientSession:
    """Runs one :class:`DHClientHandshake` over any framing.

    ``finished`` fires with the :class:`~twisted_keyx.dh.handshake.HandshakeResult`,
    or fails with a :class:`~twisted_keyx.dh.handshake.HandshakeFailed`
    subclass that says what the server did wrong.
    """

    def __init__(self, handshake=None):
        self.handshake = handshake if handshake is not None else DHClientHandshake()
        self.finished = defer.Deferred(self._cancel)
        self._closing = False

    def _cancel(self, finished):
        # Cancelling ``finished`` (a timeout) is the outcome: the loss of the
        # connection, which the reactor reports later, must not errback it again.
        self._closing = True
        self.transport.abortConnection()

    def startSession(self):
        self.sendMessage(self.handshake.start())

    def messageReceived(self, payload):
        if self._closing:
            return
        try:
            reply = self.handshake.receive(payload)
        except HandshakeFailed as e:
            self.abandon(e)
            return
        if reply is not None:
            self.sendMessage(reply)
        if self.handshake.finished:
            self._closing = True
            self.transport.loseConnection()
            self.finished.callback(self.handshake.result)

    def abandon(self, failure):
        if self._closing:
            return
        self._closing = True
        self.transport.loseConnection()
        self.finished.errback(failure)

    def sessionLost(self, reason):
        if not self._closing:
            self._closing = True
            self.finished.errback(
                ServerHungUp.after(reason, f"while {self.handshake.state.value}")
            )


class DHClientProtocol(DHClientSession, Int32Framing):
    """The DH handshake's client side, framed by :class:`Int32Framing`."""

    MAX_LENGTH = CLIENT_MAX_MESSAGE_LENGTH

    def connectionMade(self):
        self.startSession()

    def lengthLimitExceeded(self, length):
        self.abandon(BadResponse(f"the server sent a frame of {length} bytes"))


class DHClientFactory(Factory):
    """Builds :class:`DHClientProtocol`; use ``protocol.finished`` for the result."""

    protocol = DHClientProtocol
    noisy = False
