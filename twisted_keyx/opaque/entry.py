"""The OPAQUE handshake's entry in the handshake registry
(:mod:`twisted_keyx.core.handshakes`): ``twistd keyx --opaque``, its
password scheme, ``keyx-client opaque``, the diagrams, trace summaries, the
sequence chart, why ``keyx-lab crack`` finds nothing in a recording, and
the daemon-wide option OPAQUE owns, ``--opaque-key``: where the server
setup is, read through :class:`~twisted_keyx.core.interfaces.IServerSetupStore`."""

import base64
import binascii
import os
from dataclasses import dataclass
from typing import Any

from twisted.python import usage

from twisted_keyx.core.handshakes import Endpoint, Handshake, Machine, Parameter, Summary

#: The OPAQUE key file used when --opaque-key is not given.
DEFAULT_OPAQUE_KEY = "keyx-opaque-key"


@dataclass(frozen=True)
class OPAQUESettings:
    """What OPAQUE's options said (``config.settings["opaque"]``): the
    server setup, read at start-up from ``store``
    (:class:`~twisted_keyx.core.interfaces.IServerSetupStore`), and whether
    it was made now."""

    store: Any
    setup: Any
    created: bool = False
    #: The daemon's :class:`~twisted_keyx.core.interfaces.IInvitationStore`
    #: (registration over the network), or None: no one may register.
    invitations: Any = None

    @property
    def where(self):
        """The key file's path, or the database's URL without its password."""
        return self.store.where


def configure(options, shared):
    """OPAQUE's settings: the server setup from ``--store``'s database when
    the daemon has one (made and stored there now if there is none: the
    first daemon's is every daemon's), else from the key file of
    ``--opaque-key`` (a fresh one made in memory and written once the
    daemon can start, when the file does not exist and no OPAQUE user needs
    the old one).  A problem is a UsageError."""
    import dataclasses

    from twisted_keyx.core.interfaces import IInvitationStore, IServerSetupStore

    store = shared.store(IServerSetupStore)
    if store is not None:
        settings = _from_shared_store(store)
    else:
        settings = _from_key_file(os.path.abspath(options["opaque-key"]), shared)
    return dataclasses.replace(settings, invitations=shared.store(IInvitationStore))


def _from_shared_store(store):
    from twisted_keyx.core.interfaces import StoreUnavailable
    from twisted_keyx.opaque.records import ServerSetup
    from twisted_keyx.opaque.scheme import load_or_create

    try:
        setup, created = load_or_create(store, ServerSetup.generate)
    except StoreUnavailable as e:
        raise usage.UsageError(str(e)) from None
    return OPAQUESettings(store, setup, created=created)


def _from_key_file(path, shared):
    """The setup of ``path``; a usage error when OPAQUE users exist without
    it (their records open only with its OPRF seed), or when it is
    unusable or readable by others."""
    from twisted_keyx.core.atonce import at_once, result_now
    from twisted_keyx.core.fileutil import why_not_writable
    from twisted_keyx.core.interfaces import StoreUnavailable
    from twisted_keyx.opaque.records import ServerSetup
    from twisted_keyx.opaque.scheme import write_new_key_file
    from twisted_keyx.opaque.setupfile import KeyFileSetup

    opaque_users = shared.user_count_of("opaque")
    store = KeyFileSetup(path, run_in_thread=at_once)
    try:
        setup = result_now(store.load())
    except StoreUnavailable as e:
        raise usage.UsageError(f"--opaque-key: {e}") from None
    if setup is not None:
        return OPAQUESettings(store, setup)
    if opaque_users:
        raise usage.UsageError(
            f"--opaque-key {path}: no such file, but the user file has "
            f"{opaque_users} OPAQUE user(s), who can log in only with the key "
            "file they were registered with; restore it, or give its path")
    problem = why_not_writable(path)
    if problem:
        raise usage.UsageError(f"--opaque-key: cannot write {path}: {problem}")
    setup = ServerSetup.generate()
    shared.new_file(path, lambda: write_new_key_file(path, setup))
    return OPAQUESettings(store, setup, created=True)


def server_factory(context):
    from twisted_keyx.opaque.protocol import OPAQUEServerFactory

    return OPAQUEServerFactory(context.users, context.settings.setup,
                               show_secrets=context.show_secrets, throttle=context.throttle,
                               source_of=context.source_of,
                               invitations=context.settings.invitations)


