"""``twistd keyx``: options, the service they build, and the plugin dropin."""

import importlib.metadata
import io
import os
import re
import socket
import stat
import sys
import sysconfig

from twisted.application.service import IServiceMaker
from twisted.internet import defer, endpoints, error, reactor, task, utils
from twisted.internet.testing import MemoryReactor
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial import unittest

from twisted_keyx.opaque.protocol import OPAQUEServerFactory
from twisted_keyx.trust.knownservers import server_key_fingerprint
from twisted_keyx.service import limits
from twisted_keyx.groups import ffdh
from twisted_keyx.service import endpointspec
from twisted_keyx.service import tap
from twisted_keyx.service import userfile as userstore
from twisted_keyx.dh.protocol import DHClientProtocol, DHServerFactory
from twisted_keyx.eke.protocol import EKEServerFactory

from .helpers import data_path, read_data, tap_options, tracked


parse = tap_options


class OptionsTests(unittest.TestCase):
    def test_defaults(self):
        options = parse()
        self.assertEqual(options["dh"], ["tcp:7777"])
        self.assertIs(options.config.settings["dh"].group, ffdh.named_group("ffdhe2048"))
        self.assertFalse(options["show-secrets"])

    def test_repeated_dh(self):
        options = parse("--dh", "tcp:7001", "--dh", "unix:/tmp/keyx-test.sock",
                        "--dh=tcp:7002:interface=127.0.0.1")
        self.assertEqual(options["dh"], ["tcp:7001", "unix:/tmp/keyx-test.sock",
                                         "tcp:7002:interface=127.0.0.1"])

    def test_help_prints_defaults_as_readme_does(self):
        text = tap.Options().getUsage()
        self.assertIn("[default: 30]", text)
        self.assertIn("[default: 300]", text)
        self.assertNotIn(".0]", text)
        self.assertEqual(parse()["timeout"], 30.0)

    def test_twistd_option_after_keyx_says_where_it_goes(self):
        for argv, option in ((["-n"], "-n"), (["--logfile", "k.log"], "--logfile"),
                             (["--dh", "tcp:0", "--pidfile=k.pid"], "--pidfile")):
            with self.assertRaises(usage.UsageError) as caught:
                parse(*argv)
            self.assertEqual(str(caught.exception), (
                f"option {option} not recognized: twistd's own options go before "
                f"keyx, as in: twistd {option} ... keyx"))
        with self.assertRaises(usage.UsageError) as caught:
            parse("--no-such-option")
        self.assertEqual(str(caught.exception), "option --no-such-option not recognized")

    def test_defaults_are_not_shared(self):
        parse("--dh", "tcp:7001")
        self.assertEqual(parse()["dh"], ["tcp:7777"])

    def test_limits_must_be_finite_numbers(self):
        for option in ("--timeout", "--idle-timeout"):
            for value in ("nan", "inf", "-1"):
                with self.assertRaises(usage.UsageError) as caught:
                    parse(option, value)
                self.assertEqual(str(caught.exception),
                                 f"{option} must be a number, 0 (no limit) or more")

    def test_users_in_a_missing_folder(self):
        folder = os.path.abspath(self.mktemp())
        with self.assertRaises(usage.UsageError) as caught:
            parse("--users", os.path.join(folder, "users.json"))
        self.assertIn(f"the folder {folder} does not exist", str(caught.exception))

    def test_group(self):
        for name in ffdh.NAMED_GROUP_PRIMES:
            self.assertIs(parse("--group", name).config.settings["dh"].group,
                          ffdh.named_group(name))

    def test_params(self):
        for name, label in [("dhparam-2048.pem", b"DH PARAMETERS"),
                            ("dhx-2048.pem", b"X9.42 DH PARAMETERS")]:
            group = parse("--params", data_path(name)).config.settings["dh"].group
            self.assertEqual(group.bits, 2048)
            self.assertTrue(group.parameters_pem.startswith(b"-----BEGIN " + label))
            self.assertEqual(group.name, "file:" + data_path(name))

    def test_show_secrets(self):
        self.assertTrue(parse("--show-secrets")["show-secrets"])

    def assertUsageError(self, args, message):
        with self.assertRaises(usage.UsageError) as caught:
            parse(*args)
        self.assertIn(message, str(caught.exception))

    def test_group_and_params(self):
        self.assertUsageError(["--group", "ffdhe2048", "--params", data_path("dhparam-2048.pem")],
                              "give either --group or --params, not both")

    def test_unknown_group(self):
        self.assertUsageError(["--group", "modp2048"], "unknown group 'modp2048'")

    def test_bad_endpoints(self):
        for description in ("tcp:notaport", "bogus:1", "",
                            "ssl:7443:privateKey=/nonexistent/key.pem",
                            "ssl:7443:privateKey=" + data_path("dhparam-2048.pem")):
            self.assertUsageError(["--dh", description], f"bad endpoint {description!r}")

    def test_endpoints_that_parse_but_cannot_listen(self):
        # Twisted's parser takes these; only bind() at start would refuse them.
        for option, description, why in (
            ("--dh", "tcp:99999", "port 99999 is not between 0 and 65535"),
            ("--dh", "tcp:-1", "port -1 is not between 0 and 65535"),
            ("--eke", "tcp:port=65536:interface=127.0.0.1",
             "port 65536 is not between 0 and 65535"),
            ("--dh-raw", "tcp6:70000", "port 70000 is not between 0 and 65535"),
            ("--dh", "unix:", "no socket path"),
            ("--eke", "unix:address=", "no socket path"),
            # It started, each connection awaiting two PROXY headers.
            ("--opaque", "haproxy:haproxy:tcp:0", "haproxy: given twice"),
        ):
            with self.assertRaises(usage.UsageError) as caught:
                parse(option, description)
            self.assertEqual(str(caught.exception), f"bad endpoint {description!r}: {why}")

    def test_port_range_edges_are_accepted(self):
        options = parse("--dh", "tcp:0", "--eke", "tcp:65535:interface=127.0.0.1")
        self.assertEqual((options["dh"], options["eke"]),
                         (["tcp:0"], ["tcp:65535:interface=127.0.0.1"]))

    def test_bad_params_files(self):
        self.assertUsageError(["--params", "/nonexistent/params.pem"],
                              "cannot read /nonexistent/params.pem")
        self.assertUsageError(["--params", data_path("dhparam-1024.pem")],
                              "the modulus has 1024 bits")
        self.assertUsageError(["--params", data_path("rsa-2048-public.pem")],
                              "unexpected PEM label")

    def test_help_mentions_every_option(self):
        text = " ".join(str(tap.Options()).split())
        for option in ("--dh=", "--group=", "--params=", "--show-secrets", "--version",
                       "--help", "ffdhe2048, ffdhe3072, ffdhe4096", "tcp:7777",
                       "DH PARAMETERS", "X9.42 DH PARAMETERS", "unix:", "ssl:"):
            self.assertIn(option, text)

    def test_idle_timeout_help_names_every_chat_it_cuts(self):
        # The limits' idle timer runs on every connection after its handshake:
        # the EKE and the OPAQUE chat (tests.test_limits); the help said EKE.
        text = " ".join(tap.Options().docs["idle-timeout"].split())
        self.assertIn("EKE", text)
        self.assertIn("OPAQUE", text)

    def test_help_has_no_stray_indentation(self):
        # Option descriptions come from docstrings; their indentation must not
        # show up as runs of spaces in --help.
        for line in str(tap.Options()).splitlines():
            # Option lines are "  --name=   description": drop the option
            # column; continuation lines are description only.
            text = line.strip()
            if text.startswith("-"):
                text = re.split(r"\s{2,}", text, maxsplit=1)[-1]
            self.assertNotIn("   ", text, line)

    def test_version(self):
        out = io.StringIO()
        self.patch(sys, "stdout", out)
        with self.assertRaises(SystemExit) as caught:
            parse("--version")
        self.assertEqual(caught.exception.code, 0)
        self.assertEqual(out.getvalue(), f"twisted-keyx {tap.__version__}\n")


