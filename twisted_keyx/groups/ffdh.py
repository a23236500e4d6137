"""Finite-field Diffie-Hellman: the FFDH groups of the registry.

A :class:`FFDHGroup` is a validated set of domain parameters (p, g and, when it is
known, the order q of the subgroup g generates).  It makes key pairs,
serialises public keys, checks a peer's public key and computes the shared
secret (docs/protocols.rst, Groups).  Groups are either the RFC 7919 named
groups built in here or a PEM parameter file checked once, when it is loaded.

Parameters from a file or a server are checked once, when loaded, with GMP
(gmpy2's ``is_prime``, ``powmod``: :mod:`twisted_keyx.groups.primecheck`); when
they fail, OpenSSL's DH_check (via cryptography) is asked too, for its more
detailed reason.  :func:`read_parameters_pem` is the cheap half (encoding,
sizes, named groups); ``keyx-client dh`` runs the costly half in a child
process (:mod:`twisted_keyx.groups.check`).  Peer keys
are checked with our parser and GMP (``jacobi`` for safe primes, ``powmod``
otherwise).  The arithmetic on private exponents is then:

- for a custom group, GMP's constant-time ``powmod_sec`` on our own key
  objects: cryptography would re-run DH_check for every key object it
  builds in a group OpenSSL does not know (~0.25 s at 2048 bits);
- for the RFC 7919 named groups, OpenSSL's (:class:`OpenSSLGroup`): OpenSSL
  knows them, so nothing is re-checked, and its exponentiation measured 1.6
  times faster than ``powmod_sec`` for ffdhe2048.

benchmarks/bench_groups.py measures both; a handshake in a 2048-bit
``openssl dhparam`` group costs under twice one in ffdhe2048.

cryptography 50 deprecates FFDH and a later release moves it to
``cryptography.hazmat.decrepit.asymmetric.dh``.  This project exists to show
FFDH handshakes, so it uses them on purpose: it imports from the new location
when there is one and silences that single deprecation warning here, and
nowhere else.  If a release of cryptography has FFDH in neither place,
nothing here stops working: the named groups then run on GMP like custom
ones (:data:`OPENSSL_FFDH` is False; same wire, same keys, slower), and only
``keyx-admin genparams`` says it cannot generate parameters (``openssl
dhparam`` can).
"""

import argparse
import secrets
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict

import gmpy2
from cryptography.hazmat.primitives import serialization
from cryptography.utils import CryptographyDeprecationWarning

from twisted_keyx.core.fileutil import read_regular
from twisted_keyx.groups import asn1
from twisted_keyx.groups import api as groupapi
from twisted_keyx.groups import primecheck

_FFDH_DEPRECATION = "Diffie-Hellman over finite fields"

with warnings.catch_warnings():
    # Deliberate: see the module docstring.  Only the FFDH deprecation is
    # silenced, and only while the names are looked up once, at import.
    warnings.filterwarnings(
        "ignore", message=_FFDH_DEPRECATION, category=CryptographyDeprecationWarning
    )
    try:
        from cryptography.hazmat.decrepit.asymmetric import dh as _dh
    except ImportError:
        try:
            from cryptography.hazmat.primitives.asymmetric import dh as _dh
        except ImportError:
            _dh = None
    if _dh is not None:
        _ParameterNumbers = _dh.DHParameterNumbers
        _PublicNumbers = _dh.DHPublicNumbers
        _PrivateNumbers = _dh.DHPrivateNumbers
        _generate_parameters = _dh.generate_parameters

#: Whether this cryptography still has FFDH (see the module docstring).
OPENSSL_FFDH = _dh is not None

#: Smallest and largest modulus accepted from a file or from a server.
#: RFC 7919 section 5.1 and NIST SP 800-56A rev. 3 put the floor at 2048 bits;
#: the ceiling bounds what a peer can make us parse and check.
MIN_BITS = 2048
MAX_BITS = 8192
#: Smallest subgroup order accepted: NIST SP 800-56A rev. 3, 5.5.1.1 (FB set,
#: 2048-bit p, 224-bit q).  OpenSSL's check accepts any prime q, even 3.
MIN_SUBGROUP_BITS = 224

