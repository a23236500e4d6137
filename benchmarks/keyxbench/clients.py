"""The load generator's clients: one handshake per connection, in lock step
(send, wait for the reply, send the next), as a real client does.

The wire is read with what the project and Twisted already have: Twisted's
``Int32StringReceiver`` for framed DH, the project's unframed
:class:`~twisted_keyx.dh.raw.MessageSplitter` for the tutorial's format,
``LineReceiver`` for EKE and OPAQUE, and the ``ssl`` module's memory BIOs
for TLS.  The decisions of a DH client are in :class:`DHSteps`, an OPAQUE
client's in :class:`OpaqueSteps`, with no I/O, so they can be tested alone
(tests/test_bench_helpers.py).

The clients do as little work as they can, so that the load generator is not
the bottleneck: DH keys come from a pool made before the clock starts and
only every 50th server key is loaded and checked; EKE reuses a few RSA keys
and a cheap scrypt; OPAQUE logins are started before the clock
(:class:`OpaquePool`: the OPRF blind and the client's key share of each
login, each used once) against a record with the cheapest Argon2id, and
finished for real (unblind, Argon2id, envelope, 3DH, the server's MAC
checked, KE3 the server verifies).
"""

import collections
import ssl
import time

from twisted.internet import protocol
from twisted.protocols.basic import Int32StringReceiver, LineReceiver

from keyxbench import project
from keyxbench.project import messages

EKE_USER, EKE_PASSWORD = "bench", "bench password"
OPAQUE_USER, OPAQUE_PASSWORD = "bench-opaque", "bench opaque password"

#: One server key in this many is loaded and checked by the DH clients.
CHECK_EVERY = 50


class BadReply(Exception):
    """The server's reply is not the one the handshake expects."""


class Recorder:
    """What a load run counts: latencies while measuring, failures by kind."""

    def __init__(self):
        self.measuring = False
        self.stopping = False
        self.latencies = []
        self.failures = 0
        self.failure_kinds = {}
        self.started = 0  # handshakes begun (picks keys from the pools)
        self.checked = 0

    def succeeded(self, began, ended=None):
        """One handshake done; its latency runs from ``began`` to ``ended``
        (default: now)."""
        if self.measuring:
            self.latencies.append((time.perf_counter() if ended is None else ended) - began)

    def failed(self, kind):
        if self.measuring:
            self.failures += 1
            self.failure_kinds[kind] = self.failure_kinds.get(kind, 0) + 1


def is_parameters_message(payload):
    """Message 4 has the shape of a PEM parameters block (any group's)."""
    payload = payload.strip()
    return (payload.startswith(b"-----BEGIN ") and payload.endswith(b"-----")
            and b"PARAMETERS-----" in payload[:64]) or payload.startswith(b"Group: ")


class DHSteps:
    """The client side of one DH handshake, as the load generator runs it.

    :meth:`start` gives message 1; :meth:`receive` takes each reply and gives
    the next message, or None once message 6 has arrived; a wrong reply
    raises :class:`BadReply` naming it.  ``check`` is None or the group, to
    load and check the server's key with.
    """

    def __init__(self, key_message, check=None):
        self.key_message = key_message
        #: None, or ``(group, private key)``: the server's answer is
        #: decapsulated (for DH: its key loaded, checked and exchanged with).
        self.check = check
        self.replies = 0
        self.finished = False

    def start(self):
        return messages.HELLO

    def receive(self, payload):
        self.replies += 1
        if payload in messages.ERROR_REPLIES:
            raise BadReply(f"error reply {payload.decode()!r}")
        if self.replies == 1:
            if payload != messages.HEY_THERE:
                raise BadReply("greeting")
            return messages.PARAMS_REQUEST
        if self.replies == 2:
            if not is_parameters_message(payload):
                raise BadReply("parameters")
            return self.key_message
        if self.replies == 3 and payload.startswith(messages.SERVER_KEY_PREFIX):
            if self.check is not None:
                group, private_key = self.check
                group.decapsulate(private_key,
                                  payload[len(messages.SERVER_KEY_PREFIX):].strip() + b"\n")
            self.finished = True
            return None
        raise BadReply("server key")


