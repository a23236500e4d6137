"""Argon2id derivations at once in one process (issue 21): cryptography's
OpenSSL thread pool deadlocked two derivations of more than one lane, and
a key-stretching failure was reported as a lost connection."""

import threading

from twisted.internet import defer, endpoints, reactor
from twisted.trial import unittest

from tests.opaque_helpers import CountingRandom
from twisted_keyx.core.machine import ServerHungUp
from twisted_keyx.opaque import handshake as hs, ksf
from twisted_keyx.opaque.errors import KeyStretchingFailed
from twisted_keyx.opaque.ksf import Argon2idParameters, KsfLimits
from twisted_keyx.opaque.protocol import OPAQUEClientFactory, OPAQUEServerFactory
from twisted_keyx.opaque.records import ServerSetup
from twisted_keyx.opaque.scheme import new_user

#: Four lanes (the pool is used), cheap enough for a test.
FOUR_LANES = Argon2idParameters(memory_cost=1024, iterations=1, lanes=4)
LIMITS = KsfLimits(min_memory_cost=8, min_work=8, max_memory_cost=4096, max_work=4096)
SETUP = ServerSetup.generate(FOUR_LANES, CountingRandom(3))
PASSWORD = "correct horse"


class Users(dict):
    def lookup(self, name, scheme="eke"):
        record = self.get(name)
        return record if record is not None and record.scheme == scheme else None


class StretchTests(unittest.TestCase):
    def test_many_threads_at_once_all_finish_with_the_right_output(self):
        inputs = [b"password %d" % i for i in range(6)]
        results = {}
        errors = []

        def run(data):
            try:
                results[data] = FOUR_LANES.stretch(data)
            except Exception as e:  # recorded, asserted below
                errors.append(e)

        threads = [threading.Thread(target=run, args=(d,), daemon=True) for d in inputs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual([t.is_alive() for t in threads], [False] * len(threads))
        self.assertEqual(errors, [])
        self.assertEqual(results, {d: FOUR_LANES.stretch(d) for d in inputs})

    def test_library_failure_is_a_key_stretching_failure(self):
        class Failing:
            def __init__(self, **kwargs):
                pass

            def derive(self, data):
                raise MemoryError("Not enough memory to derive key")

        self.patch(ksf, "Argon2id", Failing)
        with self.assertRaises(KeyStretchingFailed) as caught:
            FOUR_LANES.stretch(b"x")
        self.assertIn("key stretching (argon2id m=1024 KiB t=1 p=4) failed on this machine",
                      str(caught.exception))
        self.assertIn("Not enough memory", str(caught.exception))


class ConcurrentLoginTests(unittest.TestCase):
    def listen(self):
        users = Users(alice=new_user("alice", PASSWORD, SETUP),
                      bob=new_user("bob", PASSWORD + "!", SETUP))
        port = reactor.listenTCP(0, OPAQUEServerFactory(users, SETUP), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return port.getHost().port

    @defer.inlineCallbacks
    def login(self, port, user, password):
        client = OPAQUEClientFactory(user, password, ksf_limits=LIMITS).buildProtocol(None)
        endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        yield endpoints.connectProtocol(endpoint, client)
        try:
            result = yield client.authenticated
        except Exception:
            client.finished.addErrback(lambda f: None)
            yield client.disconnected
            raise
        client.quit()
        yield client.finished
        yield client.disconnected
        return result

    @defer.inlineCallbacks
    def test_two_logins_in_one_reactor_both_finish(self):
        port = self.listen()
        logins = [self.login(port, "alice", PASSWORD), self.login(port, "bob", PASSWORD + "!"),
                  self.login(port, "alice", PASSWORD)]
        timeout = defer.gatherResults(logins).addTimeout(60, reactor)
        results = yield timeout
        self.assertEqual([r.user for r in results], ["alice", "bob", "alice"])

    @defer.inlineCallbacks
    def test_key_stretching_failure_is_reported_as_such(self):
        port = self.listen()

        def fail(parameters, data):
            raise KeyStretchingFailed(f"key stretching ({parameters}) failed on this machine: "
                                      "Not enough memory to derive key")

        self.patch(ksf.Argon2idParameters, "stretch", fail)
        with self.assertRaises(hs.KeyStretchingError) as caught:
            yield self.login(port, "alice", PASSWORD)
        self.assertNotIsInstance(caught.exception, ServerHungUp)
        self.assertIn("failed on this machine", caught.exception.reason)
