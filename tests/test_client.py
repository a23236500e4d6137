"""``keyx-client dh`` as a user meets it: output, exit codes, one-line errors.

The client runs in trial's reactor (``client.run``) against servers listening
on 127.0.0.1; two tests run ``main`` in a separate interpreter, as the
``keyx-client`` script does.
"""

import io
import json
import os
import socket
import sys

from twisted.internet import defer, reactor, task, utils
from twisted.internet.protocol import Factory, Protocol
from twisted.trial import unittest

import twisted_keyx
from twisted_keyx.cli import client
from twisted_keyx.groups import ffdh
from twisted_keyx.groups import check as groupcheck
from twisted_keyx.groups import registry as groups
from twisted_keyx.trust import knownhosts
from twisted_keyx.dh.protocol import CLIENT_MAX_MESSAGE_LENGTH, DHClientProtocol
from twisted_keyx.core.transcript import session_key_fingerprint

from .helpers import (
    CLOSE,
    CollectingProcess,
    ScriptedFactory,
    ScriptedFramedServer,
    ScriptedLineServer,
    TrackingDHServerFactory,
    TrackingEKEServerFactory,
    Users,
    data_path,
    dh_spki_pem,
    read_data,
    tracked,
)

GROUP = ffdh.named_group("ffdhe2048")
PARAMETERS = read_data("ffdhe2048.pem")
CUSTOM_PARAMETERS = read_data("dhparam-2048.pem")
HEY_THERE = b"Hey there!"


def unauthenticated(port):
    """The warning for a server on 127.0.0.1 without a host key."""
    return "keyx-client: " + knownhosts.unauthenticated_text(f"[127.0.0.1]:{port}")


class _Loopback:
    """Servers on 127.0.0.1; the client's DH protocols are kept so that each
    test waits for their sockets to close."""

    def setUp(self):
        # Keep the client's protocols so each test waits for their sockets
        # to close (client.run_dh builds its protocols with DHClientFactory).
        self.clients = []
        clients = self.clients

        class Recorded(tracked(DHClientProtocol)):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                clients.append(self)

        self.patch(client.DHClientFactory, "protocol", Recorded)

    def listen(self, factory):
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    async def serve_and_run_dh(self, server, *options):
        """``keyx-client dh *options`` against ``server`` (a tracking
        factory), listening now: ``(port, status, stdout, stderr)`` once
        both sides' sockets are closed."""
        port = self.listen(server)
        args = client.build_parser().parse_args(
            ["dh", "--host", "127.0.0.1", "--port", str(port), *options])
        out, err = io.StringIO(), io.StringIO()
        status = await client.run(reactor, args, out, err)
        await defer.gatherResults([c.lost for c in self.clients if c.transport])
        await server.allLost()
        return port, status, out.getvalue(), err.getvalue()


