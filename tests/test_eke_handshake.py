"""The EKE state machines, driven directly (no I/O), with deterministic
randomness so that the wire bytes can be checked exactly."""

import base64

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from twisted.trial import unittest

from twisted_keyx.eke import crypto, messages
from twisted_keyx.eke.handshake import (
    AuthenticationFailed,
    BadKdfParameters,
    UnexpectedReply,
    EKEClientState,
    EKEClientHandshake,
    EKEServerHandshake,
    MalformedMessage,
    EKEServerState,
    UnknownUser,
)
from twisted_keyx.service.userfile import DecoyUsers
from twisted_keyx.core.transcript import Transcript, derive_session_key

from tests.helpers import (
    PASSWORD,
    TEST_LIMITS,
    RecordingRandom,
    Users,
    expected_box,
    expected_password_key,
    flip,
    make_user,
    open_expected_box,
    rsa_key,
    unknown_algorithm_spki,
)

ALICE = make_user("alice")
USERS = Users(alice=ALICE)


def server(decoys=None, random=None):
    return EKEServerHandshake(USERS.lookup, decoys=decoys, random_bytes=random or RecordingRandom(b"s"))


def client(password=PASSWORD, user="alice", random=None, limits=TEST_LIMITS):
    return EKEClientHandshake(
        user, password, kdf_limits=limits, random_bytes=random or RecordingRandom(b"c"),
        rsa_key_factory=rsa_key,
    )


def run(server, client, tamper=None):
    """Run both machines; ``tamper(step, line)`` may change any line.
    Return the lines as sent, by step number."""
    tamper = tamper or (lambda step, line: line)
    lines = {}
    line, step = client.start(), 1
    while line is not None:
        line = tamper(step, line)
        lines[step] = line
        line = server.receive(line) if step % 2 else client.receive(line)
        step += 1
    return lines


class SuccessTests(unittest.TestCase):
    def test_both_sides_agree(self):
        s, c = server(), client()
        run(s, c)
        self.assertIs(s.state, EKEServerState.DONE)
        self.assertIs(c.state, EKEClientState.DONE)
        self.assertEqual(len(s.result.session_key), 32)
        self.assertEqual(s.result.session_key, c.result.session_key)
        self.assertEqual(s.result.transcript_hash, c.result.transcript_hash)
        self.assertEqual(s.result.chat_keys, c.result.chat_keys)
        self.assertNotEqual(
            s.result.chat_keys.client_to_server, s.result.chat_keys.server_to_client
        )
        self.assertEqual(s.result.user, "alice")

    def test_exact_lines(self):
        """Every line, byte for byte, recomputed from the documented format."""
        srand, crand = RecordingRandom(b"s"), RecordingRandom(b"c")
        s, c = server(random=srand), client(random=crand)
        lines = run(s, c)
        user = "alice"
        self.assertEqual(lines[1], b"alice")
        salt_b64 = base64.b64encode(ALICE.salt)
        self.assertEqual(lines[2], b"yes " + salt_b64 + b" scrypt 16 2 1")
        pw_key = expected_password_key(PASSWORD, ALICE.salt, ALICE.kdf)
        self.assertEqual(pw_key, ALICE.key)
        der = crypto.public_key_der(rsa_key())
        self.assertEqual(len(der), 294)
        # client randomness: nonce 3, NC, nonce 5, nonce 7
        nonce3, nc, nonce5, nonce7 = crand.handed
        self.assertEqual(lines[3], expected_box(pw_key, 3, user, der, nonce3))
        # server randomness: Ks, nonce 4, NS, nonce 6, nonce 8
        ks, nonce4, ns, nonce6, nonce8 = srand.handed
        self.assertEqual(s.result.session_key, ks)
        sealed_ks = open_expected_box(pw_key, 4, user, lines[4])
        self.assertEqual(base64.b64decode(lines[4])[:12], nonce4)
        oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
        self.assertEqual(rsa_key().decrypt(sealed_ks, oaep), ks)
        self.assertEqual(lines[5], expected_box(ks, 5, user, nc, nonce5))
        self.assertEqual(lines[6], expected_box(ks, 6, user, nc + ns, nonce6))
        self.assertEqual(lines[7], expected_box(ks, 7, user, ns, nonce7))
        self.assertEqual(lines[8], expected_box(ks, 8, user, b"Authentication success", nonce8))
        for step, line in lines.items():
            if step >= 3:
                self.assertEqual(len(base64.b64decode(line)), messages.BOX_SIZES[step])
        transcript = Transcript()
        for step in sorted(lines):
            transcript.add(lines[step])
        self.assertEqual(s.result.transcript_hash, transcript.digest())
        self.assertEqual(
            s.result.chat_keys.client_to_server,
            derive_session_key(ks, b"twisted-keyx eke chat client to server v1", transcript.digest()),
        )

    def test_fresh_keys_per_session(self):
        results = []
        for _ in range(2):
            s = EKEServerHandshake(USERS.lookup)
            c = EKEClientHandshake("alice", PASSWORD, kdf_limits=TEST_LIMITS, rsa_key_factory=rsa_key)
            run(s, c)
            results.append(s.result)
        self.assertNotEqual(results[0].session_key, results[1].session_key)

    def test_password_is_normalized(self):
        """The NFC and NFD spellings of a password are the same password."""
        user = make_user("bob", password="caf\u00e9")
        s = EKEServerHandshake(Users(bob=user).lookup)
        c = client(password="cafe\u0301", user="bob")
        run(s, c)
        self.assertTrue(c.finished)


