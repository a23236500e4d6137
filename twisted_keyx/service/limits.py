"""Connection limits and timeouts, the same for every handshake the daemon serves.

The daemon faces strangers.  One :class:`ConnectionPolicy` per daemon holds
the limits and the counters; :meth:`ConnectionPolicy.wrap` puts any server
factory (DH framed, DH raw, EKE...) behind it, so that:

- a handshake not finished ``timeout`` seconds after the connection was made
  is aborted and logged once (a deadline, not an idle timer: a peer that
  trickles one byte at a time is cut off just the same);
- a session that goes on after its handshake (the EKE chat) is aborted after
  ``idle_timeout`` seconds without data from the peer; the wrapped protocol
  says when its handshake is over with :func:`handshake_finished`;
- beyond ``max_connections`` open connections, or :attr:`Limits.per_source`
  from one source, a new connection is closed at once.  A source is an IPv4
  address or an IPv6 /64 (``ipv4_prefix``, ``ipv6_prefix``): one host
  usually has a whole /64 to draw addresses from.  Refusals are logged per
  burst: one line when the burst starts and one with the count when it has
  been quiet for ``BURST_QUIET`` seconds, never one per connection;
- what strangers make the factories log (a handshake rejected, timed out,
  abandoned, or a DH handshake finished: a line per connection) is bounded
  per source (:class:`PeerLines`): the first ``PEER_LINES`` of a burst are
  logged, the rest counted in a summary every ``BURST_QUIET`` seconds.  A
  logged-in user's lines (EKE, OPAQUE) are not counted there.

Both go through one mechanism, :class:`Bursts` (the guess throttle,
:mod:`twisted_keyx.service.throttle`, keeps its own summaries for now).

Why not :mod:`twisted.protocols.policies`?  ``TimeoutMixin`` is an idle timer
(reset by every byte, so a slow peer holds the connection forever);
``LimitTotalConnectionsFactory`` logs every refused connection;
``LimitConnectionsByPeer`` indexes addresses as tuples, which Twisted's
``IPv4Address`` no longer is.  The wrapping itself is theirs:
:class:`~twisted.protocols.policies.WrappingFactory` and
:class:`~twisted.protocols.policies.ProtocolWrapper`.

A wrapped protocol may define ``connectionTimedOut(phase, seconds)``: the
guard calls it just before it aborts the connection, so the protocol can log
the timeout in its own words (its state) instead of the guard's generic line.
"""

import resource
from dataclasses import dataclass

from twisted.application import service
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

from twisted_keyx.core.peers import (  # noqa: F401 (part of this API)
    SOURCE_CACHE_SIZE,
    PeerLogging,
    describe_peer,
    handshake_finished,
)
from twisted_keyx.core.peers import source_group as _source_group

#: A burst of refusals is over after this many seconds without one.
BURST_QUIET = 10.0

HANDSHAKE = "handshake"
IDLE = "idle session"


@dataclass(frozen=True)
class Limits:
    """The daemon's limits; 0 turns a limit off."""

    #: Seconds from connection to the end of the handshake.
    timeout: float = 30.0
    #: Seconds without data from the peer once the handshake is over.
    idle_timeout: float = 300.0
    #: Open connections from one source (see ``ipv4_prefix``).  64 leaves
    #: room for a NAT'd office or a busy client host.
    max_per_ip: int = 64
    #: Open connections in all.  10,000 stalled connections cost the daemon
    #: about 40 MB (docs/benchmarks.rst); the open-file limit is raised to
    #: match at start-up when the system allows it (:func:`raise_open_file_limit`).
    max_connections: int = 10000
    #: Sources are grouped by these prefixes: an IPv4 address (/32) is one
    #: source, an IPv6 /64 is one (the smallest block a site is given).
    ipv4_prefix: int = 32
    ipv6_prefix: int = 64
    #: The largest share of ``max_connections`` one source may hold, however
    #: high ``max_per_ip`` is.
    max_share: float = 0.25

    @property
    def per_source(self):
        """Open connections allowed from one source: ``max_per_ip``, and at
        most ``max_share`` of ``max_connections`` (at least 1); 0 if
        ``max_per_ip`` is 0 (no limit per source)."""
        if not self.max_per_ip or not self.max_connections:
            return self.max_per_ip
        return min(self.max_per_ip, max(1, int(self.max_connections * self.max_share)))

    def source_of(self, host):
        """The source group ``host`` (an IP address, as a string) belongs
        to: the address itself at full length (``192.0.2.1``), else its
        network (``2001:db8::/64``).  An IPv4-mapped IPv6 address is its
        IPv4 address."""
        return _source_group(host, self.ipv4_prefix, self.ipv6_prefix)




