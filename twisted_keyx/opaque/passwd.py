"""The session after an OPAQUE login: the chat (:mod:`twisted_keyx.chat`),
and a change of password inside it (docs/opaque.rst, Changing the password).

After ``ok`` the client may send, instead of a chat record, the first line
of an RFC 9807 registration for its own user name; the messages are the
invitation's (:mod:`twisted_keyx.opaque.invitation`: r1, r2, r3, here p1,
p2, p3), under :func:`~twisted_keyx.opaque.invitation.session_secret` of
the login in place of a code's hash::

    client                                         server
    passwd SP base64(p1)            (5)  ----->    64 bytes -> 88 characters
                                    (6)  <-----    base64(p2): 172 bytes -> 232
    base64(p3)                      (7)  ----->    208 bytes -> 280
                                    (8)  <-----    "changed", or "password not changed"

Server states (the chat's, and one more)::

    OPEN --passwd p1 / p2--> AWAIT_P3 --p3 / changed--> OPEN

Client states::

    OPEN --passwd() / p1--> AWAIT_P2 --p2 / p3--> AWAIT_CHANGED --changed--> OPEN

The user is the session's: the line names none, so only the logged-in
user's record is replaced, and only if it is still the one the login used
(:class:`~twisted_keyx.core.decisions.ReplaceUser`, a compare-and-swap).
Anything else gets ``password not changed`` (or the store's refusal) and
the server closes; the old record then stays, and the old password works.
After ``changed`` the chat goes on (``quit`` ends it as usual).
"""

import enum
import os

from twisted_keyx.chat import records
from twisted_keyx.chat.machine import ChatFailed, ChatState, ClientChat, ServerChat
from twisted_keyx.core.b64 import MalformedLine, decode_item, encode_item
from twisted_keyx.core.decisions import PasswordChanged, ReplaceUser
from twisted_keyx.core.interfaces import StoreUnavailable
from twisted_keyx.core.refusals import MAX_REFUSAL_LINE, refusal, store_refusal
from twisted_keyx.opaque import invitation as invited
from twisted_keyx.opaque.errors import KeyStretchingFailed, OpaqueError
from twisted_keyx.opaque.ksf import DEFAULT_KSF_LIMITS
from twisted_keyx.opaque.profile import LEGACY
from twisted_keyx.trust.knownservers import server_key_fingerprint

PASSWD = b"passwd"
CHANGED = b"changed"
NOT_CHANGED = b"password not changed"


