"""Message sequence charts, drawn from real traced handshakes.

Each chart in docs/sequences/ comes from a handshake run over loopback TCP
(127.0.0.1) with a :class:`twisted_keyx.observe.trace.Recorder` on each side: the
messages in the order they crossed the wire, each with the sender's and the
receiver's state before and after.  ``tests/test_trace.py`` (``ChartTests``)
runs every one of them again and compares it with the committed file, so the
charts cannot drift from the code.  Regenerate them with::

    python -m twisted_keyx.observe.sequence --write docs/sequences

Every chart has a name in :data:`CHARTS`; a new handshake adds a recipe
there (and its file, which the test then checks).
"""

import argparse
import os
import sys

from twisted.internet import defer, endpoints

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


async def dh_chart(reactor, group_name, raw=False):
    from twisted_keyx.groups import registry as groups
    from twisted_keyx.dh.protocol import DHClientFactory, DHServerFactory
    from twisted_keyx.dh.raw import RawDHClientFactory, RawDHServerFactory

    server = (RawDHServerFactory if raw else DHServerFactory)(groups.named(group_name))
    client = (RawDHClientFactory if raw else DHClientFactory)()
    events = await _run(reactor, server, client, lambda protocol: protocol.finished)
    title = f"DH handshake, group {group_name}" + (" (unframed wire)" if raw else "")
    return chart(title, *events,
                 notes=["Both sides: shared secret; H = SHA-256 of the transcript of",
                        "messages 1 to 6; session key = HKDF-SHA256(secret,",
                        "info = 'twisted-keyx dh session key v1' || H)."])


async def _login_and_quit(protocol):
    """A password client's outcome for a chart: log in, then quit."""
    await protocol.authenticated
    protocol.quit()
    await protocol.finished


async def eke_chart(reactor):
    from twisted_keyx.eke import crypto
    from twisted_keyx.eke import records as userstore
    from twisted_keyx.eke.protocol import EKEClientFactory, EKEServerFactory

    kdf = crypto.ScryptParameters(n=2**14, r=8, p=1)  # the client's floor: 16 MiB
    user = userstore.new_user("alice", "correct horse", kdf=kdf)

    class Users:
        def lookup(self, name):
            return user if name == user.name else None

    server = EKEServerFactory(Users())
    client = EKEClientFactory("alice", "correct horse")

    events = await _run(reactor, server, client, _login_and_quit)
    return chart("EKE handshake, then quit", *events,
                 notes=["Messages 1 to 8 are the handshake; 9 and 10 are chat records",
                        "(quit, and its confirmation) under the per-direction chat keys."])


async def dh_hostkey_chart(reactor):
    """DH in X25519 with a host key: the client asks ``Host key?``, verifies
    message 7 and finds the key pinned in a known_hosts file
    (docs/hostkey.rst)."""
    import tempfile

    from twisted_keyx.groups import registry as groups
    from twisted_keyx.trust import hostkey
    from twisted_keyx.trust import knownhosts
    from twisted_keyx.dh.protocol import DHClientFactory, DHServerFactory

    host_key = hostkey.HostKey.from_private_key(hostkey.generate_private_key())
    server = DHServerFactory(groups.named("x25519"), host_key=host_key)
    client = DHClientFactory(ask_host_key=True)
    with tempfile.TemporaryDirectory() as folder:
        known = knownhosts.KnownHosts(os.path.join(folder, "known_hosts"))
        where = []

        def pin(port):
            # What a first contact with --accept-new, or the operator, wrote.
            where.append(port)
            known.record("127.0.0.1", port, host_key.public_key)

        async def verified(protocol):
            result = await protocol.finished
            decision = knownhosts.decide(known, "127.0.0.1", where[0], result.host_public_key)
            if decision.action is not knownhosts.Action.PROCEED:
                raise RuntimeError(f"the pinned host key was not accepted: {decision.text}")

        events = await _run(reactor, server, client, verified, listening=pin)
    return chart("DH handshake with a host key, group x25519", *events,
                 notes=["Message 1 'Host key?' asks for message 7; the server sends 6 and 7",
                        "in one flight.  Message 7 carries the server's Ed25519 host key",
                        "and its signature over the group name, that key and H, the",
                        "transcript hash of messages 1 to 6 (docs/hostkey.rst).  The client",
                        "verifies it with its own H, then finds the key pinned in its",
                        "known_hosts file; session key = HKDF-SHA256(secret, info =",
                        "'twisted-keyx dh session key v1' || H), as without a host key."])


async def opaque_chart(reactor):
    """An OPAQUE login then quit, for a user registered in the recipe with
    the cheapest Argon2id cost the client accepts by default."""
    from twisted_keyx.opaque.ksf import MiB, Argon2idParameters
    from twisted_keyx.opaque.protocol import OPAQUEClientFactory, OPAQUEServerFactory
    from twisted_keyx.opaque.records import ServerSetup
    from twisted_keyx.opaque.scheme import new_user

    # The client's floor (twisted_keyx.opaque.ksf.KsfLimits): 19 MiB, and
    # 38 MiB of memory * passes.
    floor = Argon2idParameters(memory_cost=19 * MiB, iterations=2, lanes=1)
    setup = ServerSetup.generate(floor)
    user = new_user("alice", "correct horse", setup)

    class Users:
        def lookup(self, name, scheme):
            return user if (name, scheme) == (user.name, "opaque") else None

    server = OPAQUEServerFactory(Users(), setup)
    client = OPAQUEClientFactory("alice", "correct horse")

    events = await _run(reactor, server, client, _login_and_quit)
    return chart("OPAQUE login, then quit", *events,
                 notes=["Messages 1 to 4 are the login (RFC 9807's KE1, KE2 with the",
                        "record's Argon2id cost in front, KE3, then ok); 5 and 6 are chat",
                        "records (quit, and its confirmation) under the per-direction chat",
                        "keys.  No message depends on the password alone: the client blinds",
                        "it (OPRF) and only the server's OPRF key completes it."])


#: name -> coroutine function ``(reactor) -> chart text``.
CHARTS = {
    "dh-ffdhe2048": lambda reactor: dh_chart(reactor, "ffdhe2048"),
    "dh-ffdhe3072": lambda reactor: dh_chart(reactor, "ffdhe3072"),
    "dh-ffdhe4096": lambda reactor: dh_chart(reactor, "ffdhe4096"),
    "dh-x25519": lambda reactor: dh_chart(reactor, "x25519"),
    "dh-x25519-unframed": lambda reactor: dh_chart(reactor, "x25519", raw=True),
    "eke": eke_chart,
    "dh-hostkey": dh_hostkey_chart,
    "opaque": opaque_chart,
}


def names():
    return list(CHARTS)


async def generate(reactor, name):
    return await CHARTS[name](reactor)


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
