"""Fuzz the parsers a peer can reach: ``python fuzz/fuzz_parsers.py TARGET``.

Targets (``all`` runs each in turn)::

    pem         asn1.pem_decode on anything
    der         asn1.Reader walking any DER, nested
    public-key  ffdh.parse_public_key_pem and Group.load_peer_key
    parameters  ffdh.group_from_parameters_pem (what a client does with message 4)
    framing     the DH server and client protocols (Int32 framing) fed any bytes
    raw         the unframed DH splitter (both directions) and raw protocols
    eke-lines   the EKE line parsers: user name, yes line, base64 items, boxes
    eke         the EKE server protocol (LineReceiver) fed any bytes

Each target is a Hypothesis test whose input mixes raw bytes with near-valid
messages (tests/dh_strategies.py: real keys and parameters, truncated,
flipped, spliced).  With atheris installed (``pip install atheris``) the
run is coverage-guided, through Hypothesis' ``fuzz_one_input``; without it,
Hypothesis generates inputs itself.  Either way the property is the same: a
parser returns a value or raises its documented error, and the protocols
never raise.  A failure prints the input and exits non-zero.

    python fuzz/fuzz_parsers.py all --seconds 60
    python fuzz/fuzz_parsers.py public-key --seconds 600

Not part of CI (the property tests in tests/ are); see README.rst.
"""

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

try:
    import atheris
except ImportError:
    atheris = None

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

if atheris is not None:
    with atheris.instrument_imports(include=["twisted_keyx"]):
        from twisted_keyx.groups import asn1
        from twisted_keyx.groups import ffdh
        from twisted_keyx.dh import protocol as dh_protocol
        from twisted_keyx.dh import raw as dh_raw
        from twisted_keyx.eke import messages as eke_messages
        from twisted_keyx.eke import protocol as eke_protocol
else:
    from twisted_keyx.groups import asn1
    from twisted_keyx.groups import ffdh
    from twisted_keyx.dh import protocol as dh_protocol
    from twisted_keyx.dh import raw as dh_raw
    from twisted_keyx.eke import messages as eke_messages
    from twisted_keyx.eke import protocol as eke_protocol

from tests import dh_strategies as ds  # noqa: E402
from tests.helpers import frame  # noqa: E402

_near_valid = st.one_of(
    ds.client_keys, ds.server_keys, ds.server_parameters, ds.client_items, ds.server_items,
).map(lambda item: item.payload)
_near_valid_mutated = _near_valid.map(lambda p: ds.Item(p, "x")).flatmap(ds.mutants).map(
    lambda item: item.payload)
#: Bytes a peer might send: anything, or something close to a real message.
peer_bytes = st.one_of(st.binary(max_size=6000), _near_valid, _near_valid_mutated)


def _strip_prefix(data):
    for prefix in (b"Client public key:", b"Server public key:"):
        if data.startswith(prefix):
            return data[len(prefix):]
    return data


_fuzz_settings = settings(
    deadline=None, database=None, max_examples=1000,
    suppress_health_check=list(HealthCheck),
)


@_fuzz_settings
@given(peer_bytes)
def fuzz_pem(data):
    try:
        label, der = asn1.pem_decode(
            _strip_prefix(data), (ffdh.PUBLIC_KEY_LABEL, ffdh.PKCS3_LABEL, ffdh.X942_LABEL))
    except asn1.DecodeError:
        return
    assert label in (ffdh.PUBLIC_KEY_LABEL, ffdh.PKCS3_LABEL, ffdh.X942_LABEL)
    assert der


def _walk(reader, depth=0):
    while not reader.at_end():
        tag, contents = reader.read_element()
        if tag == asn1.SEQUENCE and depth < 8:
            _walk(asn1.Reader(contents), depth + 1)
        elif tag == asn1.INTEGER:
            asn1.Reader(asn1.encode(tag, contents)).read_integer()


@_fuzz_settings
@given(peer_bytes)
def fuzz_der(data):
    try:
        _, data = asn1.pem_decode(_strip_prefix(data), (ffdh.PUBLIC_KEY_LABEL, ffdh.PKCS3_LABEL,
                                                        ffdh.X942_LABEL))
    except asn1.DecodeError:
        pass
    try:
        _walk(asn1.Reader(data))
    except asn1.DecodeError:
        return


@_fuzz_settings
@given(peer_bytes)
def fuzz_public_key(data):
    data = _strip_prefix(data)
    try:
        p, g, q, y = ffdh.parse_public_key_pem(data)
    except ffdh.InvalidPublicKey:
        p = None
    if p is not None:
        assert min(p, g, y) >= 0 and (q is None or q >= 0)
    try:
        ds.GROUP.load_peer_key(data)
    except ffdh.InvalidPublicKey:
        return
    # Accepted: it must really be a key of the group, in its subgroup.
    assert (p, g) == (ds.P, 2) and 1 < y < ds.P - 1 and ffdh.jacobi(y, ds.P) == 1


@_fuzz_settings
@given(peer_bytes)
def fuzz_parameters(data):
    try:
        group = ffdh.group_from_parameters_pem(data)
    except ffdh.ParameterError:
        return
    assert ffdh.MIN_BITS <= group.bits <= ffdh.MAX_BITS


