"""The DH handshake's messages, byte for byte (docs/protocols.rst, DH handshake)::

    | # | dir | payload                                          |
    |---|-----|--------------------------------------------------|
    | 1 | C>S | ``Hello``                                        |
    | 2 | S>C | ``Hey there!``                                   |
    | 3 | C>S | ``Params?``                                      |
    | 4 | S>C | the group: PEM DH parameters, or ``Group: x25519`` |
    | 5 | C>S | ``Client public key:`` + PEM SubjectPublicKeyInfo |
    | 6 | S>C | ``Server public key:`` + PEM SubjectPublicKeyInfo |
    | 7 | S>C | ``Host key signature:`` + PEM (asked: message 1 ``Host key?``) |

Messages 1 ``Host key?`` and 7: docs/hostkey.rst.
"""

import enum

from twisted_keyx.groups import registry as groups

HELLO = b"Hello"
HEY_THERE = b"Hey there!"
PARAMS_REQUEST = b"Params?"
CLIENT_KEY_PREFIX = b"Client public key:"
SERVER_KEY_PREFIX = b"Server public key:"
#: docs/hostkey.rst: message 1 of a client asking for the host key
#: signature, and the prefix of message 7.
HOST_KEY_REQUEST = b"Host key?"
HOST_KEY_SIGNATURE_PREFIX = b"Host key signature:"

#: The server's error replies; it closes the connection after sending one.
#: How the server's refusal begins, whatever follows (a client telling the
#: framings apart from a first read).
UNEXPECTED_MESSAGE_PREFIX = b"I do not understand you"
UNEXPECTED_MESSAGE_REPLY = UNEXPECTED_MESSAGE_PREFIX + b", hanging up"
INVALID_CLIENT_KEY_REPLY = b"Invalid client public key, hanging up"
ERROR_REPLIES = (UNEXPECTED_MESSAGE_REPLY, INVALID_CLIENT_KEY_REPLY)

#: HKDF label of the session key (info = label || transcript hash).
SESSION_KEY_LABEL = b"twisted-keyx dh session key v1"


class DHClientMessage(enum.Enum):
    """What a message from the client is, judged by its bytes alone."""

    HELLO = "Hello"
    HOST_KEY_REQUEST = "Host key?"
    PARAMS_REQUEST = "Params?"
    CLIENT_KEY = "Client public key"
    UNKNOWN = "unknown"


class DHServerMessage(enum.Enum):
    HEY_THERE = "Hey there!"
    PARAMETERS = "parameters"
    SERVER_KEY = "Server public key"
    HOST_KEY_SIGNATURE = "Host key signature"
    ERROR = "error reply"
    UNKNOWN = "unknown"


def classify_client_message(payload):
    if payload == HELLO:
        return DHClientMessage.HELLO
    if payload == HOST_KEY_REQUEST:
        return DHClientMessage.HOST_KEY_REQUEST
    if payload == PARAMS_REQUEST:
        return DHClientMessage.PARAMS_REQUEST
    if payload.startswith(CLIENT_KEY_PREFIX):
        return DHClientMessage.CLIENT_KEY
    return DHClientMessage.UNKNOWN


def classify_server_message(payload):
    if payload == HEY_THERE:
        return DHServerMessage.HEY_THERE
    if payload.startswith(SERVER_KEY_PREFIX):
        return DHServerMessage.SERVER_KEY
    if payload.startswith(HOST_KEY_SIGNATURE_PREFIX):
        return DHServerMessage.HOST_KEY_SIGNATURE
    if groups.is_parameters_message(payload):
        return DHServerMessage.PARAMETERS
    if payload in ERROR_REPLIES:
        return DHServerMessage.ERROR
    return DHServerMessage.UNKNOWN
