"""The RFC test vectors: RFC 9497's ristretto255-SHA512 OPRF (mode OPRF)
and RFC 9807's OPAQUE-3DH over ristretto255, real and fake, through the same
objects the daemon will use (vector sources: tests/data/README)."""

from twisted.trial import unittest

from tests.opaque_helpers import ScriptedRandom, load_json, opaque_vectors, unhex
from twisted_keyx.opaque import OpaqueError, ake, credentials, envelope, group, oprf, primitives
from twisted_keyx.opaque.ksf import IDENTITY, FixedKsf
from twisted_keyx.opaque.login import ClientLogin, ServerLogin
from twisted_keyx.opaque.messages import Envelope
from twisted_keyx.opaque.records import RegistrationRecord, ServerSetup
from twisted_keyx.opaque.registration import RegistrationClient, registration_response


class OPRFVectorTests(unittest.TestCase):
    """RFC 9497 appendix A.1.1, ristretto255-SHA512, OPRF mode."""

    def setUp(self):
        self.suite = load_json("oprf-rfc9497-ristretto255-sha512.json")
        self.assertEqual(self.suite["mode"], 0)
        self.assertEqual(len(self.suite["vectors"]), 2)

    def test_context(self):
        """groupDST is HashToGroup- || CreateContextString(0x00, identifier)."""
        self.assertEqual(b"HashToGroup-" + oprf.CONTEXT_STRING,
                         bytes.fromhex(self.suite["groupDST"]))

    def test_derive_key_pair(self):
        sk, pk = oprf.derive_key_pair(unhex(self.suite, "seed"), unhex(self.suite, "keyInfo"))
        self.assertEqual(sk.hex(), self.suite["skSm"])
        self.assertEqual(pk, group.scalar_mult_gen(sk))

    def test_vectors(self):
        sk = unhex(self.suite, "skSm")
        for vector in self.suite["vectors"]:
            data = unhex(vector, "Input")
            rng = ScriptedRandom(unhex(vector, "Blind"))
            blind, blinded = oprf.blind(data, rng)
            self.assertEqual(blind.hex(), vector["Blind"])
            self.assertEqual(blinded.hex(), vector["BlindedElement"])
            evaluated = oprf.blind_evaluate(sk, blinded)
            self.assertEqual(evaluated.hex(), vector["EvaluationElement"])
            self.assertEqual(oprf.finalize(data, blind, evaluated).hex(), vector["Output"])


def _identities(inputs):
    server = unhex(inputs, "server_identity") if "server_identity" in inputs else None
    client = unhex(inputs, "client_identity") if "client_identity" in inputs else None
    return server, client


def _setup(inputs, fake=None):
    """The vector's server setup; ``fake`` is the record for unknown users."""
    if fake is None:
        fake = RegistrationRecord(group.scalar_mult_gen(b"\x01" + bytes(31)), bytes(64),
                                  Envelope(bytes(32), bytes(64)), IDENTITY)
    return ServerSetup(unhex(inputs, "oprf_seed"), unhex(inputs, "server_private_key"),
                       unhex(inputs, "server_public_key"), IDENTITY, fake).check()


