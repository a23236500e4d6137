"""What every state machine shares: the table-driven dispatch, and failure.

A machine is a plain object with a ``state`` and a ``TRANSITIONS`` table
mapping ``(state, event)`` to ``(handler name, next state)``.  No I/O happens
here, and nothing here knows about Twisted: the session adapter
(:mod:`twisted_keyx.core.adapter`) feeds the machines and sends what they return.

This base class owns failure: an event the table does not list for the
current state, or a handler (or decoding step) that raises
:class:`ProtocolFailed`, leaves the machine in its ``FAILED`` state, and this
is the only place that moves a machine there.  Subclasses say *what* went
wrong (``_unexpected`` returns the exception), never *that* the machine
failed.

The table is checked when a machine class is defined: a handler name the
class does not define, or a table without ``FAILED`` and ``DONE`` states,
is a ``TypeError`` at import, not a surprise at the first message.
"""


import enum
from typing import Any, Dict, FrozenSet, Optional, Tuple

from twisted_keyx.core.decisions import Decision, Question


class LocalEvent(enum.Enum):
    """Events that come from this side's own program, not from the peer."""

    START = "start()"


#: The event of a client's ``start()``: it sends the first message.
START = LocalEvent.START


class ProtocolFailed(Exception):
    """The exchange cannot go on.

    ``reason`` says why, for logs and users; ``reply`` is what the server
    sends before it hangs up (None on the client, which just closes, or when
    the server sends nothing).
    """

    reply: Optional[bytes] = None
    #: Decisions (:mod:`twisted_keyx.core.decisions`) that go with the
    #: failure, told to the observer before it is (a guess that failed, a
    #: guess reserved and never answered).
    decisions: Tuple[Any, ...] = ()

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class HandshakeFailed(ProtocolFailed):
    """A handshake cannot go on."""


class ServerHungUp(HandshakeFailed):
    """Client side: the connection closed before the handshake (or the
    session after it) finished."""


class UnexpectedReply(HandshakeFailed):
    """Client side: the server sent something no step of the handshake
    allows at this point (every handshake's client raises this one)."""


#: The password handshakes' one refusal (EKE and OPAQUE), as sent.
AUTHENTICATION_FAILED_REPLY = b"authentication failed"


class AuthenticationFailed(HandshakeFailed):
    """A password handshake's generic refusal: wrong password, unknown user
    (when hidden), a box or MAC that does not verify.  The server replies
    ``authentication failed`` and closes; a client that reads that reply
    (or cannot verify the server) fails with this too."""

    reply: Optional[bytes] = AUTHENTICATION_FAILED_REPLY


class MachineDefinitionError(TypeError):
    """A machine class whose table does not hold together."""


