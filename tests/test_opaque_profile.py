"""OPAQUE profiles (twisted_keyx.opaque.profile): plain RFC 9807 with an
operator's context and one cost, beside twisted-keyx-v1; a mismatch is
said as one, not as a wrong password; the password's preparation."""

import io
import os
import tempfile

from twisted.trial import unittest

from tests.opaque_helpers import CHEAP_ARGON2ID, CHEAP_LIMITS, CountingRandom
from twisted_keyx.cli import admin
from twisted_keyx.core.machine import HandshakeFailed
from twisted_keyx.opaque import handshake as hs
from twisted_keyx.opaque._password import password_bytes, prepare_password
from twisted_keyx.opaque.errors import OpaqueError
from twisted_keyx.opaque.ksf import Argon2idParameters
from twisted_keyx.opaque.login import ClientLogin, ServerLogin
from twisted_keyx.opaque.messages import KE2_SIZE
from twisted_keyx.opaque.profile import LEGACY, Profile, rfc9807
from twisted_keyx.opaque.records import ServerSetup
from twisted_keyx.opaque.registration import register
from twisted_keyx.opaque.scheme import create_key_file, load_key_file

RFC = rfc9807(b"my app", CHEAP_ARGON2ID)
RFC_SETUP = ServerSetup.generate(rng=CountingRandom(5), profile=RFC)
LEGACY_SETUP = ServerSetup.generate(CHEAP_ARGON2ID, CountingRandom(6))


class ProfileTextTests(unittest.TestCase):
    def test_text_round_trip(self):
        for profile in (LEGACY, RFC, rfc9807()):
            self.assertEqual(Profile.parse(profile.text()), profile)
            self.assertEqual(Profile.from_json(profile.to_json()), profile)
        self.assertEqual(rfc9807().text(), "rfc9807,m=65536,t=3,p=4,context=")
        self.assertEqual(Profile.parse("rfc9807").context, b"")

    def test_bad_texts(self):
        for text, words in [("rfc", "unknown OPAQUE profile"), ("rfc9807,m=x", "integers"),
                            ("rfc9807,q=1", "not one of"), ("rfc9807,m=1,m=2", "each once"),
                            ("rfc9807,context=%%", "not base64"),
                            ("rfc9807,p=0", "lanes must be 1 to 255")]:
            with self.assertRaises(OpaqueError) as caught:
                Profile.parse(text)
            self.assertIn(words, str(caught.exception))

    def test_key_file_keeps_the_profile_and_old_files_are_legacy(self):
        folder = tempfile.mkdtemp()
        path = os.path.join(folder, "key")
        create_key_file(path, profile=RFC)
        self.assertEqual(load_key_file(path).profile, RFC)
        old = LEGACY_SETUP.to_json()
        del old["profile"]
        self.assertEqual(ServerSetup.from_json(old).profile, LEGACY)

    def test_rfc_setup_records_have_the_profile_cost(self):
        self.assertEqual(RFC_SETUP.default_ksf, CHEAP_ARGON2ID)
        record, _ = register("pw", RFC_SETUP, b"alice")
        self.assertEqual(record.ksf, CHEAP_ARGON2ID)
        other = ServerSetup.generate(CHEAP_ARGON2ID, CountingRandom(1))
        bad = RFC_SETUP.to_json()
        bad["fake_record"] = other.fake_record.to_json()
        bad["fake_record"]["ksf"] = Argon2idParameters(128, 1, 1).to_json()
        with self.assertRaises(OpaqueError):
            ServerSetup.from_json(bad)


def login(setup, client_profile, password="pw", registered="pw"):
    record, export_key = register(registered, setup, b"alice", rng=CountingRandom(2))
    client = ClientLogin(password, CHEAP_LIMITS, CountingRandom(3), profile=client_profile)
    server = ServerLogin(setup, record, b"alice", rng=CountingRandom(4))
    ke2 = server.respond(client.start())
    return ke2, client, server


class RfcLoginTests(unittest.TestCase):
    def test_no_header_and_login(self):
        ke2, client, server = login(RFC_SETUP, RFC)
        self.assertEqual(len(ke2), KE2_SIZE)
        result = client.finish(ke2)
        self.assertEqual(server.finish(result.ke3), result.session_key)

    def test_legacy_has_a_header(self):
        ke2, client, server = login(LEGACY_SETUP, LEGACY)
        self.assertEqual(len(ke2), KE2_SIZE + 12)
        result = client.finish(ke2)
        self.assertEqual(server.finish(result.ke3), result.session_key)

    def test_empty_context_is_a_context(self):
        setup = ServerSetup.generate(rng=CountingRandom(9), profile=rfc9807(b"", CHEAP_ARGON2ID))
        ke2, client, server = login(setup, rfc9807(b"", CHEAP_ARGON2ID))
        result = client.finish(ke2)
        self.assertEqual(server.finish(result.ke3), result.session_key)
        ke2, client, server = login(setup, rfc9807(b"x", CHEAP_ARGON2ID))
        with self.assertRaises(OpaqueError):
            client.finish(ke2)


