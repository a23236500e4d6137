"""keyx-client eke, run as a real process (standard input through a pipe)
against a server in the test's reactor on 127.0.0.1."""

import getpass
import io
import os
import sys
import threading
import time
import warnings

from twisted.internet import defer, protocol, reactor
from twisted.logger import capturedLogs, formatEvent
from twisted.trial import unittest

import twisted_keyx
from twisted_keyx.cli import client as client_module
from twisted_keyx.groups import ffdh
from twisted_keyx.eke import crypto, messages
from twisted_keyx.login import prompts as password
from twisted_keyx.service.userfile import new_user

from tests.helpers import (
    CLOSE,
    CollectingProcess,
    ScriptedFactory,
    ScriptedLineServer,
    TrackingDHServerFactory,
    TrackingEKEServerFactory,
    Users,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(twisted_keyx.__file__)))

_USERS = []


def users():
    """Users with the default 32 MiB scrypt, which the real client insists on."""
    if not _USERS:
        _USERS.append(Users(alice=new_user("alice", "open sesame", kdf=crypto.DEFAULT_SCRYPT)))
    return _USERS[0]


class ClientProcessTests(unittest.TestCase):
    timeout = 60

    def setUp(self):
        self.password_file = os.path.abspath(self.mktemp())
        with open(self.password_file, "w") as f:
            f.write("open sesame\n")
        os.chmod(self.password_file, 0o600)  # a looser file is warned about
        self.factory = TrackingEKEServerFactory(users())
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        # The client's pins (eke_salts) and known hosts: this test's own.
        self.config = os.path.abspath(self.mktemp())

    @defer.inlineCallbacks
    def run_client(self, stdin, *argv, port=None, expect_server_connection=True):
        port = port or self.port.getHost().port
        process = CollectingProcess(stdin)
        env = dict(os.environ, PYTHONPATH=ROOT, PYTHONWARNINGS="error",
                   XDG_CONFIG_HOME=self.config)
        args = [sys.executable, "-m", "twisted_keyx.cli.client", "eke", "--host", "127.0.0.1",
                "--port", str(port), *argv]
        reactor.spawnProcess(process, sys.executable, args, env=env)
        status = yield process.ended
        if expect_server_connection:
            yield self.factory.allLost()
        return status, process.out.decode(), process.err.decode()

    @defer.inlineCallbacks
    def test_a_client_that_gave_up_does_not_wait_for_scrypt(self):
        # scrypt made to take 20 s: the client says it timed out, and exits.
        code = ("import sys, time; from twisted_keyx.eke import crypto; "
                "crypto.derive_password_key = lambda *args: time.sleep(20); "
                "from twisted_keyx.cli import client; sys.exit(client.main(sys.argv[1:]))")
        process = CollectingProcess(b"")
        env = dict(os.environ, PYTHONPATH=ROOT, PYTHONWARNINGS="error",
                   XDG_CONFIG_HOME=self.config)
        args = [sys.executable, "-c", code, "eke", "--host", "127.0.0.1",
                "--port", str(self.port.getHost().port), "--user", "alice",
                "--password-file", self.password_file, "--timeout", "0.5"]
        started = time.monotonic()
        reactor.spawnProcess(process, sys.executable, args, env=env)
        status = yield process.ended
        elapsed = time.monotonic() - started
        yield self.factory.allLost()
        self.assertEqual((status, process.err.decode()),
                         (3, "keyx-client: the handshake did not finish within 0.5 seconds\n"))
        self.assertLess(elapsed, 15)

    @defer.inlineCallbacks
    def test_chat_through_a_pipe(self):
        with capturedLogs() as events:
            status, out, err = yield self.run_client(
                b"hello\nquit\nnot sent\n", "--user", "alice", "--password-file", self.password_file
            )
        self.assertEqual((status, err), (0, ""))
        first, *rest = out.splitlines()
        self.assertEqual(rest, ["receive hello"])
        fingerprint = first.split()[-1].rstrip(")")
        self.assertEqual(first, f"Authentication success (session key fingerprint {fingerprint})")
        log = [formatEvent(e) for e in events]
        self.assertTrue(log[0].endswith(f"session key fingerprint {fingerprint}"))
        self.assertEqual(log[1:], ["User alice say: hello", log[2]])
        self.assertTrue(log[2].endswith(" quit"))

    @defer.inlineCallbacks
    def test_end_of_input_ends_the_session(self):
        status, out, err = yield self.run_client(
            b"one\r\ntwo", "--user", "alice", "--password-file", self.password_file
        )
        self.assertEqual((status, err), (0, ""))
        self.assertEqual(out.splitlines()[1:], ["receive one", "receive two"])

    @defer.inlineCallbacks
    def test_unusable_input_lines_are_skipped(self):
        status, out, err = yield self.run_client(
            b"\xff\n" + b"x" * 5000 + b"\nok\n", "--user", "alice",
            "--password-file", self.password_file,
        )
        self.assertEqual(status, 0)
        self.assertEqual(out.splitlines()[1:], ["receive ok"])
        self.assertEqual(err, "keyx-client: line is not UTF-8; not sent\n"
                              "keyx-client: line longer than 4096 bytes; not sent\n")

    @defer.inlineCallbacks
    def test_password_file_readable_by_others_is_warned_about(self):
        os.chmod(self.password_file, 0o604)
        status, out, err = yield self.run_client(
            b"quit\n", "--user", "alice", "--password-file", self.password_file
        )
        self.assertEqual((status, err), (0, (
            f"keyx-client: warning: {self.password_file} is readable by group or others "
            f"(mode 0604); chmod 600 {self.password_file}\n")))

    @defer.inlineCallbacks
    def test_wrong_password(self):
        with open(self.password_file, "w") as f:
            f.write("open sesame!\n")
        status, out, err = yield self.run_client(
            b"hello\n", "--user", "alice", "--password-file", self.password_file
        )
        self.assertEqual((status, out), (1, ""))
        self.assertEqual(err, "keyx-client: authentication failed (wrong password or unknown user)\n")
        [server] = self.factory.connections
        self.assertIsNone(server.chat)

    @defer.inlineCallbacks
    def test_unknown_user(self):
        status, out, err = yield self.run_client(
            b"hello\n", "--user", "carol", "--password-file", self.password_file
        )
        self.assertEqual((status, out), (1, ""))
        self.assertEqual(
            err, "keyx-client: authentication failed (the server does not know user 'carol')\n"
        )

    @defer.inlineCallbacks
    def test_connection_refused(self):
        free = reactor.listenTCP(0, protocol.Factory(), interface="127.0.0.1")
        port = free.getHost().port
        yield free.stopListening()
        status, out, err = yield self.run_client(
            b"", "--user", "alice", "--password-file", self.password_file,
            port=port, expect_server_connection=False,
        )
        self.assertEqual(status, 3)
        self.assertEqual(err, f"keyx-client: cannot connect to 127.0.0.1:{port}: connection refused\n")


