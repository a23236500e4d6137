"""The handshake registry (twisted_keyx.core.handshakes): a handshake
registered from outside the package reaches ``twistd keyx`` (its option,
its listening factory, its start-up line), ``keyx-admin diagram`` and the
traces, with no edit to those modules; and the daemon's start-up errors
and its first start (issue 24, items 5 and 6)."""

import dataclasses
import enum
import io
import os
import socket
import subprocess
import sys

from twisted.internet import defer, protocol
from twisted.internet.testing import MemoryReactor
from twisted.logger import capturedLogs, formatEvent
from twisted.python import usage
from twisted.trial import unittest

from twisted_keyx.cli import admin
from twisted_keyx.core import handshakes, schemes
from twisted_keyx.core.machine import HandshakeFailed, StateMachine
from twisted_keyx.dh import entry as dh_entry
from twisted_keyx.groups import registry as groups
from twisted_keyx.observe import sequence, trace
from twisted_keyx.opaque.scheme import create_key_file
from twisted_keyx.service import endpointspec, tap

from .helpers import read_data, tap_options

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- a toy handshake: one ping, one pong --------------------------------------

class ToyState(enum.Enum):
    AWAIT_PING = "waiting for ping"
    DONE = "done"
    FAILED = "failed"


class ToyEvent(enum.Enum):
    PING = "ping"


class ToyPongServer(StateMachine):
    INITIAL = ToyState.AWAIT_PING
    DONE = ToyState.DONE
    FAILED = ToyState.FAILED
    TRANSITIONS = {(ToyState.AWAIT_PING, ToyEvent.PING): ("_on_ping", ToyState.DONE)}

    def receive(self, payload):
        return self._dispatch(ToyEvent.PING if payload == b"ping" else None, payload)

    def _on_ping(self, payload):
        return b"pong"

    def _unexpected(self, event, payload):
        return HandshakeFailed("not a ping")


class ToyFactory(protocol.Factory):
    protocol = protocol.Protocol

    def __init__(self, context):
        self.context = context


@dataclasses.dataclass(frozen=True)
class ToySettings:
    """What the toy's own daemon-wide options said."""

    pong: bytes
    loud: bool
    #: DH's group: an option another handshake owns, read from its settings.
    group: object


def toy_configure(options, shared):
    pong = options["toy-pong"]
    if not pong.isalpha():
        raise usage.UsageError(f"--toy-pong {pong!r}: letters only")
    return ToySettings(pong.encode("ascii"), bool(options["toy-loud"]), shared.settings_of("dh").group)


def toy_banner(context, served):
    return [("toy pong on {endpoints} (answers {pong}, group {group})",
             dict(endpoints=", ".join(served["toy"]), pong=context.settings.pong.decode(),
                  group=context.settings.group.name))]


def toy_summary(payload):
    return handshakes.Summary(f"toy {payload.decode('ascii')!r}") if payload else None


TOY = handshakes.Handshake(
    name="toy",
    title="a toy ping-pong handshake",
    endpoints=(handshakes.Endpoint("toy", "Serve the toy ping-pong on ENDPOINT", ToyFactory),),
    daemon_options=(
        handshakes.Parameter("toy-pong", "What the toy answers a ping with", default="pong"),
        handshakes.Flag("toy-loud", "Make the toy answer loudly"),
    ),
    configure=toy_configure,
    banner=toy_banner,
    machines=(handshakes.Machine("toy-server", ToyPongServer, "Toy, server side"),),
    summaries={"ToyPongServer": toy_summary},
)


