"""What an EKE client first saw for a user at a server: the salt and the
scrypt cost of step 2, pinned as known_hosts pins host keys.

An EKE server shows the salt and the cost before the client proves anything.
A fake server that hands every victim one fixed salt builds one table of
scrypt(word, salt) and cracks each recorded step 3 in about a millisecond
(issue 24, item 13).  A client that pins what the real server showed at
its first successful login refuses another salt or cost at that server
afterwards, before deriving anything from the password.

The file (``$XDG_CONFIG_HOME/twisted-keyx/eke_salts`` beside known_hosts,
with its default-path rule; mode 0600) has one line per user and server::

    NAME USER SALT N R P

NAME is the server as known_hosts names it (``[host]:port``), USER the
user name (printable, no whitespace), SALT the salt in base64.  Lines that
do not parse are skipped.  Only the default file's folder is created.
"""

import base64
import binascii
import os
from dataclasses import dataclass

from twisted_keyx.core.fileutil import locked, read_regular
from twisted_keyx.core.handshakes import ClientHookError
from twisted_keyx.eke import crypto
from twisted_keyx.eke.handshake import PinnedSaltChanged
from twisted_keyx.trust import knownhosts, tofu

FILE_NAME = "eke_salts"
MAX_FILE_SIZE = 4 * 1024 * 1024


class PinError(ClientHookError):
    """The pin file cannot be read or written; ``str()`` says why."""


@dataclass(frozen=True)
class Pin:
    salt: bytes
    kdf: crypto.ScryptParameters
    path: str
    line: int

    @property
    def location(self):
        return f"{self.path}:{self.line}"


def default_path(environ=None):
    """``eke_salts`` in the client's folder, beside known_hosts and the
    known servers, by their rule (:func:`twisted_keyx.trust.tofu.default_path`)."""
    return tofu.default_path(FILE_NAME, environ)


def _parse(line):
    fields = line.split()
    if len(fields) != 6:
        return None
    try:
        salt = base64.b64decode(fields[2], validate=True)
        kdf = crypto.ScryptParameters(int(fields[3]), int(fields[4]), int(fields[5]))
    except (binascii.Error, ValueError):
        return None
    return fields[0].decode("utf-8", "replace"), fields[1].decode("utf-8", "replace"), salt, kdf


class EKEPins:
    """The pin file, read afresh by each call."""

    def __init__(self, path=None):
        self.default = path is None
        self.path = default_path() if path is None else path

    def _lines(self):
        try:
            data = read_regular(self.path, MAX_FILE_SIZE + 1)
        except FileNotFoundError:
            return []
        except OSError as e:
            raise PinError(f"cannot read {self.path}: {e.strerror or e}") from None
        if len(data) > MAX_FILE_SIZE:
            raise PinError(f"{self.path} is larger than {MAX_FILE_SIZE} bytes")
        return data.split(b"\n")

    def find(self, host, port, user):
        """The :class:`Pin` for ``user`` at the server, or None."""
        name = knownhosts.host_name(host, port)
        for number, line in enumerate(self._lines(), 1):
            parsed = _parse(line)
            if parsed is not None and parsed[0] == name and parsed[1] == user:
                return Pin(parsed[2], parsed[3], self.path, number)
        return None

    def record(self, host, port, user, salt, kdf):
        """Append the pin of ``user`` at the server.  Raises :class:`PinError`."""
        name = knownhosts.host_name(host, port)
        line = (f"{name} {user} {base64.b64encode(salt).decode('ascii')} "
                f"{kdf.n} {kdf.r} {kdf.p}\n").encode("utf-8")
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            if not os.path.isdir(directory):
                if not self.default:
                    raise PinError(f"cannot write {self.path}: no folder {directory}")
                os.makedirs(directory, mode=0o700)
                os.chmod(directory, 0o700)
            with locked(self.path):
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW
                             | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
                try:
                    os.write(fd, line)
                finally:
                    os.close(fd)
        except OSError as e:
            raise PinError(f"cannot write {self.path}: {e.strerror or e}") from None


def changed_text(name, user, pin, salt, kdf):
    """The refusal when a server shows another salt or cost than the pin."""
    return (f"REFUSED: {name} shows user {user} another salt or scrypt cost "
            f"({kdf}) than at the first login ({pin.kdf}, pinned in {pin.location}): "
            "a fake server collecting logins to crack offline, or the user was added "
            "again on the server (then delete that line). Nothing derived from the "
            "password was sent")


class ClientPin:
    """``keyx-client eke``'s pin of the salt and cost of ``user`` at the
    server (the EKE entry's :attr:`~twisted_keyx.core.handshakes.Handshake.client_pin`):
    found before the password is asked (:class:`PinError` if the file
    cannot be read), checked by the client machine at step 2, recorded at
    the first login that succeeded."""

    def __init__(self, host, port, user, pins=None):
        self.host, self.port, self.user = host, port, user
        self.pins = EKEPins() if pins is None else pins
        self.pin = self.pins.find(host, port, user)
        #: What goes to the client factory (``twisted_keyx.eke.entry.client_factory``).
        self.options = {"pinned": (self.pin.salt, self.pin.kdf) if self.pin is not None
                        else None}

    def logged_in(self, handshake):
        """Pinned at the first login that succeeded (a fake server cannot
        finish one, so what it shows is never pinned); a warning if the
        file cannot be written, else None."""
        if self.pin is not None:
            return None
        try:
            self.pins.record(self.host, self.port, self.user, handshake.salt, handshake.kdf)
        except PinError as e:
            return str(e)
        return None

    def refusal(self, error):
        """The refusal when the server showed another salt or cost than the
        pin (``error``, a :class:`~twisted_keyx.eke.handshake.PinnedSaltChanged`);
        None for any other failure."""
        if not isinstance(error, PinnedSaltChanged):
            return None
        return changed_text(knownhosts.host_name(self.host, self.port), self.user, self.pin,
                            error.salt, error.kdf)
