"""The EKE handshake as two state machines, one per side, with no I/O.

Each machine is fed one line at a time (the delimiter already removed) and
answers with the line to send back, or raises :class:`HandshakeFailed`.  The
legal moves are the ``TRANSITIONS`` table of each class (dispatch in
:mod:`twisted_keyx.core.machine`); the line formats are in
:mod:`twisted_keyx.eke.messages`, the primitives in :mod:`twisted_keyx.eke.crypto`.

Server states, with the steps of docs/protocols.rst, EKE (received / sent)::

    AWAIT_USER_NAME --1 / 2--> AWAIT_SEALED_PUBLIC_KEY --3 / 4--> AWAIT_CLIENT_NONCE
    AWAIT_CLIENT_NONCE --5 / 6--> AWAIT_SERVER_NONCE --7 / 8--> DONE

Client states::

    START --start(): 1--> AWAIT_ANSWER --2 / 3--> AWAIT_SEALED_SESSION_KEY
    AWAIT_SEALED_SESSION_KEY --4 / 5--> AWAIT_NONCES --6 / 7--> AWAIT_SUCCESS --8--> DONE

The chat (:mod:`twisted_keyx.chat`) needs :attr:`result`, which exists
only in ``DONE``: no chat without step 8.

Where a wrong password shows.  With an authenticated cipher the server
already knows at step 3 that the client's password key is not the user's
(the box does not decrypt).  It does not say so there: it answers step 3 with
a step 4 of the exact size of a real one, made with the same work (RSA to a
per-process key, sealed under a key nobody has), and fails at step 5 with the
generic reply.  A server that hides unknown users (``decoys``) takes the same
path for them, so a prober sees the same lines, of the same sizes, for a
wrong password and for a name that does not exist.  The client, which
notices at step 4, also carries on to step 5 with random bytes, so the
decision is the server's, at the nonce step, and both sides say the same.
"""

import enum
import hmac
from dataclasses import dataclass

from twisted_keyx.chat.records import ChatKeys
from twisted_keyx.eke import crypto, messages
from twisted_keyx.eke.messages import EKEClientMessage, MalformedLine, EKEServerMessage
from functools import partial

from twisted_keyx.chat.machine import ClientChat, ServerChat
from twisted_keyx.core.decisions import (
    GuessAnswering,
    GuessFailed,
    GuessUnanswered,
    HoldReplies,
    LoggedIn,
    NeedRecord,
    NextMachine,
    answer_by_hand,
)
from twisted_keyx.core.machine import (
    START,
    AuthenticationFailed,
    HandshakeFailed,
    ProtocolFailed,
    StateMachine,
    UnexpectedReply,
)
from twisted_keyx.core.refusals import TooManyAttempts, refusal, store_refusal
from twisted_keyx.core.transcript import Transcript


class UnknownUser(AuthenticationFailed):
    """Step 1 names no user and the server does not hide it: it says ``no``."""

    reply = messages.NO


class WrongPassword(AuthenticationFailed):
    """Server side: the refusal at step 5 of a session doomed at step 3 (the
    password key did not open the box, or the user is a decoy)."""


#: Server side: refused at step 3 without looking at the password, as too
#: many guesses for this user or from this source are waiting
#: (:mod:`twisted_keyx.service.throttle`); its reply is not "authentication
#: failed" (:mod:`twisted_keyx.core.refusals`).
GuessRefused = TooManyAttempts


class MalformedMessage(AuthenticationFailed):
    """Server side: a line that is not what its step allows."""


class BadKdfParameters(HandshakeFailed):
    """Client side: step 2 asks for a KDF cost outside the client's
    :class:`~twisted_keyx.eke.crypto.KdfLimits`."""


class PinnedSaltChanged(HandshakeFailed):
    """Client side: step 2 shows another salt or scrypt cost than the one
    pinned for this user at this server (:mod:`twisted_keyx.eke.pins`):
    refused before anything is derived from the password.  ``salt`` and
    ``kdf`` are what the server showed."""

    def __init__(self, reason, salt=None, kdf=None):
        super().__init__(reason)
        self.salt = salt
        self.kdf = kdf