class ToyHandshakeTests(unittest.TestCase):
    def setUp(self):
        handshakes.register(TOY)
        self.addCleanup(handshakes.unregister, "toy")
        folder = os.path.abspath(self.mktemp())
        os.mkdir(folder)
        self.files = ("--users", os.path.join(folder, "users.json"),
                      "--opaque-key", os.path.join(folder, "opaque-key"))

    def test_twistd_keyx_help(self):
        text = tap.Options().getUsage()
        self.assertIn("--toy=", text)
        self.assertIn("Serve the toy ping-pong on ENDPOINT", text)
        # Its daemon-wide options, with no edit to tap.py.
        self.assertIn("--toy-loud ", text)
        self.assertIn("--toy-pong=", text)
        self.assertIn("What the toy answers a ping with [default: pong]", text)

    def test_twistd_keyx_help_under_twistd(self):
        status, output = twistd_with_toy("--help")
        self.assertEqual(status, 0, output)
        self.assertIn("--toy-pong=", output)
        self.assertIn("Make the toy answer loudly", output)

    def test_its_daemon_options_parsed(self):
        options = tap_options("--toy-pong", "ding", "--toy-loud", "--no-host-key", *self.files)
        self.assertEqual(options["toy-pong"], "ding")
        self.assertEqual(options.config.settings["toy"],
                         ToySettings(b"ding", True, options.config.settings["dh"].group))
        quiet = tap_options("--no-host-key", *self.files)
        self.assertEqual(quiet.config.settings["toy"].pong, b"pong")
        self.assertFalse(quiet.config.settings["toy"].loud)

    def test_a_bad_value_is_one_line(self):
        with self.assertRaises(usage.UsageError) as caught:
            tap_options("--toy-pong", "p0ng", "--no-host-key", *self.files)
        self.assertEqual(str(caught.exception), "--toy-pong 'p0ng': letters only")
        with self.assertRaises(usage.UsageError) as caught:
            tap_options("--toy-loud=yes", *self.files)
        self.assertEqual(str(caught.exception), "option --toy-loud must not have an argument")

    def test_a_bad_value_under_twistd(self):
        status, output = twistd_with_toy("--toy-pong", "p0ng", "--no-host-key")
        self.assertEqual(status, 1)
        self.assertEqual(output.splitlines(), ["twistd keyx: --toy-pong 'p0ng': letters only",
                                               "See 'twistd keyx --help' for the options."])

    def test_an_option_name_taken_is_refused(self):
        taken = handshakes.Handshake(
            name="other", title="", daemon_options=(handshakes.Flag("toy-loud", ""),))
        self.assertRaises(ValueError, handshakes.register, taken)
        # One of the daemon's own: refused when the options are made.
        mine = handshakes.Handshake(
            name="mine", title="", daemon_options=(handshakes.Parameter("users", ""),))
        handshakes.register(mine)
        self.addCleanup(handshakes.unregister, "mine")
        self.assertRaises(ValueError, tap.Options)

    def test_twistd_keyx_serves_it(self):
        options = tap_options("--toy", "tcp:9999", "--dh", "tcp:0", "--eke", "tcp:0",
                              "--opaque", "tcp:0", "--no-host-key", "--toy-pong", "dong",
                              *self.files)
        self.assertEqual(options["toy"], ["tcp:9999"])
        memory = MemoryReactor()
        with capturedLogs() as events:
            service = tap.makeService(options, reactor=memory)
            service.startService()
            self.addCleanup(service.stopService)
        [factory] = [f.wrappedFactory for port, f, *_ in memory.tcpServers if port == 9999]
        self.assertIsInstance(factory, ToyFactory)
        # The factory got its own settings, the daemon's, and its throttle.
        self.assertIs(factory.context.settings, options.config.settings["toy"])
        self.assertEqual(factory.context.settings.pong, b"dong")
        self.assertIs(factory.context.settings.group, options.config.settings["dh"].group)
        self.assertIs(factory.context.users, options.config.users)
        self.assertIs(factory.context.throttle, service.guess_throttle)
        lines = [formatEvent(e) for e in events]
        self.assertIn(f"twisted-keyx {tap.__version__}: toy pong on tcp:9999 "
                      "(answers dong, group ffdhe2048)", lines)

    def test_not_served_unless_asked(self):
        options = tap_options("--dh", "tcp:0", "--eke", "tcp:0", "--opaque", "tcp:0",
                              "--no-host-key", *self.files)
        self.assertEqual(options["toy"], [])
        self.assertNotIn("toy", options.config.served())

    def test_its_endpoint_clashes_like_any_other(self):
        with self.assertRaises(usage.UsageError) as caught:
            tap_options("--toy", "tcp:7001", "--dh", "tcp:7001")
        self.assertIn("would both listen on the same port", str(caught.exception))

    def admin(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        status = admin.main(list(argv), out=out, err=err)
        return status, out.getvalue(), err.getvalue()

    def test_keyx_admin_diagram(self):
        status, out, _ = self.admin("diagram", "--list")
        self.assertEqual(status, 0)
        self.assertIn("toy-server  Toy, server side\n", out)
        status, out, _ = self.admin("diagram", "toy-server")
        self.assertEqual(status, 0)
        self.assertIn('"AWAIT_PING" -> "DONE" [label="ping\\n_on_ping"];', out)

    def test_trace(self):
        out = io.StringIO()

        class Session:
            peer = "127.0.0.1:1"

        machine = ToyPongServer()
        trace.TextTracer(out).message(Session(), "in", machine, ToyState.AWAIT_PING,
                                      ToyState.DONE, b"ping")
        self.assertEqual(out.getvalue(),
                         "trace: <- ToyPongServer AWAIT_PING -> DONE [4 bytes] toy 'ping'\n")
        # A recording names the machine by class name, and reads the same.
        event = trace.event("in", machine, ToyState.AWAIT_PING, ToyState.DONE, b"ping")
        self.assertEqual(str(trace.describe_event(event)), "toy 'ping'")
        # What the entry does not summarise gets the generic summary.
        self.assertEqual(str(trace.describe(machine, b"")), "''")

    def test_registered_twice_is_refused(self):
        self.assertRaises(ValueError, handshakes.register, TOY)
        clash = handshakes.Handshake(
            name="other", title="",
            endpoints=(handshakes.Endpoint("dh", "", ToyFactory),))
        self.assertRaises(ValueError, handshakes.register, clash)


class RegistryTests(unittest.TestCase):
    def test_the_handshakes(self):
        self.assertEqual([h.name for h in handshakes.handshakes()],
                         ["dh", "eke", "opaque", "chat"])
        self.assertEqual([o for h in handshakes.handshakes() for o in h.options()],
                         ["dh", "dh-raw", "eke", "opaque"])

    def test_every_reference_loads(self):
        """Every ``module:attribute`` an entry names exists."""
        for entry in handshakes.handshakes():
            for endpoint in entry.endpoints:
                self.assertTrue(callable(handshakes._resolve(endpoint.factory)))
            for machine in entry.machines:
                self.assertTrue(issubclass(machine.load(), StateMachine), machine)
            for name in entry.summaries:
                self.assertTrue(callable(entry.summary_function(name)))
            for name, recipe in entry.charts.items():
                self.assertIn(name, sequence.names())
            if entry.scheme:
                self.assertIs(handshakes.load_path(entry.scheme), schemes.named(entry.name))

    def test_password_schemes_come_from_the_registry(self):
        self.assertEqual(schemes.names(),
                         [h.name for h in handshakes.password_handshakes()])

    def test_machine_names_to_handshakes(self):
        self.assertEqual(handshakes.handshake_of_machine("OPAQUEClientHandshake").name, "opaque")
        self.assertEqual(handshakes.handshake_of_machine("ServerChat").name, "chat")
        self.assertIsNone(handshakes.handshake_of_machine("Nothing"))


class EndpointSpecTests(unittest.TestCase):
    def test_fields(self):
        spec = endpointspec.parse(r"tcp6:7777:interface=\:\:1:backlog=5")
        self.assertEqual((spec.kind, spec.port, spec.interface, spec.backlog),
                         ("tcp6", 7777, "::1", 5))
        self.assertEqual(endpointspec.parse("tcp:port=80").port, 80)
        self.assertIsNone(endpointspec.parse("tcp:http").port)
        unix = endpointspec.parse(r"unix:/tmp/a\:b.sock:mode=660")
        self.assertEqual((unix.path, unix.mode, unix.address()), ("/tmp/a:b.sock", 0o660,
                                                                  ("unix", "/tmp/a:b.sock")))
        self.assertEqual(endpointspec.parse("unix:/tmp/s:644").mode, 0o644)
        self.assertIsNone(endpointspec.parse("systemd:domain=INET:index=0").address())

    def test_clashes(self):
        def clash(a, b):
            return endpointspec.parse(a).clashes(endpointspec.parse(b))

        self.assertTrue(clash("tcp:7777", "tcp:7777:interface=127.0.0.1"))
        self.assertTrue(clash("tcp:7777:interface=127.0.0.1", "ssl:7777:interface=127.0.0.1"))
        self.assertFalse(clash("tcp:7777:interface=127.0.0.1", "tcp:7777:interface=127.0.0.2"))
        self.assertFalse(clash("tcp:0", "tcp:0"))
        self.assertTrue(clash("unix:a.sock", "unix:address=a.sock"))


# --- issue 24, items 5 and 6 --------------------------------------------------

def twistd(*argv, cwd=None):
    """Run ``twistd -n --pidfile= keyx ARGV`` from the checkout; (status, output)."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    done = subprocess.run(
        [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
         "-n", "--pidfile=", "keyx", *argv],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout + done.stderr


TOY_PLUGIN = """\
import sys
sys.path.insert(0, {root!r})
from tests import test_registry
from twisted_keyx.core import handshakes
handshakes.register(test_registry.TOY)
from twisted.scripts.twistd import run
run()
"""


def twistd_with_toy(*argv):
    """``twistd -n --pidfile= keyx ARGV`` with the toy registered first (as
    a program that adds a handshake would); (status, output)."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    done = subprocess.run(
        [sys.executable, "-c", TOY_PLUGIN.format(root=ROOT), "-n", "--pidfile=", "keyx", *argv],
        env=env, capture_output=True, text=True, timeout=60)
    return done.returncode, done.stdout + done.stderr


