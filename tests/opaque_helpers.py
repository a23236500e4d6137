"""What the OPAQUE tests share: the RFC vectors, scripted randomness, cheap
Argon2id costs and a fixed server setup."""

import json

from tests.helpers import read_data
from twisted_keyx.opaque import group
from twisted_keyx.opaque.ksf import Argon2idParameters, KsfLimits
from twisted_keyx.opaque.records import ServerSetup, fake_record


def load_json(name):
    return json.loads(read_data(name))


def opaque_vectors():
    """RFC 9807 appendix C, the ristretto255 configurations: (real, fake)."""
    vectors = load_json("opaque-rfc9807-ristretto255.json")
    real = [v for v in vectors if v["config"]["Fake"] == "False"]
    fake = [v for v in vectors if v["config"]["Fake"] == "True"]
    return real, fake


def unhex(section, name):
    return bytes.fromhex(section[name])


class ScriptedRandom:
    """``rng(n)`` that returns the given byte strings in order and checks
    that each is of the size asked for; :meth:`done` says all were used."""

    def __init__(self, *chunks):
        self.chunks = list(chunks)
        self.asked = []

    def __call__(self, n):
        if not self.chunks:
            raise AssertionError(f"unexpected request for {n} random bytes")
        chunk = self.chunks.pop(0)
        self.asked.append(n)
        if len(chunk) != n:
            raise AssertionError(f"asked for {n} bytes, scripted {len(chunk)}")
        return chunk

    def done(self):
        return not self.chunks


class CountingRandom:
    """Deterministic bytes (a counter) for tests that need many."""

    def __init__(self, seed=1):
        self.counter = seed

    def __call__(self, n):
        out = bytearray()
        while len(out) < n:
            out += self.counter.to_bytes(8, "big") * 4
            self.counter += 1
        return bytes(out[:n])


#: Argon2id at its cheapest, and client limits that accept it (tests only).
CHEAP_ARGON2ID = Argon2idParameters(memory_cost=64, iterations=1, lanes=1)
CHEAP_LIMITS = KsfLimits(min_memory_cost=8, min_work=8, max_memory_cost=1024, max_work=4096)


def cheap_setup(rng=None):
    """A server setup with the cheap Argon2id as its default."""
    return ServerSetup.generate(CHEAP_ARGON2ID, rng or CountingRandom(7))


def fixed_setup(rng=None):
    rng = rng or CountingRandom(11)
    private = group.random_scalar(rng)
    return ServerSetup(rng(64), private, group.scalar_mult_gen(private), CHEAP_ARGON2ID,
                       fake_record(CHEAP_ARGON2ID, rng))
