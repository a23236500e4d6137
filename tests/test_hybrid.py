"""The hybrid post-quantum groups (twisted_keyx.groups.hybrid): X-Wing against
its draft's test vectors, ML-KEM-768 against C2SP's known answers, OpenSSH's
combiner, hostile input, and both through the DH machines."""

import base64
import gzip
import hashlib
import json

from cryptography.hazmat.primitives.asymmetric import mlkem, x25519 as cx25519
from twisted.trial import unittest

from twisted_keyx.dh.handshake import (
    DHClientHandshake,
    DHServerHandshake,
    HostKeyVerificationFailed,
    InvalidClientKey,
    InvalidServerKey,
)
from twisted_keyx.dh import messages
from twisted_keyx.groups import asn1, hybrid
from twisted_keyx.groups import registry as groups
from twisted_keyx.groups import x25519

from .helpers import data_path, read_data, run_machines
from .test_dh_hostkey import HOST_KEY, run_machines as run_signed

XWING = groups.named("xwing")
SSH = groups.named("mlkem768x25519-sha256")


def xwing_vectors():
    with open(data_path("xwing-test-vectors.json")) as f:
        return [{k: bytes.fromhex(v) for k, v in vector.items()} for vector in json.load(f)]


def with_x25519_half(raw, half):
    return raw[:hybrid.MLKEM_PUBLIC_KEY_LENGTH] + half


def low_order_points():
    """Every low-order u, canonical, as 32 bytes."""
    return [u.to_bytes(32, "little") for u in sorted(x25519.LOW_ORDER_U)]


class XWingVectorTests(unittest.TestCase):
    """draft-connolly-cfrg-xwing-kem's vectors (tests/data/README)."""

    def test_there_are_vectors(self):
        self.assertEqual(len(xwing_vectors()), 3)

    def test_key_generation_from_the_seed(self):
        for vector in xwing_vectors():
            self.assertEqual(vector["sk"], vector["seed"])
            key = XWING.private_key_from_seed(vector["seed"])
            self.assertEqual(key.public_key, vector["pk"])
            self.assertEqual(key.seed, vector["sk"])
            # The ML-KEM half alone: its seed is SHAKE256(sk)[0:64].
            expanded = hashlib.shake_256(vector["sk"]).digest(96)
            mlkem_key = mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64])
            self.assertEqual(mlkem_key.public_key().public_bytes_raw(), vector["pk"][:1184])

    def test_decapsulation(self):
        for vector in xwing_vectors():
            key = XWING.private_key_from_seed(vector["sk"])
            self.assertEqual(XWING.decapsulate_raw(key, vector["ct"]), vector["ss"])
            # Through message 6's armor as well.
            armored = XWING.encode_ciphertext(vector["ct"])
            self.assertEqual(XWING.decapsulate(key, armored), vector["ss"])

    def test_encapsulation_x25519_half(self):
        # cryptography draws ML-KEM's encapsulation randomness itself, so
        # only the X25519 half of EncapsulateDerand can be replayed: ct_X
        # is the vector's, and the secret is what the vector's key
        # decapsulates from our ciphertext.
        for vector in xwing_vectors():
            peer = XWING.peer_key(vector["pk"])
            ephemeral = cx25519.X25519PrivateKey.from_private_bytes(vector["eseed"][32:])
            ct, ss = XWING.encapsulate_raw(peer, ephemeral)
            self.assertEqual(ct[1088:], vector["ct"][1088:])
            self.assertNotEqual(ct[:1088], vector["ct"][:1088])  # fresh ML-KEM randomness
            key = XWING.private_key_from_seed(vector["sk"])
            self.assertEqual(XWING.decapsulate_raw(key, ct), ss)
            self.assertNotEqual(ss, vector["ss"])

    def test_combiner_by_hand(self):
        # The combiner's inputs, each from its own primitive.
        for vector in xwing_vectors():
            expanded = hashlib.shake_256(vector["sk"]).digest(96)
            ss_m = mlkem.MLKEM768PrivateKey.from_seed_bytes(expanded[:64]).decapsulate(
                vector["ct"][:1088])
            ss_x = cx25519.X25519PrivateKey.from_private_bytes(vector["eseed"][32:]).exchange(
                cx25519.X25519PublicKey.from_public_bytes(vector["pk"][1184:]))
            label = b"\\./" + b"/^\\"
            self.assertEqual(label.hex(), "5c2e2f2f5e5c")
            self.assertEqual(
                hashlib.sha3_256(ss_m + ss_x + vector["ct"][1088:] + vector["pk"][1184:]
                                 + label).digest(),
                vector["ss"])

    def test_draft_x509_example(self):
        # The draft's example public key, byte for byte, is our message 5
        # armor for the seed 00 01 ... 1f.
        key = XWING.private_key_from_seed(bytes(range(32)))
        self.assertEqual(XWING.public_key_pem(key), read_data("xwing-draft-example.pub"))
        self.assertEqual(XWING.parse_public_key(read_data("xwing-draft-example.pub")),
                         key.public_key)