class StartUpErrorTests(unittest.TestCase):
    """A start-up error is its one line and where --help is, not the
    ninety lines of options before it."""

    def test_under_twistd_one_line_and_a_hint(self):
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        for argv, line in (
                (["--group", "ffdhe1024"], "unknown group 'ffdhe1024'"),
                (["--users", "/nonexistent/u.json"], "the folder /nonexistent does not exist"),
                (["--bogus"], "option --bogus not recognized")):
            err.seek(0)
            err.truncate()
            options = tap.Options()
            options.parent = usage.Options()  # as twistd's ServerOptions is
            with self.assertRaises(SystemExit) as caught:
                options.parseOptions(argv)
            self.assertEqual(caught.exception.code, 1)
            [first, hint] = err.getvalue().splitlines()
            self.assertTrue(first.startswith("twistd keyx: ") and line in first, first)
            self.assertEqual(hint, "See 'twistd keyx --help' for the options.")

    def test_twistd_prints_two_lines(self):
        folder = self.mktemp()
        os.mkdir(folder)
        key = os.path.join(folder, "bad-key")
        with open(key, "w") as f:
            f.write("not a key\n")
        os.chmod(key, 0o600)
        status, output = twistd("--group", "ffdhe1024", "--host-key", key, cwd=folder)
        self.assertEqual(status, 1)
        self.assertEqual(output.splitlines(), [
            f"twistd keyx: unknown group 'ffdhe1024'; known groups: {', '.join(groups.names())}",
            "See 'twistd keyx --help' for the options."])
        status, output = twistd("--host-key", key, cwd=folder)
        self.assertEqual(status, 1)
        [line, _] = output.splitlines()
        self.assertTrue(line.startswith("twistd keyx: --host-key: "), line)
        self.assertEqual(sorted(os.listdir(folder)), ["bad-key"])


