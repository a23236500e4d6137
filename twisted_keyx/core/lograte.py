"""The one rate limiter for log lines: what a peer or a user makes the daemon
log is logged while it is rare and counted, then summarised, when it comes
in bursts.

Every bounded log goes through :class:`Bursts`: the connection refusals and
the per-source lines of :mod:`twisted_keyx.service.limits`, the guess
throttle's failed guesses (:mod:`twisted_keyx.service.throttle`), and a
logged-in user's chat lines (:mod:`twisted_keyx.eke.protocol`).  It knows
nothing of logging or of Twisted: it is given a clock (``seconds()`` and
``callLater``, as :class:`twisted.internet.task.Clock`) and a ``summarise``
callable, and says for each event whether to log it.
"""

from typing import Any, Callable, Dict, Hashable, Optional, Set, Tuple

#: A burst is over after this many seconds without an event.
BURST_QUIET = 10.0
#: Bursts open at once at most (keys are sources: a peer's choice); the
#: events of further keys are counted together, under the key None.
MAX_BURSTS = 10000
#: Seconds between two scans for bursts to forget while they are all still
#: open: a scan reads every one (about 0.6 ms at MAX_BURSTS), so a peer with
#: many sources must not get one per connection.
PRUNE_PAUSE = 1.0
#: Distinct ``who`` remembered per summary at most (a summary says "this
#: many or more").
MAX_WHO = 1000


class Burst:
    """One run of events of one key (see :class:`Bursts`)."""

    __slots__ = ("events", "passed", "counted", "kinds", "who", "started", "last",
                 "reported", "refilled", "overflowed", "timer")

    def __init__(self, now: float) -> None:
        #: Events in all; those let through (less what ``refill`` gave back);
        #: those counted since the last summary.
        self.events = self.passed = self.counted = 0
        #: The counted events by kind, since the last summary.
        self.kinds: Dict[Any, int] = {}
        #: The distinct ``who`` of the counted events since the last summary
        #: (at most :data:`MAX_WHO`).
        self.who: Set[Any] = set()
        self.started = self.last = self.reported = self.refilled = now
        #: Whether an event has been counted (``overflowing`` was called).
        self.overflowed = False
        self.timer: Any = None