#: Length in bits of a private exponent, by modulus size: at least twice the
#: security strength of the group (NIST SP 800-56A rev. 3, 5.6.1.1.4, with the
#: strengths of SP 800-57 part 1 table 2), as RFC 7919 appendix A lists them.
#: A modulus between two sizes takes the longer exponent.
PRIVATE_EXPONENT_BITS = ((2048, 225), (3072, 275), (4096, 325), (6144, 375), (8192, 400))

#: The ``reps`` of gmpy2.is_prime for the one-time checks of p and q
#: (:mod:`twisted_keyx.groups.primecheck`).
PRIME_CHECK_ROUNDS = primecheck.PRIME_CHECK_ROUNDS

# OIDs of the two SubjectPublicKeyInfo / parameter flavours (RFC 3279 2.3.3).
_OID_PKCS3_DH = asn1.oid("1.2.840.113549.1.3.1")  # dhKeyAgreement, PKCS #3
_OID_X942_DH = asn1.oid("1.2.840.10046.2.1")  # dhpublicnumber, ANSI X9.42

PKCS3_LABEL = b"DH PARAMETERS"
X942_LABEL = b"X9.42 DH PARAMETERS"
PUBLIC_KEY_LABEL = b"PUBLIC KEY"

# RFC 7919 appendix A: p = 2^b - 2^(b-64) + {[2^(b-130) e] + X} * 2^64 - 1,
# g = 2, q = (p-1)/2.  (tests/test_ffdh.py recomputes them from e.)
FFDHE2048_P = int(
    "FFFFFFFFFFFFFFFFADF85458A2BB4A9AAFDC5620273D3CF1D8B9C583CE2D3695"
    "A9E13641146433FBCC939DCE249B3EF97D2FE363630C75D8F681B202AEC4617A"
    "D3DF1ED5D5FD65612433F51F5F066ED0856365553DED1AF3B557135E7F57C935"
    "984F0C70E0E68B77E2A689DAF3EFE8721DF158A136ADE73530ACCA4F483A797A"
    "BC0AB182B324FB61D108A94BB2C8E3FBB96ADAB760D7F4681D4F42A3DE394DF4"
    "AE56EDE76372BB190B07A7C8EE0A6D709E02FCE1CDF7E2ECC03404CD28342F61"
    "9172FE9CE98583FF8E4F1232EEF28183C3FE3B1B4C6FAD733BB5FCBC2EC22005"
    "C58EF1837D1683B2C6F34A26C1B2EFFA886B423861285C97FFFFFFFFFFFFFFFF",
    16,
)
FFDHE3072_P = int(
    "FFFFFFFFFFFFFFFFADF85458A2BB4A9AAFDC5620273D3CF1D8B9C583CE2D3695"
    "A9E13641146433FBCC939DCE249B3EF97D2FE363630C75D8F681B202AEC4617A"
    "D3DF1ED5D5FD65612433F51F5F066ED0856365553DED1AF3B557135E7F57C935"
    "984F0C70E0E68B77E2A689DAF3EFE8721DF158A136ADE73530ACCA4F483A797A"
    "BC0AB182B324FB61D108A94BB2C8E3FBB96ADAB760D7F4681D4F42A3DE394DF4"
    "AE56EDE76372BB190B07A7C8EE0A6D709E02FCE1CDF7E2ECC03404CD28342F61"
    "9172FE9CE98583FF8E4F1232EEF28183C3FE3B1B4C6FAD733BB5FCBC2EC22005"
    "C58EF1837D1683B2C6F34A26C1B2EFFA886B4238611FCFDCDE355B3B6519035B"
    "BC34F4DEF99C023861B46FC9D6E6C9077AD91D2691F7F7EE598CB0FAC186D91C"
    "AEFE130985139270B4130C93BC437944F4FD4452E2D74DD364F2E21E71F54BFF"
    "5CAE82AB9C9DF69EE86D2BC522363A0DABC521979B0DEADA1DBF9A42D5C4484E"
    "0ABCD06BFA53DDEF3C1B20EE3FD59D7C25E41D2B66C62E37FFFFFFFFFFFFFFFF",
    16,
)
FFDHE4096_P = int(
    "FFFFFFFFFFFFFFFFADF85458A2BB4A9AAFDC5620273D3CF1D8B9C583CE2D3695"
    "A9E13641146433FBCC939DCE249B3EF97D2FE363630C75D8F681B202AEC4617A"
    "D3DF1ED5D5FD65612433F51F5F066ED0856365553DED1AF3B557135E7F57C935"
    "984F0C70E0E68B77E2A689DAF3EFE8721DF158A136ADE73530ACCA4F483A797A"
    "BC0AB182B324FB61D108A94BB2C8E3FBB96ADAB760D7F4681D4F42A3DE394DF4"
    "AE56EDE76372BB190B07A7C8EE0A6D709E02FCE1CDF7E2ECC03404CD28342F61"
    "9172FE9CE98583FF8E4F1232EEF28183C3FE3B1B4C6FAD733BB5FCBC2EC22005"
    "C58EF1837D1683B2C6F34A26C1B2EFFA886B4238611FCFDCDE355B3B6519035B"
    "BC34F4DEF99C023861B46FC9D6E6C9077AD91D2691F7F7EE598CB0FAC186D91C"
    "AEFE130985139270B4130C93BC437944F4FD4452E2D74DD364F2E21E71F54BFF"
    "5CAE82AB9C9DF69EE86D2BC522363A0DABC521979B0DEADA1DBF9A42D5C4484E"
    "0ABCD06BFA53DDEF3C1B20EE3FD59D7C25E41D2B669E1EF16E6F52C3164DF4FB"
    "7930E9E4E58857B6AC7D5F42D69F6D187763CF1D5503400487F55BA57E31CC7A"
    "7135C886EFB4318AED6A1E012D9E6832A907600A918130C46DC778F971AD0038"
    "092999A333CB8B7A1A1DB93D7140003C2A4ECEA9F98D0ACC0A8291CDCEC97DCF"
    "8EC9B55A7F88A46B4DB5A851F44182E1C68A007E5E655F6AFFFFFFFFFFFFFFFF",
    16,
)

