"""The X25519 group (twisted_keyx.groups.x25519): vectors, keys, low-order points,
and the DH handshake in it, framed and unframed, with keyx-client and twistd."""

import json

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer, endpoints, reactor
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from twisted_keyx.groups import asn1
from twisted_keyx.groups import registry as groups
from twisted_keyx.service import tap
from twisted_keyx.groups import x25519
from twisted_keyx.dh import messages
from twisted_keyx.dh.handshake import (
    DHClientHandshake,
    DHServerHandshake,
    InvalidClientKey,
    InvalidServerKey,
    DHServerState,
)
from twisted_keyx.dh.protocol import DHClientProtocol, DHServerFactory
from twisted_keyx.dh.raw import SERVER_MESSAGES, MessageSplitter, RawDHClientProtocol, RawDHServerFactory
from twisted_keyx.core.transcript import session_key_fingerprint

from .helpers import SERVER_X, TrackingDHServerFactory, frame, read_data, tracked
from .test_client import _Loopback, unauthenticated

GROUP = x25519.GROUP
h = bytes.fromhex

#: RFC 7748 section 5.2, the two single-step vectors: (scalar, u, output).
#: The second u has its top bit set (last byte 0x93), which X25519 masks.
RFC7748_5_2 = [
    (h("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4"),
     h("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c"),
     h("c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552")),
    (h("4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d"),
     h("e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493"),
     h("95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957")),
]
#: RFC 7748 section 5.2, iterated: k = u = 9, then k, u = X25519(k, u), k.
RFC7748_ITERATED = {
    1: h("422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079"),
    1000: h("684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51"),
}
#: RFC 7748 section 6.1: Alice's and Bob's key pairs and their shared secret K.
RFC7748_6_1 = {
    "alice_private": h("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"),
    "alice_public": h("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"),
    "bob_private": h("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"),
    "bob_public": h("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"),
    "shared": h("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"),
}

#: libsodium's blacklist (src/libsodium/crypto_scalarmult/curve25519/ref10/
#: x25519_ref10.c, has_small_order): 0, 1, the two u of order 8, p - 1, p, p + 1.
LIBSODIUM_BLACKLIST = [h(x) for x in (
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
)]
#: https://cr.yp.to/ecdh.html, "points to reject": the same seven, then five
#: with the top bit set (u + p read without the mask: the order-8 u, p - 1,
#: p, p + 1 plus 2^255 - 19).
CR_YP_TO_POINTS_TO_REJECT = LIBSODIUM_BLACKLIST + [h(x) for x in (
    "cdeb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b880",
    "4c9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f11d7",
    "d9ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    "daffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    "dbffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
)]

INVALID_CLIENT_KEY = b"Invalid client public key, hanging up"


def spki(raw):
    """PEM SubjectPublicKeyInfo of a 32-byte X25519 key, built here (RFC 8410)."""
    algorithm = asn1.encode_sequence(asn1.encode(asn1.OBJECT_IDENTIFIER, asn1.oid("1.3.101.110")))
    return asn1.pem_encode(b"PUBLIC KEY", asn1.encode_sequence(
        algorithm, asn1.encode(asn1.BIT_STRING, b"\0" + raw)))


def raw_public(private_key):
    return x25519.parse_public_key_pem(GROUP.public_key_pem(private_key))


class VectorTests(unittest.TestCase):
    def test_rfc7748_section_5_2(self):
        for scalar, u, output in RFC7748_5_2:
            key = GROUP.private_key_from_bytes(scalar)
            self.assertEqual(GROUP.exchange(key, GROUP.load_peer_key(spki(u))), output)

    def test_rfc7748_section_5_2_iterated(self):
        k = u = (9).to_bytes(32, "little")
        for iteration in range(1, max(RFC7748_ITERATED) + 1):
            k, u = GROUP.exchange(GROUP.private_key_from_bytes(k), GROUP.load_peer_key(spki(u))), k
            if iteration in RFC7748_ITERATED:
                self.assertEqual(k, RFC7748_ITERATED[iteration], iteration)

    def test_rfc7748_section_6_1(self):
        v = RFC7748_6_1
        alice = GROUP.private_key_from_bytes(v["alice_private"])
        bob = GROUP.private_key_from_bytes(v["bob_private"])
        self.assertEqual(raw_public(alice), v["alice_public"])
        self.assertEqual(raw_public(bob), v["bob_public"])
        self.assertEqual(GROUP.exchange(alice, GROUP.load_peer_key(spki(v["bob_public"]))),
                         v["shared"])
        self.assertEqual(GROUP.exchange(bob, GROUP.load_peer_key(spki(v["alice_public"]))),
                         v["shared"])


