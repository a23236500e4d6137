"""Registration authenticated by a one-time invitation code: RFC 9807
section 5's three messages, each side proving to the other that it knows
the code, as two sans-I/O objects (docs/opaque.rst, Registration).

The wire machines that drive them are
:class:`~twisted_keyx.opaque.handshake.OPAQUERegistrationClient` and the
``register`` line of :class:`~twisted_keyx.opaque.handshake.OPAQUEServerHandshake`.

::

    client = InvitedRegistrationClient("bob", code, password)
    server = InvitedRegistrationServer(setup, "bob", invitation_or_None)
    r1 = client.start()              ----->  r2 = server.respond(r1)
    r3 = client.finish(r2)           <-----
                                     ----->  record = server.finish(r3)
                                             (then redeem the invitation and store the
                                              record, both or neither: IInvitationStore.register)

The code is 160 random bits; the server keeps only ``code_hash(code)``
(:class:`~twisted_keyx.core.interfaces.Invitation`).  Both sides derive
the registration's keys from that hash and the two nonces::

    keys = HKDF-SHA512(salt = client_nonce || server_nonce, ikm = code_hash,
                       info = LABEL || I2OSP(len(user), 2) || user), 96 bytes
    server_mac_key = keys[0:32], record_key = keys[64:96] (keys[32:64] unused)

- r1 = client_nonce (32) || RegistrationRequest (32);
- r2 = server_nonce (32) || RegistrationResponse (64) || cost (12, the
  Argon2id cost the record is to be made with) || server_mac (64), the
  MAC HMAC-SHA512(server_mac_key, "server" || r1 || r2 before the MAC);
- r3 = AES-256-GCM(record_key, 12 zero bytes, record (192),
  aad = SHA-512(r1 || r2)): 208 bytes.

The client checks the server's MAC before it sends anything that depends
on the password: a server (or a man in the middle) without the code gets
no record to guess against.  The server stores a record only if it opens
under the key only a code holder has.  The record travels encrypted, so a
passive eavesdropper learns nothing either.  An unknown user, or a code
used, expired or revoked, gets r2 computed the same way with a random
hash in place of the stored one: the same sizes and work; the client
finds the MAC wrong.

A change of password inside a logged-in OPAQUE session
(:mod:`twisted_keyx.opaque.passwd`) runs the same three messages with
:class:`KeyedRegistrationClient` and :class:`KeyedRegistrationServer`:
the secret both sides hold is then :func:`session_secret` of the login's
session key and transcript, not the code's hash, and the info label is
:data:`PASSWD_LABEL`.
"""

import base64
import binascii
import hashlib
import hmac
import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from twisted_keyx.core.transcript import derive_session_key
from twisted_keyx.opaque import primitives
from twisted_keyx.opaque.errors import OpaqueError
from twisted_keyx.opaque.ksf import DEFAULT_KSF_LIMITS, Argon2idParameters
from twisted_keyx.opaque.messages import REGISTRATION_RECORD_SIZE
from twisted_keyx.opaque.profile import LEGACY
from twisted_keyx.opaque.records import RegistrationRecord
from twisted_keyx.opaque.registration import RegistrationClient, registration_response

CODE_BYTES = 20
HASH_LABEL = b"twisted-keyx invitation v1\x00"
KEY_LABEL = b"twisted-keyx opaque registration v1"
#: The info label of a change of password (and of its session secret).
PASSWD_LABEL = b"twisted-keyx opaque passwd v1"
NONCE_SIZE = 32
R1_SIZE = NONCE_SIZE + 32
R2_SIZE = NONCE_SIZE + 64 + 12 + 64
R3_SIZE = REGISTRATION_RECORD_SIZE + 16
#: Seven days, in seconds.
DEFAULT_LIFETIME = 7 * 24 * 3600


class InvitationRefused(OpaqueError):
    """Client side: the server's MAC does not verify: it does not know this
    code (mistyped, used, expired, revoked), or it is not the server."""


def new_code(rng=os.urandom):
    """A fresh code: 160 random bits as 32 base32 letters and digits in
    eight groups of four (``abcd-efgh-...``), shown once."""
    text = base64.b32encode(rng(CODE_BYTES)).decode("ascii").lower()
    return "-".join(text[i:i + 4] for i in range(0, len(text), 4))