class _Burst:
    """One run of events of one key (see :class:`Bursts`)."""

    __slots__ = ("events", "passed", "counted", "kinds", "started", "last", "reported",
                 "timer")

    def __init__(self, now):
        #: Events in all; those let through; those counted since the last summary.
        self.events = self.passed = self.counted = 0
        #: The counted events by kind, since the last summary.
        self.kinds = {}
        self.started = self.last = self.reported = now
        self.timer = None


#: Bursts open at once at most (keys are sources: a peer's choice); the
#: events of further keys are counted together, under the key None.
MAX_BURSTS = 10000
#: Seconds between two scans for bursts to forget while they are all still
#: open: a scan reads every one (about 0.6 ms at MAX_BURSTS), so a peer with
#: many sources must not get one per connection.
PRUNE_PAUSE = 1.0


class Bursts:
    """Events per key (a source, say), logged while they are rare and
    summarised when they come in bursts: the one mechanism behind the
    refusal lines and :class:`PeerLines`.

    :meth:`event` says whether an event is one of the first ``allowance``
    of its key's burst (the caller logs it) or not (it is counted).  A burst
    ends ``quiet`` seconds after its last event.  ``summarise(key, burst,
    final)`` is called at its end (``final`` True) if it counted events, or
    for every burst with ``always``; and every ``every`` seconds while it
    lasts and has counted events, if ``every`` is given.  ``burst`` has
    ``events``, ``passed``, ``counted`` (since the last summary), ``kinds``
    (the counted ones by kind), ``started``, ``last`` and ``reported``
    (clock seconds).  ``overflowing(key)``, if given, is called at the first
    counted event of a burst.

    A burst holds a timer only when it will be summarised: one whose events
    were all let through is forgotten lazily.  :meth:`stop` ends every burst
    (the daemon is stopping).
    """

    def __init__(self, clock, summarise, allowance=1, quiet=BURST_QUIET, every=None,
                 always=False, overflowing=None, max_keys=MAX_BURSTS):
        self.clock = clock
        self.summarise = summarise
        self.allowance = allowance
        self.quiet = quiet
        self.every = every
        self.always = always
        self.overflowing = overflowing
        self.max_keys = max_keys
        self._open = {}
        #: When the bursts may be scanned again (see :data:`PRUNE_PAUSE`).
        self._next_prune = None

    def __len__(self):
        return len(self._open)

    def event(self, key, kind=None):
        """An event of ``key``: True if the caller should log it."""
        now = self.clock.seconds()
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
            burst = self._open[key] = _Burst(now)
            if self.always:
                self._schedule(key, burst, now)
        burst.events += 1
        burst.last = now
        if burst.passed < self.allowance:
            burst.passed += 1
            return True
        if burst.events == burst.passed + 1:
            if burst.timer is None:
                self._schedule(key, burst, now)
            if self.overflowing is not None:
                self.overflowing(key)
        burst.counted += 1
        if kind is not None:
            burst.kinds[kind] = burst.kinds.get(kind, 0) + 1
        return False

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
            burst.counted, burst.kinds, burst.reported = 0, {}, now
        self._schedule(key, burst, now)

    def _end(self, key):
        burst = self._open.pop(key)
        if burst.timer is not None and burst.timer.active():
            burst.timer.cancel()
        burst.timer = None
        if burst.counted or self.always:
            self.summarise(key, burst, True)

    def stop(self):
        for key in list(self._open):
            self._end(key)