class ClientTests(_Loopback, unittest.TestCase):
    def run_client(self, port, *options, server=None):
        """Run ``keyx-client dh`` against ``port``: (status, stdout, stderr)."""
        args = client.build_parser().parse_args(
            ["dh", "--host", "127.0.0.1", "--port", str(port), *options])
        out, err = io.StringIO(), io.StringIO()

        async def run():
            status = await client.run(reactor, args, out, err)
            # Which connections were closed when the command returned (after
            # it the reactor stops, and an open socket would leak).
            self.closed_on_return = [c.lost.called for c in self.clients if c.transport]
            # The client builds its protocol before connecting: only those
            # that got a connection have one to lose.
            await defer.gatherResults([c.lost for c in self.clients if c.transport])
            if server is not None:
                await server.allLost()
            return status, out.getvalue(), err.getvalue()

        return defer.Deferred.fromCoroutine(run())

    def assertOneLineError(self, outcome, status, message):
        got_status, out, err = outcome
        self.assertEqual((got_status, out, err), (status, "", f"keyx-client: {message}\n"))

    async def scripted(self, script, *options, hang_up_at_once=False):
        factory = ScriptedFactory(ScriptedFramedServer, script, hang_up_at_once)
        port = self.listen(factory)
        return await self.run_client(port, *options, server=factory)

    def test_text_output(self):
        async def run():
            server = TrackingDHServerFactory(GROUP)
            port = self.listen(server)
            status, out, err = await self.run_client(port, server=server)
            [result] = server.results
            # No host key: Host key? refused, then plain Hello, with a warning.
            self.assertEqual((status, err), (0, unauthenticated(port)))
            self.assertEqual(out, (
                "Group: ffdhe2048 (2048 bits)\n"
                "Host key fingerprint: none (unauthenticated)\n"
                f"Shared Secret: {result.shared_secret.hex()}\n"
                f"Session key: {result.session_key.hex()}\n"
                f"Session key fingerprint: {session_key_fingerprint(result.session_key)}\n"
            ))
        return defer.Deferred.fromCoroutine(run())

    def test_json_output(self):
        async def run():
            server = TrackingDHServerFactory(ffdh.named_group("ffdhe3072"))
            port = self.listen(server)
            status, out, err = await self.run_client(port, "--json", server=server)
            [result] = server.results
            self.assertEqual((status, err), (0, unauthenticated(port)))
            self.assertEqual(out.count("\n"), 1)
            self.assertEqual(json.loads(out), {
                "group": "ffdhe3072",
                "bits": 3072,
                "shared_secret": result.shared_secret.hex(),
                "session_key": result.session_key.hex(),
                "fingerprint": session_key_fingerprint(result.session_key),
                "host_key_fingerprint": None,
            })
        return defer.Deferred.fromCoroutine(run())

    def test_connection_refused(self):
        async def run():
            port = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
            number = port.getHost().port
            await port.stopListening()
            self.assertOneLineError(await self.run_client(number), 3,
                                    f"cannot connect to 127.0.0.1:{number}: connection refused")
        return defer.Deferred.fromCoroutine(run())

    def test_ipv6_address_in_brackets(self):
        async def run():
            port = reactor.listenTCP(0, Factory(), interface="::1")
            number = port.getHost().port
            await port.stopListening()
            self.assertOneLineError(
                await self.run_client(number, "--host", "::1"), 3,
                f"cannot connect to [::1]:{number}: connection refused")
        return defer.Deferred.fromCoroutine(run())

    def test_connect_timeout(self):
        if not sys.platform.startswith("linux"):
            raise unittest.SkipTest("relies on Linux dropping SYNs when the backlog is full")
        # A listener that never accepts, with its backlog already full: the
        # kernel drops the client's SYN and the connection attempt times out.
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        filler = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.addCleanup(filler.close)

        async def run():
            self.assertOneLineError(await self.run_client(port, "--timeout", "0.3"), 3,
                                    f"cannot connect to 127.0.0.1:{port}: timed out")
        return defer.Deferred.fromCoroutine(run())

    def test_handshake_timeout(self):
        async def run():
            outcome = await self.scripted([None], "--timeout", "0.3")
            self.assertOneLineError(outcome, 3,
                                    "the handshake did not finish within 0.3 seconds"
                                    + client.SILENT_SERVER_HINT)
            # The timeout aborted the connection; its socket is closed before
            # the command returns, not left for a reactor turn that never comes.
            self.assertEqual(self.closed_on_return, [True])
        return defer.Deferred.fromCoroutine(run())

    def test_dh_against_an_eke_port_asks_if_it_is_one(self):
        async def run():
            server = TrackingEKEServerFactory(Users())
            outcome = await self.run_client(self.listen(server), "--timeout", "0.5")
            await server.allLost()
            self.assertOneLineError(outcome, 3, (
                "the handshake did not finish within 0.5 seconds; the server sent "
                "nothing: is this an EKE port? (an EKE server waits for a user name)"))
        return defer.Deferred.fromCoroutine(run())

    def test_dh_against_a_line_server_asks_if_it_is_an_eke_port(self):
        """A server that answers with an EKE refusal line at once."""
        lost = defer.Deferred()

        class Refusing(Protocol):
            def connectionMade(self):
                self.transport.write(b"authentication failed\n")
                self.transport.loseConnection()

            def connectionLost(self, reason):
                lost.callback(None)

        async def run():
            status, out, err = await self.run_client(self.listen(Factory.forProtocol(Refusing)))
            await lost
            self.assertEqual((status, out), (1, ""))
            self.assertTrue(err.startswith("keyx-client: "), err)
            self.assertTrue(err.endswith(
                ": is this an EKE port? (the server answered with a line, as EKE does)\n"), err)
        return defer.Deferred.fromCoroutine(run())

    def test_server_hangs_up_at_once(self):
        async def run():
            outcome = await self.scripted([], hang_up_at_once=True)
            self.assertOneLineError(outcome, 3,
                                    "the server closed the connection while awaiting Hey there!")
        return defer.Deferred.fromCoroutine(run())

    def test_server_hangs_up_mid_handshake(self):
        async def run():
            outcome = await self.scripted([HEY_THERE, PARAMETERS, CLOSE])
            self.assertOneLineError(
                outcome, 3,
                "the server closed the connection while awaiting the server's public key or "
                "ciphertext")
        return defer.Deferred.fromCoroutine(run())

    def test_x942_parameters_with_q_half_of_p(self):
        # X9.42 parameters with q = (p - 1) / 2 pass OpenSSL's check, but
        # OpenSSL's key generation fails for them: the client printed an
        # InternalError.  Its keys are GMP's now; it answers with message 5.
        async def run():
            outcome = await self.scripted(
                [HEY_THERE, read_data("dhx-2048-safe-q.pem"), CLOSE])
            self.assertOneLineError(
                outcome, 3,
                "the server closed the connection while awaiting the server's public key or "
                "ciphertext")
        return defer.Deferred.fromCoroutine(run())

    def test_invalid_server_key(self):
        async def run():
            bad_key = b"Server public key:" + dh_spki_pem(GROUP.p, 2, 1, GROUP.q)
            outcome = await self.scripted([HEY_THERE, PARAMETERS, bad_key])
            self.assertOneLineError(outcome, 1,
                                    "invalid server public key: public value out of range")
        return defer.Deferred.fromCoroutine(run())

    def test_server_refuses(self):
        async def run():
            # Host key? refused: the fallback's second connection with Hello
            # is refused as well.
            outcome = await self.scripted([b"I do not understand you, hanging up"])
            status, out, err = outcome
            self.assertEqual((status, out), (1, ""))
            self.assertTrue(err.endswith(
                "keyx-client: the server refused: I do not understand you, hanging up\n"))
            self.assertIn("offered no host key signature", err)
        return defer.Deferred.fromCoroutine(run())

    def test_bad_response(self):
        async def run():
            outcome = await self.scripted([HEY_THERE, HEY_THERE])
            self.assertOneLineError(outcome, 1,
                                    "bad response from the server while awaiting the parameters"
                                    + client.OTHER_FRAMING_HINT[False])
        return defer.Deferred.fromCoroutine(run())

    def test_bad_parameters(self):
        async def run():
            small = read_data("dhparam-1024.pem")
            outcome = await self.scripted([HEY_THERE, small])
            self.assertOneLineError(
                outcome, 1,
                "unusable parameters from the server: the modulus has 1024 bits; "
                "at least 2048 are required")
        return defer.Deferred.fromCoroutine(run())

    def hold_group_checks(self):
        """Hold every check of a custom group (the child process's part):
        the list of (parameters, Deferred) and of the checks cancelled."""
        held, cancelled = [], []

        def check_in_child(parameters, reactor=None, argv=None):
            held.append((parameters, defer.Deferred(cancelled.append)))
            return held[-1][1]

        self.patch(groupcheck, "check_in_child", check_in_child)
        return held, cancelled

    def test_timeout_holds_while_the_group_is_checked(self):
        async def run():
            held, cancelled = self.hold_group_checks()
            outcome = await self.scripted([HEY_THERE, CUSTOM_PARAMETERS, None],
                                          "--timeout", "0.3")
            self.assertOneLineError(outcome, 3,
                                    "the handshake did not finish within 0.3 seconds")
            [(parameters, check)] = held
            self.assertEqual(parameters.p.bit_length(), 2048)
            self.assertEqual(cancelled, [check])  # the child is killed
            self.assertEqual(self.closed_on_return, [True])
        return defer.Deferred.fromCoroutine(run())

    def test_the_group_check_decides(self):
        async def run():
            held, cancelled = self.hold_group_checks()
            server = ScriptedFactory(ScriptedFramedServer, [HEY_THERE, CUSTOM_PARAMETERS, None])
            done = self.run_client(self.listen(server), server=server)
            while not held:
                await task.deferLater(reactor, 0.01, lambda: None)
            held[0][1].errback(groups.GroupError("p is not a safe prime"))
            self.assertOneLineError(await done, 1,
                                    "unusable parameters from the server: p is not a safe prime")
        return defer.Deferred.fromCoroutine(run())

    def test_custom_group_checked_in_a_child(self):
        async def run():
            group = ffdh.load_parameters_file(data_path("dhparam-2048.pem"))
            server = TrackingDHServerFactory(group)
            checks = []
            check_in_child = groupcheck.check_in_child

            def counted(*args, **kwargs):
                checks.append(args)
                return check_in_child(*args, **kwargs)

            self.patch(groupcheck, "check_in_child", counted)
            status, out, err = await self.run_client(self.listen(server), server=server)
            [result] = server.results
            self.assertEqual(status, 0)
            self.assertIn("Group: custom (2048 bits)\n", out)
            self.assertIn(f"Session key: {result.session_key.hex()}\n", out)
            self.assertEqual(len(checks), 1)
        return defer.Deferred.fromCoroutine(run())

    def test_oversized_frame(self):
        async def run():
            size = CLIENT_MAX_MESSAGE_LENGTH + 1
            outcome = await self.scripted([b"x" * size])
            self.assertOneLineError(outcome, 1, f"the server sent a frame of {size} bytes"
                                    + client.OTHER_FRAMING_HINT[False])
        return defer.Deferred.fromCoroutine(run())


