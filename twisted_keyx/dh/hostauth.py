"""The server's proof of its host key in the DH handshake; no I/O.

docs/hostkey.rst has the design and the exact bytes.  In short: a client
that wants the proof sends ``Host key?`` instead of ``Hello`` as message 1
(neither is a prefix of the other, as the unframed splitter needs); a server
with a host key answers ``Hey there!`` as usual, goes on with messages 2 to 6
unchanged and, right after message 6, sends message 7::

    Host key signature:-----BEGIN KEYX HOST KEY SIGNATURE-----
    base64( string K_S || string signature )     (3 lines of 64)
    -----END KEYX HOST KEY SIGNATURE-----

where K_S is the host public key blob (RFC 8709 section 4) and signature is
``string "ssh-ed25519" || string sig`` (RFC 8709 section 6), the two fields
SSH's KEXDH_REPLY carries (RFC 4253 section 8).  ``sig`` is Ed25519 (RFC 8032)
over :func:`signed_data`: a context label, the group's name, K_S and the
transcript hash of messages 1 to 6 (:class:`twisted_keyx.core.transcript.Transcript`),
each as an RFC 4251 ``string``.

A server that cannot sign (the socket tutorial's, docs/protocols.rst "DH
handshake"; or ours without a host key)
answers ``Host key?`` with ``I do not understand you, hanging up``, its reply
to any unexpected message; a client that never asks is never sent message 7.
"""

from cryptography.exceptions import InvalidSignature

from twisted_keyx.groups import asn1
from twisted_keyx.trust.hostkey import (
    BLOB_LENGTH,
    KEY_TYPE,
    SIGNATURE_LENGTH,
    InvalidHostKey,
    public_key_blob,
    public_key_from_blob,
    read_ssh_string,
    ssh_string,
)

#: Message 1 of a client that asks for the host key signature, in place of
#: ``Hello``.  Not ``Hello`` + something: the unframed splitter hands
#: ``Hello`` over as soon as its last byte arrives (docs/hostkey.rst).
HOST_KEY_REQUEST = b"Host key?"
#: Message 7 starts with this, immediately followed by the PEM block.
SIGNATURE_PREFIX = b"Host key signature:"
SIGNATURE_PEM_LABEL = b"KEYX HOST KEY SIGNATURE"
#: The first field of the signed bytes: what the signature is for, and its
#: version, so that it cannot be taken for a signature of anything else.
SIGNATURE_CONTEXT = b"twisted-keyx dh host key signature v1"
#: SHA-256: the transcript hash is 32 bytes.
TRANSCRIPT_HASH_LENGTH = 32

#: ``string "ssh-ed25519" || string sig``: 4 + 11 + 4 + 64 bytes.
SIGNATURE_BLOB_LENGTH = 4 + len(KEY_TYPE) + 4 + SIGNATURE_LENGTH
#: The PEM body: ``string K_S || string signature blob``.
_BODY_LENGTH = 4 + BLOB_LENGTH + 4 + SIGNATURE_BLOB_LENGTH


def signed_group_name(group):
    """The group name both sides sign and verify: a registered group's name
    (``ffdhe2048``, ``x25519``), else ``custom``.  The server's ``--params``
    group is ``file:PATH`` locally and ``custom`` to the client, which only
    knows message 4; a file holding an RFC 7919 group is that group on both
    sides (docs/hostkey.rst, "What is signed")."""
    from twisted_keyx.groups import registry as groups
    return group.name if group.name in groups.names() else "custom"


class BadHostKeySignature(Exception):
    """Message 7 is malformed, or its signature does not verify for this
    group, host key and transcript.  ``str()`` says which, for the user."""


