"""The strict DER reader and the PEM codec (twisted_keyx.groups.asn1)."""

import base64

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial import unittest

from twisted_keyx.groups import asn1
from twisted_keyx.groups.asn1 import DecodeError, Reader

from .helpers import read_data

# Deterministic and without a database file: the suite must not be flaky.
fuzz = settings(derandomize=True, database=None, max_examples=300, deadline=None)


class ReadElementTests(unittest.TestCase):
    def test_short_length(self):
        reader = Reader(b"\x04\x03abc")
        self.assertEqual(reader.read_element(), (0x04, b"abc"))
        self.assertTrue(reader.at_end())

    def test_long_lengths(self):
        for size, header in [(0x80, b"\x81\x80"), (0xFF, b"\x81\xff"),
                             (0x100, b"\x82\x01\x00"), (0x10000, b"\x83\x01\x00\x00")]:
            contents = bytes(range(256)) * (size // 256) + bytes(size % 256)
            self.assertEqual(Reader(b"\x04" + header + contents).read_element(),
                             (0x04, contents))

    def test_elements_one_after_another(self):
        reader = Reader(b"\x02\x01\x05\x02\x01\x06")
        self.assertEqual(reader.read_integer(), 5)
        self.assertFalse(reader.at_end())
        self.assertEqual(reader.read_integer(), 6)
        reader.expect_end()

    def assertRefused(self, data, message):
        with self.assertRaises(DecodeError) as caught:
            Reader(data).read_element()
        self.assertIn(message, str(caught.exception))

    def test_truncated_header(self):
        self.assertRefused(b"", "truncated")
        self.assertRefused(b"\x30", "truncated")

    def test_truncated_contents(self):
        self.assertRefused(b"\x04\x05abcd", "truncated DER contents")
        self.assertRefused(b"\x04\x81\x80" + bytes(0x7F), "truncated DER contents")

    def test_truncated_long_length(self):
        self.assertRefused(b"\x04\x82\x01", "truncated DER length")

    def test_indefinite_length(self):
        # BER's indefinite form (0x80, contents, end-of-contents): DER forbids it.
        self.assertRefused(b"\x30\x80\x02\x01\x01\x00\x00", "unsupported DER length form")

    def test_length_of_length_bound(self):
        self.assertRefused(b"\x04\x85\x01\x00\x00\x00\x00", "unsupported DER length form")

    def test_non_minimal_lengths(self):
        # A long form for a length that fits the short form.
        self.assertRefused(b"\x04\x81\x05abcde", "non-minimal DER length")
        self.assertRefused(b"\x04\x81\x00", "non-minimal DER length")
        # A leading zero byte in the long form.
        self.assertRefused(b"\x04\x82\x00\x80" + bytes(0x80), "non-minimal DER length")

    def test_wrong_tag(self):
        with self.assertRaises(DecodeError) as caught:
            Reader(b"\x04\x01\x00").read_integer()
        self.assertIn("expected DER tag 0x02, got 0x04", str(caught.exception))

    def test_trailing_data(self):
        reader = Reader(b"\x02\x01\x01\x00")
        reader.read_integer()
        self.assertRaises(DecodeError, reader.expect_end)

    def test_trailing_data_inside_a_sequence(self):
        sequence = Reader(b"\x30\x04\x02\x01\x01\x00").read_sequence()
        self.assertEqual(sequence.read_integer(), 1)
        self.assertRaises(DecodeError, sequence.expect_end)

    def test_sequence_longer_than_its_parent(self):
        # The inner length claims more than the outer element holds.
        outer = Reader(b"\x30\x03\x30\x05\x02")
        self.assertRaises(DecodeError, outer.read_sequence().read_sequence)


class IntegerTests(unittest.TestCase):
    def test_minimal_non_negative(self):
        cases = {b"\x00": 0, b"\x01": 1, b"\x7f": 127, b"\x00\x80": 128,
                 b"\x00\xff": 255, b"\x01\x00": 256, b"\x7f\xff": 0x7FFF}
        for contents, value in cases.items():
            self.assertEqual(Reader(asn1.encode(asn1.INTEGER, contents)).read_integer(), value)

    def test_empty(self):
        with self.assertRaises(DecodeError) as caught:
            Reader(b"\x02\x00").read_integer()
        self.assertIn("empty INTEGER", str(caught.exception))

    def test_negative(self):
        for contents in (b"\x80", b"\xff", b"\xff\x7f", b"\x80\x00"):
            with self.assertRaises(DecodeError) as caught:
                Reader(asn1.encode(asn1.INTEGER, contents)).read_integer()
            self.assertIn("negative INTEGER", str(caught.exception))

    def test_non_minimal(self):
        for contents in (b"\x00\x00", b"\x00\x01", b"\x00\x7f", b"\x00\x00\x80"):
            with self.assertRaises(DecodeError) as caught:
                Reader(asn1.encode(asn1.INTEGER, contents)).read_integer()
            self.assertIn("non-minimal INTEGER", str(caught.exception))

    def test_encode(self):
        self.assertEqual(asn1.encode_integer(0), b"\x02\x01\x00")
        self.assertEqual(asn1.encode_integer(127), b"\x02\x01\x7f")
        self.assertEqual(asn1.encode_integer(128), b"\x02\x02\x00\x80")
        self.assertEqual(asn1.encode_integer(256), b"\x02\x02\x01\x00")
        self.assertEqual(asn1.encode_integer(2**2048 - 1)[:5], b"\x02\x82\x01\x01\x00")

    def test_encode_negative(self):
        self.assertRaises(ValueError, asn1.encode_integer, -1)

    @fuzz
    @given(st.integers(min_value=0, max_value=2**8300))
    def test_round_trip(self, value):
        reader = Reader(asn1.encode_integer(value))
        self.assertEqual(reader.read_integer(), value)
        reader.expect_end()


class BitStringTests(unittest.TestCase):
    def test_octets(self):
        self.assertEqual(Reader(b"\x03\x03\x00\xab\xcd").read_bit_string(), b"\xab\xcd")

    def test_unused_bits(self):
        self.assertRaises(DecodeError, Reader(b"\x03\x02\x04\xf0").read_bit_string)

    def test_empty(self):
        self.assertRaises(DecodeError, Reader(b"\x03\x00").read_bit_string)


class OIDTests(unittest.TestCase):
    def test_dh_oids(self):
        # The DER of the two OIDs, as openssl asn1parse shows them.
        self.assertEqual(asn1.oid("1.2.840.113549.1.3.1"),
                         bytes.fromhex("2a864886f70d010301"))
        self.assertEqual(asn1.oid("1.2.840.10046.2.1"), bytes.fromhex("2a8648ce3e0201"))
        self.assertEqual(asn1.oid("1.3.101.110"), bytes.fromhex("2b656e"))  # X25519

    def test_large_second_arc(self):
        # X.690 8.19.5: the first two arcs form one subidentifier, 40 * X + Y,
        # which is base-128 like the others: {2 999 3} is 88 37 03.
        self.assertEqual(asn1.oid("2.999.3"), bytes.fromhex("883703"))
        self.assertEqual(asn1.oid("2.47"), b"\x7f")
        self.assertEqual(asn1.oid("2.48"), b"\x81\x00")

    def test_read(self):
        der = asn1.encode(asn1.OBJECT_IDENTIFIER, asn1.oid("1.2.840.10046.2.1"))
        self.assertEqual(Reader(der).read_oid(), asn1.oid("1.2.840.10046.2.1"))


class EncodeTests(unittest.TestCase):
    def test_length_forms(self):
        self.assertEqual(asn1.encode(0x04, bytes(0x7F))[:2], b"\x04\x7f")
        self.assertEqual(asn1.encode(0x04, bytes(0x80))[:3], b"\x04\x81\x80")
        self.assertEqual(asn1.encode(0x04, bytes(0xFF))[:3], b"\x04\x81\xff")
        self.assertEqual(asn1.encode(0x04, bytes(0x100))[:4], b"\x04\x82\x01\x00")

    def test_sequence(self):
        self.assertEqual(asn1.encode_sequence(asn1.encode_integer(1), asn1.encode_integer(2)),
                         b"\x30\x06\x02\x01\x01\x02\x01\x02")

    @fuzz
    @given(st.recursive(
        st.integers(min_value=0, max_value=2**2100),
        lambda children: st.lists(children, max_size=5),
        max_leaves=20,
    ))
    def test_nested_round_trip(self, tree):
        def encode(node):
            if isinstance(node, int):
                return asn1.encode_integer(node)
            return asn1.encode_sequence(*map(encode, node))

        def decode(reader, node):
            if isinstance(node, int):
                return reader.read_integer()
            inner = reader.read_sequence()
            values = [decode(inner, child) for child in node]
            inner.expect_end()
            return values

        reader = Reader(encode(tree))
        self.assertEqual(decode(reader, tree), tree)
        reader.expect_end()

    @fuzz
    @given(st.binary(max_size=64))
    def test_reader_refuses_garbage_with_decode_error_only(self, data):
        # Whatever a peer sends, the reader either parses it or raises
        # DecodeError: never IndexError, ValueError from int(), etc.
        reader = Reader(data)
        try:
            while not reader.at_end():
                tag, contents = reader.read_element()
                if tag == asn1.INTEGER:
                    Reader(asn1.encode(tag, contents)).read_integer()
        except DecodeError:
            pass


PUBLIC_KEY = b"PUBLIC KEY"


class PEMTests(unittest.TestCase):
    der = bytes(range(256)) * 2

    def test_encode_layout(self):
        pem = asn1.pem_encode(PUBLIC_KEY, self.der)
        lines = pem.split(b"\n")
        self.assertEqual(lines[0], b"-----BEGIN PUBLIC KEY-----")
        self.assertEqual(lines[-2], b"-----END PUBLIC KEY-----")
        self.assertEqual(lines[-1], b"")  # ends with a newline
        body = lines[1:-2]
        self.assertTrue(all(len(line) == 64 for line in body[:-1]))
        self.assertLessEqual(len(body[-1]), 64)
        self.assertEqual(base64.b64decode(b"".join(body)), self.der)

    def test_encode_like_openssl(self):
        # OpenSSL's own output is reproduced byte for byte.
        pem = read_data("ffdhe2048.pem")
        label, der = asn1.pem_decode(pem, (b"DH PARAMETERS",))
        self.assertEqual(asn1.pem_encode(label, der), pem)

    @fuzz
    @given(st.binary(min_size=1, max_size=600))
    def test_round_trip(self, der):
        pem = asn1.pem_encode(PUBLIC_KEY, der)
        self.assertEqual(asn1.pem_decode(pem, (PUBLIC_KEY,)), (PUBLIC_KEY, der))

    def test_labels(self):
        pem = asn1.pem_encode(b"DH PARAMETERS", self.der)
        labels = (b"DH PARAMETERS", b"X9.42 DH PARAMETERS")
        self.assertEqual(asn1.pem_decode(pem, labels), (b"DH PARAMETERS", self.der))
        with self.assertRaises(DecodeError) as caught:
            asn1.pem_decode(pem, (PUBLIC_KEY,))
        self.assertIn("unexpected PEM label 'DH PARAMETERS'", str(caught.exception))

    def test_crlf(self):
        pem = asn1.pem_encode(PUBLIC_KEY, self.der).replace(b"\n", b"\r\n")
        self.assertEqual(asn1.pem_decode(pem, (PUBLIC_KEY,)), (PUBLIC_KEY, self.der))

    def test_surrounding_whitespace(self):
        pem = b"\r\n \t" + asn1.pem_encode(PUBLIC_KEY, self.der) + b"\n\n  \r\n"
        self.assertEqual(asn1.pem_decode(pem, (PUBLIC_KEY,)), (PUBLIC_KEY, self.der))

    def test_spaces_around_body_lines(self):
        lines = asn1.pem_encode(PUBLIC_KEY, self.der).splitlines()
        pem = b"\n".join([lines[0]] + [b" " + line + b" \t" for line in lines[1:-1]] + lines[-1:])
        self.assertEqual(asn1.pem_decode(pem, (PUBLIC_KEY,)), (PUBLIC_KEY, self.der))

    def test_a_space_inside_a_body_line_is_refused(self):
        lines = asn1.pem_encode(PUBLIC_KEY, self.der).splitlines()
        lines[1] = lines[1][:10] + b" " + lines[1][10:]
        self.assertRefused(b"\n".join(lines), "not valid base64")

    def assertRefused(self, pem, message):
        with self.assertRaises(DecodeError) as caught:
            asn1.pem_decode(pem, (PUBLIC_KEY,))
        self.assertIn(message, str(caught.exception))

    def test_bad_base64(self):
        pem = asn1.pem_encode(PUBLIC_KEY, self.der)
        self.assertRefused(pem.replace(b"AAEC", b"AA!C", 1), "not valid base64")
        self.assertRefused(pem.replace(b"AAEC", b"AA C", 1), "not valid base64")
        self.assertRefused(
            b"-----BEGIN PUBLIC KEY-----\nAAE\n-----END PUBLIC KEY-----\n", "not valid base64"
        )

    def test_headers_are_not_base64(self):
        pem = asn1.pem_encode(PUBLIC_KEY, self.der).replace(
            b"-----\n", b"-----\nProc-Type: 4,ENCRYPTED\n\n", 1
        )
        self.assertRefused(pem, "not valid base64")

    def test_missing_end(self):
        pem = asn1.pem_encode(PUBLIC_KEY, self.der)
        self.assertRefused(pem[:pem.index(b"-----END")], "END line")

    def test_mismatched_end(self):
        pem = asn1.pem_encode(PUBLIC_KEY, self.der).replace(b"END PUBLIC", b"END PRIVATE")
        self.assertRefused(pem, "END line")

    def test_text_after_end(self):
        self.assertRefused(asn1.pem_encode(PUBLIC_KEY, self.der) + b"extra\n", "END line")

    def test_two_blocks(self):
        pem = asn1.pem_encode(PUBLIC_KEY, b"one") + asn1.pem_encode(PUBLIC_KEY, b"two")
        self.assertRefused(pem, "not valid base64")

    def test_text_before_begin(self):
        self.assertRefused(b"Key:\n" + asn1.pem_encode(PUBLIC_KEY, self.der), "BEGIN line")

    def test_not_pem(self):
        self.assertRefused(b"", "not a PEM block")
        self.assertRefused(b"   \n", "not a PEM block")
        self.assertRefused(b"-----BEGIN PUBLIC KEY-----", "not a PEM block")
        self.assertRefused(self.der, "")

    def test_empty_body(self):
        self.assertRefused(b"-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n",
                           "empty PEM body")

    @fuzz
    @given(st.binary(max_size=200))
    def test_garbage_raises_decode_error_only(self, data):
        try:
            asn1.pem_decode(b"-----BEGIN PUBLIC KEY-----\n" + data
                            + b"\n-----END PUBLIC KEY-----", (PUBLIC_KEY,))
            asn1.pem_decode(data, (PUBLIC_KEY,))
        except DecodeError:
            pass
