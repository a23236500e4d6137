"""``haproxy:`` endpoints: the daemon behind HAProxy (docs/fleet.rst, "HAProxy
in front").

``--opaque haproxy:tcp:8089`` listens on ``tcp:8089`` and reads the PROXY
protocol header (v1 or v2) HAProxy sends first, as Twisted's own ``haproxy:``
endpoint wrapper does (:mod:`twisted.protocols.haproxy`), with two changes
the daemon needs:

- the daemon's protocol (the connection policy, the handshake, its log)
  is built and connected only once the header has been read, for the
  client's address: the connection limits count the client's source, the
  guess throttle charges it, the log names it.  Twisted's wrapper connects the protocol at once, when the peer
  is still the balancer;
- a connection that brings no client (HAProxy's health check: a PROXY v2
  ``LOCAL`` header, or a connection closed before any header) is closed
  without the daemon's protocol ever seeing it: not logged, not counted as
  a peer.

A header must come within :data:`HEADER_TIMEOUT` seconds, and is bounded
by the parsers (v1: 107 bytes; v2: its length field); anything else closes
the connection.  At most the daemon's ``--max-connections`` connections
await their header at once (the limits count a connection only once its
header names the client).  A connection that sends something else than a header (a
client that goes around HAProxy, or a HAProxy without ``send-proxy-v2``)
is logged, bounded by :class:`~twisted_keyx.core.lograte.Bursts`: the first
from a source, then a summary.
"""

from twisted.internet import endpoints
from twisted.logger import Logger
from twisted.protocols import policies

from twisted_keyx.core.lograte import BURST_QUIET, Bursts
from twisted_keyx.core.twistedshim import (
    InvalidProxyHeader,
    proxy_header_may_begin,
    proxy_header_parser,
)
from twisted_keyx.service import endpointspec

#: Seconds a connection has to send its PROXY header.
HEADER_TIMEOUT = 10.0
PREFIX = "haproxy:"
TOO_MANY_AWAITING = "too many connections awaiting their PROXY header (--max-connections)"


class ProxiedProtocol(policies.ProtocolWrapper):
    """One connection from HAProxy: the header first, then the daemon's
    protocol, connected with the client's address."""

    _info = None
    _parser = None
    _connected = False
    _timer = None
    _start = b""

    def makeConnection(self, transport):
        # As ProtocolWrapper.makeConnection, without connecting the wrapped
        # protocol: that waits for the header.
        from zope.interface import directlyProvides, providedBy

        directlyProvides(self, providedBy(transport))
        policies.Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)
        self._timer = self.factory.clock.callLater(HEADER_TIMEOUT, self._noHeader)
        # The daemon's limits count a connection once its header names the
        # client: until then, at most --max-connections of them.
        self.factory.awaiting += 1
        if 0 < self.factory.max_awaiting() < self.factory.awaiting:
            self._cancelTimer()
            self.factory.refused(self.transport.getPeer(), TOO_MANY_AWAITING, hint=False)
            self.transport.abortConnection()

    def _noHeader(self):
        self._timer = None
        self.factory.awaiting -= 1
        self.transport.abortConnection()

    def dataReceived(self, data):
        if self._connected:
            return self.wrappedProtocol.dataReceived(data)
        if self._info is not None:
            return None  # a health check's bytes after its header
        if self._parser is None:
            # The first bytes may come in pieces: kept until they tell.
            data = self._start + data
            self._parser = proxy_header_parser(data)
            if self._parser is None:
                if proxy_header_may_begin(data):
                    self._start = data
                    return None
                return self._refuse("no PROXY header")
            self._start = b""
        try:
            self._info, remaining = self._parser.feed(data)
        except InvalidProxyHeader:
            return self._refuse("an invalid PROXY header")
        if self._info is None:
            return None  # more of the header to come
        self._cancelTimer()
        if self._info.source is None:
            # PROXY v2 LOCAL (a health check): no client behind it.
            self.transport.loseConnection()
            return None
        # Only now the daemon's factory builds the protocol, for the client's
        # address (the connection policy counts it there).
        self.wrappedProtocol = self.factory.wrappedFactory.buildProtocol(self.getPeer())
        if self.wrappedProtocol is None:
            self.transport.loseConnection()
            return None
        self._connected = True
        self.wrappedProtocol.makeConnection(self)
        if remaining:
            self.wrappedProtocol.dataReceived(remaining)
        return None

    def _refuse(self, why):
        self.factory.refused(self.transport.getPeer(), why)
        self.transport.abortConnection()

    def _cancelTimer(self):
        if self._timer is not None:
            self.factory.awaiting -= 1
            if self._timer.active():
                self._timer.cancel()
        self._timer = None

    def getPeer(self):
        if self._info is not None and self._info.source is not None:
            return self._info.source
        return self.transport.getPeer()

    def getHost(self):
        if self._info is not None and self._info.destination is not None:
            return self._info.destination
        return self.transport.getHost()

    def connectionLost(self, reason):
        self._cancelTimer()
        self.factory.unregisterProtocol(self)
        if self._connected:
            self.wrappedProtocol.connectionLost(reason)