def signed_data(group_name, host_key_blob, transcript_hash):
    """The bytes the server signs (docs/hostkey.rst, "What is signed")."""
    if len(transcript_hash) != TRANSCRIPT_HASH_LENGTH:
        raise ValueError(f"a transcript hash is {TRANSCRIPT_HASH_LENGTH} bytes, "
                         f"not {len(transcript_hash)}")
    return b"".join([
        ssh_string(SIGNATURE_CONTEXT),
        ssh_string(group_name.encode("utf-8")),
        ssh_string(bytes(host_key_blob)),
        ssh_string(bytes(transcript_hash)),
    ])


def sign(host_key, group_name, transcript_hash):
    """The server's 64-byte Ed25519 signature; ``host_key`` is a
    :class:`twisted_keyx.trust.hostkey.HostKey`."""
    return host_key.private_key.sign(signed_data(group_name, host_key.blob, transcript_hash))


def verify(public_key, group_name, transcript_hash, signature):
    """Check the server's signature; raise :class:`BadHostKeySignature` if it
    does not verify.  ``public_key`` is an Ed25519 public key."""
    data = signed_data(group_name, public_key_blob(public_key), transcript_hash)
    try:
        public_key.verify(bytes(signature), data)
    except InvalidSignature:
        raise BadHostKeySignature(
            "the server's host key signature does not verify: the handshake "
            "was tampered with, or the server does not hold the key it names") from None


def signature_message(host_key, signature):
    """Message 7, exactly as sent (PEM with its trailing newline)."""
    signature_blob = ssh_string(KEY_TYPE) + ssh_string(signature)
    body = ssh_string(host_key.blob) + ssh_string(signature_blob)
    return SIGNATURE_PREFIX + asn1.pem_encode(SIGNATURE_PEM_LABEL, body)


#: Message 7's length for every Ed25519 key and signature: 292 bytes.  A
#: receiver allows a little more for CRLF line ends and whitespace.
SIGNATURE_MESSAGE_LENGTH = (
    len(SIGNATURE_PREFIX)
    + len(asn1.pem_encode(SIGNATURE_PEM_LABEL, bytes(_BODY_LENGTH)))
)
MAX_SIGNATURE_MESSAGE_LENGTH = SIGNATURE_MESSAGE_LENGTH + 32


def parse_signature_message(payload):
    """``(public key, signature)`` from message 7; raises
    :class:`BadHostKeySignature` if it is not exactly one well-formed
    Ed25519 host key and signature.  Verify the signature with :func:`verify`."""
    payload = bytes(payload)
    if len(payload) > MAX_SIGNATURE_MESSAGE_LENGTH:
        raise BadHostKeySignature(
            f"malformed host key signature message: {len(payload)} bytes, more than "
            f"{MAX_SIGNATURE_MESSAGE_LENGTH}")
    if not payload.startswith(SIGNATURE_PREFIX):
        raise BadHostKeySignature("malformed host key signature message: no "
                                  f"{SIGNATURE_PREFIX.decode('ascii')!r} prefix")
    try:
        _, body = asn1.pem_decode(payload[len(SIGNATURE_PREFIX):], (SIGNATURE_PEM_LABEL,))
    except asn1.DecodeError as e:
        raise BadHostKeySignature(f"malformed host key signature message: {e}") from None
    try:
        blob, pos = read_ssh_string(body, 0)
        signature_blob, pos = read_ssh_string(body, pos)
        if pos != len(body):
            raise ValueError("bytes after the signature")
        signature_type, pos = read_ssh_string(signature_blob, 0)
        signature, pos = read_ssh_string(signature_blob, pos)
        if pos != len(signature_blob):
            raise ValueError("bytes after the signature")
    except ValueError as e:
        raise BadHostKeySignature(f"malformed host key signature message: {e}") from None
    if signature_type != KEY_TYPE or len(signature) != SIGNATURE_LENGTH:
        raise BadHostKeySignature(
            "malformed host key signature message: not an ssh-ed25519 signature")
    try:
        public_key = public_key_from_blob(blob)
    except InvalidHostKey as e:
        raise BadHostKeySignature(f"malformed host key signature message: {e}") from None
    return public_key, signature
