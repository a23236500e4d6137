"""The guess throttle: online password guessing, slowed and made visible,
without locking the real user out (docs/fleet.rst, "The guess throttle").

One :class:`GuessThrottle` per daemon serves every password handshake (EKE,
OPAQUE) through :class:`twisted_keyx.core.interfaces.IGuessThrottle`::

    delay = yield throttle.reserve(user, source, peer)  # before the answer
    # ... hold the answer (EKE's step 4, OPAQUE's KE2) back ``delay`` seconds;
    # TooManyAttempts: refuse unchecked, with its own reply line
    throttle.failed(user, source, peer, why)   # logged (already counted)
    throttle.succeeded(user, source)           # refunds the guess

**A guess is counted when its answer is reserved**, before the client can
use it: :meth:`GuessThrottle.reserve` charges it as a failure, and only a
login that succeeds refunds it.  Sixty guesses sent at once are sixty
failures the moment their answers are reserved, whatever happens to their
connections, workers or daemons afterwards.

**Buckets.**  A guess charges the buckets it belongs to; each holds failures
(one forgotten per ``forget`` seconds) and the time its next answer may go
out.  A bucket with ``free`` failures or more is throttled: the guess's
answer waits for the latest of its throttled buckets' slots, and takes the
next slot of each (one answer per ``delay`` seconds); a guess that would wait
longer than ``max_wait`` is refused unchecked
(:class:`~twisted_keyx.core.refusals.TooManyAttempts`, "too many attempts
for this user; try again in N s"), not charged, and counted in the
summaries.  The buckets:

- from a source the user is **familiar** with (the user logged in from it in
  the last ``familiar_days`` days; a source is an IPv4 address or an IPv6
  /64, :meth:`twisted_keyx.service.limits.Limits.source_of`): that pair's own
  bucket, which only guesses from that source for that user spend;
- from any other source: the user's bucket (every unfamiliar source
  together) and the source's bucket (every user it guesses).

So while thousands of addresses guess alice's password, her unfamiliar
bucket answers one guess a second and refuses the rest, and alice, from the
address she logged in from yesterday, is answered at once.  A success from a
familiar source clears that pair's failures; a success from an unfamiliar
source refunds its own guess and makes the source familiar.

**State** lives in an :class:`~twisted_keyx.core.interfaces.IThrottleStore`.
:class:`MemoryThrottleStore`, the default, bounds its memory without ever
forgetting a failure early: the user and source buckets are counters in a
fixed-size sketch of decaying counters (each key hashed, with a secret, to
one counter in each of ``SKETCH_ROWS`` rows; a key reads the smallest of its
counters), so a flood of made-up user names cannot push a real user's
failures out of a table, it can only add to other keys' counts (a
collision over-counts, never under-counts); familiar pairs, made only by
logins that succeeded, are kept exactly and expire after ``familiar_days``.
The SQL stores (:mod:`twisted_keyx.service.sqlstore`: SQLite for the workers
of one daemon, PostgreSQL for a fleet) keep the same buckets as rows, each
charge one transaction, so every process and daemon sharing them throttles
as one.

**Logs.**  Every failed guess is logged as one line until a burst runs for
its user or source (its bucket throttled); then it is counted, with the
refusals, in one summary line per ``SUMMARY_EVERY`` seconds and one when the
burst has been quiet that long.  At most ``MAX_BURSTS`` bursts are tracked by
name; beyond, the failures are counted in one summary for "other users and
sources", so that every failure is logged or counted.  The bursts are the
daemon's one log-rate limiter, :class:`twisted_keyx.core.lograte.Bursts`.
"""

import hashlib
import os
from array import array
from dataclasses import dataclass

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from twisted_keyx.core.interfaces import IGuessThrottle, IThrottleStore
from twisted_keyx.core.lograte import MAX_WHO, Bursts
from twisted_keyx.core.peers import printable
from twisted_keyx.core.refusals import TooManyAttempts

#: Seconds between summary lines of a burst (and the quiet that ends one).
SUMMARY_EVERY = 10.0
#: Bursts tracked by name at once; the others are summed as one.
MAX_BURSTS = 1000
#: The sketch of :class:`MemoryThrottleStore`: rows, and counters per row.
SKETCH_ROWS = 4
SKETCH_WIDTH = 1 << 16
DAY = 86400.0
#: Seconds between deletions of the SQL stores' spent rows.
PRUNE_EVERY = 300.0


