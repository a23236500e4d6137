"""The local file store of invitations (twisted_keyx.service.invitations),
IInvitationStore's contract."""

import json
import os
import stat
import threading

from twisted.internet import defer, threads
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from tests.opaque_helpers import cheap_setup
from twisted_keyx.core.interfaces import (
    IInvitationStore,
    Invitation,
    StoreConflict,
    StoreUnavailable,
)
from twisted_keyx.opaque.invitation import code_hash, new_code
from twisted_keyx.opaque.scheme import new_user
from twisted_keyx.service import invitations as invitationfile, userfile
from twisted_keyx.service.invitations import InvitationFile
from twisted_keyx.service.userfile import UserFile, run_now

CODE = new_code()
NOW = 1_000_000.0
SETUP = cheap_setup()
BOB = new_user("bob", "pw", SETUP)


_real_write_users = userfile.write_users


def pending(user="bob", code=CODE, expires=NOW + 60):
    return Invitation(user, code_hash(code), NOW - 60, expires)


class InvitationFileTests(unittest.TestCase):
    def setUp(self):
        folder = self.mktemp()
        os.mkdir(folder)
        self.path = os.path.join(folder, "invitations.json")
        self.users_path = os.path.join(folder, "users.json")
        self.users = UserFile(self.users_path, run_in_thread=run_now)
        self.store = InvitationFile(self.path, users=self.users)

    def result(self, deferred):
        return self.successResultOf(deferred)

    def test_interface(self):
        self.assertTrue(verifyObject(IInvitationStore, self.store))
        self.assertTrue(verifyObject(IInvitationStore, InvitationFile(self.path)))

    def stored_users(self):
        return userfile.read_users(self.users_path, missing_ok=True)

    def test_register_once(self):
        self.result(self.store.invite(pending()))
        self.assertFalse(self.result(self.store.register("bob", code_hash(new_code()), NOW,
                                                         BOB)))
        self.assertEqual(self.stored_users(), {})
        self.assertTrue(self.result(self.store.register("bob", code_hash(CODE), NOW, BOB)))
        self.assertEqual(self.stored_users(), {"bob": BOB})
        self.assertEqual(self.result(self.store.lookup("bob")).state, "used")
        self.assertFalse(self.result(self.store.register("bob", code_hash(CODE), NOW, BOB)))
        # The daemon's user store sees the new user.
        self.assertEqual(self.result(self.users.lookup("bob", "opaque")), BOB)

    def test_register_expired_revoked_unknown(self):
        self.result(self.store.invite(pending(expires=NOW)))
        self.assertFalse(self.result(self.store.register("bob", code_hash(CODE), NOW, BOB)))
        self.result(self.store.invite(pending()))
        self.result(self.store.revoke("bob"))
        self.assertFalse(self.result(self.store.register("bob", code_hash(CODE), NOW, BOB)))
        self.assertFalse(self.result(self.store.register("nobody", code_hash(CODE), NOW, BOB)))
        self.assertEqual(self.stored_users(), {})

    def test_register_existing_user_changes_nothing(self):
        self.result(self.store.invite(pending()))
        alice_as_bob = new_user("bob", "another", SETUP)
        userfile.write_users(self.users_path, {"bob": alice_as_bob})
        self.failureResultOf(self.store.register("bob", code_hash(CODE), NOW, BOB),
                             StoreConflict)
        self.assertEqual(self.stored_users(), {"bob": alice_as_bob})
        self.assertEqual(self.result(self.store.lookup("bob")).state, "pending")

    def test_register_user_file_fails_code_kept(self):
        """The user file cannot be written: the invitation stays pending
        (a redeem then an add used it up) and the code works again."""
        self.result(self.store.invite(pending()))

        def unwritable(path, users):
            raise userfile.UserFileError(f"cannot write {path}: Read-only file system")

        self.patch(userfile, "write_users", unwritable)
        failure = self.failureResultOf(self.store.register("bob", code_hash(CODE), NOW, BOB),
                                       StoreUnavailable)
        self.assertIn("Read-only file system", str(failure.value))
        self.assertEqual(self.result(self.store.lookup("bob")).state, "pending")
        self.assertFalse(os.path.exists(self.users_path))
        self.patch(userfile, "write_users", _real_write_users)
        self.assertTrue(self.result(self.store.register("bob", code_hash(CODE), NOW, BOB)))
        self.assertEqual(self.stored_users(), {"bob": BOB})

    def test_register_unreadable_user_file_is_store_unavailable(self):
        self.result(self.store.invite(pending()))
        with open(self.users_path, "w") as f:
            f.write("not json")
        self.failureResultOf(self.store.register("bob", code_hash(CODE), NOW, BOB),
                             StoreUnavailable)
        self.assertEqual(self.result(self.store.lookup("bob")).state, "pending")

    def test_register_invitation_file_fails_after_the_user(self):
        """The user written is the commit: the invitation file not written
        after it leaves a registered user and a pending invitation whose
        code registers no one (the user exists)."""
        self.result(self.store.invite(pending()))

        def unwritable(path, data, mode):
            raise OSError(28, "No space left on device")

        self.patch(invitationfile, "write_file_atomically", unwritable)
        self.assertTrue(self.result(self.store.register("bob", code_hash(CODE), NOW, BOB)))
        self.assertEqual(self.stored_users(), {"bob": BOB})
        self.assertEqual(self.result(self.store.lookup("bob")).state, "pending")
        other = new_user("bob", "another", SETUP)
        self.failureResultOf(self.store.register("bob", code_hash(CODE), NOW, other),
                             StoreConflict)
        self.assertEqual(self.stored_users(), {"bob": BOB})

    def test_register_without_a_user_file(self):
        store = InvitationFile(self.path)
        self.result(store.invite(pending()))
        self.failureResultOf(store.register("bob", code_hash(CODE), NOW, BOB), StoreUnavailable)
        self.assertEqual(self.result(store.lookup("bob")).state, "pending")

    def test_concurrent_registers_one_wins(self):
        self.result(self.store.invite(pending()))
        results = []

        def register(index):
            users = UserFile(self.users_path, run_in_thread=run_now)
            InvitationFile(self.path, users=users).register(
                "bob", code_hash(CODE), NOW, new_user("bob", f"pw{index}", SETUP)).addBoth(
                results.append)

        threads = [threading.Thread(target=register, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(sorted(results), [False] * 5 + [True])
        self.assertEqual(list(self.stored_users()), ["bob"])

    def test_invite_lookup_list_and_file(self):
        self.assertIsNone(self.result(self.store.lookup("bob")))
        self.result(self.store.invite(pending()))
        self.assertEqual(self.result(self.store.lookup("bob")), pending())
        self.assertEqual(self.result(self.store.invitations()), {"bob": pending()})
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        with open(self.path) as f:
            text = f.read()
        self.assertNotIn(CODE, text)
        self.assertEqual(json.loads(text)["invitations"]["bob"]["state"], "pending")

    def test_redeem_once(self):
        self.result(self.store.invite(pending()))
        self.assertFalse(self.result(self.store.redeem("bob", code_hash(new_code()), NOW)))
        self.assertTrue(self.result(self.store.redeem("bob", code_hash(CODE), NOW)))
        self.assertFalse(self.result(self.store.redeem("bob", code_hash(CODE), NOW)))
        self.assertEqual(self.result(self.store.lookup("bob")).state, "used")

    def test_expired_and_revoked(self):
        self.result(self.store.invite(pending(expires=NOW)))
        self.assertFalse(self.result(self.store.redeem("bob", code_hash(CODE), NOW)))
        self.result(self.store.invite(pending()))
        self.assertTrue(self.result(self.store.revoke("bob")))
        self.assertFalse(self.result(self.store.revoke("bob")))
        self.assertFalse(self.result(self.store.redeem("bob", code_hash(CODE), NOW)))
        self.assertFalse(self.result(self.store.revoke("nobody")))

    def test_concurrent_redeems_one_wins(self):
        self.result(self.store.invite(pending()))
        results = []

        def redeem():
            InvitationFile(self.path).redeem("bob", code_hash(CODE), NOW).addCallback(
                results.append)

        threads = [threading.Thread(target=redeem) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(sorted(results), [False] * 7 + [True])

    def test_broken_file_is_store_unavailable(self):
        with open(self.path, "w") as f:
            f.write('{"version": 1, "invitations": {"bob": {"state": "pending"}}}')
        failure = self.failureResultOf(self.store.lookup("bob"), StoreUnavailable)
        self.assertIn("is not code_hash, created, expires, state", str(failure.value))

    def test_lookups_parse_the_file_once_until_it_changes(self):
        """Anyone may send a ``register`` line, and each one looks its user
        up: a flood of them parsed the whole file (4 MB at most, 100 ms of
        CPU) every time.  Lookups parse it again only once it changed."""
        self.result(self.store.invite(pending()))
        parsed = []
        real = invitationfile._parse

        def counting(data, path):
            parsed.append(path)
            return real(data, path)

        self.patch(invitationfile, "_parse", counting)
        for name in ("bob", "mallory", "eve", "bob"):
            self.result(self.store.lookup(name))
        self.assertEqual(len(parsed), 1)
        # A change by another process (keyx-admin) is seen at once.
        self.result(InvitationFile(self.path).revoke("bob"))
        self.assertEqual(self.result(self.store.lookup("bob")).state, "revoked")
        self.result(self.store.invite(pending("carol")))
        self.assertEqual(self.result(self.store.lookup("carol")), pending("carol"))
        # A registration still reads the file afresh under its lock.
        self.assertTrue(self.result(self.store.register("carol", code_hash(CODE), NOW, BOB)))
        self.assertEqual(self.result(self.store.lookup("carol")).state, "used")
        os.remove(self.path)
        self.assertIsNone(self.result(self.store.lookup("carol")))

    def test_a_file_too_large_to_read_is_not_written(self):
        # invite wrote what lookup then refused: every registration stopped.
        self.result(self.store.invite(pending()))
        self.patch(invitationfile, "MAX_FILE_SIZE", os.path.getsize(self.path) + 10)
        failure = self.failureResultOf(self.store.invite(pending("carol")), StoreUnavailable)
        self.assertIn("2 invitations take ", str(failure.value))
        self.assertEqual(self.result(self.store.invitations()), {"bob": pending()})

    def test_named_pipe_is_refused_not_waited_on(self):
        # A FIFO with no writer blocked os.open, and with it the daemon's
        # reactor, forever; it is refused as not a regular file.
        os.mkfifo(self.path)
        failure = self.failureResultOf(self.store.lookup("bob"), StoreUnavailable)
        self.assertIn("not a regular file", str(failure.value))

    def test_spent_invitations_leave_the_file_after_thirty_days(self):
        # The file kept every invitation ever made, and a file at its size
        # limit could not be read: no registration at all.
        from twisted_keyx.service.invitations import KEEP_SPENT

        later = NOW + KEEP_SPENT + 10
        self.result(self.store.invite(pending("used")))
        self.assertTrue(self.result(self.store.redeem("used", code_hash(CODE), NOW)))
        self.result(self.store.invite(pending("revoked")))
        self.result(self.store.revoke("revoked"))
        self.result(self.store.invite(pending("expired", expires=NOW)))
        self.result(self.store.invite(pending("waiting", expires=later + 60)))
        self.result(self.store.invite(Invitation("new", code_hash(CODE), later, later + 60)))
        self.assertEqual(sorted(self.result(self.store.invitations())), ["new", "waiting"])

    def test_spent_invitations_stay_thirty_days(self):
        from twisted_keyx.service.invitations import KEEP_SPENT

        self.result(self.store.invite(pending("used")))
        self.assertTrue(self.result(self.store.redeem("used", code_hash(CODE), NOW)))
        soon = NOW - 60 + KEEP_SPENT - 10
        self.result(self.store.invite(Invitation("new", code_hash(CODE), soon, soon + 60)))
        self.assertEqual(self.result(self.store.lookup("used")).state, "used")

    def test_a_registration_prunes_too(self):
        from twisted_keyx.service.invitations import KEEP_SPENT

        self.result(self.store.invite(pending("old", expires=NOW)))
        later = NOW + KEEP_SPENT + 10
        self.result(self.store.invite(Invitation("bob", code_hash(CODE), later - 60,
                                                 later + 60)))
        self.assertTrue(self.result(self.store.register("bob", code_hash(CODE), later, BOB)))
        self.assertEqual(sorted(self.result(self.store.invitations())), ["bob"])
        self.assertEqual(self.result(self.store.lookup("bob")).state, "used")


class ThreadedInvitationFileTests(unittest.TestCase):
    """Given ``run_in_thread`` (the daemon's: deferToThread), the file's
    reads, rewrites and fsyncs run there, not on the reactor thread: a
    registration's work grows with the invitations in the file."""

    def setUp(self):
        self.folder = self.mktemp()
        os.mkdir(self.folder)
        self.path = os.path.join(self.folder, "keyx-invitations.json")
        self.on_reactor_thread = []

        def run(function, *args):
            def recorded():
                self.on_reactor_thread.append(threading.current_thread() is threading.main_thread())
                return function(*args)
            return threads.deferToThread(recorded)

        self.store = InvitationFile(self.path, run_in_thread=run)

    @defer.inlineCallbacks
    def test_every_call_in_the_thread(self):
        yield self.store.invite(pending())
        self.assertEqual((yield self.store.lookup("bob")), pending())
        self.assertFalse((yield self.store.redeem("bob", code_hash(new_code()), NOW)))
        self.assertTrue((yield self.store.redeem("bob", code_hash(CODE), NOW)))
        self.assertFalse((yield self.store.redeem("bob", code_hash(CODE), NOW)))
        self.assertFalse((yield self.store.revoke("bob")))
        self.assertEqual((yield self.store.invitations())["bob"].state, "used")
        self.assertEqual(self.on_reactor_thread, [False] * 7)

    @defer.inlineCallbacks
    def test_broken_file_is_store_unavailable(self):
        with open(self.path, "w") as f:
            f.write("not json")
        with self.assertRaises(StoreUnavailable):
            yield self.store.lookup("bob")
        self.assertEqual(self.on_reactor_thread, [False])

    @defer.inlineCallbacks
    def test_the_daemon_does_not_read_the_file_on_the_reactor_thread(self):
        from twisted_keyx.service import tap

        shared = tap._users_and_stores({"store": None,
                                        "users": os.path.join(self.folder, "users.json")})
        invitations = shared.stores[IInvitationStore]
        yield invitations.invite(pending())
        lookup = invitations.lookup("bob")
        self.assertNoResult(lookup)  # synchronous file work would have fired it
        self.assertEqual((yield lookup), pending())