@dataclass(frozen=True, repr=False)
class EKEResult:
    user: str
    #: Ks, chosen by the server at step 4.
    session_key: bytes
    #: SHA-256 over the eight handshake lines (see :class:`~twisted_keyx.core.transcript.Transcript`).
    transcript_hash: bytes
    chat_keys: ChatKeys

    def __repr__(self):
        return f"EKEResult(user={self.user!r}, <secrets>)"


def _result(user, session_key, transcript):
    transcript_hash = transcript.digest()
    return EKEResult(
        user=user,
        session_key=session_key,
        transcript_hash=transcript_hash,
        chat_keys=crypto.derive_chat_keys(session_key, transcript_hash),
    )


class _EKEHandshake(StateMachine):
    """What both sides do with a line: parse it, open the box it carries,
    seal the answer, and add both to the transcript."""

    #: The failure for a line its step does not allow, named for the side
    #: that sent it.
    Malformed = HandshakeFailed

    def __init__(self, initial_state, random_bytes):
        super().__init__(initial_state)
        self._random = random_bytes
        self._transcript = Transcript()
        self._session_key = None
        self.result = None

    def _parse(self, step, parse, *args):
        try:
            return parse(*args)
        except MalformedLine as e:
            raise self.Malformed(f"step {step}: {e}") from None

    def _box(self, line, step):
        return self._parse(step, messages.decode_box, line, step)

    def _open(self, step, box):
        try:
            return crypto.open_box(self._session_key, step, self.user, box)
        except crypto.CryptoError:
            raise AuthenticationFailed(
                f"step {step} does not decrypt under Ks (altered in transit?)"
            ) from None

    def _seal(self, key, step, plaintext):
        """The line carrying ``plaintext`` sealed for ``step`` under ``key``."""
        return messages.encode_item(crypto.seal(
            key, step, self.user, plaintext, self._random(messages.GCM_NONCE_SIZE),
        ))

    def _answer(self, line, reply):
        """Add the line received and the reply to the transcript; return the reply."""
        self._transcript.add(line)
        self._transcript.add(reply)
        return reply


#: The scheme of the records an EKE server asks for.
SCHEME = "eke"


class EKEServerState(enum.Enum):
    AWAIT_USER_NAME = "awaiting the user name (step 1)"
    AWAIT_SEALED_PUBLIC_KEY = "awaiting E_pw(pk) (step 3)"
    AWAIT_CLIENT_NONCE = "awaiting E_Ks(NC) (step 5)"
    AWAIT_SERVER_NONCE = "awaiting E_Ks(NS) (step 7)"
    DONE = "authenticated"
    FAILED = "failed"


_b64 = messages.base64_length

#: The longest legal client line in each server state.
SERVER_LINE_LIMITS = {
    EKEServerState.AWAIT_USER_NAME: messages.MAX_USER_NAME_BYTES,
    EKEServerState.AWAIT_SEALED_PUBLIC_KEY: _b64(messages.BOX_SIZES[3]),
    EKEServerState.AWAIT_CLIENT_NONCE: _b64(messages.BOX_SIZES[5]),
    EKEServerState.AWAIT_SERVER_NONCE: _b64(messages.BOX_SIZES[7]),
}