@dataclass(frozen=True)
class GuessLimits:
    #: Failures a bucket allows without delay.
    free: int = 3
    #: Seconds between answers once throttled (0: no throttle).
    delay: float = 1.0
    #: One failure is forgotten per this many seconds.
    forget: float = 60.0
    #: A guess that would wait longer is refused at once, unchecked.
    max_wait: float = 10.0
    #: A source is familiar to a user for this many days after a login from it.
    familiar_days: float = 30.0


@dataclass(frozen=True)
class Charge:
    """What a store's :meth:`~IThrottleStore.charge` decided."""

    #: Seconds to hold the answer back; None: refused unchecked.
    delay: float | None
    #: When refused: seconds until a guess could be accepted again.
    retry_after: float = 0.0
    #: The source is familiar to the user.
    familiar: bool = False
    #: The buckets at or over their free failures: ("user", "source", "familiar").
    throttled: tuple = ()


class Bucket:
    """A bucket's state; :func:`charge_buckets` is the policy over them."""

    __slots__ = ("failures", "updated", "next_answer")

    def __init__(self, failures=0.0, updated=0.0, next_answer=0.0):
        self.failures = failures
        self.updated = updated
        self.next_answer = next_answer

    def decay(self, now, forget):
        if forget and now > self.updated:
            self.failures = max(0.0, self.failures - (now - self.updated) / forget)
        self.updated = max(self.updated, now)


def charge_buckets(buckets, now, limits):
    """The policy (module docstring): charge one guess to ``buckets`` (a
    dict of kind to :class:`Bucket`, changed in place) at ``now``; return
    ``(delay or None, retry_after, throttled kinds)``."""
    for bucket in buckets.values():
        bucket.decay(now, limits.forget)
    throttled = tuple(kind for kind, b in buckets.items() if b.failures >= limits.free)
    answer = max([now] + [buckets[kind].next_answer for kind in throttled])
    if answer - now > limits.max_wait:
        return None, answer - now - limits.max_wait, throttled
    for kind in throttled:
        buckets[kind].next_answer = answer + limits.delay
    for bucket in buckets.values():
        bucket.failures += 1
    return answer - now, 0.0, throttled


class _Sketch:
    """Decaying counters, ``rows`` x ``width``, each key on one counter per
    row (a count-min sketch): bounded memory.  A charge adds 1 to each of
    its key's counters and a refund takes 1 off them; every counter decays
    as one key would, so a counter is never below the count of any key on
    it, and a key reads the smallest of its counters: never less than its
    true count, more only when every one of its counters is shared."""

    def __init__(self, rows=SKETCH_ROWS, width=SKETCH_WIDTH):
        self.rows, self.width = rows, width
        size = rows * width
        self.failures = array("d", bytes(8 * size))
        self.updated = array("d", bytes(8 * size))
        self.next_answer = array("d", bytes(8 * size))
        self._secret = os.urandom(16)

    def cells(self, key):
        digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=4 * self.rows,
                                 key=self._secret).digest()
        return [row * self.width + int.from_bytes(digest[4 * row:4 * row + 4], "big") % self.width
                for row in range(self.rows)]

    def read(self, cells, now, forget):
        """The :class:`Bucket` of the key on ``cells``, as estimated."""
        for cell in cells:
            self._decay(cell, now, forget)
        return Bucket(min(self.failures[cell] for cell in cells), now,
                      min(self.next_answer[cell] for cell in cells))

    def _decay(self, cell, now, forget):
        if forget and now > self.updated[cell]:
            self.failures[cell] = max(0.0, self.failures[cell]
                                      - (now - self.updated[cell]) / forget)
        self.updated[cell] = max(self.updated[cell], now)

    def add(self, cells, amount, now, forget, next_answer=0.0):
        """``amount`` (1 or -1) on the key's counters, decayed to ``now``;
        its next answer not before ``next_answer``."""
        for cell in cells:
            self._decay(cell, now, forget)
            self.failures[cell] = max(0.0, self.failures[cell] + amount)
            self.next_answer[cell] = max(self.next_answer[cell], next_answer)


