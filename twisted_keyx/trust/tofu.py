"""Trust on first use: what the client's two stores of server keys share.

``keyx-client dh`` keeps the host keys it trusts in an OpenSSH known_hosts
file (:mod:`twisted_keyx.trust.knownhosts`); ``keyx-client opaque`` keeps
the OPAQUE server keys it has seen (:mod:`twisted_keyx.trust.knownservers`).
Both files live in one folder, found by one rule (:func:`default_path`), and
both answer a check with one result type (:class:`TrustCheck`, whose status
is a :class:`TrustStatus`), so the client reads them alike
(docs/hostkey.rst, "The client").
"""

import enum
import os
from dataclasses import dataclass
from typing import Mapping, Optional

#: The folder under the user's configuration folder.
CONFIG_FOLDER = "twisted-keyx"


class TrustStatus(enum.Enum):
    """What a store of trusted keys says about the key a server showed."""

    #: The store holds this key for this server.
    KNOWN = "known"
    #: The store holds no key for this server.
    NEW = "new"
    #: The store holds another key for this server.
    CHANGED = "changed"
    #: The store marks this key as revoked (known_hosts' ``@revoked``).
    REVOKED = "revoked"


@dataclass(frozen=True)
class TrustCheck:
    """What a store says about a server's key.

    ``host`` is the server's name in the store (``[host]:port`` in
    known_hosts, ``host:port`` in the known servers); ``path`` is the file.
    ``line`` (1-based), where the store has lines to name, is the entry
    that decided: the matching entry (KNOWN), one holding another key
    (CHANGED), or the ``@revoked`` entry (REVOKED); None for NEW.
    ``previous`` is the fingerprint the store held before, where it keeps
    fingerprints (the known servers), for KNOWN and CHANGED.
    """

    status: TrustStatus
    host: str
    path: str
    line: Optional[int] = None
    previous: Optional[str] = None

    @property
    def location(self) -> str:
        """``PATH:LINE``, as OpenSSH prints an offending entry."""
        return f"{self.path}:{self.line}"


def config_folder(environ: Optional[Mapping[str, str]] = None) -> str:
    """``$XDG_CONFIG_HOME/twisted-keyx``, where XDG_CONFIG_HOME defaults to
    ``~/.config`` when unset, empty or relative (the XDG Base Directory
    Specification: "If an implementation encounters a relative path in any
    of these variables it should consider the path invalid and ignore
    it")."""
    environ = os.environ if environ is None else environ
    config = environ.get("XDG_CONFIG_HOME", "")
    if not os.path.isabs(config):
        config = os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(config, CONFIG_FOLDER)


def default_path(name: str, environ: Optional[Mapping[str, str]] = None) -> str:
    """The file ``name`` in :func:`config_folder`."""
    return os.path.join(config_folder(environ), name)
