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
the connection.
"""

from twisted.internet import endpoints
from twisted.protocols import policies
from twisted.protocols.haproxy._exceptions import InvalidProxyHeader
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser

from twisted_keyx.service import endpointspec

#: Seconds a connection has to send its PROXY header.
HEADER_TIMEOUT = 10.0
PREFIX = "haproxy:"


class ProxiedProtocol(policies.ProtocolWrapper):
    """One connection from HAProxy: the header first, then the daemon's
    protocol, connected with the client's address."""

    _info = None
    _parser = None
    _connected = False
    _timer = None

    def makeConnection(self, transport):
        # As ProtocolWrapper.makeConnection, without connecting the wrapped
        # protocol: that waits for the header.
        from zope.interface import directlyProvides, providedBy

        directlyProvides(self, providedBy(transport))
        policies.Protocol.makeConnection(self, transport)
        self.factory.registerProtocol(self)
        self._timer = self.factory.clock.callLater(HEADER_TIMEOUT, self._noHeader)

    def _noHeader(self):
        self._timer = None
        self.transport.abortConnection()

    def dataReceived(self, data):
        if self._connected:
            return self.wrappedProtocol.dataReceived(data)
        if self._info is not None:
            return None  # a health check's bytes after its header
        if self._parser is None:
            if len(data) >= 16 and data[:12] == V2Parser.PREFIX and data[12] & 0xF0 == 0x20:
                self._parser = V2Parser()
            elif len(data) >= 8 and data[:5] == V1Parser.PROXYSTR:
                self._parser = V1Parser()
            else:
                self.transport.abortConnection()
                return None
        try:
            self._info, remaining = self._parser.feed(data)
        except InvalidProxyHeader:
            self.transport.abortConnection()
            return None
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

    def _cancelTimer(self):
        if self._timer is not None and self._timer.active():
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

    def __init__(self, wrappedFactory, clock):
        super().__init__(wrappedFactory)
        self.clock = clock

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
