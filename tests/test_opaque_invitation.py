"""Registration authenticated by an invitation code
(twisted_keyx.opaque.invitation): both sides prove they know the code; a
man in the middle without it gets nothing to guess a password against."""

from twisted.trial import unittest

from tests.opaque_helpers import CHEAP_ARGON2ID, CHEAP_LIMITS, CountingRandom, cheap_setup
from twisted_keyx.core.interfaces import Invitation
from twisted_keyx.opaque import invitation as inv
from twisted_keyx.opaque.errors import OpaqueError
from twisted_keyx.opaque.login import ClientLogin, ServerLogin
from twisted_keyx.opaque.profile import rfc9807
from twisted_keyx.opaque.records import ServerSetup

SETUP = cheap_setup()
CODE = inv.new_code(CountingRandom(40))
NOW = 1_000_000.0


def invitation(code=CODE, state="pending", expires=NOW + 60):
    return Invitation("bob", inv.code_hash(code), NOW - 60, expires, state)


def run(server_invitation, code=CODE, password="pw", setup=SETUP, profile=None):
    options = {"profile": profile} if profile else {}
    client = inv.InvitedRegistrationClient("bob", code, password, ksf_limits=CHEAP_LIMITS,
                                           rng=CountingRandom(1), **options)
    server = inv.InvitedRegistrationServer(setup, "bob", server_invitation, NOW,
                                           rng=CountingRandom(2))
    r1 = client.start()
    r2 = server.respond(r1)
    return client, server, r1, r2


class CodeTests(unittest.TestCase):
    def test_code_has_160_bits_and_normalises(self):
        code = inv.new_code()
        self.assertEqual(len(inv.code_bytes(code)), 20)
        self.assertEqual(len(code), 39)
        self.assertEqual(inv.code_hash(code), inv.code_hash(code.upper().replace("-", " ")))
        self.assertNotEqual(inv.new_code(), code)

    def test_not_a_code(self):
        for bad in ["", "abcd", CODE[:-1], CODE + "a", "0" * 32]:
            with self.assertRaises(OpaqueError):
                inv.code_bytes(bad)


class RegistrationTests(unittest.TestCase):
    def test_register_then_log_in(self):
        client, server, r1, r2 = run(invitation())
        self.assertEqual((len(r1), len(r2)), (inv.R1_SIZE, inv.R2_SIZE))
        r3 = client.finish(r2)
        self.assertEqual(len(r3), inv.R3_SIZE)
        record = server.finish(r3)
        self.assertEqual(record.to_bytes(), client.record.to_bytes())
        self.assertEqual(record.ksf, CHEAP_ARGON2ID)
        self.assertEqual(server.code_hash, inv.code_hash(CODE))
        login = ClientLogin("pw", CHEAP_LIMITS)
        server_login = ServerLogin(SETUP, record, b"bob")
        result = login.finish(server_login.respond(login.start()))
        self.assertEqual(server_login.finish(result.ke3), result.session_key)
        self.assertEqual(result.export_key, client.export_key)

    def test_record_travels_encrypted(self):
        client, server, r1, r2 = run(invitation())
        r3 = client.finish(r2)
        record = client.record.to_bytes()
        for piece in (record[:32], record[32:96], record[96:]):
            self.assertNotIn(piece, r3)

    def test_unusable_invitations_look_alike_and_are_refused(self):
        cases = [None, invitation(state="used"), invitation(state="revoked"),
                 invitation(expires=NOW), invitation(code=inv.new_code())]
        for case in cases:
            client, server, r1, r2 = run(case)
            self.assertEqual(len(r2), inv.R2_SIZE)
            # A pending invitation for another code: the server cannot tell.
            self.assertEqual(server.invited, case is cases[-1])
            with self.assertRaises(inv.InvitationRefused):
                client.finish(r2)
            self.assertIsNone(client.record)

    def test_server_without_the_code_gets_nothing_from_the_client(self):
        # A man in the middle answers r1 with a server of its own.
        client, _, r1, _ = run(invitation())
        impostor = inv.InvitedRegistrationServer(cheap_setup(CountingRandom(99)), "bob",
                                                 invitation(code=inv.new_code()), NOW)
        with self.assertRaises(inv.InvitationRefused):
            client.finish(impostor.respond(r1))

    def test_client_without_the_code_cannot_register(self):
        client, server, r1, r2 = run(invitation())
        r3 = client.finish(r2)
        forged = bytes([r3[0] ^ 1]) + r3[1:]
        with self.assertRaises(OpaqueError):
            server.finish(forged)

    def test_r2_changed_in_transit_is_refused(self):
        client, server, r1, r2 = run(invitation())
        tampered = r2[:40] + bytes([r2[40] ^ 1]) + r2[41:]
        with self.assertRaises(inv.InvitationRefused):
            client.finish(tampered)

    def test_r3_bound_to_its_session(self):
        client, server, r1, r2 = run(invitation())
        r3 = client.finish(r2)
        other = inv.InvitedRegistrationServer(SETUP, "bob", invitation(), NOW,
                                              rng=CountingRandom(77))
        other.respond(r1)
        with self.assertRaises(OpaqueError):
            other.finish(r3)

    def test_rfc_profile_cost_must_match(self):
        profile = rfc9807(b"", CHEAP_ARGON2ID)
        setup = ServerSetup.generate(rng=CountingRandom(8), profile=profile)
        client, server, r1, r2 = run(invitation(), setup=setup, profile=profile)
        self.assertEqual(server.finish(client.finish(r2)).ksf, CHEAP_ARGON2ID)
        other = rfc9807(b"", type(CHEAP_ARGON2ID)(128, 1, 1))
        client, server, r1, r2 = run(invitation(), setup=setup, profile=other)
        with self.assertRaises(OpaqueError):
            client.finish(r2)

    def test_sizes_checked(self):
        client, server, r1, r2 = run(invitation())
        with self.assertRaises(OpaqueError):
            client.finish(r2[:-1])
        with self.assertRaises(OpaqueError):
            inv.InvitedRegistrationServer(SETUP, "bob", None, NOW).respond(r1 + b"x")