class KeyTests(unittest.TestCase):
    def test_registry(self):
        self.assertIs(groups.named("x25519"), GROUP)
        self.assertIn("x25519", groups.names())
        self.assertEqual((GROUP.name, GROUP.bits, GROUP.secret_length), ("x25519", 255, 32))
        self.assertEqual(GROUP.parameters_message, b"Group: x25519")
        self.assertEqual(len(GROUP.parameters_message), 13)
        self.assertIs(groups.from_parameters_message(b"Group: x25519"), GROUP)

    def test_public_key_is_what_openssl_writes(self):
        # tests/data/x25519-public.pem: openssl genpkey -algorithm X25519 | openssl pkey -pubout
        pem = read_data("x25519-public.pem")
        self.assertEqual(spki(x25519.parse_public_key_pem(pem)), pem)
        self.assertEqual(x25519.encode_public_key_pem(x25519.parse_public_key_pem(pem)), pem)
        key = GROUP.generate_private_key()
        self.assertEqual(GROUP.public_key_pem(key), spki(raw_public(key)))
        self.assertLessEqual(len(GROUP.public_key_pem(key).replace(b"\n", b"\r\n")),
                             GROUP.max_public_key_message)

    def test_encoding_is_cryptographys_for_random_keys(self):
        from cryptography.hazmat.primitives import serialization
        for _ in range(50):
            key = GROUP.generate_private_key()
            self.assertEqual(GROUP.public_key_pem(key), key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))

    def test_canonical_fast_path_agrees_with_the_der_reader(self):
        # The canonical PEM is read without the general DER reader; every
        # other spelling of the same key goes through it, with the same answer.
        for _ in range(20):
            raw = raw_public(GROUP.generate_private_key())
            pem = spki(raw)
            self.assertEqual(len(pem), x25519.CANONICAL_PEM_LENGTH)
            self.assertEqual(x25519._canonical_raw(pem), raw)
            for other in (pem.replace(b"\n", b"\r\n"), b"  " + pem, pem + b"\n"):
                self.assertIsNone(x25519._canonical_raw(other))
                self.assertEqual(x25519.parse_public_key_pem(other), raw)
        self.assertIsNone(x25519._canonical_raw(pem[:30] + b"*" + pem[31:]))
        self.assertInvalid(pem[:30] + b"*" + pem[31:], "not valid base64")

    def test_fixed_key(self):
        key = GROUP.private_key_from_value(SERVER_X)
        self.assertEqual(GROUP.public_key_pem(key),
                         GROUP.public_key_pem(GROUP.private_key_from_value(SERVER_X)))

    def assertInvalid(self, pem, message):
        with self.assertRaises(groups.InvalidPublicKey) as caught:
            GROUP.load_peer_key(pem)
        self.assertIn(message, str(caught.exception))

    def test_strict_spki(self):
        raw = raw_public(GROUP.generate_private_key())
        oid = asn1.encode(asn1.OBJECT_IDENTIFIER, asn1.oid("1.3.101.110"))
        key = asn1.encode(asn1.BIT_STRING, b"\0" + raw)
        null = b"\x05\x00"
        with_null = asn1.encode_sequence(asn1.encode_sequence(oid, null), key)
        self.assertInvalid(asn1.pem_encode(b"PUBLIC KEY", with_null), "trailing data")
        ed25519 = asn1.encode(asn1.OBJECT_IDENTIFIER, asn1.oid("1.3.101.112"))
        self.assertInvalid(asn1.pem_encode(b"PUBLIC KEY", asn1.encode_sequence(
            asn1.encode_sequence(ed25519), key)), "not an X25519 public key")
        for length in (31, 33, 0):
            self.assertInvalid(spki(bytes(range(1, length + 1))), f"not {length}")
        der = asn1.pem_decode(spki(raw), (b"PUBLIC KEY",))[1]
        self.assertInvalid(asn1.pem_encode(b"PUBLIC KEY", der + b"\0"), "trailing data")
        self.assertInvalid(asn1.pem_encode(b"PUBLIC KEY", der.replace(b"\x03\x21\x00", b"\x03\x21\x01")),
                           "unused bits")
        # Larger keys are refused by size before they are parsed.
        self.assertInvalid(read_data("rsa-2048-public.pem"), "too large")
        self.assertInvalid(read_data("ffdhe2048-public-5e12.pem"), "too large")
        self.assertInvalid(spki(raw) + b" " * GROUP.max_public_key_message, "too large")
        self.assertInvalid(b"Client public key:", "not a PEM public key")


