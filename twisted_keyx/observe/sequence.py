"""Message sequence charts, drawn from real traced handshakes.

Each chart in docs/sequences/ comes from a handshake run over loopback TCP
(127.0.0.1) with a :class:`twisted_keyx.observe.trace.Recorder` on each side: the
messages in the order they crossed the wire, each with the sender's and the
receiver's state before and after.  ``tests/test_trace.py`` (``ChartTests``)
runs every one of them again and compares it with the committed file, so the
charts cannot drift from the code.  Regenerate them with::

    python -m twisted_keyx.observe.sequence --write docs/sequences

Every chart has a name and a recipe in its handshake's registry entry
(:attr:`twisted_keyx.core.handshakes.Handshake.charts`); a new handshake
adds its recipes there (and their files, which the test then checks).
"""

import argparse
import os
import sys

from twisted.internet import defer, endpoints

from twisted_keyx.core import handshakes
from twisted_keyx.observe import trace

#: The narrowest a side's column is.
WIDTH = 20


def _pair(client_events, server_events):
    """The messages on the wire: each client event with the server's event
    for the same message (the handshakes are lock-step, so the n-th message
    either side saw is the same one)."""
    if len(client_events) != len(server_events):
        raise ValueError(f"the client saw {len(client_events)} messages, "
                         f"the server {len(server_events)}")
    return list(zip(client_events, server_events))


def _kind(event):
    return trace.describe_event(event).kind


def chart(title, client_events, server_events, kind_of=_kind, notes=()):
    """The chart as text: one block per message, numbered, with its kind
    (``kind_of(event) -> str``; by default what the trace says it is) and
    both sides' state changes."""
    pairs = _pair(client_events, server_events)
    width = max([WIDTH] + [len(f"{e.before} -> {e.after}") for pair in pairs for e in pair])
    lines = [title, "=" * len(title), "",
             f"{'client':<{width}}{'':^15}{'server':>{width}}"]
    for number, (c, s) in enumerate(pairs, 1):
        label = f"{number}. {kind_of(c)}"
        if c.direction == "out":
            arrow = "-" * 12 + ">"
        else:
            arrow = "<" + "-" * 12
        lines.append(f"{c.before + ' -> ' + c.after:<{width}} {arrow} "
                     f"{s.before + ' -> ' + s.after:>{width}}")
        lines.append(f"    {label}")
    lines.append("")
    lines.extend(notes)
    return "\n".join(lines).rstrip() + "\n"


async def _run(reactor, server_factory, client_factory, outcome, listening=None):
    """Serve ``server_factory`` on 127.0.0.1, connect ``client_factory`` to
    it and await ``outcome(client protocol)``; ``listening(port number)``, if
    given, is called before the client connects.  Returns both sides' events."""
    server_recorder, client_recorder = trace.Recorder(), trace.Recorder()
    trace.traced(server_factory, lambda protocol: server_recorder)
    trace.traced(client_factory, lambda protocol: client_recorder)
    port = await endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        server_factory)
    try:
        if listening is not None:
            listening(port.getHost().port)
        client = await endpoints.TCP4ClientEndpoint(
            reactor, "127.0.0.1", port.getHost().port).connect(client_factory)
        await outcome(client)
        client.transport.loseConnection()
        if hasattr(client, "disconnected"):
            await client.disconnected
    finally:
        await port.stopListening()
    return client_recorder.events, server_recorder.events


async def login_and_quit(protocol):
    """A password client's outcome for a chart: log in, then quit."""
    await protocol.authenticated
    protocol.quit()
    await protocol.finished


async def run(reactor, server_factory, client_factory, outcome, listening=None):
    """What a chart recipe awaits: both sides' events (see :func:`_run`)."""
    return await _run(reactor, server_factory, client_factory, outcome, listening)


def charts():
    """name -> coroutine function ``(reactor, draw) -> chart text``: every
    chart of the handshake registry (:mod:`twisted_keyx.core.handshakes`).
    ``draw`` is this module: a recipe awaits :func:`run` and returns
    :func:`chart`'s text."""
    return handshakes.charts()


def names():
    return list(charts())


async def generate(reactor, name):
    return await charts()[name](reactor, sys.modules[__name__])


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m twisted_keyx.observe.sequence",
                                     description="Draw the message sequence charts.")
    parser.add_argument("--write", metavar="DIR", help="write NAME.txt files into DIR")
    parser.add_argument("names", nargs="*", default=None)
    args = parser.parse_args(argv)
    wanted = args.names or names()
    from twisted.internet import task

    async def run(reactor):
        for name in wanted:
            text = await generate(reactor, name)
            if args.write:
                with open(os.path.join(args.write, f"{name}.txt"), "w") as f:
                    f.write(text)
            else:
                sys.stdout.write(text + "\n")

    task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor)))


if __name__ == "__main__":
    main()
