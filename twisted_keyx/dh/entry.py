"""The DH handshake's entry in the handshake registry
(:mod:`twisted_keyx.core.handshakes`): the ``--dh`` and ``--dh-raw``
options of ``twistd keyx``, the diagrams and the sequence charts."""

from twisted_keyx.core.handshakes import Endpoint, Handshake, Machine


def server_factory(context):
    """The framed DH server for ``twistd keyx --dh``."""
    from twisted_keyx.dh.protocol import DHServerFactory

    return DHServerFactory(context.group, show_secrets=context.show_secrets,
                           host_key=context.host_key)


def raw_server_factory(context):
    """The unframed DH server (the socket tutorial's wire format:
    docs/protocols.rst, "Unframed wire") for ``--dh-raw``."""
    from twisted_keyx.dh.raw import RawDHServerFactory

    return RawDHServerFactory(context.group, show_secrets=context.show_secrets,
                              host_key=context.host_key)


def banner(context, served):
    """The daemon's start-up line for DH: where, which group, which host key."""
    endpoints = ", ".join(served.get("dh", ()))
    if served.get("dh-raw"):
        endpoints += "; unframed (the tutorial's wire format) on " + ", ".join(served["dh-raw"])
    if context.host_key is None:
        host = "no host key (unauthenticated only)"
    else:
        host = f"host key {context.host_key.fingerprint}"
        if context.host_key_created:
            host += " (created now)"
    return [("DH handshake on {endpoints} with group {group} ({bits} bits); {host}",
             dict(endpoints=endpoints, group=context.group.name, bits=context.group.bits,
                  host=host))]


# --- sequence charts (docs/sequences/), drawn by twisted_keyx.observe.sequence ----

DH_NOTES = ["Both sides: shared secret; H = SHA-256 of the transcript of",
            "messages 1 to 6; session key = HKDF-SHA256(secret,",
            "info = 'twisted-keyx dh session key v1' || H)."]

#: The same for a group that is a KEM (X-Wing): the machines are those of
#: every group, only the contents of messages 5 and 6 change.
KEM_NOTES = ["Message 5 carries the client's X-Wing encapsulation key (ML-KEM-768",
             "and X25519, 1216 bytes); the server encapsulates to it and message 6",
             "carries the ciphertext (1120 bytes): the server has no key pair of",
             "its own.  Shared secret = X-Wing's SHA3-256 combiner of the ML-KEM",
             "and X25519 secrets; H = SHA-256 of the transcript of messages 1",
             "to 6; session key = HKDF-SHA256(secret, info =",
             "'twisted-keyx dh session key v1' || H), as for every group."]


def dh_chart(group_name, raw=False, notes=DH_NOTES):
    """The recipe of the chart of a DH handshake in ``group_name``."""

    async def recipe(reactor, draw):
        from twisted_keyx.groups import registry as groups
        from twisted_keyx.dh.protocol import DHClientFactory, DHServerFactory
        from twisted_keyx.dh.raw import RawDHClientFactory, RawDHServerFactory

        server = (RawDHServerFactory if raw else DHServerFactory)(groups.named(group_name))
        client = (RawDHClientFactory if raw else DHClientFactory)()
        events = await draw.run(reactor, server, client, lambda protocol: protocol.finished)
        title = f"DH handshake, group {group_name}" + (" (unframed wire)" if raw else "")
        return draw.chart(title, *events, notes=notes)

    return recipe


async def dh_hostkey_chart(reactor, draw):
    """DH in X25519 with a host key: the client asks ``Host key?``, verifies
    message 7 and finds the key pinned in a known_hosts file
    (docs/hostkey.rst)."""
    import os
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

        events = await draw.run(reactor, server, client, verified, listening=pin)
    return draw.chart("DH handshake with a host key, group x25519", *events,
                      notes=["Message 1 'Host key?' asks for message 7; the server sends 6 and 7",
                             "in one flight.  Message 7 carries the server's Ed25519 host key",
                             "and its signature over the group name, that key and H, the",
                             "transcript hash of messages 1 to 6 (docs/hostkey.rst).  The client",
                             "verifies it with its own H, then finds the key pinned in its",
                             "known_hosts file; session key = HKDF-SHA256(secret, info =",
                             "'twisted-keyx dh session key v1' || H), as without a host key."])


HANDSHAKE = Handshake(
    name="dh",
    title="Diffie-Hellman handshake (RFC 7919 groups, X25519), with a host key",
    endpoints=(
        # One line each: usage.Options would keep a line break's indentation.
        Endpoint("dh", "Serve the framed DH handshake on ENDPOINT; may be repeated "
                       "[default: tcp:7777]", server_factory, default="tcp:7777"),
        Endpoint("dh-raw", "Serve the DH handshake unframed (the socket tutorial's wire "
                           "format: docs/howto/tutorial-scripts.rst) on ENDPOINT "
                           "(repeatable)", raw_server_factory),
    ),
    banner=banner,
    machines=(
        Machine("dh-server", "twisted_keyx.dh.handshake:DHServerHandshake",
                "DH handshake, server side"),
        Machine("dh-client", "twisted_keyx.dh.handshake:DHClientHandshake",
                "DH handshake, client side", start="AWAIT_GREETING"),
    ),
    charts={
        "dh-ffdhe2048": dh_chart("ffdhe2048"),
        "dh-ffdhe3072": dh_chart("ffdhe3072"),
        "dh-ffdhe4096": dh_chart("ffdhe4096"),
        "dh-x25519": dh_chart("x25519"),
        "dh-x25519-unframed": dh_chart("x25519", raw=True),
        "dh-xwing": dh_chart("xwing", notes=KEM_NOTES),
        "dh-hostkey": dh_hostkey_chart,
    },
    client_port=7777,
)
