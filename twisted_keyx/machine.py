"""What every handshake state machine shares: the table-driven dispatch.

A machine is a plain object with a ``state`` and a ``TRANSITIONS`` table
mapping ``(state, event)`` to ``(handler name, next state)``.  An event the
table does not list for the current state is refused (the subclass's
``_unexpected`` says how); a handler that raises :class:`ProtocolFailed`
leaves the machine in its ``FAILED`` state.  No I/O happens here: the
Twisted protocols feed the machines and send what they return.
"""

from twisted.internet.error import ConnectionDone, ConnectionLost


class ProtocolFailed(Exception):
    """The exchange cannot go on.

    ``reason`` says why, for logs and users; ``reply`` is what the server
    sends before it hangs up (None on the client, which just closes, or when
    the server sends nothing).
    """

    reply = None

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


class HandshakeFailed(ProtocolFailed):
    """A handshake cannot go on."""


class ServerHungUp(HandshakeFailed):
    """Client side: the connection closed before the handshake (or the
    session after it) finished."""

    @classmethod
    def after(cls, reason, during):
        """The failure for ``connectionLost(reason)``; ``during`` says what
        was under way (``"while awaiting Hey there!"``)."""
        if reason.check(ConnectionDone, ConnectionLost):
            why = "the server closed the connection"
        else:
            why = f"the connection failed: {reason.getErrorMessage()}"
        return cls(f"{why} {during}")


class StateMachine:
    """Table-driven dispatch; subclasses fill in the class attributes."""

    #: ``{(state, event): (handler method name, next state)}``
    TRANSITIONS = {}
    FAILED = None
    DONE = None

    def __init__(self, initial_state):
        self.state = initial_state

    @property
    def finished(self):
        return self.state is self.DONE

    def _dispatch(self, event, payload):
        """Run the handler the table gives for ``event`` in the current state
        and move to the next state; return what the handler returns."""
        step = self.TRANSITIONS.get((self.state, event))
        if step is None:
            raise self._unexpected(event, payload)
        handler, next_state = step
        try:
            reply = getattr(self, handler)(payload)
        except ProtocolFailed:
            self.state = self.FAILED
            raise
        self.state = next_state
        return reply

    def _unexpected(self, event, payload):
        """Return (not raise) the exception for an event the table refuses;
        implementations also move the machine to ``FAILED``."""
        raise NotImplementedError
