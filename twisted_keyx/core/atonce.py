"""Stores that answer at once: what runs before the reactor does (the
daemon's start-up, in :attr:`twisted_keyx.core.handshakes.Handshake.configure`)
or without one (``keyx-admin``) calls the store interfaces of
:mod:`twisted_keyx.core.interfaces`, whose methods return Deferreds, and
takes their results here, the Deferreds having fired."""

from twisted.internet import defer
from twisted.python.failure import Failure


def at_once(function, *args):
    """A ``run_in_thread`` that runs ``function`` now, in this thread (at
    start-up, before the reactor runs)."""
    return defer.maybeDeferred(function, *args)


def result_now(deferred):
    """The result of a Deferred that has fired (a store called
    :func:`at_once`), or its exception raised."""
    results = []
    deferred.addBoth(results.append)
    if not results:
        raise RuntimeError("the store did not answer at once")
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]