class ProxiedFactory(policies.WrappingFactory):
    protocol = ProxiedProtocol
    log = Logger()
    noisy = False

    def __init__(self, wrappedFactory, clock):
        super().__init__(wrappedFactory)
        self.clock = clock
        #: Connections whose PROXY header has not come yet.
        self.awaiting = 0
        self._refusals = Bursts(clock, self._refusalsOver, every=BURST_QUIET)

    def max_awaiting(self):
        """How many connections may await their header at once: the
        daemon's --max-connections (its GuardedFactory's; 0: no limit)."""
        policy = getattr(self.wrappedFactory, "policy", None)
        return getattr(getattr(policy, "limits", None), "max_connections", 0)

    def refused(self, peer, why, hint=True):
        """A connection from ``peer`` (not HAProxy's client: the peer of the
        socket) that sent ``why`` instead of a PROXY header, closed."""
        host = getattr(peer, "host", str(peer))
        if self._refusals.event(host, kind=why):
            if hint:
                self.log.warn(
                    "Closed a connection from {peer} on a haproxy: endpoint: it sent {why} "
                    "(a client that goes around HAProxy, or HAProxy without send-proxy-v2); "
                    "more from it are counted", peer=host, why=why)
            else:
                self.log.warn("Closed a connection from {peer} on a haproxy: endpoint: {why}; "
                              "more from it are counted", peer=host, why=why)

    def _refusalsOver(self, host, burst, final):
        kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(burst.kinds.items()))
        self.log.warn("{count} more connection(s) from {peer} without a PROXY header "
                      "closed ({kinds})", count=burst.counted,
                      peer="many sources" if host is None else host, kinds=kinds)

    def doStop(self):
        self._refusals.stop()
        super().doStop()

    def buildProtocol(self, addr):
        # The daemon's protocol waits for the header (ProxiedProtocol).
        return self.protocol(self, None)

    def logPrefix(self):
        return f"{self.wrappedFactory.__class__.__name__} (PROXY)"


class ProxiedEndpoint:
    """The endpoint ``wrapped``, its connections read through
    :class:`ProxiedProtocol`."""

    def __init__(self, wrapped, clock):
        self.wrapped = wrapped
        self.clock = clock

    def listen(self, factory):
        return self.wrapped.listen(ProxiedFactory(factory, self.clock))


def is_proxied(description):
    return description.lower().startswith(PREFIX)


def inner(description):
    """What ``haproxy:<inner>`` listens on: ``<inner>`` (a description
    without the prefix: itself)."""
    return description[len(PREFIX):] if is_proxied(description) else description


def endpoint(reactor, description):
    """The endpoint for ``haproxy:<inner description>`` (a ``unix:`` one
    private unless it gives its mode, as a plain one)."""
    wrapped = endpointspec.parse(inner(description)).private()
    return ProxiedEndpoint(endpoints.serverFromString(reactor, wrapped), reactor)