class WrongPasswordTests(unittest.TestCase):
    def test_fails_at_the_nonce_step_with_the_generic_reply(self):
        s, c = server(), client(password="wrong")
        lines = {1: c.start()}
        lines[2] = s.receive(lines[1])
        lines[3] = c.receive(lines[2])
        lines[4] = s.receive(lines[3])
        # Step 4 is random bytes of a real step 4's size: nothing shows yet.
        self.assertIs(s.state, EKEServerState.AWAIT_CLIENT_NONCE)
        self.assertEqual(len(lines[4]), messages.base64_length(messages.BOX_SIZES[4]))
        lines[5] = c.receive(lines[4])
        self.assertIs(c.state, EKEClientState.AWAIT_NONCES)
        self.assertEqual(len(lines[5]), messages.base64_length(messages.BOX_SIZES[5]))
        with self.assertRaises(AuthenticationFailed) as caught:
            s.receive(lines[5])
        self.assertEqual(caught.exception.reply, b"authentication failed")
        self.assertIn("wrong password for user 'alice'", caught.exception.reason)
        self.assertIs(s.state, EKEServerState.FAILED)
        self.assertIsNone(s.result)
        reply = caught.exception.reply
        with self.assertRaises(AuthenticationFailed) as caught:
            c.receive(reply)
        self.assertEqual(caught.exception.reason, "wrong password or unknown user")
        self.assertIs(c.state, EKEClientState.FAILED)
        self.assertIsNone(c.result)


class UnknownUserTests(unittest.TestCase):
    def test_no_and_close_by_default(self):
        s, c = server(), client(user="mallory")
        line = c.start()
        with self.assertRaises(UnknownUser) as caught:
            s.receive(line)
        self.assertEqual(caught.exception.reply, b"no")
        self.assertIs(s.state, EKEServerState.FAILED)
        with self.assertRaises(UnknownUser):
            c.receive(b"no")
        self.assertIs(c.state, EKEClientState.FAILED)

    def test_hidden_unknown_user_looks_like_a_wrong_password(self):
        decoys = DecoyUsers(secret=b"k" * 32)
        s = server(decoys=decoys)
        c = client(user="mallory")
        answer = s.receive(c.start())
        salt = crypto.decoy_salt(b"k" * 32, "mallory")
        self.assertEqual(
            answer, b"yes " + base64.b64encode(salt) + b" scrypt 32768 8 1"
        )
        # The same name gets the same answer every time.
        self.assertEqual(server(decoys=decoys).receive(b"mallory"), answer)
        self.assertNotEqual(server(decoys=decoys).receive(b"mallor"), answer)
        # Skip the client's 32 MiB scrypt: any step 3 of the right size.
        step4 = s.receive(base64.b64encode(bytes(messages.BOX_SIZES[3])))
        self.assertEqual(len(step4), messages.base64_length(messages.BOX_SIZES[4]))
        with self.assertRaises(AuthenticationFailed) as caught:
            s.receive(base64.b64encode(bytes(messages.BOX_SIZES[5])))
        self.assertEqual(caught.exception.reply, b"authentication failed")
        self.assertIn("unknown user 'mallory' (hidden)", caught.exception.reason)

    def test_hiding_does_not_change_known_users(self):
        s = server(decoys=DecoyUsers())
        c = client()
        run(s, c)
        self.assertTrue(s.finished)