class FirstStartTests(unittest.TestCase):
    """Nothing is written before the daemon knows it can start."""

    def setUp(self):
        self.folder = os.path.abspath(self.mktemp())
        os.mkdir(self.folder)
        cwd = os.getcwd()
        os.chdir(self.folder)
        self.addCleanup(os.chdir, cwd)

    def busy_port(self):
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        return busy.getsockname()[1]

    def test_port_taken_writes_no_key(self):
        busy = self.busy_port()
        options = tap_options("--dh", "tcp:0:interface=127.0.0.1",
                              "--eke", "tcp:0:interface=127.0.0.1",
                              "--opaque", f"tcp:{busy}:interface=127.0.0.1")
        self.assertTrue(options.config.settings["dh"].host_key_created)
        self.assertTrue(options.config.settings["opaque"].created)
        service = tap.makeService(options, reactor=MemoryReactor())
        with self.assertRaises(SystemExit) as caught:
            service.privilegedStartService()
        self.assertIn(f"cannot listen on 127.0.0.1:{busy}", caught.exception.code)
        self.assertEqual(os.listdir(self.folder), [])

    def test_port_taken_under_twistd_writes_no_key(self):
        busy = self.busy_port()
        status, output = twistd("--dh", f"tcp:{busy}:interface=127.0.0.1",
                                "--eke", "tcp:0:interface=127.0.0.1",
                                "--opaque", "tcp:0:interface=127.0.0.1", cwd=self.folder)
        self.assertEqual(status, 1)
        self.assertIn(f"twistd keyx: cannot listen on 127.0.0.1:{busy}", output)
        self.assertEqual(os.listdir(self.folder), [])

    def test_written_at_start_and_served(self):
        options = tap_options("--dh", "tcp:0", "--eke", "tcp:0", "--opaque", "tcp:0")
        memory = MemoryReactor()
        service = tap.makeService(options, reactor=memory)
        service.privilegedStartService()
        self.assertEqual(sorted(os.listdir(self.folder)),
                         ["keyx-host-key", "keyx-host-key.pub", "keyx-opaque-key"])
        again = tap_options()
        dh, opaque = again.config.settings["dh"], again.config.settings["opaque"]
        self.assertEqual(dh.host_key.fingerprint,
                         options.config.settings["dh"].host_key.fingerprint)
        self.assertEqual(opaque.setup.server_public_key,
                         options.config.settings["opaque"].setup.server_public_key)
        self.assertFalse(dh.host_key_created or opaque.created)

    def test_made_meanwhile_by_another_process(self):
        options = tap_options("--dh", "tcp:0", "--eke", "tcp:0", "--opaque", "tcp:0")
        with open(dh_entry.DEFAULT_HOST_KEY, "w") as f:
            f.write("someone else's\n")
        service = tap.makeService(options, reactor=MemoryReactor())
        with self.assertRaises(SystemExit) as caught:
            service.privilegedStartService()
        self.assertIn("was made by another process while this one started",
                      caught.exception.code)


