"""Read a py-spy profile: ``python -m keyxbench.spy FILE [--top N]``.

FILE holds collapsed stacks (``py-spy record --format raw``, which
``bench_daemon.py --py-spy FILE`` writes when FILE does not end in .svg):
one line per distinct stack, ``frame;frame;...;frame COUNT``.  Prints the
functions with the most samples on top of the stack (self) and anywhere in
it (inclusive, each stack counted once per function), as shares of all
samples.  Time spent in C (OpenSSL, the kernel's socket calls) is charged
to the Python function that called it.
"""

import argparse
import collections
import re

_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
#: py-spy's frame: "function (file:line)"; the line number is dropped, so
#: that a function's samples add up whatever line they were on.
_FRAME_LINE = re.compile(r":\d+\)$")


def frame_name(frame):
    return _FRAME_LINE.sub(")", frame.strip())


def read_stacks(lines, keep_lines=False):
    """[(frames, count)] from collapsed-stack lines (frames without their
    line numbers unless ``keep_lines``)."""
    stacks = []
    for line in lines:
        match = _LINE.match(line.rstrip("\n"))
        if match:
            frames = [f.strip() if keep_lines else frame_name(f)
                      for f in match["stack"].split(";") if f.strip()]
            stacks.append((frames, int(match["count"])))
    return stacks


def by_line(stacks, pattern):
    """Samples by the line of the innermost frame whose name holds
    ``pattern`` (stacks read with ``keep_lines``); the rest: "elsewhere"."""
    out = collections.Counter()
    for frames, count in stacks:
        hits = [f for f in frames if pattern in f]
        out[hits[-1] if hits else "elsewhere"] += count
    return out


def shares(stacks):
    """(total samples, self Counter, inclusive Counter)."""
    own, inclusive = collections.Counter(), collections.Counter()
    total = 0
    for frames, count in stacks:
        total += count
        if frames:
            own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    return total, own, inclusive


#: The password handshakes' crypto, by module: tried first, from the
#: innermost frame out, so that these modules claim the library calls under
#: them (hmac.py, hashlib, rbcl, cryptography) that CATEGORIES would give to
#: "session key, transcript, fingerprint" or to no one.  A frame of OPAQUE's
#: group module is inside one of its protocol modules, so the scalar
#: multiplications go to the first entry, the rest of ServerLogin's own work
#: to the third.
CRYPTO_CATEGORIES = (
    ("OPAQUE ristretto255: scalar mults, hash to group (rbcl)", ("opaque/group.py)",)),
    ("OPAQUE HKDF, HMAC, SHA-512 (key schedule, masking)", ("opaque/primitives.py)",)),
    ("OPAQUE login logic (oprf, ake, credentials, login, messages)",
     ("opaque/oprf.py)", "opaque/ake.py)", "opaque/credentials.py)", "opaque/login.py)",
      "opaque/messages.py)", "opaque/envelope.py)", "opaque/records.py)", "opaque/ksf.py)")),
    ("EKE crypto (RSA-OAEP, AES-GCM boxes)", ("eke/crypto.py)",)),
    ("chat keys and records (HKDF, AES-GCM)", ("chat/records.py)",)),
)

#: Where the other samples go, tried from the innermost frame out: the first
#: category with a pattern found in a frame's name takes the sample.
CATEGORIES = (
    ("subgroup check (jacobi)", ("jacobi (", "in_subgroup (")),
    ("key generation", ("generate_private_key (",)),
    ("exchange", (".exchange (",)),
    ("serialise public key", ("public_key_pem (", "public_bytes (")),
    ("parse and load the peer key", ("load_peer_key (", "load_pem_public_key (", "asn1.py)",
                                     "parse_public_key_pem (")),
    ("log line", ("twisted/logger/", "logfile.py)", "Logger.", "_tzhelper.py)", "log.msg (")),
    ("session key, transcript, fingerprint", ("transcript.py)", "hmac.py)", "hashlib")),
    ("state machine and messages", ("machine.py)", "handshake.py)", "messages.py)", "b64.py)")),
    ("user file lookup (a stat per login)", ("userfile.py)",)),
    ("guess throttle", ("throttle.py)",)),
    ("session adapter and the factory's observers",
     ("adapter.py)", "eke/protocol.py)", "opaque/protocol.py)", "framing.py)")),
    ("TLS (pyOpenSSL)", ("OpenSSL/", "twisted/protocols/tls.py)", "_sslverify.py)")),
    ("accept", ("accept (", "Port.doRead (", "buildProtocol (")),
    ("close", ("_closeSocket (", "connectionLost (", "loseConnection (", "_real_close (")),
    ("writes", ("sendString (", "sendLine (", "doWrite (", ".write (", "writeSomeData (")),
    ("reads and framing", ("doRead (", "dataReceived (", "stringReceived (", "next_message (")),
    ("connection policy", ("limits.py)",)),
)


def _first_category(frames, categories):
    for frame in reversed(frames):
        for name, patterns in categories:
            if any(p in frame for p in patterns):
                return name
    return None


def categorise(stacks):
    """Counter of samples by :data:`CRYPTO_CATEGORIES`, then
    :data:`CATEGORIES` (the rest: "other")."""
    out = collections.Counter()
    for frames, count in stacks:
        crypto = _first_category(frames, CRYPTO_CATEGORIES)
        if crypto:
            out[crypto] += count
            continue
        for frame in reversed(frames):
            hit = next((name for name, patterns in CATEGORIES
                        if any(p in frame for p in patterns)), None)
            if hit:
                out[hit] += count
                break
        else:
            out["other (reactor loop, context wrappers)"] += count
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m keyxbench.spy",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("file")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--by-line", metavar="FUNCTION",
                        help="also split the samples by the line of FUNCTION they were on "
                             "(e.g. NaiveDH.stringReceived, where the naive peer does all its work)")
    parser.add_argument("--cpu-ms", type=float,
                        help="the server's CPU per handshake, to turn shares into ms")
    args = parser.parse_args(argv)
    with open(args.file) as f:
        stacks = read_stacks(f)
    total, own, inclusive = shares(stacks)
    print(f"{total} samples")
    print("\nby category:")
    for name, count in categorise(stacks).most_common():
        ms = f"  {args.cpu_ms * count / total:.3f} ms/handshake" if args.cpu_ms else ""
        print(f"  {100 * count / total:5.1f}%  {name}{ms}")
    if args.by_line:
        with open(args.file) as f:
            lines = by_line(read_stacks(f, keep_lines=True), args.by_line)
        print(f"\nby line of {args.by_line}:")
        for name, count in lines.most_common():
            ms = f"  {args.cpu_ms * count / total:.3f} ms/handshake" if args.cpu_ms else ""
            print(f"  {100 * count / total:5.1f}%  {name}{ms}")
    for title, counter in (("self", own), ("inclusive", inclusive)) if args.top else ():
        print(f"\ntop {args.top} by {title} samples:")
        for name, count in counter.most_common(args.top):
            print(f"  {100 * count / total:5.1f}%  {name}")


if __name__ == "__main__":
    main()