class HostKeyDHSteps(DHSteps):
    """:class:`DHSteps` asking for the host key signature (``Host key?``):
    after message 6 it takes message 7 and verifies it over the transcript of
    messages 1 to 6, as ``keyx-client dh`` does (docs/hostkey.rst)."""

    def __init__(self, key_message, group_name, check=None):
        super().__init__(key_message, check)
        self.group_name = group_name
        self.transcript = project.Transcript()

    def start(self):
        self.transcript.add(project.hostauth.HOST_KEY_REQUEST)
        return project.hostauth.HOST_KEY_REQUEST

    def receive(self, payload):
        if self.finished and self.replies == 3:
            self.replies += 1
            hostauth = project.hostauth
            try:
                public_key, signature = hostauth.parse_signature_message(payload)
                hostauth.verify(public_key, self.group_name, self.transcript.digest(), signature)
            except hostauth.BadHostKeySignature as e:
                raise BadReply(f"host key signature ({e})") from None
            self.verified = True
            return None
        self.transcript.add(payload)
        reply = super().receive(payload)
        if reply is not None:
            self.transcript.add(reply)
        return reply


class _OneHandshake:
    """What every client protocol does at the end: count, close, next."""

    done = False

    def succeed(self):
        self.done = True
        self.factory.recorder.succeeded(self.factory.began)
        self.transport.loseConnection()

    def bad(self, kind):
        self.done = True
        self.factory.recorder.failed(f"bad {kind}")
        self.transport.abortConnection()

    def connectionLost(self, reason):
        if not self.done:
            self.factory.recorder.failed("connection lost")
        self.factory.next()


class _DHClient(_OneHandshake):
    #: Ask for the host key signature and verify it (HostKeyDHSteps).
    ASK_HOST_KEY = False

    def connectionMade(self):
        self.transport.setTcpNoDelay(True)
        settings, recorder = self.factory.settings, self.factory.recorder
        self.steps = (settings.dh_steps(recorder, host_key=True) if self.ASK_HOST_KEY
                      else settings.dh_steps(recorder))
        self.send(self.steps.start())

    def handle(self, payload):
        try:
            reply = self.steps.receive(payload)
        except BadReply as e:
            return self.bad(str(e))
        except ValueError as e:  # the server's key failed the check
            return self.bad(f"server key ({e})")
        if reply is not None:
            self.send(reply)
        elif self.steps.finished and getattr(self.steps, "verified", True):
            self.succeed()


class FramedDHClient(_DHClient, Int32StringReceiver):
    """DH over Int32 framing (``twistd keyx --dh``, the naive peer)."""

    MAX_LENGTH = project.CLIENT_MAX_MESSAGE_LENGTH

    def send(self, payload):
        self.sendString(payload)

    def stringReceived(self, payload):
        if not self.done:
            self.handle(payload)


class RawDHClient(_DHClient, protocol.Protocol):
    """DH in the tutorial's unframed format (``twistd keyx --dh-raw``): each
    message in one write, replies cut by the project's splitter."""

    def connectionMade(self):
        self.splitter = project.MessageSplitter(project.SERVER_MESSAGES,
                                                project.CLIENT_MAX_MESSAGE_LENGTH)
        super().connectionMade()

    def send(self, payload):
        self.transport.write(payload)

    def dataReceived(self, data):
        self.splitter.feed(data)
        while not self.done:
            try:
                payload = self.splitter.next_message()
            except project.MessageTooLong as e:
                return self.bad(str(e))
            if payload is None:
                return
            self.handle(payload)


class EKEClient(_OneHandshake, LineReceiver):
    """One EKE handshake, then the chat's quit; the latency is to step 8."""

    delimiter = b"\n"
    MAX_LENGTH = 4096

    def connectionMade(self):
        self.transport.setTcpNoDelay(True)
        self.chat = None
        settings, recorder = self.factory.settings, self.factory.recorder
        recorder.started += 1
        key = settings.rsa_pool[recorder.started % len(settings.rsa_pool)]
        self.handshake = project.eke.EKEClientHandshake(EKE_USER, EKE_PASSWORD, kdf_limits=settings.cheap_kdf,
                                            rsa_key_factory=lambda: key)
        self.sendLine(self.handshake.start())

    def lineReceived(self, line):
        if self.done:
            return
        try:
            if self.chat is not None:
                self.chat.receive(line)
                self.done = True
                self.transport.loseConnection()
                return
            reply = self.handshake.receive(line)
        except Exception as e:  # HandshakeFailed, ChatFailed and the like
            return self.bad(type(e).__name__)
        if reply is not None:
            self.sendLine(reply)
        if self.handshake.finished:
            self.factory.recorder.succeeded(self.factory.began)
            self.chat = project.eke.ClientChat(self.handshake.result)
            self.sendLine(self.chat.quit())


