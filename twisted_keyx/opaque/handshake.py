"""OPAQUE-3DH on the wire: two state machines, one per side, with no I/O
(docs/protocols.rst, OPAQUE).  The cryptography is
:mod:`twisted_keyx.opaque.login`; this module only frames it.

Lines (LF-terminated, like EKE's), base64 strict and of exact sizes::

    client                                         server
    base64(KE1) SP user-name        (1)  ----->    96 bytes -> 128 characters, then the name
                                    (2)  <-----    base64(KE2): KSF header + RFC KE2
    base64(KE3)                     (3)  ----->    64 bytes -> 88 characters
                                    (4)  <-----    "ok", or "authentication failed"

Server states::

    AWAIT_KE1 --1 / 2--> AWAIT_KE3 --3 / 4--> DONE

Client states::

    START --start(): 1--> AWAIT_KE2 --2 / 3--> AWAIT_OK --4--> DONE

Anything else gets the one generic reply ``authentication failed`` and the
server hangs up.  An unknown user gets KE2 from the server's fake record
(same sizes, same work) and fails at KE3 like a wrong password.  A client
whose envelope does not open (wrong password, unknown user) sends 64 random
bytes as KE3, so the server decides and both sides say the same.
"""

import enum
import os
from functools import partial
from dataclasses import dataclass

from twisted_keyx.core.b64 import MalformedLine, decode_item, encode_item
from twisted_keyx.chat.records import ChatKeys, derive_chat_keys
from twisted_keyx.login import names
from twisted_keyx.core.decisions import (
    GuessAnswering,
    NeedInvitation,
    Register,
    RegistrationRefused,
    GuessFailed,
    GuessUnanswered,
    HoldReplies,
    LoggedIn,
    NeedRecord,
    NextMachine,
    Registered,
    answer_by_hand,
)
from twisted_keyx.core.interfaces import StoreConflict, StoreUnavailable
from twisted_keyx.core.machine import (
    START,
    AuthenticationFailed,
    HandshakeFailed,
    StateMachine,
    UnexpectedReply,
)
from twisted_keyx.core.refusals import MAX_REFUSAL_LINE, refusal, store_refusal
from twisted_keyx.opaque.errors import KeyStretchingFailed, OpaqueError, ServerMacFailed
from twisted_keyx.opaque import invitation as invited
from twisted_keyx.opaque.ksf import DEFAULT_KSF_LIMITS
from twisted_keyx.opaque.login import ClientLogin, ServerLogin
from twisted_keyx.opaque.messages import KE1_SIZE, KE2, KE2_SIZE, KE3_SIZE
from twisted_keyx.opaque.profile import LEGACY, RFC_NAME
from twisted_keyx.core.transcript import Transcript
from twisted_keyx.trust.knownservers import server_key_fingerprint

FAILURE_REPLY = names.FAILURE_REPLY
#: The scheme of the records an OPAQUE server asks for.
SCHEME = "opaque"
OK = b"ok"
CHAT_LABEL = b"twisted-keyx opaque chat"
MAX_USER_NAME_BYTES = names.MAX_USER_NAME_BYTES


class KsfHeader:
    """The twisted-keyx-v1 profile's Argon2id header in front of KE2."""

    size = 12


