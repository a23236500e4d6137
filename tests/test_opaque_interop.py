"""Interoperability with opaque-ke itself (the Rust reference, as the npm
package @serenity-kit/opaque 1.1.0 in WebAssembly; tests/interop.py): in
the rfc9807 profile with an empty context, both directions at the message
level, and opaque-ke's client logging in to a real ``twistd keyx``."""

import io
import os
import socket
import subprocess
import sys
import time

from twisted.trial import unittest

from tests.interop import OpaqueKe, OpaqueKeError, b64url, login_over_the_wire, require_node, unb64url
from twisted_keyx.cli import admin
from twisted_keyx.opaque.errors import OpaqueError, ServerMacFailed
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


class DaemonTests(unittest.TestCase):
    """opaque-ke's client (interop/opaque_login.js) against a real
    ``twistd keyx`` in another interpreter, rfc9807 profile."""

    timeout = 240

    def setUp(self):
        require_node()
        folder = os.path.abspath(self.mktemp())
        os.mkdir(folder)
        key, users = os.path.join(folder, "key"), os.path.join(folder, "users.json")
        password_file = os.path.join(folder, "pw")
        with open(os.open(password_file, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(PASSWORD + "\n")
        out = io.StringIO()
        admin.main(["opaque-profile", "--opaque-key", key, "--create",
                    "rfc9807,m=1024,t=1,p=1,context="], out, io.StringIO())
        admin.main(["adduser", "--scheme", "opaque", "--opaque-key", key, "--users", users,
                    "--password-file", password_file, "alice"], io.StringIO(), io.StringIO())
        self.port = free_port()
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.daemon = subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
             "--pidfile=", "--logfile", os.path.join(folder, "keyx.log"), "keyx",
             "--opaque", f"tcp:{self.port}:interface=127.0.0.1", "--eke", "unix:eke",
             "--dh", "unix:dh", "--users", users, "--opaque-key", key],
            cwd=folder, env=dict(os.environ, PYTHONPATH=root),
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

    def stop(self):
        self.daemon.terminate()
        self.daemon.wait(30)

    def test_log_in(self):
        reply = login_over_the_wire("127.0.0.1", self.port, "alice", PASSWORD, CHEAP_KE)
        self.assertEqual(reply["result"], "ok", reply)
        self.assertEqual(len(unb64url(reply["sessionKey"])), 64)

    def test_wrong_password_and_unknown_user(self):
        for user, password in [("alice", "not it"), ("bob", PASSWORD)]:
            reply = login_over_the_wire("127.0.0.1", self.port, user, password, CHEAP_KE)
            self.assertEqual(reply, {"result": "failed", "why": "authentication failed"})
