"""What a machine's step may hand its adapter besides the bytes to send.

A step (``feed``, ``start``, an answer) returns its output: None, one
message (bytes), or a tuple of messages and :class:`Decision` values, acted
on in order by the session adapter (:mod:`twisted_keyx.core.adapter`).  A
:class:`Question` is returned alone: the machine cannot go on without its
answer.  The adapter asks its observer (:meth:`Observer.answer
<twisted_keyx.core.adapter.Observer.answer>`), which may answer at once or
later (a Deferred: a store over a network), reads nothing from the peer
meanwhile (what arrives is queued, in order), then gives the answer to
``machine.answer(question, value)``, whose output is handled the same way.
An answer that failed (a :class:`~twisted_keyx.core.interfaces.StoreUnavailable`,
a :class:`~twisted_keyx.groups.registry.GroupError`) is given as the
exception itself; the machine decides what it means on the wire.

The other decisions are told, not asked: the adapter acts on
:class:`HoldReplies` and :class:`NextMachine` itself, records every
decision in order (:attr:`Session.decisions
<twisted_keyx.core.adapter.Session.decisions>`), and tells the observer of
the rest (:meth:`Observer.machineDecided
<twisted_keyx.core.adapter.Observer.machineDecided>`).  No observer needs to
parse a message or look at a machine's state: what it must know, a machine
says here.
"""

from dataclasses import dataclass
from typing import Any


class Decision:
    """Something a machine wants done that is not a message to the peer."""

    __slots__ = ()


class Question(Decision):
    """A decision the machine needs answered before it goes on."""

    __slots__ = ()


@dataclass(frozen=True)
class NeedRecord(Question):
    """"I need user ``user``'s record of ``scheme``": answered with the record
    or None (:meth:`~twisted_keyx.core.interfaces.IUserStore.lookup`)."""

    user: str
    scheme: str


@dataclass(frozen=True)
class GuessAnswering(Question):
    """"A guess for user ``user`` is about to be answered" (the answer that
    tells a guesser whether the password was right): answered with the
    seconds to hold the answer back (0: now), or the refusal
    (:class:`~twisted_keyx.core.refusals.TooManyAttempts`,
    :class:`~twisted_keyx.core.interfaces.StoreUnavailable`) that refuses
    the guess unchecked (:meth:`~twisted_keyx.core.interfaces.IGuessThrottle.reserve`)."""

    user: str


@dataclass(frozen=True)
class CheckGroup(Question):
    """"Check the group of this message" (a client's message 4, off the
    reactor): answered with the group, or the
    :class:`~twisted_keyx.groups.registry.GroupError` that refuses it."""

    payload: bytes


@dataclass(frozen=True)
class NeedInvitation(Question):
    """"Which invitation has user ``user``?": answered with the
    :class:`~twisted_keyx.core.interfaces.Invitation` (any state) or None
    (:meth:`~twisted_keyx.core.interfaces.IInvitationStore.lookup`), or
    the exception that stood in the way."""

    user: str


@dataclass(frozen=True)
class Register(Question):
    """"Redeem user ``user``'s invitation of ``code_hash`` and store the new
    user with ``record``, both or neither": answered with True once both
    are done, False if the invitation is not (or no longer) usable
    (:meth:`~twisted_keyx.core.interfaces.IInvitationStore.register`), or
    the exception (a :class:`~twisted_keyx.core.interfaces.StoreConflict`
    for a user that exists; the invitation is then left as it was)."""

    user: str
    code_hash: bytes
    record: object


@dataclass(frozen=True)
class ReplaceUser(Question):
    """"Replace user ``user``'s record ``old`` by ``new``, atomically" (a
    change of password): answered with None once stored
    (:meth:`~twisted_keyx.core.interfaces.IUserStore.replace`), or the
    exception (a :class:`~twisted_keyx.core.interfaces.StoreConflict` if
    the stored record is no longer ``old``)."""

    user: str
    old: object
    new: object


@dataclass(frozen=True)
class PasswordChanged(Decision):
    """User ``user``'s password was changed: the new record is stored (on
    the server), or the server said so (on the client)."""

    user: str


@dataclass(frozen=True)
class RegistrationRefused(Decision):
    """A registration for user ``user`` was refused, ``why`` in words safe
    to log (never the code): no usable invitation, or the client left
    without the record because the server did not prove the code."""

    user: str
    why: str


@dataclass(frozen=True)
class HoldReplies(Decision):
    """Send nothing and read nothing for ``seconds``: what is sent meanwhile
    goes out when they have passed (:meth:`Session.holdReplies
    <twisted_keyx.core.adapter.Session.holdReplies>`)."""

    seconds: float


@dataclass(frozen=True)
class NextMachine(Decision):
    """The machine is done and ``machine`` carries on over the same
    connection (the chat after a login): given with the step that finishes
    the machine, acted on by the adapter once the step's messages are out
    and the observer has been told the machine finished
    (:meth:`Observer.machineFinished
    <twisted_keyx.core.adapter.Observer.machineFinished>`).  A machine that
    finishes without one ends the session."""

    machine: Any


@dataclass(frozen=True)
class LoggedIn(Decision):
    """User ``user`` proved the password: ``result`` is the handshake's (its
    session key).  The guess throttle forgets the user's failures from
    that source (:meth:`~twisted_keyx.core.interfaces.IGuessThrottle.succeeded`)."""

    user: str
    result: Any


@dataclass(frozen=True)
class Registered(Decision):
    """User ``user`` registered (with an invitation) and is stored: no
    login follows on this connection."""

    user: str


@dataclass(frozen=True)
class GuessFailed(Decision):
    """A guess for user ``user`` failed (``why``: wrong password, unknown
    user, left after the answer); it was answered, so it counts.  ``left``:
    the client left after the answer without saying more."""

    user: str
    why: str
    left: bool = False


@dataclass(frozen=True)
class GuessUnanswered(Decision):
    """The guess for user ``user`` let through (:class:`GuessAnswering`)
    was never answered: its step failed first, so it taught the client
    nothing (:meth:`~twisted_keyx.core.interfaces.IGuessThrottle.release`)."""

    user: str


def answer_by_hand(question, lookup_user):
    """The answer a password machine's ``receive`` gives its own question
    when it is driven by hand, with no adapter: a :class:`NeedRecord` is
    answered by ``lookup_user(name)`` (the record or None; None without
    ``lookup_user``), a :class:`NeedInvitation` with None and a
    :class:`Register` with False (no invitation store: no one registers),
    a :class:`ReplaceUser` with
    :class:`~twisted_keyx.core.interfaces.StoreUnavailable` (no user store:
    no record is replaced), the others with 0 (a guess is answered at
    once: no throttle)."""
    if isinstance(question, NeedRecord):
        return None if lookup_user is None else lookup_user(question.user)
    if isinstance(question, NeedInvitation):
        return None
    if isinstance(question, Register):
        return False
    if isinstance(question, ReplaceUser):
        from twisted_keyx.core.interfaces import StoreUnavailable

        return StoreUnavailable("no user store to replace the record in")
    return 0
