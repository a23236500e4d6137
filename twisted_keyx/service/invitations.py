"""The invitations of OPAQUE registration over the network in a local file
(:class:`~twisted_keyx.core.interfaces.IInvitationStore`;
docs/opaque.rst, Registration)::

    {"version": 1,
     "invitations": {"bob": {"code_hash": "<32 bytes, base64>",
                             "created": 1765000000.0, "expires": 1765604800.0,
                             "state": "pending"}}}

Mode 0600, replaced whole at every change (``write_file_atomically``) under
the file's lock (``PATH.lock``), so two writers cannot lose each other's
change and a redeem is atomic: of two at once, one finds the invitation
pending.  The code itself is never stored; the hash stands for it until the
invitation is used, so the file is as private as the key file.

The calls do their file I/O at once and return fired Deferreds
(``keyx-admin``), or, given ``run_in_thread`` (the daemon passes
:func:`~twisted.internet.threads.deferToThread`), in a thread: every
registration looks its invitation up, which reads and parses the whole
file (it grows with the invitations ever made), and that must not stall the
reactor.  :meth:`InvitationFile.register`, which also writes the user file
(up to 8 MB), runs in the user file's thread.

A registration (:meth:`InvitationFile.register`) is two files written, the
user file then this one, both locked from the first read to the last
write (the user file's lock first: nothing else holds both, so no two
writers wait for each other).  The write of the user file is the
registration's commit: before it nothing changed, so a failure or a crash
leaves the invitation pending and the code usable again; after it the user
exists, and the invitation marked used is bookkeeping.  If that second
write fails, or the process dies between the two, the user is registered
and the invitation still says pending: harmless, since a register for a
user that exists is refused (StoreConflict) whatever the invitation says,
and ``keyx-admin invite`` refuses an existing user.  (It shows in
``keyx-admin listusers`` as a pending invitation beside the user;
``keyx-admin revoke`` ends it, and ``keyx-admin deluser`` revokes it with
the user, since the code would work again once the user is gone.)  Never the other way round: a code used up and no user.
"""

import base64
import binascii
import hmac
import json
import os

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from twisted_keyx.core.fileutil import (locked, open_regular, read_at_most, read_regular,
                                        write_file_atomically)
from twisted_keyx.core.interfaces import (
    IInvitationStore,
    Invitation,
    StoreConflict,
    StoreUnavailable,
)
from twisted_keyx.service import userfile

FORMAT_VERSION = 1
DEFAULT_INVITATION_FILE = "keyx-invitations.json"
STATES = ("pending", "used", "revoked")
#: Far more than any number of pending invitations an operator makes.
MAX_FILE_SIZE = 4 * 1024 * 1024
#: Seconds an invitation stays in the file once it is spent: used or revoked
#: (from its creation), or expired (from its expiry).  Without it the file
#: kept every invitation ever made, and grew to its size limit (about 25,000
#: invitations), where it could no longer be read: no registration at all.
KEEP_SPENT = 30 * 86400.0


class InvitationFileError(Exception):
    """The file cannot be read or is not in the format above."""


def _parse(data, path):
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvitationFileError(f"{path}: not JSON") from None
    if (not isinstance(document, dict) or document.get("version") != FORMAT_VERSION
            or not isinstance(document.get("invitations"), dict)):
        raise InvitationFileError(f"{path}: not an invitation file (version {FORMAT_VERSION})")
    invitations = {}
    for name, entry in document["invitations"].items():
        try:
            if set(entry) != {"code_hash", "created", "expires", "state"}:
                raise ValueError
            code_hash = base64.b64decode(entry["code_hash"].encode("ascii"), validate=True)
            created, expires = float(entry["created"]), float(entry["expires"])
            if len(code_hash) != 32 or entry["state"] not in STATES:
                raise ValueError
        except (ValueError, TypeError, AttributeError, binascii.Error, UnicodeEncodeError):
            raise InvitationFileError(f"{path}: the invitation for {name!r} is not "
                                      "code_hash, created, expires, state") from None
        invitations[name] = Invitation(name, code_hash, created, expires, entry["state"])
    return invitations


def _serialise(invitations):
    return (json.dumps({
        "version": FORMAT_VERSION,
        "invitations": {
            name: {"code_hash": base64.b64encode(i.code_hash).decode("ascii"),
                   "created": i.created, "expires": i.expires, "state": i.state}
            for name, i in sorted(invitations.items())},
    }, indent=2) + "\n").encode("ascii")


def _unavailable_on_error(function):
    try:
        return function()
    except (OSError, InvitationFileError) as e:
        raise StoreUnavailable(str(e)) from None


def _matches(invitation, code_hash, now):
    """Whether ``invitation`` (or None) is pending with ``code_hash`` at ``now``."""
    return (invitation is not None and invitation.usable(now)
            and hmac.compare_digest(invitation.code_hash, code_hash))


def _prune(invitations, now):
    """Drop the invitations spent :data:`KEEP_SPENT` seconds ago or more, as
    of ``now`` (the time of the call that writes: its caller's clock)."""
    for name, invitation in list(invitations.items()):
        spent = invitation.expires if invitation.state == "pending" else invitation.created
        if now > spent + KEEP_SPENT:
            del invitations[name]


def _used(invitation):
    return Invitation(invitation.user, invitation.code_hash, invitation.created,
                      invitation.expires, "used")