NAMED_GROUP_PRIMES = {
    "ffdhe2048": FFDHE2048_P,
    "ffdhe3072": FFDHE3072_P,
    "ffdhe4096": FFDHE4096_P,
}
DEFAULT_GROUP = "ffdhe2048"


class ParameterError(groupapi.GroupError):
    """Domain parameters (from a file or from a server) are unusable."""


#: A peer's public key is not a valid key in our group; the message says why.
InvalidPublicKey = groupapi.InvalidPublicKey


def jacobi(a, n):
    """The Jacobi symbol (a/n) for odd n > 0; for prime n it is Legendre's.

    For a safe prime p = 2q + 1, y lies in the subgroup of order q exactly
    when y is a quadratic residue, i.e. (y/p) = 1.  GMP computes it in a few
    microseconds at 2048 bits.  y is public, so its timing leaks nothing.
    """
    return int(gmpy2.jacobi(a, n))


def private_exponent_bits(bits):
    """Bits of a private exponent for a modulus of ``bits`` bits
    (:data:`PRIVATE_EXPONENT_BITS`)."""
    for modulus_bits, exponent_bits in PRIVATE_EXPONENT_BITS:
        if bits <= modulus_bits:
            return exponent_bits
    raise ValueError(f"no private exponent length for a {bits}-bit modulus")


