"""3DH, the AKE of OPAQUE-3DH, over ristretto255 (RFC 9807 section 6.4).

Three Diffie-Hellman products mix the ephemeral and long-term keys of both
sides; the preamble (every message and both identities) feeds the key
schedule, so both MACs cover the whole transcript.
"""

from dataclasses import dataclass

from twisted_keyx.opaque import group, primitives
from twisted_keyx.opaque.envelope import derive_diffie_hellman_key_pair
from twisted_keyx.opaque.errors import OpaqueError
from twisted_keyx.opaque.primitives import NN, NSEED


def diffie_hellman(k, b):
    """DiffieHellman(k, B) for ristretto255 (RFC 9807 section 6.4.1):
    B is already a validated element; a product equal to the identity is
    refused (section 10.7)."""
    return group.scalar_mult(k, b)


def preamble(context, client_identity, ke1, server_identity, credential_response,
             server_nonce, server_public_keyshare):
    """Preamble (RFC 9807 section 6.4.2.1); every argument is bytes."""
    if len(context) > 0xFFFF:
        raise OpaqueError("context longer than 65535 bytes")
    return b"".join([
        b"OPAQUEv1-",
        len(context).to_bytes(2, "big"), context,
        len(client_identity).to_bytes(2, "big"), client_identity,
        ke1,
        len(server_identity).to_bytes(2, "big"), server_identity,
        credential_response,
        server_nonce,
        server_public_keyshare,
    ])


@dataclass(frozen=True, repr=False)
class Keys:
    """DeriveKeys' output (RFC 9807 section 6.4.2.2) and the two MACs."""

    km2: bytes
    km3: bytes
    session_key: bytes
    handshake_secret: bytes
    server_mac: bytes
    client_mac: bytes

    def __repr__(self):
        return "<3DH keys>"


def derive_keys(ikm, preamble_bytes):
    """DeriveKeys(ikm, preamble), then server_mac = MAC(Km2, Hash(preamble))
    and client_mac = MAC(Km3, Hash(preamble || server_mac)) (RFC 9807
    sections 6.4.2.2, 6.4.3, 6.4.4)."""
    prk = primitives.extract(b"", ikm)
    transcript_hash = primitives.hash_(preamble_bytes)
    handshake_secret = primitives.derive_secret(prk, b"HandshakeSecret", transcript_hash)
    session_key = primitives.derive_secret(prk, b"SessionKey", transcript_hash)
    km2 = primitives.derive_secret(handshake_secret, b"ServerMAC", b"")
    km3 = primitives.derive_secret(handshake_secret, b"ClientMAC", b"")
    server_mac = primitives.mac(km2, transcript_hash)
    client_mac = primitives.mac(km3, primitives.hash_(preamble_bytes + server_mac))
    return Keys(km2, km3, session_key, handshake_secret, server_mac, client_mac)


def client_start(rng):
    """AuthClientStart's random part (RFC 9807 section 6.4.3):
    (client_nonce, client_secret, client_public_keyshare)."""
    client_nonce = rng(NN)
    client_secret, client_public_keyshare = derive_diffie_hellman_key_pair(rng(NSEED))
    return client_nonce, client_secret, client_public_keyshare


def server_keyshare(rng):
    """AuthServerRespond's random part (RFC 9807 section 6.4.4):
    (server_nonce, server_private_keyshare, server_public_keyshare)."""
    server_nonce = rng(NN)
    private, public = derive_diffie_hellman_key_pair(rng(NSEED))
    return server_nonce, private, public


def client_ikm(client_secret, client_private_key, server_public_key, server_public_keyshare):
    """dh1 || dh2 || dh3 as the client computes them (section 6.4.3)."""
    return (
        diffie_hellman(client_secret, server_public_keyshare)
        + diffie_hellman(client_secret, server_public_key)
        + diffie_hellman(client_private_key, server_public_keyshare)
    )


def server_ikm(server_private_keyshare, server_private_key, client_public_keyshare,
               client_public_key):
    """dh1 || dh2 || dh3 as the server computes them (section 6.4.4)."""
    return (
        diffie_hellman(server_private_keyshare, client_public_keyshare)
        + diffie_hellman(server_private_key, client_public_keyshare)
        + diffie_hellman(server_private_keyshare, client_public_key)
    )
