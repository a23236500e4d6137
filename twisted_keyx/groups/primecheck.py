"""The costly check of finite-field parameters, with GMP alone
(docs/protocols.rst, "Groups").

:func:`gmp_problem` is what :mod:`twisted_keyx.groups.ffdh` runs once for a
parameter file or a server's group: p prime; q prime, dividing p - 1, and
the order of g.  It is also what the child process of ``keyx-client dh``
runs (:mod:`twisted_keyx.groups.primechild`), so this module imports
nothing but gmpy2: the child starts fast.
"""

import gmpy2

#: The ``reps`` of gmpy2.is_prime for the one-time checks of p and q: GMP's
#: mpz_probab_prime_p runs trial division, Baillie-PSW (no composite known
#: to pass it), then reps - 24 Miller-Rabin rounds with random bases.
#: 32 costs about 0.5 s of CPU for a 4096-bit safe prime (64: 1.9 s).
PRIME_CHECK_ROUNDS = 32

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