class _Familiar:
    __slots__ = ("last_login", "bucket")

    def __init__(self, now):
        self.last_login = now
        self.bucket = Bucket(0.0, now, now)


@implementer(IThrottleStore)
class MemoryThrottleStore:
    """The throttle's state in this process (module docstring); answers at
    once (its Deferreds have fired)."""

    def __init__(self, rows=SKETCH_ROWS, width=SKETCH_WIDTH):
        self._sketch = _Sketch(rows, width)
        self._familiar = {}
        self._familiar_checked = 0
        self._prune_at = 1024

    def _familiar_entry(self, user, source, now, limits):
        entry = self._familiar.get((user, source))
        if entry is not None and now - entry.last_login > limits.familiar_days * DAY:
            del self._familiar[(user, source)]
            return None
        return entry

    def _keys(self, user, source):
        return {"user": self._sketch.cells("u " + user), "source": self._sketch.cells("s " + source)}

    def charge(self, user, source, now, limits):
        familiar = self._familiar_entry(user, source, now, limits)
        if familiar is not None:
            delay, retry, throttled = charge_buckets({"familiar": familiar.bucket}, now, limits)
            return defer.succeed(Charge(delay, retry, True, throttled))
        cells = self._keys(user, source)
        buckets = {kind: self._sketch.read(c, now, limits.forget) for kind, c in cells.items()}
        delay, retry, throttled = charge_buckets(buckets, now, limits)
        if delay is not None:
            for kind, bucket in buckets.items():
                self._sketch.add(cells[kind], 1, now, limits.forget, bucket.next_answer)
        return defer.succeed(Charge(delay, retry, False, throttled))

    def _refund(self, user, source, now, limits):
        for c in self._keys(user, source).values():
            self._sketch.add(c, -1, now, limits.forget)

    def release(self, user, source, now, limits):
        familiar = self._familiar_entry(user, source, now, limits)
        if familiar is not None:
            familiar.bucket.decay(now, limits.forget)
            familiar.bucket.failures = max(0.0, familiar.bucket.failures - 1)
        else:
            self._refund(user, source, now, limits)
        return defer.succeed(None)

    def settle(self, user, source, now, limits):
        familiar = self._familiar_entry(user, source, now, limits)
        if familiar is None:
            self._refund(user, source, now, limits)
            familiar = self._familiar[(user, source)] = _Familiar(now)
            if len(self._familiar) >= self._prune_at:
                self._prune(now, limits)
        familiar.last_login = now
        familiar.bucket.failures = 0.0
        familiar.bucket.next_answer = now
        return defer.succeed(None)

    def _prune(self, now, limits):
        horizon = limits.familiar_days * DAY
        for key, entry in list(self._familiar.items()):
            if now - entry.last_login > horizon:
                del self._familiar[key]
        self._prune_at = max(1024, 2 * len(self._familiar))

    def familiar(self, user, source, now, limits):
        """Deferred: whether ``source`` is familiar to ``user`` (for tests
        and ``keyx-admin``)."""
        return defer.succeed(self._familiar_entry(user, source, now, limits) is not None)


def _user_name(user):
    return repr(printable(user))


def _what(key):
    """A burst's key in the lines: ``("user", name)``, ``("source", source)``,
    or None for what :data:`MAX_BURSTS` leaves out."""
    if key is None:
        return "other users and sources"
    kind, name = key
    return f"user {_user_name(name)}" if kind == "user" else f"from {name}"


