"""The costly check of finite-field parameters, with GMP alone; and the
child process of ``keyx-client dh`` that runs it (docs/protocols.rst, Groups).

:func:`gmp_problem` is what :mod:`twisted_keyx.groups.ffdh` runs once for a
parameter file or a server's group: p prime; q prime, dividing p - 1, and
the order of g.  This module imports nothing but gmpy2, so that the child
(``python -m twisted_keyx.groups.primecheck``, :mod:`twisted_keyx.groups.check`)
starts fast: p, g and q come on its standard input as three hex lines (q
empty when there is none); it answers ``ok``, or ``refused: REASON``, in
one line.  Only for parameters that fail does it import
:mod:`twisted_keyx.groups.ffdh`, for OpenSSL's more detailed reason.
"""

import sys

import gmpy2

#: The ``reps`` of gmpy2.is_prime for the one-time checks of p and q: GMP's
#: mpz_probab_prime_p runs trial division, Baillie-PSW (no composite known
#: to pass it), then reps - 24 Miller-Rabin rounds with random bases.
#: 32 costs about 0.5 s of CPU for a 4096-bit safe prime (64: 1.9 s).
PRIME_CHECK_ROUNDS = 32

#: The child's answer when the parameters passed, and the prefix of a refusal.
OK = b"ok"
REFUSED = b"refused: "
#: Bytes the child reads: three hex numbers of up to 8192 bits (ffdh.MAX_BITS).
MAX_REQUEST = 3 * (8192 // 4 + 2)

_FAILED = "the parameters failed the safety checks: "


def gmp_problem(p, g, q):
    """None if the checks every handshake then relies on pass, else what
    fails: p prime; q prime, dividing p - 1, and the order of g (with q None,
    p must be a safe prime: q = (p - 1) / 2 prime)."""
    if q is None:
        q = (p - 1) // 2
        if not gmpy2.is_prime(p, PRIME_CHECK_ROUNDS) or not gmpy2.is_prime(q, PRIME_CHECK_ROUNDS):
            return _FAILED + "p is not a safe prime"
        return None
    if not gmpy2.is_prime(p, PRIME_CHECK_ROUNDS):
        return _FAILED + "p is not prime"
    if not gmpy2.is_prime(q, PRIME_CHECK_ROUNDS) or (p - 1) % q:
        return _FAILED + "q is not a prime factor of p - 1"
    if gmpy2.powmod(g, q, p) != 1:
        return _FAILED + "g does not have order q"
    return None


def request(p, g, q):
    """What the parent writes to the child."""
    return f"{p:x}\n{g:x}\n{'' if q is None else format(q, 'x')}\n".encode("ascii")


def answer(data):
    """The child's answer (without its newline) to ``data``."""
    try:
        p, g, q = data[:MAX_REQUEST + 1].decode("ascii").split("\n")[:3]
        p, g, q = int(p, 16), int(g, 16), int(q, 16) if q else None
    except ValueError:
        return REFUSED + b"the group check got a malformed request"
    if gmp_problem(p, g, q) is None:
        return OK
    from twisted_keyx.groups import ffdh

    try:
        ffdh.UncheckedParameters("custom", p, g, q).check()
    except ffdh.ParameterError as e:
        return REFUSED + " ".join(str(e).split()).encode("ascii", "replace")
    return REFUSED + b"the group check failed"  # cannot happen: ffdh runs gmp_problem too


def main():
    sys.stdout.buffer.write(answer(sys.stdin.buffer.read(MAX_REQUEST + 1)) + b"\n")
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