class LowOrderTests(unittest.TestCase):
    def test_the_lists_are_low_order(self):
        # Independent of our check: cryptography (OpenSSL) refuses the
        # all-zero output that each of libsodium's seven gives.
        key = GROUP.generate_private_key()
        for raw in LIBSODIUM_BLACKLIST:
            with self.assertRaises(ValueError):
                key.exchange(X25519PublicKey.from_public_bytes(raw))
        # The order-8 values as cr.yp.to writes them in decimal.
        self.assertEqual(int.from_bytes(LIBSODIUM_BLACKLIST[2], "little"), 325606250916557431795983626356110631294008115727848805560023387167927233504)
        self.assertEqual(int.from_bytes(LIBSODIUM_BLACKLIST[3], "little"), 39382357235489614581723060781553021112529911719440698176882885853963445705823)

    def server_reply(self, raw):
        server = DHServerHandshake(GROUP)
        server.receive(messages.HELLO)
        self.assertEqual(server.receive(messages.PARAMS_REQUEST), b"Group: x25519")
        with self.assertRaises(InvalidClientKey) as caught:
            server.receive(messages.CLIENT_KEY_PREFIX + spki(raw))
        self.assertIs(server.state, DHServerState.FAILED)
        return caught.exception

    def test_server_refuses_every_listed_point(self):
        for raw in CR_YP_TO_POINTS_TO_REJECT + LIBSODIUM_BLACKLIST:
            refused = self.server_reply(raw)
            self.assertEqual(refused.reply, INVALID_CLIENT_KEY, raw.hex())
            self.assertEqual(refused.reason, "invalid client public key: "
                                             "the key is a point of low order")

    def test_every_encoding_of_a_low_order_u(self):
        # u and u + p (when it fits in 255 bits), each with the top bit
        # clear and set: 14 strings of 32 bytes.
        encodings = set()
        for u in x25519.LOW_ORDER_U:
            for value in (u, u + x25519.P):
                if value < 2**255:
                    encodings.add(value.to_bytes(32, "little"))
                    encodings.add((value | 2**255).to_bytes(32, "little"))
        self.assertEqual(len(encodings), 14)
        for raw in encodings:
            self.assertEqual(self.server_reply(raw).reply, INVALID_CLIENT_KEY, raw.hex())

    def test_neighbours_are_accepted(self):
        for u in (2, 9, x25519.P - 2):
            GROUP.load_peer_key(spki(u.to_bytes(32, "little")))

    def test_all_zero_output_is_refused_after_the_exchange_too(self):
        # With the up-front check out of the way, the exchange's own check
        # (cryptography's error, or ours) still refuses it, with the same reply.
        self.patch(x25519, "is_low_order", lambda raw: False)
        refused = self.server_reply(bytes(32))
        self.assertEqual(refused.reply, INVALID_CLIENT_KEY)
        self.assertEqual(refused.reason,
                         "invalid client public key: the shared secret would be all zeros")

    def test_client_refuses_a_low_order_server_key(self):
        client_machine = DHClientHandshake()
        client_machine.start()
        client_machine.receive(messages.HEY_THERE)
        message5 = client_machine.receive(b"Group: x25519")
        self.assertTrue(message5.startswith(b"Client public key:-----BEGIN PUBLIC KEY-----\n"))
        with self.assertRaises(InvalidServerKey) as caught:
            client_machine.receive(messages.SERVER_KEY_PREFIX + spki(LIBSODIUM_BLACKLIST[2]))
        self.assertEqual(caught.exception.reason,
                         "invalid server public key: the key is a point of low order")


class PropertyTests(unittest.TestCase):
    @given(st.binary(max_size=300))
    def test_any_bytes_are_a_key_or_refused(self, data):
        try:
            GROUP.load_peer_key(data)
        except groups.InvalidPublicKey:
            pass

    @given(st.binary(min_size=32, max_size=32))
    def test_any_32_bytes(self, raw):
        key = GROUP.private_key_from_value(SERVER_X)
        try:
            peer = GROUP.load_peer_key(spki(raw))
        except groups.InvalidPublicKey as e:
            self.assertTrue(x25519.is_low_order(raw), str(e))
            return
        self.assertFalse(x25519.is_low_order(raw))
        self.assertNotEqual(GROUP.exchange(key, peer), bytes(32))


