"""The guess throttle: online password guessing, slowed and made visible.

One :class:`GuessThrottle` per daemon serves every password handshake (EKE,
OPAQUE).  It counts failed guesses per **user name** (whether or not the
user exists, so that ``--hide-unknown-users`` stays hidden) and per **source
group** (:meth:`twisted_keyx.limits.Limits.source_of`), and once either has
more than ``free`` recent failures it paces the answers: at most one per
``delay`` seconds for that user (and for that source), whatever addresses
the guesses come from.  The handshake asks before it answers the message
whose answer tells a guesser whether the password was right (EKE: step 4),
and holds that answer back (:meth:`twisted_keyx.adapter.Session.holdReplies`,
on the reactor's clock, never blocking) for the delay it is given.  The hold
does not depend on whether the guess is right, so its length tells nothing.

No lockout: failures are forgotten one per ``forget`` seconds, a success
resets the user's count, and a guess that would have to wait longer than
``max_wait`` is refused at once without the password being looked at
(``delay_for`` returns None), so the queue never grows past it: the real
user gets in within ``max_wait`` seconds of the guessing stopping.

The API, for any password handshake::

    delay = throttle.delay_for(user, source)   # before the answer: None = refuse now
    throttle.failed(user, source, peer, why)   # a wrong password (or unknown user)
    throttle.succeeded(user, source)           # logged in

Every failed guess is logged as one line (user, peer, why) until a burst is
running for its user or source; then one summary line per
``SUMMARY_EVERY`` seconds, and one when it has been quiet ``SUMMARY_EVERY``
seconds, as the connection policy logs refusals.
"""

from dataclasses import dataclass

from twisted.application import service
from twisted.logger import Logger

from twisted_keyx.peers import printable

#: Seconds between summary lines of a burst (and the quiet that ends one).
SUMMARY_EVERY = 10.0
#: Throttle entries kept at most (user names are the peer's choice).
MAX_ENTRIES = 100_000


@dataclass(frozen=True)
class GuessLimits:
    #: Failures allowed without delay, per user and per source.
    free: int = 3
    #: Seconds between answers once throttled (0: no throttle).
    delay: float = 1.0
    #: One failure is forgotten per this many seconds.
    forget: float = 60.0
    #: A guess that would wait longer is refused at once, unchecked.
    max_wait: float = 10.0


class _Entry:
    __slots__ = ("failures", "updated", "next_answer", "burst")

    def __init__(self, now):
        self.failures = 0.0
        self.updated = now
        self.next_answer = now
        self.burst = None


class _Burst:
    __slots__ = ("count", "refused", "started", "last", "peers", "timer")

    def __init__(self, now):
        self.count = 0
        self.refused = 0
        self.started = self.last = now
        self.peers = set()
        self.timer = None


def _user_name(user):
    return repr(printable(user))