class OpaqueSteps:
    """The client side of one OPAQUE login and its ``quit``, as the load
    generator runs it (docs/protocols.rst, OPAQUE; the machine is the
    project's :class:`~twisted_keyx.opaque.handshake.OPAQUEClientHandshake`,
    which runs :class:`~twisted_keyx.opaque.login.ClientLogin`).

    ``handshake`` has been started already and ``first_line`` is what its
    ``start()`` gave, line (1).  :meth:`receive` takes each server line and
    gives the next one: KE2 gives KE3, ``ok`` gives the chat's ``quit``
    record (then :attr:`authenticated`), the server's ``quit`` record gives
    None (then :attr:`finished`).  Anything the handshake or the chat
    refuses raises :class:`BadReply` naming the step.
    """

    def __init__(self, handshake, first_line):
        self.handshake = handshake
        self.first_line = first_line
        self.replies = 0
        self.chat = None
        self.authenticated = False
        self.finished = False

    def start(self):
        return self.first_line

    def receive(self, line):
        self.replies += 1
        step = {1: "KE2", 2: "ok", 3: "quit"}.get(self.replies, "a line after quit")
        if self.replies > 3:
            raise BadReply(step)
        try:
            if self.chat is None:
                reply = self.handshake.receive(line)
                if reply is not None or self.replies != 2:
                    return reply
                self.authenticated = True
                self.chat = project.eke.ClientChat(self.handshake.result)
                return self.chat.quit()
            self.chat.receive(line)
        except project.opaque.ProtocolFailed as e:
            raise BadReply(f"{step}: {e.reason}") from None
        if not self.chat.finished:
            raise BadReply("quit: a record that is not its confirmation")
        self.finished = True
        return None


class OpaquePool:
    """OPAQUE logins started before the clock: ``size`` client machines
    (``OPAQUEClientHandshake``, the cheap KSF limits) whose ``start()`` has
    run (the OPRF blind of the password and the client's key share, fresh
    for each), each used by one login.  Once they are used up, :meth:`take`
    starts one on the spot and counts it in :attr:`live`."""

    def __init__(self, size, user=OPAQUE_USER, password=OPAQUE_PASSWORD, ksf_limits=None):
        self.user, self.password = user, password
        self.ksf_limits = ksf_limits if ksf_limits is not None else project.cheap_ksf_limits()
        self.size = size
        self._ready = collections.deque(self._start() for _ in range(size))
        self.live = 0

    def _start(self):
        handshake = project.opaque.OPAQUEClientHandshake(self.user, self.password,
                                                         ksf_limits=self.ksf_limits)
        return handshake, handshake.start()

    def take(self):
        """The :class:`OpaqueSteps` of the next login."""
        if self._ready:
            return OpaqueSteps(*self._ready.popleft())
        self.live += 1
        return OpaqueSteps(*self._start())


class OPAQUEClient(_OneHandshake, LineReceiver):
    """One OPAQUE login, then the chat's quit; the latency is to ``ok``
    (as EKE's is to step 8), the login counted once its quit is confirmed."""

    delimiter = b"\n"
    MAX_LENGTH = 4096

    def connectionMade(self):
        self.transport.setTcpNoDelay(True)
        self.logged_in_at = None
        self.steps = self.factory.settings.opaque_steps(self.factory.recorder)
        self.sendLine(self.steps.start())

    def lineReceived(self, line):
        if self.done:
            return
        try:
            reply = self.steps.receive(line)
        except BadReply as e:
            return self.bad(str(e))
        if self.steps.authenticated and self.logged_in_at is None:
            self.logged_in_at = time.perf_counter()
        if reply is not None:
            self.sendLine(reply)
        elif self.steps.finished:
            self.done = True
            self.factory.recorder.succeeded(self.factory.began, self.logged_in_at)
            self.transport.loseConnection()


