"""The OPAQUE servers a client has seen: the server's AKE public key,
learned from the envelope at each login, remembered per host so that a
change is warned about (docs/protocols.rst, OPAQUE).

The file (``$XDG_CONFIG_HOME/twisted-keyx/opaque_servers``, else
``~/.config/twisted-keyx/opaque_servers``, mode 0600) has one line per
server: ``HOST:PORT SHA256:<base64 of SHA-256 of the 32-byte key>``.
"""

import base64
import hashlib
import os

from twisted_keyx.core.fileutil import locked, read_regular, write_file_atomically

MAX_FILE_SIZE = 1 << 20


def server_key_fingerprint(public_key):
    """``SHA256:...`` of the server's 32-byte ristretto255 public key (safe to log)."""
    digest = hashlib.sha256(public_key).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def default_path():
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "twisted-keyx", "opaque_servers")


def _read(path):
    """(host:port -> fingerprint, whether the file was read whole and may be
    rewritten).  A named pipe or other file that is not a regular one is
    not waited on (:func:`~twisted_keyx.core.fileutil.read_regular`), nor
    replaced."""
    try:
        data = read_regular(path, MAX_FILE_SIZE + 1)
    except FileNotFoundError:
        return {}, True
    except OSError:
        return {}, False
    known = {}
    for line in data[:MAX_FILE_SIZE].decode("utf-8", "replace").splitlines():
        fields = line.split()
        if len(fields) == 2:
            known[fields[0]] = fields[1]
    return known, len(data) <= MAX_FILE_SIZE


def check_and_remember(host, port, public_key, path=None):
    """("new" | "same" | "changed", previous fingerprint or None); the
    file then holds this key for ``host:port``.  A file that cannot be
    written is not an error: the check against what was read still holds.
    The read-modify-write holds ``PATH.lock`` (:func:`~twisted_keyx.core.fileutil.locked`),
    so that clients run at once lose none of each other's entries; a file
    larger than ``MAX_FILE_SIZE`` is checked against its start and not
    rewritten."""
    path = path or default_path()
    where = f"{host}:{port}"
    fingerprint = server_key_fingerprint(public_key)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
        with locked(path):
            return _check_and_remember(path, where, fingerprint)
    except OSError:  # no folder or lock: check, and write if we can
        return _check_and_remember(path, where, fingerprint)


def _check_and_remember(path, where, fingerprint):
    known, whole = _read(path)
    previous = known.get(where)
    if previous == fingerprint:
        return "same", previous
    known[where] = fingerprint
    if whole:
        try:
            data = "".join(f"{k} {v}\n" for k, v in sorted(known.items())).encode("utf-8")
            write_file_atomically(path, data, mode=0o600)
        except OSError:
            pass
    return ("new" if previous is None else "changed"), previous
