"""Message sequence charts, drawn from real traced handshakes.

Each chart in docs/sequences/ comes from a handshake run over loopback TCP
(127.0.0.1) with a :class:`twisted_keyx.trace.Recorder` on each side: the
messages in the order they crossed the wire, each with the sender's and the
receiver's state before and after.  ``tests/test_sequence.py`` runs them
again and compares them with the committed files, so the charts cannot drift
from the code.  Regenerate them with::

    python -m twisted_keyx.sequence --write docs/sequences

Every chart has a name in :data:`CHARTS`; a new handshake adds a recipe
there (host key and OPAQUE are announced as slots until their factories
exist).
"""

import argparse
import os
import sys

from twisted.internet import defer, endpoints

from twisted_keyx import trace

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


def chart(title, client_events, server_events, kind_of, notes=()):
    """The chart as text: one block per message, numbered, with its kind
    (``kind_of(event) -> str``) and both sides' state changes."""
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


async def _run(reactor, server_factory, client_factory, outcome):
    server_recorder, client_recorder = trace.Recorder(), trace.Recorder()
    trace.traced(server_factory, lambda protocol: server_recorder)
    trace.traced(client_factory, lambda protocol: client_recorder)
    port = await endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        server_factory)
    try:
        client = await endpoints.TCP4ClientEndpoint(
            reactor, "127.0.0.1", port.getHost().port).connect(client_factory)
        await outcome(client)
        client.transport.loseConnection()
        if hasattr(client, "disconnected"):
            await client.disconnected
    finally:
        await port.stopListening()
    return client_recorder.events, server_recorder.events


async def dh_chart(reactor, group_name, raw=False):
    from twisted_keyx import groups
    from twisted_keyx.dh.protocol import DHClientFactory, DHServerFactory
    from twisted_keyx.dh.raw import RawDHClientFactory, RawDHServerFactory

    server = (RawDHServerFactory if raw else DHServerFactory)(groups.named(group_name))
    client = (RawDHClientFactory if raw else DHClientFactory)()
    events = await _run(reactor, server, client, lambda protocol: protocol.finished)
    title = f"DH handshake, group {group_name}" + (" (unframed wire)" if raw else "")
    return chart(title, *events, kind_of=lambda e: trace.describe_event(e).kind,
                 notes=["Both sides: shared secret; H = SHA-256 of the transcript of",
                        "messages 1 to 6; session key = HKDF-SHA256(secret,",
                        "info = 'twisted-keyx dh session key v1' || H)."])


async def eke_chart(reactor):
    from twisted_keyx.eke import crypto, userstore
    from twisted_keyx.eke.protocol import EKEClientFactory, EKEServerFactory

    kdf = crypto.ScryptParameters(n=2**14, r=8, p=1)  # the client's floor: 16 MiB
    user = userstore.new_user("alice", "correct horse", kdf=kdf)

    class Users:
        def lookup(self, name):
            return user if name == user.name else None

    server = EKEServerFactory(Users())
    client = EKEClientFactory("alice", "correct horse")

    async def login_and_quit(protocol):
        await protocol.authenticated
        protocol.quit()
        await protocol.finished

    events = await _run(reactor, server, client, login_and_quit)
    return chart("EKE handshake, then quit", *events,
                 kind_of=lambda e: trace.describe_event(e).kind,
                 notes=["Messages 1 to 8 are the handshake; 9 and 10 are chat records",
                        "(quit, and its confirmation) under the per-direction chat keys."])


#: name -> coroutine function ``(reactor) -> chart text``; None: a slot for
#: a handshake whose factories are not on this branch yet.
CHARTS = {
    "dh-ffdhe2048": lambda reactor: dh_chart(reactor, "ffdhe2048"),
    "dh-ffdhe3072": lambda reactor: dh_chart(reactor, "ffdhe3072"),
    "dh-ffdhe4096": lambda reactor: dh_chart(reactor, "ffdhe4096"),
    "dh-x25519": lambda reactor: dh_chart(reactor, "x25519"),
    "dh-x25519-unframed": lambda reactor: dh_chart(reactor, "x25519", raw=True),
    "eke": eke_chart,
    "dh-hostkey": None,
    "opaque": None,
}


def names():
    return [name for name, recipe in CHARTS.items() if recipe is not None]


async def generate(reactor, name):
    return await CHARTS[name](reactor)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m twisted_keyx.sequence",
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