class LinesClient(_OneHandshake, LineReceiver):
    """For the canned line server (``keyxbench.canned --lines N``): sends a
    line, waits for a reply line, :attr:`ROUNDS` times, and is done when the
    server closes after the last; no crypto, no checks."""

    delimiter = b"\n"
    MAX_LENGTH = 4096
    ROUNDS = 3
    #: About the size of OPAQUE's line (1).
    LINE = b"x" * 140

    def connectionMade(self):
        self.transport.setTcpNoDelay(True)
        self.replies = 0
        self.sendLine(self.LINE)

    def lineReceived(self, line):
        if self.done:
            return
        self.replies += 1
        if self.replies < self.ROUNDS:
            self.sendLine(self.LINE)
        elif self.replies == self.ROUNDS:
            self.factory.recorder.succeeded(self.factory.began)
            self.done = True
            self.transport.loseConnection()


class FiveLinesClient(LinesClient):
    ROUNDS = 5


#: What the TLS client sends once the handshake is done, and the reply it
#: waits for: one round trip of application data, so that the server has
#: finished its side of the handshake too.
TLS_REQUEST, TLS_REPLY = b"Hello", b"Hey there!"


class TLSClient(_OneHandshake, protocol.Protocol):
    """A full TLS handshake on a fresh connection (no session resumption),
    through the ``ssl`` module's memory BIOs, then one request and reply."""

    def connectionMade(self):
        self.transport.setTcpNoDelay(True)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = self.factory.settings.tls_context.wrap_bio(
            self.incoming, self.outgoing, server_hostname="localhost")
        self.handshaken = False
        self.reply = b""
        self.advance()

    def flush(self):
        data = self.outgoing.read()
        if data:
            self.transport.write(data)

    def advance(self):
        """Drive the handshake, then the request and its reply, as far as
        the bytes received so far allow (the same for both TLS stacks:
        their calls are the methods below)."""
        try:
            if not self.handshaken:
                self.tls.do_handshake()
                self.handshaken = True
                self.send_request()
            while True:
                data = self.receive()
                if not data:
                    return self.bad("TLS: closed before the reply")
                self.reply += data
                if self.reply == TLS_REPLY:
                    self.flush()
                    return self.succeed()
        except self.WANT_MORE:
            self.flush()
        except self.CLOSED:
            self.flush()
            self.bad("TLS: closed before the reply")
        except self.FAILED as e:
            self.flush()
            self.bad(f"TLS: {self.reason(e)}")

    # The ``ssl`` module's calls.
    WANT_MORE = (ssl.SSLWantReadError, ssl.SSLWantWriteError)
    CLOSED = ssl.SSLZeroReturnError
    FAILED = ssl.SSLError

    def send_request(self):
        self.tls.write(TLS_REQUEST)

    def receive(self):
        return self.tls.read(4096)

    def reason(self, e):
        return e.reason or e

    def dataReceived(self, data):
        if not self.done:
            self.incoming.write(data)
            self.advance()


class PyOpenSSLTLSClient(TLSClient):
    """:class:`TLSClient` through pyOpenSSL, on cryptography's bundled
    OpenSSL (the ``ssl`` module's system OpenSSL 3.0 has no ML-KEM), offering
    only the groups of the run's ``tls_groups`` (X25519MLKEM768); the
    certificate is verified against the run's CA, the host name not."""

    def connectionMade(self):
        from OpenSSL import SSL

        self.SSL = SSL
        self.WANT_MORE, self.CLOSED, self.FAILED = (
            SSL.WantReadError, SSL.ZeroReturnError, SSL.Error)
        self.transport.setTcpNoDelay(True)
        self.tls = SSL.Connection(self.factory.settings.pyopenssl_context, None)
        self.tls.set_tlsext_host_name(b"localhost")
        self.tls.set_connect_state()
        self.handshaken = False
        self.reply = b""
        self.advance()

    def flush(self):
        SSL = self.SSL
        while True:
            try:
                data = self.tls.bio_read(65536)
            except SSL.WantReadError:
                return
            if not data:
                return
            self.transport.write(data)

    def send_request(self):
        self.tls.send(TLS_REQUEST)

    def receive(self):
        return self.tls.recv(4096)

    def reason(self, e):
        return e

    def dataReceived(self, data):
        if not self.done:
            self.tls.bio_write(data)
            self.advance()


