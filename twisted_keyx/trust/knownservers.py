"""The OPAQUE servers a client has seen: the server's AKE public key,
learned from the envelope at each login, remembered per host so that a
change is warned about (docs/protocols.rst, OPAQUE).

The file (``opaque_servers`` in the client's folder, as known_hosts:
:func:`twisted_keyx.trust.tofu.config_folder`; mode 0600) has one line per
server: ``HOST:PORT SHA256:<base64 of SHA-256 of the 32-byte key>``.  A
check answers with :mod:`twisted_keyx.trust.tofu`'s
:class:`~twisted_keyx.trust.tofu.TrustCheck`, as known_hosts does.
"""

import base64
import hashlib
import os
from typing import Mapping, Optional

from twisted_keyx.core.fileutil import locked, write_file_atomically
from twisted_keyx.trust import tofu
from twisted_keyx.trust.tofu import TrustCheck, TrustStatus

MAX_FILE_SIZE = 1 << 20


def server_key_fingerprint(public_key: bytes) -> str:
    """``SHA256:...`` of the server's 32-byte ristretto255 public key (safe to log)."""
    digest = hashlib.sha256(public_key).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def default_path(environ: Optional[Mapping[str, str]] = None) -> str:
    """``opaque_servers`` in the client's folder, by the same rule as
    known_hosts (:func:`twisted_keyx.trust.tofu.config_folder`)."""
    return tofu.default_path("opaque_servers", environ)


def _read(path):
    """(host:port -> fingerprint, whether the file was read whole)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_FILE_SIZE + 1)
    except OSError:
        return {}, True
    known = {}
    for line in data[:MAX_FILE_SIZE].decode("utf-8", "replace").splitlines():
        fields = line.split()
        if len(fields) == 2:
            known[fields[0]] = fields[1]
    return known, len(data) <= MAX_FILE_SIZE


class KnownServers:
    """The known servers file at ``path`` (:func:`default_path` if None),
    read afresh by each check, as :class:`~twisted_keyx.trust.knownhosts.KnownHosts`."""

    def __init__(self, path: Optional[str] = None) -> None:
        self.path = default_path() if path is None else path

    def check_and_record(self, host: str, port: int, public_key: bytes) -> TrustCheck:
        """A :class:`~twisted_keyx.trust.tofu.TrustCheck` (KNOWN, NEW or
        CHANGED, with the fingerprint held before in ``previous``); the
        file then holds this key for ``host:port``.  A file that cannot be
        written is not an error: the check against what was read still
        holds.  The read-modify-write holds ``PATH.lock``
        (:func:`~twisted_keyx.core.fileutil.locked`), so that clients run at
        once lose none of each other's entries; a file larger than
        ``MAX_FILE_SIZE`` is checked against its start and not rewritten."""
        path = self.path
        where = f"{host}:{port}"
        fingerprint = server_key_fingerprint(public_key)
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o700, exist_ok=True)
            with locked(path):
                return _check_and_record(path, where, fingerprint)
        except OSError:  # no folder or lock: check, and write if we can
            return _check_and_record(path, where, fingerprint)


def _check_and_record(path, where, fingerprint):
    known, whole = _read(path)
    previous = known.get(where)
    if previous == fingerprint:
        return TrustCheck(TrustStatus.KNOWN, where, path, previous=previous)
    known[where] = fingerprint
    if whole:
        try:
            data = "".join(f"{k} {v}\n" for k, v in sorted(known.items())).encode("utf-8")
            write_file_atomically(path, data, mode=0o600)
        except OSError:
            pass
    status = TrustStatus.NEW if previous is None else TrustStatus.CHANGED
    return TrustCheck(status, where, path, previous=previous)
