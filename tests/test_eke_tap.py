"""twistd keyx: the EKE options and the service they build."""

import os

from twisted.logger import capturedLogs, formatEvent
from twisted.python import usage
from twisted.trial import unittest

from twisted_keyx.service import tap
from twisted_keyx.service import userfile as userstore
from twisted_keyx.eke.protocol import EKEServerFactory

from tests.helpers import make_user, tap_options


parse = tap_options


class EKEOptionsTests(unittest.TestCase):
    def setUp(self):
        self.directory = os.path.abspath(self.mktemp())
        os.mkdir(self.directory)
        cwd = os.getcwd()
        os.chdir(self.directory)
        self.addCleanup(os.chdir, cwd)

    def test_defaults(self):
        options = parse()
        self.assertEqual(options["eke"], ["tcp:8088"])
        self.assertEqual(options["dh"], ["tcp:7777"])
        self.assertEqual(options["users"], "keyx-users.json")
        self.assertEqual(options.config.users.path,
                         os.path.join(self.directory, "keyx-users.json"))
        self.assertIsNone(options.config.user_count)
        self.assertFalse(options["hide-unknown-users"])

    def test_repeated_endpoints(self):
        options = parse("--eke", "tcp:0", "--eke", "unix:/tmp/keyx-eke.sock")
        self.assertEqual(options["eke"], ["tcp:0", "unix:/tmp/keyx-eke.sock"])

    def test_bad_endpoint(self):
        self.assertRaises(usage.UsageError, parse, "--eke", "nonsense:1")

    def test_user_file_is_loaded_at_start(self):
        userstore.write_users("users.json", {"alice": make_user()})
        options = parse("--users", "users.json")
        self.assertEqual(options.config.user_count, 1)
        self.assertIsNotNone(self.successResultOf(options.config.users.lookup("alice")))

    def test_broken_user_file_is_a_usage_error(self):
        with open("users.json", "w") as f:
            f.write("{}")
        with self.assertRaises(usage.UsageError) as caught:
            parse("--users", "users.json")
        self.assertIn("users.json: top level: expected an object", str(caught.exception))

    def test_deeply_nested_user_file_is_a_usage_error(self):
        with open("users.json", "w") as f:
            f.write("[" * 100000)
        with self.assertRaises(usage.UsageError) as caught:
            parse("--users", "users.json")
        self.assertEqual(str(caught.exception), os.path.abspath("users.json")
                         + f": nested more than {userstore.MAX_DEPTH} levels deep")

    def test_make_service(self):
        options = parse("--hide-unknown-users", "--show-secrets",
                        "--eke", "tcp:0:interface=127.0.0.1", "--dh", "tcp:0:interface=127.0.0.1")
        service = tap.makeService(options)
        # Every listener's factory is behind the daemon's connection policy.
        factories = [child.factory.wrappedFactory for child in service
                     if hasattr(child, "factory")]
        self.assertEqual(len(factories), 3)  # DH, EKE and the default OPAQUE
        [eke] = [f for f in factories if type(f) is EKEServerFactory]
        self.assertTrue(eke.hide_unknown_users)
        self.assertTrue(eke.show_secrets)
        self.assertIsNotNone(eke.decoys)
        self.assertIs(eke.users, options.config.users)

    def test_start_up_line_names_the_endpoints_and_the_user_file(self):
        options = parse("--eke", "tcp:0:interface=127.0.0.1", "--dh", "tcp:0:interface=127.0.0.1")
        service = tap.makeService(options)
        with capturedLogs() as events:
            service.startService()
        self.addCleanup(service.stopService)
        lines = [formatEvent(e) for e in events if "twisted-keyx" in formatEvent(e)]
        path = os.path.join(self.directory, "keyx-users.json")
        self.assertEqual(lines[1], (
            f"twisted-keyx {tap.__version__}: EKE handshake and chat on "
            f"tcp:0:interface=127.0.0.1; users from {path} (file not found: no users yet)"
        ))