def pyopenssl_context(cafile, groups):
    """A TLS 1.3 client context of pyOpenSSL offering only ``groups``
    (OpenSSL's list syntax, ``X25519MLKEM768``)."""
    from OpenSSL import SSL
    from OpenSSL._util import lib

    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(SSL.TLS1_3_VERSION)
    context.load_verify_locations(cafile)
    context.set_verify(SSL.VERIFY_PEER, lambda connection, cert, errno, depth, ok: bool(ok))
    if lib.SSL_CTX_set1_curves_list(context._context, groups.encode("ascii")) != 1:
        raise ValueError(f"OpenSSL does not know the TLS groups {groups!r}")
    return context


class Settings:
    """What the clients of one run share, made before the clock starts."""

    def __init__(self, group_name=project.DEFAULT_GROUP, tls_ca=None, eke=False, opaque_logins=0,
                 tls_groups=None):
        self.group = project.named_group(group_name)
        self.keys = [self.group.generate_private_key() for _ in range(64)]
        self.key_messages = [messages.CLIENT_KEY_PREFIX + self.group.public_key_pem(key)
                             for key in self.keys]
        if tls_ca:
            context = ssl.create_default_context(cafile=tls_ca)
            context.minimum_version = ssl.TLSVersion.TLSv1_3
            self.tls_context = context
            if tls_groups:
                self.pyopenssl_context = pyopenssl_context(tls_ca, tls_groups)
        if eke:
            crypto = project.eke.crypto
            # A real client makes an RSA key per session (about 50 ms), which
            # would make the load generator the bottleneck; the server cannot
            # tell the difference.
            self.rsa_pool = [crypto.generate_rsa_key() for _ in range(8)]
            self.cheap_kdf = crypto.KdfLimits(min_memory=1)
        #: OPAQUE logins started in advance (OpaquePool), if any.
        self.opaque_pool = OpaquePool(opaque_logins) if opaque_logins else None

    def opaque_steps(self, recorder):
        recorder.started += 1
        if self.opaque_pool is None:
            self.opaque_pool = OpaquePool(0)
        return self.opaque_pool.take()

    def dh_steps(self, recorder, host_key=False):
        recorder.started += 1
        check = None
        index = recorder.started % len(self.key_messages)
        if recorder.started % CHECK_EVERY == 0:
            check = (self.group, self.keys[index])
            recorder.checked += 1
        key_message = self.key_messages[index]
        if host_key:
            return HostKeyDHSteps(key_message, project.hostauth.signed_group_name(self.group),
                                  check)
        return DHSteps(key_message, check)


class FramedHostKeyDHClient(FramedDHClient):
    """Framed DH asking for and verifying the host key signature."""

    ASK_HOST_KEY = True


#: Client protocols by the name a mode gives (keyxbench.modes).
CLIENTS = {
    "dh-framed": FramedDHClient,
    "dh-framed-hostkey": FramedHostKeyDHClient,
    "dh-raw": RawDHClient,
    "eke": EKEClient,
    "opaque": OPAQUEClient,
    "lines-3": LinesClient,
    "lines-5": FiveLinesClient,
    "tls": TLSClient,
    "tls-pyopenssl": PyOpenSSLTLSClient,
}


class HandshakeFactory(protocol.ClientFactory):
    """One client slot: a handshake, and when its connection is gone, the next."""

    def __init__(self, reactor, port, client, settings, recorder, sources=None):
        self.reactor = reactor
        self.port = port
        self.protocol = CLIENTS[client]
        self.settings = settings
        self.recorder = recorder
        #: An endless iterator of loopback addresses to connect from, in
        #: turn (shared by the slots), or None: the kernel's choice.
        self.sources = sources

    def next(self):
        if not self.recorder.stopping:
            self.began = time.perf_counter()
            bind = None if self.sources is None else (next(self.sources), 0)
            self.reactor.connectTCP("127.0.0.1", self.port, self, bindAddress=bind)

    def clientConnectionFailed(self, connector, reason):
        self.recorder.failed("connect failed")
        self.next()

