"""The key stretching function (RFC 9807 sections 2.3, 7 and 10.8).

RFC 9807's ``Stretch(msg)`` takes no salt and no parameters: they are fixed
by the configuration.  We fix the function (Argon2id, RFC 9106, version 0x13,
the RFC 9807 section 7 salt of 16 zero bytes, 64 bytes of output) and let
each registration record carry its own cost (memory, passes, lanes), so the
cost can rise for new users without changing the protocol.  No salt is
needed: the OPRF output is already unique to the user and the server's key.

How the cost travels and why a hostile server gains nothing from it
(docs/protocols.rst, OPAQUE):

- The server sends the record's cost in front of KE2 (the 12-byte
  :meth:`Argon2idParameters.encode`).  A fake record's cost is the server's
  default, which is also what ``keyx-admin adduser`` registers with, so the
  header does not tell registered users from unknown ones.
- The client accepts it only within its :class:`KsfLimits`.  The ceiling
  stops a hostile server from exhausting the client.  A cheaper cost gains
  a fake server nothing in OPAQUE: the envelope opens only with the cost
  the record was made with, and the client sends KE3 only after the
  server's MAC, which needs the envelope's contents.  The floor is policy:
  the client refuses to use a record that would be cheap to crack if the
  server's files were stolen, and says so.
- The encoded cost is appended to the preamble's context on both sides
  (RFC 9807 section 6.4.2.1), so both MACs cover it.  A cost changed in
  transit already fails the envelope (the stretched password changes);
  the binding keeps that true for any future KSF whose header would not
  change its output.

:data:`IDENTITY` (Stretch(msg) = msg) exists only for RFC 9807's test
vectors; its header is empty.
"""

import struct
import threading
from dataclasses import dataclass

from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from twisted_keyx.opaque.errors import KeyStretchingFailed, OpaqueError
from twisted_keyx.opaque.primitives import NH

#: One Argon2id derivation with more than one lane at a time in this process.
#:
#: cryptography (50.0.2, with OpenSSL 3.2 and later) runs a derivation of p
#: lanes on p threads of OpenSSL's per-library-context thread pool, whose
#: size it sets to p before each derivation.  The pool counts a thread as
#: busy until the derivation that started it joins it, and a derivation
#: starts all p lanes of a segment before it joins any: two derivations at
#: once each start some of their lanes, fill the pool, and each waits
#: forever for a thread only the other would free (0 % CPU).  The pool
#: stays full after that, so every later derivation with p > 1 in the
#: process fails at once, which cryptography words as "Not enough memory
#: to derive key".  Serialising the derivations avoids the deadlock; each
#: still uses its p threads, so one derivation at a time keeps the cores
#: busy (benchmarks/bench_opaque.py).  A derivation of one lane does not
#: use the pool and is not serialised.
ARGON2_LOCK = threading.Lock()

#: The salt of RFC 9807 section 7's recommended Argon2id: zeroes(16).
ARGON2_SALT = bytes(16)
KiB = 1
MiB = 1024 * KiB


class IdentityKsf:
    """Stretch(msg) = msg: for RFC 9807's test vectors only."""

    name = "identity"
    header_size = 0

    def encode(self):
        return b""

    def stretch(self, data):
        return data

    def to_json(self):
        return {"name": self.name}

    def __repr__(self):
        return "IDENTITY"


IDENTITY = IdentityKsf()


