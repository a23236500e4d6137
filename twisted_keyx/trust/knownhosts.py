"""Trust on first use for ``keyx-client dh``, over an OpenSSH known_hosts file.

The file is OpenSSH's format (sshd(8), "SSH_KNOWN_HOSTS FILE FORMAT"), so
``ssh-keygen -F``, ``-R`` and ``-H`` work on it.  Each line is::

    [@revoked] HOSTS ssh-ed25519 BASE64-BLOB [comment]

where HOSTS is a comma-separated list of patterns (``*`` and ``?``
wildcards, ``!`` to exclude) or one hashed name ``|1|base64(salt)|base64(
HMAC-SHA1(salt, name))``.  A host is named ``host`` on port 22 and
``[host]:port`` on any other port, as OpenSSH names it; names are compared
in lower case.  Blank lines, ``#`` comments, lines that do not parse, other
key types and ``@cert-authority`` lines are skipped (twisted-keyx host keys
are plain Ed25519 keys).

:class:`KnownHosts` answers :meth:`~KnownHosts.check` with a
:class:`~twisted_keyx.trust.tofu.TrustCheck`: KNOWN, NEW, CHANGED or REVOKED
and the file and line that decided it (:mod:`twisted_keyx.trust.tofu` holds
what it shares with the OPAQUE known servers), and appends with
:meth:`~KnownHosts.record` (hashed names by default, as Debian's
``HashKnownHosts yes``), creating the file with mode 0600 and its folder
with mode 0700.  The texts a user sees (the first-contact question, the
changed-key refusal) are OpenSSH's, adapted; :func:`ask_first_contact` asks
with injectable input and output (:func:`open_terminal` gives the real
ones), and :func:`decide` holds the client's policy (docs/hostkey.rst, "The
client"), without I/O of its own.
"""

import base64
import binascii
import enum
import errno
import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from typing import Dict, Mapping, Optional

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from twisted_keyx.core.fileutil import read_regular
from twisted_keyx.trust import tofu
from twisted_keyx.trust.tofu import TrustCheck, TrustStatus
from twisted_keyx.trust.hostkey import (
    KEY_TYPE,
    KEY_TYPE_DISPLAY,
    host_key_fingerprint,
    public_key_blob,
)

#: OpenSSH names a host on this port without brackets and port.
SSH_PORT = 22
#: What OpenSSH writes and reads as a hashed host name (hostfile.c).
HASH_MAGIC = b"|1|"
_SALT_LENGTH = 20  # SHA-1's output length, as OpenSSH uses
#: A known_hosts file larger than this is refused rather than read.
MAX_FILE_SIZE = 16 * 1024 * 1024

# The replies OpenSSH's confirm() accepts and the line it asks again with
# (sshconnect.c): the first word of the answer, case-insensitive; an empty
# answer or the end of input is "no".
REASK = "Please type 'yes' or 'no': "
VERIFICATION_FAILED = "Host key verification failed."


class KnownHostsError(Exception):
    """The known_hosts file cannot be read or written; ``str()`` says why."""


#: The statuses a check answers with, by their short names.
KNOWN, NEW, CHANGED, REVOKED = (
    TrustStatus.KNOWN, TrustStatus.NEW, TrustStatus.CHANGED, TrustStatus.REVOKED)


def default_path(environ: Optional[Mapping[str, str]] = None) -> str:
    """``known_hosts`` in the client's folder (:func:`twisted_keyx.trust.tofu.config_folder`:
    ``$XDG_CONFIG_HOME/twisted-keyx``, else ``~/.config/twisted-keyx``)."""
    return tofu.default_path("known_hosts", environ)


def host_name(host: str, port: int) -> str:
    """The name a host has in known_hosts: ``host`` for port 22, else
    ``[host]:port`` (IPv6 addresses too: ``[::1]:7777``)."""
    host = host.lower()
    return host if port == SSH_PORT else f"[{host}]:{port}"


_STARS = re.compile(rb"\*+")


def _segment_at(segment, name, at):
    """Whether ``segment`` (no '*'; '?' is any one byte) matches ``name``
    at ``at`` exactly."""
    if at < 0 or at + len(segment) > len(name):
        return False
    if b"?" not in segment:
        return name.startswith(segment, at)
    return all(p == 63 or p == c for p, c in zip(segment, name[at:at + len(segment)]))