class WorkersParentTests(unittest.TestCase):
    """``--workers``: the parent logs what the workers serve (it said
    "no host key" while they served with one, and left OPAQUE out)."""

    def setUp(self):
        self.folder = os.path.abspath(self.mktemp())
        os.mkdir(self.folder)
        self.key = os.path.join(self.folder, "host-key")
        with open(self.key, "wb") as f:
            f.write(read_data("ed25519-host-key"))
        os.chmod(self.key, 0o600)
        self.opaque_key = os.path.join(self.folder, "opaque-key")
        create_key_file(self.opaque_key)

    def announced(self, *argv):
        options = tap_options("--dh", "tcp:0", "--eke", "tcp:0", "--opaque", "tcp:0",
                              "--users", os.path.join(self.folder, "users.json"),
                              "--opaque-key", self.opaque_key, "--host-key", self.key, *argv)
        service = tap.makeService(options, reactor=MemoryReactor())
        with capturedLogs() as events:
            service._announce()
        return [formatEvent(e) for e in events]

    def test_parent_logs_what_one_process_logs(self):
        one, parent = self.announced(), self.announced("--workers", "2")
        self.assertEqual(parent, one)
        self.assertEqual(len(parent), 3)
        self.assertIn("; host key SHA256:", parent[0])
        self.assertIn("OPAQUE handshake and chat on tcp:0", parent[2])


# --- a toy password handshake: keyx-client and keyx-admin find it too ---------