def client_factory(user, password, reply_received=None, profile=None):
    from twisted_keyx.opaque.protocol import OPAQUEClientFactory

    options = {} if profile is None else {"profile": profile}
    return OPAQUEClientFactory(user, password, reply_received=reply_received, **options)


def profile_argument(text):
    """An argparse ``type``: a profile's text (twisted_keyx.opaque.profile),
    for ``keyx-client opaque --profile`` and ``keyx-admin opaque-profile``."""
    import argparse

    from twisted_keyx.opaque.errors import OpaqueError
    from twisted_keyx.opaque.profile import Profile

    try:
        return Profile.parse(text)
    except OpaqueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


CLIENT_OPTIONS = (
    (("--profile",), dict(
        dest="profile", type=profile_argument, default=None, metavar="PROFILE",
        help="the server's OPAQUE profile, as 'keyx-admin opaque-profile' prints it there: "
             "twisted-keyx-v1 (the default) or rfc9807,m=KiB,t=PASSES,p=LANES,context=BASE64")),
)


def after_login(result, host, port, out, err):
    """``keyx-client opaque``: the server key's fingerprint, and a warning
    when this host showed another one last time (trust.knownservers)."""
    from twisted_keyx.core.peers import host_port
    from twisted_keyx.trust.knownservers import KnownServers, server_key_fingerprint
    from twisted_keyx.trust.tofu import TrustStatus

    key = result.server_public_key
    out.write(f"Server key fingerprint {server_key_fingerprint(key)}\n")
    check = KnownServers().check_and_record(host, port, key)
    if check.status is TrustStatus.CHANGED:
        err.write(f"keyx-client: warning: the server key of {host_port(host, port)} changed "
                  f"(was {check.previous}): a new key file on the server, or another server\n")


def banner(context, served):
    from twisted_keyx.trust.knownservers import server_key_fingerprint

    settings = context.settings
    return [("OPAQUE handshake and chat on {endpoints}; key file {path} ({state}), "
             "server key fingerprint {fingerprint}, profile {profile}",
             dict(endpoints=", ".join(served["opaque"]), path=settings.where,
                  state="created now, no OPAQUE users yet" if settings.created
                  else "loaded",
                  fingerprint=server_key_fingerprint(settings.setup.server_public_key),
                  profile=settings.setup.profile.text()))]


def _b64(data):
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None


def describe(payload):
    """OPAQUE's lines (docs/protocols.rst, OPAQUE): KE1 and the user name,
    KE2 behind its KSF header, KE3."""
    from twisted_keyx.opaque import messages
    from twisted_keyx.opaque.ksf import Argon2idParameters

    head, space, name = payload.partition(b" ")
    ke = _b64(head)
    if ke is None:
        return None
    if space and len(ke) == messages.KE1_SIZE and all(32 <= b < 127 for b in name):
        return Summary(f"base64(KE1, {len(ke)} bytes) and the user name "
                       f"{name.decode('ascii')!r}")
    if not space and len(ke) == messages.KE3_SIZE:
        return Summary(f"base64(KE3, {len(ke)} bytes)")
    header = Argon2idParameters.header_size
    if not space and len(ke) == header + messages.KE2_SIZE:
        params = Argon2idParameters.decode(ke[:header])
        return Summary(f"base64(KSF header, {header} bytes: {params}; "
                       f"KE2, {messages.KE2_SIZE} bytes)")
    if not space and len(ke) == messages.KE2_SIZE:
        return Summary(f"base64(KE2, {messages.KE2_SIZE} bytes; rfc9807 profile)")
    return None


def describe_session(payload):
    """The session after the login: chat records, and the lines of a change
    of password (docs/opaque.rst, Changing the password)."""
    from twisted_keyx.chat.entry import describe as chat_record
    from twisted_keyx.opaque import invitation, passwd

    if payload in (passwd.CHANGED, passwd.NOT_CHANGED):
        return None  # printable: shown as it is
    head, space, rest = payload.partition(b" ")
    if head == passwd.PASSWD and space:
        p1 = _b64(rest)
        if p1 is not None and len(p1) == invitation.R1_SIZE:
            return Summary(f"passwd and base64(p1, {len(p1)} bytes: nonce, blinded password)")
        return None
    data = _b64(payload)
    if data is not None and len(data) == invitation.R2_SIZE:
        return Summary(f"base64(p2, {len(data)} bytes: nonce, registration response, "
                       "Argon2id cost, MAC), or a chat record of that size")
    if data is not None and len(data) == invitation.R3_SIZE:
        return Summary(f"base64(p3, {len(data)} bytes: the new record, encrypted), "
                       "or a chat record of that size")
    return chat_record(payload)


