"""Server host keys: Ed25519 keys in OpenSSH's file formats, and fingerprints.

A host key file is an unencrypted OpenSSH private key ("openssh-key-v1",
``-----BEGIN OPENSSH PRIVATE KEY-----``), the format ``ssh-keygen -t ed25519
-N ''`` writes, so a key made with ssh-keygen works as well as one made with
``keyx-admin hostkey``.  Beside it, ``FILE.pub`` holds the public key as one
OpenSSH line (``ssh-ed25519 AAAA... comment``).

Public keys travel and are stored as the SSH wire blob of RFC 8709 section 4:
``string "ssh-ed25519" || string key`` (RFC 4251 section 5 strings: a 4-byte
big-endian length, then the bytes).  The fingerprint is OpenSSH's:
``SHA256:`` and the unpadded base64 of SHA-256 of that blob, what
``ssh-keygen -lf`` prints.  See docs/hostkey.rst.

Loading is as strict as sshd with StrictModes: a file that is missing,
unreadable, accessible by group or others, encrypted, or not Ed25519 is
refused with a :class:`HostKeyError` whose ``str()`` says which, in a line a
user can act on.  Nothing here logs or prints the private key.
"""

import base64
import hashlib
import os
import socket
import stat
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from twisted_keyx.groups import asn1
from twisted_keyx.core.fileutil import create_file_exclusively, read_at_most, write_file_atomically

#: The SSH name of the only host key type (RFC 8709 section 4).
KEY_TYPE = b"ssh-ed25519"
#: How ssh-keygen names the type in fingerprints and prompts.
KEY_TYPE_DISPLAY = "ED25519"
#: An Ed25519 public key is 32 bytes, a signature 64 (RFC 8032 section 5.1).
PUBLIC_KEY_LENGTH = 32
SIGNATURE_LENGTH = 64
#: ``string "ssh-ed25519" || string key``: 4 + 11 + 4 + 32 bytes.
BLOB_LENGTH = 4 + len(KEY_TYPE) + 4 + PUBLIC_KEY_LENGTH

#: An OpenSSH Ed25519 private key file is about 400 bytes (more with a long
#: comment); anything much larger is not one, and is not read whole.
MAX_KEY_FILE_SIZE = 16 * 1024

_PEM_LABEL = b"OPENSSH PRIVATE KEY"
_AUTH_MAGIC = b"openssh-key-v1\0"  # PROTOCOL.key in OpenSSH's sources

MAKE_ONE = "make one with: keyx-admin hostkey -o {path}"


class HostKeyError(Exception):
    """A host key file cannot be used; ``str()`` is a sentence for the user."""


class InvalidHostKey(ValueError):
    """Bytes from a peer are not an Ed25519 public key blob; ``str()`` says why."""


def ssh_string(data):
    """RFC 4251 section 5 ``string``: a uint32 length, big-endian, then the bytes."""
    return len(data).to_bytes(4, "big") + data


def read_ssh_string(data, pos):
    """Read one ``string`` at ``data[pos:]``; return ``(value, next position)``.

    Raises ValueError if ``data`` ends early.
    """
    if len(data) - pos < 4:
        raise ValueError("truncated length")
    length = int.from_bytes(data[pos:pos + 4], "big")
    start = pos + 4
    if len(data) - start < length:
        raise ValueError("truncated string")
    return data[start:start + length], start + length