class TamperingTests(unittest.TestCase):
    """One changed character in any step ends the handshake with the generic
    failure; where it shows depends on the step."""

    def run_tampered(self, bad_step):
        s, c = server(), client()
        tamper = lambda step, line: flip(line) if step == bad_step else line  # noqa: E731
        with self.assertRaises(AuthenticationFailed) as caught:
            run(s, c, tamper)
        self.assertIsNone(c.result)
        if bad_step < 8:
            self.assertIsNone(s.result)
        return s, c, caught.exception

    def test_step_3_fails_at_the_nonce_step(self):
        s, c, failure = self.run_tampered(3)
        self.assertIs(s.state, EKEServerState.FAILED)
        self.assertIs(c.state, EKEClientState.AWAIT_NONCES)
        self.assertEqual(failure.reply, b"authentication failed")
        self.assertIn("step 3 does not decrypt", failure.reason)

    def test_step_4_fails_at_the_nonce_step(self):
        s, c, failure = self.run_tampered(4)
        # The client noticed and sent random bytes; the server decides.
        self.assertIs(s.state, EKEServerState.FAILED)
        self.assertEqual(failure.reason, "step 5 does not decrypt under Ks (altered in transit?)")

    def test_step_5(self):
        s, c, failure = self.run_tampered(5)
        self.assertIs(s.state, EKEServerState.FAILED)
        self.assertEqual(failure.reply, b"authentication failed")
        self.assertEqual(failure.reason, "step 5 does not decrypt under Ks (altered in transit?)")

    def test_step_6(self):
        s, c, failure = self.run_tampered(6)
        self.assertIs(c.state, EKEClientState.FAILED)
        self.assertIs(s.state, EKEServerState.AWAIT_SERVER_NONCE)
        self.assertEqual(failure.reason, "step 6 does not decrypt under Ks (altered in transit?)")

    def test_step_7(self):
        s, c, failure = self.run_tampered(7)
        self.assertIs(s.state, EKEServerState.FAILED)
        self.assertEqual(failure.reply, b"authentication failed")
        self.assertEqual(failure.reason, "step 7 does not decrypt under Ks (altered in transit?)")

    def test_step_8(self):
        s, c, failure = self.run_tampered(8)
        self.assertIs(c.state, EKEClientState.FAILED)
        self.assertTrue(s.finished)  # the server cannot know; the chat will fail
        self.assertEqual(failure.reason, "step 8 does not decrypt under Ks (altered in transit?)")

    def test_box_replayed_at_another_step(self):
        """Step 5 and step 7 boxes have the same size; the associated data
        stops one standing in for the other."""
        s, c = server(), client()
        lines = {1: c.start()}
        for step in range(2, 6):
            lines[step] = (s if step % 2 == 0 else c).receive(lines[step - 1])
        lines[6] = s.receive(lines[5])
        with self.assertRaises(AuthenticationFailed) as caught:
            s.receive(lines[5])  # step 5's box again, as step 7
        self.assertEqual(caught.exception.reason,
                         "step 7 does not decrypt under Ks (altered in transit?)")


