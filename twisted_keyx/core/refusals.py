"""The server's refusals that are not "authentication failed".

A password handshake (EKE, OPAQUE) answers every wrong password, unknown
user and bad box with ``authentication failed``.  Two refusals say
something else, because the password was never looked at and the user must
not be told it is wrong (docs/fleet.rst, "The guess throttle";
docs/opaque.rst, "Errors"):

``too many attempts for this user; try again in N s``
    The guess throttle (:mod:`twisted_keyx.service.throttle`) refused the
    attempt unchecked: too many guesses for this user (from sources the user
    has not logged in from) or from this source are waiting.  ``N`` is a
    whole number of seconds, at least 1.

``the server cannot check passwords right now; try again later``
    The daemon's store (users, throttle state) did not answer
    (:class:`twisted_keyx.core.interfaces.StoreUnavailable`, e.g. its
    PostgreSQL is down).

The server sends one of them in place of the answer a password would have
earned (EKE's step 4, OPAQUE's KE2) and closes.  A client recognises them
in any state (:func:`refusal`) and fails with :class:`TooManyAttempts` or
:class:`ServerUnavailable`, which ``keyx-client`` reports with their own
exit statuses.
"""

import math
import re

from twisted_keyx.core.machine import HandshakeFailed

TOO_MANY_PREFIX = b"too many attempts for this user; try again in "
UNAVAILABLE_REPLY = b"the server cannot check passwords right now; try again later"
#: The longest refusal line (a wait of up to 10**6 s).
MAX_REFUSAL_LINE = len(UNAVAILABLE_REPLY)

_TOO_MANY = re.compile(re.escape(TOO_MANY_PREFIX) + rb"([1-9][0-9]{0,5}) s")


class Refused(HandshakeFailed):
    """The server refused the attempt without looking at the password."""

    def __init__(self, reason, reply):
        super().__init__(reason)
        #: The line the server sends (the server side's exceptions carry it).
        self.reply = reply


class TooManyAttempts(Refused):
    """Too many attempts for this user (or from this source) are waiting:
    try again in :attr:`retry_after` seconds."""

    def __init__(self, retry_after):
        self.retry_after = retry_after = max(1, min(999_999, math.ceil(retry_after)))
        line = too_many_line(retry_after)
        super().__init__(line.decode("ascii"), line)


class ServerUnavailable(Refused):
    """The server cannot check passwords right now (its store is down)."""

    def __init__(self):
        super().__init__(UNAVAILABLE_REPLY.decode("ascii"), UNAVAILABLE_REPLY)


def too_many_line(seconds):
    """The refusal line for a wait of ``seconds`` (rounded up, at least 1)."""
    seconds = max(1, min(999_999, math.ceil(seconds)))
    return TOO_MANY_PREFIX + str(seconds).encode("ascii") + b" s"


def refusal(line):
    """The :class:`Refused` a server's ``line`` is, or None if it is none."""
    if line == UNAVAILABLE_REPLY:
        return ServerUnavailable()
    match = _TOO_MANY.fullmatch(line)
    if match is not None:
        return TooManyAttempts(int(match.group(1)))
    return None


def store_refusal(error):
    """The refusal a server's machine fails with when what it asked for
    (:mod:`twisted_keyx.core.decisions`) came back as ``error``: the
    throttle's own refusal as it is, anything else (a store down) as
    :class:`ServerUnavailable`."""
    return error if isinstance(error, Refused) else ServerUnavailable()