class HandshakeOutcomeTests(unittest.TestCase):
    """How ``keyx-client eke`` reports a handshake that does not succeed:
    the client runs in trial's reactor against a scripted server."""

    def setUp(self):
        self.password_file = os.path.abspath(self.mktemp())
        with open(self.password_file, "w") as f:
            f.write("open sesame\n")
        os.chmod(self.password_file, 0o600)
        self.clients = []
        clients = self.clients

        from twisted_keyx.eke.protocol import EKEClientFactory

        class Recorded(EKEClientFactory.protocol):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                clients.append(self)

        self.patch(EKEClientFactory, "protocol", Recorded)

    async def scripted(self, script, *options):
        """Run the client against a server that follows ``script``:
        (status, stdout, stderr)."""
        factory = ScriptedFactory(ScriptedLineServer, script)
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        args = client_module.build_parser().parse_args([
            "eke", "--host", "127.0.0.1", "--port", str(port.getHost().port),
            "--user", "alice", "--password-file", self.password_file, *options,
        ])
        out, err = io.StringIO(), io.StringIO()
        status = await client_module.run(reactor, args, out, err)
        await defer.gatherResults([c.disconnected for c in self.clients])
        await factory.allLost()
        return status, out.getvalue(), err.getvalue()

    def assertOutcome(self, script, status, message, *options):
        async def run():
            self.assertEqual(await self.scripted(script, *options),
                             (status, "", f"keyx-client: {message}\n"))
        return defer.Deferred.fromCoroutine(run())

    def test_timeout(self):
        return self.assertOutcome(
            [None], 3, "the handshake did not finish within 0.3 seconds", "--timeout", "0.3")

    def test_timeout_while_the_password_is_stretched(self):
        """scrypt runs in a thread: --timeout fires while it does."""
        release, finished = threading.Event(), []
        real = crypto.derive_password_key

        def held(*args):
            release.wait(5)  # the old code waited here on the reactor thread
            finished.append(True)
            return real(*args)

        self.patch(crypto, "derive_password_key", held)
        self.addCleanup(release.set)
        yes = messages.format_yes(b"s" * messages.SALT_SIZE, crypto.DEFAULT_SCRYPT)

        async def run():
            outcome = await self.scripted([yes, None], "--timeout", "0.3")
            self.assertEqual(finished, [])  # the client gave up while scrypt ran
            self.assertEqual(outcome, (
                3, "", "keyx-client: the handshake did not finish within 0.3 seconds\n"))
        return defer.Deferred.fromCoroutine(run())

    def test_server_hangs_up(self):
        return self.assertOutcome(
            [CLOSE], 3, "the server closed the connection while awaiting yes or no (step 2)")

    def test_bad_response_has_no_framing_hint(self):
        return self.assertOutcome(
            [b"maybe"], 1, "bad response from the server while awaiting yes or no (step 2)")

    def test_eke_against_a_dh_port_asks_if_it_is_one(self):
        async def run():
            server = TrackingDHServerFactory(ffdh.named_group("ffdhe2048"))
            port = reactor.listenTCP(0, server, interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            args = client_module.build_parser().parse_args([
                "eke", "--host", "127.0.0.1", "--port", str(port.getHost().port),
                "--user", "alice", "--password-file", self.password_file])
            out, err = io.StringIO(), io.StringIO()
            status = await client_module.run(reactor, args, out, err)
            await defer.gatherResults([c.disconnected for c in self.clients])
            await server.allLost()
            self.assertEqual((status, out.getvalue(), err.getvalue()), (3, "", (
                "keyx-client: the server closed the connection while awaiting yes or no "
                "(step 2): is this a DH port? (the server answered in the DH "
                "handshake's framing)\n")))
        return defer.Deferred.fromCoroutine(run())

    def test_server_refusal_is_an_authentication_failure(self):
        return self.assertOutcome(
            [b"authentication failed"], 1,
            "authentication failed (the server refused while the client was "
            "awaiting yes or no (step 2))")


class PasswordPromptTests(unittest.TestCase):
    def test_no_terminal(self):
        def no_terminal(prompt):
            warnings.warn("Can not control echo on the terminal.", getpass.GetPassWarning)
            raise AssertionError("read standard input")

        self.patch(getpass, "getpass", no_terminal)
        with self.assertRaises(client_module.ClientError) as caught:
            client_module._read_password(client_module.build_parser().parse_args(
                ["eke", "--user", "alice"]))
        self.assertEqual(str(caught.exception),
                         "no terminal to ask for the password; use --password-file")
        self.assertEqual(caught.exception.status, client_module.EXIT_USAGE)

    def test_ctrl_c_at_the_prompt(self):
        def interrupted(prompt):
            raise KeyboardInterrupt

        self.patch(getpass, "getpass", interrupted)
        with self.assertRaises(client_module.ClientError) as caught:
            client_module._read_password(client_module.build_parser().parse_args(
                ["eke", "--user", "alice"]))
        self.assertEqual((str(caught.exception), caught.exception.status),
                         ("interrupted", client_module.EXIT_INTERRUPTED))
        self.assertEqual(client_module.EXIT_INTERRUPTED, 130)

    def test_password_file_first_line(self):
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"  spaces kept \r\nsecond line\n")
        self.assertEqual(password.read_password_file(path), "  spaces kept ")

    def test_bad_user_name_is_a_usage_error(self):
        self.patch(sys, "stderr", io.StringIO())
        with self.assertRaises(SystemExit) as caught:
            client_module.build_parser().parse_args(["eke", "--user", "two words"])
        self.assertEqual(caught.exception.code, 2)


