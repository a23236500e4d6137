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

Both go through the one log-rate limiter,
:class:`twisted_keyx.core.lograte.Bursts`, as the guess throttle's lines and
the chat's do.

Why not :mod:`twisted.protocols.policies`?  ``TimeoutMixin`` is an idle timer
(reset by every byte, so a slow peer holds the connection forever);
``LimitTotalConnectionsFactory`` logs every refused connection;
``LimitConnectionsByPeer`` indexes addresses as tuples, which Twisted's
``IPv4Address`` no longer is.  The wrapping itself is theirs:
:class:`~twisted.protocols.policies.WrappingFactory` and
:class:`~twisted.protocols.policies.ProtocolWrapper`.

A wrapped protocol may define ``connectionTimedOut(phase, seconds)`` (phase a
:class:`TimeoutPhase`): the
guard calls it just before it aborts the connection, so the protocol can log
the timeout in its own words (its state) instead of the guard's generic line.
"""

import enum
import resource
from dataclasses import dataclass

from twisted.application import service
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

from twisted_keyx.core.lograte import BURST_QUIET, Bursts
from twisted_keyx.core.peers import (  # noqa: F401 (part of this API)
    SOURCE_CACHE_SIZE,
    PeerLogging,
    describe_peer,
    handshake_finished,
)
from twisted_keyx.core.peers import source_group as _source_group


class TimeoutPhase(enum.Enum):
    """Which of a connection's timeouts ran out (its value is the log's word)."""

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
    _phase = TimeoutPhase.HANDSHAKE
    _ip = None

    def makeConnection(self, transport):
        policy = self.factory.policy
        if policy.limits.timeout:
            self._timer = policy.clock.callLater(
                policy.limits.timeout, self._timedOut, TimeoutPhase.HANDSHAKE, policy.limits.timeout
            )
        ProtocolWrapper.makeConnection(self, transport)

    def handshakeFinished(self):
        """See :func:`handshake_finished`."""
        if self._phase is not TimeoutPhase.HANDSHAKE:
            return
        self._phase = TimeoutPhase.IDLE
        self._cancelTimer()
        policy = self.factory.policy
        if policy.limits.idle_timeout:
            self._timer = policy.clock.callLater(
                policy.limits.idle_timeout, self._timedOut, TimeoutPhase.IDLE, policy.limits.idle_timeout
            )

    def dataReceived(self, data):
        if self.disconnecting:
            # The protocol has hung up; what the peer still sends while the
            # close completes (TLS keeps reading) is dropped unread, so a
            # refused peer cannot make a parser buffer or work.
            return
        if self._phase is TimeoutPhase.IDLE and self._timer is not None:
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
                peer=describe_peer(self.transport.getPeer()), phase=phase.value, seconds=seconds,
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
