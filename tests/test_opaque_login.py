"""OPAQUE registration and login end to end with Argon2id (cheap costs),
records and the server setup as files, fake records for unknown users."""

import json

from twisted.trial import unittest

from tests.opaque_helpers import (
    CHEAP_ARGON2ID,
    CHEAP_LIMITS,
    CountingRandom,
    ScriptedRandom,
    fixed_setup,
)
from twisted_keyx.opaque import (
    KE1_SIZE,
    KE2_SIZE,
    KE3_SIZE,
    Argon2idParameters,
    ClientLogin,
    OpaqueError,
    RegistrationRecord,
    ServerLogin,
    ServerSetup,
    register,
)
from twisted_keyx.opaque.ksf import DEFAULT_ARGON2ID, DEFAULT_KSF_LIMITS, KsfLimits
from twisted_keyx.opaque.login import ClientLoginState, ServerLoginState


def login(setup, record, password, name=b"alice", limits=CHEAP_LIMITS, seed=100):
    """One login; returns (client, server, ke1, ke2, result or the client's
    OpaqueError)."""
    client = ClientLogin(password, limits, CountingRandom(seed))
    server = ServerLogin(setup, record, name, rng=CountingRandom(seed + 1))
    ke1 = client.start()
    ke2 = server.respond(ke1)
    try:
        result = client.finish(ke2)
    except OpaqueError as e:
        result = e
    return client, server, ke1, ke2, result


class LoginTests(unittest.TestCase):
    def setUp(self):
        self.setup = fixed_setup()
        self.record, self.export_key = register("correct horse", self.setup, b"alice",
                                                rng=CountingRandom(3))

    def test_round_trip(self):
        """The right password: both sides get the same 64-byte session key,
        the client the export key of registration and the server's key."""
        _, server, ke1, ke2, result = login(self.setup, self.record, "correct horse")
        self.assertEqual((len(ke1), len(ke2), len(result.ke3)),
                         (KE1_SIZE, 12 + KE2_SIZE, KE3_SIZE))
        self.assertEqual((KE1_SIZE, KE2_SIZE, KE3_SIZE), (96, 320, 64))
        self.assertEqual(server.finish(result.ke3), result.session_key)
        self.assertEqual(len(result.session_key), 64)
        self.assertEqual(result.export_key, self.export_key)
        self.assertEqual(result.server_public_key, self.setup.server_public_key)

    def test_ksf_header(self):
        """KE2 starts with the record's Argon2id cost."""
        _, _, _, ke2, _ = login(self.setup, self.record, "correct horse")
        self.assertEqual(Argon2idParameters.decode(ke2[:12]), CHEAP_ARGON2ID)

    def test_sessions_differ(self):
        """Fresh randomness, fresh session key."""
        first = login(self.setup, self.record, "correct horse", seed=100)[4]
        second = login(self.setup, self.record, "correct horse", seed=200)[4]
        self.assertNotEqual(first.session_key, second.session_key)
        self.assertEqual(first.export_key, second.export_key)

    def test_password_normalised(self):
        """A str password is its NFC UTF-8: composed and decomposed e-acute
        log in alike."""
        record, _ = register("caf\u00e9", self.setup, b"bob", rng=CountingRandom(5))
        result = login(self.setup, record, "cafe\u0301", name=b"bob")[4]
        self.assertIsInstance(result, tuple)

    def test_text_name(self):
        """A credential identifier given as text is its UTF-8."""
        record, _ = register("pw", self.setup, "bj\u00f6rn", rng=CountingRandom(5))
        result = login(self.setup, record, "pw", name="bj\u00f6rn".encode("utf-8"))[4]
        self.assertIsInstance(result, tuple)

    def test_wrong_password_client(self):
        """A wrong password fails at the client, on KE2."""
        _, server, _, _, result = login(self.setup, self.record, "wrong horse")
        self.assertIsInstance(result, OpaqueError)
        self.assertIn("wrong password", str(result))

    def test_wrong_name(self):
        """Another user's OPRF key: the client fails, as for a wrong password."""
        result = login(self.setup, self.record, "correct horse", name=b"mallory")[4]
        self.assertIsInstance(result, OpaqueError)

    def test_other_server(self):
        """The same record under another server's setup fails at the client."""
        other = fixed_setup(CountingRandom(99))
        result = login(other, self.record, "correct horse")[4]
        self.assertIsInstance(result, OpaqueError)

    def test_client_floor(self):
        """Default client limits refuse the cheap cost a fake server could ask for."""
        result = login(self.setup, self.record, "correct horse", limits=DEFAULT_KSF_LIMITS)[4]
        self.assertIsInstance(result, OpaqueError)
        self.assertIn("accepted", str(result))

    def test_once_and_in_order(self):
        """Each object runs once, in order: any other call is OpaqueError."""
        client = ClientLogin("pw", CHEAP_LIMITS, CountingRandom(1))
        self.assertRaises(OpaqueError, client.finish, b"\0" * client.ke2_size)
        self.assertIs(client.state, ClientLoginState.NEW)
        ke1 = client.start()
        self.assertIs(client.state, ClientLoginState.AWAIT_KE2)
        self.assertRaises(OpaqueError, client.start)
        server = ServerLogin(self.setup, self.record, b"alice", rng=CountingRandom(2))
        self.assertRaises(OpaqueError, server.finish, b"\0" * 64)
        server.respond(ke1)
        self.assertIs(server.state, ServerLoginState.AWAIT_KE3)
        self.assertRaises(OpaqueError, server.respond, ke1)

    def test_states_at_the_end(self):
        client, server, _, _, result = login(self.setup, self.record, "correct horse")
        self.assertIs(client.state, ClientLoginState.DONE)
        server.finish(result.ke3)
        self.assertIs(server.state, ServerLoginState.DONE)
        client, server, _, _, result = login(self.setup, self.record, "wrong")
        self.assertIs(client.state, ClientLoginState.FAILED)
        self.assertRaises(OpaqueError, server.finish, b"\0" * 64)
        self.assertIs(server.state, ServerLoginState.FAILED)

    def test_failed_client_stays_failed(self):
        client, _, _, ke2, result = login(self.setup, self.record, "wrong horse")
        self.assertIsInstance(result, OpaqueError)
        self.assertRaises(OpaqueError, client.finish, ke2)


