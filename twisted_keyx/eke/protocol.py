"""Twisted protocols and factories for the EKE handshake and its chat.

The logic is in :mod:`twisted_keyx.eke.handshake` and
:mod:`twisted_keyx.eke.chat`; these classes move lines between them and a
``LineReceiver`` (LF-delimited), bound every line to the longest one legal in
the current state, and log.
"""

from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver

from twisted_keyx import limits
from twisted_keyx.eke import messages
from twisted_keyx.eke.chat import ChatFailed, ClientChat, ServerChat
from twisted_keyx.eke.handshake import (
    BadResponse,
    ClientState,
    EKEClientHandshake,
    EKEServerHandshake,
    HandshakeFailed,
    ServerState,
)
from twisted_keyx.eke.userstore import DecoyUsers
from twisted_keyx.machine import ServerHungUp
from twisted_keyx.peers import describe_peer
from twisted_keyx.session import fingerprint

_b64 = messages.base64_length

#: The longest legal client line in each server state.
SERVER_LINE_LIMITS = {
    ServerState.AWAIT_USER_NAME: messages.MAX_USER_NAME_BYTES,
    ServerState.AWAIT_SEALED_PUBLIC_KEY: _b64(messages.BOX_SIZES[3]),
    ServerState.AWAIT_CLIENT_NONCE: _b64(messages.BOX_SIZES[5]),
    ServerState.AWAIT_SERVER_NONCE: _b64(messages.BOX_SIZES[7]),
}

#: The longest legal server line in each client state (the failure reply
#: must fit in every one of them).
CLIENT_LINE_LIMITS = {
    state: max(limit, len(messages.FAILURE_REPLY))
    for state, limit in {
        ClientState.AWAIT_ANSWER: messages.MAX_ANSWER_LINE,
        ClientState.AWAIT_SEALED_SESSION_KEY: _b64(messages.BOX_SIZES[4]),
        ClientState.AWAIT_NONCES: _b64(messages.BOX_SIZES[6]),
        ClientState.AWAIT_SUCCESS: _b64(messages.BOX_SIZES[8]),
    }.items()
}


class _HandshakeThenChat(LineReceiver):
    """What both sides share: lines go to the handshake, then, after step 8
    only, to the chat; none is read once this side has hung up."""

    delimiter = b"\n"
    handshake = None
    chat = None
    _closing = False

    def dataReceived(self, data):
        # Once this side has hung up, what the peer still sends is dropped
        # unread, and the lines still buffered are let go (LineReceiver stops
        # at a disconnecting transport but keeps the rest).
        if not self._closing:
            super().dataReceived(data)
        if self._closing:
            self.clearLineBuffer()

    def lineReceived(self, line):
        if self._closing:
            return
        if self.chat is None:
            self._handshakeLine(line)
        else:
            self._chatLine(line)

    def _close(self):
        self._closing = True
        self.transport.loseConnection()