class GuessThrottle(service.Service):
    """Counts failed guesses and paces answers; see the module docstring.
    A service so that stopping the daemon logs the bursts still open."""

    log = Logger()

    def __init__(self, limits=GuessLimits(), clock=None):
        if clock is None:
            from twisted.internet import reactor as clock
        self.limits = limits
        self.clock = clock
        self._entries = {}

    # --- bookkeeping -----------------------------------------------------------

    def _entry(self, key, create):
        now = self.clock.seconds()
        entry = self._entries.get(key)
        if entry is None:
            if not create:
                return None
            if len(self._entries) >= MAX_ENTRIES:
                self._prune(now)
            entry = self._entries[key] = _Entry(now)
        elif self.limits.forget:
            forgotten = (now - entry.updated) / self.limits.forget
            entry.failures = max(0.0, entry.failures - forgotten)
        entry.updated = now
        return entry

    def _prune(self, now):
        for key in list(self._entries):
            entry = self._entries[key]
            if entry.burst is None and entry.next_answer <= now:
                del self._entries[key]
        while len(self._entries) >= MAX_ENTRIES:  # all busy: drop the oldest
            key = next(iter(self._entries))
            self._endBurst(key, self._entries.pop(key))

    def _throttled(self, entry):
        return entry is not None and entry.failures >= self.limits.free

    # --- the API -----------------------------------------------------------------

    def delay_for(self, user, source):
        """Seconds to hold the answer to this guess back, counted from now
        (0: answer at once), the slot reserved; None: refuse it at once,
        unchecked (the queue is longer than ``max_wait``)."""
        if not self.limits.delay:
            return 0
        now = self.clock.seconds()
        entries = [e for e in (self._entry(("user", user), False),
                               self._entry(("source", source), False))
                   if self._throttled(e)]
        if not entries:
            return 0
        answer = max([now] + [e.next_answer for e in entries])
        if answer - now > self.limits.max_wait:
            return None
        for entry in entries:
            entry.next_answer = answer + self.limits.delay
        return answer - now

    def failed(self, user, source, peer=None, why=None):
        """A failed guess: counted for ``user`` and ``source``, logged."""
        user_entry = self._entry(("user", user), True)
        source_entry = self._entry(("source", source), True)
        user_entry.failures += 1
        source_entry.failures += 1
        peer = peer if peer is not None else source
        if user_entry.burst is None and source_entry.burst is None:
            self.log.info(
                "Failed guess for user {user} from {peer}{why}",
                user=_user_name(user), peer=peer, why=f": {why}" if why else "",
            )
        for key, entry in ((("user", user), user_entry), (("source", source), source_entry)):
            if self._throttled(entry):
                self._count(key, entry, peer)

    def refused(self, user, source):
        """A guess refused unchecked (``delay_for`` said None): counted in
        the summaries only."""
        for key in (("user", user), ("source", source)):
            entry = self._entries.get(key)
            if entry is not None and entry.burst is not None:
                entry.burst.refused += 1
                entry.burst.last = self.clock.seconds()

    def succeeded(self, user, source):
        """``user`` logged in from ``source``: the user's count starts again."""
        entry = self._entries.get(("user", user))
        if entry is not None:
            entry.failures = 0.0

    # --- bursts ------------------------------------------------------------------

    def _count(self, key, entry, peer):
        now = self.clock.seconds()
        if entry.burst is None:
            entry.burst = _Burst(now)
            entry.burst.timer = self.clock.callLater(SUMMARY_EVERY, self._summary, key)
            self.log.warn(
                "Guessing {what}: more than {free} failed guesses; answers now "
                "held back, at most one per {delay:g} s",
                what=self._what(key), free=self.limits.free, delay=self.limits.delay,
            )
        burst = entry.burst
        burst.count += 1
        burst.last = now
        if len(burst.peers) < 1000:
            burst.peers.add(peer)

    @staticmethod
    def _what(key):
        kind, name = key
        return f"user {_user_name(name)}" if kind == "user" else f"from {name}"

    def _summary(self, key):
        entry = self._entries.get(key)
        if entry is None or entry.burst is None:
            return
        burst = entry.burst
        burst.timer = None
        now = self.clock.seconds()
        if burst.count or burst.refused:
            self.log.info(
                "Guessing {what}: {count} failed guess(es) in {seconds:.1f} s from "
                "{peers} peer(s); {refused} more refused unchecked",
                what=self._what(key), count=burst.count, seconds=now - burst.started,
                peers=len(burst.peers) if len(burst.peers) < 1000 else "1000 or more",
                refused=burst.refused,
            )
        if now - burst.last >= SUMMARY_EVERY:
            entry.burst = None
            return
        burst.count = burst.refused = 0
        burst.started = now
        burst.peers = set()
        burst.timer = self.clock.callLater(SUMMARY_EVERY, self._summary, key)

    def _endBurst(self, key, entry, log=False):
        burst = entry.burst
        if burst is not None and burst.timer is not None and burst.timer.active():
            burst.timer.cancel()
        if burst is not None and log and (burst.count or burst.refused):
            self.log.info(
                "Guessing {what}: {count} failed guess(es) in {seconds:.1f} s; "
                "{refused} more refused unchecked",
                what=self._what(key), count=burst.count,
                seconds=self.clock.seconds() - burst.started, refused=burst.refused)
        entry.burst = None

    def stopService(self):
        """Log what is open and cancel the timers (the daemon is stopping)."""
        for key, entry in list(self._entries.items()):
            if entry.burst is not None:
                self._endBurst(key, entry, log=True)
        return super().stopService()
