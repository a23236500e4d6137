"""Login: OPAQUE-3DH's three messages as two sans-I/O objects (RFC 9807
section 6; docs/protocols.rst, OPAQUE).

::

    client = ClientLogin(password)            server = ServerLogin(setup, record, b"alice")
    ke1 = client.start()              ----->  ke2 = server.respond(ke1)
    result = client.finish(ke2)       <-----
    result.ke3                        ----->  session_key = server.finish(result.ke3)

Each object is used once, in that order; any other call, any message of the
wrong size, any invalid element and any MAC that does not verify raises
:class:`~twisted_keyx.opaque.errors.OpaqueError`.  Neither does I/O; the
randomness is ``rng(n) -> n bytes`` (``os.urandom`` unless a test gives
one), drawn in the RFC's order: the client's blind, client_nonce and
client_keyshare_seed; the server's masking_nonce, server_nonce and
server_keyshare_seed.

On the wire, "KE2" is the record's KSF header (12 bytes for Argon2id, see
:mod:`twisted_keyx.opaque.ksf`) followed by RFC 9807's KE2 (320 bytes); the
header is also appended to the preamble's context on both sides.  KE1 is 96
bytes and KE3 64, as in the RFC.  The user's name (the credential
identifier) travels outside these messages, as the adapter decides.
"""

import enum
import os
from typing import NamedTuple

from twisted_keyx.opaque import ake, credentials, oprf, primitives
from twisted_keyx.opaque._password import password_bytes
from twisted_keyx.opaque.envelope import cleartext_credentials
from twisted_keyx.opaque.errors import OpaqueError, ServerMacFailed
from twisted_keyx.opaque.ksf import DEFAULT_KSF_LIMITS
from twisted_keyx.opaque.messages import KE1, KE2, KE2_SIZE, KE3
from twisted_keyx.opaque.profile import LEGACY, LEGACY_CONTEXT

#: The application context of RFC 9807 section 6.4.2.1 in the
#: twisted-keyx-v1 profile, before the KSF header: it names our protocol
#: and configuration (section 7) so a transcript cannot be replayed into
#: another protocol (:mod:`twisted_keyx.opaque.profile`).
DEFAULT_CONTEXT = LEGACY_CONTEXT


class ClientLoginState(enum.Enum):
    """Where a :class:`ClientLogin` is: it is used once, in this order."""

    NEW = "new"
    AWAIT_KE2 = "await KE2"
    DONE = "done"
    FAILED = "failed"


class ServerLoginState(enum.Enum):
    """Where a :class:`ServerLogin` is: it is used once, in this order."""

    NEW = "new"
    AWAIT_KE3 = "await KE3"
    DONE = "done"
    FAILED = "failed"


def ke2_message_size(ksf_policy):
    """Bytes of the KE2 message on the wire for a KSF (or a client policy)."""
    return ksf_policy.header_size + KE2_SIZE


class LoginResult(NamedTuple):
    """What the client has after KE2: KE3 to send, and its keys.  Use
    export_key only now that the server is authenticated (RFC 9807
    section 6)."""

    ke3: bytes
    session_key: bytes
    export_key: bytes
    server_public_key: bytes

    def __repr__(self):
        return f"<LoginResult server key {self.server_public_key.hex()[:16]}...>"


class ClientLogin:
    """The client's side: GenerateKE1 then GenerateKE3 (RFC 9807 sections
    6.2.1 and 6.2.3).

    ``ksf_limits`` decides which KSF cost from the server is acceptable
    (a :class:`~twisted_keyx.opaque.ksf.KsfLimits`, or
    ``FixedKsf(IDENTITY)`` for the RFC's vectors).  ``server_identity`` and
    ``client_identity`` default to the public keys, as RFC 9807 section 8
    recommends when no other identity exists.
    """

    def __init__(self, password, ksf_limits=DEFAULT_KSF_LIMITS, rng=os.urandom,
                 context=None, server_identity=None, client_identity=None, profile=LEGACY):
        self._password = password_bytes(password)
        self._ksf_limits = profile.client_policy(ksf_limits)
        self._rng = rng
        self._context = profile.context if context is None else context
        self._server_identity = server_identity
        self._client_identity = client_identity
        self._state = ClientLoginState.NEW
        self.ke2_size = ke2_message_size(self._ksf_limits)

    @property
    def state(self):
        """A :class:`ClientLoginState`: ``NEW``, then ``AWAIT_KE2``, then ``DONE`` or ``FAILED``."""
        return self._state

    def start(self):
        """GenerateKE1: the 96 bytes of KE1."""
        if self._state is not ClientLoginState.NEW:
            raise OpaqueError("the login has already started")
        self._state = ClientLoginState.AWAIT_KE2
        self._blind, blinded = oprf.blind(self._password, self._rng)
        client_nonce, self._client_secret, keyshare = ake.client_start(self._rng)
        self._ke1 = KE1(blinded, client_nonce, keyshare).to_bytes()
        return self._ke1

    def finish(self, ke2_message):
        """GenerateKE3: a :class:`LoginResult`, or :class:`OpaqueError` if
        the server's KSF cost is refused, KE2 is malformed, the envelope
        fails (a wrong password) or the server's MAC does not verify."""
        if self._state is not ClientLoginState.AWAIT_KE2:
            raise OpaqueError("KE2 is not expected now")
        self._state = ClientLoginState.FAILED
        try:
            result = self._finish(ke2_message)
        finally:
            # RFC 9807 section 6: the client state is erased after the protocol.
            del self._password, self._blind, self._client_secret
        self._state = ClientLoginState.DONE
        return result

    def _finish(self, ke2_message):
        if not isinstance(ke2_message, (bytes, bytearray)) or len(ke2_message) != self.ke2_size:
            raise OpaqueError(f"KE2 must be {self.ke2_size} bytes")
        ke2_message = bytes(ke2_message)
        header = ke2_message[: self._ksf_limits.header_size]
        ksf = self._ksf_limits.accept(header)
        ke2 = KE2.from_bytes(ke2_message[self._ksf_limits.header_size :])
        client_private_key, creds, export_key = credentials.recover_credentials(
            self._password, self._blind, ke2.credential_response, ksf,
            self._server_identity, self._client_identity,
        )
        ikm = ake.client_ikm(self._client_secret, client_private_key,
                             creds.server_public_key, ke2.server_public_keyshare)
        preamble = ake.preamble(
            self._context + header, creds.client_identity, self._ke1, creds.server_identity,
            ke2.credential_response.to_bytes(), ke2.server_nonce, ke2.server_public_keyshare,
        )
        keys = ake.derive_keys(ikm, preamble)
        if not primitives.ct_equal(ke2.server_mac, keys.server_mac):
            raise ServerMacFailed("the server's MAC did not verify")
        return LoginResult(KE3(keys.client_mac).to_bytes(), keys.session_key, export_key,
                           creds.server_public_key)


