"""EKE primitives and line formats."""

import base64

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from twisted.trial import unittest

from twisted_keyx.chat.records import RecordCipher, RecordError

from twisted_keyx.eke import crypto, messages
from twisted_keyx.eke.messages import MalformedLine

from tests.helpers import rsa_key, unknown_algorithm_spki


class ScryptTests(unittest.TestCase):
    def test_rfc7914_vector(self):
        # RFC 7914 section 12, third vector (the first 32 of its 64 bytes:
        # scrypt ends with PBKDF2, whose output blocks do not depend on dkLen).
        key = crypto.derive_password_key(
            b"password", b"NaCl", crypto.ScryptParameters(n=1024, r=8, p=16)
        )
        self.assertEqual(
            key.hex(), "fdbabe1c9d3472007856e7190d01e9fe7c6ad7cbc8237830e77376634b373162"
        )

    def test_structural_checks(self):
        for n, r, p in [(1, 8, 1), (1000, 8, 1), (16, 0, 1), (16, 8, 0), (2**25, 1, 1)]:
            self.assertRaises(ValueError, crypto.ScryptParameters(n, r, p).check)

    def test_default_costs_32_mib(self):
        self.assertEqual(crypto.DEFAULT_SCRYPT.memory, 32 * 2**20)

    def test_password_normalization(self):
        self.assertEqual(crypto.normalize_password("cafe\u0301"), "caf\u00e9".encode())
        self.assertEqual(crypto.normalize_password(b"abc"), b"abc")


class BoxTests(unittest.TestCase):
    key = bytes(range(32))

    def test_round_trip_and_layout(self):
        box = crypto.seal(self.key, 5, "alice", b"x" * 16, b"N" * 12)
        self.assertEqual(box[:12], b"N" * 12)
        self.assertEqual(len(box), messages.BOX_SIZES[5])
        self.assertEqual(crypto.open_box(self.key, 5, "alice", box), b"x" * 16)

    def test_bound_to_step_user_and_key(self):
        box = crypto.seal(self.key, 5, "alice", b"x" * 16, b"N" * 12)
        for key, step, user in [
            (self.key, 7, "alice"), (self.key, 5, "alicf"), (bytes(32), 5, "alice")
        ]:
            self.assertRaises(crypto.CryptoError, crypto.open_box, key, step, user, box)


class RSAKeyTests(unittest.TestCase):
    def test_accepts_the_clients_key(self):
        der = crypto.public_key_der(rsa_key())
        self.assertEqual(len(der), messages.RSA_PUBLIC_KEY_DER_SIZE)
        key = crypto.load_rsa_public_key(der)
        self.assertEqual(key.public_numbers(), rsa_key().public_key().public_numbers())

    def test_refuses_other_keys(self):
        small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        e3 = rsa.generate_private_key(public_exponent=3, key_size=2048)
        curve = ec.generate_private_key(ec.SECP256R1())
        pkcs1 = rsa_key().public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.PKCS1
        )
        for der, reason in [
            (crypto.public_key_der(small), "not an RSA-2048 key with e = 65537"),
            (crypto.public_key_der(e3), "not an RSA-2048 key with e = 65537"),
            (crypto.public_key_der(curve), "not an RSA public key"),
            (pkcs1, "the public key is not in canonical DER"),
        ]:
            with self.assertRaises(crypto.CryptoError) as caught:
                crypto.load_rsa_public_key(der)
            self.assertEqual(str(caught.exception), reason)
        with self.assertRaises(crypto.CryptoError) as caught:
            crypto.load_rsa_public_key(b"\x30\x03junk")
        self.assertTrue(str(caught.exception).startswith("not a public key"))

    def test_refuses_an_algorithm_cryptography_does_not_know(self):
        # cryptography raises UnsupportedAlgorithm, neither ValueError nor TypeError.
        with self.assertRaises(crypto.CryptoError) as caught:
            crypto.load_rsa_public_key(unknown_algorithm_spki())
        self.assertEqual(str(caught.exception), "not a public key: unknown key algorithm")

    def test_oaep_round_trip(self):
        ciphertext = crypto.rsa_encrypt(rsa_key().public_key(), b"k" * 32)
        self.assertEqual(len(ciphertext), messages.RSA_CIPHERTEXT_SIZE)
        self.assertEqual(crypto.rsa_decrypt(rsa_key(), ciphertext), b"k" * 32)
        self.assertRaises(crypto.CryptoError, crypto.rsa_decrypt, rsa_key(), bytes(256))


