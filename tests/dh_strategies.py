"""Hypothesis strategies for hostile DH peers, shared by the property tests
(tests/test_hostile_dh.py) and the fuzz harness (benchmarks/../fuzz).

Every generated message carries what the protocol says must happen to it
(:class:`Item`): ``kind`` names what it is by construction, ``verdict`` says
whether a key or parameter block is valid, invalid or unknown (a mutation may
or may not have broken it).  The tests' oracles work from that, not from the
code under test.
"""

import base64
from dataclasses import dataclass, field

from hypothesis import strategies as st

from twisted_keyx.groups import asn1
from twisted_keyx.groups import ffdh
from twisted_keyx.dh import messages

GROUP = ffdh.named_group("ffdhe2048")
P, Q = GROUP.p, GROUP.q
OID_PKCS3 = asn1.oid("1.2.840.113549.1.3.1")
OID_X942 = asn1.oid("1.2.840.10046.2.1")

VALID, INVALID, UNKNOWN = "valid", "invalid", "unknown"

#: Key pairs made once: generating one per example would dominate the run.
KEY_POOL = [GROUP.generate_private_key() for _ in range(6)]
KEY_POOL_PEM = [GROUP.public_key_pem(k) for k in KEY_POOL]


@dataclass(frozen=True)
class Item:
    """One framed message a peer sends."""

    payload: bytes
    #: hello, params_request, client_key; greeting, parameters, server_key,
    #: error_reply; garbage (no legal message); mutant (unknown meaning).
    kind: str
    verdict: str = UNKNOWN
    #: For a valid key from the pool: its private key (to check the secret).
    private_key: object = field(default=None, compare=False)
    #: For parameters: the name of the group they describe, when valid.
    group: str | None = None


def spki_pem(y, p=P, g=2, q=None, oid=OID_PKCS3, label=b"PUBLIC KEY"):
    """A DH SubjectPublicKeyInfo built by hand, so any y, p, g, q fit."""
    params = [asn1.encode_integer(p), asn1.encode_integer(g)]
    if q is not None:
        params.append(asn1.encode_integer(q))
    algorithm = asn1.encode_sequence(
        asn1.encode(asn1.OBJECT_IDENTIFIER, oid), asn1.encode_sequence(*params)
    )
    key = asn1.encode(asn1.BIT_STRING, b"\0" + asn1.encode_integer(y))
    return asn1.pem_encode(label, asn1.encode_sequence(algorithm, key))


def pem_layouts(pem):
    """The same PEM with the layouts a reader must accept: CRLF, surrounding
    whitespace (the tutorial strips it)."""
    return st.sampled_from([pem, pem.replace(b"\n", b"\r\n"), b"\n " + pem + b" \n"])


# -- public values ----------------------------------------------------------

_residues = st.integers(2, P - 2).map(lambda r: pow(r, 2, P))
# P = 7 mod 8 is a safe prime with P = 3 mod 4: -1 is a non-residue, so
# -r^2 is outside the subgroup of order Q.
_non_residues = st.integers(2, P - 2).map(lambda r: P - pow(r, 2, P))
_out_of_range = st.sampled_from([0, 1, P - 1, P, P + 1, 2 ** 2048 - 1, 2 ** 2048, 2 ** 4096 + 7])


@st.composite
def public_keys(draw, prefix):
    """``prefix`` + a PEM public key, with its verdict for GROUP."""
    choice = draw(st.integers(0, 7))
    if choice == 0:
        index = draw(st.integers(0, len(KEY_POOL) - 1))
        pem = draw(pem_layouts(KEY_POOL_PEM[index]))
        return Item(prefix + pem, "key", VALID, private_key=KEY_POOL[index])
    if choice == 1:
        return Item(prefix + spki_pem(draw(_residues)), "key", VALID)
    if choice == 2:  # X9.42 flavour carrying our q: as good as PKCS #3
        return Item(prefix + spki_pem(draw(_residues), q=Q, oid=OID_X942), "key", VALID)
    if choice == 3:
        return Item(prefix + spki_pem(draw(_non_residues)), "key", INVALID)
    if choice == 4:
        return Item(prefix + spki_pem(draw(_out_of_range)), "key", INVALID)
    if choice == 5:  # on another group: other p, other g, other q
        y = draw(_residues)
        other = draw(st.sampled_from([
            dict(p=ffdh.FFDHE3072_P), dict(g=5), dict(g=P - 1), dict(q=Q - 2, oid=OID_X942),
            dict(p=P + 2),
        ]))
        return Item(prefix + spki_pem(y, **other), "key", INVALID)
    if choice == 6:  # the right DER under the wrong label, a non-DH key, or nothing
        label = draw(st.sampled_from([b"DH PARAMETERS", b"RSA PUBLIC KEY", b"PUBLIC  KEY"]))
        pem = draw(st.sampled_from([
            spki_pem(draw(_residues), label=label),
            spki_pem(draw(_residues), oid=asn1.oid("1.3.101.110")),  # X25519's OID
            b"",
        ]))
        return Item(prefix + pem, "key", INVALID)
    # A raw DER/base64 body that is not a key at all.
    body = draw(st.binary(max_size=120))
    pem = b"-----BEGIN PUBLIC KEY-----\n" + base64.encodebytes(body) + b"-----END PUBLIC KEY-----\n"
    return Item(prefix + pem, "key", INVALID if body[:1] != b"\x30" else UNKNOWN)


# -- mutations --------------------------------------------------------------