class ServerLogin:
    """The server's side: GenerateKE2 then ServerFinish (RFC 9807 sections
    6.2.2 and 6.2.4).

    ``record`` is the user's :class:`~twisted_keyx.opaque.records.RegistrationRecord`,
    or ``None`` for a user that does not exist: then the setup's fake record
    is used (RFC 9807 section 6.3.2.2), with the same messages, sizes and
    work, and :meth:`finish` fails as for a wrong password.
    """

    def __init__(self, server_setup, record, credential_identifier, context=None,
                 rng=os.urandom, server_identity=None, client_identity=None):
        self._setup = server_setup
        self._record = record if record is not None else server_setup.fake_record
        self._credential_identifier = credential_identifier
        profile = server_setup.profile
        # The setup's profile (the key file's); a context given explicitly
        # (the RFC's vectors) comes with the record's KSF header.
        self._context = profile.context if context is None else context
        self._header = (profile.header(self._record.ksf) if context is None
                        else self._record.ksf.encode())
        self._rng = rng
        self._server_identity = server_identity
        self._client_identity = client_identity
        self._state = ServerLoginState.NEW
        self.ke2_size = len(self._header) + KE2_SIZE

    @property
    def state(self):
        """A :class:`ServerLoginState`: ``NEW``, then ``AWAIT_KE3``, then ``DONE`` or ``FAILED``."""
        return self._state

    def respond(self, ke1):
        """GenerateKE2: the KE2 message (KSF header and RFC KE2)."""
        if self._state is not ServerLoginState.NEW:
            raise OpaqueError("KE1 is not expected now")
        self._state = ServerLoginState.FAILED
        ke1 = KE1.from_bytes(ke1)
        setup, record = self._setup, self._record
        response = credentials.create_credential_response(
            ke1.blinded_message, setup.server_public_key, record,
            self._credential_identifier, setup.oprf_seed, self._rng,
        )
        creds = cleartext_credentials(setup.server_public_key, record.client_public_key,
                                      self._server_identity, self._client_identity)
        server_nonce, private_keyshare, public_keyshare = ake.server_keyshare(self._rng)
        header = self._header
        preamble = ake.preamble(
            self._context + header, creds.client_identity, ke1.to_bytes(),
            creds.server_identity, response.to_bytes(), server_nonce, public_keyshare,
        )
        ikm = ake.server_ikm(private_keyshare, setup.server_private_key,
                             ke1.client_public_keyshare, record.client_public_key)
        keys = ake.derive_keys(ikm, preamble)
        self._expected_client_mac = keys.client_mac
        self._session_key = keys.session_key
        self._state = ServerLoginState.AWAIT_KE3
        return header + KE2(response, server_nonce, public_keyshare, keys.server_mac).to_bytes()

    def finish(self, ke3):
        """ServerFinish: the session key if KE3's MAC verifies (the password
        was right), else :class:`OpaqueError`."""
        if self._state is not ServerLoginState.AWAIT_KE3:
            raise OpaqueError("KE3 is not expected now")
        self._state = ServerLoginState.FAILED
        expected, session_key = self._expected_client_mac, self._session_key
        del self._expected_client_mac, self._session_key
        ke3 = KE3.from_bytes(ke3)
        if not primitives.ct_equal(ke3.client_mac, expected):
            raise OpaqueError("the client's MAC did not verify")
        self._state = ServerLoginState.DONE
        return session_key