class EKEServerProtocol(_HandshakeThenChat):
    """The server side: the handshake, then, after step 8 only, the chat."""

    def connectionMade(self):
        self._peer = describe_peer(self.transport.getPeer())
        self.handshake = self.factory.newHandshake()
        self._setLineLimit()

    def _setLineLimit(self):
        if self.chat is not None:
            self.MAX_LENGTH = messages.MAX_CLIENT_RECORD_LINE
        else:
            self.MAX_LENGTH = SERVER_LINE_LIMITS.get(self.handshake.state, 0)

    def _handshakeLine(self, line):
        try:
            reply = self.handshake.receive(line)
        except HandshakeFailed as e:
            self._reject(e.reason, e.reply)
            return
        self.sendLine(reply)
        if self.handshake.finished:
            self.chat = ServerChat(self.handshake.result)
            self.factory.userAuthenticated(self._peer, self.handshake.result)
            # The handshake deadline stops here; the chat's idle timeout starts.
            limits.handshake_finished(self.transport)
        self._setLineLimit()

    def _chatLine(self, line):
        user = self.handshake.user
        try:
            text, reply = self.chat.receive(line)
        except ChatFailed as e:
            self._close()
            self.factory.chatFailed(self._peer, user, e.reason)
            return
        if self.chat.finished:
            self.sendLine(reply)
            self._close()
            self.factory.chatEnded(self._peer, user)
        else:
            self.factory.userSaid(self._peer, user, text)
            self.sendLine(reply)

    def _reject(self, reason, reply):
        """Send the one failure reply, log why, and hang up."""
        if reply is not None:
            self.sendLine(reply)
        self._close()
        self.factory.handshakeRejected(self._peer, reason)

    def lineLengthExceeded(self, line):
        if self._closing:
            return
        if self.chat is None:
            self._reject(
                f"a line longer than {self.MAX_LENGTH} bytes while {self.handshake.state.value}",
                messages.FAILURE_REPLY,
            )
        else:
            self._close()
            self.factory.chatFailed(
                self._peer, self.handshake.user,
                f"a line longer than {self.MAX_LENGTH} bytes",
            )

    def connectionTimedOut(self, phase, seconds):
        """Called by :mod:`twisted_keyx.limits` just before it aborts the
        connection: the handshake took too long, or the chat went quiet."""
        if self._closing or self.handshake is None:
            return
        self._closing = True
        if self.chat is not None:
            self.factory.chatIdle(self._peer, self.handshake.user, seconds)
        else:
            self.factory.handshakeTimedOut(self._peer, seconds, self.handshake.state.value)

    def connectionLost(self, reason):
        if self._closing or self.handshake is None:
            return
        self._closing = True
        if self.chat is not None:
            self.factory.chatCutShort(self._peer, self.handshake.user)
        else:
            self.factory.handshakeAbandoned(self._peer, self.handshake.state.value)


class EKEServerFactory(Factory):
    """Serves EKE to the users of ``users`` (anything with ``lookup(name)``,
    such as :class:`~twisted_keyx.eke.userstore.UserFile`); logs one line per
    event of a connection."""

    protocol = EKEServerProtocol
    noisy = False
    log = Logger()

    def __init__(self, users, hide_unknown_users=False, show_secrets=False,
                 decoys=None, random_bytes=None):
        self.users = users
        self.hide_unknown_users = hide_unknown_users
        self.show_secrets = show_secrets
        if hide_unknown_users and decoys is None:
            decoys = DecoyUsers()
        self.decoys = decoys if hide_unknown_users else None
        self._handshake_options = {} if random_bytes is None else {"random_bytes": random_bytes}

    def newHandshake(self):
        return EKEServerHandshake(self.users.lookup, decoys=self.decoys, **self._handshake_options)

    def userAuthenticated(self, peer, result):
        if self.show_secrets:
            self.log.info(
                "EKE: user {user} from {peer} authenticated; Ks: {session_key}",
                user=result.user, peer=peer, session_key=result.session_key.hex(),
            )
        else:
            self.log.info(
                "EKE: user {user} from {peer} authenticated; "
                "session key fingerprint {fingerprint}",
                user=result.user, peer=peer, fingerprint=fingerprint(result.session_key),
            )

    def userSaid(self, peer, user, text):
        self.log.info("User {user} say: {line}", user=user, line=messages.printable(text))

    def chatEnded(self, peer, user):
        self.log.info("EKE: user {user} from {peer} quit", user=user, peer=peer)

    def chatFailed(self, peer, user, reason):
        self.log.info(
            "EKE: chat with user {user} from {peer} broken, closing: {reason}",
            user=user, peer=peer, reason=reason,
        )

    def chatCutShort(self, peer, user):
        self.log.info(
            "EKE: connection of user {user} from {peer} closed without quit "
            "(possibly cut short)",
            user=user, peer=peer,
        )

    def handshakeRejected(self, peer, reason):
        self.log.info(
            "EKE handshake with {peer} failed: {reason}",
            peer=peer, reason=messages.printable(reason),
        )

    def handshakeTimedOut(self, peer, seconds, state):
        self.log.info(
            "EKE handshake with {peer} timed out after {seconds:g} s while {state}",
            peer=peer, seconds=seconds, state=state,
        )

    def chatIdle(self, peer, user, seconds):
        self.log.info(
            "EKE: chat with user {user} from {peer} silent for {seconds:g} s, closing",
            user=user, peer=peer, seconds=seconds,
        )

    def handshakeAbandoned(self, peer, state):
        self.log.info(
            "EKE handshake with {peer} abandoned by the peer while {state}",
            peer=peer, state=state,
        )