class Bursts:
    """Events per key (a source, a user, a session), logged while they are
    rare and summarised when they come in bursts.

    :meth:`event` says whether an event is one of the first ``allowance``
    of its key's burst (the caller logs it) or not (it is counted).  A burst
    ends ``quiet`` seconds after its last event.  ``summarise(key, burst,
    final)`` is called at its end (``final`` True) if it counted events, or
    for every burst with ``always``; and every ``every`` seconds while it
    lasts and has counted events, if ``every`` is given.  ``burst`` is a
    :class:`Burst`: ``events``, ``passed``, ``counted`` (since the last
    summary), ``kinds`` (the counted ones by kind), ``who`` (their distinct
    sources, if given), ``started``, ``last`` and ``reported`` (clock
    seconds).  ``overflowing(key)``, if given, is called at the first
    counted event of a burst.

    With ``refill``, the allowance is a bucket: one more event is let
    through for every ``refill`` seconds since the last one let through, up
    to ``allowance`` (a chat may log ``allowance`` lines at once, then one
    per ``refill`` seconds).

    :meth:`start` opens a burst without an event (the caller has seen the
    burst start, as the guess throttle does when a bucket is throttled);
    :meth:`flush` summarises a burst's counted events now, :meth:`end` ends
    it now (a session is over).  A burst holds a timer only when it will be
    summarised: one whose events were all let through is forgotten lazily.
    :meth:`stop` ends every burst (the daemon is stopping).
    """

    def __init__(self, clock: Any, summarise: Callable[[Hashable, Burst, bool], None],
                 allowance: int = 1, quiet: float = BURST_QUIET,
                 every: Optional[float] = None, always: bool = False,
                 overflowing: Optional[Callable[[Hashable], None]] = None,
                 max_keys: int = MAX_BURSTS, refill: Optional[float] = None) -> None:
        self.clock = clock
        self.summarise = summarise
        self.allowance = allowance
        self.quiet = quiet
        self.every = every
        self.always = always
        self.overflowing = overflowing
        self.max_keys = max_keys
        self.refill = refill
        self._open: Dict[Hashable, Burst] = {}
        #: When the bursts may be scanned again (see :data:`PRUNE_PAUSE`).
        self._next_prune: Optional[float] = None

    def __len__(self) -> int:
        return len(self._open)

    def event(self, key: Hashable, kind: Any = None, who: Any = None) -> bool:
        """An event of ``key``: True if the caller should log it."""
        now = self.clock.seconds()
        key, burst = self._open_burst(key, now)
        burst.events += 1
        burst.last = now
        if self.refill is not None and burst.passed:
            regained = int((now - burst.refilled) / self.refill)
            if regained:
                burst.passed = max(0, burst.passed - regained)
                burst.refilled += regained * self.refill
        if burst.passed < self.allowance:
            if burst.passed == 0:
                burst.refilled = now
            burst.passed += 1
            return True
        if burst.timer is None:
            self._schedule(key, burst, now)
        if not burst.overflowed:
            burst.overflowed = True
            if self.overflowing is not None:
                self.overflowing(key)
        burst.counted += 1
        if kind is not None:
            burst.kinds[kind] = burst.kinds.get(kind, 0) + 1
        if who is not None and len(burst.who) < MAX_WHO:
            burst.who.add(who)
        return False

    def start(self, key: Hashable) -> Tuple[Hashable, bool]:
        """Open a burst for ``key`` now, without an event, if none is
        running: its events are all counted (the caller has seen the burst
        begin, as the guess throttle does when a bucket is throttled).
        Returns the key its events go under (None when ``max_keys`` bursts
        are open: summed with the others) and whether this call opened it
        (``overflowing`` is not called for it: the caller words the start)."""
        now = self.clock.seconds()
        key, burst = self._open_burst(key, now)
        if burst.events or burst.overflowed:
            return key, False
        burst.passed = self.allowance
        burst.overflowed = True
        return key, True

    def get(self, key: Hashable) -> Optional[Burst]:
        """``key``'s burst, if one is running."""
        return self._current(key, self.clock.seconds())

    def flush(self, key: Hashable) -> None:
        """Summarise ``key``'s counted events now, if there are any (before
        the next line logged, say)."""
        burst = self._open.get(key)
        if burst is not None and burst.counted:
            self.summarise(key, burst, False)
            self._reported(burst, self.clock.seconds())

    def end(self, key: Hashable) -> None:
        """End ``key``'s burst now, if one is open (summarised as at its end)."""
        if key in self._open:
            self._end(key)

    def stop(self) -> None:
        for key in list(self._open):
            self._end(key)

    def _open_burst(self, key, now):
        burst = self._current(key, now)
        if burst is None and len(self._open) >= self.max_keys:
            if self._next_prune is None or now >= self._next_prune:
                self._prune(now)
                full = len(self._open) >= self.max_keys
                self._next_prune = now + PRUNE_PAUSE if full else None
            if len(self._open) >= self.max_keys:
                key = None
                burst = self._current(key, now)
        if burst is None:
            burst = self._open[key] = Burst(now)
            if self.always:
                self._schedule(key, burst, now)
        return key, burst

    def _current(self, key, now):
        """``key``'s burst, if one is still running."""
        burst = self._open.get(key)
        if burst is not None and burst.timer is None and now - burst.last >= self.quiet:
            del self._open[key]  # over, and nothing to summarise
            return None
        return burst

    def _prune(self, now):
        for key in [k for k, b in self._open.items()
                    if b.timer is None and now - b.last >= self.quiet]:
            del self._open[key]

    def _schedule(self, key, burst, now):
        due = burst.last + self.quiet
        if self.every is not None:
            due = min(due, burst.reported + self.every)
        burst.timer = self.clock.callLater(max(0.0, due - now), self._check, key)

    @staticmethod
    def _reported(burst, now):
        burst.counted, burst.kinds, burst.who, burst.reported = 0, {}, set(), now

    def _check(self, key):
        burst = self._open[key]
        burst.timer = None
        now = self.clock.seconds()
        if now - burst.last >= self.quiet:
            self._end(key)
            return
        if self.every is not None and now - burst.reported >= self.every:
            if burst.counted:
                self.summarise(key, burst, False)
            self._reported(burst, now)
        self._schedule(key, burst, now)

    def _end(self, key):
        burst = self._open.pop(key)
        if burst.timer is not None and burst.timer.active():
            burst.timer.cancel()
        burst.timer = None
        if burst.counted or self.always:
            self.summarise(key, burst, True)