NOTHING_TO_CRACK = """\
This is an OPAQUE login: there is nothing here to test a guess against.
  - The password never enters the wire, not even under a key derived from it:
    the client blinds it (an OPRF, RFC 9497), and the blinded element is a
    random-looking group element whatever the password is.
  - The server's OPRF evaluation uses the server's OPRF key, which never
    travels: without it, a guess cannot be turned into the randomized password
    that opens the envelope.
  - The key exchange messages are authenticated with keys that come from that
    randomized password; a recording gives no equation in the password alone.
Each guess needs the server's help: an online attack, one login per guess,
which the server can count and throttle (docs/opaque.rst).
"""


def recording(events):
    """``keyx-lab crack``: a recorded OPAQUE login gives nothing to test."""
    return NOTHING_TO_CRACK


async def chart(reactor, draw):
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

    events = await draw.run(reactor, server, client, draw.login_and_quit)
    return draw.chart("OPAQUE login, then quit", *events,
                      notes=["Messages 1 to 4 are the login (RFC 9807's KE1, KE2 with the",
                             "record's Argon2id cost in front, KE3, then ok); 5 and 6 are chat",
                             "records (quit, and its confirmation) under the per-direction chat",
                             "keys.  No message depends on the password alone: the client blinds",
                             "it (OPRF) and only the server's OPRF key completes it."])


HANDSHAKE = Handshake(
    name="opaque",
    title="the OPAQUE password handshake (RFC 9807), then an encrypted chat",
    endpoints=(
        Endpoint("opaque", "Serve the OPAQUE password handshake and chat on ENDPOINT; may be "
                           "repeated [default: tcp:8089]", server_factory, default="tcp:8089"),
    ),
    daemon_options=(
        Parameter("opaque-key",
                  "OPAQUE key file (the OPRF seed and the server's key pair), mode 0600, "
                  "made by keyx-admin adduser --scheme opaque.  Missing with no OPAQUE "
                  "users: a fresh one is written.  Missing with OPAQUE users: an error.",
                  default=DEFAULT_OPAQUE_KEY),
    ),
    configure=configure,
    banner=banner,
    machines=(
        Machine("opaque-server", "twisted_keyx.opaque.handshake:OPAQUEServerHandshake",
                "OPAQUE handshake, server side"),
        Machine("opaque-client", "twisted_keyx.opaque.handshake:OPAQUEClientHandshake",
                "OPAQUE handshake, client side", start="AWAIT_KE2"),
        Machine("opaque-chat-server", "twisted_keyx.opaque.passwd:OPAQUEServerChat",
                "Chat after an OPAQUE login, with a change of password, server side"),
        Machine("opaque-chat-client", "twisted_keyx.opaque.passwd:OPAQUEClientChat",
                "Chat after an OPAQUE login, with a change of password, client side"),
    ),
    summaries={"OPAQUEClientHandshake": describe, "OPAQUEServerHandshake": describe,
               "OPAQUEClientChat": describe_session, "OPAQUEServerChat": describe_session},
    charts={"opaque": chart},
    scheme="twisted_keyx.opaque.scheme:SCHEME",
    client=client_factory,
    client_options=CLIENT_OPTIONS,
    client_commands="twisted_keyx.opaque.commands:add_commands",
    admin_commands="twisted_keyx.opaque.commands:add_admin_commands",
    client_port=8089,
    client_description=(
        "Log in with the OPAQUE password handshake, then chat as with eke. "
        "Prints the server key's fingerprint and warns when a host shows "
        "another one than last time. 'register' registers with an invitation "
        "code (keyx-admin invite) instead; 'passwd' logs in and changes the "
        "password inside the session (the server never sees either password). "
        "Exit statuses as for eke."
    ),
    after_login=after_login,
    recording=recording,
)
