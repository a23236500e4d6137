"""The child process of ``keyx-client dh`` that checks a server's
finite-field group off the reactor (:mod:`twisted_keyx.groups.check`;
docs/protocols.rst, "Groups"): ``python -m twisted_keyx.groups.primechild``.

p, g and q come on its standard input as three hex lines (q empty when
there is none); it answers ``ok``, or ``refused: REASON``, in one line.  It
starts fast: the check is :func:`twisted_keyx.groups.primecheck.gmp_problem`
(gmpy2 alone), and only for parameters that fail does it import
:mod:`twisted_keyx.groups.ffdh`, for OpenSSL's more detailed reason.
"""

import sys

from twisted_keyx.groups.primecheck import gmp_problem

#: The child's answer when the parameters passed, and the prefix of a refusal.
OK = b"ok"
REFUSED = b"refused: "
#: Bytes the child reads: three hex numbers of up to 8192 bits (ffdh.MAX_BITS).
MAX_REQUEST = 3 * (8192 // 4 + 2)


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