class ToyScheme:
    name = "toypw"
    description = "a toy scheme"
    add_user_options = ((("--toy-pepper",), dict(default="salt", help="the toy's pepper")),)

    def parse(self, name, fields):
        return ToyUser(name, fields["secret"])

    def serialise(self, record):
        return {"secret": record.secret}

    def describe(self, record):
        return f"toypw, {len(record.secret)} characters"

    def add_user(self, name, password, options, say, store):
        from twisted_keyx.core.interfaces import IServerSetupStore

        say(f"peppered with {options['toy_pepper']}")
        # What it would share with the daemons (keyx-admin --store), through
        # the store's interfaces, as OPAQUE finds its server setup.
        setup = store(IServerSetupStore)
        if setup is not None:
            say(f"a setup store in {setup.where}")
        return ToyUser(name, options["toy_pepper"] + password), "toypw"


class ToyUser:
    scheme = "toypw"

    def __init__(self, name, secret):
        self.name, self.secret = name, secret


TOY_PASSWORD = handshakes.Handshake(
    name="toypw", title="a toy password handshake",
    scheme=ToyScheme(), client=lambda user, password, reply_received=None: None,
    client_port=9123, client_description="Log in to the toy.")


def toy_commands(command, kit):
    """The toy's own action of ``keyx-client toypw`` (as OPAQUE's register
    and passwd): ``ping``, run with what keyx-client lends it."""
    import functools

    command.add_argument("action", nargs="?", choices=("ping",),
                         help="ping: ask the toy server for a pong instead of logging in")

    async def run(kit, reactor, args, out):
        if args.action != "ping":
            return await kit.run_password(reactor, args, out)
        raise kit.ClientError(f"no pong from {args.host}:{args.port}", kit.EXIT_NETWORK)

    command.set_defaults(run=functools.partial(run, kit))