class EKEServerHandshake(_EKEHandshake):
    """The server side: answers steps 1, 3, 5 and 7 with 2, 4, 6 and 8.

    Fed through the adapter (:meth:`feed`), it asks for what it does not
    hold (:mod:`twisted_keyx.core.decisions`): the user's record at step 1
    (:class:`NeedRecord`), and, before step 4, the answer that tells a
    guesser whether the password was right, whether and when it may go out
    (:class:`GuessAnswering`); it says when a guess failed
    (:class:`GuessFailed`).  :meth:`receive` answers those questions itself
    (``lookup_user(name)``: the record or None; no throttle) for callers
    that drive it by hand.  ``decoys``, if given, makes a record for an
    unknown name so that it fails like a wrong password.
    """

    TRANSITIONS = {
        (EKEServerState.AWAIT_USER_NAME, EKEClientMessage.LINE):
            ("_on_user_name", EKEServerState.AWAIT_SEALED_PUBLIC_KEY),
        (EKEServerState.AWAIT_SEALED_PUBLIC_KEY, EKEClientMessage.LINE):
            ("_on_sealed_public_key", EKEServerState.AWAIT_CLIENT_NONCE),
        (EKEServerState.AWAIT_CLIENT_NONCE, EKEClientMessage.LINE):
            ("_on_client_nonce", EKEServerState.AWAIT_SERVER_NONCE),
        (EKEServerState.AWAIT_SERVER_NONCE, EKEClientMessage.LINE):
            ("_on_server_nonce", EKEServerState.DONE),
    }
    INITIAL = EKEServerState.AWAIT_USER_NAME
    FAILED = EKEServerState.FAILED
    DONE = EKEServerState.DONE
    PEER = "client"
    Malformed = MalformedMessage

    def __init__(self, lookup_user=None, decoys=None, random_bytes=crypto.random_bytes):
        super().__init__(EKEServerState.AWAIT_USER_NAME, random_bytes)
        self._lookup_user = lookup_user
        self._decoys = decoys
        self.user = None
        self._record = None
        #: Why this session will fail at step 5, once it is known to.
        self._doomed = None
        self._server_nonce = None

    def feed(self, line):
        """Take one client line; return the step's output (the line to send,
        decisions, or a question: :mod:`twisted_keyx.core.decisions`)."""
        return self._dispatch(EKEClientMessage.LINE, line)

    def receive(self, line):
        """Take one client line; return the line to send, the questions
        answered here (the record from ``lookup_user``; no throttle)."""
        return self.settle(self.feed(line), self._answer_here)

    def _answer_here(self, question):
        return answer_by_hand(question, self._lookup_user)

    @property
    def max_message_length(self):
        return SERVER_LINE_LIMITS.get(self.state, 0)

    def _unexpected(self, event, payload):
        return MalformedMessage(f"a line while {self.state.value}")

    def _too_long(self, reason):
        return MalformedMessage(f"{reason} while {self.state.value}")

    def _on_user_name(self, line):
        name = self._parse(1, messages.parse_user_name, line)
        self.user = name
        return self._ask(NeedRecord(name, SCHEME), partial(self._on_record, line))

    def _on_record(self, line, record):
        name = self.user
        if isinstance(record, Exception):  # the store did not answer
            raise store_refusal(record)
        if self._decoys is not None:
            # The same work for a user and a decoy (a timing would tell them apart).
            decoy = self._decoys.record_for(name)
        if record is None:
            if self._decoys is None:
                raise UnknownUser(f"unknown user {name!r}")
            record = decoy
            self._doomed = f"unknown user {name!r} (hidden)"
        self._record = record
        return self._answer(line, messages.format_yes(record.salt, record.kdf))

    def _on_sealed_public_key(self, line):
        box = self._box(line, 3)
        # Step 4 tells a guesser whether the password was right: paced.
        return self._ask(GuessAnswering(self.user), partial(self._on_guess_paced, line, box))

    def _on_guess_paced(self, line, box, delay):
        if isinstance(delay, Exception):  # refused unchecked, or no store
            raise store_refusal(delay)
        try:
            reply = self._answer_guess(line, box)
        except ProtocolFailed as failure:
            failure.decisions = (GuessUnanswered(self.user),)
            raise
        output = (reply,) if self._doomed is None else (reply, GuessFailed(self.user, self._doomed))
        return (HoldReplies(delay),) + output if delay else output

    def _answer_guess(self, line, box):
        # A decoy's key opens nothing, but the open runs all the same.
        try:
            der = crypto.open_box(self._record.key, 3, self.user, box)
        except crypto.CryptoError:
            der = None
            if self._doomed is None:
                self._doomed = (
                    f"wrong password for user {self.user!r} "
                    "(step 3 does not decrypt under the password key)"
                )
        if self._doomed is not None:
            # The same RSA and AES work as a real step 4, to a per-process
            # key; to anyone without the password key it looks like one.
            der = crypto.dummy_rsa_public_key_der()
        try:
            public_key = crypto.load_rsa_public_key(der)
        except crypto.CryptoError as e:
            raise AuthenticationFailed(f"step 3: {e}") from None
        session_key = self._random(messages.SESSION_KEY_SIZE)
        # Doomed: sealed under a key nobody has, so that even the right
        # password key (a step 3 altered in transit) opens nothing.
        key = self._record.key if self._doomed is None else crypto.DOOMED_BOX_KEY
        reply = self._seal(key, 4, crypto.rsa_encrypt(public_key, session_key))
        if self._doomed is None:
            self._session_key = session_key
        return self._answer(line, reply)

    def _on_client_nonce(self, line):
        box = self._box(line, 5)
        if self._doomed is not None:
            raise WrongPassword(f"{self._doomed}; refused at the nonce step")
        client_nonce = self._open(5, box)
        self._server_nonce = self._random(messages.CHALLENGE_SIZE)
        return self._answer(
            line, self._seal(self._session_key, 6, client_nonce + self._server_nonce)
        )

    def _on_server_nonce(self, line):
        box = self._box(line, 7)
        server_nonce = self._open(7, box)
        if not hmac.compare_digest(server_nonce, self._server_nonce):
            raise AuthenticationFailed("step 7: the client did not return NS")
        reply = self._answer(line, self._seal(self._session_key, 8, messages.SUCCESS))
        self.result = _result(self.user, self._session_key, self._transcript)
        return reply, LoggedIn(self.user, self.result), NextMachine(ServerChat(self.result))