def _find_segment(segment, name, start, end):
    """The first position in ``name[start:end]`` where ``segment`` matches, or -1."""
    if b"?" not in segment:
        return name.find(segment, start, end)
    for at in range(start, end - len(segment) + 1):
        if _segment_at(segment, name, at):
            return at
    return -1


def _glob_match(pattern, name):
    """OpenSSH's match_pattern (match.c): '*' any run, '?' any one byte,
    all else literal.  Without backtracking: the parts between the stars
    are found leftmost, one after the other, so the time is linear in the
    pattern whatever the known_hosts file holds (a run of stars made a
    regular expression take exponential time)."""
    if b"*" not in pattern:
        return len(pattern) == len(name) and _segment_at(pattern, name, 0)
    pattern = _STARS.sub(b"*", pattern)
    if len(pattern) - pattern.count(b"*") > len(name):
        return False  # the bytes that are not stars cannot fit
    first, *middle, last = pattern.split(b"*")
    end = len(name) - len(last)
    if not (_segment_at(first, name, 0) and _segment_at(last, name, end)):
        return False
    at = len(first)
    for segment in middle:
        found = _find_segment(segment, name, at, end)
        if found < 0:
            return False
        at = found + len(segment)
    return True


#: At most this many patterns with a wildcard in the whole file: each is
#: matched in Python, about a microsecond each, where a line of millions of
#: them cost seconds a check.  Patterns without one are compared in one
#: pass whatever their number (:func:`_patterns_match`).
MAX_WILDCARD_PATTERNS = 10000

#: A pattern's start up to its first wildcard: one match per such pattern.
_WILDCARD_PATTERN = re.compile(rb"(?:^|(?<=,))[^,*?]*[*?]")


def _patterns_match(patterns, name):
    """OpenSSH's match_hostname: a match of a ``!pattern`` vetoes the line.
    Without wildcards, one pass in C over the list (a line may hold millions
    of names); with them, one glob each (their number is bounded by
    :data:`MAX_WILDCARD_PATTERNS`)."""
    patterns = patterns.lower()
    if b"*" not in patterns and b"?" not in patterns:
        listed = patterns.split(b",")
        return name in listed and b"!" + name not in listed
    matched = False
    for pattern in patterns.split(b","):
        negated = pattern.startswith(b"!")
        if negated:
            pattern = pattern[1:]
        if pattern and _glob_match(pattern, name):
            if negated:
                return False
            matched = True
    return matched


def _hash_host(salt, name):
    return hmac.new(salt, name, hashlib.sha1).digest()


def _hashed_match(field, name):
    parts = field[len(HASH_MAGIC):].split(b"|")
    if len(parts) != 2:
        return False
    try:
        salt = base64.b64decode(parts[0], validate=True)
        expected = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(_hash_host(salt, name), expected)


@dataclass(frozen=True)
class _Entry:
    line: int
    marker: bytes  # b"", b"@revoked" or b"@cert-authority"
    hosts: bytes
    key_type: bytes
    blob: bytes

    def matches_host(self, name):
        if self.hosts.startswith(HASH_MAGIC):
            return _hashed_match(self.hosts, name)
        return _patterns_match(self.hosts, name)


def _parse_line(number, line):
    fields = line.split()
    if not fields or fields[0].startswith(b"#"):
        return None
    marker = b""
    if fields[0].startswith(b"@"):
        marker, fields = fields[0], fields[1:]
    if len(fields) < 3:
        return None
    try:
        blob = base64.b64decode(fields[2], validate=True)
    except (binascii.Error, ValueError):
        return None
    return _Entry(number, marker, fields[0], fields[1], blob)


def _line_for(name, blob, hashed, salt=None):
    if hashed:
        salt = os.urandom(_SALT_LENGTH) if salt is None else salt
        field = b"%s%s|%s" % (HASH_MAGIC, base64.b64encode(salt),
                              base64.b64encode(_hash_host(salt, name)))
    else:
        field = name
    return b"%s %s %s\n" % (field, KEY_TYPE, base64.b64encode(blob))