def _b64_length(size):
    return 4 * ((size + 2) // 3)


P1_LINE = len(PASSWD) + 1 + _b64_length(invited.R1_SIZE)
P2_LINE = _b64_length(invited.R2_SIZE)
P3_LINE = _b64_length(invited.R3_SIZE)


class PasswdState(enum.Enum):
    AWAIT_P2 = "awaiting p2 (changing the password)"
    AWAIT_P3 = "awaiting the new record (p3)"
    AWAIT_CHANGED = "awaiting changed (8)"


class PasswdEvent(enum.Enum):
    P1 = "passwd and p1"
    LINE = "a line (p2, p3)"
    CHANGED = "changed"
    NOT_CHANGED = "password not changed"
    REFUSED = "refused (twisted_keyx.core.refusals)"
    LOCAL = "passwd (local)"


class PasswordNotChanged(ChatFailed):
    """The change of password failed: the server sends ``password not
    changed`` and closes (the old record stays); on the client, the server
    said so, or did not prove it holds the session's key."""

    reply = NOT_CHANGED


class OPAQUEServerChat(ServerChat):
    """The server's session after an OPAQUE login: :class:`ServerChat`, and a
    change of password for the logged-in user.  ``result`` is the login's
    :class:`~twisted_keyx.opaque.handshake.OPAQUEResult`, ``setup`` the
    server's, ``record`` the user's record the login used (the one a change
    replaces)."""

    TRANSITIONS = {
        **ServerChat.TRANSITIONS,
        (ChatState.OPEN, PasswdEvent.P1): ("_on_p1", PasswdState.AWAIT_P3),
        (PasswdState.AWAIT_P3, PasswdEvent.LINE): ("_on_p3", ChatState.OPEN),
    }

    def __init__(self, result, setup, record, rng=os.urandom):
        super().__init__(result)
        self.user = result.user
        self._setup = setup
        self._record = record
        self._secret = invited.session_secret(result.session_key, result.transcript_hash)
        self._rng = rng
        self._registration = None

    @property
    def max_message_length(self):
        if self.state is PasswdState.AWAIT_P3:
            return P3_LINE
        return records.MAX_CLIENT_RECORD_LINE

    def receive(self, line):
        if self.state is ChatState.OPEN and line.startswith(PASSWD + b" "):
            return self._dispatch(PasswdEvent.P1, line)
        if self.state is PasswdState.AWAIT_P3:
            return self._dispatch(PasswdEvent.LINE, line)
        return super().receive(line)

    def _unexpected(self, event, payload):
        if self.state is PasswdState.AWAIT_P3:
            return PasswordNotChanged(f"{event.value} while {self.state.value}")
        return super()._unexpected(event, payload)

    def _too_long(self, reason):
        if self.state is PasswdState.AWAIT_P3:
            return PasswordNotChanged(reason)
        return super()._too_long(reason)

    def closing(self, why):
        if self.state is PasswdState.AWAIT_P3:
            self.state = self.FAILED
            return NOT_CHANGED
        return super().closing(why)

    def _on_p1(self, line):
        self.said = None  # not a chat line
        if len(line) != P1_LINE:
            raise PasswordNotChanged("(p1): not 'passwd' and base64(p1)")
        try:
            p1 = decode_item(line[len(PASSWD) + 1:], invited.R1_SIZE)
        except MalformedLine as e:
            raise PasswordNotChanged(f"(p1): {e}") from None
        self._registration = invited.KeyedRegistrationServer(
            self._setup, self.user, self._secret, rng=self._rng, label=invited.PASSWD_LABEL)
        try:
            p2 = self._registration.respond(p1)
        except OpaqueError as e:
            raise PasswordNotChanged(f"(p1): {e}") from None
        return encode_item(p2)

    def _on_p3(self, line):
        self.said = None
        try:
            p3 = decode_item(line, invited.R3_SIZE)
        except MalformedLine as e:
            raise PasswordNotChanged(f"(p3): {e}") from None
        try:
            record = self._registration.finish(p3)
        except OpaqueError as e:
            raise PasswordNotChanged(f"(p3): the new record refused: {e}") from None
        from twisted_keyx.opaque.scheme import OpaqueUser

        new = OpaqueUser(self.user, record, server_key_fingerprint(self._setup.server_public_key))
        return self._ask(ReplaceUser(self.user, self._record, new),
                         lambda error: self._on_replaced(new, error))

    def _on_replaced(self, new, error):
        if isinstance(error, StoreUnavailable):
            raise store_refusal(error)
        if isinstance(error, Exception):
            raise PasswordNotChanged(f"the new record not stored: {error}")
        self._record = new
        return (CHANGED, PasswordChanged(self.user))


def _server_line(line):
    if line == CHANGED:
        return PasswdEvent.CHANGED
    if line == NOT_CHANGED:
        return PasswdEvent.NOT_CHANGED
    if refusal(line) is not None:
        return PasswdEvent.REFUSED
    return PasswdEvent.LINE


class OPAQUEClientChat(ClientChat):
    """The client's session after an OPAQUE login: :class:`ClientChat`, and
    :meth:`passwd`.  ``profile`` and ``ksf_limits`` are the login's: the
    new record's Argon2id cost is checked as at registration."""

    TRANSITIONS = {
        **ClientChat.TRANSITIONS,
        (ChatState.OPEN, PasswdEvent.LOCAL): ("_on_passwd", PasswdState.AWAIT_P2),
        (PasswdState.AWAIT_P2, PasswdEvent.LINE): ("_on_p2", PasswdState.AWAIT_CHANGED),
        (PasswdState.AWAIT_CHANGED, PasswdEvent.CHANGED): ("_on_changed", ChatState.OPEN),
    }
    #: p2 runs Argon2id over the OPRF output to make the new record.
    SLOW_STATES = frozenset({PasswdState.AWAIT_P2})

    def __init__(self, result, profile=LEGACY, ksf_limits=DEFAULT_KSF_LIMITS, rng=os.urandom):
        super().__init__(result)
        self.user = result.user
        self._secret = invited.session_secret(result.session_key, result.transcript_hash)
        self._profile = profile
        self._ksf_limits = ksf_limits
        self._rng = rng
        self._registration = None
        #: Whether p3, the new record, went out (then, until ``changed``,
        #: the server may or may not have stored it).
        self.record_sent = False

    @property
    def changing(self):
        """Whether a change of password is under way."""
        return isinstance(self.state, PasswdState)

    @property
    def max_message_length(self):
        if self.state is PasswdState.AWAIT_P2:
            return max(P2_LINE, len(NOT_CHANGED), MAX_REFUSAL_LINE)
        if self.state is PasswdState.AWAIT_CHANGED:
            return max(len(CHANGED), len(NOT_CHANGED), MAX_REFUSAL_LINE)
        return records.MAX_SERVER_RECORD_LINE

    def passwd(self, new_password):
        """Return the first line of a change to ``new_password`` (normalised
        as at registration: :mod:`twisted_keyx.opaque._password`);
        ``ValueError`` for a password that cannot be one."""
        if (self.state, PasswdEvent.LOCAL) not in self.TRANSITIONS or self.unanswered:
            raise RuntimeError(f"cannot change the password while {self.state.value}"
                               + (" with lines unanswered" if self.unanswered else ""))
        try:
            registration = invited.KeyedRegistrationClient(
                self.user, self._secret, new_password, profile=self._profile,
                ksf_limits=self._ksf_limits, rng=self._rng, label=invited.PASSWD_LABEL)
            p1 = registration.start()
        except OpaqueError as e:
            raise ValueError(str(e)) from None
        self._registration = registration
        return self._dispatch(PasswdEvent.LOCAL, PASSWD + b" " + encode_item(p1))

    def receive(self, line):
        if self.changing:
            self.reply = None
            return self._dispatch(_server_line(line), line)
        return super().receive(line)

    def feed(self, line):
        if self.changing:
            return self.receive(line)  # p3, or a decision
        return super().feed(line)

    def _unexpected(self, event, payload):
        if event is PasswdEvent.REFUSED:
            return refusal(payload)
        if event is PasswdEvent.NOT_CHANGED:
            return PasswordNotChanged(f"the server refused the change while {self.state.value}")
        if isinstance(event, PasswdEvent) or self.changing:
            return PasswordNotChanged(
                f"bad response from the server while {self.state.value}")
        return super()._unexpected(event, payload)

    def _too_long(self, reason):
        if self.changing:
            return PasswordNotChanged(reason)
        return super()._too_long(reason)

    def _on_passwd(self, line):
        return line

    def _on_p2(self, line):
        try:
            p2 = decode_item(line, invited.R2_SIZE)
        except MalformedLine as e:
            raise PasswordNotChanged(f"(p2): {e}") from None
        try:
            p3 = self._registration.finish(p2)
        except KeyStretchingFailed as e:
            raise PasswordNotChanged(f"key stretching failed on this machine: {e}") from None
        except OpaqueError as e:
            raise PasswordNotChanged(f"(p2): {e}") from None
        self.record_sent = True
        return encode_item(p3)

    def _on_changed(self, line):
        self._registration = None
        self.record_sent = False
        return (PasswordChanged(self.user),)


__all__ = ["OPAQUEServerChat", "OPAQUEClientChat", "PasswordNotChanged", "PASSWD", "CHANGED",
           "NOT_CHANGED", "P1_LINE", "P2_LINE", "P3_LINE"]
