"""Interoperability with opaque-ke itself (the Rust reference, as the npm
package @serenity-kit/opaque 1.1.0 in WebAssembly; tests/interop.py): in
the rfc9807 profile with an empty context, both directions at the message
level, and opaque-ke's client logging in to a real ``twistd keyx``."""

import base64
import io
import json
import os
import socket
import subprocess
import sys
import time

from twisted.trial import unittest

from tests.interop import (
    OpaqueKe,
    OpaqueKeError,
    b64url,
    login_over_the_wire,
    register_over_the_wire,
    require_node,
    unb64url,
)
from twisted_keyx.cli import admin
from twisted_keyx.opaque.errors import OpaqueError, ServerMacFailed
from twisted_keyx.opaque.invitation import code_bytes, new_code
from twisted_keyx.opaque.ksf import DEFAULT_ARGON2ID, Argon2idParameters
from twisted_keyx.opaque.login import ClientLogin, ServerLogin
from twisted_keyx.opaque.profile import rfc9807
from twisted_keyx.opaque.records import RegistrationRecord, ServerSetup
from twisted_keyx.opaque.registration import RegistrationClient, registration_response

CHEAP = Argon2idParameters(memory_cost=1024, iterations=1, lanes=1)
CHEAP_KE = {"argon2id-custom": {"iterations": 1, "memory": 1024, "parallelism": 1}}
PROFILE = rfc9807(b"", CHEAP)
SETUP = ServerSetup.generate(profile=PROFILE)
PASSWORD = "correct horse battery staple"


class Peer:
    def setUp(self):
        self.ke = OpaqueKe()
        self.addCleanup(self.ke.close)


class TheirClientOurServerTests(Peer, unittest.TestCase):
    """opaque-ke registers with our registration response and logs in to
    our ServerLogin."""

    def register(self, password, user=b"alice", setup=SETUP, ksf=CHEAP_KE):
        start = self.ke.call("client.startRegistration", password=password)
        response = registration_response(setup, unb64url(start["registrationRequest"]), user)
        finish = self.ke.call("client.finishRegistration", password=password,
                              registrationResponse=b64url(response),
                              clientRegistrationState=start["clientRegistrationState"],
                              keyStretching=ksf)
        self.assertEqual(unb64url(finish["serverStaticPublicKey"]), setup.server_public_key)
        record = RegistrationRecord.from_bytes(unb64url(finish["registrationRecord"]),
                                               setup.profile.ksf)
        return record, finish

    def login(self, password, record, user=b"alice", setup=SETUP, ksf=CHEAP_KE):
        start = self.ke.call("client.startLogin", password=password)
        server = ServerLogin(setup, record, user)
        ke2 = server.respond(unb64url(start["startLoginRequest"]))
        finish = self.ke.call("client.finishLogin", clientLoginState=start["clientLoginState"],
                              loginResponse=b64url(ke2), password=password, keyStretching=ksf)
        return server, finish

    def test_register_and_log_in(self):
        record, registered = self.register(PASSWORD)
        server, finish = self.login(PASSWORD, record)
        self.assertIsNotNone(finish)
        key = server.finish(unb64url(finish["finishLoginRequest"]))
        self.assertEqual(key, unb64url(finish["sessionKey"]))
        self.assertEqual(finish["exportKey"], registered["exportKey"])

    def test_wrong_password(self):
        record, _ = self.register(PASSWORD)
        server, finish = self.login("not it", record)
        self.assertIsNone(finish)

    def test_unknown_user(self):
        server, finish = self.login(PASSWORD, None, user=b"nobody")
        self.assertIsNone(finish)

    def test_their_default_cost_is_our_default(self):
        # @serenity-kit/opaque's default ("memory-constrained") is RFC 9106's
        # second option, DEFAULT_ARGON2ID; no keyStretching given to it.
        setup = ServerSetup.generate(profile=rfc9807(b"", DEFAULT_ARGON2ID))
        record, _ = self.register(PASSWORD, setup=setup, ksf=None)
        server, finish = self.login(PASSWORD, record, setup=setup, ksf=None)
        self.assertEqual(server.finish(unb64url(finish["finishLoginRequest"])),
                         unb64url(finish["sessionKey"]))

    def test_password_prepared_as_documented(self):
        # Registered by opaque-ke in one normalisation (prepared as
        # docs/opaque.rst says), logged in by ours typed in another.
        typed_there = "cafe\u0301\u00a0noir"
        prepared = self.ke.call("prepare", password=typed_there)
        self.assertEqual(prepared, "caf\u00e9 noir")
        record, _ = self.register(prepared)
        client = ClientLogin("caf\u00e9\u2002noir", profile=PROFILE)
        server = ServerLogin(SETUP, record, b"alice")
        result = client.finish(server.respond(client.start()))
        self.assertEqual(server.finish(result.ke3), result.session_key)