def public_key_blob(public_key: ed25519.Ed25519PublicKey) -> bytes:
    """The SSH wire blob of an Ed25519 public key (RFC 8709 section 4)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return ssh_string(KEY_TYPE) + ssh_string(raw)


def public_key_from_blob(blob):
    """The Ed25519 public key a blob holds; raises :class:`InvalidHostKey`.

    Exactly ``string "ssh-ed25519" || string 32 bytes``, nothing after.
    """
    blob = bytes(blob)
    try:
        key_type, pos = read_ssh_string(blob, 0)
        raw, pos = read_ssh_string(blob, pos)
    except ValueError:
        raise InvalidHostKey("host key blob is truncated") from None
    if key_type != KEY_TYPE:
        raise InvalidHostKey(f"host key type {_printable(key_type)!r} is not ssh-ed25519")
    if len(raw) != PUBLIC_KEY_LENGTH or pos != len(blob):
        raise InvalidHostKey("host key blob has the wrong length for Ed25519")
    if _weak_point(raw):
        raise InvalidHostKey("host key is not a valid Ed25519 key (a point of small order "
                             "or not canonically encoded)")
    return ed25519.Ed25519PublicKey.from_public_bytes(raw)


_FIELD_PRIME = 2**255 - 19
#: The y-coordinates of Ed25519's eight points of small order (the identity,
#: order 2, 4 and 8), as libsodium's ``ge25519_has_small_order`` lists them.
_SMALL_ORDER_Y = frozenset(int.from_bytes(bytes.fromhex(y), "little") for y in (
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
))


def _weak_point(raw):
    """Whether a 32-byte Ed25519 public key is of small order or not
    canonical (y >= p, RFC 8032 section 5.1.3).  OpenSSL verifies signatures
    under such keys, and under the identity point R = identity, S = 0
    verifies every message: a key anyone can sign with
    (docs/hostkey.rst, "The client")."""
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)
    return y >= _FIELD_PRIME or y in _SMALL_ORDER_Y


def host_key_fingerprint(public_key: ed25519.Ed25519PublicKey) -> str:
    """``SHA256:`` + unpadded base64 of SHA-256 of the blob, as ``ssh-keygen -lf``."""
    digest = hashlib.sha256(public_key_blob(public_key)).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def public_key_line(public_key, comment=None):
    """One line of an OpenSSH ``.pub`` file or ``authorized_keys``: type, base64
    blob, and a comment if given; with its newline."""
    fields = [KEY_TYPE, base64.b64encode(public_key_blob(public_key))]
    if comment:
        fields.append(comment.encode("utf-8"))
    return b" ".join(fields) + b"\n"


def generate_private_key():
    return ed25519.Ed25519PrivateKey.generate()


def private_key_file_bytes(private_key):
    """The key in OpenSSH's private key format, unencrypted."""
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )


def default_comment():
    """What ssh-keygen would put in a host key's comment: ``root@HOSTNAME``
    there; ``keyx@HOSTNAME`` here (the comment is only in ``FILE.pub``)."""
    return f"keyx@{socket.gethostname()}"


@dataclass(frozen=True)
class HostKey:
    """A loaded host key: the private key and what is derived from it once."""

    private_key: ed25519.Ed25519PrivateKey
    public_key: ed25519.Ed25519PublicKey
    #: The public key's SSH wire blob (what the server sends and signs).
    blob: bytes
    #: ``SHA256:...``, as ``ssh-keygen -lf`` prints it.
    fingerprint: str

    @classmethod
    def from_private_key(cls, private_key):
        public_key = private_key.public_key()
        return cls(private_key, public_key, public_key_blob(public_key),
                   host_key_fingerprint(public_key))

    def __repr__(self):
        # Never the private key, even in a traceback.
        return f"<HostKey {KEY_TYPE_DISPLAY} {self.fingerprint}>"


def _write_public_key(path, host_key, comment):
    public_path = path + ".pub"
    try:
        write_file_atomically(public_path, public_key_line(host_key.public_key, comment),
                              mode=0o644)
    except OSError as e:
        raise HostKeyError(f"wrote host key {path} but cannot write {public_path}: "
                           f"{e.strerror}") from None


def write_host_key(path, private_key, comment=None):
    """Write ``path`` (mode 0600) and ``path.pub`` (mode 0644), each
    atomically, replacing what is there; return the :class:`HostKey`.

    The private file goes first, so a ``.pub`` never names a key that was not
    written.  Raises :class:`HostKeyError` naming the file that failed.
    """
    comment = default_comment() if comment is None else comment
    host_key = HostKey.from_private_key(private_key)
    try:
        write_file_atomically(path, private_key_file_bytes(private_key), mode=0o600)
    except OSError as e:
        raise HostKeyError(f"cannot write host key {path}: {e.strerror}") from None
    _write_public_key(path, host_key, comment)
    return host_key


def load_or_create_host_key(path, comment=None):
    """``(HostKey, created)``: the key in ``path``, made first if the file
    does not exist (the daemon's first start, as sshd's host keys).

    Creating never replaces a file: the key is written to a temporary file
    and hard-linked to ``path``, which fails if another process made ``path``
    in between; that key is then loaded.  Raises :class:`HostKeyError`.
    """
    if os.path.lexists(path):
        return load_host_key(path), False
    private_key = generate_private_key()
    try:
        return create_host_key(path, private_key, comment), True
    except FileExistsError:
        return load_host_key(path), False


