"""What several test modules share: fixtures, framing and parsing, hand-built
DH keys, connection tracking, an observer that records outcomes, and the EKE
fixtures (cheap KDF parameters, one RSA key, deterministic randomness that
remembers what it handed out, and an independent statement of the box format
to check the wire bytes against).

Nothing here imports cryptography's DH module (it is deprecated and warns);
malformed keys are built by encoding SubjectPublicKeyInfo with
:mod:`twisted_keyx.groups.asn1`, independently of the code under test.
"""

import base64
import hashlib
import os
import struct

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from twisted.internet import defer
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.logger import formatEvent
from twisted.protocols.basic import Int32StringReceiver, LineReceiver

from twisted_keyx.groups import asn1
from twisted_keyx.core.adapter import Observer
from twisted_keyx.dh.protocol import DHServerFactory
from twisted_keyx.dh.raw import SERVER_MESSAGES, MessageSplitter, RawDHServerFactory
from twisted_keyx.eke import crypto
from twisted_keyx.service import userfile as userstore
from twisted_keyx.eke import messages as eke_messages
from twisted_keyx.eke.protocol import EKEServerFactory

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


def unframe(data):
    """Split what a side wrote into payloads; it must be whole frames."""
    frames = []
    while data:
        length = int.from_bytes(data[:4], "big")
        assert len(data) >= 4 + length, "a side wrote a partial frame"
        frames.append(data[4:4 + length])
        data = data[4 + length:]
    return frames


def split_replies(data):
    """Our own unframed server's output, cut with the client's splitter."""
    splitter = MessageSplitter(SERVER_MESSAGES, 1 << 20)
    splitter.feed(data)
    replies = []
    while (message := splitter.next_message()) is not None:
        replies.append(message)
    return replies


def take_lines(transport):
    """The LF-terminated lines written to ``transport`` since the last call."""
    data = transport.value()
    transport.clear()
    return data.split(b"\n")[:-1] if data else []


def log_text(events):
    """Log events as the daemon's log shows them (for the documented lines)."""
    return [formatEvent(event) for event in events]


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


def run_machines(client, server):
    """Run a client and a server machine against each other, no I/O; the
    messages in the order sent."""
    sent = [client.start()]
    while True:
        sent.append(server.receive(sent[-1]))
        reply = client.receive(sent[-1])
        if reply is None:
            return sent
        sent.append(reply)


def fixed_key(x):
    """A ``private_key_factory`` that always returns the key with value ``x``."""
    return lambda group: group.private_key_from_value(x)


def tracked(protocol_class):
    """``protocol_class`` with a ``lost`` Deferred that fires after connectionLost.

    Loopback tests wait for it on both sides so that no socket outlives the
    test (trial fails a test that leaves the reactor unclean).  The class's
    ``instances`` lists every connection made with it, in order (a test that
    patches a client factory's protocol finds its connection there).
    """

    class Tracked(protocol_class):
        instances = []

        def makeConnection(self, transport):
            self.lost = defer.Deferred()
            self.instances.append(self)
            super().makeConnection(transport)

        def connectionLost(self, reason):
            try:
                super().connectionLost(reason)
            finally:
                self.lost.callback(None)

    Tracked.__name__ = f"Tracked{protocol_class.__name__}"
    return Tracked


