"""The EKE user file: for each user the salt, the scrypt parameters and the
password key, never the password.

Format (JSON, UTF-8, written with mode 0600)::

    {"version": 1,
     "users": {"alice": {"salt": "<16 bytes, base64>",
                         "kdf": {"name": "scrypt", "n": 32768, "r": 8, "p": 1},
                         "key": "<32 bytes, base64>"}}}

Each user's object is a record of its password scheme
(:mod:`twisted_keyx.core.schemes`): one with a ``"scheme"`` field is that
scheme's (``"opaque"``: :mod:`twisted_keyx.opaque.scheme`), one without is
EKE's, as above.

The key is scrypt(password, salt): for EKE it is *password-equivalent*, since
the server needs it to run E_pw, anyone who reads this file can log in as any
user in it (but does not learn the passwords themselves).  Keep it private.

``keyx-admin`` edits the file (:func:`read_users`, :func:`write_users`); the
daemon reads it through :class:`UserFile`, the first
:class:`~twisted_keyx.core.interfaces.IUserStore`, which notices when it
changes and parses it again off the reactor thread.
"""

import contextlib
import json
import os
import re
from itertools import accumulate

from twisted.internet import defer, threads
from twisted.logger import Logger
from zope.interface import implementer

from twisted_keyx.core import schemes
from twisted_keyx.core.interfaces import IUserStore, StoreConflict, StoreUnavailable
from twisted_keyx.eke import messages
from twisted_keyx.eke.messages import MalformedLine
# EKE's records, from before the schemes: imported from here by older code.
from twisted_keyx.eke.records import (  # noqa: F401
    DecoyUsers,
    UserRecordError,
    UserRecord,
    eke_fields,
    eke_record,
    exact_keys,
    new_user,
)
from twisted_keyx.core.fileutil import (
    exposure_warning,
    locked,
    open_regular,
    read_regular,
    write_file_atomically,
)

FORMAT_VERSION = 1
DEFAULT_USER_FILE = "keyx-users.json"

#: The format nests 4 levels deep (top level, users, a user, its kdf).
#: json.loads recurses once per level, so a hostile file nested 100,000
#: deep would raise RecursionError: the depth is checked before it parses.
MAX_DEPTH = 16
#: About 40,000 users; the daemon reads and parses the file whole, in a
#: thread, when it changes.
MAX_FILE_SIZE = 8 << 20


class UserFileError(Exception):
    """The user file cannot be read or is not in the format above."""


def _no_duplicates(pairs):
    result = {}
    for key, value in pairs:
        if key in result:
            raise UserFileError(f"{key!r} appears twice")
        result[key] = value
    return result


def _record(name, entry):
    """A user's object: the record of its scheme (:mod:`twisted_keyx.core.schemes`)."""
    where = f"user {name!r}"
    try:
        messages.check_user_name(name)
    except MalformedLine as e:
        raise UserFileError(f"{where}: {e}") from None
    if not isinstance(entry, dict):
        raise UserFileError(f"{where}: not an object")
    try:
        return schemes.parse_record(name, entry)
    except UserRecordError as e:  # says which user and field already
        raise UserFileError(str(e)) from None
    except ValueError as e:
        raise UserFileError(f"{where}: {e}") from None


# Linear-time steps only (no backtracking), for any file up to MAX_FILE_SIZE:
# drop each escape (a backslash and the next character, RFC 8259 section 7),
# then each string, then everything that is not a bracket.
_ESCAPE = re.compile(r"\\.", re.DOTALL)
_STRING = re.compile(r'"[^"]*"')
_NOT_A_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_CHANGE = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def _check_depth(text):
    """Refuse ``text`` nested deeper than :data:`MAX_DEPTH`, without recursion."""
    brackets = _NOT_A_BRACKET.sub("", _STRING.sub("", _ESCAPE.sub("", text)))
    depths = accumulate(map(_DEPTH_CHANGE.__getitem__, brackets.encode()))
    if any(map(MAX_DEPTH.__lt__, depths)):  # stops at the first level too deep
        raise UserFileError(f"nested more than {MAX_DEPTH} levels deep")