@_fuzz_settings
@given(st.lists(peer_bytes, max_size=4), st.lists(st.integers(0, 1 << 16), max_size=8),
       st.booleans())
def fuzz_framing(messages, cuts, raw):
    from twisted.internet.address import IPv4Address
    from twisted.internet.error import ConnectionDone
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport
    from twisted.logger import Logger
    from twisted.python.failure import Failure

    from twisted_keyx.service import limits

    stream = b"".join(m if raw else frame(m) for m in messages)
    edges = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    chunks = [stream[a:b] for a, b in zip(edges, edges[1:])]
    addr = IPv4Address("TCP", "192.0.2.1", 1)

    factory = dh_protocol.DHServerFactory(ds.GROUP)
    factory.log = Logger(observer=lambda event: None)
    server = limits.ConnectionPolicy(limits.Limits(), Clock()).wrap(factory).buildProtocol(addr)
    client = dh_protocol.DHClientProtocol()
    client.finished.addErrback(lambda f: None)
    for proto in (server, client):
        transport = StringTransport(peerAddress=addr)
        proto.makeConnection(transport)
        for chunk in chunks:
            proto.dataReceived(chunk)
        proto.connectionLost(Failure(ConnectionDone()))


def _chunks(stream, cuts):
    edges = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    return [stream[a:b] for a, b in zip(edges, edges[1:])]


@_fuzz_settings
@given(st.lists(st.one_of(peer_bytes, st.sampled_from([b" ", b"\n", b"\r\n"])), max_size=6),
       st.lists(st.integers(0, 1 << 16), max_size=8), st.booleans())
def fuzz_raw(parts, cuts, client_side):
    shapes = dh_raw.SERVER_MESSAGES if client_side else dh_raw.CLIENT_MESSAGES
    limit = 4000
    splitter = dh_raw.MessageSplitter(shapes, limit)
    for chunk in _chunks(b"".join(parts), cuts):
        splitter.feed(chunk)
        while True:
            try:
                message = splitter.next_message()
            except dh_raw.MessageTooLong:
                return
            if message is None:
                break
            assert message and message == message.strip() or not message.strip()
        assert len(splitter._buffer) <= limit + len(chunk)


@_fuzz_settings
@given(st.one_of(st.binary(max_size=2000), _near_valid), st.integers(1, 8))
def fuzz_eke_lines(line, step):
    for parse in (eke_messages.parse_user_name, eke_messages.parse_yes,
                  eke_messages.decode_item):
        try:
            parse(line)
        except eke_messages.MalformedLine:
            pass
    if step in eke_messages.BOX_SIZES:
        try:
            box = eke_messages.decode_box(line, step)
        except eke_messages.MalformedLine:
            pass
        else:
            assert len(box) == eke_messages.BOX_SIZES[step]
    eke_messages.classify_server_message(line)


@_fuzz_settings
@given(st.lists(st.one_of(st.binary(max_size=800), st.sampled_from(
    [b"alice\n", b"bob\n", b"\n", b"quit\n"])), max_size=6),
       st.lists(st.integers(0, 1 << 16), max_size=8))
def fuzz_eke(parts, cuts):
    from twisted.internet.address import IPv4Address
    from twisted.internet.error import ConnectionDone
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport
    from twisted.logger import Logger
    from twisted.python.failure import Failure

    from tests.helpers import Users, make_user
    from twisted_keyx.service import limits

    users = fuzz_eke.users = getattr(fuzz_eke, "users", None) or Users(alice=make_user("alice"))
    factory = eke_protocol.EKEServerFactory(users)
    factory.log = Logger(observer=lambda event: None)
    addr = IPv4Address("TCP", "192.0.2.1", 1)
    server = limits.ConnectionPolicy(limits.Limits(), Clock()).wrap(factory).buildProtocol(addr)
    server.makeConnection(StringTransport(peerAddress=addr))
    for chunk in _chunks(b"".join(parts), cuts):
        server.dataReceived(chunk)
    server.connectionLost(Failure(ConnectionDone()))


TARGETS = {
    "pem": fuzz_pem,
    "der": fuzz_der,
    "public-key": fuzz_public_key,
    "parameters": fuzz_parameters,
    "framing": fuzz_framing,
    "raw": fuzz_raw,
    "eke-lines": fuzz_eke_lines,
    "eke": fuzz_eke,
}


def run_with_hypothesis(target, seconds):
    """No atheris: let Hypothesis generate, batch after batch, until time is up."""
    deadline = time.monotonic() + seconds
    batches = 0
    while time.monotonic() < deadline:
        target()  # raises (and Hypothesis prints the input) on a failure
        batches += 1
    print(f"{target.__name__}: {batches * 1000} examples, no failure")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", choices=[*TARGETS, "all"])
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="time per target [default: 60]")
    args, rest = parser.parse_known_args()
    if args.target == "all":
        status = 0
        for name in TARGETS:
            status |= subprocess.call([sys.executable, __file__, name,
                                       "--seconds", str(args.seconds), *rest])
        return status
    target = TARGETS[args.target]
    if atheris is None:
        print(f"atheris is not installed: {args.target} runs on Hypothesis alone")
        run_with_hypothesis(target, args.seconds)
        return 0
    atheris.Setup([sys.argv[0], f"-max_total_time={int(args.seconds)}", *rest],
                  target.hypothesis.fuzz_one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main())
