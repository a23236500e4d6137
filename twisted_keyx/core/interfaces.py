"""The contracts between the protocols and the service: what a password
handshake may ask of the daemon's state, declared with ``zope.interface``
as Twisted declares its own.

Every method that reads or writes state returns a Deferred, so that a store
that answers over a network (PostgreSQL, :mod:`twisted_keyx.service.stores`)
fits as well as a local file; nothing here may block the reactor.  A store
that cannot answer fails the Deferred with :class:`StoreUnavailable`, which
the protocols turn into a documented refusal ("the server cannot check
passwords right now"), never a traceback, never "wrong password".

Implementations are checked with ``zope.interface.verify.verifyObject`` in
the tests.
"""

from dataclasses import dataclass

from zope.interface import Attribute, Interface


class StoreUnavailable(Exception):
    """The store did not answer (a database down, a file unreadable): the
    request is refused, and may be tried again later."""


class StoreConflict(Exception):
    """A write that must not overwrite something it did not expect to (a
    user added twice, a record replaced that had changed meanwhile)."""


class IUserStore(Interface):
    """The users of the password handshakes (EKE and OPAQUE records, the
    record objects of :mod:`twisted_keyx.core.schemes`)."""

    def lookup(name, scheme):
        """Deferred firing with the record of user ``name`` if it is of
        ``scheme`` (``"eke"``, ``"opaque"``), else None: a server of one
        scheme does not see the users of another."""

    def count(scheme):
        """Deferred firing with the number of users of ``scheme``."""

    def users():
        """Deferred firing with a dict of every user name to its record."""

    def add(name, record):
        """Deferred: store a new user, in one transaction; fails with
        :class:`StoreConflict` if ``name`` exists."""

    def replace(name, old, new):
        """Deferred: replace user ``name``'s record ``old`` by ``new``
        atomically (a change of password); fails with
        :class:`StoreConflict` if the stored record is no longer ``old``.
        An interrupted replace leaves ``old`` in place."""

    def remove(name):
        """Deferred firing with True if user ``name`` existed and was
        removed."""


class IServerSetupStore(Interface):
    """The OPAQUE server setup (OPRF seed and server key pair), made once
    and shared by every daemon of a deployment."""

    where = Attribute("Where the setup is kept, for logs and messages: a key "
                      "file's path, a database's URL without its password.")

    def load():
        """Deferred firing with the
        :class:`~twisted_keyx.opaque.records.ServerSetup`, or None if there
        is none yet."""

    def create(setup):
        """Deferred: store ``setup`` unless a setup is stored already;
        fires with the one stored (``setup``, or the one another process
        made first, which every daemon of a deployment then shares)."""


class IGuessThrottle(Interface):
    """The daemon's guess throttle, as the password handshakes see it
    (:mod:`twisted_keyx.service.throttle`).

    A guess is counted when its answer is reserved (EKE's step 4, OPAQUE's
    KE2: the answer that lets a client test a password), before the client
    can use it, as a failure; only a login that succeeds refunds it.  So a
    guess whose connection, worker or daemon dies stays counted, and
    guesses sent at once are counted at once.
    """

    clock = Attribute("An IReactorTime whose seconds() the throttle counts in.")

    def reserve(user, source, peer):
        """Deferred firing with the seconds to hold the answer back (0: now),
        the guess counted; or failing with
        :class:`twisted_keyx.core.refusals.TooManyAttempts` (refuse it
        unchecked with that exception's reply: "too many attempts for this
        user; try again in N s"; the throttle counts the refusal) or
        :class:`StoreUnavailable` (refuse with
        :class:`twisted_keyx.core.refusals.ServerUnavailable`).  ``source`` is
        the peer's source group (an IPv4 address or an IPv6 /64), ``peer``
        its address as logged."""

    def succeeded(user, source):
        """The user logged in from ``source``: the guess reserved for it is
        refunded and ``source`` is familiar to the user from now on.
        Deferred; never fails (a store down is logged)."""

    def release(user, source):
        """The answer reserved for a guess was never made (its message was
        malformed, the step failed before the answer): refunded, as it
        taught the client nothing.  Deferred; never fails."""

    def failed(user, source, peer, why):
        """A guess failed (wrong password, unknown user, gave up after the
        answer): logged, or counted in a summary.  It was counted when
        reserved.  Deferred; never fails."""


