"""The EKE handshake on the wire, line by line (docs/protocols.rst, "EKE").

Every message is one line ended by LF (``\\n``; a CR is not allowed), holding
one item: ASCII text, or a box in standard base64 with padding, decoded
strictly (no other character, canonical padding bits).  E_pw is AES-256-GCM
under the password key, E_Ks under the session key (see
:mod:`twisted_keyx.eke.crypto`); a box is ``nonce (12) || ciphertext ||
tag (16)``.  Sizes are fixed, so every line has an exact legal length.

==  ====  ==============================================  =================
#   dir   line                                            decoded bytes
==  ====  ==============================================  =================
1   U>S   the user name, UTF-8, printable, no whitespace  1..64
2   S>U   ``yes <salt> scrypt <n> <r> <p>`` or ``no``     salt 16
3   U>S   E_pw(pk): DER SubjectPublicKeyInfo, RSA-2048    12+294+16 = 322
4   S>U   E_pw(RSA-OAEP-SHA256_pk(Ks)), Ks 32 bytes       12+256+16 = 284
5   U>S   E_Ks(NC), NC 16 bytes                           12+16+16 = 44
6   S>U   E_Ks(NC || NS), NS 16 bytes                     12+32+16 = 60
7   U>S   E_Ks(NS)                                        44
8   S>U   E_Ks(``Authentication success``)                12+22+16 = 50
==  ====  ==============================================  =================

Failure: the server sends ``authentication failed`` (or ``no`` for an unknown
user at step 2 when it does not hide them) and closes; the client just closes.
After step 8 the chat (:mod:`twisted_keyx.chat`) carries on over the same lines.
"""

import enum

from twisted_keyx.core.b64 import MalformedLine, base64_length, decode_item, encode_item  # noqa: F401
from twisted_keyx.core.peers import printable  # noqa: F401 (for the EKE logs)
# The user names and the failure line every password handshake shares.
from twisted_keyx.login.names import (  # noqa: F401
    FAILURE_REPLY,
    MAX_USER_NAME_BYTES,
    check_user_name,
    parse_user_name,
)

YES = b"yes"
NO = b"no"
KDF_NAME = b"scrypt"
#: Step 8's plaintext.
SUCCESS = b"Authentication success"

SALT_SIZE = 16
SESSION_KEY_SIZE = 32
CHALLENGE_SIZE = 16  # NC and NS
GCM_NONCE_SIZE = 12
GCM_TAG_SIZE = 16
RSA_BITS = 2048
RSA_PUBLIC_KEY_DER_SIZE = 294  # SubjectPublicKeyInfo of any RSA-2048 key, e = 65537
RSA_CIPHERTEXT_SIZE = RSA_BITS // 8


def box_size(plaintext_size):
    return GCM_NONCE_SIZE + plaintext_size + GCM_TAG_SIZE


#: Decoded size of the box in each step.
BOX_SIZES = {
    3: box_size(RSA_PUBLIC_KEY_DER_SIZE),
    4: box_size(RSA_CIPHERTEXT_SIZE),
    5: box_size(CHALLENGE_SIZE),
    6: box_size(2 * CHALLENGE_SIZE),
    7: box_size(CHALLENGE_SIZE),
    8: box_size(len(SUCCESS)),
}


def decode_box(line, step):
    return decode_item(line, BOX_SIZES[step])


def format_yes(salt, kdf):
    """Step 2 for a user the server (says it) knows."""
    return b" ".join(
        [YES, encode_item(salt), KDF_NAME, b"%d" % kdf.n, b"%d" % kdf.r, b"%d" % kdf.p]
    )


def _decimal(field):
    if not field.isdigit() or (field.startswith(b"0") and field != b"0") or len(field) > 10:
        raise MalformedLine("not a decimal number")
    return int(field)


def parse_yes(line):
    """Step 2 ``yes`` line: ``(salt, n, r, p)``, or :class:`MalformedLine`."""
    fields = line.split(b" ")
    if len(fields) != 6 or fields[0] != YES:
        raise MalformedLine("not yes <salt> scrypt <n> <r> <p>")
    if fields[2] != KDF_NAME:
        raise MalformedLine("unknown password KDF")
    salt = decode_item(fields[1], SALT_SIZE)
    n, r, p = (_decimal(field) for field in fields[3:])
    return salt, n, r, p


#: The longest legal step-2 line: yes, salt, scrypt and three 10-digit numbers.
MAX_ANSWER_LINE = len(YES) + 1 + base64_length(SALT_SIZE) + 1 + len(KDF_NAME) + 3 * 11


class EKEServerMessage(enum.Enum):
    """What a line from the server is, judged by its bytes alone."""

    YES = "yes"
    NO = "no"
    FAILED = "authentication failed"
    BOX = "a box"
    UNKNOWN = "something else"


def classify_server_message(line):
    if line == FAILURE_REPLY:
        return EKEServerMessage.FAILED
    if line == NO:
        return EKEServerMessage.NO
    if line.startswith(YES + b" "):
        return EKEServerMessage.YES
    if line and b" " not in line:
        return EKEServerMessage.BOX
    return EKEServerMessage.UNKNOWN


class EKEClientMessage(enum.Enum):
    """A line from the client: during the handshake its meaning is given by
    the step alone (a name or a box look alike), so there is one kind."""

    LINE = "a line"