class ToyPasswordHandshakeTests(unittest.TestCase):
    def setUp(self):
        handshakes.register(TOY_PASSWORD)
        self.addCleanup(handshakes.unregister, "toypw")

    def test_keyx_client(self):
        from twisted_keyx.cli import client

        args = client.build_parser().parse_args(["toypw", "--user", "alice"])
        self.assertEqual((args.port, args.run.args), (9123, (TOY_PASSWORD,)))

    def test_keyx_admin_adduser_and_listusers(self):
        users = os.path.abspath(self.mktemp())
        password = os.path.abspath(self.mktemp())
        with open(password, "w") as f:
            f.write("hunter2\n")
        os.chmod(password, 0o600)
        out, err = io.StringIO(), io.StringIO()
        status = admin.main(["adduser", "bob", "--scheme", "toypw", "--users", users,
                             "--password-file", password, "--toy-pepper", "p:"], out, err)
        self.assertEqual((status, err.getvalue()), (0, "keyx-admin: peppered with p:\n"))
        self.assertEqual(out.getvalue(), f"added user bob to {users} (toypw)\n")
        out = io.StringIO()
        self.assertEqual(admin.main(["listusers", "--users", users], out, io.StringIO()), 0)
        self.assertEqual(out.getvalue(), "bob  toypw, 9 characters\n")
        # adduser --help offers it, with its keyx-client command and port.
        import sys

        help_text = io.StringIO()
        self.patch(sys, "stdout", help_text)
        self.assertRaises(SystemExit, admin.main, ["adduser", "--help"])
        self.assertIn("or toypw (keyx-client toypw, port 9123) [default: opaque]",
                      " ".join(help_text.getvalue().split()))

    def test_keyx_client_pin(self):
        """An entry's ``client_pin`` is made before the password is asked;
        the one it cannot read stops keyx-client with its line."""
        import dataclasses

        from twisted.internet import reactor

        from twisted_keyx.cli import client

        asked = []

        def pin(host, port, user):
            asked.append((host, port, user))
            raise handshakes.ClientHookError("cannot read the toy pins")

        handshakes.unregister("toypw")
        handshakes.register(dataclasses.replace(TOY_PASSWORD, client_pin=pin))
        args = client.build_parser().parse_args(["toypw", "--user", "alice",
                                                 "--password-file", "/nonexistent"])
        out, err = io.StringIO(), io.StringIO()
        status = self.successResultOf(defer.ensureDeferred(client.run(reactor, args, out, err)))
        self.assertEqual((status, err.getvalue()),
                         (1, "keyx-client: cannot read the toy pins\n"))
        self.assertEqual(asked, [("localhost", 9123, "alice")])

    def test_keyx_client_commands(self):
        """An entry's ``client_commands`` adds its own actions to
        ``keyx-client NAME`` (its --help, its run), with no edit to the
        command line; without them, the login runs as before."""
        import dataclasses
        import sys

        from twisted.internet import reactor

        from twisted_keyx.cli import client

        handshakes.unregister("toypw")
        toy = dataclasses.replace(TOY_PASSWORD, client_commands=toy_commands)
        handshakes.register(toy)
        help_text = io.StringIO()
        self.patch(sys, "stdout", help_text)
        self.assertRaises(SystemExit, client.main, ["toypw", "--help"])
        self.assertIn("{ping}", help_text.getvalue())
        self.assertIn("ping: ask the toy server for a pong instead of logging in",
                      " ".join(help_text.getvalue().split()))
        args = client.build_parser().parse_args(["toypw", "ping", "--user", "alice"])
        out, err = io.StringIO(), io.StringIO()
        status = self.successResultOf(defer.ensureDeferred(client.run(reactor, args, out, err)))
        self.assertEqual((status, err.getvalue()),
                         (client.EXIT_NETWORK, "keyx-client: no pong from localhost:9123\n"))
        # Without the action: the login, which reads the password first.
        args = client.build_parser().parse_args(["toypw", "--user", "alice",
                                                 "--password-file", "/nonexistent"])
        err = io.StringIO()
        status = self.successResultOf(defer.ensureDeferred(client.run(reactor, args, out, err)))
        self.assertEqual(status, client.EXIT_USAGE)
        self.assertIn("/nonexistent", err.getvalue())
        # Another password handshake does not get them.
        help_text.truncate(0)
        self.assertRaises(SystemExit, client.main, ["eke", "--help"])
        self.assertNotIn("ping", help_text.getvalue())

    def test_keyx_admin_commands(self):
        """An entry's ``admin_commands`` adds commands of its own to
        keyx-admin (its --help, its run, its one-line errors), with no edit
        to the command line, as OPAQUE's opaque-profile is added."""
        import dataclasses
        import sys

        def toy_admin(commands, kit):
            def run(args, out, err):
                if args.pepper == "none":
                    raise kit.AdminError("the toy needs a pepper")
                out.write(f"toy pepper {args.pepper}\n")

            command = commands.add_parser("toy-pepper", help="show the toy's pepper")
            command.add_argument("pepper")
            command.set_defaults(run=run)

        handshakes.unregister("toypw")
        handshakes.register(dataclasses.replace(TOY_PASSWORD, admin_commands=toy_admin))
        help_text = io.StringIO()
        self.patch(sys, "stdout", help_text)
        self.assertRaises(SystemExit, admin.main, ["--help"])
        self.assertIn("show the toy's pepper", help_text.getvalue())
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual((admin.main(["toy-pepper", "salt"], out, err), out.getvalue()),
                         (0, "toy pepper salt\n"))
        self.assertEqual((admin.main(["toy-pepper", "none"], out, err), err.getvalue()),
                         (1, "keyx-admin: the toy needs a pepper\n"))
        # OPAQUE's own command comes the same way.
        from twisted_keyx.opaque import commands

        self.assertEqual(handshakes.named("opaque").load("admin_commands"),
                         commands.add_admin_commands)
        handshakes.unregister("toypw")
        self.patch(sys, "stderr", io.StringIO())
        self.assertRaises(SystemExit, admin.main, ["toy-pepper", "salt"], out, err)
        self.assertIn("invalid choice: 'toy-pepper'", sys.stderr.getvalue())

    def test_gone_when_unregistered(self):
        self.assertIn("toypw", schemes.names())
        handshakes.unregister("toypw")
        self.assertEqual(schemes.names(), ["eke", "opaque"])