#: Lines about one source's connections logged at the start of a burst;
#: the rest are summarised (see :class:`PeerLines`).
PEER_LINES = 10


class PeerLines:
    """Bounds what strangers make the daemon log, per source.

    Each connection logs one line for its handshake's outcome (rejected,
    timed out, abandoned; finished, for DH): :meth:`admit` says whether that
    line goes to the log.  The first ``allowance`` lines of a source's burst
    do; the rest are counted, by kind, and summarised in one line every
    ``BURST_QUIET`` seconds while the burst lasts.  Factories get one from
    :meth:`ConnectionPolicy.wrap` (their ``peer_lines``); lines of logged-in
    users never come here.
    """

    def __init__(self, limits, clock, owner, allowance=PEER_LINES):
        self.limits = limits
        #: Whose ``log`` the summaries go to (the connection policy's).
        self.owner = owner
        self.bursts = Bursts(clock, self._summary, allowance=allowance,
                             every=BURST_QUIET, overflowing=self._overflowing)

    def source(self, address):
        host = getattr(address, "host", None)
        return self.limits.source_of(host) if isinstance(host, str) else describe_peer(address)

    def admit(self, address, kind):
        """Whether the line of ``kind`` (``"rejected"``...) about a
        connection from ``address`` is to be logged."""
        return self.bursts.event(self.source(address), kind)

    @staticmethod
    def _whom(key):
        return f"from {key}" if key is not None else "from other sources"

    def _overflowing(self, key):
        self.owner.log.warn(
            "Many connections {whom}: their lines are now summarised, one every "
            "{seconds:g} s", whom=self._whom(key), seconds=BURST_QUIET)

    def _summary(self, key, burst, final):
        kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(burst.kinds.items()))
        end = burst.last if final else self.bursts.clock.seconds()
        self.owner.log.info(
            "Connections {whom}: {count} more line(s) not logged over {seconds:.1f} s ({kinds})",
            whom=self._whom(key), count=burst.counted, seconds=end - burst.reported, kinds=kinds)


class _Refused(Protocol):
    """What a refused connection gets: closed as soon as it is made.

    A protocol rather than ``None`` from ``buildProtocol`` because a TLS
    endpoint wraps our factory and cannot handle ``None``.
    """

    def makeConnection(self, transport):
        transport.abortConnection()


class GuardedProtocol(ProtocolWrapper):
    """Wraps one connection: counts it, and enforces the deadline and idle timeout."""

    _timer = None
    _phase = HANDSHAKE
    _ip = None

    def makeConnection(self, transport):
        policy = self.factory.policy
        if policy.limits.timeout:
            self._timer = policy.clock.callLater(
                policy.limits.timeout, self._timedOut, HANDSHAKE, policy.limits.timeout
            )
        ProtocolWrapper.makeConnection(self, transport)

    def handshakeFinished(self):
        """See :func:`handshake_finished`."""
        if self._phase is not HANDSHAKE:
            return
        self._phase = IDLE
        self._cancelTimer()
        policy = self.factory.policy
        if policy.limits.idle_timeout:
            self._timer = policy.clock.callLater(
                policy.limits.idle_timeout, self._timedOut, IDLE, policy.limits.idle_timeout
            )

    def dataReceived(self, data):
        if self.disconnecting:
            # The protocol has hung up; what the peer still sends while the
            # close completes (TLS keeps reading) is dropped unread, so a
            # refused peer cannot make a parser buffer or work.
            return
        if self._phase is IDLE and self._timer is not None:
            self._timer.reset(self.factory.policy.limits.idle_timeout)
        self.wrappedProtocol.dataReceived(data)

    def _timedOut(self, phase, seconds):
        self._timer = None
        hook = getattr(self.wrappedProtocol, "connectionTimedOut", None)
        if hook is not None:
            hook(phase, seconds)
        else:
            self.factory.policy.log.info(
                "{peer}: {phase} timed out after {seconds:g} s; closing",
                peer=describe_peer(self.transport.getPeer()), phase=phase, seconds=seconds,
            )
        # abort, not lose: a peer that does not read would keep a graceful
        # close waiting for its buffer to drain.
        self.transport.abortConnection()

    def _cancelTimer(self):
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def connectionLost(self, reason):
        self._cancelTimer()
        self.factory.policy._released(self._ip)
        ProtocolWrapper.connectionLost(self, reason)