class WireTests(unittest.TestCase):
    """The exact bytes on the wire, framed and unframed (StringTransport)."""

    peer = IPv4Address("TCP", "127.0.0.1", 40404)
    low_order_key = messages.CLIENT_KEY_PREFIX + spki(LIBSODIUM_BLACKLIST[3])

    def serve(self, factory):
        protocol = factory.buildProtocol(self.peer)
        transport = StringTransport(peerAddress=self.peer)
        protocol.makeConnection(transport)
        return protocol, transport

    def test_framed(self):
        protocol, transport = self.serve(DHServerFactory(GROUP))
        for message in (b"Hello", b"Params?", self.low_order_key):
            protocol.dataReceived(frame(message))
        self.assertEqual(transport.value(), frame(b"Hey there!") + frame(b"Group: x25519")
                         + frame(INVALID_CLIENT_KEY))
        self.assertTrue(transport.disconnecting)

    def test_unframed(self):
        protocol, transport = self.serve(RawDHServerFactory(GROUP))
        for message in (b"Hello", b"Params?", self.low_order_key):
            protocol.dataReceived(message)
        self.assertEqual(transport.value(), b"Hey there!Group: x25519" + INVALID_CLIENT_KEY)
        self.assertTrue(transport.disconnecting)

    def test_splitter_finds_message_4(self):
        splitter = MessageSplitter(SERVER_MESSAGES, 10_000)
        key = messages.SERVER_KEY_PREFIX + GROUP.public_key_pem(GROUP.generate_private_key())
        for piece in (b"Hey there!Group: x2", b"5519", key):
            splitter.feed(piece)
        self.assertEqual([splitter.next_message() for _ in range(4)],
                         [b"Hey there!", b"Group: x25519", key.rstrip(), None])


class TrackingRawServerFactory(TrackingDHServerFactory):
    protocol = tracked(RawDHServerFactory.protocol)


class LoopbackTests(unittest.TestCase):
    """The whole handshake over TCP on 127.0.0.1, framed and unframed."""

    async def check(self, server_factory, client_protocol):
        port = reactor.listenTCP(0, server_factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port,
                                                timeout=5)
        protocol = await endpoints.connectProtocol(endpoint, client_protocol())
        result = await protocol.finished
        await protocol.lost
        await server_factory.allLost()
        [server_result] = server_factory.results
        self.assertIs(result.group, GROUP)
        self.assertEqual(len(result.shared_secret), 32)
        self.assertNotEqual(result.shared_secret, bytes(32))
        self.assertEqual(result.shared_secret, server_result.shared_secret)
        self.assertEqual(result.session_key, server_result.session_key)
        self.assertEqual(result.transcript_hash, server_result.transcript_hash)

    def test_framed(self):
        return defer.Deferred.fromCoroutine(
            self.check(TrackingDHServerFactory(GROUP), tracked(DHClientProtocol)))

    def test_unframed(self):
        return defer.Deferred.fromCoroutine(
            self.check(TrackingRawServerFactory(GROUP), tracked(RawDHClientProtocol)))


class ClientReportTests(_Loopback, unittest.TestCase):
    async def run_client(self, server, *options):
        port, status, out, err = await self.serve_and_run_dh(server, *options)
        [result] = server.results
        # No host key: the client falls back to Hello and warns (docs/hostkey.rst).
        self.assertTrue(err.startswith(unauthenticated(port)))
        return status, out, err[len(unauthenticated(port)):], result

    def test_text(self):
        async def run():
            status, out, err, result = await self.run_client(TrackingDHServerFactory(GROUP))
            self.assertEqual((status, err), (0, ""))
            self.assertEqual(out, (
                "Group: x25519 (255 bits)\n"
                "Host key fingerprint: none (unauthenticated)\n"
                f"Shared Secret: {result.shared_secret.hex()}\n"
                f"Session key: {result.session_key.hex()}\n"
                f"Session key fingerprint: {session_key_fingerprint(result.session_key)}\n"
            ))
        return defer.Deferred.fromCoroutine(run())

    def test_json(self):
        async def run():
            status, out, err, result = await self.run_client(
                TrackingDHServerFactory(GROUP), "--json")
            self.assertEqual((status, err), (0, ""))
            self.assertEqual(json.loads(out), {
                "group": "x25519",
                "bits": 255,
                "shared_secret": result.shared_secret.hex(),
                "session_key": result.session_key.hex(),
                "fingerprint": session_key_fingerprint(result.session_key),
                "host_key_fingerprint": None,
            })
        return defer.Deferred.fromCoroutine(run())


class TapTests(unittest.TestCase):
    def test_group_x25519(self):
        options = tap.Options()
        options.parseOptions(["--group", "x25519"])
        self.assertIs(options.config.settings["dh"].group, GROUP)
        self.assertIs(tap.makeService(options).config.settings["dh"].group, GROUP)

    def test_help_lists_x25519(self):
        group_help = tap.Options().docs["group"]
        self.assertIn("ffdhe2048, ffdhe3072, ffdhe4096, x25519, xwing, mlkem768x25519-sha256 "
                      "[default: ffdhe2048]", group_help)