class MLKEMKnownAnswerTests(unittest.TestCase):
    """ML-KEM-768 as cryptography exposes it: the encapsulation key check
    against C2SP's CCTV negative vectors, implicit rejection.  (Key
    generation from the seed d || z and decapsulation: the X-Wing vectors.)"""

    def test_implicit_rejection(self):
        # A changed ciphertext gives another key, no error (FIPS 203
        # section 6.3), deterministically.
        key = mlkem.MLKEM768PrivateKey.from_seed_bytes(bytes(range(64)))
        secret, ciphertext = key.public_key().encapsulate()
        self.assertEqual(key.decapsulate(ciphertext), secret)
        other = bytes([ciphertext[0] ^ 1]) + ciphertext[1:]
        self.assertNotEqual(key.decapsulate(other), secret)
        self.assertEqual(key.decapsulate(other), key.decapsulate(other))

    def test_encapsulation_key_check(self):
        with gzip.open(data_path("mlkem768-cctv-modulus.txt.gz"), "rt") as f:
            keys = [bytes.fromhex(line) for line in f.read().split()]
        self.assertEqual(len(keys), 780)
        for raw in keys:
            self.assertEqual(len(raw), 1184)
            with self.assertRaises(ValueError):
                mlkem.MLKEM768PublicKey.from_public_bytes(raw)
        # And through message 5, with a good X25519 half: refused.
        good_x = cx25519.X25519PrivateKey.generate().public_key().public_bytes_raw()
        for raw in keys[::97]:
            with self.assertRaises(groups.InvalidPublicKey) as caught:
                XWING.load_peer_key(XWING.encode_public_key(raw + good_x))
            self.assertIn("ML-KEM-768", str(caught.exception))


class OpenSSHCombinerTests(unittest.TestCase):
    def test_secret_is_sha256_of_the_two_secrets(self):
        key = SSH.generate_private_key()
        self.assertIsNone(key.seed)
        peer = SSH.load_peer_key(SSH.public_key_pem(key))
        ephemeral = cx25519.X25519PrivateKey.generate()
        ct, ss = SSH.encapsulate_raw(peer, ephemeral)
        ss_m = key.mlkem.decapsulate(ct[:1088])
        ss_x = ephemeral.exchange(key.x25519.public_key())
        self.assertEqual(ss, hashlib.sha256(ss_m + ss_x).digest())
        self.assertEqual(SSH.decapsulate_raw(key, ct), ss)
        # The same halves under X-Wing's combiner give another secret.
        self.assertNotEqual(hybrid.xwing_combiner(ss_m, ss_x, ct[1088:], key.public_key[1184:]),
                            ss)

    def test_armor(self):
        key = SSH.generate_private_key()
        pem = SSH.public_key_pem(key)
        self.assertTrue(pem.startswith(b"-----BEGIN MLKEM768X25519 PUBLIC KEY-----\n"))
        self.assertEqual(asn1.pem_decode(pem, (b"MLKEM768X25519 PUBLIC KEY",))[1],
                         key.public_key)
        reply, _ = SSH.encapsulate(SSH.load_peer_key(pem))
        self.assertTrue(reply.startswith(b"-----BEGIN MLKEM768X25519 CIPHERTEXT-----\n"))
        # Each group refuses the other's armor.
        with self.assertRaises(groups.InvalidPublicKey):
            XWING.load_peer_key(pem)
        with self.assertRaises(groups.InvalidPublicKey):
            SSH.load_peer_key(XWING.public_key_pem(XWING.generate_private_key()))
        with self.assertRaises(groups.InvalidPublicKey):
            XWING.decapsulate(XWING.generate_private_key(), reply)