class _HeardServer(ScriptedFramedServer):
    """Says nothing; fires ``factory.heard`` with itself at the client's
    first message (by then the client's reactor runs, its SIGINT handler in
    place)."""

    def stringReceived(self, string):
        self.factory.heard.callback(self)


class _HeardLineServer(ScriptedLineServer):
    def lineReceived(self, line):
        self.factory.heard.callback(self)


def silent_server(server_class=_HeardServer):
    factory = ScriptedFactory(server_class, [])
    factory.heard = defer.Deferred()
    return factory


class InterruptionTests(_Loopback, unittest.TestCase):
    """Ctrl-C stops the reactor, which closes the connection: that is
    reported as an interruption, not as the server hanging up."""

    def interrupted_run(self, *argv):
        server = silent_server()
        port = self.listen(server)
        args = client.build_parser().parse_args(
            [*argv, "--host", "127.0.0.1", "--port", str(port)])
        out, err = io.StringIO(), io.StringIO()
        interruption = client.Interruption(err)

        async def run():
            running = defer.Deferred.fromCoroutine(
                client.run(reactor, args, out, err, interruption))
            connection = await server.heard
            interruption.reactorStopping()  # what SIGINT's reactor.stop() fires first
            connection.transport.loseConnection()  # then the reactor closes every socket
            status = await running
            await defer.gatherResults([c.lost for c in self.clients if c.transport])
            await server.allLost()
            return status, out.getvalue(), err.getvalue()

        return defer.Deferred.fromCoroutine(run())

    def test_lost_connection_after_interruption_is_not_reported(self):
        async def run():
            self.assertEqual(await self.interrupted_run("dh"),
                             (130, "", "keyx-client: interrupted\n"))
        return defer.Deferred.fromCoroutine(run())

    def test_eke_lost_connection_after_interruption_is_not_reported(self):
        password_file = self.mktemp()
        with open(password_file, "w") as f:
            f.write("pw\n")
        # Its warning goes where run() writes (it went to sys.stderr: a
        # stray line in the suite's output).
        os.chmod(password_file, 0o644)

        async def run():
            server = silent_server(_HeardLineServer)
            port = self.listen(server)
            args = client.build_parser().parse_args(
                ["eke", "--user", "alice", "--password-file", password_file,
                 "--host", "127.0.0.1", "--port", str(port)])
            out, err = io.StringIO(), io.StringIO()
            interruption = client.Interruption(err)
            running = defer.Deferred.fromCoroutine(
                client.run(reactor, args, out, err, interruption))
            connection = await server.heard
            interruption.reactorStopping()
            connection.transport.loseConnection()
            self.assertEqual(await running, 130)
            await server.allLost()
            self.assertEqual((out.getvalue(), err.getvalue()), (
                "", f"keyx-client: warning: {password_file} is readable by group or others "
                    f"(mode 0644); chmod 600 {password_file}\n"
                    "keyx-client: interrupted\n"))
        return defer.Deferred.fromCoroutine(run())

    def test_shutdown_after_the_command_is_not_an_interruption(self):
        async def run():
            server = TrackingDHServerFactory(GROUP)
            args = client.build_parser().parse_args(
                ["dh", "--host", "127.0.0.1", "--port", str(self.listen(server))])
            out, err = io.StringIO(), io.StringIO()
            interruption = client.Interruption(err)
            status = await client.run(reactor, args, out, err, interruption)
            await server.allLost()
            interruption.reactorStopping()  # task.react stopping the reactor
            self.assertEqual((status, err.getvalue(), interruption.happened),
                             (0, unauthenticated(args.port), False))
        return defer.Deferred.fromCoroutine(run())

    def test_watch_uses_the_before_shutdown_trigger(self):
        triggers = []

        class Reactor:
            def addSystemEventTrigger(self, phase, event, callable):
                triggers.append((phase, event, callable))

        interruption = client.Interruption(io.StringIO())
        interruption.watch(Reactor())
        self.assertEqual(triggers, [("before", "shutdown", interruption.reactorStopping)])