def create_host_key(path, private_key, comment=None):
    """Write ``private_key`` to ``path`` (mode 0600), which must not exist,
    and its public key to ``path.pub``; return the :class:`HostKey`.
    Raises FileExistsError if ``path`` exists (it is not replaced), else
    :class:`HostKeyError`."""
    comment = default_comment() if comment is None else comment
    try:
        create_file_exclusively(path, private_key_file_bytes(private_key))
    except FileExistsError:
        raise
    except OSError as e:
        raise HostKeyError(f"cannot create host key {path}: {e.strerror}") from None
    host_key = HostKey.from_private_key(private_key)
    _write_public_key(path, host_key, comment)
    return host_key


def _printable(data):
    return data.decode("ascii", "replace")


def _key_type_of(data, path):
    """The key type and cipher an openssh-key-v1 file declares (PROTOCOL.key):
    magic, string ciphername, string kdfname, string kdfoptions, uint32 number
    of keys, string public key (whose first field is the type)."""
    if data.lstrip().startswith(KEY_TYPE + b" "):
        raise HostKeyError(f"host key {path} is a public key; give the private key file "
                           "(the one without .pub)")
    not_openssh = HostKeyError(
        f"host key {path} is not an OpenSSH private key; " + MAKE_ONE.format(path=path))
    try:
        _, raw = asn1.pem_decode(data, (_PEM_LABEL,))
    except asn1.DecodeError:
        raise not_openssh from None
    if not raw.startswith(_AUTH_MAGIC):
        raise not_openssh
    try:
        pos = len(_AUTH_MAGIC)
        cipher, pos = read_ssh_string(raw, pos)
        _kdf, pos = read_ssh_string(raw, pos)
        _kdf_options, pos = read_ssh_string(raw, pos)
        count = int.from_bytes(raw[pos:pos + 4], "big")
        public, pos = read_ssh_string(raw, pos + 4)
        key_type, _ = read_ssh_string(public, 0)
    except ValueError:
        raise not_openssh from None
    if count != 1:
        raise HostKeyError(f"host key {path} holds {count} keys, not one")
    return key_type, cipher


def parse_host_key(data, path="<host key>"):
    """A :class:`HostKey` from the bytes of an OpenSSH private key file.

    Raises :class:`HostKeyError` for another format, another key type, or an
    encrypted key (a daemon has nobody to ask for the passphrase).
    """
    key_type, cipher = _key_type_of(data, path)
    if key_type != KEY_TYPE:
        raise HostKeyError(
            f"host key {path} is an {_printable(key_type)} key; host keys are Ed25519: "
            + MAKE_ONE.format(path=path))
    if cipher != b"none":
        raise HostKeyError(
            f"host key {path} is encrypted with a passphrase; a daemon cannot ask for it. "
            f"Remove it with: ssh-keygen -p -N '' -f {path}")
    try:
        private_key = serialization.load_ssh_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise HostKeyError(f"host key {path} is damaged: it cannot be loaded") from None
    if not isinstance(private_key, ed25519.Ed25519PrivateKey):  # declared type lied
        raise HostKeyError(f"host key {path} is not an Ed25519 key")
    return HostKey.from_private_key(private_key)


def load_host_key(path):
    """Read and check a host key file; return a :class:`HostKey`.

    Refuses (:class:`HostKeyError`), as sshd's StrictModes does, a file that
    group or others may access: ``chmod 600`` it.  The mode is checked on the
    open file, so a rename in between cannot slip another file in.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise HostKeyError(f"host key {path} does not exist; " + MAKE_ONE.format(path=path)) \
            from None
    except OSError as e:
        raise HostKeyError(f"cannot read host key {path}: {e.strerror}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise HostKeyError(f"host key {path} is a directory")
        if not stat.S_ISREG(info.st_mode):
            raise HostKeyError(f"host key {path} is not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise HostKeyError(
                f"host key {path} is accessible by group or others (mode {mode:04o}); "
                f"it must be private to its owner: chmod 600 {path}")
        data = read_at_most(fd, MAX_KEY_FILE_SIZE + 1)
    except OSError as e:
        raise HostKeyError(f"cannot read host key {path}: {e.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_KEY_FILE_SIZE:
        raise HostKeyError(f"host key {path} is not an OpenSSH private key "
                           f"(larger than {MAX_KEY_FILE_SIZE} bytes)")
    return parse_host_key(data, path)
