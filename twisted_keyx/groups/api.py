"""What every group of the DH handshake implements, and the neutral errors.

The registry that names the groups is :mod:`twisted_keyx.groups.registry`, which
re-exports all of this; the groups themselves (:mod:`twisted_keyx.groups.ffdh`,
:mod:`twisted_keyx.groups.x25519`, :mod:`twisted_keyx.groups.hybrid`) import it
from here, so that the registry can import them (docs/protocols.rst, Groups).

The seam is shaped like a key encapsulation mechanism (KEM), of which
Diffie-Hellman is the special case:

============================  ==========================  ============================
step                          a KEM (X-Wing...)           Diffie-Hellman
============================  ==========================  ============================
client: key pair              KeyGen                      a private key
client: message 5             the encapsulation key       its public key
server: message 6 and secret  Encaps(the client's key)    a key of its own, its public
                                                          key and DH(own, client's)
client: secret                Decaps(message 6)           DH(own, server's public key)
============================  ==========================  ============================

The state machines call only :meth:`Group.generate_private_key`,
:meth:`Group.public_key_pem`, :meth:`Group.load_peer_key`,
:meth:`Group.encapsulate` and :meth:`Group.decapsulate`, never asking which
kind a group is; :class:`DiffieHellmanGroup` writes the last two in terms of a
DH group's ``exchange``.
"""


class GroupError(ValueError):
    """An unknown group, or parameters that cannot be used; str() says why."""


class InvalidPublicKey(ValueError):
    """A peer's public key (or, for a KEM, its ciphertext) cannot be used in
    the group; str() says why."""


class Group:
    """What every group offers the DH handshake (an interface, for reading).

    Attributes:

    ``name``
        ``"ffdhe2048"``, ``"x25519"``, ``"xwing"``, ``"file:PATH"``...
    ``bits``
        the size shown to users (the modulus for FFDH; 255 for X25519; the
        classical part's for a hybrid).
    ``secret_length``
        bytes of the shared secret.
    ``parameters_message``
        message 4 of the DH handshake, exactly as sent.
    ``max_public_key_message``
        the largest armored key a client may legitimately send (message 5,
        after its prefix).
    ``max_reply_message``
        the largest armored answer a server may legitimately send (message
        6, after its prefix): a public key for DH, a ciphertext for a KEM.

    Methods (``InvalidPublicKey`` for anything a peer sent that cannot be
    used):

    ``generate_private_key()``
        the client's secret (a KEM's decapsulation key, a DH private key).
    ``public_key_pem(private_key)``
        the armored public half: the body of message 5, with its trailing
        newline.
    ``load_peer_key(armor)``
        server side: the client's message 5 body, parsed and checked.
    ``encapsulate(peer_key, private_key_factory)``
        server side: ``(reply, shared_secret)``, ``reply`` the body of
        message 6.  ``private_key_factory(group)``, when the group has use
        for a private key of its own (DH), makes it; a KEM draws its own
        randomness.
    ``decapsulate(private_key, reply)``
        client side: the shared secret from the body of message 6.
    """

    #: Whether the group resists an attacker with a quantum computer who
    #: records the handshake (``--trace`` and the docs say so).
    post_quantum = False

    @property
    def max_reply_message(self):
        return self.max_public_key_message

    def generate_private_key(self):
        raise NotImplementedError

    def public_key_pem(self, private_key):
        raise NotImplementedError

    def load_peer_key(self, pem):
        raise NotImplementedError

    def encapsulate(self, peer_key, private_key_factory=None):
        raise NotImplementedError

    def decapsulate(self, private_key, reply):
        raise NotImplementedError


class DiffieHellmanGroup(Group):
    """A Diffie-Hellman group as a KEM: the server's "encapsulation" is a
    key pair of its own and its public key, the secret their exchange.

    Subclasses implement ``exchange(private_key, peer_key)`` (raising
    :class:`InvalidPublicKey`) besides the key methods of :class:`Group`.
    """

    def exchange(self, private_key, peer_key):
        raise NotImplementedError

    def encapsulate(self, peer_key, private_key_factory=None):
        if private_key_factory is None:
            private_key = self.generate_private_key()
        else:
            private_key = private_key_factory(self)
        return self.public_key_pem(private_key), self.exchange(private_key, peer_key)

    def decapsulate(self, private_key, reply):
        return self.exchange(private_key, self.load_peer_key(reply))
