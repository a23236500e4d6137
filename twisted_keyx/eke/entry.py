"""The EKE handshake's entry in the handshake registry
(:mod:`twisted_keyx.core.handshakes`): ``twistd keyx --eke``, its password
scheme, ``keyx-client eke``, the diagrams, trace summaries, the sequence
chart, what ``keyx-lab crack`` does with a recording, and the
daemon-wide option EKE owns, ``--hide-unknown-users``."""

import base64
import binascii
from dataclasses import dataclass

from twisted_keyx.core.handshakes import (
    Endpoint, Flag, Handshake, Machine, OfflineAttack, Summary)


@dataclass(frozen=True)
class EKESettings:
    """What EKE's options said (``config.settings["eke"]``)."""

    hide_unknown_users: bool = False


def configure(options, shared):
    return EKESettings(hide_unknown_users=bool(options["hide-unknown-users"]))


def server_factory(context):
    from twisted_keyx.eke.protocol import EKEServerFactory

    return EKEServerFactory(context.users,
                            hide_unknown_users=context.settings.hide_unknown_users,
                            show_secrets=context.show_secrets, throttle=context.throttle,
                            source_of=context.source_of)


def client_factory(user, password, reply_received=None, pinned=None):
    """``pinned``: the (salt, cost) pinned for the user at this server
    (twisted_keyx.eke.pins), which step 2 must show."""
    from twisted_keyx.eke.protocol import EKEClientFactory

    return EKEClientFactory(user, password, reply_received=reply_received, pinned=pinned)


def banner(context, served):
    return [("EKE handshake and chat on {endpoints}; users from {path} ({users})",
             dict(endpoints=", ".join(served["eke"]), path=context.users.path,
                  users="file not found: no users yet" if context.user_count is None
                  else f"{context.user_count} user(s)"))]


def describe(payload):
    """Step 2, ``yes SALT scrypt N r p``: the salt as its size."""
    words = payload.split(b" ")
    if len(words) == 6 and words[0] == b"yes" and words[2] == b"scrypt":
        try:
            salt = base64.b64decode(words[1], validate=True)
        except (binascii.Error, ValueError):
            salt = b""
        params = b" ".join(words[2:]).decode("ascii", "replace")
        return Summary(f"yes <salt, {len(salt)} bytes> {params}", f"salt {salt.hex()}")
    return None


def recording(events):
    """The offline dictionary attack on a recorded EKE handshake: step 2
    gives the salt and the scrypt cost, step 3 the box E_pw(pk); for a
    guess, scrypt(guess, salt) is tried as the AES-GCM key of that box, and
    the tag says at once whether the guess is right.  Raises ValueError if
    the recording does not reach step 3."""
    from twisted_keyx.eke import crypto, messages

    if len(events) < 3:
        raise ValueError("the trace holds no EKE handshake up to step 3")
    user = events[0].payload.decode("utf-8")
    try:
        salt, n, r, p = messages.parse_yes(events[1].payload)
        box = messages.decode_box(events[2].payload, 3)
    except messages.MalformedLine as e:
        raise ValueError(f"the recorded steps 2 and 3 do not parse: {e}") from None
    kdf = crypto.ScryptParameters(n, r, p)

    def test(guess):
        key = crypto.derive_password_key(crypto.normalize_password(guess), salt, kdf)
        try:
            crypto.open_box(key, 3, user, box)
        except crypto.CryptoError:
            return False
        return True

    return OfflineAttack(f"user {user!r}, salt {salt.hex()}, {kdf}", test)


async def chart(reactor, draw):
    from twisted_keyx.eke import crypto
    from twisted_keyx.eke.protocol import EKEClientFactory, EKEServerFactory
    from twisted_keyx.eke.scheme import new_user

    kdf = crypto.DEFAULT_SCRYPT  # the client's floor: the default cost, 32 MiB
    user = new_user("alice", "correct horse", kdf=kdf)

    class Users:
        def lookup(self, name, scheme="eke"):
            return user if name == user.name else None

    server = EKEServerFactory(Users())
    client = EKEClientFactory("alice", "correct horse")

    events = await draw.run(reactor, server, client, draw.login_and_quit)
    return draw.chart("EKE handshake, then quit", *events,
                      notes=["Messages 1 to 8 are the handshake; 9 and 10 are chat records",
                             "(quit, and its confirmation) under the per-direction chat keys."])


HANDSHAKE = Handshake(
    name="eke",
    title="the EKE password handshake, then an encrypted chat",
    endpoints=(
        Endpoint("eke", "Serve the EKE password handshake and chat on ENDPOINT; may be "
                        "repeated [default: tcp:8088]", server_factory, default="tcp:8088"),
    ),
    daemon_options=(
        Flag("hide-unknown-users",
             "EKE: answer yes to every well-formed user name and let an unknown "
             "name fail at the nonce step exactly like a wrong password, so that "
             "probing cannot list user names. Without it an unknown user gets no "
             "and the connection closes, as in the original."),
    ),
    configure=configure,
    banner=banner,
    machines=(
        Machine("eke-server", "twisted_keyx.eke.handshake:EKEServerHandshake",
                "EKE handshake, server side"),
        Machine("eke-client", "twisted_keyx.eke.handshake:EKEClientHandshake",
                "EKE handshake, client side", start="AWAIT_ANSWER"),
    ),
    summaries={"EKEClientHandshake": describe, "EKEServerHandshake": describe},
    charts={"eke": chart},
    scheme="twisted_keyx.eke.scheme:SCHEME",
    client=client_factory,
    client_port=8088,
    client_pin="twisted_keyx.eke.pins:ClientPin",
    client_description=(
        "Log in with the EKE password handshake, then chat: each line of "
        "standard input (a terminal or a pipe) goes to the server, "
        "encrypted, and each reply is printed. quit or the end of input "
        "ends the session. Exit status 0 after a clean session, 1 if "
        "authentication fails (wrong password or unknown user) or the chat "
        "breaks, 2 for a usage error, 3 for a network error, 4 if the "
        "server refused the attempt unchecked (too many attempts for this "
        "user; try later), 5 if the server cannot check passwords right "
        "now, 130 if interrupted (Ctrl-C)."
    ),
    recording=recording,
)