@implementer(IInvitationStore)
class InvitationFile:
    """The invitations in the file ``path`` (missing: none).  ``users`` is
    the :class:`~twisted_keyx.service.userfile.UserFile` a registration
    adds its user to (:meth:`register`; None: no one registers here);
    ``run_in_thread`` (None: at once) runs the other calls' file work."""

    log = Logger()

    def __init__(self, path=DEFAULT_INVITATION_FILE, users=None, run_in_thread=None):
        self.path = path
        self.users = users
        self._run = run_in_thread
        #: (the file's signature, its invitations) as :meth:`lookup` last read it.
        self._parsed = None

    def _read(self):
        try:
            # Not waited on if it is a named pipe (core.fileutil.open_regular).
            data = read_regular(self.path, MAX_FILE_SIZE + 1)
        except FileNotFoundError:
            return {}
        if len(data) > MAX_FILE_SIZE:
            raise InvitationFileError(f"{self.path}: larger than {MAX_FILE_SIZE} bytes")
        return _parse(data, self.path)

    def _read_for_lookup(self):
        """:meth:`_read` for :meth:`lookup`, parsed again only when the file
        has changed (its inode, size or times): a ``register`` line costs
        the server a file read, and anyone may send one, so a flood of them
        must not parse the whole file each time (up to 4 MB, about 100 ms
        of CPU with the GIL held).  Writes (:meth:`_edit`, :meth:`register`)
        read afresh under the lock."""
        try:
            fd = open_regular(self.path)
        except FileNotFoundError:
            return {}
        try:
            signature = userfile._signature(os.fstat(fd))
            cached = self._parsed
            if cached is not None and cached[0] == signature:
                return cached[1]
            data = read_at_most(fd, MAX_FILE_SIZE + 1)
        finally:
            os.close(fd)
        if len(data) > MAX_FILE_SIZE:
            raise InvitationFileError(f"{self.path}: larger than {MAX_FILE_SIZE} bytes")
        invitations = _parse(data, self.path)
        self._parsed = (signature, invitations)
        return invitations

    def _call(self, function):
        """``function()``'s result as a Deferred (run in ``run_in_thread``
        if given); an unreadable file is StoreUnavailable."""
        if self._run is None:
            return defer.maybeDeferred(_unavailable_on_error, function)
        return self._run(_unavailable_on_error, function)

    def _edit(self, change):
        """``change(invitations)`` under the lock, the file written back."""
        with locked(self.path):
            invitations = self._read()
            result = change(invitations)
            data = _serialise(invitations)
            if len(data) > MAX_FILE_SIZE:
                # No reader would accept it: every registration would stop.
                raise InvitationFileError(
                    f"{self.path}: {len(invitations)} invitations take {len(data)} bytes, over "
                    f"the {MAX_FILE_SIZE} an invitation file may have (left as it was)")
            write_file_atomically(self.path, data, mode=0o600)
            return result

    # --- IInvitationStore -----------------------------------------------------

    def invite(self, invitation):
        if invitation.state != "pending":
            return defer.fail(StoreConflict("a new invitation must be pending"))

        def change(invitations):
            _prune(invitations, invitation.created)
            invitations[invitation.user] = invitation

        return self._call(lambda: self._edit(change))

    def lookup(self, name):
        return self._call(lambda: self._read_for_lookup().get(name))

    def redeem(self, name, code_hash, now):
        def change(invitations):
            current = invitations.get(name)
            if not _matches(current, code_hash, now):
                return False
            invitations[name] = _used(current)
            _prune(invitations, now)
            return True

        return self._call(lambda: self._edit(change))

    def register(self, name, code_hash, now, record):
        if self.users is None:
            return defer.fail(StoreUnavailable(f"no user file beside {self.path} to register in"))
        done = self.users.run(self._register, name, code_hash, now, record)
        done.addCallback(self._registered, name)
        done.addErrback(self._registerFailed)
        return done

    def _register(self, name, code_hash, now, record):
        """In a thread: (registered, why the invitation was not marked used
        or None).  The order and its reasons: the module's docstring."""
        users_path = self.users.path
        with locked(users_path), locked(self.path):
            invitations = self._read()
            current = invitations.get(name)
            if not _matches(current, code_hash, now):
                return False, None
            users = userfile.read_users(users_path, missing_ok=True)
            if name in users:
                raise StoreConflict(f"user {name!r} exists already")
            users[name] = record
            userfile.write_users(users_path, users)  # the commit
            invitations[name] = _used(current)
            _prune(invitations, now)
            try:
                write_file_atomically(self.path, _serialise(invitations), mode=0o600)
            except OSError as e:
                return True, e.strerror or str(e)
            return True, None

    def _registered(self, outcome, name):
        registered, unmarked = outcome
        if unmarked is not None:
            self.log.warn("user {user} registered, but the invitation file {path} not written "
                          "({why}): the invitation still says pending (the user exists, so "
                          "the code registers no one; keyx-admin revoke ends it)",
                          user=repr(name), path=self.path, why=unmarked)
        return registered

    def _registerFailed(self, reason):
        reason.trap(OSError, InvitationFileError, userfile.UserFileError)
        raise StoreUnavailable(reason.getErrorMessage())

    def revoke(self, name):
        def change(invitations):
            current = invitations.get(name)
            if current is None or current.state != "pending":
                return False
            invitations[name] = Invitation(name, current.code_hash, current.created,
                                           current.expires, "revoked")
            return True

        return self._call(lambda: self._edit(change))

    def invitations(self):
        return self._call(self._read)