class MakeServiceTests(unittest.TestCase):
    def make(self, *args):
        memory = MemoryReactor()
        service = tap.makeService(parse(*args), reactor=memory)
        service.startService()
        self.addCleanup(service.stopService)
        return service, memory

    def test_default_tcp(self):
        _, memory = self.make()
        # DH on 7777, EKE on 8088 and OPAQUE on 8089 by default.
        [(port, factory, _, interface), (eke_port, eke_factory, _, _),
         (opaque_port, opaque_factory, _, _)] = memory.tcpServers
        # Every factory is behind the daemon's connection policy (limits.py).
        factory, eke_factory = factory.wrappedFactory, eke_factory.wrappedFactory
        self.assertEqual((port, interface, eke_port, opaque_port), (7777, "", 8088, 8089))
        self.assertIsInstance(opaque_factory.wrappedFactory, OPAQUEServerFactory)
        self.assertIsInstance(eke_factory, EKEServerFactory)
        self.assertIsInstance(factory, DHServerFactory)
        self.assertIs(factory.group, ffdh.named_group("ffdhe2048"))
        self.assertFalse(factory.show_secrets)

    def test_opaque_gets_the_daemons_invitations_and_its_own_setup(self):
        folder = os.path.abspath(self.mktemp())
        os.mkdir(folder)
        service, memory = self.make("--users", os.path.join(folder, "users.json"),
                                    "--opaque-key", os.path.join(folder, "key"))
        [opaque] = [f.wrappedFactory for port, f, *_ in memory.tcpServers if port == 8089]
        settings = service.config.settings["opaque"]
        self.assertIs(opaque.invitations, settings.invitations)
        self.assertEqual(opaque.invitations.path, os.path.join(folder, "keyx-invitations.json"))
        self.assertIs(opaque.setup, settings.setup)
        self.assertEqual(settings.where, os.path.join(folder, "key"))

    def test_every_endpoint_given(self):
        socket = self.mktemp()
        _, memory = self.make(
            "--dh", "tcp:7001:interface=127.0.0.1", "--dh", f"unix:{socket}",
            "--dh", "ssl:7443:privateKey=" + data_path("tls-server.pem"),
            "--group", "ffdhe3072", "--show-secrets", "--eke", "tcp:8001",
        )
        [(tcp_port, tcp_factory, _, interface), (eke_port, eke_factory, _, _),
         _opaque] = memory.tcpServers
        eke_factory = eke_factory.wrappedFactory  # behind the connection policy
        self.assertEqual(eke_port, 8001)
        self.assertIsInstance(eke_factory, EKEServerFactory)
        self.assertEqual((tcp_port, interface), (7001, "127.0.0.1"))
        [(path, unix_factory, *_)] = memory.unixServers
        self.assertEqual(path, socket)
        [(ssl_port, ssl_factory, context_factory, _, _)] = memory.sslServers
        self.assertEqual(ssl_port, 7443)
        # One factory serves every endpoint, with the options given.
        self.assertIs(tcp_factory, unix_factory)
        self.assertIs(tcp_factory, ssl_factory)
        tcp_factory = tcp_factory.wrappedFactory  # behind the connection policy
        self.assertIs(tcp_factory.group, ffdh.named_group("ffdhe3072"))
        self.assertTrue(tcp_factory.show_secrets)

    def test_port_in_use_is_one_line(self):
        class Busy(MemoryReactor):
            def listenTCP(self, port, factory, backlog=50, interface=""):
                raise error.CannotListenError(
                    interface, port, OSError(98, "Address already in use"))

        # What the reactor says, even if the check before it passed.
        self.patch(tap, "_check_can_listen", lambda description: None)

        for description, where in (
            ("tcp:7777", "*:7777"),
            ("tcp:7777:interface=127.0.0.1", "127.0.0.1:7777"),
            # Bracketed, as peers are: ":::7777" would be ambiguous.
            (r"tcp6:7777:interface=\:\:1", "[::1]:7777"),
            (r"tcp6:7777:interface=\:\:", "[::]:7777"),
        ):
            service = tap.makeService(parse("--dh", description, "--eke", "unix:eke.sock"),
                                      reactor=Busy())
            with self.assertRaises(SystemExit) as caught:
                service.privilegedStartService()
            self.assertEqual(
                caught.exception.code,
                f"twistd keyx: cannot listen on {where}: [Errno 98] Address already in use")

    def test_port_in_use_in_daemon_mode_is_reported_to_twistd(self):
        # Without -n, twistd waits for its daemonized child to report; only an
        # ordinary exception reaches it ("An error has occurred: ..."), a
        # SystemExit leaves the parent waiting forever.
        class Busy(MemoryReactor):
            def listenTCP(self, port, factory, backlog=50, interface=""):
                raise error.CannotListenError(
                    interface, port, OSError(98, "Address already in use"))

        options = parse("--dh", "tcp:7777", "--eke", "unix:eke.sock")
        options.parent = {"nodaemon": False}  # what twistd's ServerOptions sets
        service = tap.makeService(options, reactor=Busy())
        printed = []
        self.patch(sys, "excepthook", lambda *exc_info: printed.append(exc_info[0]))
        self.patch(tap, "_check_can_listen", lambda description: None)  # 7777 may be taken
        with capturedLogs() as events:
            with self.assertRaises(tap.StartupError) as caught:
                service.privilegedStartService()
        self.assertEqual(str(caught.exception),
                         "cannot listen on *:7777: [Errno 98] Address already in use")
        # The log gets one line, and the uncaught exception no traceback.
        self.assertEqual([formatEvent(e) for e in events], [
            "twistd keyx: cannot listen on *:7777: [Errno 98] Address already in use"])
        sys.excepthook(tap.StartupError, caught.exception, None)
        sys.excepthook(ValueError, ValueError(), None)
        self.assertEqual(printed, [ValueError])
        options.parent = {"nodaemon": True}
        service = tap.makeService(options, reactor=Busy())
        self.assertRaises(SystemExit, service.privilegedStartService)

    def busy_tcp_port(self):
        """A port on 127.0.0.1 that another socket listens on."""
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        return busy.getsockname()[1]

    def free_tcp_port(self):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        return port

    def test_port_in_use_is_found_before_anything_listens(self):
        """README: a start-up error comes before anything listens.  DH comes
        first; with EKE's port taken, DH must not have listened either."""
        busy, free = self.busy_tcp_port(), self.free_tcp_port()
        memory = MemoryReactor()
        service = tap.makeService(parse("--dh", f"tcp:{free}:interface=127.0.0.1",
                                        "--eke", f"tcp:{busy}:interface=127.0.0.1"),
                                  reactor=memory)
        with self.assertRaises(SystemExit) as caught:
            service.privilegedStartService()
        self.assertEqual(caught.exception.code, f"twistd keyx: cannot listen on 127.0.0.1:{busy}: "
                                                "[Errno 98] Address already in use")
        self.assertEqual(memory.tcpServers, [])

    def test_unix_socket_in_use_is_named_as_a_path(self):
        path = "keyx-busy.sock"
        busy = socket.socket(socket.AF_UNIX)
        self.addCleanup(busy.close)
        busy.bind(path)
        busy.listen()
        memory = MemoryReactor()
        service = tap.makeService(parse("--dh", "tcp:0", "--eke", f"unix:{path}"), reactor=memory)
        with self.assertRaises(SystemExit) as caught:
            service.privilegedStartService()
        self.assertEqual(caught.exception.code, f"twistd keyx: cannot listen on unix:{path}: "
                                                "another server is listening there")
        self.assertEqual((memory.tcpServers, memory.unixServers), ([], []))

    def test_unix_lock_held_is_named_as_a_path(self):
        # What Twisted raises when another daemon holds the socket's lock file.
        class Locked(MemoryReactor):
            def listenUNIX(self, address, factory, backlog=50, mode=0o666, wantPID=0):
                raise error.CannotListenError(None, address.encode(), "Cannot acquire lock")

        # The others on port 0: their defaults (8088, 8089) may be taken.
        service = tap.makeService(parse("--dh", "unix:keyx.sock", "--eke", "tcp:0",
                                        "--opaque", "tcp:0"), reactor=Locked())
        with self.assertRaises(SystemExit) as caught:
            service.privilegedStartService()
        self.assertEqual(caught.exception.code, (
            "twistd keyx: cannot listen on unix:keyx.sock: its lock file keyx.sock.lock "
            "is held by another process"))

    def test_unix_socket_in_missing_folder_is_one_line(self):
        # Refused when the options are parsed...
        folder = os.path.abspath(self.mktemp())
        missing = os.path.join(folder, "keyx.sock")
        with self.assertRaises(usage.UsageError) as refused:
            parse("--dh", f"unix:{missing}")
        self.assertEqual(str(refused.exception),
                         f"bad endpoint 'unix:{missing}': the folder {folder} does not exist")
        # ...and if the folder goes away before the start, the lock file fails
        # with an OSError rather than CannotListenError: still one line.
        os.mkdir(folder)
        options = parse("--dh", f"unix:{missing}", "--eke", "unix:eke.sock",
                        "--opaque", "tcp:0")
        os.rmdir(folder)
        service = tap.makeService(options)
        with self.assertRaises(SystemExit) as caught:
            service.privilegedStartService()
        # Nothing listens: the DH endpoint failed first, so EKE never started.
        self.assertTrue(caught.exception.code.startswith("twistd keyx: cannot listen: "),
                        caught.exception.code)
        self.assertIn(missing, caught.exception.code)

    def test_startup_log_line(self):
        with capturedLogs() as events:
            service, _ = self.make("--dh", "tcp:7001", "--dh", "tcp:7002", "--group", "ffdhe4096",
                                   "--eke", "tcp:7003", "--users", os.path.abspath("users.json"),
                                   "--opaque", "tcp:7004", "--opaque-key", "startup-key",
                                   "--no-host-key")
        opaque = service.config.settings["opaque"]
        path, setup = opaque.where, opaque.setup
        lines = [formatEvent(e) for e in events
                 if e.get("log_namespace", "").startswith("twisted_keyx.service.tap")]
        self.assertEqual(lines, [
            f"twisted-keyx {tap.__version__}: DH handshake on tcp:7001, tcp:7002 "
            "with group ffdhe4096 (4096 bits); no host key (unauthenticated only)",
            f"twisted-keyx {tap.__version__}: EKE handshake and chat on tcp:7003; users from "
            f"{os.path.abspath('users.json')} (file not found: no users yet)",
            f"twisted-keyx {tap.__version__}: OPAQUE handshake and chat on tcp:7004; key file "
            f"{path} (created now, no OPAQUE users yet), server key fingerprint "
            f"{server_key_fingerprint(setup.server_public_key)}, profile twisted-keyx-v1",
            "Limits (0: none): handshake timeout 30 s, idle timeout 300 s, 64 connections "
            "per source (IPv4 /32, IPv6 /64), 10000 in all; "
            f"open-file limit {limits.raise_open_file_limit(0)}",
        ])

    def test_user_file_readable_by_others_is_warned_about_at_start_up(self):
        users = os.path.abspath("users.json")
        userstore.write_users(users, {})
        for mode, warned in ((0o600, False), (0o640, True), (0o604, True), (0o620, False)):
            os.chmod(users, mode)
            with capturedLogs() as events:
                self.make("--dh", "tcp:7001", "--eke", "tcp:7003", "--users", users)
            lines = [formatEvent(e) for e in events if e.get("log_level") == LogLevel.warn]
            self.assertEqual(lines, [
                f"user file {users} is readable by group or others (mode 0{mode:o}): "
                f"its keys log in without the passwords; chmod 600 {users}"] if warned else [])

    def test_unix_sockets_are_private_unless_the_endpoint_says(self):
        def private(description):
            return endpointspec.parse(description).private()

        self.assertEqual(private("unix:/tmp/k.sock"), "unix:/tmp/k.sock:mode=600")
        self.assertEqual(private("unix:address=k.sock:lockfile=0"),
                         "unix:address=k.sock:lockfile=0:mode=600")
        # An escaped colon is part of the path, not a field.
        self.assertEqual(private("unix:k\\:mode=1.sock"), "unix:k\\:mode=1.sock:mode=600")
        for kept in ("unix:/tmp/k.sock:mode=660", "unix:/tmp/k.sock:666", "tcp:7777"):
            self.assertEqual(private(kept), kept)
        folder = self.mktemp()  # relative: a socket path has at most 107 bytes
        os.mkdir(folder)
        private, shared = os.path.join(folder, "dh.sock"), os.path.join(folder, "eke.sock")
        # OPAQUE on a socket too: its default, tcp:8089, may be taken.
        service = tap.makeService(parse("--dh", f"unix:{private}", "--eke", f"unix:{shared}:mode=660",
                                        "--opaque", f"unix:{private}-opaque"))
        service.privilegedStartService()
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual(stat.S_IMODE(os.stat(private).st_mode), 0o600)
        self.assertEqual(stat.S_IMODE(os.stat(shared).st_mode), 0o660)

    def test_serves_on_a_real_unix_socket(self):
        # The real reactor: the service listens where it was told and a
        # client completes a handshake there.
        socket = self.mktemp()
        # EKE too on a socket of its own: its default, tcp:8088, may be taken.
        service = tap.makeService(parse("--dh", f"unix:{socket}", "--eke", f"unix:{socket}-eke",
                                        "--opaque", f"unix:{socket}-opaque"))

        async def run():
            service.startService()
            try:
                endpoint = endpoints.UNIXClientEndpoint(reactor, socket, timeout=5)
                client = await endpoints.connectProtocol(endpoint, tracked(DHClientProtocol)())
                result = await client.finished
                await client.lost
            finally:
                await service.stopService()
            self.assertEqual(len(result.shared_secret), 256)
            self.assertFalse(os.path.exists(socket))

        return defer.Deferred.fromCoroutine(run())