class RealVectorTests(unittest.TestCase):
    """RFC 9807 appendix C.1, vectors 1 and 2 (ristretto255, identity KSF)."""

    def setUp(self):
        self.vectors, _ = opaque_vectors()
        self.assertEqual(len(self.vectors), 2)

    def _register(self, vector):
        inputs, mids, outputs = vector["inputs"], vector["intermediates"], vector["outputs"]
        server_identity, client_identity = _identities(inputs)
        setup = _setup(inputs)
        rng = ScriptedRandom(unhex(inputs, "blind_registration"), unhex(inputs, "envelope_nonce"))
        client = RegistrationClient(unhex(inputs, "password"), IDENTITY, rng,
                                    server_identity, client_identity)
        request = client.start()
        self.assertEqual(request.hex(), outputs["registration_request"])
        response = registration_response(setup, request, unhex(inputs, "credential_identifier"))
        self.assertEqual(response.hex(), outputs["registration_response"])
        record, export_key = client.finish(response)
        self.assertTrue(rng.done())
        self.assertEqual(record.to_bytes().hex(), outputs["registration_upload"])
        self.assertEqual(record.client_public_key.hex(), mids["client_public_key"])
        self.assertEqual(record.masking_key.hex(), mids["masking_key"])
        self.assertEqual(record.envelope.to_bytes().hex(), mids["envelope"])
        self.assertEqual(export_key.hex(), outputs["export_key"])
        return setup, record

    def test_registration(self):
        for vector in self.vectors:
            self._register(vector)

    def test_oprf_key(self):
        for vector in self.vectors:
            inputs = vector["inputs"]
            key = credentials.oprf_key(unhex(inputs, "oprf_seed"),
                                       unhex(inputs, "credential_identifier"))
            self.assertEqual(key.hex(), vector["intermediates"]["oprf_key"])

    def test_login(self):
        for vector in self.vectors:
            inputs, outputs = vector["inputs"], vector["outputs"]
            context = unhex(vector["config"], "Context")
            server_identity, client_identity = _identities(inputs)
            setup, record = self._register(vector)
            client_rng = ScriptedRandom(
                unhex(inputs, "blind_login"), unhex(inputs, "client_nonce"),
                unhex(inputs, "client_keyshare_seed"),
            )
            client = ClientLogin(unhex(inputs, "password"), FixedKsf(IDENTITY), client_rng,
                                 context, server_identity, client_identity)
            server_rng = ScriptedRandom(
                unhex(inputs, "masking_nonce"), unhex(inputs, "server_nonce"),
                unhex(inputs, "server_keyshare_seed"),
            )
            server = ServerLogin(setup, record, unhex(inputs, "credential_identifier"), context,
                                 server_rng, server_identity, client_identity)
            ke1 = client.start()
            self.assertEqual(ke1.hex(), outputs["KE1"])
            ke2 = server.respond(ke1)
            self.assertEqual(ke2.hex(), outputs["KE2"])
            result = client.finish(ke2)
            self.assertEqual(result.ke3.hex(), outputs["KE3"])
            self.assertEqual(result.session_key.hex(), outputs["session_key"])
            self.assertEqual(result.export_key.hex(), outputs["export_key"])
            self.assertEqual(result.server_public_key.hex(), inputs["server_public_key"])
            self.assertEqual(server.finish(result.ke3).hex(), outputs["session_key"])
            self.assertTrue(client_rng.done() and server_rng.done())


    def test_intermediates(self):
        """randomized_password, auth_key and the 3DH key schedule's
        handshake_secret, server_mac_key (Km2) and client_mac_key (Km3)."""
        for vector in self.vectors:
            inputs, mids, outputs = vector["inputs"], vector["intermediates"], vector["outputs"]
            server_identity, client_identity = _identities(inputs)
            password = unhex(inputs, "password")
            blind = unhex(inputs, "blind_registration")
            evaluated = bytes.fromhex(outputs["registration_response"])[:32]
            rwd = credentials.randomized_password(password, blind, evaluated, IDENTITY)
            self.assertEqual(rwd.hex(), mids["randomized_password"])
            auth_key = primitives.expand(rwd, unhex(inputs, "envelope_nonce") + b"AuthKey", 64)
            self.assertEqual(auth_key.hex(), mids["auth_key"])

            ke1, ke2 = unhex(outputs, "KE1"), unhex(outputs, "KE2")
            private_keyshare, public_keyshare = envelope.derive_diffie_hellman_key_pair(
                unhex(inputs, "server_keyshare_seed"))
            client_public_key = unhex(mids, "client_public_key")
            ikm = ake.server_ikm(private_keyshare, unhex(inputs, "server_private_key"),
                                 ke1[64:], client_public_key)
            preamble = ake.preamble(
                unhex(vector["config"], "Context"), client_identity or client_public_key, ke1,
                server_identity or unhex(inputs, "server_public_key"), ke2[:192], ke2[192:224],
                public_keyshare,
            )
            self.assertEqual(public_keyshare, ke2[224:256])
            keys = ake.derive_keys(ikm, preamble)
            self.assertEqual(keys.handshake_secret.hex(), mids["handshake_secret"])
            self.assertEqual(keys.km2.hex(), mids["server_mac_key"])
            self.assertEqual(keys.km3.hex(), mids["client_mac_key"])
            self.assertEqual(keys.server_mac, ke2[256:])


class FakeVectorTests(unittest.TestCase):
    """RFC 9807 appendix C.2, fake vector 1 (ristretto255): the KE2 for a
    user without a record, from the setup's fake record."""

    def test_fake_ke2(self):
        _, fakes = opaque_vectors()
        self.assertEqual(len(fakes), 1)
        vector = fakes[0]
        inputs = vector["inputs"]
        context = unhex(vector["config"], "Context")
        server_identity, client_identity = _identities(inputs)
        fake = RegistrationRecord(
            group.deserialize_element(unhex(inputs, "client_public_key")),
            unhex(inputs, "masking_key"), Envelope(bytes(32), bytes(64)), IDENTITY,
        )
        setup = _setup(inputs, fake)
        rng = ScriptedRandom(unhex(inputs, "masking_nonce"), unhex(inputs, "server_nonce"),
                             unhex(inputs, "server_keyshare_seed"))
        server = ServerLogin(setup, None, unhex(inputs, "credential_identifier"), context,
                             rng, server_identity, client_identity)
        self.assertEqual(server.respond(unhex(inputs, "KE1")).hex(), vector["outputs"]["KE2"])
        self.assertTrue(rng.done())


class ExpandMessageTests(unittest.TestCase):
    """RFC 9380 appendix K.3: expand_message_xmd with SHA-512."""

    def test_vectors(self):
        suite = load_json("expand-message-xmd-sha512-rfc9380.json")
        self.assertEqual(len(suite["tests"]), 10)
        dst = suite["DST"].encode("ascii")
        for vector in suite["tests"]:
            length = int(vector["len_in_bytes"], 16)
            out = group.expand_message_xmd(vector["msg"].encode("ascii"), dst, length)
            self.assertEqual(out.hex(), vector["uniform_bytes"])

    def test_limits(self):
        """ell <= 255, len_in_bytes <= 65535, DST <= 255 bytes."""
        self.assertEqual(len(group.expand_message_xmd(b"", b"D", 255 * 64)), 255 * 64)
        self.assertRaises(OpaqueError, group.expand_message_xmd, b"", b"D", 255 * 64 + 1)
        self.assertRaises(OpaqueError, group.expand_message_xmd, b"", b"D" * 256, 32)


class PrimitiveTests(unittest.TestCase):
    def test_xor_matches_bytewise(self):
        import os

        for length in (0, 1, 31, 32, 128):
            a, b = os.urandom(length), os.urandom(length)
            self.assertEqual(primitives.xor(a, b), bytes(x ^ y for x, y in zip(a, b)))
        self.assertEqual(primitives.xor(b"\0\xff", b"\0\x0f"), b"\0\xf0")  # leading zeros kept
        with self.assertRaises(ValueError):
            primitives.xor(b"ab", b"a")

    def test_derive_secret_key_is_derive_key_pairs_first_half(self):
        seed = bytes(range(32))
        self.assertEqual(oprf.derive_secret_key(seed, b"info"), oprf.derive_key_pair(seed, b"info")[0])
