"""What several test modules share: fixtures, framing, hand-built DH keys.

Nothing here imports cryptography's DH module (it is deprecated and warns);
malformed keys are built by encoding SubjectPublicKeyInfo with
:mod:`twisted_keyx.asn1`, independently of the code under test.
"""

import os
import struct

from twisted.internet import defer
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.protocols.basic import Int32StringReceiver, LineReceiver

from twisted_keyx import asn1
from twisted_keyx.dh.protocol import DHServerFactory

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")

#: OIDs of the two DH key flavours (RFC 3279 2.3.3), written out here rather
#: than taken from ffdh so that the tests do not check the code against itself.
PKCS3_DH_OID = "1.2.840.113549.1.3.1"
X942_DH_OID = "1.2.840.10046.2.1"

#: Fixed private values for deterministic handshakes (any 1 < x < q will do; 192 bits fits every test group).
SERVER_X = int("5e12" * 12, 16)
CLIENT_X = int("c1e7" * 12, 16)


def data_path(name):
    return os.path.join(DATA, name)


def read_data(name):
    with open(data_path(name), "rb") as f:
        return f.read()


def frame(payload):
    """``payload`` as ``Int32StringReceiver`` sends it: 4-byte big-endian length first."""
    return struct.pack(">I", len(payload)) + payload


def dh_spki_der(p, g, y, q=None):
    """DER SubjectPublicKeyInfo of a DH key: PKCS #3 without q, X9.42 with q."""
    if q is None:
        algorithm_oid = PKCS3_DH_OID
        parameters = [p, g]
    else:
        algorithm_oid = X942_DH_OID
        parameters = [p, g, q]
    algorithm = asn1.encode_sequence(
        asn1.encode(asn1.OBJECT_IDENTIFIER, asn1.oid(algorithm_oid)),
        asn1.encode_sequence(*map(asn1.encode_integer, parameters)),
    )
    public_key = asn1.encode(asn1.BIT_STRING, b"\0" + asn1.encode_integer(y))
    return asn1.encode_sequence(algorithm, public_key)


def dh_spki_pem(p, g, y, q=None):
    return asn1.pem_encode(b"PUBLIC KEY", dh_spki_der(p, g, y, q))


def fixed_key(x):
    """A ``private_key_factory`` that always returns the key with value ``x``."""
    return lambda group: group.private_key_from_value(x)


def tracked(protocol_class):
    """``protocol_class`` with a ``lost`` Deferred that fires after connectionLost.

    Loopback tests wait for it on both sides so that no socket outlives the
    test (trial fails a test that leaves the reactor unclean).
    """

    class Tracked(protocol_class):
        def makeConnection(self, transport):
            self.lost = defer.Deferred()
            super().makeConnection(transport)

        def connectionLost(self, reason):
            try:
                super().connectionLost(reason)
            finally:
                self.lost.callback(None)

    Tracked.__name__ = f"Tracked{protocol_class.__name__}"
    return Tracked


class TrackingDHServerFactory(DHServerFactory):
    """A DHServerFactory that keeps its protocols and the results it logs."""

    protocol = tracked(DHServerFactory.protocol)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.connections = []
        self.results = []

    def buildProtocol(self, addr):
        protocol = super().buildProtocol(addr)
        self.connections.append(protocol)
        return protocol

    def handshakeFinished(self, peer, result):
        self.results.append(result)
        super().handshakeFinished(peer, result)

    def allLost(self):
        """Fires when every connection this factory made is closed."""
        return defer.gatherResults([c.lost for c in self.connections])


#: In a script: hang up instead of answering.
CLOSE = "close"


class _Scripted:
    """A misbehaving server: answers the client's n-th message with the n-th
    entry of ``factory.script`` (bytes, CLOSE, or None for silence)."""

    def connectionMade(self):
        self.replies = iter(self.factory.script)
        if self.factory.hang_up_at_once:
            self.transport.loseConnection()

    def answer(self):
        reply = next(self.replies, None)
        if reply == CLOSE:
            self.transport.loseConnection()
        elif reply is not None:
            self.send(reply)


class ScriptedFramedServer(_Scripted, Int32StringReceiver):
    """A scripted server for the framed DH client."""

    def stringReceived(self, string):
        self.answer()

    def send(self, reply):
        self.sendString(reply)


class ScriptedLineServer(_Scripted, LineReceiver):
    """A scripted server for the EKE client (LF-delimited lines)."""

    delimiter = b"\n"

    def lineReceived(self, line):
        self.answer()

    def send(self, reply):
        self.sendLine(reply)


class ScriptedFactory(Factory):
    """Serves ``server`` (a scripted server class) and keeps its connections,
    so that a test can wait for all of them to close (:meth:`allLost`)."""

    def __init__(self, server, script, hang_up_at_once=False):
        self.protocol = tracked(server)
        self.script = script
        self.hang_up_at_once = hang_up_at_once
        self.connections = []

    def buildProtocol(self, addr):
        protocol = super().buildProtocol(addr)
        self.connections.append(protocol)
        return protocol

    def allLost(self):
        return defer.gatherResults([c.lost for c in self.connections])


class CollectingProcess(ProcessProtocol):
    """A child process's stdout and stderr as bytes, and ``ended``, which
    fires with its exit code.  ``stdin``, if given, is written and closed."""

    def __init__(self, stdin=None):
        self.stdin = stdin
        self.out = b""
        self.err = b""
        self.ended = defer.Deferred()

    def connectionMade(self):
        if self.stdin is not None:
            self.transport.write(self.stdin)
            self.transport.closeStdin()

    def outReceived(self, data):
        self.out += data

    def errReceived(self, data):
        self.err += data

    def processEnded(self, reason):
        self.ended.callback(reason.value.exitCode)


def guarded_connection(factory, peer, clock, timeout=30):
    """``factory`` behind the daemon's connection policy, as ``twistd keyx``
    serves it, connected to a StringTransport from ``peer``.  Returns the
    guard (feed it data), the transport, the wrapped session and the policy
    (its counters)."""
    from twisted.internet.testing import StringTransport

    from twisted_keyx import limits

    policy = limits.ConnectionPolicy(limits.Limits(timeout=timeout), clock)
    guard = policy.wrap(factory).buildProtocol(peer)
    transport = StringTransport(peerAddress=peer)
    guard.makeConnection(transport)
    return guard, transport, guard.wrappedProtocol, policy
