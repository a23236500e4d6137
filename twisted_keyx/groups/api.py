"""What every group of the DH handshake implements, and the neutral errors.

The registry that names the groups is :mod:`twisted_keyx.groups.registry`, which
re-exports all of this; the groups themselves (:mod:`twisted_keyx.groups.ffdh`,
:mod:`twisted_keyx.groups.x25519`) import it from here, so that the registry can
import them (docs/protocols.rst, Groups).
"""


class GroupError(ValueError):
    """An unknown group, or parameters that cannot be used; str() says why."""


class InvalidPublicKey(ValueError):
    """A peer's public key cannot be used in the group; str() says why."""


class Group:
    """What every group offers the DH handshake (an interface, for reading).

    Attributes:

    ``name``
        ``"ffdhe2048"``, ``"x25519"``, ``"file:PATH"``...
    ``bits``
        the size shown to users (the modulus for FFDH; 255 for X25519).
    ``secret_length``
        bytes of the shared secret.
    ``parameters_message``
        message 4 of the DH handshake, exactly as sent.
    ``max_public_key_message``
        the largest PEM public key a peer may legitimately send.

    Methods: ``generate_private_key()``, ``public_key_pem(key)`` (PEM
    SubjectPublicKeyInfo with its trailing newline), ``load_peer_key(pem)``
    and ``exchange(key, peer_key)``, the last two raising
    :class:`InvalidPublicKey`.
    """

    def generate_private_key(self):
        raise NotImplementedError

    def public_key_pem(self, private_key):
        raise NotImplementedError

    def load_peer_key(self, pem):
        raise NotImplementedError

    def exchange(self, private_key, peer_key):
        raise NotImplementedError