def b64_length(size):
    return 4 * ((size + 2) // 3)


KE1_LINE = b64_length(KE1_SIZE)
KE3_LINE = b64_length(KE3_SIZE)
FIRST_LINE_LIMIT = KE1_LINE + 1 + MAX_USER_NAME_BYTES


def first_line(ke1, user):
    return encode_item(ke1) + b" " + user.encode("utf-8")


class ProfileMismatch(UnexpectedReply):
    """Client side: the server speaks another OPAQUE profile (KE2's size
    says so) or context (the password opened the envelope, the server's
    MAC does not verify): not a wrong password."""


class KeyStretchingError(HandshakeFailed):
    """Client side: the password's key stretching (Argon2id) failed on
    this machine (memory, threads): not the server's doing, not a wrong
    password, not the network."""


@dataclass(frozen=True, repr=False)
class OPAQUEResult:
    user: str
    session_key: bytes
    transcript_hash: bytes
    chat_keys: ChatKeys
    #: The server's AKE public key (from the envelope, on the client).
    server_public_key: bytes

    def __repr__(self):
        return f"OPAQUEResult(user={self.user!r}, <secrets>)"


def _result(user, session_key, transcript, server_public_key):
    digest = transcript.digest()
    return OPAQUEResult(user, session_key, digest,
                        derive_chat_keys(session_key, digest, CHAT_LABEL), server_public_key)


class LineEvent(enum.Enum):
    LINE = "a line"
    REGISTER = "a registration request"


#: Registration with an invitation code (docs/opaque.rst, Registration):
#: ``register SP base64(r1) SP user-name``, r2, r3, ``registered``.
REGISTER = b"register"
REGISTERED = b"registered"
R1_LINE = b64_length(invited.R1_SIZE)
R2_LINE = b64_length(invited.R2_SIZE)
R3_LINE = b64_length(invited.R3_SIZE)


def register_line(r1, user):
    return REGISTER + b" " + encode_item(r1) + b" " + user.encode("utf-8")


class ServerReply(enum.Enum):
    LINE = "a line"
    OK = "ok"
    FAILED = "authentication failed"
    REFUSED = "refused unchecked (twisted_keyx.core.refusals)"


class OPAQUEServerState(enum.Enum):
    AWAIT_KE1 = "awaiting KE1 and the user name (1)"
    AWAIT_KE3 = "awaiting KE3 (3)"
    AWAIT_R3 = "awaiting the registration record (r3)"
    DONE = "authenticated"
    REGISTERED = "registered"
    FAILED = "failed"


class OPAQUEServerHandshake(StateMachine):
    """The server side; ``setup`` is the
    :class:`~twisted_keyx.opaque.records.ServerSetup`.

    Fed through the adapter (:meth:`feed`), it asks for the user's record
    (:class:`NeedRecord`: an :class:`~twisted_keyx.opaque.scheme.OpaqueUser`
    or None) and whether and when KE2, the answer that tells a guesser
    whether the password was right, may go out (:class:`GuessAnswering`);
    it says when a guess failed (:class:`GuessFailed`: KE3 does not verify,
    or the client left after KE2).  :meth:`receive` answers the questions
    itself (``lookup_user(name)``; no throttle) for callers that drive it by
    hand (:mod:`twisted_keyx.core.decisions`)."""

    TRANSITIONS = {
        (OPAQUEServerState.AWAIT_KE1, LineEvent.LINE): ("_on_ke1", OPAQUEServerState.AWAIT_KE3),
        (OPAQUEServerState.AWAIT_KE3, LineEvent.LINE): ("_on_ke3", OPAQUEServerState.DONE),
        (OPAQUEServerState.AWAIT_KE1, LineEvent.REGISTER): ("_on_r1",
                                                            OPAQUEServerState.AWAIT_R3),
        (OPAQUEServerState.AWAIT_R3, LineEvent.LINE): ("_on_r3", OPAQUEServerState.DONE),
    }
    INITIAL = OPAQUEServerState.AWAIT_KE1
    DONE = OPAQUEServerState.DONE
    FAILED = OPAQUEServerState.FAILED
    PEER = "client"

    LIMITS = {OPAQUEServerState.AWAIT_KE1: FIRST_LINE_LIMIT, OPAQUEServerState.AWAIT_KE3: KE3_LINE,
              OPAQUEServerState.AWAIT_R3: R3_LINE}

    def __init__(self, setup, lookup_user=None, rng=os.urandom, clock=None):
        super().__init__()
        self._setup = setup
        self._lookup_user = lookup_user
        self._rng = rng
        self._transcript = Transcript()
        self._login = None
        self.user = None
        #: Whether the name is a user (for the log; never sent).
        self.known_user = None
        #: Whether KE2 was sent: only then can a failure be a guess (the
        #: client may have learnt from KE2 whether its password was right).
        self.answered = False
        self.result = None
        #: The clock of invitations (POSIX seconds).
        self._clock = clock
        self._registration = None
        #: Set when a registration stored its user (``result`` stays None).
        self.registered = False
        #: The user's record the login used (the one a change of password
        #: replaces: :mod:`twisted_keyx.opaque.passwd`).
        self._record = None

    def chat(self):
        """The machine that carries on after the login: the chat, in which
        the user may change the password (:class:`~twisted_keyx.opaque.passwd.OPAQUEServerChat`)."""
        from twisted_keyx.opaque.passwd import OPAQUEServerChat

        return OPAQUEServerChat(self.result, self._setup, self._record, rng=self._rng)

    def feed(self, line):
        """Take one client line; return the step's output (the line to send,
        decisions, or a question: :mod:`twisted_keyx.core.decisions`)."""
        if (self.state is OPAQUEServerState.AWAIT_KE1
                and line.startswith(REGISTER + b" ")):
            return self._dispatch(LineEvent.REGISTER, line)
        return self._dispatch(LineEvent.LINE, line)

    def receive(self, line):
        """Take one client line; return the line to send, the questions
        answered here (the record from ``lookup_user``; no throttle)."""
        return self.settle(self.feed(line), self._answer_here)

    def _answer_here(self, question):
        return answer_by_hand(question, self._lookup_user)

    @property
    def max_message_length(self):
        return self.LIMITS.get(self.state, 0)

    def _unexpected(self, event, payload):
        return AuthenticationFailed(f"a line while {self.state.value}")

    def _too_long(self, reason):
        return self._after_ke2(AuthenticationFailed(f"{reason} while {self.state.value}"))

    def _after_ke2(self, failure):
        """``failure`` with what it means once KE2 was sent: the client may
        have learnt from KE2 whether its password was right, so it is a
        failed guess."""
        if self.answered and self.state is OPAQUEServerState.AWAIT_KE3:
            failure.decisions = (GuessFailed(self.user, "KE3 does not verify"),)
        return failure

    def abandoned(self):
        if self.answered and self.state is OPAQUEServerState.AWAIT_KE3:
            return (GuessFailed(self.user, "left after KE2 without KE3", left=True),)
        if self.state is OPAQUEServerState.AWAIT_R3 and self._registration is not None:
            return (self._refused_registration(),)
        return None

    def _on_ke1(self, line):
        if len(line) < KE1_LINE + 2 or line[KE1_LINE:KE1_LINE + 1] != b" ":
            raise AuthenticationFailed("(1): not base64(KE1), a space and a user name")
        try:
            ke1 = decode_item(line[:KE1_LINE], KE1_SIZE)
            name = names.parse_user_name(line[KE1_LINE + 1:])
        except MalformedLine as e:
            raise AuthenticationFailed(f"(1): {e}") from None
        self.user = name
        return self._ask(NeedRecord(name, SCHEME), partial(self._on_record, line, ke1))

    def _on_record(self, line, ke1, user):
        if isinstance(user, Exception):  # the store did not answer
            raise store_refusal(user)
        self.known_user = user is not None
        self._record = user
        self._login = ServerLogin(self._setup, user.record if user is not None else None,
                                  self.user.encode("utf-8"), rng=self._rng)
        # KE2 tells a guesser whether the password was right: paced.
        return self._ask(GuessAnswering(self.user), partial(self._on_guess_paced, line, ke1))

    def _on_guess_paced(self, line, ke1, delay):
        if isinstance(delay, Exception):  # refused unchecked, or no store
            raise store_refusal(delay)
        try:
            ke2 = self._login.respond(ke1)
        except OpaqueError as e:
            failure = AuthenticationFailed(f"(1): {e}")
            failure.decisions = (GuessUnanswered(self.user),)
            raise failure from None
        reply = encode_item(ke2)
        self._transcript.add(line)
        self._transcript.add(reply)
        self.answered = True
        return (HoldReplies(delay), reply) if delay else reply

    # --- registration with an invitation code -----------------------------------

    def _on_r1(self, line):
        parts = line.split(b" ", 2)
        if len(parts) != 3 or len(parts[1]) != R1_LINE:
            raise AuthenticationFailed("(r1): not 'register', base64(r1) and a user name")
        try:
            r1 = decode_item(parts[1], invited.R1_SIZE)
            name = names.parse_user_name(parts[2])
        except MalformedLine as e:
            raise AuthenticationFailed(f"(r1): {e}") from None
        self.user = name
        return self._ask(NeedInvitation(name), partial(self._on_invitation, r1))

    def _on_invitation(self, r1, invitation):
        if isinstance(invitation, Exception):
            raise store_refusal(invitation)
        now = self._clock() if self._clock is not None else 0.0
        # Unknown, used, expired or revoked: the same r2 made from a random hash.
        self._registration = invited.InvitedRegistrationServer(
            self._setup, self.user, invitation, now, rng=self._rng)
        self.known_user = self._registration.invited
        try:
            r2 = self._registration.respond(r1)
        except OpaqueError as e:
            raise AuthenticationFailed(f"(r1): {e}") from None
        return encode_item(r2)

    def _refused_registration(self):
        # The client checks r2's MAC and leaves without r3 when it fails.
        why = self._registration.refusal or (
            "the client sent no record: its code is not the invitation's (or it gave up)")
        return RegistrationRefused(self.user, why)

    def _on_r3(self, line):
        if line == FAILURE_REPLY:
            # A client that says so instead of just closing (ours did).
            failure = AuthenticationFailed(f"registration of {self.user!r} refused")
            failure.decisions = (self._refused_registration(),)
            raise failure
        try:
            r3 = decode_item(line, invited.R3_SIZE)
        except MalformedLine as e:
            raise AuthenticationFailed(f"(r3): {e}") from None
        try:
            record = self._registration.finish(r3)
        except OpaqueError:
            raise AuthenticationFailed(
                f"registration of {self.user!r} refused: the record does not open under "
                "the invitation code") from None
        from twisted_keyx.opaque.scheme import OpaqueUser

        user = OpaqueUser(self.user, record,
                          server_key_fingerprint(self._setup.server_public_key))
        # One question, one store call: the invitation used and the user
        # added together or not at all (IInvitationStore.register).
        return self._ask(Register(self.user, self._registration.code_hash, user),
                         self._on_registered)

    def _on_registered(self, registered):
        if isinstance(registered, StoreConflict):
            raise AuthenticationFailed(
                f"registration of {self.user!r} not stored: {registered}")
        if isinstance(registered, Exception):
            if isinstance(registered, StoreUnavailable):
                raise store_refusal(registered)
            lines = str(registered).strip().splitlines()
            raise AuthenticationFailed(
                f"registration of {self.user!r} not stored: "
                f"{lines[0] if lines else type(registered).__name__}")
        if not registered:
            raise AuthenticationFailed(
                f"registration of {self.user!r} refused: the invitation was used meanwhile")
        self.registered = True
        return REGISTERED, Registered(self.user)

    def _on_ke3(self, line):
        try:
            ke3 = decode_item(line, KE3_SIZE)
        except MalformedLine as e:
            raise self._after_ke2(AuthenticationFailed(f"(3): {e}")) from None
        try:
            session_key = self._login.finish(ke3)
        except OpaqueError:
            why = "wrong password for user" if self.known_user else "unknown user"
            raise self._after_ke2(AuthenticationFailed(
                f"{why} {self.user!r} (KE3 does not verify)")) from None
        self._transcript.add(line)
        self._transcript.add(OK)
        self.result = _result(self.user, session_key, self._transcript,
                              self._setup.server_public_key)
        return OK, LoggedIn(self.user, self.result), NextMachine(self.chat())


class OPAQUEClientState(enum.Enum):
    START = "not started"
    AWAIT_KE2 = "awaiting KE2 (2)"
    AWAIT_OK = "awaiting ok (4)"
    DONE = "authenticated"
    FAILED = "failed"


def classify_server_line(line):
    if line == OK:
        return ServerReply.OK
    if line == FAILURE_REPLY:
        return ServerReply.FAILED
    if refusal(line) is not None:
        return ServerReply.REFUSED
    return ServerReply.LINE


class OPAQUEClientHandshake(StateMachine):
    """The client side.  ``ksf_limits`` bounds the Argon2id cost the server
    may ask for (:class:`~twisted_keyx.opaque.ksf.KsfLimits`)."""

    TRANSITIONS = {
        (OPAQUEClientState.START, START): ("_on_start", OPAQUEClientState.AWAIT_KE2),
        (OPAQUEClientState.AWAIT_KE2, ServerReply.LINE): ("_on_ke2", OPAQUEClientState.AWAIT_OK),
        (OPAQUEClientState.AWAIT_OK, ServerReply.OK): ("_on_ok", OPAQUEClientState.DONE),
    }
    INITIAL = OPAQUEClientState.START
    DONE = OPAQUEClientState.DONE
    FAILED = OPAQUEClientState.FAILED
    PEER = "server"
    #: KE2 runs Argon2id over the OPRF output (:meth:`_on_ke2`).
    SLOW_STATES = frozenset({OPAQUEClientState.AWAIT_KE2})

    def __init__(self, user, password, ksf_limits=DEFAULT_KSF_LIMITS, rng=os.urandom,
                 profile=LEGACY):
        super().__init__()
        self.user = names.check_user_name(user)
        self.profile = profile
        self._login = ClientLogin(password, ksf_limits=ksf_limits, rng=rng, profile=profile)
        self._ksf_limits = profile.client_policy(ksf_limits)
        self._passwd_limits = ksf_limits
        self._rng = rng
        self._transcript = Transcript()
        self._doomed = None
        self._login_result = None
        self.ke2_line = b64_length(self._login.ke2_size)
        self.result = None

    def start(self):
        return self._start()

    def feed(self, line):
        """Take one server line; return the step's output for the session
        adapter: the line to send, or after ``ok`` the chat that follows
        (:class:`~twisted_keyx.core.decisions.NextMachine`)."""
        return self._dispatch(classify_server_line(line), line)

    def receive(self, line):
        """Take one server line; return the line to send, or None after ``ok``."""
        return self.settle(self.feed(line))

    @property
    def max_message_length(self):
        return {
            # The other profile's KE2 too, to say which the server speaks.
            OPAQUEClientState.AWAIT_KE2: max(self.ke2_line, len(FAILURE_REPLY),
                                             b64_length(KE2_SIZE + KsfHeader.size)),
            OPAQUEClientState.AWAIT_OK: len(FAILURE_REPLY),
        }.get(self.state, 0)

    def _too_long(self, reason):
        return UnexpectedReply(reason)

    def _unexpected(self, event, payload):
        if event is ServerReply.REFUSED:
            return refusal(payload)
        if event is ServerReply.FAILED and self.state is OPAQUEClientState.AWAIT_KE2:
            # An OPAQUE server answers every well-formed KE1 with KE2 (an
            # unknown user's from the fake record); EKE's answers it so.
            return AuthenticationFailed(
                "the server refused the first OPAQUE message, which an OPAQUE server "
                "answers with KE2 whatever the user: is this an EKE port?")
        if event is ServerReply.FAILED:
            return AuthenticationFailed(self._doomed or
                                        f"the server refused while {self.state.value}")
        return UnexpectedReply(f"bad response from the server while {self.state.value}")

    def _on_start(self, payload):
        line = first_line(self._login.start(), self.user)
        self._transcript.add(line)
        return line

    def _on_ke2(self, line):
        other = (b64_length(KE2_SIZE + KsfHeader.size) if self.profile.rfc
                 else b64_length(KE2_SIZE))
        if len(line) == other != self.ke2_line:
            speaks = "twisted-keyx-v1" if self.profile.rfc else RFC_NAME
            raise ProfileMismatch(
                f"the server speaks the {speaks} OPAQUE profile, not {self.profile.name}: "
                "give --profile as 'keyx-admin opaque-profile' prints it on the server")
        try:
            ke2 = decode_item(line, self._login.ke2_size)
        except MalformedLine as e:
            raise UnexpectedReply(f"(2): {e}") from None
        try:
            self._ksf_limits.accept(ke2[: self._ksf_limits.header_size])
        except OpaqueError as e:
            raise UnexpectedReply(f"the server asks for an unacceptable KSF: {e}") from None
        try:
            # Its elements first: a KE2 that is not one is the server's
            # mistake, not a wrong password (which only the envelope shows).
            KE2.from_bytes(ke2[self._ksf_limits.header_size:])
        except OpaqueError as e:
            raise UnexpectedReply(f"(2): {e}") from None
        try:
            self._login_result = self._login.finish(ke2)
        except KeyStretchingFailed as e:
            raise KeyStretchingError(str(e)) from None
        except ServerMacFailed:
            raise ProfileMismatch(
                "the password opened the envelope but the server's MAC does not verify: "
                f"the server uses another OPAQUE context than this client's {self.profile}; "
                "give --profile as 'keyx-admin opaque-profile' prints it on the server"
            ) from None
        except OpaqueError:
            # Wrong password or unknown user: let the server say so at KE3.
            self._doomed = "wrong password or unknown user"
            reply = encode_item(self._rng(KE3_SIZE))
        else:
            reply = encode_item(self._login_result.ke3)
        self._transcript.add(line)
        self._transcript.add(reply)
        return reply

    def chat(self):
        """The machine that carries on after the login: the chat, in which
        :meth:`~twisted_keyx.opaque.passwd.OPAQUEClientChat.passwd` changes
        the password."""
        from twisted_keyx.opaque.passwd import OPAQUEClientChat

        return OPAQUEClientChat(self.result, profile=self.profile,
                                ksf_limits=self._passwd_limits, rng=self._rng)

    def _on_ok(self, line):
        if self._doomed is not None:
            raise UnexpectedReply("the server accepted a KE3 it cannot have verified")
        self._transcript.add(line)
        result = self._login_result
        self.result = _result(self.user, result.session_key, self._transcript,
                              result.server_public_key)
        return (NextMachine(self.chat()),)


class RegistrationClientState(enum.Enum):
    START = "not started"
    AWAIT_R2 = "awaiting r2"
    AWAIT_REGISTERED = "awaiting registered"
    DONE = "registered"
    FAILED = "failed"


class RegistrationFailed(AuthenticationFailed):
    """Client side: the server does not know this invitation code (mistyped,
    used, expired, revoked, another user's), or refused the record.  The
    client closes without a word (docs/opaque.rst, The registration wire)."""

    reply = None


class OPAQUERegistrationClient(StateMachine):
    """The registering client (docs/opaque.rst, Registration): sends
    ``register``, base64(r1) and the user name; checks r2's MAC (the
    server knows the code) before it sends r3, the record encrypted under
    the code; done at ``registered``.  ``result`` is then the user name."""

    TRANSITIONS = {
        (RegistrationClientState.START, START): ("_on_start", RegistrationClientState.AWAIT_R2),
        (RegistrationClientState.AWAIT_R2, ServerReply.LINE): (
            "_on_r2", RegistrationClientState.AWAIT_REGISTERED),
        (RegistrationClientState.AWAIT_REGISTERED, ServerReply.OK): (
            "_on_registered", RegistrationClientState.DONE),
    }
    INITIAL = RegistrationClientState.START
    DONE = RegistrationClientState.DONE
    FAILED = RegistrationClientState.FAILED
    PEER = "server"
    #: r2 runs Argon2id over the OPRF output to make the record.
    SLOW_STATES = frozenset({RegistrationClientState.AWAIT_R2})

    def __init__(self, user, password, code, ksf_limits=DEFAULT_KSF_LIMITS, rng=os.urandom,
                 profile=LEGACY):
        super().__init__()
        self.user = names.check_user_name(user)
        try:
            self._client = invited.InvitedRegistrationClient(
                user, code, password, profile=profile, ksf_limits=ksf_limits, rng=rng)
        except OpaqueError as e:
            raise ValueError(str(e)) from None
        self.result = None

    def start(self):
        return self._start()

    def receive(self, line):
        event = classify_server_line(line)
        if event is ServerReply.LINE and line == REGISTERED:
            event = ServerReply.OK
        elif event is ServerReply.OK:
            event = ServerReply.LINE  # "ok" is not a reply of registration
        return self._dispatch(event, line)

    @property
    def max_message_length(self):
        return {
            RegistrationClientState.AWAIT_R2: max(R2_LINE, len(FAILURE_REPLY)),
            # A store down when the record came is refused as at login
            # (twisted_keyx.core.refusals), a line longer than the others.
            RegistrationClientState.AWAIT_REGISTERED: max(len(REGISTERED), len(FAILURE_REPLY),
                                                          MAX_REFUSAL_LINE),
        }.get(self.state, 0)

    def _too_long(self, reason):
        return UnexpectedReply(reason)

    def _unexpected(self, event, payload):
        if event is ServerReply.REFUSED:
            return refusal(payload)
        if event is ServerReply.FAILED:
            return RegistrationFailed(
                f"the server refused the registration while {self.state.value}")
        return UnexpectedReply(f"bad response from the server while {self.state.value}")

    def _on_start(self, payload):
        return register_line(self._client.start(), self.user)

    def _on_r2(self, line):
        try:
            r2 = decode_item(line, invited.R2_SIZE)
        except MalformedLine as e:
            raise UnexpectedReply(f"(r2): {e}") from None
        try:
            r3 = self._client.finish(r2)
        except invited.InvitationRefused as e:
            raise RegistrationFailed(str(e)) from None
        except KeyStretchingFailed as e:
            raise KeyStretchingError(str(e)) from None
        except OpaqueError as e:
            raise UnexpectedReply(f"(r2): {e}") from None
        return encode_item(r3)

    def _on_registered(self, line):
        self.result = self.user
        return None
