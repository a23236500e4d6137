"""Host key files, fingerprints, and the host key signature of the DH handshake.

The fixtures in tests/data were made with OpenSSH's ssh-keygen
(tests/data/README says how); where ssh-keygen is installed, files written
here are also checked with it.
"""

import base64
import hashlib
import io
import os
import shutil
import stat
import subprocess
import struct
import sys

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.trial import unittest

from twisted_keyx.cli import admin
from twisted_keyx.core import fileutil
from twisted_keyx.trust import hostkey
from twisted_keyx.dh import hostauth, messages

from .helpers import data_path, read_data

FIXTURE_PUB = read_data("ed25519-host-key.pub")
#: ``ssh-keygen -lf ed25519-host-key.pub``, as it printed it.
FIXTURE_FINGERPRINT_LINE = read_data("ed25519-host-key.fingerprint").decode("ascii")
FIXTURE_FINGERPRINT = FIXTURE_FINGERPRINT_LINE.split()[1]

SSH_KEYGEN = shutil.which("ssh-keygen")


def private_copy(test, name, mode=0o600):
    """A copy of fixture ``name`` with ``mode`` (git keeps no modes but x)."""
    directory = test.mktemp()
    os.mkdir(directory)
    path = os.path.join(directory, name)
    shutil.copyfile(data_path(name), path)
    os.chmod(path, mode)
    return path


def fixed_key(seed):
    return ed25519.Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


def ssh_string(data):
    # Written out again here, so that the tests do not check the code with itself.
    return struct.pack(">I", len(data)) + data


class FingerprintTests(unittest.TestCase):
    def test_fixture_made_by_ssh_keygen_loads(self):
        key = hostkey.load_host_key(private_copy(self, "ed25519-host-key"))
        self.assertIsInstance(key.private_key, ed25519.Ed25519PrivateKey)
        # The blob is the base64 field of the .pub line ssh-keygen wrote.
        self.assertEqual(key.blob, base64.b64decode(FIXTURE_PUB.split()[1]))
        self.assertEqual(len(key.blob), hostkey.BLOB_LENGTH)

    def test_fingerprint_is_what_ssh_keygen_printed(self):
        key = hostkey.load_host_key(private_copy(self, "ed25519-host-key"))
        self.assertEqual(key.fingerprint, FIXTURE_FINGERPRINT)
        self.assertEqual(hostkey.host_key_fingerprint(key.public_key), FIXTURE_FINGERPRINT)
        self.assertEqual(FIXTURE_FINGERPRINT, "SHA256:aFGkTkwV3UgZq1obgxxCV2XzClavtBr8zKx4hleXRZc")

    def test_fingerprint_is_unpadded_base64_of_sha256_of_the_blob(self):
        key = fixed_key(7)
        blob = ssh_string(b"ssh-ed25519") + ssh_string(
            key.public_key().public_bytes(serialization.Encoding.Raw,
                                          serialization.PublicFormat.Raw))
        digest = base64.b64encode(hashlib.sha256(blob).digest()).decode()
        self.assertTrue(digest.endswith("="))  # 32 bytes: one '=' of padding
        self.assertEqual(hostkey.host_key_fingerprint(key.public_key()), "SHA256:" + digest[:-1])

    def test_public_key_line_is_ssh_keygens(self):
        key = hostkey.load_host_key(private_copy(self, "ed25519-host-key"))
        self.assertEqual(hostkey.public_key_line(key.public_key, "fixture@twisted-keyx"),
                         FIXTURE_PUB)

    def test_repr_shows_no_secret(self):
        key = hostkey.HostKey.from_private_key(fixed_key(1))
        raw = key.private_key.private_bytes(serialization.Encoding.Raw,
                                            serialization.PrivateFormat.Raw,
                                            serialization.NoEncryption())
        text = repr(key)
        self.assertEqual(text, f"<HostKey ED25519 {key.fingerprint}>")
        for form in (raw.hex(), base64.b64encode(raw).decode()):
            self.assertNotIn(form, text)


class BlobTests(unittest.TestCase):
    def test_round_trip(self):
        public = fixed_key(3).public_key()
        self.assertEqual(
            hostkey.public_key_blob(hostkey.public_key_from_blob(hostkey.public_key_blob(public))),
            hostkey.public_key_blob(public))

    def test_refused(self):
        raw = bytes(32)
        cases = {
            b"": "host key blob is truncated",
            ssh_string(b"ssh-ed25519"): "host key blob is truncated",
            ssh_string(b"ssh-ed25519") + ssh_string(raw)[:-1]: "host key blob is truncated",
            ssh_string(b"ssh-rsa") + ssh_string(raw): "host key type 'ssh-rsa' is not ssh-ed25519",
            ssh_string(b"ssh-ed25519") + ssh_string(raw[:31]):
                "host key blob has the wrong length for Ed25519",
            ssh_string(b"ssh-ed25519") + ssh_string(raw) + b"\0":
                "host key blob has the wrong length for Ed25519",
        }
        for blob, reason in cases.items():
            with self.assertRaises(hostkey.InvalidHostKey) as caught:
                hostkey.public_key_from_blob(blob)
            self.assertEqual(str(caught.exception), reason, blob)


# Ed25519 arithmetic, written out here only to find the points of small
# order independently of the code under test (RFC 8032 section 5.1).
_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = -121665 * pow(121666, -1, _P) % _P


def _x_of(y):
    xx = (y * y - 1) * pow(_D * y * y + 1, -1, _P) % _P
    x = pow(xx, (_P + 3) // 8, _P)
    if (x * x - xx) % _P:
        x = x * pow(2, (_P - 1) // 4, _P) % _P
    return x if (x * x - xx) % _P == 0 else None


def _add(a, b):
    (x1, y1), (x2, y2) = a, b
    t = _D * x1 * x2 * y1 * y2 % _P
    return ((x1 * y2 + x2 * y1) * pow(1 + t, -1, _P) % _P,
            (y1 * y2 + x1 * x2) * pow(1 - t, -1, _P) % _P)


def _times(k, point):
    result = (0, 1)
    while k:
        if k & 1:
            result = _add(result, point)
        point, k = _add(point, point), k >> 1
    return result


def small_order_points():
    """The eight points of order dividing 8, as (x, y): [k L] P for k = 1..8
    of a curve point P whose torsion part has order 8."""
    y = 2
    while True:
        y += 1
        x = _x_of(y)
        if x is None:
            continue
        torsion = {_times(k * _L, (x, y)) for k in range(1, 9)}
        if len(torsion) == 8:
            return torsion


def encode_point(x, y, sign=None):
    sign = x & 1 if sign is None else sign
    return (y | sign << 255).to_bytes(32, "little")


class WeakKeyTests(unittest.TestCase):
    """A public key of small order lets anyone make a signature that verifies
    (the identity point with R = identity and S = 0 verifies any message in
    cryptography): such keys, and any non-canonical encoding, are refused."""

    IDENTITY = encode_point(0, 1)

    def blob(self, raw):
        return ssh_string(b"ssh-ed25519") + ssh_string(raw)

    def test_the_forgery_is_real(self):
        # Why the check is needed: cryptography verifies this "signature"
        # for any message, made without any private key.
        key = ed25519.Ed25519PublicKey.from_public_bytes(self.IDENTITY)
        for message in (b"", b"any", hostauth.signed_data(GROUP, self.blob(self.IDENTITY),
                                                          TRANSCRIPT_HASH)):
            key.verify(self.IDENTITY + bytes(32), message)

    def test_small_order_keys_refused(self):
        points = small_order_points()
        self.assertEqual(len(points), 8)
        encodings = set()
        for x, y in points:
            encodings.update(encode_point(x, y, sign) for sign in (0, 1))
            if y + _P < 2**255:
                encodings.update(encode_point(x, y + _P, sign) for sign in (0, 1))
        self.assertIn(self.IDENTITY, encodings)
        for raw in sorted(encodings):
            with self.assertRaises(hostkey.InvalidHostKey) as caught:
                hostkey.public_key_from_blob(self.blob(raw))
            self.assertEqual(str(caught.exception),
                             "host key is not a valid Ed25519 key (a point of small order "
                             "or not canonically encoded)", raw.hex())

    def test_non_canonical_refused(self):
        # y >= p is not a canonical encoding (RFC 8032 section 5.1.3).
        for y in (_P, _P + 2, 2**255 - 1):
            with self.assertRaises(hostkey.InvalidHostKey):
                hostkey.public_key_from_blob(self.blob(y.to_bytes(32, "little")))

    def test_real_keys_pass(self):
        for seed in range(1, 40):
            public = fixed_key(seed).public_key()
            self.assertEqual(hostkey.public_key_blob(
                hostkey.public_key_from_blob(hostkey.public_key_blob(public))),
                hostkey.public_key_blob(public))

    def test_forged_message_seven_refused(self):
        # Message 7 naming the identity key with the universal signature.
        body = (ssh_string(self.blob(self.IDENTITY))
                + ssh_string(ssh_string(b"ssh-ed25519") + ssh_string(self.IDENTITY + bytes(32))))
        lines = base64.b64encode(body)
        lines = b"".join(lines[i:i + 64] + b"\n" for i in range(0, len(lines), 64))
        message = (b"Host key signature:-----BEGIN KEYX HOST KEY SIGNATURE-----\n" + lines
                   + b"-----END KEYX HOST KEY SIGNATURE-----\n")
        with self.assertRaises(hostauth.BadHostKeySignature) as caught:
            hostauth.parse_signature_message(message)
        self.assertIn("not a valid Ed25519 key", str(caught.exception))


class WriteTests(unittest.TestCase):
    def setUp(self):
        self.directory = self.mktemp()
        os.mkdir(self.directory)
        self.path = os.path.join(self.directory, "keyx-host-key")

    def test_writes_both_files_with_their_modes(self):
        written = hostkey.write_host_key(self.path, fixed_key(5), comment="test@host")
        self.assertEqual(sorted(os.listdir(self.directory)),
                         ["keyx-host-key", "keyx-host-key.pub"])  # no temporary left
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(self.path + ".pub").st_mode), 0o644)
        with open(self.path, "rb") as f:
            self.assertTrue(f.read().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----\n"))
        with open(self.path + ".pub", "rb") as f:
            line = f.read()
        self.assertEqual(line, b"ssh-ed25519 " + base64.b64encode(written.blob) + b" test@host\n")
        loaded = hostkey.load_host_key(self.path)
        self.assertEqual((loaded.blob, loaded.fingerprint), (written.blob, written.fingerprint))

    def test_default_comment(self):
        self.patch(hostkey.socket, "gethostname", lambda: "box")
        hostkey.write_host_key(self.path, fixed_key(5))
        with open(self.path + ".pub", "rb") as f:
            self.assertTrue(f.read().endswith(b" keyx@box\n"))

    def test_ssh_keygen_reads_what_is_written(self):
        if SSH_KEYGEN is None:
            raise unittest.SkipTest("ssh-keygen is not installed (apt-get install openssh-client)")
        written = hostkey.write_host_key(self.path, hostkey.generate_private_key(),
                                         comment="test@host")
        for path in (self.path, self.path + ".pub"):
            listed = subprocess.run([SSH_KEYGEN, "-lf", path], capture_output=True, timeout=30)
            self.assertEqual(listed.returncode, 0, listed.stderr)
            self.assertEqual(listed.stdout.decode(),
                             f"256 {written.fingerprint} test@host (ED25519)\n")
        public = subprocess.run([SSH_KEYGEN, "-y", "-f", self.path], capture_output=True,
                                timeout=30)
        self.assertEqual(public.returncode, 0, public.stderr)
        self.assertEqual(public.stdout.split()[:2],
                         [b"ssh-ed25519", base64.b64encode(written.blob)])

    def test_key_from_ssh_keygen_now_loads(self):
        if SSH_KEYGEN is None:
            raise unittest.SkipTest("ssh-keygen is not installed (apt-get install openssh-client)")
        made = subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "c",
                               "-f", self.path], capture_output=True, timeout=30)
        self.assertEqual(made.returncode, 0, made.stderr)
        listed = subprocess.run([SSH_KEYGEN, "-lf", self.path], capture_output=True, timeout=30)
        self.assertEqual(hostkey.load_host_key(self.path).fingerprint,
                         listed.stdout.split()[1].decode())


class LoadOrCreateTests(unittest.TestCase):
    """The daemon's first start: the host key is made if missing, never replaced."""

    def setUp(self):
        self.directory = self.mktemp()
        os.mkdir(self.directory)
        self.path = os.path.join(self.directory, "keyx-host-key")

    def test_creates_then_loads(self):
        created, was_created = hostkey.load_or_create_host_key(self.path, comment="c")
        self.assertTrue(was_created)
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(self.path + ".pub").st_mode), 0o644)
        self.assertEqual(sorted(os.listdir(self.directory)),
                         ["keyx-host-key", "keyx-host-key.pub"])
        loaded, was_created = hostkey.load_or_create_host_key(self.path)
        self.assertFalse(was_created)
        self.assertEqual(loaded.fingerprint, created.fingerprint)

    def test_existing_key_is_checked_not_replaced(self):
        shutil.copyfile(data_path("ed25519-host-key"), self.path)
        os.chmod(self.path, 0o644)
        with self.assertRaises(hostkey.HostKeyError) as caught:
            hostkey.load_or_create_host_key(self.path)
        self.assertIn("is accessible by group or others", str(caught.exception))
        self.assertEqual(os.listdir(self.directory), ["keyx-host-key"])

    def test_another_process_wins_the_race(self):
        # Between the check and the link, another daemon made the file: its
        # key is the one loaded, and ours is thrown away.
        real_link = os.link

        def link_after_the_other(source, destination):
            shutil.copyfile(data_path("ed25519-host-key"), destination)
            os.chmod(destination, 0o600)
            return real_link(source, destination)

        self.patch(os, "link", link_after_the_other)
        loaded, was_created = hostkey.load_or_create_host_key(self.path)
        self.assertEqual((loaded.fingerprint, was_created), (FIXTURE_FINGERPRINT, False))
        self.assertEqual(os.listdir(self.directory), ["keyx-host-key"])

    def test_unwritable_directory(self):
        def refuse(**kwargs):
            raise PermissionError(13, "Permission denied")

        self.patch(fileutil.tempfile, "mkstemp", refuse)
        with self.assertRaises(hostkey.HostKeyError) as caught:
            hostkey.load_or_create_host_key(self.path)
        self.assertEqual(str(caught.exception),
                         f"cannot create host key {self.path}: Permission denied")


class LoadRefusalTests(unittest.TestCase):
    """Every refusal is a HostKeyError with one sentence that names the file."""

    def assertRefused(self, path, message):
        with self.assertRaises(hostkey.HostKeyError) as caught:
            hostkey.load_host_key(path)
        self.assertEqual(str(caught.exception), message)

    def test_missing(self):
        path = os.path.join(self.mktemp(), "key")
        self.assertRefused(path, f"host key {path} does not exist; "
                                 f"make one with: keyx-admin hostkey -o {path}")

    def test_directory(self):
        path = self.mktemp()
        os.mkdir(path, 0o700)
        self.assertRefused(path, f"host key {path} is a directory")

    def test_not_a_regular_file(self):
        self.assertRefused(os.devnull, f"host key {os.devnull} is not a regular file")

    def test_unreadable(self):
        # Tests may run as root, who reads any file: a stand-in refuses.
        path = private_copy(self, "ed25519-host-key")
        real_open = os.open

        def refuse(name, flags, *args):
            if name == path:
                raise PermissionError(13, "Permission denied")
            return real_open(name, flags, *args)

        self.patch(os, "open", refuse)
        self.assertRefused(path, f"cannot read host key {path}: Permission denied")

    def test_accessible_by_group_or_others(self):
        for mode in (0o640, 0o604, 0o660, 0o644, 0o610, 0o601, 0o700 | 0o020):
            path = private_copy(self, "ed25519-host-key", mode)
            self.assertRefused(
                path, f"host key {path} is accessible by group or others (mode {mode:04o}); "
                      f"it must be private to its owner: chmod 600 {path}")

    def test_private_modes_are_accepted(self):
        for mode in (0o600, 0o400, 0o700):
            path = private_copy(self, "ed25519-host-key", mode)
            self.assertEqual(hostkey.load_host_key(path).fingerprint, FIXTURE_FINGERPRINT)

    def test_encrypted(self):
        path = private_copy(self, "ed25519-encrypted-host-key")
        self.assertRefused(
            path, f"host key {path} is encrypted with a passphrase; a daemon cannot ask "
                  f"for it. Remove it with: ssh-keygen -p -N '' -f {path}")

    def test_not_ed25519(self):
        for name, key_type in (("rsa-host-key", "ssh-rsa"),
                               ("ecdsa-host-key", "ecdsa-sha2-nistp256")):
            path = private_copy(self, name)
            self.assertRefused(
                path, f"host key {path} is an {key_type} key; host keys are Ed25519: "
                      f"make one with: keyx-admin hostkey -o {path}")

    def test_public_key_file(self):
        path = private_copy(self, "ed25519-host-key.pub")
        self.assertRefused(path, f"host key {path} is a public key; give the private key "
                                 "file (the one without .pub)")

    def test_other_formats(self):
        path = private_copy(self, "ed25519-host-key")
        pkcs8 = fixed_key(1).private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption())
        other_magic = hostkey.asn1.pem_encode(b"OPENSSH PRIVATE KEY", b"openssh-key-v2\0")
        for data in (b"", b"garbage\n", pkcs8, other_magic, read_data("tls-server.pem")):
            with open(path, "wb") as f:
                f.write(data)
            self.assertRefused(path, f"host key {path} is not an OpenSSH private key; "
                                     f"make one with: keyx-admin hostkey -o {path}")

    def test_damaged(self):
        path = private_copy(self, "ed25519-host-key")
        _, raw = hostkey.asn1.pem_decode(read_data("ed25519-host-key"), (b"OPENSSH PRIVATE KEY",))
        damaged = raw[:-40] + bytes(40)  # the private section's tail zeroed
        with open(path, "wb") as f:
            f.write(hostkey.asn1.pem_encode(b"OPENSSH PRIVATE KEY", damaged))
        self.assertRefused(path, f"host key {path} is damaged: it cannot be loaded")

    def test_more_than_one_key(self):
        path = private_copy(self, "ed25519-host-key")
        blob = base64.b64decode(FIXTURE_PUB.split()[1])
        raw = (b"openssh-key-v1\0" + ssh_string(b"none") + ssh_string(b"none") + ssh_string(b"")
               + struct.pack(">I", 2) + ssh_string(blob) + ssh_string(blob))
        with open(path, "wb") as f:
            f.write(hostkey.asn1.pem_encode(b"OPENSSH PRIVATE KEY", raw))
        self.assertRefused(path, f"host key {path} holds 2 keys, not one")

    def test_too_large(self):
        path = private_copy(self, "ed25519-host-key")
        with open(path, "ab") as f:
            f.write(b"\n" * hostkey.MAX_KEY_FILE_SIZE)
        self.assertRefused(path, f"host key {path} is not an OpenSSH private key "
                                 f"(larger than {hostkey.MAX_KEY_FILE_SIZE} bytes)")


GROUP = "x25519"
TRANSCRIPT_HASH = hashlib.sha256(b"a handshake").digest()


class SignedDataTests(unittest.TestCase):
    def test_layout(self):
        blob = hostkey.HostKey.from_private_key(fixed_key(9)).blob
        self.assertEqual(
            hostauth.signed_data("ffdhe2048", blob, TRANSCRIPT_HASH),
            ssh_string(b"twisted-keyx dh host key signature v1") + ssh_string(b"ffdhe2048")
            + ssh_string(blob) + ssh_string(TRANSCRIPT_HASH))

    def test_fields_cannot_slide(self):
        # Length prefixes: moving a byte from one field to the next changes the bytes.
        blob = hostkey.HostKey.from_private_key(fixed_key(9)).blob
        self.assertNotEqual(hostauth.signed_data("x2551", b"9" + blob, TRANSCRIPT_HASH),
                            hostauth.signed_data("x25519", blob, TRANSCRIPT_HASH))

    def test_transcript_hash_length(self):
        for length in (0, 31, 33, 64):
            self.assertRaises(ValueError, hostauth.signed_data, GROUP, b"blob", bytes(length))


class SignatureTests(unittest.TestCase):
    def setUp(self):
        self.host_key = hostkey.HostKey.from_private_key(fixed_key(11))
        self.signature = hostauth.sign(self.host_key, GROUP, TRANSCRIPT_HASH)

    def assertDoesNotVerify(self, public_key, group, transcript_hash, signature):
        with self.assertRaises(hostauth.BadHostKeySignature) as caught:
            hostauth.verify(public_key, group, transcript_hash, signature)
        self.assertEqual(str(caught.exception),
                         "the server's host key signature does not verify: the handshake was "
                         "tampered with, or the server does not hold the key it names")

    def test_verifies(self):
        self.assertEqual(len(self.signature), 64)
        hostauth.verify(self.host_key.public_key, GROUP, TRANSCRIPT_HASH, self.signature)
        # Ed25519 is deterministic (RFC 8032): the same inputs, the same signature.
        self.assertEqual(hostauth.sign(self.host_key, GROUP, TRANSCRIPT_HASH), self.signature)

    def test_is_ed25519_over_the_signed_data(self):
        self.host_key.public_key.verify(
            self.signature, hostauth.signed_data(GROUP, self.host_key.blob, TRANSCRIPT_HASH))

    def test_any_changed_byte_of_the_transcript_hash(self):
        for i in range(len(TRANSCRIPT_HASH)):
            for flip in (0x01, 0x80):
                changed = bytearray(TRANSCRIPT_HASH)
                changed[i] ^= flip
                self.assertDoesNotVerify(self.host_key.public_key, GROUP, bytes(changed),
                                         self.signature)

    def test_another_transcript(self):
        self.assertDoesNotVerify(self.host_key.public_key, GROUP,
                                 hashlib.sha256(b"another handshake").digest(), self.signature)

    def test_another_group(self):
        for group in ("ffdhe2048", "ffdhe3072", "ffdhe4096", "custom", "X25519", "x25519 ", ""):
            self.assertDoesNotVerify(self.host_key.public_key, group, TRANSCRIPT_HASH,
                                     self.signature)

    def test_another_host_key(self):
        for seed in (12, 13):
            other = fixed_key(seed).public_key()
            self.assertDoesNotVerify(other, GROUP, TRANSCRIPT_HASH, self.signature)
        # Nor does another key's signature verify under this key.
        other_signature = hostauth.sign(hostkey.HostKey.from_private_key(fixed_key(12)),
                                        GROUP, TRANSCRIPT_HASH)
        self.assertDoesNotVerify(self.host_key.public_key, GROUP, TRANSCRIPT_HASH,
                                 other_signature)

    def test_the_key_is_bound_not_only_the_signer(self):
        # The blob is signed: the right private key over a transcript naming
        # another blob does not verify for this key.
        other_blob = hostkey.HostKey.from_private_key(fixed_key(12)).blob
        forged = self.host_key.private_key.sign(
            hostauth.signed_data(GROUP, other_blob, TRANSCRIPT_HASH))
        self.assertDoesNotVerify(self.host_key.public_key, GROUP, TRANSCRIPT_HASH, forged)

    def test_any_changed_byte_of_the_signature(self):
        for i in range(64):
            changed = bytearray(self.signature)
            changed[i] ^= 0x01
            self.assertDoesNotVerify(self.host_key.public_key, GROUP, TRANSCRIPT_HASH,
                                     bytes(changed))
        for wrong in (b"", self.signature[:63], self.signature + b"\0", bytes(64)):
            self.assertDoesNotVerify(self.host_key.public_key, GROUP, TRANSCRIPT_HASH, wrong)


class SignatureMessageTests(unittest.TestCase):
    def setUp(self):
        self.host_key = hostkey.HostKey.from_private_key(fixed_key(11))
        self.signature = hostauth.sign(self.host_key, GROUP, TRANSCRIPT_HASH)
        self.message = hostauth.signature_message(self.host_key, self.signature)

    def body(self, key_type=b"ssh-ed25519", signature=None, blob=None, tail=b""):
        signature = self.signature if signature is None else signature
        blob = self.host_key.blob if blob is None else blob
        return ssh_string(blob) + ssh_string(ssh_string(key_type) + ssh_string(signature)) + tail

    def message_with(self, body, label=b"KEYX HOST KEY SIGNATURE", prefix=b"Host key signature:"):
        lines = base64.b64encode(body)
        lines = b"".join(lines[i:i + 64] + b"\n" for i in range(0, len(lines), 64))
        return (prefix + b"-----BEGIN " + label + b"-----\n" + lines
                + b"-----END " + label + b"-----\n")

    def test_exact_bytes(self):
        self.assertEqual(self.message, self.message_with(self.body()))
        self.assertEqual(len(self.message), hostauth.SIGNATURE_MESSAGE_LENGTH)
        self.assertEqual(len(self.message), 292)
        lines = self.message.split(b"\n")
        self.assertEqual(lines[0], b"Host key signature:-----BEGIN KEYX HOST KEY SIGNATURE-----")
        self.assertEqual([len(line) for line in lines[1:4]], [64, 64, 64])
        self.assertEqual(lines[4:], [b"-----END KEYX HOST KEY SIGNATURE-----", b""])

    def test_round_trip(self):
        public_key, signature = hostauth.parse_signature_message(self.message)
        self.assertEqual(hostkey.public_key_blob(public_key), self.host_key.blob)
        self.assertEqual(signature, self.signature)
        hostauth.verify(public_key, GROUP, TRANSCRIPT_HASH, signature)

    def test_whitespace_and_crlf_as_the_unframed_reader_may_see_them(self):
        for message in (self.message.rstrip(), self.message.replace(b"\n", b"\r\n")):
            self.assertEqual(hostauth.parse_signature_message(message)[1], self.signature)

    def assertMalformed(self, message, reason):
        with self.assertRaises(hostauth.BadHostKeySignature) as caught:
            hostauth.parse_signature_message(message)
        self.assertEqual(str(caught.exception), "malformed host key signature message: " + reason)

    def test_malformed(self):
        self.assertMalformed(b"Host key:" + self.message[19:],
                             "no 'Host key signature:' prefix")
        self.assertMalformed(self.message_with(self.body(), label=b"PUBLIC KEY"),
                             "unexpected PEM label 'PUBLIC KEY'")
        self.assertMalformed(b"Host key signature:", "not a PEM block")
        self.assertMalformed(self.message_with(self.body(tail=b"\0")),
                             "bytes after the signature")
        self.assertMalformed(self.message_with(self.body()[:-1]), "truncated string")
        self.assertMalformed(self.message_with(self.body(key_type=b"ssh-rsa")),
                             "not an ssh-ed25519 signature")
        self.assertMalformed(self.message_with(self.body(signature=self.signature[:63])),
                             "not an ssh-ed25519 signature")
        other_type = ssh_string(b"ssh-rsa") + ssh_string(bytes(32))
        self.assertMalformed(self.message_with(self.body(blob=other_type)),
                             "host key type 'ssh-rsa' is not ssh-ed25519")
        self.assertMalformed(self.message.replace(b"AAAA", b"AA*A", 1),
                             "PEM body is not valid base64")

    def test_bounded(self):
        long = self.message_with(self.body(tail=bytes(60)))
        self.assertGreater(len(long), hostauth.MAX_SIGNATURE_MESSAGE_LENGTH)
        self.assertMalformed(long, f"{len(long)} bytes, more than "
                                   f"{hostauth.MAX_SIGNATURE_MESSAGE_LENGTH}")

    def test_request_is_no_prefix_of_hello_nor_hello_of_it(self):
        # The unframed splitter needs this (docs/hostkey.rst, "Asking").
        others = (messages.HELLO, messages.PARAMS_REQUEST, messages.CLIENT_KEY_PREFIX)
        for other in others:
            self.assertFalse(other.startswith(hostauth.HOST_KEY_REQUEST))
            self.assertFalse(hostauth.HOST_KEY_REQUEST.startswith(other))
        server_messages = (messages.HEY_THERE, messages.SERVER_KEY_PREFIX) + messages.ERROR_REPLIES
        for other in server_messages:
            self.assertFalse(other.startswith(hostauth.SIGNATURE_PREFIX))
            self.assertFalse(hostauth.SIGNATURE_PREFIX.startswith(other))


class AdminHostkeyTests(unittest.TestCase):
    """``keyx-admin hostkey``: the conventions of the other keyx-admin commands
    (tests/test_admin.py): one line on stderr and exit 1 for a failure."""

    def setUp(self):
        self.directory = self.mktemp()
        os.mkdir(self.directory)
        self.output = os.path.join(self.directory, "keyx-host-key")
        self.generated = []
        real_generate = hostkey.generate_private_key

        def generate():
            self.generated.append(True)
            return real_generate()

        self.patch(hostkey, "generate_private_key", generate)

    def admin(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        status = admin.main(list(argv), out=out, err=err)
        return status, out.getvalue(), err.getvalue()

    def test_writes_the_key_and_prints_its_fingerprint(self):
        status, out, err = self.admin("hostkey", "-o", self.output)
        self.assertEqual((status, err), (0, ""))
        loaded = hostkey.load_host_key(self.output)
        self.assertEqual(out, (
            f"wrote {self.output} (mode 0600) and {self.output}.pub; "
            f"use it with: twistd -n keyx --host-key {self.output}\n"
            f"ED25519 key fingerprint is {loaded.fingerprint}\n"))
        self.assertEqual(stat.S_IMODE(os.stat(self.output).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(self.output + ".pub").st_mode), 0o644)
        with open(self.output + ".pub", "rb") as f:
            self.assertEqual(f.read().split()[1], base64.b64encode(loaded.blob))
        self.assertEqual(sorted(os.listdir(self.directory)),
                         ["keyx-host-key", "keyx-host-key.pub"])

    def test_fingerprint_as_ssh_keygen_prints_it(self):
        if SSH_KEYGEN is None:
            raise unittest.SkipTest("ssh-keygen is not installed (apt-get install openssh-client)")
        _, out, _ = self.admin("hostkey", "-o", self.output)
        listed = subprocess.run([SSH_KEYGEN, "-lf", self.output], capture_output=True,
                                timeout=30)
        self.assertEqual(out.splitlines()[1],
                         f"ED25519 key fingerprint is {listed.stdout.split()[1].decode()}")

    def test_no_secret_printed(self):
        _, out, err = self.admin("hostkey", "-o", self.output)
        with open(self.output, "rb") as f:
            private = f.read()
        body = b"".join(private.splitlines()[1:-1]).decode()
        for chunk in (body[i:i + 16] for i in range(0, len(body) - 16, 16)):
            self.assertNotIn(chunk, out + err)

    def test_existing_files_are_kept(self):
        for existing in (self.output, self.output + ".pub"):
            with open(existing, "wb") as f:
                f.write(b"precious")
            status, out, err = self.admin("hostkey", "-o", self.output)
            self.assertEqual((status, out, err),
                             (1, "", f"keyx-admin: {existing} exists; use --force to replace it\n"))
            with open(existing, "rb") as f:
                self.assertEqual(f.read(), b"precious")
            os.unlink(existing)
        self.assertEqual(self.generated, [])

    def test_force_replaces_both(self):
        for existing in (self.output, self.output + ".pub"):
            with open(existing, "wb") as f:
                f.write(b"old")
        status, _, err = self.admin("hostkey", "--force", "-o", self.output)
        self.assertEqual((status, err), (0, ""))
        hostkey.load_host_key(self.output)
        with open(self.output + ".pub", "rb") as f:
            self.assertTrue(f.read().startswith(b"ssh-ed25519 AAAA"))

    def test_directory(self):
        for force in ([], ["--force"]):
            status, out, err = self.admin("hostkey", "-o", self.directory, *force)
            self.assertEqual((status, out, err), (
                1, "", f"keyx-admin: cannot write {self.directory}: it is a directory\n"))
        os.mkdir(self.output + ".pub")
        status, out, err = self.admin("hostkey", "-o", self.output, "--force")
        self.assertEqual((status, out, err), (
            1, "", f"keyx-admin: cannot write {self.output}.pub: it is a directory\n"))
        self.assertEqual(self.generated, [])

    def test_missing_directory(self):
        output = os.path.join(self.directory, "missing", "key")
        status, out, err = self.admin("hostkey", "-o", output)
        self.assertEqual((status, out, err), (
            1, "", f"keyx-admin: cannot write {output}: no directory "
                   f"{os.path.abspath(os.path.dirname(output))}\n"))

    def test_write_error(self):
        def refuse(path, data, mode=0o644):
            raise PermissionError(13, "Permission denied", path)

        self.patch(hostkey, "write_file_atomically", refuse)
        status, out, err = self.admin("hostkey", "-o", self.output)
        self.assertEqual((status, out, err), (
            1, "", f"keyx-admin: cannot write host key {self.output}: Permission denied\n"))

    def test_public_key_write_error(self):
        real_write = hostkey.write_file_atomically

        def refuse_pub(path, data, mode=0o644):
            if path.endswith(".pub"):
                raise OSError(28, "No space left on device", path)
            real_write(path, data, mode)

        self.patch(hostkey, "write_file_atomically", refuse_pub)
        status, out, err = self.admin("hostkey", "-o", self.output)
        self.assertEqual((status, out, err), (
            1, "", f"keyx-admin: wrote host key {self.output} but cannot write "
                   f"{self.output}.pub: No space left on device\n"))

    def test_output_is_required(self):
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        with self.assertRaises(SystemExit) as caught:
            self.admin("hostkey")
        self.assertEqual(caught.exception.code, 2)
        self.assertIn("the following arguments are required: -o/--output", stderr.getvalue())


def _signed_handshake(tamper_index=None, tamper=None):
    """Run today's DH machines (messages 1 to 6) with a man in the middle who
    may change message ``tamper_index``; the server signs its transcript hash,
    the client verifies with its own.  Returns what the client concluded:
    "verified", "refused" (the signature did not verify) or "failed" (the
    handshake itself failed)."""
    from twisted_keyx.groups import ffdh
    from twisted_keyx.dh.handshake import DHClientHandshake, DHServerHandshake
    from twisted_keyx.core.machine import HandshakeFailed

    from .helpers import CLIENT_X, SERVER_X, fixed_key as fixed_dh_key

    host_key = hostkey.HostKey.from_private_key(fixed_key(21))
    group = ffdh.named_group("ffdhe2048")
    server = DHServerHandshake(group, private_key_factory=fixed_dh_key(SERVER_X))
    client = DHClientHandshake(private_key_factory=fixed_dh_key(CLIENT_X))
    index = 1
    message = client.start()
    try:
        while message is not None:
            if index == tamper_index:
                message = tamper(message)
            reply = server.receive(message)
            index += 1
            if index == tamper_index:
                reply = tamper(reply)
            message = client.receive(reply)
            index += 1
    except HandshakeFailed:
        return "failed"
    signature = hostauth.sign(host_key, group.name, server.result.transcript_hash)
    try:
        hostauth.verify(host_key.public_key, client.group.name,
                        client.result.transcript_hash, signature)
    except hostauth.BadHostKeySignature:
        return "refused"
    return "verified"


class TranscriptBindingTests(unittest.TestCase):
    """The signature covers every message of the handshake, in either
    direction: a changed byte either breaks the handshake or the signature."""

    def test_untouched_handshake_verifies(self):
        self.assertEqual(_signed_handshake(), "verified")

    def test_any_changed_byte_in_any_message(self):
        import random

        positions = random.Random(9).sample
        for index in range(1, 7):
            length = {1: 5, 2: 10, 3: 7}.get(index, 200)
            for position in sorted({0, length - 1} | set(positions(range(length), 5))):
                for flip in (0x01, 0x80):
                    def tamper(message, position=position, flip=flip):
                        changed = bytearray(message)
                        changed[min(position, len(message.rstrip()) - 1)] ^= flip
                        return bytes(changed)

                    self.assertIn(_signed_handshake(index, tamper), ("refused", "failed"),
                                  (index, position, flip))

    def test_changed_trailing_whitespace(self):
        # A newline turned into a vertical tab after a PEM block: the PEM
        # reader accepts it, so only the transcript can tell.
        def tamper(message):
            return message[:-1] + b"\x0b"

        for index in (4, 5, 6):
            self.assertIn(_signed_handshake(index, tamper), ("refused", "failed"), index)


class UnframedMessageSevenTests(unittest.TestCase):
    """Message 7 needs only one more PEM prefix in the unframed splitter's
    shapes for the client: it ends at its END line, like messages 5 and 6."""

    def splitter(self):
        from twisted_keyx.dh import raw

        shapes = raw.MessageShapes(
            tokens=raw.SERVER_MESSAGES.tokens,
            pem_prefixes=raw.SERVER_MESSAGES.pem_prefixes + (hostauth.SIGNATURE_PREFIX,))
        return raw.MessageSplitter(shapes, max_length=10000)

    def test_messages_six_and_seven_in_one_read(self):
        host_key = hostkey.HostKey.from_private_key(fixed_key(21))
        seven = hostauth.signature_message(host_key, bytes(64))
        six = messages.SERVER_KEY_PREFIX + read_data("x25519-public.pem")
        splitter = self.splitter()
        splitter.feed(six + seven)
        self.assertEqual(splitter.next_message(), six.rstrip())
        self.assertEqual(splitter.next_message(), seven.rstrip())
        self.assertIsNone(splitter.next_message())

    def test_message_seven_byte_by_byte(self):
        host_key = hostkey.HostKey.from_private_key(fixed_key(21))
        seven = hostauth.signature_message(host_key, bytes(64))
        end = len(seven.rstrip())  # it ends with the END line's dashes
        splitter = self.splitter()
        for i in range(end - 1):
            splitter.feed(seven[i:i + 1])
            self.assertIsNone(splitter.next_message(), i)
        splitter.feed(seven[end - 1:])
        message = splitter.next_message()
        self.assertEqual(message, seven.rstrip())
        self.assertEqual(hostauth.parse_signature_message(message)[1], bytes(64))

    def test_request_is_a_token_the_server_splitter_can_hold(self):
        from twisted_keyx.dh import raw

        shapes = raw.MessageShapes(
            tokens=raw.CLIENT_MESSAGES.tokens + (hostauth.HOST_KEY_REQUEST,),
            pem_prefixes=raw.CLIENT_MESSAGES.pem_prefixes)
        for message in (hostauth.HOST_KEY_REQUEST, messages.HELLO):
            splitter = raw.MessageSplitter(shapes, max_length=10000)
            for i in range(len(message) - 1):
                splitter.feed(message[i:i + 1])
                self.assertIsNone(splitter.next_message(), (message, i))
            splitter.feed(message[-1:])
            self.assertEqual(splitter.next_message(), message)


class DocumentedVectorTests(unittest.TestCase):
    """The example in docs/hostkey.rst ("What is signed"), from the fixture key."""

    SIGNED = bytes.fromhex(
        "00000025747769737465642d6b65797820646820686f7374206b6579207369676e6174757265207631"
        "00000006783235353139"
        "000000330000000b7373682d6564323535313900000020"
        "d18f13cc1fae65bdce9b68639f64423c8d36b27357e1fe9dff2e16ef49b1b0c3"
        "00000020000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
    SIGNATURE = bytes.fromhex(
        "aa2ac6a5afa6eec5218fcd389eb50486fb75ae537da074b0d270353a5d506cf7"
        "3ff054b2f9aae5e727ba9482226375a069fd8a858d9cd71070eb6de8b8475303")
    MESSAGE = (
        b"Host key signature:-----BEGIN KEYX HOST KEY SIGNATURE-----\n"
        b"AAAAMwAAAAtzc2gtZWQyNTUxOQAAACDRjxPMH65lvc6baGOfZEI8jTayc1fh/p3/\n"
        b"LhbvSbGwwwAAAFMAAAALc3NoLWVkMjU1MTkAAABAqirGpa+m7sUhj804nrUEhvt1\n"
        b"rlN9oHSw0nA1Ol1QbPc/8FSy+arl5ye6lIIiY3Wgaf2KhY2c1xBw623ouEdTAw==\n"
        b"-----END KEYX HOST KEY SIGNATURE-----\n")

    def test_vector(self):
        key = hostkey.load_host_key(private_copy(self, "ed25519-host-key"))
        transcript_hash = bytes(range(32))
        self.assertEqual(len(self.SIGNED), 142)
        self.assertEqual(hostauth.signed_data("x25519", key.blob, transcript_hash), self.SIGNED)
        self.assertEqual(hostauth.sign(key, "x25519", transcript_hash), self.SIGNATURE)
        self.assertEqual(hostauth.signature_message(key, self.SIGNATURE), self.MESSAGE)

    def test_the_document_shows_the_vector(self):
        docs = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs")
        with open(os.path.join(docs, "hostkey.rst"), "rb") as f:
            text = f.read()
        for line in self.MESSAGE.splitlines():
            self.assertIn(b"    " + line + b"\n", text)
        for half in (self.SIGNATURE[:32], self.SIGNATURE[32:]):
            self.assertIn(half.hex().encode(), text)
