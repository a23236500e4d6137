"""Twisted protocols and factories for the DH handshake.

The handshake logic is in :mod:`twisted_keyx.dh.handshake`; a connection is a
:class:`twisted_keyx.core.adapter.Session` that owns a framing, one of those
machines and an observer.  On the server the observer is the factory, which
logs each outcome; on the client it is the protocol itself, which fires
``finished``.  :class:`DHServerFactory` and :class:`DHClientProtocol` use
:class:`~twisted_keyx.core.framing.Int32Framing` (a 4-byte big-endian length, then
the payload), the project's default framing; :mod:`twisted_keyx.dh.raw` has
the same over the socket tutorial's unframed wire
(docs/protocols.rst, "Unframed wire").
"""

import operator
from typing import Any, Callable, Optional

from twisted.internet import defer
from twisted.internet.protocol import Factory
from twisted.logger import Logger

from twisted_keyx.core.adapter import Observer, Session, hung_up
from twisted_keyx.core.decisions import CheckGroup
from twisted_keyx.dh.handshake import (  # noqa: F401 (the limits are part of this API)
    CLIENT_MAX_MESSAGE_LENGTH,
    DHClientHandshake,
    DHServerHandshake,
    HandshakeResult,
    server_max_message_length,
)
from twisted_keyx.core.framing import Int32Framing
from twisted_keyx.core.logtext import literal
from twisted_keyx.core.peers import PeerLogging
from twisted_keyx.core.transcript import session_key_fingerprint


class DHServerProtocol(Session):
    """One server connection of the DH handshake (see :class:`DHServerFactory`)."""

    #: The framing class (:mod:`twisted_keyx.core.framing`: Int32Framing, or
    #: an unframed one in :mod:`twisted_keyx.dh.raw`).
    FRAMING: Any = Int32Framing


