"""The guess throttle: online password guessing, slowed and made visible.

One :class:`GuessThrottle` per daemon serves every password handshake (EKE,
OPAQUE).  It counts failed guesses per **user name** (whether or not the
user exists, so that ``--hide-unknown-users`` stays hidden) and per **source
group** (:meth:`twisted_keyx.service.limits.Limits.source_of`), and once either has
more than ``free`` recent failures it paces the answers: at most one per
``delay`` seconds for that user (and for that source), whatever addresses
the guesses come from.  The handshake asks before it answers the message
whose answer tells a guesser whether the password was right (EKE: step 4),
and holds that answer back (:meth:`twisted_keyx.core.adapter.Session.holdReplies`,
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

Shared between processes (``twistd keyx --workers N``,
:mod:`twisted_keyx.service.workers`): a throttle made with ``share`` hands every
change the other processes must know to ``share`` as a message (a tuple,
:func:`encode` / :func:`decode` for the wire) and logs nothing itself; the
messages of the others come in through :meth:`GuessThrottle.apply` and count
as its own.  The parent keeps one plain throttle fed with every message,
which logs the failed guesses and the bursts once for the daemon.
Messages::

    ("failed", user, source, peer, why)   # a failed guess
    ("succeeded", user, source)           # a login
    ("refused", user, source)             # refused unchecked (for the summaries)
    ("held", kind, name, next_answer)     # a slot reserved: no answer before
                                          # next_answer (the epoch clock)
    ("state", kind, name, failures, next_answer)  # for a new process
"""

import json
import math
from dataclasses import dataclass

from twisted.application import service
from twisted.logger import Logger


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
    return repr(user)  # escapes what is not printable, and a backslash


#: What each message carries after its kind: a tuple of types.
_MESSAGES = {
    "failed": (str, str, str, str),
    "succeeded": (str, str),
    "refused": (str, str),
    "held": (str, str, float),
    "state": (str, str, float, float),
}
_KINDS = ("user", "source")


class BadMessage(ValueError):
    """A line that is not a throttle message."""


def encode(message):
    """``message`` (a tuple, see the module docstring) as one line of text,
    without its line end."""
    return json.dumps(message, ensure_ascii=True, separators=(",", ":"))


def decode(line):
    """The message tuple ``line`` holds; :class:`BadMessage` if it is not
    one (not JSON, an unknown kind, a wrong field, a number not finite)."""
    try:
        message = json.loads(line)
    except (ValueError, RecursionError) as e:
        raise BadMessage(f"not JSON: {e}") from None
    if not isinstance(message, list) or not message or message[0] not in _MESSAGES:
        raise BadMessage("not a throttle message")
    kind, fields = message[0], message[1:]
    types = _MESSAGES[kind]
    if len(fields) != len(types):
        raise BadMessage(f"{kind}: {len(fields)} fields, not {len(types)}")
    out = [kind]
    for value, wanted in zip(fields, types):
        if wanted is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                raise BadMessage(f"{kind}: {value!r} is not a finite number")
            value = float(value)
        elif not isinstance(value, str):
            raise BadMessage(f"{kind}: {value!r} is not a string")
        out.append(value)
    if kind in ("held", "state") and out[1] not in _KINDS:
        raise BadMessage(f"{kind}: {out[1]!r} is neither user nor source")
    return tuple(out)


class GuessThrottle(service.Service):
    """Counts failed guesses and paces answers; see the module docstring.
    A service so that stopping the daemon logs the bursts still open."""

    log = Logger()

    def __init__(self, limits=GuessLimits(), clock=None, share=None):
        if clock is None:
            from twisted.internet import reactor as clock
        self.limits = limits
        self.clock = clock
        #: Called with each message the other processes must see; None:
        #: this throttle is the daemon's only one, or its log (the parent's).
        self.share = share
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
        keyed = [(key, e) for key, e in
                 ((key, self._entry(key, False)) for key in (("user", user), ("source", source)))
                 if self._throttled(e)]
        entries = [e for _, e in keyed]
        if not entries:
            return 0
        answer = max([now] + [e.next_answer for e in entries])
        if answer - now > self.limits.max_wait:
            return None
        for entry in entries:
            entry.next_answer = answer + self.limits.delay
        if self.share is not None:
            for key, entry in keyed:
                self.share(("held", *key, answer + self.limits.delay))
        return answer - now

    def failed(self, user, source, peer=None, why=None, system=None):
        """A failed guess: counted for ``user`` and ``source``, logged
        (``system``: the log's system for its lines, a worker's name; not
        logged but shared if this throttle has ``share``)."""
        user_entry = self._entry(("user", user), True)
        source_entry = self._entry(("source", source), True)
        user_entry.failures += 1
        source_entry.failures += 1
        peer = peer if peer is not None else source
        if self.share is not None:
            self.share(("failed", user, source, str(peer), why or ""))
            return
        extra = {} if system is None else {"log_system": system}
        if user_entry.burst is None and source_entry.burst is None:
            self.log.info(
                "Failed guess for user {user} from {peer}{why}",
                user=_user_name(user), peer=peer, why=f": {why}" if why else "", **extra,
            )
        for key, entry in ((("user", user), user_entry), (("source", source), source_entry)):
            if self._throttled(entry):
                self._count(key, entry, peer, extra)

    def refused(self, user, source):
        """A guess refused unchecked (``delay_for`` said None): counted in
        the summaries only."""
        if self.share is not None:
            self.share(("refused", user, source))
            return
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
        if self.share is not None:
            self.share(("succeeded", user, source))

    # --- between processes -------------------------------------------------------

    def apply(self, message, system=None):
        """A message (:func:`decode`) from another process, counted as if
        it happened here, and not shared again.  Only a throttle without
        ``share`` (the parent's) logs failures, with ``system``."""
        kind = message[0]
        share, self.share = self.share, None
        try:
            if kind == "failed":
                _, user, source, peer, why = message
                if share is None:
                    self.failed(user, source, peer, why or None, system=system)
                else:
                    for key in (("user", user), ("source", source)):
                        self._entry(key, True).failures += 1
            elif kind == "succeeded":
                self.succeeded(message[1], message[2])
            elif kind == "refused":
                if share is None:
                    self.refused(message[1], message[2])
            elif kind == "held":
                _, what, name, next_answer = message
                entry = self._entry((what, name), True)
                entry.next_answer = max(entry.next_answer, next_answer)
            elif kind == "state":
                _, what, name, failures, next_answer = message
                entry = self._entry((what, name), True)
                entry.failures = max(entry.failures, failures)
                entry.next_answer = max(entry.next_answer, next_answer)
        finally:
            self.share = share

    def state(self):
        """Messages that bring a new process to what this throttle knows:
        each entry with failures not yet forgotten or a slot still reserved."""
        now = self.clock.seconds()
        out = []
        for (what, name) in list(self._entries):
            entry = self._entry((what, name), False)
            if entry.failures > 0 or entry.next_answer > now:
                out.append(("state", what, name, entry.failures, entry.next_answer))
        return out

    # --- bursts ------------------------------------------------------------------

    def _count(self, key, entry, peer, extra):
        now = self.clock.seconds()
        if entry.burst is None:
            entry.burst = _Burst(now)
            entry.burst.timer = self.clock.callLater(SUMMARY_EVERY, self._summary, key)
            self.log.warn(
                "Guessing {what}: more than {free} failed guesses; answers now "
                "held back, at most one per {delay:g} s",
                what=self._what(key), free=self.limits.free, delay=self.limits.delay, **extra,
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