@st.composite
def mutants(draw, item):
    """``item`` truncated, with a byte flipped, bytes inserted or deleted."""
    data = bytearray(item.payload)
    op = draw(st.sampled_from(["truncate", "flip", "insert", "delete"]))
    # Hypothesis favours small integers, and most of a key message lies far
    # from its start: draw the place from its own (seeded) random instead.
    at = draw(st.randoms(use_true_random=False)).randint(0, len(data))
    if op == "truncate":
        del data[at:]
    elif op == "flip" and data:
        at = min(at, len(data) - 1)
        data[at] ^= draw(st.integers(1, 255))
    elif op == "insert":
        data[at:at] = draw(st.binary(min_size=1, max_size=8))
    else:
        del data[at:at + draw(st.integers(1, 16))]
    payload = bytes(data)
    if payload == item.payload:
        return item
    return Item(payload, "mutant")


garbage = st.one_of(
    st.binary(max_size=100),
    st.sampled_from([b"", b"hello", b"Hello\n", b" Hello", b"HELLO", b"Params", b"params?",
                     b"Client public key", b"client public key:", b"\x00" * 8]),
).map(lambda payload: Item(payload, "garbage"))


# -- what a client sends ----------------------------------------------------

HELLO = Item(messages.HELLO, "hello")
PARAMS_REQUEST = Item(messages.PARAMS_REQUEST, "params_request")
client_keys = public_keys(messages.CLIENT_KEY_PREFIX).map(
    lambda i: Item(i.payload, "client_key", i.verdict, i.private_key)
)
client_items = st.one_of(
    st.just(HELLO), st.just(PARAMS_REQUEST), client_keys, garbage,
    st.one_of(st.just(HELLO), st.just(PARAMS_REQUEST), client_keys).flatmap(mutants),
)


@st.composite
def conversations(draw, legal, any_item):
    """A list of items shaped like a conversation gone wrong in some way."""
    shape = draw(st.sampled_from(["legal", "legal-then-junk", "permuted", "random", "one-replaced"]))
    if shape == "legal":
        return legal
    if shape == "legal-then-junk":
        n = draw(st.integers(0, len(legal)))
        return legal[:n] + draw(st.lists(any_item, min_size=1, max_size=3))
    if shape == "permuted":
        return draw(st.permutations(legal))
    if shape == "random":
        return draw(st.lists(any_item, max_size=6))
    at = draw(st.integers(0, len(legal) - 1))
    replacement = draw(st.one_of(any_item, mutants(legal[at])))
    return legal[:at] + [replacement] + legal[at + 1:] + draw(st.lists(any_item, max_size=2))


#: What may follow the last whole frame: nothing, half a frame, or a length
#: prefix far beyond any limit (the bytes of it may never come).
tails = st.one_of(
    st.just(b""),
    st.binary(min_size=1, max_size=3),
    st.tuples(st.integers(5, 2000), st.binary(max_size=4)).map(
        lambda t: t[0].to_bytes(4, "big") + t[1]
    ),
    st.integers(10 ** 5, 2 ** 32 - 1).map(lambda n: n.to_bytes(4, "big")),
)


@st.composite
def deliveries(draw, stream):
    """``stream`` cut into chunks at arbitrary places: byte by byte, all at
    once, or anything between."""
    how = draw(st.sampled_from(["whole", "bytes", "cuts"]))
    if how == "whole":
        return [stream]
    if how == "bytes" and len(stream) <= 4000:
        return [stream[i:i + 1] for i in range(len(stream))]
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    edges = [0] + cuts + [len(stream)]
    return [stream[a:b] for a, b in zip(edges, edges[1:])]


# -- what a server sends ----------------------------------------------------

GREETING = Item(messages.HEY_THERE, "greeting")


def _parameters(group_name, pem, verdict=VALID):
    return Item(pem, "parameters", verdict, group=group_name if verdict == VALID else None)


_bad_parameters = st.sampled_from([
    ffdh.encode_parameters_pem(ffdh.FFDHE2048_P >> 1024, 2),  # too small
    ffdh.encode_parameters_pem(P, 0),
    ffdh.encode_parameters_pem(P, 1),
    ffdh.encode_parameters_pem(P, P - 1),
    ffdh.encode_parameters_pem(P, P + 5),
    ffdh.encode_parameters_pem(P + 2, 2),  # not prime
    ffdh.encode_parameters_pem(2 ** 8200 + 1, 2),  # too large
    ffdh.encode_parameters_pem(P, 2, Q + 2),  # q not the order
    b"-----BEGIN DH PARAMETERS-----\n-----END DH PARAMETERS-----\n",
    b"-----BEGIN X9.42 DH PARAMETERS-----\nMAA=\n-----END X9.42 DH PARAMETERS-----\n",
])

server_parameters = st.one_of(
    pem_layouts(GROUP.parameters_pem).map(lambda pem: _parameters("ffdhe2048", pem)),
    st.just(_parameters("ffdhe2048", ffdh.encode_parameters_pem(P, 2, Q))),  # X9.42 form
    st.just(_parameters("ffdhe3072", ffdh.named_group("ffdhe3072").parameters_pem)),
    _bad_parameters.map(lambda pem: _parameters(None, pem, INVALID)),
)
server_keys = public_keys(messages.SERVER_KEY_PREFIX).map(
    lambda i: Item(i.payload, "server_key", i.verdict, i.private_key)
)
error_replies = st.sampled_from(messages.ERROR_REPLIES).map(lambda r: Item(r, "error_reply"))
server_items = st.one_of(
    st.just(GREETING), server_parameters, server_keys, error_replies, garbage,
    st.one_of(st.just(GREETING), server_parameters, server_keys).flatmap(mutants),
)