class StateMachine:
    """Table-driven dispatch; subclasses fill in the class attributes."""

    #: ``{(state, event): (handler method name, next state)}``
    TRANSITIONS: Dict[Tuple[Any, Any], Tuple[str, Any]] = {}
    FAILED: Any = None
    DONE: Any = None
    #: For diagrams and traces: the state a fresh machine is in.
    INITIAL: Any = None
    #: Who sends what this machine receives: ``"client"`` or ``"server"``
    #: (framings word an over-long message for them).
    PEER: Optional[str] = None
    #: States whose next input may take long and needs nothing of the
    #: reactor: a client's password key stretching (scrypt, Argon2id; up to
    #: seconds, and they release the GIL).  A session with a ``worker``
    #: (:class:`twisted_keyx.core.adapter.Session`) feeds that input in a thread,
    #: so that its timeouts still fire.
    SLOW_STATES: FrozenSet[Any] = frozenset()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not cls.TRANSITIONS:
            return  # an abstract base: its subclasses bring the table
        for attribute in ("INITIAL", "DONE", "FAILED"):
            if getattr(cls, attribute) is None:
                raise MachineDefinitionError(f"{cls.__name__} has TRANSITIONS but no {attribute}")
        for (state, event), step in cls.TRANSITIONS.items():
            if not (isinstance(step, tuple) and len(step) == 2):
                raise MachineDefinitionError(
                    f"{cls.__name__}.TRANSITIONS[{state}, {event}]: "
                    "expected (handler name, next state)")
            handler, _ = step
            if not callable(getattr(cls, handler, None)):
                raise MachineDefinitionError(
                    f"{cls.__name__}.TRANSITIONS[{state}, {event}] names the handler "
                    f"{handler!r}, which {cls.__name__} does not define")
        states = {cls.INITIAL, cls.DONE, cls.FAILED}
        for (state, _), (_, following) in cls.TRANSITIONS.items():
            states.update((state, following))
        if not set(cls.SLOW_STATES) <= states:
            raise MachineDefinitionError(
                f"{cls.__name__}.SLOW_STATES names states its table does not have: "
                f"{sorted(map(str, set(cls.SLOW_STATES) - states))}")

    def __init__(self, initial_state=None):
        self.state = self.INITIAL if initial_state is None else initial_state
        self._asked = None

    @property
    def finished(self):
        return self.state is self.DONE

    @property
    def failed(self):
        return self.state is self.FAILED

    @property
    def slow(self):
        """Whether the next input may take long (:data:`SLOW_STATES`)."""
        return self.state in self.SLOW_STATES

    def feed(self, payload):
        """What the session adapter calls for each message from the peer:
        return the message to send back, or None.  Most machines' ``receive``
        is just that; a machine whose ``receive`` returns something else
        (the client chat's reply text) says so by overriding this."""
        return self.receive(payload)

    def _start(self):
        """Dispatch :data:`START`; for a client's ``start()``."""
        if self.state is not self.INITIAL:
            raise RuntimeError("the handshake has already started")
        return self._dispatch(START, None)

    def _dispatch(self, event, payload, decode=None):
        """Run the handler the table gives for ``event`` in the current state
        and move to the next state; return what the handler returns.

        ``decode``, if given, turns the payload into ``(event, payload)``
        first (opening a record, say); it runs only in a state that is not
        over, and may raise :class:`ProtocolFailed` like a handler.
        """
        try:
            if decode is not None:
                if self.state is self.DONE or self.state is self.FAILED:
                    raise self._unexpected(event, payload)
                event, payload = decode(payload)
            step = self.TRANSITIONS.get((self.state, event))
            if step is None:
                raise self._unexpected(event, payload)
            handler, next_state = step
            reply = getattr(self, handler)(payload)
        except ProtocolFailed as failure:
            raise self._failed(failure)
        if isinstance(reply, Question):
            # The step is not over until answered: the state moves then.
            self._asked = (self._asked[0], self._asked[1], next_state)
            return reply
        self.state = next_state
        return reply

    # --- questions (twisted_keyx.core.decisions) -------------------------------

    def _ask(self, question, then):
        """Return ``question`` from a step; its answer goes to ``then(answer)``,
        whose return is the step's output (run by :meth:`answer`).  The
        machine stays in the state the step began in until the step's
        output is whole."""
        self._asked = (question, then, None)
        return question

    def answer(self, question, value):
        """The answer to ``question``, the last output of this machine: the
        value asked for, or the exception that stood in its way.  Returns
        the rest of the step's output; a :class:`ProtocolFailed` raised on
        the way leaves the machine in ``FAILED``, as in :meth:`_dispatch`."""
        asked, self._asked = self._asked, None
        if asked is None or asked[0] is not question:
            raise RuntimeError(f"{type(self).__name__} did not ask {question!r}")
        _, then, next_state = asked
        try:
            output = then(value)
        except ProtocolFailed as failure:
            raise self._failed(failure)
        if isinstance(output, Question):
            self._asked = (self._asked[0], self._asked[1], next_state)
        else:
            self.state = next_state
        return output

    def settle(self, output, answer=None):
        """``output`` with every question answered at once by
        ``answer(question)`` (a machine that asks none needs no ``answer``),
        and without decisions: the messages alone (bytes, a tuple of them,
        or None).  For callers that drive a machine by hand (tests,
        benchmarks) rather than through the adapter."""
        while isinstance(output, Question):
            if answer is None:
                raise RuntimeError(f"{type(self).__name__} asked {output!r}, and nothing answers")
            output = self.answer(output, answer(output))
        if isinstance(output, tuple):
            messages = tuple(item for item in output if isinstance(item, bytes))
            return messages if len(messages) > 1 else (messages[0] if messages else None)
        if isinstance(output, Decision):
            return None
        return output

    def abandoned(self):
        """The peer left (or timed out) in the current state: the decisions
        that follows from it (a guess counted as failed), or None."""
        return None

    def too_long(self, reason):
        """The framing saw a message longer than :attr:`max_message_length`
        (``reason`` says how, in its words): return the failure to end the
        session with; the machine has failed."""
        return self._failed(self._too_long(reason))

    def refuse(self, failure):
        """Fail the machine from outside it (the guess throttle refusing a
        guess before the machine sees it); return ``failure``."""
        return self._failed(failure)

    def _failed(self, failure):
        """The one place a machine moves to ``FAILED``."""
        self.state = self.FAILED
        self._asked = None
        return failure

    def _too_long(self, reason):
        """Return the exception for an over-long message (subclasses word it)."""
        raise NotImplementedError

    def _unexpected(self, event, payload):
        """Return (not raise) the exception for an event the table refuses
        in the current state; :meth:`_dispatch` moves to ``FAILED``."""
        raise NotImplementedError