def parse_users(data):
    """``{name: UserRecord}`` from the file's bytes, or :class:`UserFileError`."""
    if len(data) > MAX_FILE_SIZE:
        raise UserFileError(f"larger than {MAX_FILE_SIZE} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserFileError("not UTF-8") from None
    _check_depth(text)
    try:
        document = json.loads(text, object_pairs_hook=_no_duplicates)
    except ValueError as e:
        raise UserFileError(f"not JSON: {e}") from None
    except RecursionError:  # not expected after _check_depth; never a traceback
        raise UserFileError(f"nested more than {MAX_DEPTH} levels deep") from None
    exact_keys(document, ("version", "users"), "top level", UserFileError)
    if type(document["version"]) is not int or document["version"] != FORMAT_VERSION:
        raise UserFileError(f"unsupported version {document['version']!r}")
    if not isinstance(document["users"], dict):
        raise UserFileError("users: not an object")
    return {name: _record(name, entry) for name, entry in document["users"].items()}


def serialize_users(users):
    document = {
        "version": FORMAT_VERSION,
        "users": {
            name: schemes.serialise_record(record) for name, record in sorted(users.items())
        },
    }
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _describe(error):
    return error.strerror or str(error)


def read_users(path, missing_ok=False):
    """Read the file; a missing file is ``{}`` if ``missing_ok``."""
    try:
        data = read_regular(path, MAX_FILE_SIZE + 1)
    except FileNotFoundError:
        if missing_ok:
            return {}
        raise UserFileError(f"cannot read {path}: no such file") from None
    except OSError as e:
        raise UserFileError(f"cannot read {path}: {_describe(e)}") from None
    try:
        return parse_users(data)
    except UserFileError as e:
        raise UserFileError(f"{path}: {e}") from None


def write_users(path, users):
    """Replace the file atomically (temporary file, fsync, rename), mode
    0600; a file larger than :data:`MAX_FILE_SIZE`, which no reader would
    accept, is not written (UserFileError: the file stays as it was)."""
    data = serialize_users(users)
    if len(data) > MAX_FILE_SIZE:
        raise UserFileError(f"cannot write {path}: {len(users)} users take {len(data)} bytes, "
                            f"over the {MAX_FILE_SIZE} a user file may have (the file is left "
                            "as it was; keep the users in a --store database)")
    try:
        write_file_atomically(path, data, mode=0o600)
    except OSError as e:
        raise UserFileError(f"cannot write {path}: {_describe(e)}") from None


def user_file_warning(path):
    """A warning if group or others may read the user file, else None: its
    keys are password-equivalent."""
    return exposure_warning(path, ": its keys log in without the passwords")


@contextlib.contextmanager
def editing_users(path, missing_ok=False):
    """``with editing_users(path) as users:`` change the dict ``users``; it is
    written back when the block ends without an exception.  The whole
    read-modify-write holds the file's lock (:func:`~twisted_keyx.core.fileutil.locked`),
    so two ``keyx-admin`` runs at once cannot lose each other's change."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(locked(path))
        except OSError as e:
            raise UserFileError(f"cannot lock {path}.lock: {_describe(e)}") from None
        users = read_users(path, missing_ok=missing_ok)
        yield users
        write_users(path, users)


def _signature(st):
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _read_file(path, known):
    """Read and parse the user file at ``path`` unless its signature is
    ``known``: one of ``("unchanged",)``, ``("missing",)``,
    ``("unreadable", errno, reason)``, ``("broken", signature, reason)``,
    ``("read", signature, users)``.  No shared state: it runs off the
    reactor thread (a file of 40,000 users takes about a second to parse)."""
    try:
        # A named pipe is refused, not waited on (core.fileutil.open_regular).
        with os.fdopen(open_regular(path), "rb") as f:
            signature = _signature(os.fstat(f.fileno()))
            if signature == known:
                return ("unchanged",)
            data = f.read(MAX_FILE_SIZE + 1)
    except FileNotFoundError:
        return ("missing",)
    except OSError as e:
        return ("unreadable", e.errno, f"cannot read {path}: {_describe(e)}")
    try:
        return ("read", signature, parse_users(data))
    except UserFileError as e:
        return ("broken", signature, f"{path}: {e}")


def run_now(function, *args):
    """Run ``function`` here and now, its outcome a Deferred (tests, tools)."""
    return defer.maybeDeferred(function, *args)


@implementer(IUserStore)
class UserFile:
    """The daemon's user file, an :class:`~twisted_keyx.core.interfaces.IUserStore`.

    Every :meth:`lookup` stats the file (one system call, on the reactor
    thread) and, when it changed, reads and parses it again in a thread
    (``run_in_thread``, :func:`~twisted.internet.threads.deferToThread` by
    default): lookups meanwhile wait for the same reload, and the reactor
    serves every other connection.  So ``keyx-admin`` edits take effect
    without a restart.  A file that has become unreadable or broken is
    logged once and the users loaded before are kept; a file that has
    disappeared means no users.  Writes (:meth:`add`, :meth:`replace`,
    :meth:`remove`) hold the file's lock (:func:`editing_users`), in a
    thread too; one that cannot be made fails with
    :class:`~twisted_keyx.core.interfaces.StoreUnavailable`."""

    log = Logger()
    _MISSING = "missing"

    def __init__(self, path, run_in_thread=None):
        self.path = path
        #: The records loaded, by user name.
        self.loaded = {}
        self._signature = None
        self._run = run_in_thread if run_in_thread is not None else threads.deferToThread
        #: The reload under way, and the lookups waiting for it.
        self._reloading = None

    def load(self):
        """First load, at start-up: raise :class:`UserFileError` if the file
        exists and is unusable.  Return the number of users, or None if the
        file does not exist."""
        self._apply(_read_file(self.path, self._signature), report=False)
        return None if self._signature == self._MISSING else len(self.loaded)

    def loaded_count(self, scheme):
        """How many users of ``scheme`` were loaded (at once, for start-up lines)."""
        return sum(1 for record in self.loaded.values() if record.scheme == scheme)

    # --- IUserStore ------------------------------------------------------------

    def lookup(self, name, scheme="eke"):
        """Deferred firing with the record of user ``name`` if it is of
        ``scheme``, else None: a server of one scheme does not see the users
        of another."""
        return self._fresh().addCallback(lambda _: self._get(name, scheme))

    def count(self, scheme):
        return self._fresh().addCallback(lambda _: self.loaded_count(scheme))

    def users(self):
        return self._fresh().addCallback(lambda _: dict(self.loaded))

    def add(self, name, record):
        def add(users):
            if name in users:
                raise StoreConflict(f"user {name!r} exists already")
            users[name] = record
        return self._edit(add, missing_ok=True)

    def replace(self, name, old, new):
        def replace(users):
            if users.get(name) != old:
                raise StoreConflict(f"user {name!r} has changed meanwhile")
            users[name] = new
        return self._edit(replace)

    def remove(self, name):
        def remove(users):
            return users.pop(name, None) is not None
        return self._edit(remove)

    def run(self, function, *args):
        """Deferred: ``function(*args)`` where this store does its file I/O
        (a thread; at once in tests): for a store that writes this file
        with its own (:meth:`twisted_keyx.service.invitations.InvitationFile.register`)."""
        return self._run(function, *args)

    # --- the file --------------------------------------------------------------

    def _get(self, name, scheme):
        record = self.loaded.get(name)
        return record if record is not None and record.scheme == scheme else None

    def _fresh(self):
        """Deferred firing once the users loaded are the file's."""
        if self._reloading is None:
            try:
                signature = _signature(os.stat(self.path))
            except FileNotFoundError:
                signature = self._MISSING
            except OSError:
                signature = None  # let the reload say why
            if signature is not None and signature == self._signature:
                return defer.succeed(None)
            waiting = defer.Deferred()
            self._reloading = [waiting]
            reading = self._run(_read_file, self.path, self._signature)
            reading.addCallbacks(self._reloaded, self._readFailed)
            return waiting
        waiting = defer.Deferred()
        self._reloading.append(waiting)
        return waiting

    def _reloaded(self, outcome):
        waiting, self._reloading = self._reloading, None
        try:
            self._apply(outcome, report=True)
        except UserFileError:
            pass  # reported in _apply; keep the users we had
        for each in waiting:
            each.callback(None)

    def _readFailed(self, reason):
        waiting, self._reloading = self._reloading, None
        self.log.failure("reading user file {path} failed", reason, path=self.path)
        for each in waiting:
            each.errback(StoreUnavailable(f"cannot read {self.path}"))

    def _apply(self, outcome, report):
        kind = outcome[0]
        if kind == "unchanged":
            return
        if kind == "missing":
            if self._signature != self._MISSING:
                self._signature = self._MISSING
                self.loaded = {}
                if report:
                    self.log.warn("user file {path} not found: no EKE users", path=self.path)
            return
        if kind == "unreadable":
            self._failed(("unreadable", outcome[1]), outcome[2], report)
            return
        if kind == "broken":
            self._failed(outcome[1], outcome[2], report)
            return
        _, signature, users = outcome
        self._signature = signature
        self.loaded = users
        if report:
            self.log.info("reloaded user file {path}: {count} user(s)",
                          path=self.path, count=len(users))

    def _failed(self, signature, reason, report):
        if not report:
            raise UserFileError(reason)
        if signature != self._signature:
            self._signature = signature
            self.log.error("{reason}; keeping the {count} user(s) loaded before",
                           reason=reason, count=len(self.loaded))

    def _edit(self, change, missing_ok=False):
        def edit():
            with editing_users(self.path, missing_ok=missing_ok) as users:
                return change(users)
        done = self._run(edit)
        done.addErrback(_unavailable_on, UserFileError)
        return done


def _unavailable_on(reason, error):
    """A ``error`` (the file unusable) as :class:`StoreUnavailable`."""
    reason.trap(error)
    raise StoreUnavailable(reason.getErrorMessage())