@implementer(IGuessThrottle)
class GuessThrottle(service.Service):
    """Counts guesses and paces answers (module docstring).  A service so
    that stopping the daemon logs the bursts still open."""

    log = Logger()

    def __init__(self, limits=GuessLimits(), clock=None, store=None):
        if clock is None:
            from twisted.internet import reactor as clock
        self.limits = limits
        self.clock = clock
        self.store = store if store is not None else MemoryThrottleStore()
        #: The bursts of failed guesses, per user and per source: each opened
        #: when its bucket is throttled, its failures and refusals counted
        #: (the shared log-rate limiter, all events counted).
        self._bursts = Bursts(clock, self._summary, allowance=0, quiet=SUMMARY_EVERY,
                              every=SUMMARY_EVERY, max_keys=MAX_BURSTS)

    # --- IGuessThrottle ---------------------------------------------------------

    def reserve(self, user, source, peer):
        """Deferred firing with the seconds to hold the answer to this guess
        back (0: answer now), the guess counted as a failure until
        :meth:`succeeded`; or failing with :class:`TooManyAttempts` (refused
        unchecked, counted in the summaries) or
        :class:`~twisted_keyx.core.interfaces.StoreUnavailable`."""
        if not self.limits.delay:
            return defer.succeed(0)
        outcome = self.store.charge(user, source, self.clock.seconds(), self.limits)
        return outcome.addCallback(self._charged, user, source, peer)

    def _charged(self, charge, user, source, peer):
        keys = [("user", user) if kind in ("user", "familiar") else ("source", source)
                for kind in charge.throttled]
        for key in keys:
            self._startBurst(key)
        if charge.delay is None:
            for key in keys or [("user", user)]:
                self._bursts.event(self._startBurst(key), "refused")
            raise TooManyAttempts(charge.retry_after)
        return charge.delay

    def succeeded(self, user, source):
        """``user`` logged in from ``source``: its guess refunded, the
        source familiar to the user.  Deferred (a store down is logged)."""
        if not self.limits.delay:
            return defer.succeed(None)
        outcome = self.store.settle(user, source, self.clock.seconds(), self.limits)
        return outcome.addErrback(self._settleFailed, user, source)

    def release(self, user, source):
        """The answer reserved for this guess was never made (the message
        was malformed, the step failed before it): not a guess, refunded.
        Deferred (a store down is logged)."""
        if not self.limits.delay:
            return defer.succeed(None)
        outcome = self.store.release(user, source, self.clock.seconds(), self.limits)
        return outcome.addErrback(self._settleFailed, user, source)

    def _settleFailed(self, failure, user, source):
        self.log.warn("Guess throttle: the outcome of a guess for user {user} from {source} "
                      "not recorded ({why})", user=_user_name(user), source=source,
                      why=failure.getErrorMessage())

    def failed(self, user, source, peer=None, why=None):
        """A guess failed (wrong password, unknown user, left after the
        answer): counted when reserved, logged here (one line, or counted
        in its burst's summary)."""
        peer = peer if peer is not None else source
        keys = [key for key in (("user", user), ("source", source))
                if self._bursts.get(key) is not None]
        if not keys and len(self._bursts) >= self._bursts.max_keys and self._bursts.get(None) is not None:
            keys = [None]  # too many bursts to name: summed
        if not keys:
            self.log.info("Failed guess for user {user} from {peer}{why}",
                          user=_user_name(user), peer=peer, why=f": {why}" if why else "")
        for key in keys:
            self._bursts.event(key, "failed", peer)
        return defer.succeed(None)

    # --- bursts ------------------------------------------------------------------

    def _startBurst(self, key):
        """The key ``key``'s burst counts under (opened and logged if new)."""
        key, opened = self._bursts.start(key)
        if not opened:
            return key
        if key is None:
            self.log.warn("Guessing more than {count} users or sources at once: the others are "
                          "summed in one summary", count=self._bursts.max_keys)
        else:
            self.log.warn(
                "Guessing {what}: more than {free} failed guesses; answers now "
                "held back, at most one per {delay:g} s",
                what=_what(key), free=self.limits.free, delay=self.limits.delay)
        return key

    def _summary(self, key, burst, final):
        end = burst.last if final else self.clock.seconds()
        peers = len(burst.who)
        self.log.info(
            "Guessing {what}: {count} failed guess(es) in {seconds:.1f} s from "
            "{peers} peer(s); {refused} more refused unchecked",
            what=_what(key), count=burst.kinds.get("failed", 0),
            seconds=end - burst.reported,
            peers=peers if peers < MAX_WHO else f"{MAX_WHO} or more",
            refused=burst.kinds.get("refused", 0))

    def stopService(self):
        """Log what is open and cancel the timers (the daemon is stopping)."""
        self._bursts.stop()
        return super().stopService()