class KnownHosts:
    """An OpenSSH known_hosts file, read afresh by each call (so that two
    clients and an editor can share it)."""

    def __init__(self, path: Optional[str] = None, hash_names: bool = True) -> None:
        #: Only the default folder is made when missing (as OpenSSH makes
        #: ~/.ssh); a folder the user named must exist (a typo in
        #: --known-hosts made folders anywhere, as root /nonexistent/dir).
        self.default = path is None
        self.path = default_path() if path is None else path
        self.hash_names = hash_names

    def _entries(self):
        try:
            # A named pipe with no writer is refused at once instead of
            # waited on (core.fileutil.open_regular).
            data = read_regular(self.path, MAX_FILE_SIZE + 1)
        except FileNotFoundError:
            return []
        except OSError as e:
            if e.errno == errno.EINVAL:
                raise KnownHostsError(
                    f"known hosts file {self.path} is not a regular file") from None
            raise KnownHostsError(f"cannot read known hosts file {self.path}: {e.strerror}") \
                from None
        if len(data) > MAX_FILE_SIZE:
            raise KnownHostsError(f"known hosts file {self.path} is larger than "
                                  f"{MAX_FILE_SIZE} bytes")
        entries = (_parse_line(number, line)
                   for number, line in enumerate(data.split(b"\n"), 1))
        entries = [entry for entry in entries if entry is not None]
        wildcards = 0
        for entry in entries:
            if b"*" in entry.hosts or b"?" in entry.hosts:
                wildcards += len(_WILDCARD_PATTERN.findall(entry.hosts))
                if wildcards > MAX_WILDCARD_PATTERNS:
                    raise KnownHostsError(
                        f"known hosts file {self.path} has more than {MAX_WILDCARD_PATTERNS} "
                        f"host patterns with * or ? (line {entry.line})")
        return entries

    def check(self, host: str, port: int, public_key: Ed25519PublicKey) -> TrustCheck:
        """A :class:`TrustCheck` for the Ed25519 ``public_key`` the server at
        ``host``, ``port`` proved it holds.

        REVOKED if an ``@revoked`` line for the host lists the key; KNOWN if
        an entry for the host has it; CHANGED if entries for the host have
        only other Ed25519 keys (the first of them is named); NEW otherwise.
        Raises :class:`KnownHostsError` if the file cannot be read.
        """
        name = host_name(host, port)
        encoded = name.encode("utf-8")
        blob = public_key_blob(public_key)
        found: Dict[TrustStatus, int] = {}  # status -> first line deciding it
        for entry in self._entries():
            if entry.key_type != KEY_TYPE or not entry.matches_host(encoded):
                continue
            if entry.marker == b"@revoked":
                if entry.blob == blob:
                    found.setdefault(REVOKED, entry.line)
            elif not entry.marker:  # (@cert-authority: no certificates here)
                found.setdefault(KNOWN if entry.blob == blob else CHANGED, entry.line)
        for status in (REVOKED, KNOWN, CHANGED):
            if status in found:
                return TrustCheck(status, name, self.path, found[status])
        return TrustCheck(NEW, name, self.path)

    def find(self, host: str, port: int) -> Optional[int]:
        """The first line holding an Ed25519 key for the host, or None: for a
        server that offered no signature, is it one we know?"""
        encoded = host_name(host, port).encode("utf-8")
        for entry in self._entries():
            if not entry.marker and entry.key_type == KEY_TYPE and entry.matches_host(encoded):
                return entry.line
        return None

    def record(self, host: str, port: int, public_key: Ed25519PublicKey) -> int:
        """Append an entry for the host and key; return its line number.

        The file is created with mode 0600 if it is missing (an existing
        file keeps its mode, as with OpenSSH); the default file's folder too,
        with mode 0700, but no other folder.  Raises :class:`KnownHostsError`.
        """
        name = host_name(host, port)
        line = _line_for(name.encode("utf-8"), public_key_blob(public_key), self.hash_names)
        directory = os.path.dirname(os.path.abspath(self.path))
        if not self.default and not os.path.isdir(directory):
            raise KnownHostsError(
                f"cannot write known hosts file {self.path}: no folder {directory} "
                "(only the default file's folder is created)")
        try:
            if not os.path.isdir(directory):
                os.makedirs(directory, mode=0o700)
                os.chmod(directory, 0o700)  # whatever the umask
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
        except OSError as e:
            raise KnownHostsError(
                f"cannot write known hosts file {self.path}: {e.strerror}") from None
        try:
            size = os.fstat(fd).st_size
            data = os.pread(fd, size, 0) if size else b""
            if data and not data.endswith(b"\n"):
                line = b"\n" + line  # end the last line first
            os.write(fd, line)
        except OSError as e:
            raise KnownHostsError(
                f"cannot write known hosts file {self.path}: {e.strerror}") from None
        finally:
            os.close(fd)
        return data.count(b"\n") + line.count(b"\n")