class RecordCipherTests(unittest.TestCase):
    def pair(self):
        key = bytes(range(32))
        return RecordCipher(key), RecordCipher(key)

    def test_in_order(self):
        sender, receiver = self.pair()
        records = [sender.seal(b"one"), sender.seal(b"two")]
        self.assertEqual([receiver.open(r) for r in records], [b"one", b"two"])
        # Same text, different record: the counter is the nonce.
        self.assertNotEqual(sender.seal(b"one"), records[0])

    def test_nonce_is_the_counter(self):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        sender, _ = self.pair()
        sender.seal(b"zero")
        self.assertEqual(
            sender.seal(b"one"), AESGCM(bytes(range(32))).encrypt((1).to_bytes(12, "big"), b"one", None)
        )

    def test_replayed_reordered_dropped_altered(self):
        sender, _ = self.pair()
        first, second = sender.seal(b"one"), sender.seal(b"two")
        _, receiver = self.pair()
        receiver.open(first)
        self.assertRaises(RecordError, receiver.open, first)  # replayed
        _, receiver = self.pair()
        self.assertRaises(RecordError, receiver.open, second)  # reordered / dropped
        _, receiver = self.pair()
        altered = bytes([first[0] ^ 1]) + first[1:]
        self.assertRaises(RecordError, receiver.open, altered)
        # A failed record does not advance the counter.
        self.assertEqual(receiver.open(first), b"one")


class DecoySaltTests(unittest.TestCase):
    def test_stable_per_name_and_secret(self):
        a = crypto.decoy_salt(b"s" * 32, "mallory")
        self.assertEqual(len(a), 16)
        self.assertEqual(a, crypto.decoy_salt(b"s" * 32, "mallory"))
        self.assertNotEqual(a, crypto.decoy_salt(b"s" * 32, "mallorz"))
        self.assertNotEqual(a, crypto.decoy_salt(b"t" * 32, "mallory"))


class LineFormatTests(unittest.TestCase):
    def test_strict_base64(self):
        self.assertEqual(messages.decode_item(b"AAEC"), b"\x00\x01\x02")
        for bad in (b"AAE", b"AA-C", b"AA C", b"AAEC\n", b"AA==AA==", b"AB=="):
            self.assertRaises(MalformedLine, messages.decode_item, bad)
        self.assertRaises(MalformedLine, messages.decode_item, b"AAEC", 4)

    def test_user_names(self):
        for good in ("alice", "a", "x" * 64, "\u00e9l\u00e8ve", "o'brien"):
            self.assertEqual(messages.check_user_name(good), good)
        for bad in ("", "x" * 65, "a b", "a\tb", "a\u2028b", "\udcff"):
            self.assertRaises(MalformedLine, messages.check_user_name, bad)

    def test_yes_round_trip(self):
        line = messages.format_yes(b"s" * 16, crypto.DEFAULT_SCRYPT)
        self.assertEqual(line, b"yes " + base64.b64encode(b"s" * 16) + b" scrypt 32768 8 1")
        self.assertEqual(messages.parse_yes(line), (b"s" * 16, 32768, 8, 1))
        self.assertLessEqual(len(line), messages.MAX_ANSWER_LINE)

    def test_classify_server_message(self):
        S = messages.EKEServerMessage
        for line, kind in [
            (b"no", S.NO), (b"authentication failed", S.FAILED), (b"yes x", S.YES),
            (b"QUJD", S.BOX), (b"", S.UNKNOWN), (b"hello there", S.UNKNOWN),
        ]:
            self.assertIs(messages.classify_server_message(line), kind)

    def test_printable(self):
        self.assertEqual(messages.printable("a\tb\x1b[0m\u00e9"), "a\\tb\\x1b[0m\u00e9")
        # A backslash too: the text \x1b is not the escape character.
        self.assertEqual(messages.printable("\\x1b\x1b"), "\\\\x1b\\x1b")
        self.assertEqual(messages.printable("\\x1b", backslash=False), "\\x1b")