class EKEClientState(enum.Enum):
    START = "not started"
    AWAIT_ANSWER = "awaiting yes or no (step 2)"
    AWAIT_SEALED_SESSION_KEY = "awaiting E_pw(E_pk(Ks)) (step 4)"
    AWAIT_NONCES = "awaiting E_Ks(NC || NS) (step 6)"
    AWAIT_SUCCESS = "awaiting the success message (step 8)"
    DONE = "authenticated"
    FAILED = "failed"


#: The longest legal server line in each client state (the failure reply
#: must fit in every one of them).
CLIENT_LINE_LIMITS = {
    state: max(limit, len(messages.FAILURE_REPLY))
    for state, limit in {
        EKEClientState.AWAIT_ANSWER: messages.MAX_ANSWER_LINE,
        EKEClientState.AWAIT_SEALED_SESSION_KEY: _b64(messages.BOX_SIZES[4]),
        EKEClientState.AWAIT_NONCES: _b64(messages.BOX_SIZES[6]),
        EKEClientState.AWAIT_SUCCESS: _b64(messages.BOX_SIZES[8]),
    }.items()
}


class EKEClientHandshake(_EKEHandshake):
    """The client side: sends step 1 from :meth:`start`, then 3, 5 and 7.

    ``password`` is str or bytes (see :func:`~twisted_keyx.eke.crypto.normalize_password`);
    ``kdf_limits`` bounds the scrypt cost the server may ask for.
    """

    TRANSITIONS = {
        (EKEClientState.START, START):
            ("_on_start", EKEClientState.AWAIT_ANSWER),
        (EKEClientState.AWAIT_ANSWER, EKEServerMessage.YES):
            ("_on_yes", EKEClientState.AWAIT_SEALED_SESSION_KEY),
        (EKEClientState.AWAIT_ANSWER, EKEServerMessage.NO):
            ("_on_no", EKEClientState.FAILED),
        (EKEClientState.AWAIT_SEALED_SESSION_KEY, EKEServerMessage.BOX):
            ("_on_sealed_session_key", EKEClientState.AWAIT_NONCES),
        (EKEClientState.AWAIT_NONCES, EKEServerMessage.BOX):
            ("_on_nonces", EKEClientState.AWAIT_SUCCESS),
        (EKEClientState.AWAIT_SUCCESS, EKEServerMessage.BOX):
            ("_on_success", EKEClientState.DONE),
    }
    INITIAL = EKEClientState.START
    FAILED = EKEClientState.FAILED
    DONE = EKEClientState.DONE
    PEER = "server"
    Malformed = UnexpectedReply
    #: Step 2's answer runs scrypt over the password (:meth:`_on_yes`).
    SLOW_STATES = frozenset({EKEClientState.AWAIT_ANSWER})

    def __init__(self, user, password, kdf_limits=crypto.DEFAULT_KDF_LIMITS,
                 random_bytes=crypto.random_bytes, rsa_key_factory=crypto.generate_rsa_key,
                 pinned=None):
        super().__init__(EKEClientState.START, random_bytes)
        #: (salt, ScryptParameters) this client saw for the user at this
        #: server before, or None: step 2 must show the same.
        self._pinned = pinned
        #: The salt of step 2.
        self.salt = None
        self.user = messages.check_user_name(user)
        self._password = crypto.normalize_password(password)
        self._kdf_limits = kdf_limits
        self._rsa_key_factory = rsa_key_factory
        #: The scrypt parameters the server asked for (after step 2).
        self.kdf = None
        self._password_key = None
        self._rsa_key = None
        self._doomed = None
        self._client_nonce = None

    def start(self):
        """Return step 1."""
        return self._start()

    def _on_start(self, payload):
        line = self.user.encode("utf-8")
        self._transcript.add(line)
        return line

    def feed(self, line):
        """Take one server line; return the step's output for the session
        adapter: the line to send, or after step 8 the chat that follows
        (:class:`~twisted_keyx.core.decisions.NextMachine`)."""
        return self._dispatch(messages.classify_server_message(line), line)

    def receive(self, line):
        """Take one server line; return the line to send, or None after step 8."""
        return self.settle(self.feed(line))

    @property
    def max_message_length(self):
        return CLIENT_LINE_LIMITS.get(self.state, 0)

    def _too_long(self, reason):
        return UnexpectedReply(reason)

    def _unexpected(self, event, payload):
        refused = refusal(payload) if isinstance(payload, bytes) else None
        if refused is not None:
            return refused
        if event is EKEServerMessage.FAILED:
            if self._doomed is not None:
                return AuthenticationFailed(self._doomed)
            return AuthenticationFailed(
                f"the server refused while the client was {self.state.value}")
        return UnexpectedReply(f"bad response from the server while {self.state.value}")

    def _on_yes(self, line):
        salt, n, r, p = self._parse(2, messages.parse_yes, line)
        try:
            self.kdf = self._kdf_limits.check(crypto.ScryptParameters(n, r, p))
        except ValueError as e:
            raise BadKdfParameters(f"the server asks for an unacceptable KDF: {e}") from None
        self.salt = salt
        if self._pinned is not None and (salt, self.kdf) != tuple(self._pinned):
            raise PinnedSaltChanged(
                f"the server shows another salt or scrypt cost ({self.kdf}) than at the "
                f"first login ({self._pinned[1]})", salt, self.kdf)
        self._password_key = crypto.derive_password_key(self._password, salt, self.kdf)
        self._password = None
        self._rsa_key = self._rsa_key_factory()
        return self._answer(
            line, self._seal(self._password_key, 3, crypto.public_key_der(self._rsa_key))
        )

    def _on_no(self, line):
        raise UnknownUser(f"the server does not know user {self.user!r}")

    def _on_sealed_session_key(self, line):
        box = self._box(line, 4)
        try:
            sealed_key = crypto.open_box(self._password_key, 4, self.user, box)
        except crypto.CryptoError:
            self._doomed = "wrong password or unknown user"
        else:
            try:
                self._session_key = crypto.rsa_decrypt(self._rsa_key, sealed_key)
            except crypto.CryptoError as e:
                raise AuthenticationFailed(f"step 4: {e}") from None
            if len(self._session_key) != messages.SESSION_KEY_SIZE:
                raise AuthenticationFailed(f"step 4: Ks is not {messages.SESSION_KEY_SIZE} bytes")
        self._rsa_key = None
        self._password_key = None
        if self._doomed is not None:
            # Let the server, which decides, say so at step 5/6.
            reply = messages.encode_item(self._random(messages.BOX_SIZES[5]))
        else:
            self._client_nonce = self._random(messages.CHALLENGE_SIZE)
            reply = self._seal(self._session_key, 5, self._client_nonce)
        return self._answer(line, reply)

    def _on_nonces(self, line):
        box = self._box(line, 6)
        if self._doomed is not None:
            raise AuthenticationFailed(self._doomed)
        nonces = self._open(6, box)
        client_nonce = nonces[: messages.CHALLENGE_SIZE]
        server_nonce = nonces[messages.CHALLENGE_SIZE :]
        if not hmac.compare_digest(client_nonce, self._client_nonce):
            raise AuthenticationFailed("step 6: the server did not return NC")
        return self._answer(line, self._seal(self._session_key, 7, server_nonce))

    def _on_success(self, line):
        box = self._box(line, 8)
        if not hmac.compare_digest(self._open(8, box), messages.SUCCESS):
            raise AuthenticationFailed("step 8: not the success message")
        self._transcript.add(line)
        self.result = _result(self.user, self._session_key, self._transcript)
        return (NextMachine(ClientChat(self.result)),)