# The texts.  OpenSSH's wording (sshconnect.c), adapted where the situation
# is one OpenSSH does not have; each is returned, never printed here.

def first_contact_prompt(name, public_key):
    """The question for a NEW host; ``name`` as :func:`host_name` gives it."""
    return (f"The authenticity of host '{name}' can't be established.\n"
            f"{KEY_TYPE_DISPLAY} key fingerprint is {host_key_fingerprint(public_key)}.\n"
            "Are you sure you want to continue connecting (yes/no)? ")


def added_text(name):
    return (f"Warning: Permanently added '{name}' ({KEY_TYPE_DISPLAY}) "
            "to the list of known hosts.\n")


_RULE = "@" * 59


def _remove_hint(check):
    return (f"To trust the new key, remove the old one with: "
            f"ssh-keygen -R '{check.host}' -f {check.path}\n")


def changed_text(check, public_key):
    """The refusal for a CHANGED host key, naming the file and line."""
    return (
        f"{_RULE}\n"
        "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n"
        f"{_RULE}\n"
        "IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\n"
        "Someone could be eavesdropping on you right now (man-in-the-middle attack)!\n"
        "It is also possible that a host key has just been changed.\n"
        f"The fingerprint for the {KEY_TYPE_DISPLAY} key sent by the remote host is\n"
        f"{host_key_fingerprint(public_key)}.\n"
        "Please contact your system administrator.\n"
        f"Add correct host key in {check.path} to get rid of this message.\n"
        f"Offending {KEY_TYPE_DISPLAY} key in {check.location}\n"
        + _remove_hint(check)
        + f"Host key for {check.host} has changed and keyx-client refuses to connect.\n"
        f"{VERIFICATION_FAILED}\n"
    )


def revoked_text(check):
    return (
        f"{_RULE}\n"
        "@       WARNING: REVOKED HOST KEY DETECTED!               @\n"
        f"{_RULE}\n"
        f"The {KEY_TYPE_DISPLAY} host key for {check.host} is marked as revoked "
        f"in {check.location}.\n"
        "This could mean that a stolen key is being used to\n"
        "impersonate this host.\n"
        f"{VERIFICATION_FAILED}\n"
    )


def unsigned_known_host_text(name, path, line):
    """The refusal for a known host that offered no host key signature: a man
    in the middle may have stripped it (docs/hostkey.rst, "The client")."""
    return (
        f"{_RULE}\n"
        "@    WARNING: KNOWN HOST OFFERED NO HOST KEY SIGNATURE!   @\n"
        f"{_RULE}\n"
        "IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\n"
        "Someone could be eavesdropping on you right now (man-in-the-middle attack)!\n"
        f"The server at {name} did not prove its host key, but a key for it is\n"
        f"known in {path}:{line}.\n"
        "It is also possible that the server was started without its host key.\n"
        "Please contact your system administrator.\n"
        f"{VERIFICATION_FAILED}\n"
    )


def bad_signature_text(name, reason):
    """The refusal for a message 7 that is malformed or does not verify."""
    return f"host key verification failed for {name}: {reason}\n"


def no_terminal_text(name, public_key, path):
    """One line for a NEW host with no terminal to ask and no --accept-new."""
    return (f"host key verification failed: {name} is not in {path} and there is no "
            f"terminal to ask; if its {KEY_TYPE_DISPLAY} key fingerprint "
            f"{host_key_fingerprint(public_key)} is the server's, record it with --accept-new\n")


