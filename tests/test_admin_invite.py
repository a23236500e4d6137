"""keyx-admin invite / revoke, and the invitations in keyx-admin listusers
(docs/reference/keyx-admin.rst; the store: twisted_keyx/service/invitations.py)."""

import io
import os
import stat
import sys

from twisted.trial import unittest

from tests.helpers import TEST_KDF
from twisted_keyx.cli import admin
from twisted_keyx.eke import crypto
from twisted_keyx.opaque import invitation as protocol
from twisted_keyx.service import invitations

NOW = 1_800_000_000.0
DAY = 24 * 3600


class InviteTests(unittest.TestCase):
    def setUp(self):
        self.dir = self.mktemp()
        os.mkdir(self.dir)
        self.users = os.path.join(self.dir, "users.json")
        self.store_path = os.path.join(self.dir, invitations.DEFAULT_INVITATION_FILE)
        self.now = NOW
        self.patch(admin, "clock", lambda: self.now)
        self.patch(crypto, "DEFAULT_SCRYPT", TEST_KDF)

    def admin(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        status = admin.main(list(argv), out, err)
        return status, out.getvalue(), err.getvalue()

    def stored(self, name):
        outcome = []
        invitations.InvitationFile(self.store_path).lookup(name).addCallback(outcome.append)
        return outcome[0]

    def test_invite_prints_code_once_stores_hash(self):
        status, out, err = self.admin("invite", "bob", "--users", self.users)
        self.assertEqual(status, 0)
        code = out.strip()
        self.assertEqual(out, code + "\n")
        # A real code, whose hash (only) is in the file beside the users file.
        invitation = self.stored("bob")
        self.assertEqual(invitation.code_hash, protocol.code_hash(code))
        self.assertEqual((invitation.state, invitation.created, invitation.expires),
                         ("pending", NOW, NOW + 7 * DAY))
        with open(self.store_path) as f:
            text = f.read()
        self.assertNotIn(code, text)
        self.assertNotIn(code.replace("-", "").upper(), text)
        self.assertEqual(stat.S_IMODE(os.stat(self.store_path).st_mode), 0o600)
        self.assertIn("keyx-client opaque register --user bob", err)
        self.assertIn("2027-01-22", err)  # NOW + 7 days, in UTC

    def test_two_codes_differ_and_second_replaces(self):
        first = self.admin("invite", "bob", "--users", self.users)[1].strip()
        status, out, err = self.admin("invite", "bob", "--users", self.users)
        second = out.strip()
        self.assertEqual(status, 0)
        self.assertNotEqual(first, second)
        self.assertEqual(self.stored("bob").code_hash, protocol.code_hash(second))
        self.assertIn("replaced", err)

    def test_expires_option(self):
        self.assertEqual(self.admin("invite", "bob", "--users", self.users,
                                    "--expires", "1.5")[0], 0)
        self.assertEqual(self.stored("bob").expires, NOW + 1.5 * DAY)

    def test_bad_expires_is_usage_error(self):
        for value in ("0", "-1", "366", "soon", "nan"):
            stderr = io.StringIO()
            self.patch(sys, "stderr", stderr)
            with self.assertRaises(SystemExit) as caught:
                self.admin("invite", "bob", "--users", self.users, "--expires", value)
            self.assertEqual(caught.exception.code, 2, value)
            self.assertIn("argument --expires: expected a number of days above 0, at most 365",
                          stderr.getvalue())
        self.assertFalse(os.path.exists(self.store_path))

    def test_invitations_option(self):
        other = os.path.join(self.dir, "elsewhere.json")
        self.assertEqual(self.admin("invite", "bob", "--users", self.users,
                                    "--invitations", other)[0], 0)
        self.assertTrue(os.path.exists(other))
        self.assertFalse(os.path.exists(self.store_path))

    def test_existing_user_refused(self):
        pw = os.path.join(self.dir, "pw")
        with open(pw, "w") as f:
            f.write("a password\n")
        os.chmod(pw, 0o600)
        self.assertEqual(self.admin("adduser", "alice", "--users", self.users,
                                    "--password-file", pw)[0], 0)
        status, out, err = self.admin("invite", "alice", "--users", self.users)
        self.assertEqual((status, out), (1, ""))
        self.assertIn("already exists", err)
        self.assertFalse(os.path.exists(self.store_path))

    def test_revoke(self):
        code = self.admin("invite", "bob", "--users", self.users)[1].strip()
        status, out, err = self.admin("revoke", "bob", "--users", self.users)
        self.assertEqual((status, err), (0, ""))
        self.assertIn("revoked", out)
        self.assertEqual(self.stored("bob").state, "revoked")
        # A revoked code cannot be redeemed.
        outcome = []
        invitations.InvitationFile(self.store_path).redeem(
            "bob", protocol.code_hash(code), NOW).addCallback(outcome.append)
        self.assertEqual(outcome, [False])
        # Twice: nothing pending any more.
        status, out, err = self.admin("revoke", "bob", "--users", self.users)
        self.assertEqual((status, out), (1, ""))
        self.assertEqual(err.count("\n"), 1)
        self.assertIn("no pending invitation for 'bob'", err)

    def test_revoke_unknown(self):
        status, out, err = self.admin("revoke", "nobody", "--users", self.users)
        self.assertEqual(status, 1)
        self.assertIn("no pending invitation for 'nobody'", err)

    def test_listusers_shows_invitations(self):
        for name in ("bob", "carol", "dave", "erin"):
            self.admin("invite", name, "--users", self.users, "--expires", "2")
        self.admin("revoke", "carol", "--users", self.users)
        outcome = []
        code = self.admin("invite", "dave", "--users", self.users)[1].strip()
        invitations.InvitationFile(self.store_path).redeem(
            "dave", protocol.code_hash(code), NOW).addCallback(outcome.append)
        self.assertEqual(outcome, [True])
        self.now = NOW + 3 * DAY  # bob's and erin's have expired; dave's was used
        status, out, err = self.admin("listusers", "--users", self.users)
        self.assertEqual(status, 0)
        self.assertEqual(out.splitlines(), [
            "bob  invited, code expired 2027-01-17 08:00 UTC",
            "carol  invitation revoked",
            "dave  invitation used",
            "erin  invited, code expired 2027-01-17 08:00 UTC",
        ])
        self.now = NOW
        out = self.admin("listusers", "--users", self.users)[1]
        self.assertIn("bob  invited, code unused, expires 2027-01-17 08:00 UTC\n", out)

    def test_listusers_help_says_it_lists_invitations(self):
        # The description said "each user of the user file" only.
        parser = admin.build_parser()
        commands = next(action for action in parser._actions
                        if action.choices and "listusers" in action.choices)
        text = " ".join(commands.choices["listusers"].description.split())
        self.assertIn("invitation", text)
        self.assertIn("--store", text)
        # adduser's said "the user file" only.
        self.assertIn("--store", commands.choices["adduser"].description)

    def test_unreadable_store_is_one_line(self):
        with open(self.store_path, "w") as f:
            f.write("not json")
        for argv in (("invite", "bob"), ("revoke", "bob"), ("listusers",)):
            status, out, err = self.admin(*argv, "--users", self.users)
            self.assertEqual((status, out), (1, ""), argv)
            self.assertEqual(err, f"keyx-admin: {self.store_path}: not JSON\n")


class DeluserTests(InviteTests):
    """deluser takes the user's pending invitation with it."""

    def test_deluser_revokes_a_pending_invitation_left_beside_the_user(self):
        # What a registration leaves when the invitation file cannot be
        # marked after the user is written (docs/opaque.rst, Registration):
        # the user and a pending invitation.  Without the revocation the
        # code worked again once the user was removed.
        self.admin("invite", "bob", "--users", self.users)
        password = os.path.join(self.dir, "pw")
        with open(password, "w") as f:
            f.write("bob's password\n")
        status, _, err = self.admin("adduser", "bob", "--scheme", "eke", "--users", self.users,
                                    "--password-file", password)
        self.assertEqual(status, 0, err)
        self.assertEqual(self.stored("bob").state, "pending")
        status, out, err = self.admin("deluser", "bob", "--users", self.users)
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(out, f"removed user bob from {self.users}\n"
                              f"revoked the pending invitation of bob in {self.store_path}\n")
        self.assertEqual(self.stored("bob").state, "revoked")

    def test_deluser_without_invitation_says_one_line(self):
        password = os.path.join(self.dir, "pw")
        with open(password, "w") as f:
            f.write("alice's password\n")
        self.admin("adduser", "alice", "--scheme", "eke", "--users", self.users,
                   "--password-file", password)
        status, out, err = self.admin("deluser", "alice", "--users", self.users)
        self.assertEqual((status, out), (0, f"removed user alice from {self.users}\n"))
        self.assertFalse(os.path.exists(self.store_path))