class NonceTests(unittest.TestCase):
    def handshake_to_step(self, last_step, srand=None, crand=None):
        s, c = server(random=srand), client(random=crand)
        lines = {1: c.start()}
        for step in range(2, last_step + 1):
            lines[step] = (s if step % 2 == 0 else c).receive(lines[step - 1])
        return s, c, lines

    def test_wrong_nc(self):
        srand = RecordingRandom(b"s")
        s, c, lines = self.handshake_to_step(5, srand=srand)
        ks = srand.handed[0]
        bad = expected_box(ks, 6, "alice", bytes(16) + bytes(range(16)), bytes(12))
        with self.assertRaises(AuthenticationFailed) as caught:
            c.receive(bad)
        self.assertEqual(caught.exception.reason, "step 6: the server did not return NC")
        self.assertIs(c.state, EKEClientState.FAILED)

    def test_wrong_ns(self):
        srand = RecordingRandom(b"s")
        s, c, lines = self.handshake_to_step(6, srand=srand)
        ks = srand.handed[0]
        bad = expected_box(ks, 7, "alice", bytes(16), bytes(12))
        with self.assertRaises(AuthenticationFailed) as caught:
            s.receive(bad)
        self.assertEqual(caught.exception.reply, b"authentication failed")
        self.assertEqual(caught.exception.reason, "step 7: the client did not return NS")
        self.assertIsNone(s.result)

    def test_the_right_ns_under_a_correct_box_succeeds(self):
        """The counterpart of test_wrong_ns: the test's own box is accepted
        when it holds the right NS."""
        srand = RecordingRandom(b"s")
        s, c, lines = self.handshake_to_step(6, srand=srand)
        ks, ns = srand.handed[0], srand.handed[2]
        s.receive(expected_box(ks, 7, "alice", ns, bytes(12)))
        self.assertTrue(s.finished)


class MalformedServerInputTests(unittest.TestCase):
    """What the server does with lines no step allows."""

    def at_step(self, step):
        s, c = server(), client()
        lines = {1: c.start()}
        for n in range(2, step):
            lines[n] = (s if n % 2 == 0 else c).receive(lines[n - 1])
        return s

    def assertMalformed(self, s, line, reason):
        with self.assertRaises(MalformedMessage) as caught:
            s.receive(line)
        self.assertEqual(caught.exception.reply, b"authentication failed")
        self.assertEqual(caught.exception.reason, reason)
        self.assertIs(s.state, EKEServerState.FAILED)

    def test_user_name_not_utf8(self):
        self.assertMalformed(server(), b"al\xffce", "step 1: user name is not UTF-8")

    def test_user_name_too_long(self):
        self.assertMalformed(server(), b"a" * 65, "step 1: user name longer than 64 bytes")

    def test_user_name_of_64_multibyte_bytes_is_legal(self):
        name = "\u00e9" * 32  # 64 bytes of UTF-8
        self.assertEqual(len(name.encode()), 64)
        with self.assertRaises(UnknownUser):
            server().receive(name.encode())

    def test_user_name_empty(self):
        self.assertMalformed(server(), b"", "step 1: a user name has 1 to 64 bytes, not 0")

    def test_user_name_with_space_or_control(self):
        for line in (b"al ice", b"alice\r", b"a\x1bb", b"\xc2\xa0x"):
            self.assertMalformed(server(), line,
                                 "step 1: a user name is printable and has no whitespace")

    def test_garbage_base64(self):
        for step in (3, 5, 7):
            self.assertMalformed(self.at_step(step), b"!!!!", f"step {step}: not base64")

    def test_non_canonical_base64(self):
        line = base64.b64encode(bytes(messages.BOX_SIZES[5]))
        # 44 bytes: "AA=" at the end, the last "A" carrying 2 unused bits.
        self.assertTrue(line.endswith(b"AA="))
        bad = line[:-2] + b"B="
        self.assertEqual(base64.b64decode(bad), base64.b64decode(line))
        self.assertMalformed(self.at_step(5), bad, "step 5: not canonical base64")

    def test_wrong_size(self):
        self.assertMalformed(
            self.at_step(5), base64.b64encode(bytes(45)), "step 5: 45 bytes where 44 are expected"
        )

    def test_line_after_done(self):
        s, c = server(), client()
        run(s, c)
        self.assertMalformed(s, b"alice", "a line while authenticated")

    def test_public_key_that_is_not_rsa_2048(self):
        """A client that knows the password but sends a bad pk: refused at once."""
        s = self.at_step(3)
        small = crypto.rsa.generate_private_key(public_exponent=65537, key_size=1024)
        der = crypto.public_key_der(small)
        # Pad to the legal size so that only the key check can object.
        der = der + bytes(messages.RSA_PUBLIC_KEY_DER_SIZE - len(der))
        line = expected_box(ALICE.key, 3, "alice", der, bytes(12))
        with self.assertRaises(AuthenticationFailed) as caught:
            s.receive(line)
        self.assertTrue(caught.exception.reason.startswith("step 3: "))
        self.assertIs(s.state, EKEServerState.FAILED)

    def test_public_key_of_an_algorithm_cryptography_does_not_know(self):
        """An unknown algorithm OID in step 3 is a refusal, not a traceback."""
        s = self.at_step(3)
        line = expected_box(ALICE.key, 3, "alice", unknown_algorithm_spki(), bytes(12))
        with self.assertRaises(AuthenticationFailed) as caught:
            s.receive(line)
        self.assertEqual(caught.exception.reason,
                         "step 3: not a public key: unknown key algorithm")
        self.assertIs(s.state, EKEServerState.FAILED)