def code_bytes(code):
    """The 20 bytes a code stands for, whatever its case, spaces and dashes;
    :class:`OpaqueError` if it is not a code."""
    text = "".join(code.split()).replace("-", "").upper()
    try:
        data = base64.b32decode(text.encode("ascii"))
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise OpaqueError("not an invitation code (32 letters and digits)") from None
    if len(data) != CODE_BYTES:
        raise OpaqueError("not an invitation code (32 letters and digits)")
    return data


def code_hash(code):
    """What the server stores: SHA-256 of the code's bytes, labelled."""
    return hashlib.sha256(HASH_LABEL + code_bytes(code)).digest()


def session_secret(session_key, transcript_hash):
    """The secret of a change of password: 32 bytes only the two ends of a
    login hold, HKDF-SHA256(session key, info = PASSWD_LABEL || transcript
    hash), as the chat's keys are derived (and never equal to them)."""
    return derive_session_key(session_key, PASSWD_LABEL, transcript_hash)


def _keys(hashed, client_nonce, server_nonce, user, label=KEY_LABEL):
    name = user.encode("utf-8")
    info = label + struct.pack(">H", len(name)) + name
    prk = primitives.extract(client_nonce + server_nonce, hashed)
    keys = primitives.expand(prk, info, 96)
    return keys[:32], keys[64:96]


def _server_mac(key, r1, r2_body):
    return hmac.new(key, b"server" + r1 + r2_body, hashlib.sha512).digest()


def _aad(r1, r2):
    return hashlib.sha512(r1 + r2).digest()


class KeyedRegistrationClient:
    """The registering client under a 32-byte ``secret`` the server holds
    too (an invitation code's hash, a session's :func:`session_secret`):
    :meth:`start` gives r1, :meth:`finish` takes r2 and gives r3 (then
    :attr:`record` and :attr:`export_key` are set).  In the rfc9807
    ``profile`` the cost must be the profile's; otherwise it must be within
    ``ksf_limits``.  ``label`` separates the uses of the three messages."""

    #: What :class:`InvitationRefused` says when r2's MAC does not verify.
    REFUSED = ("the server's MAC does not verify: it does not hold this session's key "
               "(a man in the middle?)")

    def __init__(self, user, secret, password, profile=LEGACY, ksf_limits=DEFAULT_KSF_LIMITS,
                 rng=os.urandom, label=KEY_LABEL):
        self.user = user
        self._hash = secret
        self._label = label
        self._password = password
        self._profile = profile
        self._ksf_limits = ksf_limits
        self._rng = rng
        self._state = "new"
        self.record = self.export_key = None

    def start(self):
        if self._state != "new":
            raise OpaqueError("the registration has already started")
        self._state = "await r2"
        self._nonce = self._rng(NONCE_SIZE)
        # The password is only blinded here (RFC 9497): r1 reveals nothing of it.
        self._client = RegistrationClient(self._password, rng=self._rng)
        self._r1 = self._nonce + self._client.start()
        return self._r1

    def finish(self, r2):
        if self._state != "await r2":
            raise OpaqueError("r2 is not expected now")
        self._state = "failed"
        if not isinstance(r2, bytes) or len(r2) != R2_SIZE:
            raise OpaqueError(f"r2 must be {R2_SIZE} bytes")
        server_nonce, response = r2[:NONCE_SIZE], r2[NONCE_SIZE:NONCE_SIZE + 64]
        header, mac = r2[NONCE_SIZE + 64:NONCE_SIZE + 76], r2[NONCE_SIZE + 76:]
        server_mac_key, record_key = _keys(self._hash, self._nonce, server_nonce, self.user,
                                           self._label)
        # Before anything that depends on the password leaves this side.
        if not primitives.ct_equal(mac, _server_mac(server_mac_key, self._r1, r2[:-64])):
            raise InvitationRefused(self.REFUSED)
        cost = Argon2idParameters.decode(header)
        if self._profile.rfc:
            if cost != self._profile.ksf:
                raise OpaqueError(f"the server asks for {cost}, not the profile's "
                                  f"{self._profile.ksf}")
        else:
            self._ksf_limits.check(cost)
        self._client._ksf = cost
        record, self.export_key = self._client.finish(response)
        self.record = record
        self._state = "done"
        return AESGCM(record_key).encrypt(bytes(12), record.to_bytes(), _aad(self._r1, r2))


