"""The chat's entry in the handshake registry (:mod:`twisted_keyx.core.handshakes`):
not a handshake of its own (it follows a password handshake, and serves
no endpoint), but it has machines to draw and records to summarise."""

import base64
import binascii

from twisted_keyx.core.handshakes import Handshake, Machine, Summary


def describe(payload):
    """A chat record: its size, ciphertext and tag."""
    try:
        record = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return None
    return Summary(f"chat record of {len(record)} bytes "
                   f"(ciphertext {max(len(record) - 16, 0)} + tag 16)")


HANDSHAKE = Handshake(
    name="chat",
    title="the encrypted chat after a password handshake",
    machines=(
        Machine("chat-server", "twisted_keyx.chat.machine:ServerChat", "Chat, server side"),
        Machine("chat-client", "twisted_keyx.chat.machine:ClientChat", "Chat, client side"),
    ),
    summaries={"ClientChat": describe, "ServerChat": describe},
)