class GuardedFactory(WrappingFactory):
    """A server factory behind a :class:`ConnectionPolicy`."""

    protocol = GuardedProtocol
    noisy = False

    def __init__(self, policy, wrappedFactory):
        super().__init__(wrappedFactory)
        self.policy = policy

    def buildProtocol(self, addr):
        host = getattr(addr, "host", None)
        ip = None if host is None else self.policy.limits.source_of(host)
        if not self.policy._admit(ip, addr):
            return _Refused()
        inner = self.wrappedFactory.buildProtocol(addr)
        if inner is None:
            self.policy._released(ip)
            return None
        guard = self.protocol(self, inner)
        guard._ip = ip
        return guard

    # WrappingFactory keeps every protocol in a dict; the policy's counters
    # are all that is needed, so skip that bookkeeping.
    def registerProtocol(self, p):
        pass

    def unregisterProtocol(self, p):
        pass


class ConnectionPolicy(service.Service):
    """The limits and counters shared by every endpoint of one daemon.

    A service so that stopping the daemon closes any burst still open (its
    summary line is logged and its timer cancelled).
    """

    log = Logger()

    def __init__(self, limits=Limits(), clock=None):
        if clock is None:
            from twisted.internet import reactor as clock
        self.limits = limits
        self.clock = clock
        self.open_connections = 0
        #: Open connections per source (only sources with some), keyed by
        #: :meth:`Limits.source_of`.
        self.per_ip = {}
        self._refusals = Bursts(self.clock, self._refusalsOver, always=True)
        #: What the factories log about strangers' connections, bounded.
        self.peer_lines = PeerLines(limits, self.clock, self)
        self._guarded = {}

    def wrap(self, factory):
        """The factory behind this policy; one wrapper per factory, however
        many endpoints it serves.  A :class:`PeerLogging` factory logs
        through :attr:`peer_lines`."""
        guarded = self._guarded.get(factory)
        if guarded is None:
            guarded = self._guarded[factory] = GuardedFactory(self, factory)
            if isinstance(factory, PeerLogging):
                factory.peer_lines = self.peer_lines
        return guarded

    def _admit(self, ip, addr):
        limits = self.limits
        if limits.max_connections and self.open_connections >= limits.max_connections:
            self._refuse(None, addr, f"{limits.max_connections} connections open")
            return False
        per_source = limits.per_source
        if ip is not None and per_source:
            if self.per_ip.get(ip, 0) >= per_source:
                self._refuse(ip, addr, f"{per_source} connections open from {ip}")
                return False
        self.open_connections += 1
        if ip is not None:
            self.per_ip[ip] = self.per_ip.get(ip, 0) + 1
        return True

    def _released(self, ip):
        self.open_connections -= 1
        if ip is not None:
            left = self.per_ip[ip] - 1
            if left:
                self.per_ip[ip] = left
            else:
                del self.per_ip[ip]

    def _refuse(self, key, addr, why):
        if self._refusals.event(key):
            self.log.warn(
                "Refusing new connections: {why} (first refused: {peer})",
                why=why, peer=describe_peer(addr),
            )

    def _refusalsOver(self, key, burst, final):
        self.log.info(
            "Refused {count} connection(s) {whom}over {seconds:.1f} s",
            count=burst.events, whom=f"from {key} " if key else "",
            seconds=burst.last - burst.started,
        )

    def stopService(self):
        self._refusals.stop()
        self.peer_lines.bursts.stop()
        return super().stopService()


def raise_open_file_limit(wanted):
    """Raise the soft limit on open files towards ``wanted`` (at most the hard
    limit).  Returns the soft limit in force afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft
