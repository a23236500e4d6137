"""Groups, parameter files, peer-key validation and the exchange (twisted_keyx.groups.ffdh)."""

import dataclasses
import os
import random

from twisted.trial import unittest

from twisted_keyx.groups import asn1
from twisted_keyx.groups import ffdh
from twisted_keyx.groups.ffdh import InvalidPublicKey, ParameterError

from .helpers import CLIENT_X, SERVER_X, data_path, dh_spki_pem, read_data, run_machines

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def floor_e_times_power_of_two(k):
    """floor(2^k * e), exactly, with integer arithmetic only.

    e = sum 1/n!.  Each term is computed with ``guard`` extra bits and rounded
    down, so the sum S satisfies S <= 2^(k+guard) e < S + terms; when both ends
    agree after dropping the guard bits the floor is exact.
    """
    guard = 64
    total, term, n = 0, 1 << (k + guard), 0
    while term:
        total += term
        n += 1
        term //= n
    low, high = total >> guard, (total + n + 1) >> guard
    assert low == high, "not enough guard bits"
    return low


def rfc7919_prime(bits, x):
    """RFC 7919 appendix A: p = 2^b - 2^(b-64) + {[2^(b-130) e] + X} * 2^64 - 1."""
    return (1 << bits) - (1 << (bits - 64)) \
        + (floor_e_times_power_of_two(bits - 130) + x) * (1 << 64) - 1


def numbers(fixture):
    """(p, g, q) of a parameter fixture, without OpenSSL's slow check."""
    return ffdh.parse_parameters_pem(read_data(fixture))[:3]


class NamedGroupTests(unittest.TestCase):
    def test_primes_from_the_rfc_formula(self):
        for name, bits, x in [("ffdhe2048", 2048, 560316), ("ffdhe3072", 3072, 2625351),
                              ("ffdhe4096", 4096, 5736041)]:
            p = rfc7919_prime(bits, x)
            self.assertEqual(p.bit_length(), bits)
            self.assertEqual(ffdh.NAMED_GROUP_PRIMES[name], p, name)
            group = ffdh.named_group(name)
            self.assertEqual((group.p, group.g, group.q), (p, 2, (p - 1) // 2))
            self.assertEqual(group.byte_length, bits // 8)

    def test_message_4_is_what_openssl_writes(self):
        # tests/data/ffdheN.pem: openssl genpkey -genparam -algorithm DH
        # -pkeyopt group:ffdheN
        for name in ffdh.NAMED_GROUP_PRIMES:
            self.assertEqual(ffdh.named_group(name).parameters_pem,
                             read_data(f"{name}.pem"), name)

    def test_cached(self):
        self.assertIs(ffdh.named_group("ffdhe3072"), ffdh.named_group("ffdhe3072"))

    def test_default(self):
        self.assertEqual(ffdh.DEFAULT_GROUP, "ffdhe2048")

    def test_unknown(self):
        with self.assertRaises(ParameterError) as caught:
            ffdh.named_group("modp2048")
        self.assertEqual(str(caught.exception),
                         "unknown group 'modp2048'; known groups: ffdhe2048, ffdhe3072, ffdhe4096")


class ParameterFileTests(unittest.TestCase):
    def test_openssl_dhparam(self):
        group = ffdh.load_parameters_file(data_path("dhparam-2048.pem"))
        self.assertEqual(group.bits, 2048)
        self.assertEqual(group.g, 2)
        # openssl dhparam makes a safe prime with 2 a quadratic residue, so
        # g generates the subgroup of order (p - 1) / 2 and peers are checked
        # against it.
        self.assertEqual(group.q, (group.p - 1) // 2)
        self.assertEqual(pow(group.g, group.q, group.p), 1)
        self.assertEqual(group.name, "file:" + data_path("dhparam-2048.pem"))
        # Message 4 re-encodes (p, g); OpenSSL wrote exactly that.
        self.assertEqual(group.parameters_pem, read_data("dhparam-2048.pem"))

    def test_openssl_genpkey_dhx_with_validation_parms(self):
        pem = read_data("dhx-2048.pem")
        # The fixture does carry ValidationParms (seed, counter) after q.
        der = asn1.pem_decode(pem, (b"X9.42 DH PARAMETERS",))[1]
        fields = asn1.Reader(der).read_sequence()
        for _ in range(3):
            fields.read_integer()
        self.assertEqual(fields.read_element()[0], asn1.SEQUENCE)

        group = ffdh.load_parameters_file(data_path("dhx-2048.pem"))
        self.assertEqual(group.bits, 2048)
        self.assertEqual(group.q.bit_length(), 224)
        self.assertEqual((group.p - 1) % group.q, 0)
        self.assertEqual(pow(group.g, group.q, group.p), 1)
        # Message 4 carries p, g, q and nothing else.
        self.assertEqual(group.parameters_pem, asn1.pem_encode(
            b"X9.42 DH PARAMETERS",
            asn1.encode_sequence(*map(asn1.encode_integer, (group.p, group.g, group.q))),
        ))

    def test_named_group_in_a_file_is_the_named_group(self):
        group = ffdh.load_parameters_file(data_path("ffdhe2048.pem"))
        self.assertIs(group, ffdh.named_group("ffdhe2048"))
        p = ffdh.FFDHE2048_P
        x942 = ffdh.encode_parameters_pem(p, 2, (p - 1) // 2)
        self.assertIs(ffdh.group_from_parameters_pem(x942), ffdh.named_group("ffdhe2048"))

    def test_exchange_in_file_groups(self):
        # A file's group is checked once, when loaded; its keys are GMP's.
        for name in ("dhparam-2048.pem", "dhx-2048.pem"):
            group = ffdh.load_parameters_file(data_path(name))
            server = group.private_key_from_value(SERVER_X)
            client_y = pow(group.g, CLIENT_X, group.p)
            client_pem = dh_spki_pem(group.p, group.g, client_y, group.q)
            secret = group.exchange(server, group.load_peer_key(client_pem))
            expected = pow(group.g, SERVER_X * CLIENT_X, group.p)
            self.assertEqual(secret, expected.to_bytes(256, "big"), name)

    def test_errors_name_the_file(self):
        path = self.write(b"p = 23, g = 5\n")
        self.assertEqual(self.assertBadFile(path, path),
                         f"{path}: not DH parameters in PEM: not a PEM block")
        big = self.write(b"x" * (ffdh.MAX_PARAMETERS_PEM + 1))
        self.assertEqual(
            self.assertBadFile(big, big),
            f"{big}: too large to be a DH parameter file (over {ffdh.MAX_PARAMETERS_PEM} bytes)")

    def assertBadFile(self, path, message):
        with self.assertRaises(ParameterError) as caught:
            ffdh.load_parameters_file(path)
        self.assertIn(message, str(caught.exception))
        return str(caught.exception)

    def write(self, data):
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(data)
        return path

    def test_missing_file(self):
        path = self.mktemp()
        self.assertEqual(self.assertBadFile(path, "cannot read"),
                         f"cannot read {path}: No such file or directory")

    def test_directory(self):
        path = self.mktemp()
        os.mkdir(path)
        self.assertBadFile(path, "not a regular file")

    def test_named_pipe_is_refused_not_waited_on(self):
        # twistd keyx --params FIFO hung at start, silently, until a writer came.
        path = self.mktemp()
        os.mkfifo(path)
        self.assertEqual(self.assertBadFile(path, "not a regular file"),
                         f"cannot read {path}: not a regular file")

    def test_empty(self):
        self.assertBadFile(self.write(b""), "not DH parameters in PEM: not a PEM block")

    def test_not_pem(self):
        self.assertBadFile(self.write(b"p = 23, g = 5\n"), "not DH parameters in PEM")
        der = asn1.pem_decode(read_data("dhparam-2048.pem"), (b"DH PARAMETERS",))[1]
        self.assertBadFile(self.write(der), "not DH parameters in PEM")

    def test_wrong_label(self):
        self.assertBadFile(self.write(read_data("rsa-2048-public.pem")),
                           "unexpected PEM label 'PUBLIC KEY'")

    def test_too_small(self):
        self.assertBadFile(data_path("dhparam-1024.pem"),
                           "the modulus has 1024 bits; at least 2048 are required")

    def test_too_large(self):
        self.assertBadFile(self.write(ffdh.encode_parameters_pem(2**8193 + 1, 2)),
                           "at most 8192 are supported")

    def test_file_size_is_bounded(self):
        pem = read_data("dhparam-2048.pem")
        padded = pem + b"\n" * (ffdh.MAX_PARAMETERS_PEM - len(pem) + 1)
        self.assertBadFile(self.write(padded), "too large")

    def test_p_not_prime(self):
        composite = 2**2047 + 1  # divisible by 3
        self.assertBadFile(self.write(ffdh.encode_parameters_pem(composite, 2)),
                           "failed OpenSSL's safety checks")

    def test_p_prime_but_not_safe_and_no_q(self):
        # The DHX prime p is prime, but (p - 1) / 2 is not: without q, PKCS #3
        # parameters must be a safe prime.
        p, g, _ = numbers("dhx-2048.pem")
        self.assertBadFile(self.write(ffdh.encode_parameters_pem(p, g)),
                           "failed OpenSSL's safety checks")

    def test_wrong_q(self):
        p, g, q = numbers("dhx-2048.pem")
        pem = ffdh.encode_parameters_pem(p, g, q + 2)
        self.assertBadFile(self.write(pem), "failed OpenSSL's safety checks")

    def test_tiny_subgroup(self):
        self.assertBadFile(data_path("dhx-2048-order3.pem"),
                           "the subgroup order q has 2 bits; at least 224 are required")

    def test_bad_generator(self):
        p = numbers("dhparam-2048.pem")[0]
        for g in (0, 1, p - 1, p, p + 1):
            self.assertBadFile(self.write(ffdh.encode_parameters_pem(p, g)), "1 < g < p - 1")

    def test_truncated(self):
        pem = read_data("dhparam-2048.pem")
        self.assertBadFile(self.write(pem[:len(pem) // 2]), "END line")
        lines = pem.splitlines(keepends=True)
        self.assertBadFile(self.write(b"".join(lines[:3] + lines[-1:])),
                           "truncated DER contents")

    def test_trailing_der(self):
        der = asn1.pem_decode(read_data("dhparam-2048.pem"), (b"DH PARAMETERS",))[1]
        self.assertBadFile(self.write(asn1.pem_encode(b"DH PARAMETERS", der + b"\0\0")),
                           "trailing data")

    def test_error_message_fits_a_log_line(self):
        message = self.assertBadFile(data_path("dhparam-1024.pem"), "1024")
        self.assertNotIn("\n", message)
        self.assertNotIn("Traceback", message)


class PeerKeyTests(unittest.TestCase):
    group = ffdh.named_group("ffdhe2048")

    def key(self, y, p=None, g=2, q="ours"):
        p = self.group.p if p is None else p
        return dh_spki_pem(p, g, y, self.group.q if q == "ours" else q)

    def assertInvalid(self, pem, message, group=None):
        with self.assertRaises(InvalidPublicKey) as caught:
            (group or self.group).load_peer_key(pem)
        self.assertIn(message, str(caught.exception))

    def test_valid_key(self):
        y = pow(2, CLIENT_X, self.group.p)
        for pem in (self.key(y), self.key(y, q=None)):  # X9.42 and PKCS #3 flavours
            peer = self.group.load_peer_key(pem)
            secret = self.group.exchange(self.group.private_key_from_value(SERVER_X), peer)
            self.assertEqual(secret, pow(y, SERVER_X, self.group.p).to_bytes(256, "big"))

    def test_valid_key_with_crlf_and_whitespace(self):
        pem = self.key(pow(2, CLIENT_X, self.group.p)).replace(b"\n", b"\r\n")
        self.group.load_peer_key(b"\n  " + pem + b"  \n")

    def test_bad_pem(self):
        self.assertInvalid(b"Client public key", "not a PEM public key")
        self.assertInvalid(b"", "not a PEM public key")
        self.assertInvalid(self.key(5).replace(b"M", b"*"), "not a PEM public key")

    def test_truncated_pem(self):
        pem = self.key(pow(2, CLIENT_X, self.group.p))
        self.assertInvalid(pem[:len(pem) // 2], "not a PEM public key")
        lines = pem.splitlines(keepends=True)
        self.assertInvalid(b"".join(lines[:5] + lines[-1:]), "truncated DER")

    def test_parameters_instead_of_a_key(self):
        self.assertInvalid(self.group.parameters_pem, "unexpected PEM label 'DH PARAMETERS'")

    def test_rsa_key(self):
        self.assertInvalid(read_data("rsa-2048-public.pem"), "not a Diffie-Hellman public key")

    def test_x25519_key(self):
        self.assertInvalid(read_data("x25519-public.pem"), "not a Diffie-Hellman public key")

    def test_key_on_another_group(self):
        p, g, _ = numbers("dhparam-2048.pem")
        self.assertInvalid(dh_spki_pem(p, g, pow(g, CLIENT_X, p)), "key is on another group")
        p3072 = ffdh.FFDHE3072_P
        self.assertInvalid(dh_spki_pem(p3072, 2, pow(2, CLIENT_X, p3072), (p3072 - 1) // 2),
                           "key is on another group")

    def test_other_generator_or_q(self):
        y = pow(2, CLIENT_X, self.group.p)
        self.assertInvalid(self.key(y, g=5), "key is on another group")
        self.assertInvalid(self.key(y, q=self.group.q - 2), "key is on another group")

    def test_y_out_of_range(self):
        p = self.group.p
        for y in (0, 1, p - 1, p, p + 1, 2**2048):
            self.assertInvalid(self.key(y), "public value out of range")

    def test_y_outside_the_subgroup(self):
        p = self.group.p
        valid = pow(2, CLIENT_X, p)
        # -y is a quadratic non-residue when y is a residue (p = 3 mod 4), so
        # it generates the whole group and leaks x mod 2.
        self.assertEqual(pow(p - valid, (p - 1) // 2, p), p - 1)
        self.assertInvalid(self.key(p - valid), "not in the prime-order subgroup")
        self.assertInvalid(self.key(p - 2), "not in the prime-order subgroup")

    def test_y_outside_the_subgroup_of_an_x942_group(self):
        group = ffdh.load_parameters_file(data_path("dhx-2048.pem"))
        y = 3
        self.assertNotEqual(pow(y, group.q, group.p), 1)
        self.assertInvalid(dh_spki_pem(group.p, group.g, y, group.q),
                           "not in the prime-order subgroup", group)

    def test_trailing_data(self):
        der = asn1.pem_decode(self.key(5), (b"PUBLIC KEY",))[1]
        self.assertInvalid(asn1.pem_encode(b"PUBLIC KEY", der + b"\0"), "trailing data")

    def test_size_is_bounded(self):
        pem = self.key(pow(2, CLIENT_X, self.group.p))
        self.assertInvalid(pem + b" " * ffdh.MAX_PUBLIC_KEY_PEM, "too large")


class OwnKeyFastPathTests(unittest.TestCase):
    """Keys in this group's own encoding are read without decoding p, g, q;
    the answer is the general parser's, and anything else goes to it."""

    def test_same_y_as_the_general_parser(self):
        for name in ("ffdhe2048", "ffdhe3072"):
            group = ffdh.named_group(name)
            for _ in range(10):
                pem = group.public_key_pem(group.generate_private_key())
                y = group._read_own_key(pem)
                self.assertIsNotNone(y)
                self.assertEqual(y, ffdh.parse_public_key_pem(pem)[3])
                self.assertEqual(group._read_own_key(pem.replace(b"\n", b"\r\n")), y)

    def test_other_encodings_go_to_the_general_parser(self):
        group = ffdh.named_group("ffdhe2048")
        y = group._read_own_key(group.public_key_pem(group.generate_private_key()))
        pkcs3 = dh_spki_pem(group.p, group.g, y)  # no q: not this group's own form
        self.assertIsNone(group._read_own_key(pkcs3))
        self.assertEqual(int(group.load_peer_key(pkcs3).public_numbers().y), y)
        other = ffdh.named_group("ffdhe3072")
        foreign = other.public_key_pem(other.generate_private_key())
        self.assertIsNone(group._read_own_key(foreign))
        with self.assertRaisesRegex(InvalidPublicKey, "another group"):
            group.load_peer_key(foreign)
        der = asn1.pem_decode(group.public_key_pem(group.private_key_from_value(SERVER_X)),
                              (b"PUBLIC KEY",))[1]
        trailing = asn1.pem_encode(b"PUBLIC KEY", der + b"\0")
        self.assertIsNone(group._read_own_key(trailing))
        with self.assertRaisesRegex(InvalidPublicKey, "trailing"):
            group.load_peer_key(trailing)


    def own_key(self, group, contents):
        """A key in ``group``'s own layout whose INTEGER contents are ``contents``."""
        der = asn1.encode_sequence(group._algorithm_der, asn1.encode(
            asn1.BIT_STRING, b"\0" + asn1.encode(asn1.INTEGER, contents)))
        return asn1.pem_encode(b"PUBLIC KEY", der)

    def test_the_usual_lengths_need_no_der_reader(self):
        group = ffdh.named_group("ffdhe2048")
        high, low = 2 ** 2047 + 5, 2 ** 2040 + 5  # 257 and 256 bytes of contents
        keys = {y: dh_spki_pem(group.p, group.g, y, group.q) for y in (high, low)}

        class NoReader:
            def __init__(self, data):
                raise AssertionError("the general DER reader was used")

        self.patch(ffdh.asn1, "Reader", NoReader)
        for y, pem in keys.items():
            self.assertEqual(group._read_own_key(pem), y)

    def test_mutated_keys_read_as_the_der_reader_reads_them(self):
        # The layout comparison against the DER reader it stands in for, on
        # keys of the usual lengths with one byte changed anywhere.
        group = ffdh.named_group("ffdhe2048")
        reader_only = dataclasses.replace(group)
        object.__setattr__(reader_only, "_key_layouts", {})
        rng = random.Random(7)
        checked = 0
        for y in (2 ** 2047 + 5, 2 ** 2040 + 5, 2 ** 2040 - 1):
            der = asn1.pem_decode(dh_spki_pem(group.p, group.g, y, group.q), (b"PUBLIC KEY",))[1]
            start = len(der) - (y.bit_length() // 8 + 1)  # where y's contents start
            # The headers at each end of the layout, y's first bytes, and some anywhere.
            positions = [*range(8), *range(start - 12, start + 3), *rng.sample(range(len(der)), 25)]
            for position in positions:
                for value in (0x00, 0x80, 0xFF, der[position] ^ 1, rng.randrange(256)):
                    mutated = der[:position] + bytes([value]) + der[position + 1:]
                    pem = asn1.pem_encode(b"PUBLIC KEY", mutated)
                    self.assertEqual(group._read_own_key(pem), reader_only._read_own_key(pem),
                                     (y, position, value))
                    checked += 1
        self.assertEqual(checked, 3 * 48 * 5)

    def test_a_bad_integer_in_the_usual_layout_goes_to_the_general_parser(self):
        group = ffdh.named_group("ffdhe2048")
        y = 2 ** 2040 + 5
        for contents, reason in ((b"\0" + y.to_bytes(256, "big"), "non-minimal INTEGER"),
                                 (b"\x80" + bytes(255), "negative INTEGER")):
            pem = self.own_key(group, contents)
            self.assertIn(len(asn1.pem_decode(pem, (b"PUBLIC KEY",))[1]), group._key_layouts)
            self.assertIsNone(group._read_own_key(pem))
            with self.assertRaisesRegex(InvalidPublicKey, reason):
                group.load_peer_key(pem)


class KeyTests(unittest.TestCase):
    def test_private_key_from_value(self):
        group = ffdh.named_group("ffdhe2048")
        key = group.private_key_from_value(SERVER_X)
        expected = dh_spki_pem(group.p, 2, pow(2, SERVER_X, group.p), group.q)
        self.assertEqual(group.public_key_pem(key), expected)

    def test_private_value_range(self):
        group = ffdh.named_group("ffdhe2048")
        for x in (0, 1, group.q, group.p):
            self.assertRaises(ValueError, group.private_key_from_value, x)

    def test_shared_secret_is_left_padded(self):
        # Found by search: with these two values g^(ab) mod p has 2032 bits,
        # so the secret starts with two zero bytes and is still len(p) long.
        group = ffdh.named_group("ffdhe2048")
        a, b = SERVER_X, CLIENT_X + 61502
        peer = group.load_peer_key(dh_spki_pem(group.p, 2, pow(2, b, group.p), group.q))
        secret = group.exchange(group.private_key_from_value(a), peer)
        self.assertEqual(len(secret), 256)
        self.assertEqual(secret[:2], b"\0\0")
        self.assertEqual(int.from_bytes(secret, "big"), pow(2, a * b, group.p))

    def test_max_public_key_pem_fits_every_legal_key(self):
        for name in ffdh.NAMED_GROUP_PRIMES:
            group = ffdh.named_group(name)
            largest = dh_spki_pem(group.p, group.g, group.p - 2, group.q)
            self.assertLessEqual(len(largest.replace(b"\n", b"\r\n")),
                                 group.max_public_key_pem)
        p = 2**8192 - 1
        largest = dh_spki_pem(p, p - 2, p - 2, p - 2).replace(b"\n", b"\r\n")
        self.assertLessEqual(len(largest), ffdh.MAX_PUBLIC_KEY_PEM)
        self.assertEqual(ffdh.parse_public_key_pem(largest), (p, p - 2, p - 2, p - 2))

    def test_generate_parameters_bounds(self):
        for bits in (1024, 2047, 8193):
            self.assertRaises(ParameterError, ffdh.generate_parameters_pem, bits)


class JacobiTests(unittest.TestCase):
    def test_against_euler_criterion(self):
        rng = random.Random(7919)
        # pow() at 2048 bits costs ~27 ms, hence fewer samples for that prime.
        for p, samples in [(3, 3), (5, 5), (7, 7), (11, 11), (13, 13), (10007, 300),
                           (2**127 - 1, 300), (ffdh.FFDHE2048_P, 24)]:
            for _ in range(samples):
                a = rng.randrange(p)
                euler = pow(a, (p - 1) // 2, p)
                expected = {0: 0, 1: 1, p - 1: -1}[euler]
                self.assertEqual(ffdh.jacobi(a, p), expected, (a, p))

    def test_composite_modulus(self):
        # (a/n) is multiplicative in n: the product of Legendre symbols.
        def legendre(a, p):
            value = pow(a, (p - 1) // 2, p)
            return -1 if value == p - 1 else value

        rng = random.Random(2)
        for n, factors in [(15, (3, 5)), (9, (3, 3)), (10007 * 10009, (10007, 10009))]:
            for _ in range(100):
                a = rng.randrange(-n, 2 * n)
                expected = 1
                for p in factors:
                    expected *= legendre(a % p, p)
                self.assertEqual(ffdh.jacobi(a, n), expected, (a, n))

    def test_edges(self):
        self.assertEqual(ffdh.jacobi(0, 1), 1)
        self.assertEqual(ffdh.jacobi(0, 7), 0)
        self.assertEqual(ffdh.jacobi(14, 7), 0)
        self.assertEqual(ffdh.jacobi(2, ffdh.FFDHE2048_P), 1)  # p = 7 mod 8


#: Run in a fresh interpreter whose cryptography has no FFDH: the modules
#: are made unimportable after cryptography's own imports, as a release that
#: removed them would be.  Prints what the named group ran on and the bytes
#: of a handshake with fixed keys.
WITHOUT_FFDH = r"""
import json, sys
import cryptography.hazmat.primitives.serialization  # imports dh itself
import cryptography.hazmat.primitives.asymmetric as asymmetric
if hasattr(asymmetric, "dh"):
    delattr(asymmetric, "dh")
sys.modules["cryptography.hazmat.primitives.asymmetric.dh"] = None
sys.modules["cryptography.hazmat.decrepit.asymmetric.dh"] = None
sys.path.insert(0, sys.argv[3])
from twisted_keyx.cli import admin
from twisted_keyx.groups import ffdh
from twisted_keyx.groups import registry as groups
from twisted_keyx.dh.handshake import DHClientHandshake, DHServerHandshake
from tests.helpers import run_machines
group = groups.named("ffdhe2048")
server = DHServerHandshake(group, lambda g: g.private_key_from_value(int(sys.argv[1])))
client = DHClientHandshake(lambda g: g.private_key_from_value(int(sys.argv[2])))
sent = run_machines(client, server)
try:
    ffdh.generate_parameters_pem(2048)
    genparams = None
except ffdh.ParameterError as e:
    genparams = str(e)
print(json.dumps({"openssl": ffdh.OPENSSL_FFDH, "kind": type(group).__name__,
                  "messages": [m.hex() for m in sent],
                  "server_key": server.result.session_key.hex(),
                  "client_key": client.result.session_key.hex(),
                  "genparams": genparams}))
"""


class WithoutCryptographyFFDHTests(unittest.TestCase):
    """If cryptography drops FFDH, the named groups run on GMP, on the same
    wire with the same keys."""

    def test_named_groups_fall_back_to_gmp(self):
        import json
        import subprocess
        import sys

        from twisted_keyx.groups import registry as groups
        from twisted_keyx.dh.handshake import DHClientHandshake, DHServerHandshake

        done = subprocess.run([sys.executable, "-W", "error", "-c", WITHOUT_FFDH,
                               str(SERVER_X), str(CLIENT_X), ROOT],
                              capture_output=True, text=True, timeout=60)
        self.assertEqual(done.returncode, 0, done.stderr)
        without = json.loads(done.stdout)
        self.assertEqual((without["openssl"], without["kind"]), (False, "FFDHGroup"))
        self.assertIn("openssl dhparam", without["genparams"])

        group = groups.named("ffdhe2048")
        self.assertIsInstance(group, ffdh.OpenSSLGroup)  # here, cryptography has FFDH
        server = DHServerHandshake(group, lambda g: g.private_key_from_value(SERVER_X))
        client = DHClientHandshake(lambda g: g.private_key_from_value(CLIENT_X))
        sent = run_machines(client, server)
        self.assertEqual(without["messages"], [m.hex() for m in sent])
        self.assertEqual(without["server_key"], server.result.session_key.hex())
        self.assertEqual(without["client_key"], server.result.session_key.hex())