class HostileInputTests(unittest.TestCase):
    def setUp(self):
        self.key = XWING.generate_private_key()
        self.raw = self.key.public_key

    def test_wrong_key_lengths(self):
        for group in (XWING, SSH):
            for raw in (self.raw[:-1], self.raw + b"\0", self.raw[:1184], b""):
                if not raw:
                    continue
                with self.assertRaises(groups.InvalidPublicKey) as caught:
                    group.load_peer_key(forge_public_key(group, raw))
                self.assertIn("1216 bytes", str(caught.exception))

    def test_wrong_ciphertext_lengths(self):
        reply, _ = XWING.encapsulate(XWING.load_peer_key(XWING.public_key_pem(self.key)))
        ct = asn1.pem_decode(reply, (b"XWING CIPHERTEXT",))[1]
        for raw in (ct[:-1], ct + b"\0", ct[:1088]):
            with self.assertRaises(groups.InvalidPublicKey) as caught:
                XWING.decapsulate(self.key, asn1.pem_encode(b"XWING CIPHERTEXT", raw))
            self.assertIn("1120 bytes", str(caught.exception))

    def test_oversized_armor(self):
        huge = asn1.pem_encode(b"XWING CIPHERTEXT", bytes(5000))
        with self.assertRaises(groups.InvalidPublicKey) as caught:
            XWING.decapsulate(self.key, huge)
        self.assertEqual(str(caught.exception), "ciphertext is too large")
        with self.assertRaises(groups.InvalidPublicKey):
            XWING.load_peer_key(asn1.pem_encode(b"PUBLIC KEY", bytes(5000)))

    def test_low_order_x25519_share_in_the_key(self):
        for group in (XWING, SSH):
            for u in low_order_points():
                with self.assertRaises(groups.InvalidPublicKey) as caught:
                    group.load_peer_key(group.encode_public_key(with_x25519_half(self.raw, u)))
                self.assertEqual(str(caught.exception), "the X25519 half is a point of low order")

    def test_low_order_x25519_share_in_the_ciphertext(self):
        reply, _ = XWING.encapsulate(XWING.load_peer_key(XWING.public_key_pem(self.key)))
        ct = asn1.pem_decode(reply, (b"XWING CIPHERTEXT",))[1]
        for u in low_order_points():
            with self.assertRaises(groups.InvalidPublicKey) as caught:
                XWING.decapsulate(self.key, XWING.encode_ciphertext(ct[:1088] + u))
            self.assertEqual(str(caught.exception), "the X25519 half is a point of low order")

    def test_ciphertext_from_another_key(self):
        # ML-KEM rejects implicitly: no error, another secret.
        other = XWING.generate_private_key()
        reply, secret = XWING.encapsulate(XWING.load_peer_key(XWING.public_key_pem(other)))
        self.assertEqual(XWING.decapsulate(other, reply), secret)
        self.assertNotEqual(XWING.decapsulate(self.key, reply), secret)

    def test_truncated_armor(self):
        pem = XWING.public_key_pem(self.key)
        reply, _ = XWING.encapsulate(XWING.load_peer_key(pem))
        for armor, read in ((pem, XWING.load_peer_key),
                            (reply, lambda data: XWING.decapsulate(self.key, data))):
            for cut in (1, 10, 30, len(armor) // 2, len(armor) - 30, len(armor) - 2):
                with self.assertRaises(groups.InvalidPublicKey):
                    read(armor[:cut])
            # A whole base64 line less: the body decodes, to a short key.
            lines = armor.splitlines(keepends=True)
            with self.assertRaises(groups.InvalidPublicKey):
                read(b"".join(lines[:3] + lines[4:]))

    def test_spki_refusals(self):
        # Another algorithm's key, parameters present, unused bits.
        with self.assertRaises(groups.InvalidPublicKey) as caught:
            XWING.load_peer_key(read_data("x25519-public.pem"))
        self.assertEqual(str(caught.exception), "not an xwing public key")
        algorithm = asn1.encode_sequence(
            asn1.encode(asn1.OBJECT_IDENTIFIER, hybrid.OID_XWING), b"\x05\x00")
        with_null = asn1.pem_encode(b"PUBLIC KEY", asn1.encode_sequence(
            algorithm, asn1.encode(asn1.BIT_STRING, b"\0" + self.raw)))
        with self.assertRaises(groups.InvalidPublicKey):
            XWING.load_peer_key(with_null)

    def test_each_byte_of_the_armor_changed_reads_as_the_strict_reader_reads_it(self):
        # The canonical form is read directly (hybrid._canonical_body); any
        # byte changed, it must give what the strict DER/PEM reader gives:
        # the same key, or a refusal.
        def strict_key(group, data):
            try:
                if group.public_key_oid is None:
                    raw = asn1.pem_decode(data, (group.public_key_label,))[1]
                else:
                    oid, parameters, raw = asn1.read_public_key_pem(data, group.public_key_label)
                    if oid != group.public_key_oid:
                        return None
                    parameters.expect_end()
            except asn1.DecodeError:
                return None
            return raw if len(raw) == 1216 else None

        def strict_ciphertext(group, data):
            try:
                raw = asn1.pem_decode(data, (group.ciphertext_label,))[1]
            except asn1.DecodeError:
                return None
            return raw if len(raw) == 1120 else None

        def ours(parse, data):
            try:
                return parse(data)
            except groups.InvalidPublicKey:
                return None

        for group in (XWING, SSH):
            key = group.generate_private_key()
            pem = group.public_key_pem(key)
            reply = group.encapsulate(group.load_peer_key(pem))[0]
            for armor, parse, strict in ((pem, group.parse_public_key, strict_key),
                                         (reply, group.parse_ciphertext, strict_ciphertext)):
                self.assertIsNotNone(ours(parse, armor))
                for index in range(len(armor)):
                    for flip in (0x01, 0x21):
                        changed = armor[:index] + bytes([armor[index] ^ flip]) + armor[index + 1:]
                        self.assertEqual(ours(parse, changed), strict(group, changed),
                                         (group.name, index, flip))


def forge_public_key(group, raw):
    """Message 5's armor around ``raw`` of any length."""
    if group.public_key_oid is None:
        return asn1.pem_encode(group.public_key_label, raw)
    algorithm = asn1.encode_sequence(asn1.encode(asn1.OBJECT_IDENTIFIER, group.public_key_oid))
    return asn1.pem_encode(group.public_key_label, asn1.encode_sequence(
        algorithm, asn1.encode(asn1.BIT_STRING, b"\0" + raw)))


class MachineTests(unittest.TestCase):
    """The DH machines, unchanged, in the hybrid groups."""

    def test_both_sides_agree(self):
        for group in (XWING, SSH):
            client = DHClientHandshake()
            server = DHServerHandshake(group)
            sent = run_machines(client, server)
            self.assertEqual(sent[3], group.parameters_message)
            self.assertTrue(sent[4].startswith(messages.CLIENT_KEY_PREFIX + b"-----BEGIN "))
            self.assertTrue(sent[5].startswith(
                messages.SERVER_KEY_PREFIX + b"-----BEGIN " + group.ciphertext_label))
            self.assertEqual(client.result.session_key, server.result.session_key)
            self.assertEqual(client.result.shared_secret, server.result.shared_secret)
            self.assertEqual(len(client.result.shared_secret), 32)
            self.assertIs(client.result.group, group)

    def test_with_the_host_key(self):
        client = run_signed(XWING)
        self.assertIsNone(client.error)
        self.assertEqual(client.result.host_key_fingerprint, HOST_KEY.fingerprint)

    def test_ciphertext_swapped_for_one_to_another_key_fails_the_signature(self):
        other = XWING.generate_private_key()

        def tamper(index, message):
            if index == 6:
                reply, _ = XWING.encapsulate(XWING.load_peer_key(XWING.public_key_pem(other)))
                return messages.SERVER_KEY_PREFIX + reply
            return message

        client = run_signed(XWING, tamper=tamper)
        self.assertIsInstance(client.error, HostKeyVerificationFailed)

    def test_server_refuses_a_low_order_share(self):
        key = XWING.generate_private_key()
        bad = XWING.encode_public_key(with_x25519_half(key.public_key, bytes(32)))
        server = DHServerHandshake(XWING)
        for message in (messages.HELLO, messages.PARAMS_REQUEST):
            server.receive(message)
        with self.assertRaises(InvalidClientKey) as caught:
            server.receive(messages.CLIENT_KEY_PREFIX + bad)
        self.assertEqual(caught.exception.reply, messages.INVALID_CLIENT_KEY_REPLY)
        self.assertIn("low order", str(caught.exception))

    def test_client_refuses_a_truncated_ciphertext(self):
        client = DHClientHandshake()
        server = DHServerHandshake(XWING)
        message = client.start()
        for _ in range(2):
            message = client.receive(server.receive(message))
        reply = server.receive(message)
        with self.assertRaises(InvalidServerKey):
            client.receive(reply[:len(reply) // 2])

    def test_message_lengths_bound_the_largest_legal_messages(self):
        server = DHServerHandshake(XWING)
        self.assertLess(len(messages.CLIENT_KEY_PREFIX + XWING.public_key_pem(
            XWING.generate_private_key())), server.max_message_length)
        self.assertGreaterEqual(groups.MAX_REPLY_MESSAGE, XWING.max_reply_message)
        self.assertTrue(XWING.post_quantum)
        self.assertEqual(base64.b64decode(b"".join(
            XWING.public_key_pem(XWING.generate_private_key()).splitlines()[1:-1]))[:23].hex(),
            "308204d4300d060b2b0601040183e62d81c87a038204c1")


class TraceTests(unittest.TestCase):
    def test_summaries_name_the_hybrid_messages(self):
        from twisted_keyx.observe import trace

        for group, key_kind in ((XWING, "PEM X-Wing encapsulation key (ML-KEM-768 + X25519)"),
                                (SSH, "PEM mlkem768x25519-sha256 encapsulation key "
                                      "(ML-KEM-768 + X25519)")):
            client = DHClientHandshake()
            sent = run_machines(client, DHServerHandshake(group))
            four = trace.describe_bytes(sent[3])
            self.assertEqual(str(four.kind), repr(group.parameters_message.decode()))
            five = trace.describe_bytes(sent[4])
            self.assertEqual(five.kind, "Client public key: + " + key_kind)
            self.assertTrue(five.detail.startswith(f"{len(sent[4]) - 18} bytes, "), five.detail)
            six = trace.describe_bytes(sent[5])
            self.assertEqual(six.kind, f"Server public key: + PEM {group.name} ciphertext "
                                       "(ML-KEM-768 + X25519)")
            self.assertTrue(six.detail.startswith(f"{len(sent[5]) - 18} bytes, "), six.detail)
        broken = trace.describe_bytes(
            XWING.encode_ciphertext(bytes(1120))[:-40] + b"\n-----END XWING CIPHERTEXT-----\n")
        self.assertIn("unreadable", broken.detail)
