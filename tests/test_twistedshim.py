"""core.twistedshim: each private Twisted attribute the package uses, tested
against the installed Twisted, so that an upgrade that renames or changes
one fails here."""

import os
import socket
import tempfile

from cryptography import x509
from twisted.internet import defer, endpoints, reactor, tcp, unix
from twisted.internet.protocol import Factory, Protocol
from twisted.trial import unittest

from twisted.python import usage

from twisted_keyx.core.twistedshim import (
    PROXY_V2_SIGNATURE,
    InvalidProxyHeader,
    RepeatableOptions,
    proxy_header_parser,
    server_tls_context_factory,
    share_listening_port,
)

from .helpers import data_path


class TLSContextFactoryTests(unittest.TestCase):
    def test_the_ssl_endpoints_context_factory(self):
        """``SSL4ServerEndpoint._sslContextFactory``: the options made from
        the description, with its certificate."""
        pem = data_path("tls-server.pem")
        endpoint = endpoints.serverFromString(
            reactor, f"ssl:0:interface=127.0.0.1:privateKey={pem}")
        options = server_tls_context_factory(endpoint)
        with open(pem, "rb") as f:
            expected = x509.load_pem_x509_certificate(f.read())
        self.assertEqual(options.certificate.to_cryptography(), expected)
        options.getContext()  # usable as TLSMemoryBIOFactory's
        # Twisted's ssl: server endpoint hands pyOpenSSL its own key and
        # certificate objects, which pyOpenSSL now deprecates: not ours.
        for warning in self.flushWarnings():
            self.assertIn("pyOpenSSL", str(warning["message"]))


class _Accepted(Protocol):
    def connectionMade(self):
        self.factory.accepted.append(self)
        self.transport.loseConnection()


class SharedPortTests(unittest.TestCase):
    """``tcp.Port._shouldShutdown`` and ``unix.Port._bindPath``: a socket two
    processes listen on (here, two ports adopting one socket) keeps serving
    when one closes its copy."""

    def listening_socket(self, family):
        if family == socket.AF_UNIX:
            folder = tempfile.mkdtemp(dir=os.environ.get("TMPDIR"))
            self.addCleanup(os.rmdir, folder)
            address = os.path.join(folder, "s")
            self.addCleanup(lambda: os.path.exists(address) and os.unlink(address))
        else:
            address = ("127.0.0.1", 0)
        skt = socket.socket(family, socket.SOCK_STREAM)
        self.addCleanup(skt.close)
        skt.bind(address)
        skt.listen(5)
        skt.setblocking(False)
        return skt

    def adopt(self, skt, family):
        factory = Factory.forProtocol(_Accepted)
        factory.accepted = []
        port = reactor.adoptStreamPort(skt.fileno(), family, factory)
        # (Cleanups run last first: the port closes before the socket.)
        self.addCleanup(lambda: port.connected and port.stopListening())
        return port, factory

    @defer.inlineCallbacks
    def connect(self, skt, family):
        if family == socket.AF_UNIX:
            endpoint = endpoints.UNIXClientEndpoint(reactor, skt.getsockname())
        else:
            endpoint = endpoints.TCP4ClientEndpoint(reactor, *skt.getsockname())
        done = defer.Deferred()

        class Closed(Protocol):
            def connectionLost(self, reason):
                done.callback(None)

        yield endpoint.connect(Factory.forProtocol(Closed))
        yield done

    @defer.inlineCallbacks
    def one_copy_closed(self, family):
        skt = self.listening_socket(family)
        first, _ = self.adopt(skt, family)
        second, factory = self.adopt(skt, family)
        share_listening_port(first, unix=family == socket.AF_UNIX)
        yield first.stopListening()
        yield self.connect(skt, family)
        self.assertEqual(len(factory.accepted), 1)
        return skt

    def test_the_attributes_exist(self):
        """Setting an attribute Twisted no longer reads would do nothing
        silently: they must still be there."""
        self.assertIs(tcp.Port._shouldShutdown, True)
        self.assertIn("_shouldShutdown", tcp.Port._closeSocket.__code__.co_names)
        self.assertIn("_bindPath", unix.Port.connectionLost.__code__.co_names)

    def test_tcp(self):
        return self.one_copy_closed(socket.AF_INET)

    @defer.inlineCallbacks
    def test_unix(self):
        skt = yield self.one_copy_closed(socket.AF_UNIX)
        self.assertTrue(os.path.exists(skt.getsockname()))  # the parent's to remove

    @defer.inlineCallbacks
    def test_unix_without_the_shim_loses_the_socket(self):
        """Why the shim is there: Twisted's unix port, closed, removes the
        file and shuts the shared socket down."""
        skt = self.listening_socket(socket.AF_UNIX)
        path = skt.getsockname()
        first, _ = self.adopt(skt, socket.AF_UNIX)
        yield first.stopListening()
        self.assertFalse(os.path.exists(path))