class _UsageErrors:
    def usage_error(self, *argv):
        """Run keyx-client with ``argv``; (exit status, stderr) of its usage error."""
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        with self.assertRaises(SystemExit) as caught:
            client.main(list(argv), out=io.StringIO(), err=err)
        return caught.exception.code, err.getvalue()


class UsageTests(_UsageErrors, unittest.TestCase):
    def test_bad_port(self):
        for port in ("0", "65536", "http"):
            status, err = self.usage_error("dh", "--port", port)
            self.assertEqual(status, 2)
            self.assertIn("argument --port:", err)

    def test_bad_timeout(self):
        for timeout in ("0", "-1", "soon"):
            self.assertEqual(self.usage_error("dh", "--timeout", timeout)[0], 2)

    def test_no_command(self):
        self.assertEqual(self.usage_error()[0], 2)


class MainTests(unittest.TestCase):
    """``main`` as the keyx-client script runs it, in a separate interpreter
    that imports this checkout's code."""

    def keyx_client(self, *argv):
        root = os.path.dirname(os.path.dirname(os.path.abspath(twisted_keyx.__file__)))
        env = dict(os.environ, PYTHONPATH=root)
        cwd = self.mktemp()
        os.mkdir(cwd)
        return utils.getProcessOutputAndValue(
            sys.executable, ["-W", "error", "-m", "twisted_keyx.cli.client", *argv],
            env=env, path=cwd)

    def test_json_and_exit_0(self):
        async def run():
            server = TrackingDHServerFactory(GROUP)
            port = reactor.listenTCP(0, server, interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            number = port.getHost().port
            out, err, code = await self.keyx_client(
                "dh", "--host", "127.0.0.1", "--port", str(number), "--json")
            await server.allLost()
            self.assertEqual((code, err), (0, unauthenticated(number).encode("ascii")))
            [result] = server.results
            self.assertEqual(json.loads(out)["shared_secret"], result.shared_secret.hex())
        return defer.Deferred.fromCoroutine(run())

    def test_refused_exit_3(self):
        async def run():
            port = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
            number = port.getHost().port
            await port.stopListening()
            out, err, code = await self.keyx_client("dh", "--host", "127.0.0.1",
                                                    "--port", str(number))
            self.assertEqual((code, out), (3, b""))
            self.assertEqual(
                err, f"keyx-client: cannot connect to 127.0.0.1:{number}: "
                     "connection refused\n".encode())
        return defer.Deferred.fromCoroutine(run())


class HostTests(_UsageErrors, unittest.TestCase):
    """--host takes a host name or an IP address, checked before connecting:
    HostnameEndpoint only says "invalid hostname" when asked to connect, and
    task.react then prints a traceback."""

    def test_not_a_host_is_a_usage_error(self):
        for command in (["dh"], ["eke", "--user", "alice"]):
            for host, hint in [
                ("", ""),
                ("a b", ""),
                ("under_score", ""),
                ("-dash.example", ""),
                ("a" * 64 + ".example", ""),
                ("localhost:27777", "; give the port with --port, not as host:port"),
                ("[::1]", "; write an IPv6 address without brackets"),
                ("/path/k.sock", "; keyx-client connects over TCP only"),
            ]:
                status, err = self.usage_error(*command, f"--host={host}")
                self.assertEqual(status, 2)
                self.assertEqual(
                    err.splitlines()[-1],
                    f"keyx-client {command[0]}: error: argument --host: "
                    f"not a host name or an IP address: {host!r}{hint}")

    def test_host_names_and_addresses(self):
        parser = client.build_parser()
        for host in ("localhost", "localhost.", "example.org", "b\u00fccher.de",
                     "x-1.example", "127.0.0.1", "::1", "fe80::1%lo"):
            self.assertEqual(parser.parse_args(["dh", "--host", host]).host, host)

    def test_host_the_endpoint_refuses_is_a_usage_error(self):
        # IDNA 2003 (the check above) takes a snowman; Twisted's IDNA 2008
        # does not.  The endpoint's ValueError is one line, exit status 2.
        args = client.build_parser().parse_args(["dh", "--host", "\u2603.net"])
        out, err = io.StringIO(), io.StringIO()

        async def run():
            status = await client.run(reactor, args, out, err)
            self.assertEqual((status, out.getvalue(), err.getvalue()), (
                2, "", "keyx-client: not a host name or an IP address: '\u2603.net'\n"))
        return defer.Deferred.fromCoroutine(run())


class EarlyInterruptTests(unittest.TestCase):
    """Ctrl-C before the reactor runs (while Python imports the client or
    parses its arguments) is one line and status 130, as later."""

    def setUp(self):
        self.err = io.StringIO()
        self.patch(sys, "stderr", self.err)

    def interrupt_import_of(self, name):
        """Make importing ``name`` raise KeyboardInterrupt, as Ctrl-C does
        in the middle of it; the loaded module is put back afterwards."""
        saved = sys.modules.pop(name, None)
        if saved is not None:
            self.addCleanup(sys.modules.__setitem__, name, saved)

        class Interrupting:
            def find_spec(self, fullname, path=None, target=None):
                if fullname == name:
                    raise KeyboardInterrupt
                return None

        finder = Interrupting()
        sys.meta_path.insert(0, finder)
        self.addCleanup(sys.meta_path.remove, finder)

    def test_during_imports(self):
        from twisted_keyx.cli import scripts

        for entry, module, program in ((scripts.keyx_client, "twisted_keyx.cli.client", "keyx-client"),
                                       (scripts.keyx_admin, "twisted_keyx.cli.admin", "keyx-admin")):
            self.err.truncate(0)
            self.err.seek(0)
            self.interrupt_import_of(module)
            self.assertEqual(entry(), 130)
            self.assertEqual(self.err.getvalue(), f"{program}: interrupted\n")

    def test_during_argument_parsing(self):
        def interrupted():
            raise KeyboardInterrupt

        self.patch(client, "build_parser", interrupted)
        self.assertEqual(client.main(["dh"]), 130)
        self.assertEqual(self.err.getvalue(), "keyx-client: interrupted\n")

    def test_entry_points_are_the_launchers(self):
        import configparser

        setup = configparser.ConfigParser()
        setup.read(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
            twisted_keyx.__file__))), "setup.cfg"))
        scripts = setup["options.entry_points"]["console_scripts"].split()
        self.assertEqual(scripts, ["keyx-client", "=", "twisted_keyx.cli.scripts:keyx_client",
                                   "keyx-admin", "=", "twisted_keyx.cli.scripts:keyx_admin",
                                   "keyx-lab", "=", "twisted_keyx.cli.scripts:keyx_lab"])


class SigintTests(unittest.TestCase):
    """A real ``keyx-client dh`` waiting for a server that never answers
    gets SIGINT, as from Ctrl-C."""

    timeout = 30

    def test_ctrl_c_while_awaiting_the_server(self):
        async def run():
            server = silent_server()
            port = reactor.listenTCP(0, server, interface="127.0.0.1")
            self.addCleanup(port.stopListening)
            root = os.path.dirname(os.path.dirname(os.path.abspath(twisted_keyx.__file__)))
            process = CollectingProcess()
            transport = reactor.spawnProcess(
                process, sys.executable,
                [sys.executable, "-W", "error", "-m", "twisted_keyx.cli.client", "dh",
                 "--host", "127.0.0.1", "--port", str(port.getHost().port)],
                env=dict(os.environ, PYTHONPATH=root))
            await server.heard  # the Hello: the client's reactor is running
            transport.signalProcess("INT")
            status = await process.ended
            await server.allLost()
            self.assertEqual((status, process.out, process.err),
                             (130, b"", b"keyx-client: interrupted\n"))
        return defer.Deferred.fromCoroutine(run())