class UnknownUserTests(unittest.TestCase):
    """RFC 9807 section 6.3.2.2: an unknown user gets a fake response."""

    def setUp(self):
        self.setup = fixed_setup()
        self.record, _ = register("pw", self.setup, b"alice", rng=CountingRandom(3))

    def test_same_sizes_and_header(self):
        real = login(self.setup, self.record, "pw")
        fake = login(self.setup, None, "pw", name=b"nobody")
        self.assertEqual(len(fake[3]), len(real[3]))
        self.assertEqual(fake[3][:12], real[3][:12])
        self.assertIsInstance(fake[4], OpaqueError)

    def test_server_refuses_any_ke3(self):
        server = ServerLogin(self.setup, None, b"nobody", rng=CountingRandom(8))
        server.respond(ClientLogin("pw", CHEAP_LIMITS, CountingRandom(9)).start())
        self.assertRaises(OpaqueError, server.finish, b"\0" * 64)

    def test_fake_uses_same_randomness(self):
        """Same draws from rng (masking_nonce, server_nonce, keyshare seed)
        for a real and a fake record: the same work."""
        ke1 = ClientLogin("pw", CHEAP_LIMITS, CountingRandom(9)).start()
        draws = []
        for record in (self.record, None):
            rng = ScriptedRandom(b"\1" * 32, b"\2" * 32, b"\3" * 32)
            ServerLogin(self.setup, record, b"alice", rng=rng).respond(ke1)
            self.assertTrue(rng.done())
            draws.append(rng.asked)
        self.assertEqual(draws[0], draws[1])