class RepeatableOptionsTests(unittest.TestCase):
    """``usage.Options._gather_handlers``: options named at run time."""

    class Options(RepeatableOptions):
        optFlags = [["quiet", "q", "say less"]]

        def __init__(self):
            super().__init__()
            self["listen"] = []

        def repeatableOptions(self):
            return [("listen", "Listen on ENDPOINT (repeatable)")]

    def test_the_private_method_is_there(self):
        handlers = usage.Options()._gather_handlers()
        self.assertEqual(len(handlers), 6)  # longOpt, shortOpt, docs, settings, synonyms, dispatch

    def test_repeated_values_in_order(self):
        options = self.Options()
        options.parseOptions(["--listen", "tcp:1", "-q", "--listen=tcp:2"])
        self.assertEqual(options["listen"], ["tcp:1", "tcp:2"])
        self.assertTrue(options["quiet"])

    def test_in_the_help(self):
        self.assertIn("--listen=  Listen on ENDPOINT (repeatable)", str(self.Options()))

    def test_unknown_still_refused(self):
        with self.assertRaises(usage.UsageError):
            self.Options().parseOptions(["--other", "x"])


class RuntimeFlagsAndParametersTests(unittest.TestCase):
    """Flags and parameters named at run time behave as ``optFlags`` and
    ``optParameters`` do."""

    class Options(RepeatableOptions):
        optFlags = [["quiet", "q", "say less"]]
        optParameters = [["size", None, 3, "how big", int]]

        def runtimeFlags(self):
            return [("loud", "say more")]

        def runtimeParameters(self):
            return [("colour", "red", "which colour", None), ("count", None, "how many", int),
                    ("ratio", 0.5, "how much", float)]

    class Static(usage.Options):
        optFlags = [["quiet", "q", "say less"], ["loud", None, "say more"]]
        optParameters = [["size", None, 3, "how big", int],
                         ["colour", None, "red", "which colour"],
                         ["count", None, None, "how many", int],
                         ["ratio", None, 0.5, "how much", float]]

    def test_defaults(self):
        options = self.Options()
        options.parseOptions([])
        self.assertEqual((options["loud"], options["colour"], options["count"], options["ratio"]),
                         (0, "red", None, 0.5))

    def test_given(self):
        options = self.Options()
        options.parseOptions(["--loud", "--colour=blue", "--count", "7", "--ratio", "2"])
        self.assertEqual((options["loud"], options["colour"], options["count"], options["ratio"]),
                         (1, "blue", 7, 2.0))

    def test_errors_as_usage_options_words_them(self):
        for argv in (["--count", "many"], ["--loud=yes"], ["--count"]):
            with self.assertRaises(usage.UsageError) as mine:
                self.Options().parseOptions(argv)
            with self.assertRaises(usage.UsageError) as theirs:
                self.Static().parseOptions(argv)
            self.assertEqual(str(mine.exception), str(theirs.exception))

    def test_help_as_usage_options_prints_it(self):
        self.assertEqual(str(self.Options()), str(self.Static()))

    def test_a_name_twice_is_refused(self):
        class Twice(RepeatableOptions):
            optFlags = [["loud", None, "say more"]]

            def runtimeParameters(self):
                return [("loud", None, "again", None)]

        self.assertRaises(ValueError, Twice)


class ProxyHeaderParserTests(unittest.TestCase):
    """twisted.protocols.haproxy's private ``V1Parser``/``V2Parser``: what
    their ``feed`` returns and raises."""

    def test_v1(self):
        header = b"PROXY TCP4 198.51.100.7 127.0.0.1 5555 8089\r\n"
        parser = proxy_header_parser(header[:10])
        self.assertEqual(parser.feed(header[:10]), (None, None))
        info, remaining = parser.feed(header[10:] + b"hi")
        self.assertEqual((info.source.host, info.source.port, remaining),
                         ("198.51.100.7", 5555, b"hi"))
        self.assertEqual((info.destination.host, info.destination.port), ("127.0.0.1", 8089))

    def test_v2_and_local(self):
        body = socket.inet_aton("203.0.113.5") + socket.inet_aton("127.0.0.1") + \
            (4444).to_bytes(2, "big") + (8089).to_bytes(2, "big")
        header = PROXY_V2_SIGNATURE + bytes([0x21, 0x11]) + len(body).to_bytes(2, "big") + body
        info, remaining = proxy_header_parser(header).feed(header + b"x")
        self.assertEqual((info.source.host, info.source.port, remaining),
                         ("203.0.113.5", 4444, b"x"))
        local = PROXY_V2_SIGNATURE + bytes([0x20, 0x00, 0, 0])
        info, _ = proxy_header_parser(local).feed(local)
        self.assertIsNone(info.source)

    def test_not_a_header_and_a_bad_one(self):
        self.assertIsNone(proxy_header_parser(b"Hello\n"))
        self.assertIsNone(proxy_header_parser(b"PROX"))
        for bad in (b"PROXY TCP4 nonsense here 1 2\r\n",  # Twisted: host "nonsense"
                    b"PROXY TCP4 1.2.3.4 5.6.7.8 x y\r\n",  # Twisted: ValueError
                    b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n",  # Twisted: port 99999
                    b"PROXY TCP4 ::1 ::1 1 2\r\n",
                    b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
                    b"PROXY FOO\r\n"):
            with self.assertRaises(InvalidProxyHeader, msg=bad):
                proxy_header_parser(bad).feed(bad)
        good = b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n"
        info, _ = proxy_header_parser(good).feed(good)
        self.assertEqual(info.source.host, "2001:db8::1")
