"""Server CPU per DH handshake, group by group, and the two ways to do FFDH.

What one handshake costs the server in the group's own work: load and
check the client's key, make a key pair, serialise the public key (message
6), compute the shared secret.  Each group is measured as the daemon runs
it, through :mod:`twisted_keyx.groups.registry` (OpenSSL via cryptography for the
named groups and X25519, GMP via gmpy2 for a parameter file), and the two
2048-bit FFDH groups the other way as well: ffdhe2048 on GMP, and the file's
group on cryptography's FFDH objects, as twisted_keyx ran custom groups
before (cryptography re-runs OpenSSL's DH_check on every key object of a
group OpenSSL does not know).

    python benchmarks/bench_groups.py [--seconds 2] [--params FILE]

Prints CPU milliseconds per handshake and the ratio of the custom group to the
named group of the same size (the goal: at most 2).
"""

import argparse
import os
import sys
import time
import warnings

from cryptography.hazmat.primitives import serialization
from cryptography.utils import CryptographyDeprecationWarning

from twisted_keyx.groups import ffdh
from twisted_keyx.groups import registry as groups

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_PARAMS = os.path.join(HERE, "..", "tests", "data", "dhparam-2048.pem")


def per_call(function, seconds, rounds=5):
    """CPU seconds (this process's, ``time.process_time``) per call of
    ``function``: the best mean of ``rounds`` runs of ``seconds / rounds``
    CPU seconds each (the best run is the least disturbed by whatever else
    the machine is doing)."""
    function()  # warm up
    best = None
    for _ in range(rounds):
        calls, start = 0, time.process_time()
        deadline = start + seconds / rounds
        while True:
            function()
            calls += 1
            now = time.process_time()
            if now >= deadline:
                break
        mean = (now - start) / calls
        best = mean if best is None else min(best, mean)
    return best


def registry_handshake(group):
    """The server's work through a Group's methods (what the daemon runs)."""
    client_pem = group.public_key_pem(group.generate_private_key())

    def handshake():
        peer = group.load_peer_key(client_pem)
        key = group.generate_private_key()
        group.public_key_pem(key)
        group.exchange(key, peer)

    return handshake


def cryptography_handshake(group):
    """The same work with cryptography's FFDH objects, as twisted_keyx did
    before (our parser and subgroup check, then cryptography's key objects;
    building the peer's key object re-checks custom parameters)."""
    # OpenSSL knows the RFC 7919 groups from (p, g); a file's q goes along.
    q = None if group.name in ffdh.NAMED_GROUP_PRIMES else group.key_q
    with warnings.catch_warnings():  # the FFDH deprecation, as in ffdh.py
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        DHParameterNumbers = ffdh._dh.DHParameterNumbers
        DHPublicNumbers = ffdh._dh.DHPublicNumbers
    numbers = DHParameterNumbers(group.p, group.g, q)
    parameters = numbers.parameters()
    client_pem = group.public_key_pem(group.generate_private_key())

    def handshake():
        _, _, _, y = ffdh.parse_public_key_pem(client_pem)
        assert group.in_subgroup(y)
        peer = DHPublicNumbers(y, numbers).public_key()
        key = parameters.generate_private_key()
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        key.exchange(peer)

    return handshake


def main(argv=None):
    parser = argparse.ArgumentParser(prog="bench_groups.py", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="seconds of measurement per line [default: 2]")
    parser.add_argument("--params", default=DEFAULT_PARAMS,
                        help="custom 2048-bit parameter file [default: tests/data/dhparam-2048.pem]")
    args = parser.parse_args(argv)

    named = groups.named("ffdhe2048")
    # The same group on GMP, as custom groups run.
    named_on_gmp = ffdh.FFDHGroup(named.name, named.p, named.g, named.q, named.parameters_pem,
                              key_q=named.key_q)
    custom = groups.load_parameters_file(args.params)
    custom_name = "file " + os.path.basename(args.params)
    rows = [
        ("ffdhe2048", "openssl", registry_handshake(named)),
        ("ffdhe2048", "gmpy2", registry_handshake(named_on_gmp)),
        (custom_name, "gmpy2", registry_handshake(custom)),
        (custom_name, "openssl", cryptography_handshake(custom)),
        ("ffdhe3072", "openssl", registry_handshake(groups.named("ffdhe3072"))),
        ("ffdhe4096", "openssl", registry_handshake(groups.named("ffdhe4096"))),
        ("x25519", "openssl", registry_handshake(groups.named("x25519"))),
    ]
    alternatives = {("ffdhe2048", "gmpy2"), (custom_name, "openssl")}
    results = {}
    print(f"{'group':24} {'arithmetic':10} {'CPU ms':>12}   (* what the daemon runs)")
    for name, how, handshake in rows:
        seconds = per_call(handshake, args.seconds)
        results[name, how] = seconds
        # The daemon runs each group one way; the other two rows compare.
        used = " " if (name, how) in alternatives else "*"
        print(f"{name:24} {how:10} {seconds * 1e3:12.3f} {used}")
        sys.stdout.flush()
    print()
    print(f"custom (gmpy2) / ffdhe2048 (openssl): "
          f"{results[custom_name, 'gmpy2'] / results['ffdhe2048', 'openssl']:.2f}   (goal: at most 2)")
    print(f"ffdhe2048, gmpy2 / openssl:           "
          f"{results['ffdhe2048', 'gmpy2'] / results['ffdhe2048', 'openssl']:.2f}")
    print(f"custom, openssl / gmpy2:              "
          f"{results[custom_name, 'openssl'] / results[custom_name, 'gmpy2']:.0f}")


if __name__ == "__main__":
    main()