@dataclass(frozen=True)
class Argon2idParameters:
    """Argon2id's cost (RFC 9106 section 3.1): memory in KiB (m), passes
    (t) and lanes (p).  Time grows with memory_cost * iterations."""

    memory_cost: int
    iterations: int
    lanes: int

    name = "argon2id"
    header_size = 12
    _HEADER = struct.Struct(">III")

    def check(self):
        """Argon2's own rules (RFC 9106 section 3.1), with sane ceilings."""
        if not 1 <= self.lanes <= 255:
            raise OpaqueError(f"argon2id lanes must be 1 to 255, not {self.lanes}")
        if not 1 <= self.iterations <= 1000:
            raise OpaqueError(f"argon2id iterations must be 1 to 1000, not {self.iterations}")
        if not 8 * self.lanes <= self.memory_cost <= 4 * 1024 * MiB:
            raise OpaqueError(
                f"argon2id memory must be 8 * lanes KiB to 4 GiB, not {self.memory_cost} KiB"
            )
        return self

    def encode(self):
        """The 12 bytes sent before KE2 and bound into the AKE context:
        uint32 memory_cost (KiB), uint32 iterations, uint32 lanes."""
        return self._HEADER.pack(self.memory_cost, self.iterations, self.lanes)

    @classmethod
    def decode(cls, header):
        if len(header) != cls.header_size:
            raise OpaqueError(f"argon2id parameters are {cls.header_size} bytes")
        return cls(*cls._HEADER.unpack(header))

    def stretch(self, data):
        """Argon2id(msg, S = zeroes(16), T = Nh, m, t, p), v = 0x13;
        :class:`KeyStretchingFailed` if the library cannot run it here
        (memory, threads).  Derivations of more than one lane run one at a
        time in the process (:data:`ARGON2_LOCK`)."""
        self.check()
        kdf = Argon2id(
            salt=ARGON2_SALT,
            length=NH,
            iterations=self.iterations,
            lanes=self.lanes,
            memory_cost=self.memory_cost,
        )
        try:
            if self.lanes == 1:
                return kdf.derive(data)
            with ARGON2_LOCK:
                return kdf.derive(data)
        except (MemoryError, Exception) as e:
            raise KeyStretchingFailed(f"key stretching ({self}) failed on this machine: "
                                      f"{e or type(e).__name__}") from None

    def to_json(self):
        return {
            "name": self.name,
            "memory_cost": self.memory_cost,
            "iterations": self.iterations,
            "lanes": self.lanes,
        }

    def __str__(self):
        return f"argon2id m={self.memory_cost} KiB t={self.iterations} p={self.lanes}"


#: What registration uses unless told otherwise: RFC 9106 section 4's second
#: recommended option (64 MiB, 3 passes, 4 lanes).
DEFAULT_ARGON2ID = Argon2idParameters(memory_cost=64 * MiB, iterations=3, lanes=4)


def from_json(obj):
    """A KSF from its :meth:`to_json` form (a user record's ``ksf``): only
    Argon2id; a stored record never has the identity KSF."""
    if not isinstance(obj, dict):
        raise OpaqueError("ksf must be an object")
    name = obj.get("name")
    if name == "argon2id":
        try:
            values = [obj[k] for k in ("memory_cost", "iterations", "lanes")]
        except KeyError as e:
            raise OpaqueError(f"argon2id parameters lack {e.args[0]}") from None
        if not all(type(v) is int for v in values):
            raise OpaqueError("argon2id parameters must be integers")
        return Argon2idParameters(*values).check()
    if name == "identity":
        raise OpaqueError("the identity KSF is for test vectors only")
    raise OpaqueError(f"unknown key stretching function {name!r}")


@dataclass(frozen=True)
class KsfLimits:
    """The Argon2id costs a client accepts from a server.

    The ceilings stop a hostile server from making the client spend
    gigabytes, minutes or threads; the floors (memory and total work =
    memory * passes) refuse records that would be cheap to crack if the
    server's files were stolen.
    The defaults accept :data:`DEFAULT_ARGON2ID` and the OWASP minimum
    (19 MiB, 2 passes) but nothing cheaper.
    """

    min_memory_cost: int = 19 * MiB
    max_memory_cost: int = 256 * MiB
    min_work: int = 38 * MiB
    max_work: int = 1024 * MiB
    max_iterations: int = 16
    max_lanes: int = 8

    header_size = Argon2idParameters.header_size

    def check(self, params):
        params.check()
        if params.iterations > self.max_iterations or params.lanes > self.max_lanes:
            raise OpaqueError(
                f"{params} exceeds t <= {self.max_iterations}, p <= {self.max_lanes}"
            )
        if not self.min_memory_cost <= params.memory_cost <= self.max_memory_cost:
            raise OpaqueError(
                f"{params}: memory accepted from {self.min_memory_cost} "
                f"to {self.max_memory_cost} KiB"
            )
        work = params.memory_cost * params.iterations
        if not self.min_work <= work <= self.max_work:
            raise OpaqueError(
                f"{params}: memory * passes accepted from {self.min_work} to {self.max_work} KiB"
            )
        return params

    def accept(self, header):
        """The server's parameters from the bytes before KE2, checked."""
        return self.check(Argon2idParameters.decode(header))


class FixedKsf:
    """Client-side policy for a KSF the client fixes itself (the identity
    KSF of the test vectors): the server's header must be exactly its
    encoding."""

    def __init__(self, ksf):
        self.ksf = ksf
        self.header_size = ksf.header_size

    def accept(self, header):
        if header != self.ksf.encode():
            raise OpaqueError("the server's key stretching parameters are not the expected ones")
        return self.ksf


DEFAULT_KSF_LIMITS = KsfLimits()
