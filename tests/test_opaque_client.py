"""keyx-client opaque, run as a real process against an OPAQUE server in the
test's reactor on 127.0.0.1 (users with the default Argon2id, which the
real client insists on)."""

import os
import sys

from twisted.internet import defer, reactor
from twisted.logger import capturedLogs, formatEvent
from twisted.trial import unittest

import twisted_keyx
from twisted_keyx.opaque.protocol import OPAQUEServerFactory
from twisted_keyx.opaque.records import ServerSetup
from twisted_keyx.opaque.scheme import new_user
from twisted_keyx.trust.knownservers import server_key_fingerprint

from tests.helpers import CollectingProcess
from tests.test_opaque_handshake import Users

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(twisted_keyx.__file__)))
_STATE = []


def state():
    if not _STATE:
        setup = ServerSetup.generate()
        _STATE.append((setup, Users(alice=new_user("alice", "open sesame", setup))))
    return _STATE[0]


class OPAQUEClientProcessTests(unittest.TestCase):
    timeout = 120

    def setUp(self):
        self.password_file = os.path.abspath(self.mktemp())
        with open(self.password_file, "w") as f:
            f.write("open sesame\n")
        os.chmod(self.password_file, 0o600)
        self.config = os.path.abspath(self.mktemp())
        self.failures = []
        self.listen(*state())

    #: Where the server listens and the client connects.
    host = "127.0.0.1"

    def listen(self, setup, users, port=0):
        self.factory = OPAQUEServerFactory(users, setup,
                                           login_failed=lambda u, p: self.failures.append(u))
        self.port = reactor.listenTCP(port, self.factory, interface=self.host)
        self.addCleanup(self.port.stopListening)

    @defer.inlineCallbacks
    def run_client(self, stdin, *argv):
        process = CollectingProcess(stdin)
        env = dict(os.environ, PYTHONPATH=ROOT, PYTHONWARNINGS="error",
                   XDG_CONFIG_HOME=self.config)
        args = [sys.executable, "-m", "twisted_keyx.cli.client", "opaque", "--host", self.host,
                "--port", str(self.port.getHost().port), *argv]
        reactor.spawnProcess(process, sys.executable, args, env=env)
        status = yield process.ended
        return status, process.out.decode(), process.err.decode()

    @defer.inlineCallbacks
    def test_login_chat_quit(self):
        setup, _ = state()
        with capturedLogs() as events:
            status, out, err = yield self.run_client(
                b"hello\nquit\n", "--user", "alice", "--password-file", self.password_file)
        self.assertEqual((status, err), (0, ""))
        first, key_line, *rest = out.splitlines()
        self.assertTrue(first.startswith("Authentication success (session key fingerprint "))
        self.assertEqual(key_line, "Server key fingerprint "
                                   + server_key_fingerprint(setup.server_public_key))
        self.assertEqual(rest, ["receive hello"])
        log = [formatEvent(e) for e in events]
        self.assertIn("User alice say: hello", log)
        self.assertFalse([line for line in log if "Traceback" in line or "open sesame" in line])
        path = os.path.join(self.config, "twisted-keyx", "opaque_servers")
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)

    @defer.inlineCallbacks
    def test_wrong_password_and_unknown_user_look_the_same(self):
        with open(self.password_file, "w") as f:
            f.write("guess\n")
        wrong = yield self.run_client(b"", "--user", "alice", "--password-file",
                                      self.password_file)
        unknown = yield self.run_client(b"", "--user", "mallory", "--password-file",
                                        self.password_file)
        self.assertEqual(wrong, (1, "", "keyx-client: authentication failed "
                                        "(wrong password or unknown user)\n"))
        self.assertEqual(unknown, wrong)
        self.assertEqual(self.failures, ["alice", "mallory"])

    @defer.inlineCallbacks
    def changed_key_warning(self):
        """Log in, give the server another key on the same port, log in
        again; return the port and what the client wrote on stderr."""
        status, _, err = yield self.run_client(b"quit\n", "--user", "alice",
                                               "--password-file", self.password_file)
        self.assertEqual((status, err), (0, ""))
        port = self.port.getHost().port
        yield self.port.stopListening()
        other = ServerSetup.generate()
        self.listen(other, Users(alice=new_user("alice", "open sesame", other)), port)
        status, _, err = yield self.run_client(b"quit\n", "--user", "alice",
                                               "--password-file", self.password_file)
        self.assertEqual(status, 0)
        return port, err

    @defer.inlineCallbacks
    def test_changed_server_key_is_warned_about(self):
        port, err = yield self.changed_key_warning()
        self.assertIn(f"the server key of 127.0.0.1:{port} changed", err)

    @defer.inlineCallbacks
    def test_changed_server_key_of_an_ipv6_host_names_it_in_brackets(self):
        self.port.stopListening()
        self.host = "::1"
        self.listen(*state())
        port, err = yield self.changed_key_warning()
        self.assertIn(f"the server key of [::1]:{port} changed", err)