class InvitedRegistrationClient(KeyedRegistrationClient):
    """The registering client with an invitation ``code`` (the secret is
    :func:`code_hash` of it)."""

    REFUSED = ("the server does not know this invitation code (mistyped, used, expired "
               "or revoked), or it is not the server that made it")

    def __init__(self, user, code, password, profile=LEGACY, ksf_limits=DEFAULT_KSF_LIMITS,
                 rng=os.urandom):
        super().__init__(user, code_hash(code), password, profile=profile,
                         ksf_limits=ksf_limits, rng=rng)


class KeyedRegistrationServer:
    """The server's side for ``user`` under the 32-byte ``secret`` the
    client holds too (:class:`KeyedRegistrationClient`): :meth:`respond`
    takes r1 and gives r2; :meth:`finish` takes r3 and gives the
    :class:`~twisted_keyx.opaque.records.RegistrationRecord`, or
    :class:`OpaqueError` (r3 does not open, or holds no record)."""

    def __init__(self, setup, user, secret, rng=os.urandom, label=KEY_LABEL):
        self._setup = setup
        self.user = user
        self._rng = rng
        self._label = label
        self.code_hash = secret
        self._cost = setup.profile.registration_ksf(setup.default_ksf)
        self._state = "new"

    def respond(self, r1):
        if self._state != "new":
            raise OpaqueError("r1 is not expected now")
        self._state = "failed"
        if not isinstance(r1, bytes) or len(r1) != R1_SIZE:
            raise OpaqueError(f"r1 must be {R1_SIZE} bytes")
        client_nonce, request = r1[:NONCE_SIZE], r1[NONCE_SIZE:]
        response = registration_response(self._setup, request, self.user.encode("utf-8"))
        server_nonce = self._rng(NONCE_SIZE)
        server_mac_key, self._record_key = _keys(self.code_hash, client_nonce, server_nonce,
                                                 self.user, self._label)
        body = server_nonce + response + self._cost.encode()
        r2 = body + _server_mac(server_mac_key, r1, body)
        self._aad = _aad(r1, r2)
        self._state = "await r3"
        return r2

    def finish(self, r3):
        if self._state != "await r3":
            raise OpaqueError("r3 is not expected now")
        self._state = "failed"
        if not isinstance(r3, bytes) or len(r3) != R3_SIZE:
            raise OpaqueError(f"r3 must be {R3_SIZE} bytes")
        try:
            data = AESGCM(self._record_key).decrypt(bytes(12), r3, self._aad)
        except InvalidTag:
            raise OpaqueError("r3 does not open: the client does not hold the key") from None
        record = RegistrationRecord.from_bytes(data, self._cost)
        self._state = "done"
        return record


def refusal(invitation, now):
    """Why ``invitation`` (an :class:`~twisted_keyx.core.interfaces.Invitation`
    or None) cannot register at ``now``, in words safe to log (no code, no
    hash), or None if it can."""
    if invitation is None:
        return "no invitation for this user"
    if invitation.state != "pending":
        return f"its invitation was {invitation.state}"
    if not now < invitation.expires:
        return "its invitation expired"
    return None


class InvitedRegistrationServer(KeyedRegistrationServer):
    """The server's side for ``user``, whose stored
    :class:`~twisted_keyx.core.interfaces.Invitation` is ``invitation``
    (None if there is none; one not usable at ``now`` is treated the same):
    as :class:`KeyedRegistrationServer` under the invitation's hash.  Then
    redeem :attr:`code_hash` and store the record, in one store call
    (:meth:`~twisted_keyx.core.interfaces.IInvitationStore.register`)."""

    def __init__(self, setup, user, invitation, now, rng=os.urandom):
        #: Why the invitation is not usable, for the log (never sent), or None.
        self.refusal = refusal(invitation, now)
        #: Whether the invitation was usable (for the log; never sent).
        self.invited = self.refusal is None
        # Unusable: a random hash, so the same work and a MAC no client can check.
        super().__init__(setup, user, invitation.code_hash if self.invited else rng(32),
                         rng=rng)


__all__ = ["new_code", "code_bytes", "code_hash", "session_secret", "refusal",
           "KeyedRegistrationClient", "KeyedRegistrationServer", "InvitedRegistrationClient",
           "InvitedRegistrationServer", "InvitationRefused", "DEFAULT_LIFETIME", "PASSWD_LABEL"]