def _der_length_bound(bits, integers):
    """Upper bound on the DER size of a structure of ``integers`` integers of
    at most ``bits`` bits each, plus the fixed framing of an SPKI."""
    return integers * ((bits + 7) // 8 + 6) + 64


pem_length_bound = asn1.pem_length_bound


#: Largest PEM public key (X9.42: p, g, q, y) any accepted group can produce.
MAX_PUBLIC_KEY_PEM = pem_length_bound(_der_length_bound(MAX_BITS, 4))
#: Largest PEM parameter block accepted from a server or a file.
MAX_PARAMETERS_PEM = pem_length_bound(_der_length_bound(MAX_BITS, 3) + 64)


def _read_domain_parameters(reader, flavour):
    """Read (p, g, q) from a PKCS #3 DHParameter or X9.42 DomainParameters."""
    p = reader.read_integer()
    g = reader.read_integer()
    q = None
    if flavour == "x942":
        q = reader.read_integer()
        # j (the cofactor) and validationParms are optional and not needed.
        if not reader.at_end():
            tag, _ = reader.read_element()
            if tag == asn1.INTEGER and not reader.at_end():
                reader.read(asn1.SEQUENCE)
            elif tag not in (asn1.INTEGER, asn1.SEQUENCE):
                raise asn1.DecodeError("unexpected element in X9.42 parameters")
    elif not reader.at_end():
        reader.read_integer()  # PKCS #3 privateValueLength, a hint only
    reader.expect_end()
    return p, g, q


def parse_parameters_pem(data):
    """Parse ``DH PARAMETERS`` (PKCS #3) or ``X9.42 DH PARAMETERS`` PEM.

    Returns ``(p, g, q, label)`` with q None for PKCS #3; raises
    :class:`ParameterError`.  Nothing is validated beyond the encoding.
    """
    if len(data) > MAX_PARAMETERS_PEM:
        raise ParameterError("parameter block is too large")
    try:
        label, der = asn1.pem_decode(data, (PKCS3_LABEL, X942_LABEL))
        flavour = "x942" if label == X942_LABEL else "pkcs3"
        outer = asn1.Reader(der)
        p, g, q = _read_domain_parameters(outer.read_sequence(), flavour)
        outer.expect_end()
    except asn1.DecodeError as e:
        raise ParameterError(f"not DH parameters in PEM: {e}") from None
    return p, g, q, label


def parse_public_key_pem(data):
    """Parse a PEM SubjectPublicKeyInfo holding a DH key: ``(p, g, q, y)``.

    Raises :class:`InvalidPublicKey` for anything else (bad PEM, RSA, X25519,
    trailing bytes...).  Range and group membership are :class:`FFDHGroup`'s job.
    """
    if len(data) > MAX_PUBLIC_KEY_PEM:
        raise InvalidPublicKey("public key is too large")
    try:
        algorithm_oid, algorithm, key_bits = asn1.read_public_key_pem(data, PUBLIC_KEY_LABEL)
        if algorithm_oid == _OID_PKCS3_DH:
            flavour = "pkcs3"
        elif algorithm_oid == _OID_X942_DH:
            flavour = "x942"
        else:
            raise InvalidPublicKey("not a Diffie-Hellman public key")
        p, g, q = _read_domain_parameters(algorithm.read_sequence(), flavour)
        algorithm.expect_end()
        key = asn1.Reader(key_bits)
        y = key.read_integer()
        key.expect_end()
    except asn1.DecodeError as e:
        raise InvalidPublicKey(f"not a PEM public key: {e}") from None
    return p, g, q, y


def bits_argument(text):
    """An ``argparse`` type: a modulus size, :data:`MIN_BITS` to :data:`MAX_BITS`
    (``keyx-admin genparams --bits``, ``keyx-client dh --max-bits``)."""
    try:
        bits = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not MIN_BITS <= bits <= MAX_BITS:
        raise argparse.ArgumentTypeError(
            f"must be between {MIN_BITS} and {MAX_BITS}, not {bits}")
    return bits


def encode_parameters_pem(p, g, q=None):
    """PEM of (p, g) as PKCS #3 ``DH PARAMETERS``, or with q as X9.42."""
    if q is None:
        der = asn1.encode_sequence(asn1.encode_integer(p), asn1.encode_integer(g))
        return asn1.pem_encode(PKCS3_LABEL, der)
    der = asn1.encode_sequence(
        asn1.encode_integer(p), asn1.encode_integer(g), asn1.encode_integer(q)
    )
    return asn1.pem_encode(X942_LABEL, der)


@dataclass(frozen=True, eq=False, repr=False)
class FFDHPrivateKey:
    """A private exponent x and its public value y = g^x mod p."""

    x: object
    y: object

    def __repr__(self):
        return "<ffdh.FFDHPrivateKey>"  # never the exponent


@dataclass(frozen=True)
class FFDHPeerKey:
    """A peer's public value y, checked against the group."""

    y: object


@dataclass(frozen=True, eq=False)
class FFDHGroup(groupapi.DiffieHellmanGroup):
    """Validated FFDH domain parameters, and the operations on them.

    Build one with :func:`named_group`, :func:`load_parameters_file` or
    :func:`group_from_parameters_pem`; they check the parameters once, so
    nothing here re-checks them per connection.
    """

    name: str
    p: int
    g: int
    #: Order of the subgroup generated by g, when known (always for the named
    #: groups), else None: peer keys then get the range check only.
    q: int | None
    #: Message 4 of the handshake, computed once.
    parameters_pem: bytes
    #: The q written into public keys (X9.42 ``dhpublicnumber``), or None
    #: for PKCS #3 ``dhKeyAgreement`` keys with p and g only: what OpenSSL
    #: writes for the same parameters.
    key_q: int | None = None
    _p: object = field(init=False, repr=False)
    _exponent_bound: object = field(init=False, repr=False)
    _algorithm_der: bytes = field(init=False, repr=False)
    _algorithm_contents: bytes = field(init=False, repr=False)
    _max_public_key_pem: int = field(init=False, repr=False)
    _key_layouts: dict = field(init=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "_p", gmpy2.mpz(self.p))
        # Asked for at every message (the server's length limit): once.
        object.__setattr__(self, "_max_public_key_pem",
                           pem_length_bound(_der_length_bound(self.bits, 4)))
        # NIST SP 800-56A rev. 3, 5.6.1.1.4: x in [1, M - 1] with
        # M = min(2^N, q); here x >= 2, so that y is never g itself.
        bound = 1 << private_exponent_bits(self.bits)
        if self.q is not None:
            bound = min(bound, self.q)
        object.__setattr__(self, "_exponent_bound", bound)
        if self.key_q is None:
            oid, parameters = _OID_PKCS3_DH, (self.p, self.g)
        else:
            oid, parameters = _OID_X942_DH, (self.p, self.g, self.key_q)
        object.__setattr__(self, "_algorithm_der", asn1.encode_sequence(
            asn1.encode(asn1.OBJECT_IDENTIFIER, oid),
            asn1.encode_sequence(*map(asn1.encode_integer, parameters)),
        ))
        object.__setattr__(self, "_algorithm_contents",
                           asn1.Reader(self._algorithm_der).read(asn1.SEQUENCE))
        object.__setattr__(self, "_key_layouts", self._own_key_layouts())

    def _own_key_layouts(self):
        """How this group writes a key whose y takes ``len(p)`` or one more
        bytes of INTEGER contents (all but about 1 in 256 keys), keyed by the
        DER's length: the bytes before y (the SPKI's header, this group's
        AlgorithmIdentifier, the BIT STRING's and the INTEGER's headers) and
        the contents' length.  :meth:`_read_own_key` compares with them."""
        layouts = {}
        for length in (self.byte_length, self.byte_length + 1):
            contents = bytes(length)
            der = asn1.encode_sequence(self._algorithm_der, asn1.encode(
                asn1.BIT_STRING, b"\0" + asn1.encode(asn1.INTEGER, contents)))
            layouts[len(der)] = (der[:-length], length)
        return layouts

    @property
    def bits(self):
        return self.p.bit_length()

    @property
    def byte_length(self):
        """Length of the shared secret: len(p) in bytes."""
        return (self.bits + 7) // 8

    secret_length = byte_length

    @property
    def parameters_message(self):
        return self.parameters_pem

    @property
    def max_public_key_pem(self):
        """Largest PEM public key a peer can legitimately send in this group."""
        return self._max_public_key_pem

    max_public_key_message = max_public_key_pem

    def generate_private_key(self):
        x = 2 + secrets.randbelow(self._exponent_bound - 2)
        return self._key(gmpy2.mpz(x))

    def private_key_from_value(self, x):
        """The private key whose secret value is ``x``.

        For tests and test vectors only (a fixed key makes the handshake's
        bytes reproducible); real keys come from :meth:`generate_private_key`.
        """
        if not 1 < x < (self.q or self.p - 1):
            raise ValueError("the private value is out of range")
        return self._key(gmpy2.mpz(x))

    def _key(self, x):
        return FFDHPrivateKey(x, gmpy2.powmod_sec(self.g, x, self._p))

    def public_key_pem(self, private_key):
        """PEM SubjectPublicKeyInfo (RFC 3279 2.3.3), as OpenSSL writes it."""
        public_key = asn1.encode(asn1.BIT_STRING, b"\0" + asn1.encode_integer(int(private_key.y)))
        return asn1.pem_encode(PUBLIC_KEY_LABEL, asn1.encode_sequence(self._algorithm_der, public_key))

    def load_peer_key(self, pem):
        """Check a peer's PEM public key against this group and load it.

        Checks, in order: it is a DH SubjectPublicKeyInfo; its p and g (and q,
        if it carries one) are ours; 1 < y < p - 1; y is in the subgroup of
        order q when q is known (NIST SP 800-56A rev. 3, 5.6.2.3.1).  Raises
        :class:`InvalidPublicKey` with the reason.
        """
        y = self._read_own_key(pem)
        if y is None:
            p, g, q, y = parse_public_key_pem(pem)
            if p != self.p or g != self.g:
                raise InvalidPublicKey("key is on another group")
            if q is not None and self.q is not None and q != self.q:
                raise InvalidPublicKey("key is on another group")
        if not 1 < y < self.p - 1:
            raise InvalidPublicKey("public value out of range")
        y = gmpy2.mpz(y)
        if not self.in_subgroup(y):
            raise InvalidPublicKey("public value is not in the prime-order subgroup")
        return FFDHPeerKey(y)

    def _read_own_key(self, pem):
        """y, if ``pem`` is a strict DER key whose AlgorithmIdentifier is
        byte for byte the one this group writes (as every client here and
        OpenSSL write it), read without decoding p, g and q again; else None,
        and the general parser decides (and says what is wrong)."""
        if len(pem) > self.max_public_key_pem:
            return None
        try:
            _, der = asn1.pem_decode(pem, (PUBLIC_KEY_LABEL,))
            layout = self._key_layouts.get(len(der))
            if layout is not None and der.startswith(layout[0]):
                # Byte for byte our layout up to y: only y's contents to check.
                return asn1.integer_from_contents(der[-layout[1]:])
            outer = asn1.Reader(der)
            spki = outer.read_sequence()
            outer.expect_end()
            tag, algorithm = spki.read_element()
            if tag != asn1.SEQUENCE or algorithm != self._algorithm_contents:
                return None
            key = asn1.Reader(spki.read_bit_string())
            spki.expect_end()
            y = key.read_integer()
            key.expect_end()
        except asn1.DecodeError:
            return None
        return y

    def in_subgroup(self, y):
        if self.q is None:
            return True
        if 2 * self.q + 1 == self.p:
            return gmpy2.jacobi(y, self._p) == 1
        return gmpy2.powmod(y, self.q, self._p) == 1

    def exchange(self, private_key, peer_key):
        """The shared secret, exactly len(p) bytes, left-padded with zeros."""
        secret = gmpy2.powmod_sec(peer_key.y, private_key.x, self._p)
        if secret == 1:  # cannot happen for a checked key; refuse it anyway
            raise InvalidPublicKey("the shared secret is degenerate")
        return int(secret).to_bytes(self.byte_length, "big")


@dataclass(frozen=True, eq=False)
class OpenSSLGroup(FFDHGroup):
    """A named group whose keys and exchange are OpenSSL's, via cryptography
    (faster than GMP for these groups: see the module docstring).  Peer keys
    get the same checks as in :class:`FFDHGroup`."""

    _parameter_numbers: object = field(init=False, repr=False)
    _parameters: object = field(init=False, repr=False)

    def __post_init__(self):
        super().__post_init__()
        # OpenSSL recognises the RFC 7919 (p, g) and knows q itself, so only
        # p and g are handed over; that is also what keeps key loading fast.
        numbers = _ParameterNumbers(self.p, self.g)
        object.__setattr__(self, "_parameter_numbers", numbers)
        object.__setattr__(self, "_parameters", numbers.parameters())

    def generate_private_key(self):
        return self._parameters.generate_private_key()

    def _key(self, x):
        public_numbers = _PublicNumbers(int(gmpy2.powmod_sec(self.g, x, self._p)),
                                        self._parameter_numbers)
        return _PrivateNumbers(int(x), public_numbers).private_key()

    def public_key_pem(self, private_key):
        return private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def load_peer_key(self, pem):
        y = super().load_peer_key(pem).y
        return _PublicNumbers(int(y), self._parameter_numbers).public_key()

    def exchange(self, private_key, peer_key):
        secret = private_key.exchange(peer_key)
        return secret.rjust(self.byte_length, b"\0")  # cryptography pads; make sure


def _openssl_check(p, g, q):
    """OpenSSL's DH_check, via cryptography: p prime, and a safe prime when q
    is absent; q prime and g^q = 1 when q is given; 1 < g < p - 1.  Without
    FFDH in cryptography, nothing to add to GMP's reason."""
    if not OPENSSL_FFDH:
        return
    try:
        _ParameterNumbers(p, g, q).parameters()
    except ValueError as e:
        raise ParameterError(f"the parameters failed OpenSSL's safety checks ({e})") from None


def _check_parameters(p, g, q):
    """Check (p, g, q) with GMP; if they fail, give OpenSSL's reason when it
    refuses them too (it checks no more than GMP does, and takes longer:
    4.2 s against 0.5 s for a 4096-bit safe prime)."""
    try:
        _gmp_check(p, g, q)
    except ParameterError:
        _openssl_check(p, g, q)
        raise


def _gmp_check(p, g, q):
    """The checks every handshake then relies on, with GMP
    (:func:`twisted_keyx.groups.primecheck.gmp_problem`)."""
    problem = primecheck.gmp_problem(p, g, q)
    if problem is not None:
        raise ParameterError(problem)


def _check_sizes(p, g, q):
    bits = p.bit_length()
    if bits < MIN_BITS:
        raise ParameterError(f"the modulus has {bits} bits; at least {MIN_BITS} are required")
    if bits > MAX_BITS:
        raise ParameterError(f"the modulus has {bits} bits; at most {MAX_BITS} are supported")
    if q is not None and q.bit_length() < MIN_SUBGROUP_BITS:
        raise ParameterError(
            f"the subgroup order q has {q.bit_length()} bits; "
            f"at least {MIN_SUBGROUP_BITS} are required"
        )
    # cryptography refuses g < 2 with a bare ValueError before OpenSSL sees
    # the numbers; a server or a file can send any g, so say it here.
    if not 1 < g < p - 1:
        raise ParameterError("the generator g must satisfy 1 < g < p - 1")


_named_groups: Dict[str, Any] = {}


def named_group(name):
    """One of the RFC 7919 groups built in (``ffdhe2048`` and up), cached."""
    if name not in NAMED_GROUP_PRIMES:
        known = ", ".join(NAMED_GROUP_PRIMES)
        raise ParameterError(f"unknown group {name!r}; known groups: {known}")
    group = _named_groups.get(name)
    if group is None:
        p = NAMED_GROUP_PRIMES[name]
        # RFC 7919 publishes p, g = 2 and q = (p - 1) / 2: nothing to check.
        # OpenSSL knows the groups and writes q into their public keys.
        q = (p - 1) // 2
        kind = OpenSSLGroup if OPENSSL_FFDH else FFDHGroup
        group = kind(name, p, 2, q, encode_parameters_pem(p, 2), key_q=q)
        _named_groups[name] = group
    return group


@dataclass(frozen=True)
class UncheckedParameters:
    """Custom parameters whose encoding and sizes are fine and whose costly
    check (p and q prime: 0.5 s of CPU at 4096 bits) is still to come:
    :meth:`check` is it, and :meth:`group` the group once it has passed.
    A client checks a server's in another process
    (:mod:`twisted_keyx.groups.check`)."""

    name: str
    p: int
    g: int
    q: int | None

    def check(self):
        """Raise :class:`ParameterError` unless the parameters are safe."""
        _check_parameters(self.p, self.g, self.q)

    def group(self):
        """The group, for parameters that passed :meth:`check`."""
        p, g, q = self.p, self.g, self.q
        if q is None:
            # p is a safe prime 2q' + 1.  If g is a quadratic residue it
            # generates the subgroup of order q'; otherwise it generates the
            # whole group and only the range check applies.  Keys carry p and g
            # only, as the parameters did.
            subgroup = (p - 1) // 2 if jacobi(g, p) == 1 else None
            return FFDHGroup(self.name, p, g, subgroup, encode_parameters_pem(p, g))
        # X9.42, q = (p - 1) / 2 included: the keys are ours, not OpenSSL's,
        # whose key generation fails for so large a q.
        return FFDHGroup(self.name, p, g, q, encode_parameters_pem(p, g, q), key_q=q)


def read_parameters_pem(data, name="custom", max_bits=MAX_BITS):
    """The cheap half of :func:`group_from_parameters_pem`: a named group
    recognised by its (p, g), or :class:`UncheckedParameters` whose sizes
    have been checked.  Raises :class:`ParameterError`."""
    p, g, q, _ = parse_parameters_pem(data)
    if MAX_BITS >= p.bit_length() > max_bits:
        raise ParameterError(
            f"the modulus has {p.bit_length()} bits; at most {max_bits} are accepted (--max-bits)")
    for group_name, prime in NAMED_GROUP_PRIMES.items():
        if p == prime and g == 2 and q in (None, (p - 1) // 2):
            return named_group(group_name)
    _check_sizes(p, g, q)
    return UncheckedParameters(name, p, g, q)


def group_from_parameters_pem(data, name="custom", max_bits=MAX_BITS):
    """Build an FFDHGroup from PEM parameters (a file, or message 4 from a server).

    A modulus over ``max_bits`` is refused first, before any costly check.
    A named group is recognised by its (p, g) and returned as such.  Raises
    :class:`ParameterError` with a message fit for a user.
    """
    parameters = read_parameters_pem(data, name, max_bits)
    if isinstance(parameters, UncheckedParameters):
        parameters.check()
        return parameters.group()
    return parameters


def load_parameters_file(path):
    """Read and validate a PEM parameter file (``openssl dhparam`` or
    ``openssl genpkey -genparam`` output); raises :class:`ParameterError`."""
    try:
        # A named pipe is refused, not waited on (the daemon hung at start).
        data = read_regular(path, MAX_PARAMETERS_PEM + 1)
    except OSError as e:
        raise ParameterError(f"cannot read {path}: {e.strerror}") from None
    if len(data) > MAX_PARAMETERS_PEM:
        raise ParameterError(
            f"{path}: too large to be a DH parameter file (over {MAX_PARAMETERS_PEM} bytes)")
    try:
        return group_from_parameters_pem(data, name=f"file:{path}")
    except ParameterError as e:
        # Name the file: the user may not know which option the error is about.
        raise ParameterError(f"{path}: {e}") from None


def cryptography_version():
    import cryptography
    return cryptography.__version__


def generate_parameters_pem(bits, generator=2):
    """Generate fresh safe-prime parameters (slow: tens of seconds at 2048 bits)
    and return them as PKCS #3 PEM, the format ``openssl dhparam`` writes."""
    if not MIN_BITS <= bits <= MAX_BITS:
        raise ParameterError(f"bits must be between {MIN_BITS} and {MAX_BITS}")
    if not OPENSSL_FFDH:
        raise ParameterError(
            f"this cryptography ({cryptography_version()}) cannot generate DH parameters; "
            f"use: openssl dhparam -out FILE {bits}")
    with warnings.catch_warnings():
        # Deliberate, as at import: generating FFDH parameters is the point.
        warnings.filterwarnings(
            "ignore", message=_FFDH_DEPRECATION, category=CryptographyDeprecationWarning
        )
        parameters = _generate_parameters(generator=generator, key_size=bits)
    numbers = parameters.parameter_numbers()
    return encode_parameters_pem(numbers.p, numbers.g)