class ClientInputTests(unittest.TestCase):
    """What the client does with server lines no step allows."""

    def test_failure_reply_at_any_step(self):
        c = client()
        c.start()
        with self.assertRaises(AuthenticationFailed) as caught:
            c.receive(b"authentication failed")
        self.assertEqual(
            caught.exception.reason,
            "the server refused while the client was awaiting yes or no (step 2)",
        )

    def test_garbage(self):
        for line in (b"maybe", b"yes", b"hello there"):
            c = client()
            c.start()
            with self.assertRaises(UnexpectedReply):
                c.receive(line)
            self.assertIs(c.state, EKEClientState.FAILED)

    def test_malformed_yes(self):
        salt = base64.b64encode(bytes(16))
        for line, reason in [
            (b"yes AAAA scrypt 16 2 1", "step 2: 3 bytes where 16 are expected"),
            (b"yes " + salt + b" argon2 16 2 1", "step 2: unknown password KDF"),
            (b"yes " + salt + b" scrypt 016 2 1", "step 2: not a decimal number"),
            (b"yes " + salt + b" scrypt -16 2 1", "step 2: not a decimal number"),
            (b"yes " + salt + b" scrypt 16 2", "step 2: not yes <salt> scrypt <n> <r> <p>"),
        ]:
            c = client()
            c.start()
            with self.assertRaises(UnexpectedReply) as caught:
                c.receive(line)
            self.assertEqual(caught.exception.reason, reason)

    def test_kdf_limits(self):
        salt = base64.b64encode(bytes(16))
        for params in (b"1048576 16 1", b"2097152 1 1", b"16 2 5", b"15 2 1", b"16 2 0"):
            c = client()
            c.start()
            with self.assertRaises(BadKdfParameters):
                c.receive(b"yes " + salt + b" scrypt " + params)
        # The default limits refuse a cheap KDF: a fake server could brute-force it.
        c = client(limits=crypto.DEFAULT_KDF_LIMITS)
        c.start()
        with self.assertRaises(BadKdfParameters) as caught:
            c.receive(b"yes " + salt + b" scrypt 1024 8 1")
        self.assertIn("needs 1024 KiB", caught.exception.reason)

    def test_default_limits_accept_the_default_kdf(self):
        self.assertIs(
            crypto.DEFAULT_KDF_LIMITS.check(crypto.DEFAULT_SCRYPT), crypto.DEFAULT_SCRYPT
        )

    def test_bad_session_key_box_size(self):
        c = client()
        c.start()
        c.receive(b"yes " + base64.b64encode(ALICE.salt) + b" scrypt 16 2 1")
        with self.assertRaises(UnexpectedReply) as caught:
            c.receive(base64.b64encode(bytes(100)))
        self.assertEqual(caught.exception.reason, "step 4: 100 bytes where 284 are expected")

    def test_start_twice(self):
        c = client()
        c.start()
        self.assertRaises(RuntimeError, c.start)

    def test_bad_user_name(self):
        self.assertRaises(messages.MalformedLine, client, user="two words")
