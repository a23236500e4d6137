"""The messages of OPAQUE-3DH with ristretto255, byte by byte (RFC 9807
sections 4.1.1, 5.1, 6.1 and 6.3.1; docs/protocols.rst, OPAQUE).

Every message has one exact size; ``from_bytes`` refuses any other size and
any element that is not a valid, non-identity ristretto255 encoding, with
:class:`~twisted_keyx.opaque.errors.OpaqueError`.

=====================  ======  ==================================================
message                 bytes  layout
=====================  ======  ==================================================
RegistrationRequest        32  blinded_message[Noe]
RegistrationResponse       64  evaluated_message[Noe] server_public_key[Npk]
RegistrationRecord        192  client_public_key[Npk] masking_key[Nh] envelope
Envelope                   96  envelope_nonce[Nn] auth_tag[Nm]
KE1                        96  blinded_message[Noe] client_nonce[Nn]
                               client_public_keyshare[Npk]
KE2                       320  evaluated_message[Noe] masking_nonce[Nn]
                               masked_response[Npk+Nn+Nm] server_nonce[Nn]
                               server_public_keyshare[Npk] server_mac[Nm]
KE3                        64  client_mac[Nm]
=====================  ======  ==================================================
"""

from dataclasses import dataclass

from twisted_keyx.opaque import group
from twisted_keyx.opaque.errors import OpaqueError
from twisted_keyx.opaque.primitives import NH, NM, NN, NOE, NPK

ENVELOPE_SIZE = NN + NM
MASKED_RESPONSE_SIZE = NPK + NN + NM
REGISTRATION_REQUEST_SIZE = NOE
REGISTRATION_RESPONSE_SIZE = NOE + NPK
REGISTRATION_RECORD_SIZE = NPK + NH + ENVELOPE_SIZE
CREDENTIAL_REQUEST_SIZE = NOE
CREDENTIAL_RESPONSE_SIZE = NOE + NN + MASKED_RESPONSE_SIZE
AUTH_REQUEST_SIZE = NN + NPK
AUTH_RESPONSE_SIZE = NN + NPK + NM
KE1_SIZE = CREDENTIAL_REQUEST_SIZE + AUTH_REQUEST_SIZE
KE2_SIZE = CREDENTIAL_RESPONSE_SIZE + AUTH_RESPONSE_SIZE
KE3_SIZE = NM


def _split(data, name, *sizes):
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise OpaqueError(f"{name} must be bytes")
    data = bytes(data)
    if len(data) != sum(sizes):
        raise OpaqueError(f"{name} is {sum(sizes)} bytes, not {len(data)}")
    parts, at = [], 0
    for size in sizes:
        parts.append(data[at : at + size])
        at += size
    return parts


@dataclass(frozen=True)
class Envelope:
    """RFC 9807 section 4.1.1."""

    nonce: bytes
    auth_tag: bytes

    def to_bytes(self):
        return self.nonce + self.auth_tag

    @classmethod
    def from_bytes(cls, data):
        return cls(*_split(data, "envelope", NN, NM))


@dataclass(frozen=True)
class RegistrationRequest:
    """RFC 9807 section 5.1."""

    blinded_message: bytes

    def to_bytes(self):
        return self.blinded_message

    @classmethod
    def from_bytes(cls, data):
        (blinded,) = _split(data, "registration request", NOE)
        return cls(group.deserialize_element(blinded))


@dataclass(frozen=True)
class RegistrationResponse:
    """RFC 9807 section 5.1."""

    evaluated_message: bytes
    server_public_key: bytes

    def to_bytes(self):
        return self.evaluated_message + self.server_public_key

    @classmethod
    def from_bytes(cls, data):
        evaluated, server_pk = _split(data, "registration response", NOE, NPK)
        return cls(group.deserialize_element(evaluated), group.deserialize_element(server_pk))


@dataclass(frozen=True)
class KE1:
    """RFC 9807 section 6.1: CredentialRequest then AuthRequest."""

    blinded_message: bytes
    client_nonce: bytes
    client_public_keyshare: bytes

    def to_bytes(self):
        return self.blinded_message + self.client_nonce + self.client_public_keyshare

    @classmethod
    def from_bytes(cls, data):
        blinded, nonce, keyshare = _split(data, "KE1", NOE, NN, NPK)
        return cls(
            group.deserialize_element(blinded), nonce, group.deserialize_element(keyshare)
        )


@dataclass(frozen=True)
class CredentialResponse:
    """RFC 9807 section 6.3.1."""

    evaluated_message: bytes
    masking_nonce: bytes
    masked_response: bytes

    def to_bytes(self):
        return self.evaluated_message + self.masking_nonce + self.masked_response


@dataclass(frozen=True)
class KE2:
    """RFC 9807 section 6.1: CredentialResponse then AuthResponse."""

    credential_response: CredentialResponse
    server_nonce: bytes
    server_public_keyshare: bytes
    server_mac: bytes

    def to_bytes(self):
        return (
            self.credential_response.to_bytes()
            + self.server_nonce
            + self.server_public_keyshare
            + self.server_mac
        )

    @classmethod
    def from_bytes(cls, data):
        evaluated, masking_nonce, masked, nonce, keyshare, server_mac = _split(
            data, "KE2", NOE, NN, MASKED_RESPONSE_SIZE, NN, NPK, NM
        )
        response = CredentialResponse(group.deserialize_element(evaluated), masking_nonce, masked)
        return cls(response, nonce, group.deserialize_element(keyshare), server_mac)


@dataclass(frozen=True)
class KE3:
    """RFC 9807 section 6.1."""

    client_mac: bytes

    def to_bytes(self):
        return self.client_mac

    @classmethod
    def from_bytes(cls, data):
        (client_mac,) = _split(data, "KE3", NM)
        return cls(client_mac)
