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

The calls do their small file I/O at once and return fired Deferreds.
"""

import base64
import binascii
import hmac
import json
import os

from twisted.internet import defer
from zope.interface import implementer

from twisted_keyx.core.fileutil import locked, read_regular, write_file_atomically
from twisted_keyx.core.interfaces import (
    IInvitationStore,
    Invitation,
    StoreConflict,
    StoreUnavailable,
)

FORMAT_VERSION = 1
DEFAULT_INVITATION_FILE = "keyx-invitations.json"
STATES = ("pending", "used", "revoked")
#: Far more than any number of pending invitations an operator makes.
MAX_FILE_SIZE = 4 * 1024 * 1024


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


@implementer(IInvitationStore)
class InvitationFile:
    """The invitations in the file ``path`` (missing: none)."""

    def __init__(self, path=DEFAULT_INVITATION_FILE):
        self.path = path

    def _read(self):
        try:
            # Not waited on if it is a named pipe (core.fileutil.open_regular).
            data = read_regular(self.path, MAX_FILE_SIZE + 1)
        except FileNotFoundError:
            return {}
        if len(data) > MAX_FILE_SIZE:
            raise InvitationFileError(f"{self.path}: larger than {MAX_FILE_SIZE} bytes")
        return _parse(data, self.path)

    def _call(self, function):
        """``function()``'s result as a Deferred; an unreadable file is
        StoreUnavailable."""
        try:
            return defer.succeed(function())
        except (OSError, InvitationFileError) as e:
            return defer.fail(StoreUnavailable(str(e)))
        except StoreConflict as e:
            return defer.fail(e)

    def _edit(self, change):
        """``change(invitations)`` under the lock, the file written back."""
        with locked(self.path):
            invitations = self._read()
            result = change(invitations)
            write_file_atomically(self.path, _serialise(invitations), mode=0o600)
            return result

    # --- IInvitationStore -----------------------------------------------------

    def invite(self, invitation):
        if invitation.state != "pending":
            return defer.fail(StoreConflict("a new invitation must be pending"))

        def change(invitations):
            invitations[invitation.user] = invitation

        return self._call(lambda: self._edit(change))

    def lookup(self, name):
        return self._call(lambda: self._read().get(name))

    def redeem(self, name, code_hash, now):
        def change(invitations):
            current = invitations.get(name)
            if (current is None or not current.usable(now)
                    or not hmac.compare_digest(current.code_hash, code_hash)):
                return False
            invitations[name] = Invitation(name, current.code_hash, current.created,
                                           current.expires, "used")
            return True

        return self._call(lambda: self._edit(change))

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
