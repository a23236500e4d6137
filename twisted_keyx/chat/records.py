"""Chat records: what travels after a password handshake (docs/protocols.rst, "Chat").

A chat line travels as one line holding base64 of AES-256-GCM under the key
of its direction; the nonce is the record's number in that direction,
counted from 0 and never sent, so a replayed, reordered, dropped or altered
record fails to decrypt (the idea of TLS 1.3's per-record nonce, RFC 8446
5.3, without the XOR mask: each key is used for one session only).  The keys
come from the handshake's session key with HKDF-SHA256 (RFC 5869), with its
transcript hash bound in.

==  ====  ==============================================  =================
    dir   record plaintext                                record bytes
==  ====  ==============================================  =================
c   U>S   a chat line (UTF-8) or ``quit``                 16 + 0..4096
c   S>U   ``receive <line>``, or ``quit`` (the ack)       16 + 0..4104
==  ====  ==============================================  =================
"""

from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from twisted_keyx.core.b64 import base64_length
from twisted_keyx.core.transcript import derive_session_key

#: Chat words (inside the records).
QUIT = "quit"
RECEIVE_PREFIX = "receive "
#: The server's last record before it closes a chat on its own (the idle
#: timeout): ``closing <why>``.
CLOSING_PREFIX = "closing "
MAX_CHAT_TEXT_BYTES = 4096

GCM_NONCE_SIZE = 12
GCM_TAG_SIZE = 16


def record_size(text_size):
    return text_size + GCM_TAG_SIZE


#: The longest legal chat lines, in each direction.
MAX_CLIENT_RECORD_LINE = base64_length(record_size(MAX_CHAT_TEXT_BYTES))
MAX_SERVER_RECORD_LINE = base64_length(
    record_size(len(RECEIVE_PREFIX.encode()) + MAX_CHAT_TEXT_BYTES)
)


class RecordError(Exception):
    """A record that does not decrypt (or a counter used up)."""


@dataclass(frozen=True, repr=False)
class ChatKeys:
    client_to_server: bytes
    server_to_client: bytes

    def __repr__(self):
        return "ChatKeys(<secret>)"


def derive_chat_keys(session_key, transcript_hash, label):
    """One key per direction, bound to the session key and to the handshake's
    messages: HKDF-SHA256(session key, info = ``label`` + `` client to server
    v1`` (or `` server to client v1``) + transcript hash).  Each handshake
    has its label (``b"twisted-keyx eke chat"``), so keys never repeat across
    handshakes."""
    return ChatKeys(
        client_to_server=derive_session_key(
            session_key, label + b" client to server v1", transcript_hash),
        server_to_client=derive_session_key(
            session_key, label + b" server to client v1", transcript_hash),
    )


class RecordCipher:
    """One direction of the chat: AES-256-GCM whose nonce is the number of
    the record, counted from 0 and never sent.  Opening a record that is not
    the next one in order fails like a tampered one."""

    MAX_RECORDS = 2**96

    def __init__(self, key):
        self._aead = AESGCM(key)
        self.count = 0

    def _next_nonce(self):
        if self.count >= self.MAX_RECORDS:
            raise RecordError("record counter exhausted")
        return self.count.to_bytes(GCM_NONCE_SIZE, "big")

    def seal(self, plaintext):
        record = self._aead.encrypt(self._next_nonce(), plaintext, None)
        self.count += 1
        return record

    def open(self, record):
        try:
            plaintext = self._aead.decrypt(self._next_nonce(), record, None)
        except InvalidTag:
            raise RecordError(
                f"chat record {self.count} does not decrypt "
                "(altered, replayed, reordered or one was dropped)"
            ) from None
        self.count += 1
        return plaintext