class DaemonModeTests(unittest.TestCase):
    """``twistd keyx`` without ``-n``, in a separate interpreter, on the
    checkout's dropin."""

    timeout = 60

    def start_on_a_busy_port(self, *twistd_options):
        """``twistd *twistd_options keyx --dh`` on a port something else
        holds, in a fresh folder: ``(folder, message, out, err, exit code)``,
        ``message`` the line that should say so."""
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        folder = os.path.abspath(self.mktemp())
        os.mkdir(folder)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(tap.__file__))))
        message = f"cannot listen on 127.0.0.1:{port}: [Errno 98] Address already in use"

        async def run():
            out, err, code = await utils.getProcessOutputAndValue(
                sys.executable,
                ["-c", "from twisted.scripts.twistd import run; run()", *twistd_options,
                 "keyx", "--dh", f"tcp:{port}:interface=127.0.0.1", "--eke", "tcp:0",
                 "--opaque", "tcp:0"],
                env=dict(os.environ, PYTHONPATH=root), path=folder)
            return folder, message, out, err, code

        return defer.Deferred.fromCoroutine(run())

    @defer.inlineCallbacks
    def test_port_in_use_is_one_line_in_the_log(self):
        folder, message, out, err, code = yield self.start_on_a_busy_port(
            "--logfile", "keyx.log", "--pidfile", "keyx.pid")
        self.assertEqual(code, 1)
        self.assertIn(message.encode(), err)
        with open(os.path.join(folder, "keyx.log")) as f:
            lines = f.read().splitlines()
        self.assertEqual([line for line in lines if "Traceback" in line], [])
        self.assertEqual(len([line for line in lines if message in line]), 1, lines)
        # The daemon removes its pid file after it has told the waiting
        # parent, which may have exited already: wait for it (a loaded
        # machine failed 3 runs in 8 here), up to 10 s.
        pid_file = os.path.join(folder, "keyx.pid")
        for _ in range(100):
            if not os.path.exists(pid_file):
                break
            yield task.deferLater(reactor, 0.1, lambda: None)
        self.assertFalse(os.path.exists(pid_file))

    @defer.inlineCallbacks
    def test_port_in_use_in_the_foreground_leaves_no_pid_file(self):
        # twistd -n removes its pid file for an Exception from the start
        # only; a plain SystemExit left a twistd.pid behind.
        folder, message, out, err, code = yield self.start_on_a_busy_port("-n")
        self.assertEqual(code, 1)
        self.assertIn(f"twistd keyx: {message}".encode(), out + err)  # -n logs to stdout
        self.assertNotIn(b"Traceback", out + err)
        self.assertEqual(sorted(os.listdir(folder)), [])