class DHServerFactory(Factory, Observer, PeerLogging):
    """Serves the DH handshake in one group; logs one line per connection
    (bounded per source behind a connection policy: :class:`~twisted_keyx.service.limits.PeerLines`).

    Each connection is a :attr:`protocol` (its ``FRAMING`` says which) with a
    fresh :class:`DHServerHandshake`; the factory is its observer.
    """

    protocol = DHServerProtocol
    noisy = False
    log = Logger()

    def __init__(self, group, show_secrets=False,
                 private_key_factory=operator.methodcaller("generate_private_key"),
                 host_key=None):
        self.group = group
        #: A :class:`twisted_keyx.trust.hostkey.HostKey` to sign with when a client
        #: asks (``Host key?``), or None (docs/hostkey.rst).
        self.host_key = host_key
        self.show_secrets = show_secrets
        #: Makes the server's key pair for each handshake (tests pass a fixed key).
        self.private_key_factory = private_key_factory
        self.max_message_length = server_max_message_length(group)

    def newHandshake(self):
        return DHServerHandshake(self.group, self.private_key_factory,
                                 received_form=self.protocol.FRAMING.received_form,
                                 host_key=self.host_key)

    def buildProtocol(self, addr):
        protocol = self.protocol(self.protocol.FRAMING, self.newHandshake())
        protocol.factory = self
        return protocol

    # --- the observer: one log line per outcome --------------------------------

    def machineFinished(self, session, machine):
        if self.peerMayLog(session, "finished"):
            self.handshakeFinished(session.peer, machine.result)

    def machineFailed(self, session, machine, failure):
        if self.peerMayLog(session, "rejected"):
            self.handshakeRejected(session.peer, failure.reason)

    def sessionTimedOut(self, session, machine, seconds):
        if self.peerMayLog(session, "timed out"):
            self.handshakeTimedOut(session.peer, seconds, machine.state.value)

    def sessionLost(self, session, machine, reason):
        if self.peerMayLog(session, "abandoned"):
            self.handshakeAbandoned(session.peer, machine.state.value)

    def handshakeFinished(self, peer, result):
        if self.show_secrets:
            self.log.info(
                "DH handshake with {peer} finished ({group}); "
                "Shared Secret: {secret} Session key: {session_key}",
                peer=peer, group=result.group.name,
                secret=result.shared_secret.hex(), session_key=result.session_key.hex(),
            )
        else:
            # The daemon's most frequent line, one per handshake: its text is
            # made here (twisted_keyx.core.logtext).
            group, key = result.group.name, session_key_fingerprint(result.session_key)
            self.log.info(
                literal(f"DH handshake with {peer} finished ({group}); "
                         f"session key fingerprint {key}"),
                peer=peer, group=group, fingerprint=key,
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


class DHClientProtocol(Session, Observer):
    """The DH handshake's client side; it is its own observer.

    ``finished`` fires with the :class:`~twisted_keyx.dh.handshake.HandshakeResult`,
    or fails with a :class:`~twisted_keyx.dh.handshake.HandshakeFailed`
    subclass that says what the server did wrong (``ServerHungUp`` when the
    connection ends first).  Cancelling it aborts the connection.
    """

    #: The framing class (:mod:`twisted_keyx.core.framing`: Int32Framing, or
    #: an unframed one in :mod:`twisted_keyx.dh.raw`).
    FRAMING: Any = Int32Framing

    #: Checks the group of message 4 off the reactor: ``check(payload)``
    #: returns a Deferred that fires with the group or fails with a
    #: :class:`~twisted_keyx.groups.registry.GroupError`, and cancelling it stops the
    #: check (:func:`twisted_keyx.groups.check.check_parameters_message`).  None:
    #: the machine checks it itself, on the reactor.
    check_parameters = None

    def __init__(self, handshake: Optional[DHClientHandshake] = None) -> None:
        if handshake is None:
            handshake = self.newHandshake()
        super().__init__(self.FRAMING, handshake, observer=self)
        handshake.ask_group_check = True
        self.finished: "defer.Deferred[HandshakeResult]" = defer.Deferred(self._cancel)
        #: The check of message 4 under way (the session reads nothing
        #: until it ends: the adapter's one pause-and-queue).
        self._check: Optional[defer.Deferred[Any]] = None

    def replaceHandshake(self, machine):
        super().replaceHandshake(machine)
        machine.ask_group_check = True

    def answer(self, session, machine, question):
        """The machine asks for message 4's group (a
        :class:`~twisted_keyx.core.decisions.CheckGroup`): checked by
        :attr:`check_parameters` if set, else by the machine's own
        ``accept_parameters``, here."""
        if not isinstance(question, CheckGroup):
            return super().answer(session, machine, question)
        if self.check_parameters is None:
            return machine.check_group_here(question.payload)
        check = self._check = self.check_parameters(question.payload)
        check.addBoth(self._checked)
        return check

    def _checked(self, outcome):
        self._check = None
        return outcome

    def _stopCheck(self):
        if self._check is not None:
            self._check.cancel()

    def connectionLost(self, reason):
        super().connectionLost(reason)
        self._stopCheck()  # after: the hang-up is the outcome, not the check

    @classmethod
    def newHandshake(cls, **options):
        """A client machine that hashes what it sends as this framing's peer
        will receive it; ``options`` go to :class:`DHClientHandshake`."""
        return DHClientHandshake(received_form=cls.FRAMING.received_form, **options)

    def _cancel(self, finished):
        # Cancelling ``finished`` (a timeout) is the outcome: the loss of the
        # connection, which the reactor reports later, must not errback it again.
        self.abort()
        self._stopCheck()

    def machineFinished(self, session, machine):
        self.finished.callback(machine.result)

    def machineFailed(self, session, machine, failure):
        self.finished.errback(failure)

    def sessionLost(self, session, machine, reason):
        self.finished.errback(hung_up(reason, f"while {machine.state.value}"))


class DHClientFactory(Factory):
    """Builds :class:`DHClientProtocol`; use ``protocol.finished`` for the result.

    ``handshake_options`` (``accept_parameters=``, ``private_key_factory=``,
    ``ask_host_key=``) go to each connection's :class:`DHClientHandshake`;
    ``check_parameters`` becomes each protocol's
    :attr:`DHClientProtocol.check_parameters`.
    """

    protocol = DHClientProtocol
    noisy = False

    def __init__(self,
                 check_parameters: Optional[Callable[[bytes], "defer.Deferred[Any]"]] = None,
                 **handshake_options: Any) -> None:
        self.check_parameters = check_parameters
        self.handshake_options = handshake_options

    def buildProtocol(self, addr):
        protocol = super().buildProtocol(addr)
        if self.check_parameters is not None:
            protocol.check_parameters = self.check_parameters
        if self.handshake_options:
            protocol.replaceHandshake(protocol.newHandshake(**self.handshake_options))
        return protocol
