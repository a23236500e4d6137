"""The DH handshake's entry in the handshake registry
(:mod:`twisted_keyx.core.handshakes`): the ``--dh`` and ``--dh-raw``
options of ``twistd keyx`` and the daemon-wide options DH owns
(``--group``, ``--params``, ``--host-key``, ``--no-host-key``), the
diagrams and the sequence charts.

The password handshakes use neither the group nor the host key: these
options are DH's alone."""

import os
from dataclasses import dataclass
from typing import Any

from twisted.python import usage

from twisted_keyx.core.fileutil import why_not_writable
from twisted_keyx.core.handshakes import Endpoint, Flag, Handshake, Machine, Parameter
from twisted_keyx.groups import registry as groups

#: The host key used when --host-key is not given; made on first start.
DEFAULT_HOST_KEY = "keyx-host-key"


@dataclass(frozen=True)
class DHSettings:
    """What DH's options said (``config.settings["dh"]``)."""

    #: The group (:mod:`twisted_keyx.groups.registry`).
    group: Any
    #: The host key (None: --no-host-key), and whether it is new.
    host_key: Any = None
    host_key_created: bool = False


def configure(options, shared):
    """DH's settings from ``--group``/``--params`` and
    ``--host-key``/``--no-host-key``; a problem is a UsageError."""
    if options["params"] and options["group"]:
        raise usage.UsageError("give either --group or --params, not both")
    try:
        if options["params"]:
            group = groups.load_parameters_file(options["params"])
        else:
            group = groups.named(options["group"] or groups.DEFAULT)
    except groups.GroupError as e:
        raise usage.UsageError(str(e)) from None
    host_key, created = _host_key(options, shared)
    return DHSettings(group, host_key, created)


def _host_key(options, shared):
    """(HostKey or None, created): --host-key's, or the default one, made
    in memory if it does not exist yet (written at start:
    ``shared.new_file``); every problem is a UsageError."""
    from twisted_keyx.trust import hostkey

    if options["no-host-key"]:
        if options["host-key"]:
            raise usage.UsageError("give either --host-key or --no-host-key, not both")
        return None, False
    if options["host-key"]:
        try:
            return hostkey.load_host_key(options["host-key"]), False
        except hostkey.HostKeyError as e:
            raise usage.UsageError(f"--host-key: {e}") from None
    path = os.path.abspath(DEFAULT_HOST_KEY)
    try:
        if os.path.lexists(path):
            return hostkey.load_host_key(path), False
    except hostkey.HostKeyError as e:
        raise usage.UsageError(f"host key ({DEFAULT_HOST_KEY}): {e}") from None
    problem = why_not_writable(path)
    if problem:
        raise usage.UsageError(f"host key ({DEFAULT_HOST_KEY}): cannot create host key "
                               f"{path}: {problem}")
    private_key = hostkey.generate_private_key()
    shared.new_file(path, lambda: hostkey.create_host_key(path, private_key))
    return hostkey.HostKey.from_private_key(private_key), True


def server_factory(context):
    """The framed DH server for ``twistd keyx --dh``."""
    from twisted_keyx.dh.protocol import DHServerFactory

    return DHServerFactory(context.settings.group, show_secrets=context.show_secrets,
                           host_key=context.settings.host_key)


def raw_server_factory(context):
    """The unframed DH server (the socket tutorial's wire format:
    docs/protocols.rst, "Unframed wire") for ``--dh-raw``."""
    from twisted_keyx.dh.raw import RawDHServerFactory

    return RawDHServerFactory(context.settings.group, show_secrets=context.show_secrets,
                              host_key=context.settings.host_key)


def banner(context, served):
    """The daemon's start-up line for DH: where, which group, which host key."""
    settings = context.settings
    endpoints = ", ".join(served.get("dh", ()))
    if served.get("dh-raw"):
        endpoints += "; unframed (the tutorial's wire format) on " + ", ".join(served["dh-raw"])
    if settings.host_key is None:
        host = "no host key (unauthenticated only)"
    else:
        host = f"host key {settings.host_key.fingerprint}"
        if settings.host_key_created:
            host += " (created now)"
    return [("DH handshake on {endpoints} with group {group} ({bits} bits); {host}",
             dict(endpoints=endpoints, group=settings.group.name, bits=settings.group.bits,
                  host=host))]


DAEMON_OPTIONS = (
    Flag("no-host-key",
         "Serve the DH handshake without a host key: a client that asks for the "
         "host key signature (Host key?) is refused as the tutorial's server "
         "refuses it, and falls back to the unauthenticated handshake."),
    Parameter("group",
              "Group for the DH handshake: the RFC 7919 groups, X25519 (RFC 7748), "
              "or ML-KEM-768 + X25519 with X-Wing's or OpenSSH's combiner (post-quantum "
              "hybrids): "
              + ", ".join(groups.names()) + f" [default: {groups.DEFAULT}]"),
    Parameter("host-key",
              "Ed25519 host key (OpenSSH private key format, mode 0600) that signs "
              "the DH handshake for clients that ask (docs/hostkey.rst) "
              f"[default: {DEFAULT_HOST_KEY}, created on first start]"),
    Parameter("params",
              "PEM file of DH parameters ('DH PARAMETERS' from openssl dhparam or "
              "'X9.42 DH PARAMETERS' from openssl genpkey -genparam), checked once "
              "at start-up; instead of --group. Once checked, a handshake in it "
              "costs the server less than twice one in the named group of its size."),
)


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
    daemon_options=DAEMON_OPTIONS,
    configure=configure,
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
