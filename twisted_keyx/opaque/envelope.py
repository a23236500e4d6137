"""The envelope: how the client stores and recovers its AKE key pair
(RFC 9807 section 4, key recovery by derivation from the randomized
password)."""

from dataclasses import dataclass

from twisted_keyx.opaque import oprf, primitives
from twisted_keyx.opaque.errors import OpaqueError
from twisted_keyx.opaque.messages import Envelope
from twisted_keyx.opaque.primitives import NH, NN, NSEED

_DERIVE_DH_INFO = b"OPAQUE-DeriveDiffieHellmanKeyPair"


def derive_diffie_hellman_key_pair(seed):
    """DeriveDiffieHellmanKeyPair for ristretto255 (RFC 9807 section 6.4.1):
    RFC 9497's DeriveKeyPair with info "OPAQUE-DeriveDiffieHellmanKeyPair"."""
    return oprf.derive_key_pair(seed, _DERIVE_DH_INFO)


@dataclass(frozen=True)
class CleartextCredentials:
    """RFC 9807 section 4: what the envelope's auth_tag covers."""

    server_public_key: bytes
    server_identity: bytes
    client_identity: bytes

    def to_bytes(self):
        return (
            self.server_public_key
            + len(self.server_identity).to_bytes(2, "big")
            + self.server_identity
            + len(self.client_identity).to_bytes(2, "big")
            + self.client_identity
        )


def cleartext_credentials(server_public_key, client_public_key, server_identity, client_identity):
    """CreateCleartextCredentials (RFC 9807 section 4): an absent identity
    defaults to the party's public key."""
    if server_identity is None:
        server_identity = server_public_key
    if client_identity is None:
        client_identity = client_public_key
    for name, identity in (("server", server_identity), ("client", client_identity)):
        if not 1 <= len(identity) <= 0xFFFF:
            raise OpaqueError(f"the {name} identity must be 1 to 65535 bytes")
    return CleartextCredentials(server_public_key, bytes(server_identity), bytes(client_identity))


def _keys(randomized_password, nonce):
    auth_key = primitives.expand(randomized_password, nonce + b"AuthKey", NH)
    export_key = primitives.expand(randomized_password, nonce + b"ExportKey", NH)
    seed = primitives.expand(randomized_password, nonce + b"PrivateKey", NSEED)
    client_private_key, client_public_key = derive_diffie_hellman_key_pair(seed)
    return auth_key, export_key, client_private_key, client_public_key


def store(randomized_password, server_public_key, server_identity, client_identity, rng):
    """Store (RFC 9807 section 4.1.2): (envelope, client_public_key,
    masking_key, export_key)."""
    nonce = rng(NN)
    masking_key = primitives.expand(randomized_password, b"MaskingKey", NH)
    auth_key, export_key, _, client_public_key = _keys(randomized_password, nonce)
    credentials = cleartext_credentials(
        server_public_key, client_public_key, server_identity, client_identity
    )
    auth_tag = primitives.mac(auth_key, nonce + credentials.to_bytes())
    return Envelope(nonce, auth_tag), client_public_key, masking_key, export_key


def recover(randomized_password, server_public_key, envelope, server_identity, client_identity):
    """Recover (RFC 9807 section 4.1.3): (client_private_key,
    cleartext_credentials, export_key); :class:`OpaqueError` when the
    auth_tag does not verify (EnvelopeRecoveryError)."""
    auth_key, export_key, client_private_key, client_public_key = _keys(
        randomized_password, envelope.nonce
    )
    credentials = cleartext_credentials(
        server_public_key, client_public_key, server_identity, client_identity
    )
    expected_tag = primitives.mac(auth_key, envelope.nonce + credentials.to_bytes())
    if not primitives.ct_equal(envelope.auth_tag, expected_tag):
        raise OpaqueError("the envelope did not verify (wrong password or server)")
    return client_private_key, credentials, export_key
