"""Hostile peers against the OPAQUE layer: every message of a wrong size,
every invalid element or scalar, every changed byte ends in OpaqueError,
and a wrong password fails at both ends."""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from tests.opaque_helpers import CHEAP_LIMITS, CountingRandom, fixed_setup
from twisted_keyx.opaque import (
    KE1_SIZE,
    KE2_SIZE,
    KE3_SIZE,
    DEFAULT_CONTEXT,
    Argon2idParameters,
    ClientLogin,
    OpaqueError,
    ServerLogin,
    register,
)
from twisted_keyx.opaque import ake, credentials, envelope, group, oprf, primitives
from twisted_keyx.opaque.messages import KE1, KE2, RegistrationRequest, RegistrationResponse
from twisted_keyx.opaque.registration import RegistrationClient, registration_response

P = 2**255 - 19

#: 32-byte strings that are not acceptable elements: the identity, odd
#: ("negative") field elements, p and above (non-canonical), and a value
#: that is not on the curve's Ristretto image.
INVALID_ELEMENTS = [
    bytes(32),
    b"\x01" + bytes(31),
    P.to_bytes(32, "little"),
    (P + 2).to_bytes(32, "little"),
    b"\xff" * 32,
    (2**255 - 2).to_bytes(32, "little"),
    bytes.fromhex("f6ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
]

SETUP = fixed_setup()
RECORD, _ = register("right", SETUP, b"alice", rng=CountingRandom(3))
HEADER = 12


def _start(seed=50):
    client = ClientLogin("right", CHEAP_LIMITS, CountingRandom(seed))
    server = ServerLogin(SETUP, RECORD, b"alice", rng=CountingRandom(seed + 1))
    return client, server, client.start()


def _replace(data, offset, new):
    return data[:offset] + new + data[offset + len(new):]


class ElementTests(unittest.TestCase):
    def test_invalid_elements(self):
        for data in INVALID_ELEMENTS:
            self.assertRaises(OpaqueError, group.deserialize_element, data)

    def test_valid_element(self):
        g = group.scalar_mult_gen(b"\x01" + bytes(31))
        self.assertEqual(group.deserialize_element(g), g)

    def test_element_sizes(self):
        for size in (0, 31, 33, 64):
            self.assertRaises(OpaqueError, group.deserialize_element, b"\x02" * size)

    def test_scalars(self):
        """Canonical only: below the order, 32 bytes."""
        self.assertEqual(group.deserialize_scalar(bytes(32)), bytes(32))
        top = (group.ORDER - 1).to_bytes(32, "little")
        self.assertEqual(group.deserialize_scalar(top), top)
        for data in (group.ORDER.to_bytes(32, "little"), b"\xff" * 32, bytes(31)):
            self.assertRaises(OpaqueError, group.deserialize_scalar, data)

    def test_zero_scalar(self):
        """Multiplying by zero gives the identity: refused; zero has no inverse."""
        g = group.scalar_mult_gen(b"\x01" + bytes(31))
        self.assertRaises(OpaqueError, group.scalar_mult, bytes(32), g)
        self.assertRaises(OpaqueError, group.scalar_inverse, bytes(32))

    def test_random_scalar_skips_zero(self):
        """Zero, and zero once the top four bits are cleared, are drawn again."""
        chunks = iter([bytes(32), bytes(31) + b"\xf0", b"\x05" * 32])
        scalar = group.random_scalar(lambda n: next(chunks))
        self.assertEqual(scalar, b"\x05" * 32)

    def test_random_scalar_below_order(self):
        scalar = group.random_scalar(lambda n: b"\xff" * n)
        self.assertLess(int.from_bytes(scalar, "little"), group.ORDER)

    def test_bad_rng(self):
        self.assertRaises(OpaqueError, group.random_scalar, lambda n: b"\x01" * (n - 1))


class MessageTests(unittest.TestCase):
    def test_ke1_sizes(self):
        _, _, ke1 = _start()
        for size in (0, 1, KE1_SIZE - 1, KE1_SIZE + 1, 2 * KE1_SIZE, 65536):
            server = ServerLogin(SETUP, RECORD, b"alice", rng=CountingRandom(2))
            self.assertRaises(OpaqueError, server.respond, (ke1 * 700)[:size])

    def test_ke1_not_bytes(self):
        server = ServerLogin(SETUP, RECORD, b"alice", rng=CountingRandom(2))
        self.assertRaises(OpaqueError, server.respond, "x" * KE1_SIZE)

    def test_ke1_invalid_elements(self):
        """blinded_message at 0, client_public_keyshare at 64."""
        _, _, ke1 = _start()
        for offset in (0, 64):
            for bad in INVALID_ELEMENTS:
                server = ServerLogin(SETUP, None, b"alice", rng=CountingRandom(2))
                self.assertRaises(OpaqueError, server.respond, _replace(ke1, offset, bad))

    def test_ke2_sizes(self):
        client, server, ke1 = _start()
        ke2 = server.respond(ke1)
        for size in (0, 1, HEADER, KE2_SIZE, len(ke2) - 1, len(ke2) + 1, 10000):
            client, _, _ = _start()
            self.assertRaises(OpaqueError, client.finish, (ke2 * 40)[:size])

    def test_ke2_invalid_elements(self):
        """evaluated_message at 0, server_public_keyshare at 224 (after the header)."""
        _, server, ke1 = _start()
        ke2 = server.respond(ke1)
        for offset in (0, 224):
            for bad in INVALID_ELEMENTS:
                client, _, _ = _start()
                self.assertRaises(OpaqueError, client.finish,
                                  _replace(ke2, HEADER + offset, bad))

    def test_ke3_sizes(self):
        for size in (0, 1, KE3_SIZE - 1, KE3_SIZE + 1, 1000):
            client, server, ke1 = _start()
            result = client.finish(server.respond(ke1))
            self.assertRaises(OpaqueError, server.finish, (result.ke3 * 20)[:size])

    def test_registration_messages(self):
        for bad in INVALID_ELEMENTS:
            self.assertRaises(OpaqueError, registration_response, SETUP, bad, b"alice")
            client = RegistrationClient("pw", RECORD.ksf, CountingRandom(4))
            client.start()
            good = registration_response(SETUP, RegistrationRequest(
                oprf.hash_to_group(b"x")).to_bytes(), b"alice")
            self.assertRaises(OpaqueError, client.finish, bad + good[32:])
            client = RegistrationClient("pw", RECORD.ksf, CountingRandom(4))
            client.start()
            self.assertRaises(OpaqueError, client.finish, good[:32] + bad)
        valid = group.scalar_mult_gen(b"\x01" + bytes(31))
        for size in (0, 31, 33, 63, 65, 96):
            self.assertRaises(OpaqueError, RegistrationRequest.from_bytes, (valid * 3)[:size])
            self.assertRaises(OpaqueError, RegistrationResponse.from_bytes, (valid * 3)[:size])


class KsfHeaderTests(unittest.TestCase):
    def test_out_of_bounds(self):
        """A cost beyond the client's limits is refused before any work."""
        _, server, ke1 = _start()
        ke2 = server.respond(ke1)
        for params in (Argon2idParameters(4 * 1024 * 1024, 1000, 255),
                       Argon2idParameters(8, 1, 1), Argon2idParameters(0, 0, 0)):
            client, _, _ = _start()
            self.assertRaises(OpaqueError, client.finish, params.encode() + ke2[HEADER:])

    def test_changed_within_bounds(self):
        """Another acceptable cost: the stretched password and the preamble
        change, so KE2 fails."""
        _, server, ke1 = _start()
        ke2 = server.respond(ke1)
        client, _, _ = _start()
        header = Argon2idParameters(72, 1, 1).encode()
        self.assertRaises(OpaqueError, client.finish, header + ke2[HEADER:])

    def test_header_bound_into_preamble(self):
        """The server's MAC covers the header: recomputing the 3DH keys with
        another context gives another MAC."""
        context = b"twisted-keyx" + RECORD.ksf.encode()
        keys = ake.derive_keys(b"\x01" * 96, ake.preamble(context, b"c", b"k", b"s", b"r",
                                                          b"n", b"p"))
        other = ake.derive_keys(b"\x01" * 96, ake.preamble(context[:-1] + b"\x02", b"c", b"k",
                                                           b"s", b"r", b"n", b"p"))
        self.assertNotEqual(keys.server_mac, other.server_mac)


class WrongPasswordTests(unittest.TestCase):
    def test_client_fails_on_ke2(self):
        client = ClientLogin("wrong", CHEAP_LIMITS, CountingRandom(60))
        server = ServerLogin(SETUP, RECORD, b"alice", rng=CountingRandom(61))
        ke2 = server.respond(client.start())
        self.assertRaises(OpaqueError, client.finish, ke2)

    def test_server_fails_on_ke3(self):
        """A client with the wrong password that ignores its own checks:
        it derives a key pair from what it unmasked and sends the KE3 that
        gives; the server's MAC check refuses it."""
        password = b"wrong"
        rng = CountingRandom(70)
        blind, blinded = oprf.blind(password, rng)
        client_nonce, client_secret, keyshare = ake.client_start(rng)
        ke1 = KE1(blinded, client_nonce, keyshare).to_bytes()
        server = ServerLogin(SETUP, RECORD, b"alice", rng=CountingRandom(71))
        message = server.respond(ke1)
        ke2 = KE2.from_bytes(message[HEADER:])
        response = ke2.credential_response
        rwd = credentials.randomized_password(password, blind, response.evaluated_message,
                                              RECORD.ksf)
        masking_key = primitives.expand(rwd, b"MaskingKey", 64)
        unmasked = primitives.xor(credentials._pad(masking_key, response.masking_nonce),
                                  response.masked_response)
        seed = primitives.expand(rwd, unmasked[32:64] + b"PrivateKey", 32)
        client_private_key, client_public_key = envelope.derive_diffie_hellman_key_pair(seed)
        ikm = ake.client_ikm(client_secret, client_private_key, SETUP.server_public_key,
                             ke2.server_public_keyshare)
        preamble = ake.preamble(
            DEFAULT_CONTEXT + message[:HEADER], client_public_key, ke1, SETUP.server_public_key,
            response.to_bytes(), ke2.server_nonce, ke2.server_public_keyshare,
        )
        keys = ake.derive_keys(ikm, preamble)
        self.assertNotEqual(keys.server_mac, ke2.server_mac)
        self.assertRaises(OpaqueError, server.finish, keys.client_mac)

    def test_replayed_ke3(self):
        """A KE3 from an earlier session does not finish a new one."""
        client, server, ke1 = _start(80)
        old = client.finish(server.respond(ke1)).ke3
        client, server, ke1 = _start(90)
        client.finish(server.respond(ke1))
        self.assertRaises(OpaqueError, server.finish, old)


def _mutate(data, position, xor_byte):
    position %= len(data)
    return data[:position] + bytes([data[position] ^ xor_byte]) + data[position + 1:]


class PropertyTests(unittest.TestCase):
    """Any one byte changed in KE1, KE2 or KE3: the login does not complete;
    every failure is OpaqueError."""

    @settings(max_examples=60, deadline=None)
    @given(which=st.sampled_from(["ke1", "ke2", "ke3"]), position=st.integers(0, 400),
           xor_byte=st.integers(1, 255))
    def test_one_byte_changed(self, which, position, xor_byte):
        client, server, ke1 = _start()
        try:
            if which == "ke1":
                ke1 = _mutate(ke1, position, xor_byte)
            ke2 = server.respond(ke1)
            if which == "ke2":
                ke2 = _mutate(ke2, position, xor_byte)
            ke3 = client.finish(ke2).ke3
            if which == "ke3":
                ke3 = _mutate(ke3, position, xor_byte)
            server.finish(ke3)
        except OpaqueError:
            return
        self.fail(f"a changed {which} went through")

    @settings(max_examples=60, deadline=None)
    @given(data=st.binary(max_size=400))
    def test_garbage(self, data):
        """Random bytes as any message: OpaqueError, nothing else."""
        client, server, ke1 = _start()
        for call in (server.respond, client.finish):
            try:
                call(data)
            except OpaqueError:
                pass
            else:
                self.assertEqual(len(data), KE1_SIZE)