class EKEClientProtocol(_HandshakeThenChat):
    """The client side.

    ``authenticated`` fires with the :class:`~twisted_keyx.eke.handshake.EKEResult`
    after step 8, or fails with a ``HandshakeFailed`` subclass (``ServerHungUp``
    if the connection ends first).  Then :meth:`say` and :meth:`quit` send;
    each reply is given to ``reply_received(text)``; ``finished`` fires once
    the server has confirmed ``quit``, or fails with ``ChatFailed`` or
    ``ServerHungUp``.  ``disconnected`` fires when the connection is closed,
    whatever happened.
    """

    def __init__(self, handshake, reply_received=None):
        self.handshake = handshake
        self._replyReceived = reply_received if reply_received is not None else _ignore
        self.authenticated = defer.Deferred(self._cancel)
        self.finished = defer.Deferred(self._cancel)
        self.disconnected = defer.Deferred()

    def _cancel(self, deferred):
        self._closing = True
        self.transport.abortConnection()

    def connectionMade(self):
        self.MAX_LENGTH = CLIENT_LINE_LIMITS[ClientState.AWAIT_ANSWER]
        self.sendLine(self.handshake.start())

    def _handshakeLine(self, line):
        try:
            reply = self.handshake.receive(line)
        except HandshakeFailed as e:
            self._fail(self.authenticated, e)
            return
        if reply is not None:
            self.sendLine(reply)
        if self.handshake.finished:
            self.chat = ClientChat(self.handshake.result)
            self.MAX_LENGTH = messages.MAX_SERVER_RECORD_LINE
            self.authenticated.callback(self.handshake.result)
        else:
            self.MAX_LENGTH = CLIENT_LINE_LIMITS[self.handshake.state]

    def _chatLine(self, line):
        try:
            text = self.chat.receive(line)
        except ChatFailed as e:
            self._fail(self.finished, e)
            return
        if self.chat.finished:
            self._close()
            self.finished.callback(None)
        else:
            self._replyReceived(text)

    def say(self, text):
        """Send one chat line (str)."""
        if self.chat is None:
            raise RuntimeError("not authenticated yet")
        if not self._closing:
            self.sendLine(self.chat.say(text))

    def quit(self):
        """Send ``quit``; ``finished`` fires when the server confirms it."""
        if self.chat is None:
            raise RuntimeError("not authenticated yet")
        if not self._closing and not self.chat.quitting:
            self.sendLine(self.chat.quit())

    def _fail(self, deferred, failure):
        self._close()
        deferred.errback(failure)

    def lineLengthExceeded(self, line):
        if self._closing:
            return
        failure = BadResponse(f"the server sent a line longer than {self.MAX_LENGTH} bytes")
        if self.chat is None:
            self._fail(self.authenticated, failure)
        else:
            self._fail(self.finished, ChatFailed(failure.reason))

    def connectionLost(self, reason):
        if not self._closing:
            self._closing = True
            if self.chat is None:
                self.authenticated.errback(
                    ServerHungUp.after(reason, f"while {self.handshake.state.value}")
                )
            else:
                self.finished.errback(ServerHungUp.after(reason, "during the chat"))
        self.disconnected.callback(None)


def _ignore(text):
    pass


class EKEClientFactory(Factory):
    """Builds :class:`EKEClientProtocol` for ``user`` and ``password``;
    other keyword arguments go to :class:`EKEClientHandshake`."""

    protocol = EKEClientProtocol
    noisy = False

    def __init__(self, user, password, reply_received=None, **handshake_options):
        self.user = user
        self.password = password
        self.reply_received = reply_received
        self.handshake_options = handshake_options

    def buildProtocol(self, addr):
        handshake = EKEClientHandshake(self.user, self.password, **self.handshake_options)
        protocol = self.protocol(handshake, reply_received=self.reply_received)
        protocol.factory = self
        return protocol