class OurClientTheirServerTests(Peer, unittest.TestCase):
    """Our RegistrationClient and ClientLogin against opaque-ke's server."""

    def setUp(self):
        super().setUp()
        self.server_setup = self.ke.call("server.createSetup")

    def register(self, password, user="alice"):
        client = RegistrationClient(password, CHEAP)
        response = self.ke.call("server.createRegistrationResponse",
                                serverSetup=self.server_setup, userIdentifier=user,
                                registrationRequest=b64url(client.start()))
        record, export_key = client.finish(unb64url(response["registrationResponse"]))
        return b64url(record.to_bytes()), export_key

    def login(self, password, record, user="alice"):
        client = ClientLogin(password, profile=PROFILE)
        start = self.ke.call("server.startLogin", serverSetup=self.server_setup,
                             registrationRecord=record, userIdentifier=user,
                             startLoginRequest=b64url(client.start()))
        return client, start

    def test_register_and_log_in(self):
        record, export_key = self.register(PASSWORD)
        client, start = self.login(PASSWORD, record)
        result = client.finish(unb64url(start["loginResponse"]))
        finish = self.ke.call("server.finishLogin", serverLoginState=start["serverLoginState"],
                              finishLoginRequest=b64url(result.ke3))
        self.assertEqual(unb64url(finish["sessionKey"]), result.session_key)
        self.assertEqual(result.export_key, export_key)
        self.assertEqual(b64url(result.server_public_key),
                         self.ke.call("server.getPublicKey", serverSetup=self.server_setup))

    def test_wrong_password(self):
        record, _ = self.register(PASSWORD)
        client, start = self.login("not it", record)
        with self.assertRaises(OpaqueError) as caught:
            client.finish(unb64url(start["loginResponse"]))
        self.assertNotIsInstance(caught.exception, ServerMacFailed)

    def test_unknown_user(self):
        client, start = self.login(PASSWORD, None, user="nobody")
        with self.assertRaises(OpaqueError) as caught:
            client.finish(unb64url(start["loginResponse"]))
        self.assertNotIsInstance(caught.exception, ServerMacFailed)

    def test_their_server_refuses_a_wrong_ke3(self):
        record, _ = self.register(PASSWORD)
        client, start = self.login(PASSWORD, record)
        client.finish(unb64url(start["loginResponse"]))
        with self.assertRaises(OpaqueKeError):
            self.ke.call("server.finishLogin", serverLoginState=start["serverLoginState"],
                         finishLoginRequest=b64url(bytes(64)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROFILE_TEXT = "rfc9807,m=1024,t=1,p=1,context="


class Daemon:
    """A real ``twistd keyx`` in another interpreter, rfc9807 profile with
    an empty context (as opaque-ke uses), in a folder of its own."""

    timeout = 240

    def setUp(self):
        require_node()
        self.folder = folder = os.path.abspath(self.mktemp())
        os.mkdir(folder)
        self.key = os.path.join(folder, "key")
        self.users = os.path.join(folder, "users.json")
        admin.main(["opaque-profile", "--opaque-key", self.key, "--create", PROFILE_TEXT],
                   io.StringIO(), io.StringIO())
        self.prepare()
        self.port = free_port()
        self.daemon = subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
             "--pidfile=", "--logfile", os.path.join(folder, "keyx.log"), "keyx",
             "--opaque", f"tcp:{self.port}:interface=127.0.0.1", "--eke", "unix:eke",
             "--dh", "unix:dh", "--users", self.users, "--opaque-key", self.key],
            cwd=folder, env=dict(os.environ, PYTHONPATH=ROOT),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(self.stop)
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                break
            except OSError:
                if self.daemon.poll() is not None or time.monotonic() > deadline:
                    with open(os.path.join(folder, "keyx.log")) as f:
                        raise AssertionError("the daemon did not start: " + f.read())
                time.sleep(0.2)

    def prepare(self):
        """Users and invitations made before the daemon starts."""

    def secret_file(self, name, text):
        path = os.path.join(self.folder, name)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(text + "\n")
        return path

    def stop(self):
        self.daemon.terminate()
        self.daemon.wait(30)


class DaemonTests(Daemon, unittest.TestCase):
    """opaque-ke's client (interop/opaque_login.js) logging in to a real
    ``twistd keyx``; the user added by ``keyx-admin adduser``."""

    def prepare(self):
        admin.main(["adduser", "--scheme", "opaque", "--opaque-key", self.key, "--users",
                    self.users, "--password-file", self.secret_file("pw", PASSWORD), "alice"],
                   io.StringIO(), io.StringIO())

    def test_log_in(self):
        reply = login_over_the_wire("127.0.0.1", self.port, "alice", PASSWORD, CHEAP_KE)
        self.assertEqual(reply["result"], "ok", reply)
        self.assertEqual(len(unb64url(reply["sessionKey"])), 64)

    def test_wrong_password_and_unknown_user(self):
        for user, password in [("alice", "not it"), ("bob", PASSWORD)]:
            reply = login_over_the_wire("127.0.0.1", self.port, user, password, CHEAP_KE)
            self.assertEqual(reply, {"result": "failed", "why": "authentication failed"})


#: What opaque_register.js says when r2's MAC does not verify (it then
#: closes without r3, docs/opaque.rst), and the server's answer to an r3
#: sent anyway.
REFUSED = {"result": "refused", "why": "the server does not know this invitation code"}
FAILED = {"result": "failed", "why": "authentication failed"}


class DaemonRegistrationTests(Daemon, unittest.TestCase):
    """opaque-ke's client (interop/opaque_register.js, written from
    docs/opaque.rst alone) registers with a code from ``keyx-admin invite``
    over the wire of a real ``twistd keyx``, then logs in."""

    def invite(self, name, *options):
        out, err = io.StringIO(), io.StringIO()
        status = admin.main(["invite", "--users", self.users, *options, name], out, err)
        self.assertEqual(status, 0, err.getvalue())
        code = out.getvalue().strip()
        self.assertRegex(code, r"^[a-z2-7]{4}(-[a-z2-7]{4}){7}$")
        return code

    def register(self, user, code, password=PASSWORD, ignore_mac=False):
        return register_over_the_wire("127.0.0.1", self.port, user, code, password, CHEAP_KE,
                                      ignore_mac=ignore_mac)

    def login(self, user, password=PASSWORD):
        return login_over_the_wire("127.0.0.1", self.port, user, password, CHEAP_KE)

    def keyx_client(self, *argv):
        """Our ``keyx-client opaque`` against the daemon: status, out, err."""
        done = subprocess.run(
            [sys.executable, "-W", "error", "-m", "twisted_keyx.cli.client", "opaque",
             "--host", "127.0.0.1", "--port", str(self.port), "--profile", PROFILE_TEXT,
             *argv],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
            env=dict(os.environ, PYTHONPATH=ROOT,
                     XDG_CONFIG_HOME=os.path.join(self.folder, "config")))
        return done.returncode, done.stdout, done.stderr

    def users_file(self):
        with open(self.users) as f:
            return json.load(f)

    def server_public_key(self):
        with open(self.key, "rb") as f:
            return ServerSetup.loads(f.read()).server_public_key

    def test_register_then_log_in(self):
        code = self.invite("bob")
        registered = self.register("bob", code)
        self.assertEqual(registered["result"], "registered", registered)
        self.assertEqual(unb64url(registered["serverStaticPublicKey"]), self.server_public_key())
        logged_in = self.login("bob")
        self.assertEqual(logged_in["result"], "ok", logged_in)
        # The same password, the same record: the same export key.
        self.assertEqual(logged_in["exportKey"], registered["exportKey"])
        # Our own client logs in to the user opaque-ke registered.
        status, out, err = self.keyx_client("--user", "bob", "--password-file",
                                            self.secret_file("pw", PASSWORD))
        self.assertEqual((status, err), (0, ""))
        self.assertTrue(out.startswith("Authentication success"), out)
        # The server stored the record opaque-ke made, byte for byte.
        stored = self.users_file()["users"]["bob"]
        record = unb64url(registered["registrationRecord"])
        self.assertEqual(base64.b64decode(stored["client_public_key"]), record[:32])
        self.assertEqual(base64.b64decode(stored["masking_key"]), record[32:96])
        self.assertEqual(base64.b64decode(stored["envelope"]), record[96:])

    def test_user_name_not_ascii(self):
        # The HKDF info holds the name's length in bytes, not characters.
        code = self.invite("zo\u00eb")
        registered = self.register("zo\u00eb", code)
        self.assertEqual(registered["result"], "registered", registered)
        self.assertEqual(self.login("zo\u00eb")["exportKey"], registered["exportKey"])

    def test_code_works_once(self):
        code = self.invite("bob")
        self.assertEqual(self.register("bob", code)["result"], "registered")
        self.assertEqual(self.register("bob", code, "another password"), REFUSED)
        self.assertEqual(self.register("bob", code, "another password", ignore_mac=True),
                         FAILED)
        # The first registration stands.
        self.assertEqual(self.login("bob")["result"], "ok")
        self.assertEqual(self.login("bob", "another password"), FAILED)

    def test_wrong_code_and_unknown_user_same_reply(self):
        code = self.invite("bob")
        wrong = new_code()
        self.assertNotEqual(code_bytes(wrong), code_bytes(code))
        self.assertEqual(self.register("bob", wrong), REFUSED)
        self.assertEqual(self.register("bob", wrong, ignore_mac=True), FAILED)
        # Someone else's code, or no invitation at all: the same.
        self.assertEqual(self.register("mallory", code), REFUSED)
        self.assertEqual(self.register("mallory", code, ignore_mac=True), FAILED)
        self.assertFalse(os.path.exists(self.users))  # no one was added
        # None of this used the invitation up.
        self.assertEqual(self.register("bob", code)["result"], "registered")
        self.assertEqual(sorted(self.users_file()["users"]), ["bob"])
        self.assertEqual(self.login("bob")["result"], "ok")

    def test_revoked_and_expired_codes_refused_the_same_way(self):
        revoked = self.invite("bob")
        status = admin.main(["revoke", "--users", self.users, "bob"], io.StringIO(),
                            io.StringIO())
        self.assertEqual(status, 0)
        expired = self.invite("carol", "--expires", "0.00001")  # 0.864 s
        time.sleep(1.0)  # only lets the expiry pass: the outcome does not depend on timing
        for user, code in [("bob", revoked), ("carol", expired)]:
            self.assertEqual(self.register(user, code), REFUSED, user)
            self.assertEqual(self.register(user, code, ignore_mac=True), FAILED, user)
        self.assertFalse(os.path.exists(self.users))

    def test_wrong_password_after_registering(self):
        code = self.invite("bob")
        self.assertEqual(self.register("bob", code)["result"], "registered")
        self.assertEqual(self.login("bob", "not it"), FAILED)
        status, out, err = self.keyx_client("--user", "bob", "--password-file",
                                            self.secret_file("wrong", "not it"))
        self.assertEqual((status, out), (1, ""))
        self.assertIn("authentication failed", err)

    def test_password_prepared_as_documented(self):
        # Registered by opaque-ke typed in NFD with a no-break space, logged
        # in by ours and by opaque-ke typed in NFC with an en space.
        code = self.invite("bob")
        self.assertEqual(self.register("bob", code, "cafe\u0301\u00a0noir")["result"],
                         "registered")
        self.assertEqual(self.login("bob", "caf\u00e9\u2002noir")["result"], "ok")
        status, out, err = self.keyx_client("--user", "bob", "--password-file",
                                            self.secret_file("pw", "caf\u00e9 noir"))
        self.assertEqual((status, err), (0, ""))

    def test_coexists_with_our_registration(self):
        # One daemon: carol registered by keyx-client opaque register, bob by
        # opaque-ke; each client logs in as each user.
        carol_code, bob_code = self.invite("carol"), self.invite("bob")
        status, out, err = self.keyx_client(
            "register", "--user", "carol", "--code-file", self.secret_file("code", carol_code),
            "--password-file", self.secret_file("carol", "carol's password"))
        self.assertEqual((status, err), (0, ""))
        self.assertTrue(out.startswith("Registered carol on 127.0.0.1:"), out)
        self.assertEqual(self.register("bob", bob_code)["result"], "registered")
        self.assertEqual(sorted(self.users_file()["users"]), ["bob", "carol"])
        self.assertEqual(self.login("carol", "carol's password")["result"], "ok")
        self.assertEqual(self.login("bob")["result"], "ok")
        for user, password in [("carol", "carol's password"), ("bob", PASSWORD)]:
            status, out, err = self.keyx_client("--user", user, "--password-file",
                                                self.secret_file(user, password))
            self.assertEqual((status, err), (0, ""), user)
        # Our client refuses opaque-ke's used code, as opaque-ke refuses ours.
        status, out, err = self.keyx_client(
            "register", "--user", "bob", "--code-file", self.secret_file("code", bob_code),
            "--password-file", self.secret_file("bob", "x"))
        self.assertEqual(status, 1)
        self.assertIn("does not know this invitation code", err)
        self.assertEqual(self.register("carol", carol_code), REFUSED)
