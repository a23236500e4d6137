"""OPAQUE (RFC 9807): a password handshake whose server stores nothing
password-equivalent (docs/protocols.rst, OPAQUE).

The configuration (RFC 9807 section 7):

- OPRF: ristretto255-SHA512 in mode modeOPRF, 0x00 (RFC 9497);
- KDF, MAC, Hash: HKDF-SHA512, HMAC-SHA512, SHA-512;
- KSF: Argon2id with the cost stored in each record and bounded by the
  client (:mod:`twisted_keyx.opaque.ksf`); the identity only for vectors;
- AKE: 3DH over ristretto255 (RFC 9807 section 6.4).

Why 3DH over ristretto255 rather than X25519: it is the group the OPRF
already uses, as section 7 says the AKE group SHOULD be, so one group, one
library call set (libsodium through ``rbcl``) and one validation rule
(canonical, non-identity, :func:`twisted_keyx.opaque.group.deserialize_element`)
cover every element in every message; ristretto255 is prime order, so there
is no cofactor or low-order-point case to handle as X25519 needs; and RFC
9807's vectors 1-2 and fake vector 1 test exactly this configuration.

The layers, each readable beside the RFC sections its docstrings cite:
:mod:`~twisted_keyx.opaque.group` (ristretto255, hash to group),
:mod:`~twisted_keyx.opaque.oprf` (RFC 9497),
:mod:`~twisted_keyx.opaque.primitives`, :mod:`~twisted_keyx.opaque.ksf`,
:mod:`~twisted_keyx.opaque.envelope` (section 4),
:mod:`~twisted_keyx.opaque.messages` (the wire sizes),
:mod:`~twisted_keyx.opaque.credentials` (sections 5.2, 6.3),
:mod:`~twisted_keyx.opaque.ake` (3DH, section 6.4),
:mod:`~twisted_keyx.opaque.records` (record and server setup),
:mod:`~twisted_keyx.opaque.registration` (section 5) and
:mod:`~twisted_keyx.opaque.login` (section 6, the sans-I/O objects).
"""

from twisted_keyx.opaque.errors import OpaqueError
from twisted_keyx.opaque.ksf import (
    DEFAULT_ARGON2ID,
    DEFAULT_KSF_LIMITS,
    IDENTITY,
    Argon2idParameters,
    FixedKsf,
    KsfLimits,
)
from twisted_keyx.opaque.login import DEFAULT_CONTEXT, ClientLogin, LoginResult, ServerLogin
from twisted_keyx.opaque.messages import KE1_SIZE, KE2_SIZE, KE3_SIZE
from twisted_keyx.opaque.records import RegistrationRecord, ServerSetup
from twisted_keyx.opaque.registration import RegistrationClient, register, registration_response

__all__ = [
    "OpaqueError",
    "DEFAULT_ARGON2ID",
    "DEFAULT_KSF_LIMITS",
    "IDENTITY",
    "Argon2idParameters",
    "FixedKsf",
    "KsfLimits",
    "DEFAULT_CONTEXT",
    "ClientLogin",
    "LoginResult",
    "ServerLogin",
    "KE1_SIZE",
    "KE2_SIZE",
    "KE3_SIZE",
    "RegistrationRecord",
    "ServerSetup",
    "RegistrationClient",
    "register",
    "registration_response",
]