class MismatchTests(unittest.TestCase):
    """The machines: a profile or context mismatch is a ProfileMismatch
    naming it; a wrong password stays an authentication failure."""

    def run_machines(self, setup, profile, password="pw"):
        record, _ = register("pw", setup, b"alice", rng=CountingRandom(2))
        user = type("U", (), {"record": record})()
        server = hs.OPAQUEServerHandshake(setup, lambda n: user, rng=CountingRandom(3))
        client = hs.OPAQUEClientHandshake("alice", password, ksf_limits=CHEAP_LIMITS,
                                          rng=CountingRandom(4), profile=profile)
        ke2 = server.receive(client.start())
        self.assertLessEqual(len(ke2), client.max_message_length)
        return client.receive(ke2), server

    def test_legacy_client_rfc_server(self):
        with self.assertRaises(hs.ProfileMismatch) as caught:
            self.run_machines(RFC_SETUP, LEGACY)
        self.assertIn("the server speaks the rfc9807 OPAQUE profile, not twisted-keyx-v1",
                      caught.exception.reason)

    def test_rfc_client_legacy_server(self):
        with self.assertRaises(hs.ProfileMismatch) as caught:
            self.run_machines(LEGACY_SETUP, RFC)
        self.assertIn("the server speaks the twisted-keyx-v1 OPAQUE profile",
                      caught.exception.reason)

    def test_other_context(self):
        with self.assertRaises(hs.ProfileMismatch) as caught:
            self.run_machines(RFC_SETUP, rfc9807(b"other", CHEAP_ARGON2ID))
        self.assertIn("another OPAQUE context", caught.exception.reason)

    def test_wrong_password_is_still_one(self):
        ke3, server = self.run_machines(RFC_SETUP, RFC, password="nope")
        with self.assertRaises(hs.AuthenticationFailed):
            server.receive(ke3)

    def test_right_profile_logs_in(self):
        ke3, server = self.run_machines(RFC_SETUP, RFC)
        self.assertEqual(server.receive(ke3), hs.OK)

    def test_eke_port_is_named(self):
        client = hs.OPAQUEClientHandshake("alice", "pw", ksf_limits=CHEAP_LIMITS)
        client.start()
        with self.assertRaises(HandshakeFailed) as caught:
            client.receive(hs.FAILURE_REPLY)
        self.assertIn("is this an EKE port?", caught.exception.reason)


class PasswordTests(unittest.TestCase):
    def test_opaque_string(self):
        self.assertEqual(password_bytes("correct horse"), b"correct horse")
        # Non-ASCII spaces map to U+0020; NFC.
        self.assertEqual(password_bytes("a\u00a0b\u3000c"), b"a b c")
        self.assertEqual(password_bytes("e\u0301"), "\u00e9".encode())
        self.assertEqual(password_bytes("e\u0301".encode()), "\u00e9".encode())

    def test_refused(self):
        for bad in ["", "a\tb", "line\n", b"\xff"]:
            with self.assertRaises(OpaqueError):
                prepare_password(bad)

    def test_same_in_registration_and_login(self):
        ke2, client, server = login(RFC_SETUP, RFC, password="caf\u00e9\u00a0x",
                                    registered="cafe\u0301 x")
        result = client.finish(ke2)
        self.assertEqual(server.finish(result.ke3), result.session_key)


class AdminTests(unittest.TestCase):
    def test_create_and_print(self):
        folder = tempfile.mkdtemp()
        path = os.path.join(folder, "key")
        out, err = io.StringIO(), io.StringIO()
        admin.main(["opaque-profile", "--opaque-key", path, "--create",
                    "rfc9807,m=1024,t=1,p=1,context=YXBw"], out, err)
        self.assertEqual(out.getvalue(), "rfc9807,m=1024,t=1,p=1,context=YXBw\n")
        self.assertEqual(load_key_file(path).profile.context, b"app")
        out = io.StringIO()
        admin.main(["opaque-profile", "--opaque-key", path], out, io.StringIO())
        self.assertEqual(out.getvalue(), "rfc9807,m=1024,t=1,p=1,context=YXBw\n")