def unauthenticated_text(name):
    """The warning for an unknown server that offered no host key signature."""
    return (f"Warning: {name} offered no host key signature: this handshake is "
            "unauthenticated, and a man in the middle could be reading it "
            "(--require-host-key refuses such servers).\n")


def require_host_key_text(name):
    return (f"host key verification failed: {name} offered no host key signature "
            "and --require-host-key was given\n")


def confirm(prompt, read_line, write):
    """Ask ``prompt`` until the answer is yes or no, as OpenSSH's confirm().

    ``read_line()`` returns one line of input, or ``""`` at its end;
    ``write(text)`` shows text.  The first word of the answer counts,
    case-insensitively; an empty answer or the end of input is no.
    """
    write(prompt)
    while True:
        answer = read_line()
        words = answer.split()
        word = words[0].lower() if words else ""
        if word in ("", "no"):
            return False
        if word == "yes":
            return True
        write(REASK)


def ask_first_contact(name, public_key, read_line, write):
    """Ask whether to trust a NEW host; True to go on (then :meth:`KnownHosts.record`)."""
    return confirm(first_contact_prompt(name, public_key), read_line, write)


class Terminal:
    """The controlling terminal, where OpenSSH asks (``/dev/tty``, not stdin
    or stdout, so that a pipe can neither answer nor swallow the question)."""

    def __init__(self, fd):
        self._fd = fd

    def read_line(self):
        """One line as typed, or ``""`` at the end of input (Ctrl-D)."""
        data = b""
        while not data.endswith(b"\n"):
            chunk = os.read(self._fd, 1024)
            if not chunk:
                break
            data += chunk
        return data.decode("utf-8", "replace")

    def write(self, text):
        data = text.encode("utf-8")
        while data:
            data = data[os.write(self._fd, data):]

    def close(self):
        os.close(self._fd)


def open_terminal(path="/dev/tty"):
    """A :class:`Terminal`, or None when the process has none (a script,
    CI): then a NEW host is refused unless --accept-new."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return None
    if not os.isatty(fd):
        os.close(fd)
        return None
    return Terminal(fd)


class Action(enum.Enum):
    PROCEED = "proceed"          # a known host proved its key
    RECORD = "record"            # new host, --accept-new: record, print added_text, proceed
    ASK = "ask"                  # new host on a terminal: ask_first_contact, then RECORD or refuse
    WARN = "warn"                # unknown host offered no signature: print text, proceed
    REFUSE = "refuse"            # print text, exit 1


@dataclass(frozen=True)
class HostKeyDecision:
    action: Action
    text: str = ""


def decide(known_hosts: KnownHosts, host: str, port: int,
           public_key: Optional[Ed25519PublicKey], accept_new: bool = False,
           require_host_key: bool = False, interactive: bool = False) -> "HostKeyDecision":
    """The client's policy after a handshake, in one place (docs/hostkey.rst,
    "The client").  ``public_key`` is the key whose signature verified, or
    None if the server offered no signature.  Reads the file, writes nothing.

    A bad signature is refused before this is called
    (:func:`bad_signature_text`).
    """
    name = host_name(host, port)
    if public_key is None:
        line = known_hosts.find(host, port)
        if line is not None:
            return HostKeyDecision(Action.REFUSE,
                                   unsigned_known_host_text(name, known_hosts.path, line))
        if require_host_key:
            return HostKeyDecision(Action.REFUSE, require_host_key_text(name))
        return HostKeyDecision(Action.WARN, unauthenticated_text(name))
    check = known_hosts.check(host, port, public_key)
    if check.status is KNOWN:
        return HostKeyDecision(Action.PROCEED)
    if check.status is CHANGED:
        return HostKeyDecision(Action.REFUSE, changed_text(check, public_key))
    if check.status is REVOKED:
        return HostKeyDecision(Action.REFUSE, revoked_text(check))
    if accept_new:
        return HostKeyDecision(Action.RECORD, added_text(name))
    if interactive:
        return HostKeyDecision(Action.ASK, first_contact_prompt(name, public_key))
    return HostKeyDecision(Action.REFUSE, no_terminal_text(name, public_key, known_hosts.path))