def _handshake_only(client):
    """keyx-client's _password_session without the chat: connect, await
    the handshake, call ``authenticated``, close."""

    async def session(reactor, args, out, console, factory, failures, authenticated=None,
                      then=None):
        protocol = await client.connect(reactor, args, factory)
        protocol.finished.addErrback(lambda failure: None)  # closed here, chat unused
        try:
            result = await client.await_handshake(reactor, args.timeout, protocol.authenticated,
                                                  failures)
            if authenticated is not None:
                authenticated(result, protocol)
        finally:
            protocol.transport.loseConnection()
            await protocol.disconnected
        return client.EXIT_OK

    return session


class SaltPinTests(unittest.TestCase):
    """A fake EKE server that shows every victim one fixed salt (to crack
    them all from one table) is refused once the real server's salt is
    pinned; the first login pins it (issue 24, item 13)."""

    timeout = 60

    def setUp(self):
        from twisted_keyx.eke import pins

        self.pins = pins
        self.config = os.path.abspath(self.mktemp())
        self.patch(os, "environ", dict(os.environ, XDG_CONFIG_HOME=self.config))
        self.password_file = os.path.abspath(self.mktemp())
        with open(self.password_file, "w") as f:
            f.write("open sesame\n")
        os.chmod(self.password_file, 0o600)

    def serve(self, users, port=0):
        factory = TrackingEKEServerFactory(users)
        listening = reactor.listenTCP(port, factory, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        return factory, listening

    async def login(self, port):
        args = client_module.build_parser().parse_args(
            ["eke", "--user", "alice", "--password-file", self.password_file,
             "--host", "127.0.0.1", "--port", str(port)])
        out, err = io.StringIO(), io.StringIO()
        self.patch(client_module, "_password_session", _handshake_only(client_module))
        status = await client_module.run(reactor, args, out, err)
        return status, err.getvalue()

    async def test_fake_server_with_another_salt_refused(self):
        real = users()
        factory, listening = self.serve(real)
        port = listening.getHost().port
        status, err = await self.login(port)
        self.assertEqual((status, err), (0, ""))
        await factory.allLost()
        pin = self.pins.EKEPins().find("127.0.0.1", port, "alice")
        self.assertEqual((pin.salt, pin.kdf), (real.lookup("alice").salt, crypto.DEFAULT_SCRYPT))
        self.assertEqual(pin.path, os.path.join(self.config, "twisted-keyx", "eke_salts"))
        # A second login to the real server: the same salt, accepted.
        self.assertEqual(await self.login(port), (0, ""))
        await factory.allLost()
        # The real server stops; a fake one takes its port, one salt for all.
        await listening.stopListening()
        fake_users = Users(alice=new_user("alice", "anything", kdf=crypto.DEFAULT_SCRYPT))
        fake, _ = self.serve(fake_users, port)
        status, err = await self.login(port)
        self.assertEqual(status, 1)
        self.assertTrue(err.startswith(f"keyx-client: REFUSED: [127.0.0.1]:{port} shows user "
                                       "alice another salt or scrypt cost"), err)
        self.assertIn(f"pinned in {pin.location}", err)
        self.assertEqual(err.count("\n"), 1)
        await fake.allLost()
        # Nothing derived from the password reached the fake server: it
        # waited for step 3 when the client left.
        [connection] = fake.connections
        self.assertEqual(connection.handshake.state.value, "awaiting E_pw(pk) (step 3)")

    async def test_unreadable_pins_stop_before_the_password(self):
        # The EKE entry's client_pin reads the pins before anything else.
        os.makedirs(os.path.join(self.config, "twisted-keyx", "eke_salts"))
        self.password_file = "/nonexistent"  # never read
        status, err = await self.login(9)
        self.assertEqual(status, 1)
        self.assertTrue(err.startswith("keyx-client: cannot read "), err)
        self.assertIn("eke_salts", err)
        self.assertEqual(err.count("\n"), 1)

    def test_the_floor_is_the_default_cost(self):
        self.assertEqual(crypto.DEFAULT_KDF_LIMITS.min_memory, crypto.DEFAULT_SCRYPT.memory)
        cheap = crypto.ScryptParameters(n=2**14, r=8, p=1)  # 16 MiB: accepted before
        self.assertRaises(ValueError, crypto.DEFAULT_KDF_LIMITS.check, cheap)


class HelpTests(unittest.TestCase):
    def test_help_gives_every_exit_status_it_can_end_with(self):
        # keyx-client eke ends with 4 (too many attempts) and 5 (the server
        # cannot check passwords) as opaque does; its help listed 0-3 and 130.
        parser = client_module.build_parser()
        commands = next(action for action in parser._actions
                        if action.choices and "eke" in action.choices)
        text = " ".join(commands.choices["eke"].description.split())
        for status in (client_module.EXIT_TOO_MANY_ATTEMPTS,
                       client_module.EXIT_SERVER_UNAVAILABLE):
            self.assertIn(f" {status} if the server", text)