class IThrottleStore(Interface):
    """The guess throttle's state (buckets of failures and answer slots, and
    the sources each user logged in from), shared by every process and
    daemon that uses the same store.  ``limits`` is the throttle's
    :class:`~twisted_keyx.service.throttle.GuessLimits`, ``now`` seconds on
    the epoch clock (the throttle's ``clock.seconds()``).  Each call is one
    transaction: a charge is counted in full or not at all."""

    def charge(user, source, now, limits):
        """Deferred firing with a :class:`~twisted_keyx.service.throttle.Charge`:
        the guess charged to its buckets and its answer's slot reserved, or
        refused (``delay`` None, nothing charged)."""

    def release(user, source, now, limits):
        """Deferred: the guess charged for ``user`` from ``source`` made no
        answer; its charge refunded."""

    def settle(user, source, now, limits):
        """Deferred: ``user`` logged in from ``source`` (its guess refunded
        as the policy says, the source familiar to the user from ``now``)."""


@dataclass(frozen=True, repr=False)
class Invitation:
    """One invitation to register over the network (``keyx-admin invite``,
    docs/opaque.rst, Registration).  The code itself is never stored:
    ``code_hash`` is :func:`twisted_keyx.opaque.invitation.code_hash` of
    it (32 bytes).  Times are POSIX seconds.  ``state`` is ``"pending"``,
    ``"used"`` or ``"revoked"``; a pending invitation past ``expires`` is
    expired (the store keeps it; the reader compares with its clock)."""

    user: str
    code_hash: bytes
    created: float
    expires: float
    state: str = "pending"

    def usable(self, now):
        return self.state == "pending" and now < self.expires

    def __repr__(self):
        return f"<Invitation for {self.user!r}, {self.state}, expires {self.expires:.0f}>"


class IInvitationStore(Interface):
    """The invitations of the OPAQUE registration over the network: at most
    one per user name (a new one replaces the old, whatever its state).
    The store also adds the users who register (:meth:`register`): the
    invitation used and the user added are one change, so it knows where
    its users are (the user file beside it, the same database)."""

    def invite(invitation):
        """Deferred: store ``invitation`` (an :class:`Invitation`, pending),
        replacing any other for its user, in one transaction."""

    def lookup(name):
        """Deferred firing with user ``name``'s :class:`Invitation` in any
        state, or None."""

    def redeem(name, code_hash, now):
        """Deferred firing with True if user ``name`` had a pending
        invitation with ``code_hash`` not expired at ``now``, now marked
        used, atomically: of two redeems at once at most one gets True.
        Else False, and nothing changes.  It adds no user: a registration
        uses :meth:`register`."""

    def register(name, code_hash, now, record):
        """Deferred: redeem user ``name``'s invitation of ``code_hash`` (as
        :meth:`redeem`) and add the user with ``record`` (as
        :meth:`IUserStore.add`), both or neither: fires with True once
        both are done; with False if the invitation is not pending with
        ``code_hash`` and unexpired at ``now`` (nothing changes); fails with
        :class:`StoreConflict` if user ``name`` exists (the invitation stays
        pending) or :class:`StoreUnavailable`, and an interrupted register
        leaves the invitation usable and no user.  Of two registers with
        one code at once at most one gets True.  (docs/opaque.rst,
        Registration: how each store keeps it atomic.)"""

    def revoke(name):
        """Deferred firing with True if user ``name`` had a pending
        invitation, now revoked."""

    def invitations():
        """Deferred firing with a dict of every user name to its
        :class:`Invitation` (any state), for ``keyx-admin listusers``."""
