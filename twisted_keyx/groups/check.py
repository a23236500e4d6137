"""``keyx-client dh``: checking a group the server sent, in another process.

A custom group's check (p and q prime: docs/protocols.rst, Groups) costs
the client about 0.5 s of CPU at 4096 bits and several seconds at 8192
(docs/benchmarks.rst), and gmpy2's ``is_prime`` holds the GIL all along
(only its ``powmod`` lets it go, with ``allow_release_gil``): in the
reactor's thread, or in any other thread of the client, the check would
freeze the reactor, and ``--timeout`` would wait for it.  So the check runs
in a child process, ``python -m twisted_keyx.groups.primechild``, which answers in
one line (:mod:`twisted_keyx.groups.primechild`); cancelling the check (the
client's timeout, or the connection's end) kills the child.

Named groups and X25519 need no check and never start a child; a group
over ``--max-bits``, or one whose encoding or sizes are wrong, is refused
before any child starts (:func:`twisted_keyx.groups.registry.read_parameters_message`).
"""

import os
import sys

from twisted.internet import defer, error, protocol

from twisted_keyx.groups import registry as groups
from twisted_keyx.groups import primechild

#: Bytes of the child's answer kept (a reason is one short line).
MAX_ANSWER = 1024


def command():
    """How to start the child: this Python, :mod:`twisted_keyx.groups.primechild`."""
    return [sys.executable, "-m", "twisted_keyx.groups.primechild"]


def check_parameters_message(payload, max_bits=groups.DEFAULT_MAX_BITS, reactor=None,
                             argv=None, accepted=None):
    """Client side: a Deferred firing with the group message 4 announces, or
    failing with :class:`~twisted_keyx.groups.registry.GroupError`.  The cheap checks
    run now; the costly one, if any, in a child process (``argv``, default
    :func:`command`).  A group not in ``accepted`` (``--groups``) is refused
    before anything else.  Cancel the Deferred to kill the child."""
    try:
        parameters = groups.read_parameters_message(payload, max_bits=max_bits,
                                                    accepted=accepted)
    except groups.GroupError:
        return defer.fail()
    if not isinstance(parameters, groups.UncheckedParameters):
        return defer.succeed(parameters)
    return check_in_child(parameters, reactor, argv)


def check_in_child(parameters, reactor=None, argv=None):
    """Run ``parameters.check()`` in a child process: a Deferred firing with
    ``parameters.group()`` or failing with a GroupError."""
    if reactor is None:
        from twisted.internet import reactor
    argv = command() if argv is None else argv
    child = _Check(parameters)
    child.done = defer.Deferred(child.cancel)
    try:
        reactor.spawnProcess(child, argv[0], argv, env=os.environ)
    except OSError as e:
        return defer.fail(groups.GroupError(f"cannot check the group: {e}"))
    return child.done


class _Check(protocol.ProcessProtocol):
    """The parent's end of one check."""

    done = None

    def __init__(self, parameters):
        self.parameters = parameters
        self.answer = b""

    def connectionMade(self):
        parameters = self.parameters
        self.transport.write(primechild.request(parameters.p, parameters.g, parameters.q))
        self.transport.closeStdin()

    def outReceived(self, data):
        room = MAX_ANSWER - len(self.answer)
        if room > 0:
            self.answer += data[:room]

    def errReceived(self, data):
        pass  # a broken child is told by its answer and status, not its words

    def cancel(self, done):
        try:
            self.transport.signalProcess("KILL")
        except (error.ProcessExitedAlready, OSError):
            pass

    def processEnded(self, reason):
        if self.done.called:
            return  # cancelled: the child was killed
        answer = self.answer.strip()
        if reason.check(error.ProcessDone):
            if answer == primechild.OK:
                self.done.callback(self.parameters.group())
                return
            if answer.startswith(primechild.REFUSED) and b"\n" not in answer:
                self.done.errback(groups.GroupError(
                    answer[len(primechild.REFUSED):].decode("ascii", "replace")))
                return
        self.done.errback(groups.GroupError(
            f"the group check failed ({reason.getErrorMessage()})"))