class RecordAndSetupTests(unittest.TestCase):
    def test_record_json_round_trip(self):
        setup = fixed_setup()
        record, _ = register("pw", setup, b"alice", rng=CountingRandom(3))
        text = json.dumps(record.to_json())
        again = RegistrationRecord.from_json(json.loads(text))
        self.assertEqual(again.to_bytes(), record.to_bytes())
        self.assertEqual(again.ksf, CHEAP_ARGON2ID)
        self.assertIsInstance(login(setup, again, "pw")[4], tuple)

    def test_record_json_refused(self):
        setup = fixed_setup()
        good = register("pw", setup, b"alice", rng=CountingRandom(3))[0].to_json()
        bad = [
            [],
            {},
            dict(good, envelope="AAAA"),
            dict(good, masking_key="not base64!"),
            dict(good, client_public_key="A" * 43 + "="),  # the identity
            dict(good, ksf={"name": "scrypt"}),
            dict(good, ksf={"name": "identity"}),
            dict(good, ksf="argon2id"),
            dict(good, ksf={"name": "argon2id", "memory_cost": 64, "iterations": 1}),
            dict(good, ksf={"name": "argon2id", "memory_cost": "64", "iterations": 1, "lanes": 1}),
            dict(good, ksf={"name": "argon2id", "memory_cost": 4, "iterations": 1, "lanes": 1}),
        ]
        for obj in bad:
            self.assertRaises(OpaqueError, RegistrationRecord.from_json, obj)

    def test_setup_file_round_trip(self):
        setup = ServerSetup.generate(CHEAP_ARGON2ID)
        again = ServerSetup.loads(setup.dumps())
        self.assertEqual(again.to_json(), setup.to_json())
        self.assertNotIn(setup.server_private_key.hex(), repr(setup))

    def test_setup_file_refused(self):
        setup = ServerSetup.generate(CHEAP_ARGON2ID)
        obj = setup.to_json()
        other = ServerSetup.generate(CHEAP_ARGON2ID).to_json()
        bad = [
            b"not json",
            b"[]",
            json.dumps(dict(obj, format="other")).encode(),
            json.dumps(dict(obj, server_public_key=other["server_public_key"])).encode(),
            json.dumps(dict(obj, oprf_seed="AAAA")).encode(),
            json.dumps(dict(obj, server_private_key="A" * 43 + "=")).encode(),
            json.dumps(dict(obj, server_private_key="/" * 43 + "=")).encode(),
        ]
        for data in bad:
            self.assertRaises(OpaqueError, ServerSetup.loads, data)

    def test_default_cost(self):
        """New setups default to RFC 9106's second recommendation, which the
        default client limits accept."""
        self.assertEqual(DEFAULT_ARGON2ID, Argon2idParameters(65536, 3, 4))
        self.assertEqual(DEFAULT_KSF_LIMITS.check(DEFAULT_ARGON2ID), DEFAULT_ARGON2ID)
        self.assertEqual(ServerSetup.generate().default_ksf, DEFAULT_ARGON2ID)


class KsfLimitsTests(unittest.TestCase):
    def test_bounds(self):
        limits = KsfLimits()
        accepted = [Argon2idParameters(19 * 1024, 2, 1), Argon2idParameters(256 * 1024, 4, 8)]
        refused = [
            Argon2idParameters(19 * 1024, 1, 1),  # work below the floor
            Argon2idParameters(16 * 1024, 4, 1),  # memory below the floor
            Argon2idParameters(512 * 1024, 1, 1),  # memory above the ceiling
            Argon2idParameters(256 * 1024, 5, 1),  # work above the ceiling
            Argon2idParameters(64 * 1024, 17, 1),  # passes
            Argon2idParameters(64 * 1024, 3, 9),  # lanes
            Argon2idParameters(64 * 1024, 0, 1),
            Argon2idParameters(64 * 1024, 1, 0),
        ]
        for params in accepted:
            self.assertEqual(limits.accept(params.encode()), params)
        for params in refused:
            self.assertRaises(OpaqueError, limits.accept, params.encode())
        self.assertRaises(OpaqueError, limits.accept, b"\0" * 11)