class PluginTests(unittest.TestCase):
    def installed(self):
        """The twisted-keyx distribution installed in site-packages.

        Only site-packages is searched: a checkout where ``pip install .`` ran
        holds a twisted_keyx.egg-info too, and it comes first on sys.path.
        """
        site_packages = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
        for distribution in importlib.metadata.distributions(path=sorted(site_packages)):
            if distribution.metadata["Name"] == "twisted-keyx":
                return distribution
        raise unittest.SkipTest(
            "twisted-keyx is not installed in site-packages: run pip install '.[test]' "
            "to test that twistd finds the installed dropin"
        )

    def test_found_in_the_installed_copy(self):
        distribution = self.installed()
        dropin = "twisted/plugins/keyx_plugin.py"
        installed = [f for f in distribution.files or () if str(f) == dropin]
        self.assertEqual(len(installed), 1,
                         "the installed distribution has no twisted/plugins/keyx_plugin.py "
                         "(an editable install does not install the dropin)")
        [keyx] = [p for p in getPlugins(IServiceMaker) if p.tapname == "keyx"]
        module = sys.modules["twisted.plugins.keyx_plugin"]
        # The dropin that getPlugins loaded is the installed one, in
        # site-packages, not the checkout's twisted/plugins/.
        self.assertEqual(os.path.realpath(module.__file__),
                         os.path.realpath(distribution.locate_file(installed[0])))
        self.assertIs(keyx, module.keyx)
        self.assertIs(keyx.options, tap.Options)
        self.assertIn("Diffie-Hellman", keyx.description)

    def test_twistd_keyx_help(self):
        # A separate interpreter run outside the checkout sees only the
        # installed copy.
        self.installed()
        twistd = os.path.join(os.path.dirname(sys.executable), "twistd")
        if not os.path.exists(twistd):
            raise unittest.SkipTest(f"no twistd script next to {sys.executable}")
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        cwd = self.mktemp()
        os.mkdir(cwd)

        async def run():
            out, err, code = await utils.getProcessOutputAndValue(
                sys.executable, ["-W", "error", twistd, "keyx", "--help"], env=env, path=cwd
            )
            self.assertEqual(code, 0, err)
            for option in (b"--dh=", b"--group=", b"--params=", b"--show-secrets"):
                self.assertIn(option, out)

        return defer.Deferred.fromCoroutine(run())


class FixtureTests(unittest.TestCase):
    def test_tls_fixture_has_key_and_certificate(self):
        pem = read_data("tls-server.pem")
        self.assertIn(b"-----BEGIN PRIVATE KEY-----", pem)
        self.assertIn(b"-----BEGIN CERTIFICATE-----", pem)