class TrackingFactory:
    """Mixin (before a factory class) that keeps the protocols it builds in
    ``connections``; its ``protocol`` must be :func:`tracked`.  The one way
    the tests wait for a server's connections to close: :meth:`allLost`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.connections = []

    def buildProtocol(self, addr):
        protocol = super().buildProtocol(addr)
        self.connections.append(protocol)
        return protocol

    def allLost(self):
        """Fires when every connection this factory made is closed."""
        return defer.gatherResults([c.lost for c in self.connections])


def tracking(factory_class):
    """``factory_class`` as a :class:`TrackingFactory` serving a
    :func:`tracked` version of its protocol."""

    class Tracking(TrackingFactory, factory_class):
        protocol = tracked(factory_class.protocol)

    Tracking.__name__ = f"Tracking{factory_class.__name__}"
    return Tracking


class RecordingObserver(Observer):
    """An observer (:class:`twisted_keyx.core.adapter.Observer`) that records each
    outcome as a tuple in ``outcomes``, for tests to compare instead of log
    text where the log is not the point:

    - ``("finished", peer, result)``
    - ``("rejected", peer, reason)``
    - ``("timed out", peer, seconds)``
    - ``("abandoned", peer, state)`` (``state`` is the machine state's value)

    Standalone it is a session's observer; as a mixin before a server
    factory (:class:`RecordingDHServerFactory`), it records and then lets
    the factory do what it does (log its line).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.outcomes = []
        #: The ``result`` of each machine that finished, in order.
        self.results = []

    def machineFinished(self, session, machine):
        self.outcomes.append(("finished", session.peer, machine.result))
        self.results.append(machine.result)
        super().machineFinished(session, machine)

    def machineFailed(self, session, machine, failure):
        self.outcomes.append(("rejected", session.peer, failure.reason))
        super().machineFailed(session, machine, failure)

    def sessionTimedOut(self, session, machine, seconds):
        self.outcomes.append(("timed out", session.peer, seconds))
        super().sessionTimedOut(session, machine, seconds)

    def sessionLost(self, session, machine, reason):
        self.outcomes.append(("abandoned", session.peer, machine.state.value))
        super().sessionLost(session, machine, reason)

    @property
    def kinds(self):
        """The first element of each outcome: ``["finished"]``, say."""
        return [outcome[0] for outcome in self.outcomes]


class RecordingDHServerFactory(RecordingObserver, DHServerFactory):
    """A DHServerFactory that records its outcomes (and still logs them)."""


class RecordingRawDHServerFactory(RecordingObserver, RawDHServerFactory):
    """The unframed server, recording its outcomes (and still logging them)."""


class TrackingDHServerFactory(TrackingFactory, RecordingDHServerFactory):
    """A DHServerFactory that keeps its protocols and records its outcomes
    (``results``: those of the handshakes that finished)."""

    protocol = tracked(DHServerFactory.protocol)


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


class ScriptedFactory(TrackingFactory, Factory):
    """Serves ``server`` (a scripted server class) and keeps its connections,
    so that a test can wait for all of them to close (:meth:`allLost`)."""

    def __init__(self, server, script, hang_up_at_once=False):
        super().__init__()
        self.protocol = tracked(server)
        self.script = script
        self.hang_up_at_once = hang_up_at_once


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

    from twisted_keyx.service import limits

    policy = limits.ConnectionPolicy(limits.Limits(timeout=timeout), clock)
    guard = policy.wrap(factory).buildProtocol(peer)
    transport = StringTransport(peerAddress=peer)
    guard.makeConnection(transport)
    return guard, transport, guard.wrappedProtocol, policy



def fed_server(factory, peer, chunks):
    """A hostile peer's ``chunks`` fed to ``factory`` behind the connection
    policy (:func:`guarded_connection`, on a fake clock), the factory's log
    silenced (its outcomes are what a :class:`RecordingObserver` records).
    Returns the guard, the transport, the session, the policy and the clock."""
    from twisted.internet.task import Clock
    from twisted.logger import Logger

    clock = Clock()
    factory.log = Logger(observer=lambda event: None)
    proto, transport, session, policy = guarded_connection(factory, peer, clock)
    for chunk in chunks:
        proto.dataReceived(chunk)
    return proto, transport, session, policy, clock


def connect_on_string_transport(protocol, peer=None):
    """Connect ``protocol`` to a StringTransportWithDisconnection (from
    ``peer``, if given), so that its ``loseConnection`` reaches the protocol."""
    from twisted.internet.testing import StringTransportWithDisconnection

    transport = (StringTransportWithDisconnection(peerAddress=peer) if peer is not None
                 else StringTransportWithDisconnection())
    transport.protocol = protocol
    protocol.makeConnection(transport)
    return transport


def tap_options(*argv):
    """``twistd keyx`` options parsed from ``argv``."""
    from twisted_keyx.service import tap

    options = tap.Options()
    options.parseOptions(list(argv))
    return options

# -- EKE ---------------------------------------------------------------------

#: Cheap scrypt for tests (4 KiB), and client limits that accept it.
TEST_KDF = crypto.ScryptParameters(n=16, r=2, p=1)
TEST_LIMITS = crypto.KdfLimits(min_memory=1)

PASSWORD = "correct horse"

_RSA_KEYS = []


def rsa_key():
    """One RSA-2048 key for the whole run (generating one takes ~50 ms)."""
    if not _RSA_KEYS:
        _RSA_KEYS.append(crypto.generate_rsa_key())
    return _RSA_KEYS[0]


def unknown_algorithm_spki(size=eke_messages.RSA_PUBLIC_KEY_DER_SIZE):
    """A DER SubjectPublicKeyInfo of ``size`` bytes whose algorithm is the
    OID 1.2.3.4, which cryptography does not know (it raises
    UnsupportedAlgorithm, not ValueError)."""
    algorithm = asn1.encode_sequence(asn1.encode(asn1.OBJECT_IDENTIFIER, asn1.oid("1.2.3.4")))
    for filler in range(size):
        der = asn1.encode_sequence(algorithm, asn1.encode(asn1.BIT_STRING, bytes(1 + filler)))
        if len(der) == size:
            return der
    raise ValueError(f"no SubjectPublicKeyInfo of {size} bytes")


class RecordingRandom:
    """Deterministic bytes (SHA-256 in counter mode over a seed); ``handed``
    lists every output, in order."""

    def __init__(self, seed=b"seed"):
        self._seed = seed
        self._counter = 0
        self.handed = []

    def __call__(self, size):
        out = b""
        while len(out) < size:
            out += hashlib.sha256(self._seed + self._counter.to_bytes(8, "big")).digest()
            self._counter += 1
        out = out[:size]
        self.handed.append(out)
        return out


def make_user(name="alice", password=PASSWORD, kdf=TEST_KDF, seed=b"salt"):
    return userstore.new_user(name, password, kdf=kdf, random_bytes=RecordingRandom(seed))


def expected_password_key(password, salt, kdf):
    """scrypt straight from cryptography, not through twisted_keyx."""
    return Scrypt(salt=salt, length=32, n=kdf.n, r=kdf.r, p=kdf.p).derive(password.encode())


def expected_box(key, step, user, plaintext, nonce):
    """The box format as documented: nonce || AES-256-GCM(plaintext), with
    associated data "twisted-keyx eke v1 step " || step byte || user name."""
    ad = b"twisted-keyx eke v1 step " + bytes([step]) + user.encode()
    return base64.b64encode(nonce + AESGCM(key).encrypt(nonce, plaintext, ad))


def open_expected_box(key, step, user, line):
    box = base64.b64decode(line)
    ad = b"twisted-keyx eke v1 step " + bytes([step]) + user.encode()
    return AESGCM(key).decrypt(box[:12], box[12:], ad)


def flip(line, index=20):
    """The base64 line with one character changed (still valid base64)."""
    chars = bytearray(line)
    chars[index] = ord("A") if chars[index] != ord("A") else ord("B")
    return bytes(chars)


class Users(dict):
    """An in-memory user table with the ``lookup`` of an IUserStore
    (answered at once, not as a Deferred: the adapter takes both)."""

    def lookup(self, name, scheme="eke"):
        record = self.get(name)
        return record if record is not None and record.scheme == scheme else None


#: An EKE server that keeps its connections (:class:`TrackingFactory`).
TrackingEKEServerFactory = tracking(EKEServerFactory)