class RegisterProcessTests(unittest.TestCase):
    """keyx-client opaque register against a server with an invitation."""

    timeout = 120

    def setUp(self):
        from twisted_keyx.core.interfaces import Invitation
        from twisted_keyx.opaque import invitation
        from twisted_keyx.service.invitations import InvitationFile

        directory = os.path.abspath(self.mktemp())
        os.mkdir(directory)
        self.code = invitation.new_code()
        self.code_file = os.path.join(directory, "code")
        self.password_file = os.path.join(directory, "pw")
        for path, text in ((self.code_file, self.code), (self.password_file, "new secret")):
            with open(path, "w") as f:
                f.write(text + "\n")
            os.chmod(path, 0o600)
        from twisted_keyx.service.userfile import UserFile

        self.users = UserFile(os.path.join(directory, "users.json"))
        store = InvitationFile(os.path.join(directory, "invitations.json"), users=self.users)
        store.invite(Invitation("bob", invitation.code_hash(self.code), 0,
                                reactor.seconds() + 600))
        setup, _ = state()
        self.port = reactor.listenTCP(0, OPAQUEServerFactory(self.users, setup,
                                                             invitations=store),
                                      interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.config = os.path.abspath(self.mktemp())

    run_client = OPAQUEClientProcessTests.run_client
    host = "127.0.0.1"

    @defer.inlineCallbacks
    def test_register_then_login_then_code_refused(self):
        argv = ("--user", "bob", "--code-file", self.code_file,
                "--password-file", self.password_file)
        status, out, err = yield self.run_client(b"", "register", *argv)
        port = self.port.getHost().port
        # The command it prints names the host and port it registered on
        # (it said "keyx-client opaque --user bob", which went to localhost:8089).
        self.assertEqual((status, out, err), (
            0, f"Registered bob on 127.0.0.1:{port}; log in with: "
               f"keyx-client opaque --host 127.0.0.1 --port {port} --user bob\n", ""))
        self.assertEqual(list((yield self.users.users())), ["bob"])
        status, out, err = yield self.run_client(
            b"quit\n", "--user", "bob", "--password-file", self.password_file)
        self.assertEqual((status, err), (0, ""))
        self.assertTrue(out.startswith("Authentication success"))
        status, out, err = yield self.run_client(b"", "register", *argv)
        self.assertEqual((status, out), (1, ""))
        self.assertTrue(err.startswith("keyx-client: registration refused: the server does "
                                       "not know this invitation code"), err)

    @defer.inlineCallbacks
    def test_not_a_code_is_a_usage_error(self):
        with open(self.code_file, "w") as f:
            f.write("12345\n")
        status, out, err = yield self.run_client(
            b"", "register", "--user", "bob", "--code-file", self.code_file,
            "--password-file", self.password_file)
        self.assertEqual((status, out, err), (
            2, "", "keyx-client: not an invitation code (32 letters and digits)\n"))
        self.assertEqual((yield self.users.users()), {})


class CommandsFromTheEntryTests(unittest.TestCase):
    """``keyx-client opaque register|passwd`` come from OPAQUE's registry
    entry (``client_commands``: twisted_keyx.opaque.commands), not from a
    test of the handshake's name in the command line."""

    def test_opaque_has_them_and_eke_not(self):
        import io

        from twisted_keyx.cli import client
        from twisted_keyx.core import handshakes
        from twisted_keyx.opaque import commands

        self.assertEqual(handshakes.named("opaque").load("client_commands"),
                         commands.add_commands)
        self.assertIsNone(handshakes.named("eke").client_commands)
        args = client.build_parser().parse_args(["opaque", "register", "--user", "bob",
                                                 "--code-file", "F"])
        self.assertEqual((args.run.func, args.action, args.code_file),
                         (commands.run_opaque, "register", "F"))
        self.assertIsInstance(args.run.args[0], client.ClientKit)
        for argv in (["opaque", "--help"], ["eke", "--help"]):
            text = io.StringIO()
            self.patch(sys, "stdout", text)
            self.assertRaises(SystemExit, client.main, argv)
            self.assertEqual("register|passwd" in text.getvalue(), argv[0] == "opaque")
            self.assertEqual("--new-password-file" in text.getvalue(), argv[0] == "opaque")


class LoginCommandTests(unittest.TestCase):
    """The login command ``keyx-client opaque register`` prints."""

    def parse(self, *argv):
        from twisted_keyx.cli import client

        return client.build_parser().parse_args(["opaque", "register", *argv])

    def test_defaults_are_left_out(self):
        from twisted_keyx.opaque.commands import login_command

        self.assertEqual(login_command(self.parse("--user", "bob")),
                         "keyx-client opaque --user bob")

    def test_what_was_given_comes_back_and_parses_the_same(self):
        import shlex

        from twisted_keyx.cli import client
        from twisted_keyx.opaque.commands import login_command

        args = self.parse("--user", "zo\u00eb", "--host", "::1", "--port", "9000",
                          "--profile", "rfc9807,m=1024,t=1,p=1,context=YWI=")
        words = shlex.split(login_command(args))
        self.assertEqual(words[:2], ["keyx-client", "opaque"])
        again = client.build_parser().parse_args(words[1:])
        self.assertEqual((again.user, again.host, again.port, again.profile, again.action),
                         (args.user, args.host, args.port, args.profile, None))
