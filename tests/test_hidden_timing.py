"""--hide-unknown-users: a decoy name and a real user do the same work at
steps 1 and 3 (the times are measured by benchmarks/bench_hidden_users.py)."""

from twisted.trial import unittest

from twisted_keyx.eke import crypto
from twisted_keyx.service import userfile as userstore
from twisted_keyx.eke.handshake import EKEServerHandshake

from tests.helpers import Users, make_user
from tests.test_eke_protocol import client_machine


class SameWorkTests(unittest.TestCase):
    def setUp(self):
        self.calls = []
        for function in ("open_box", "load_rsa_public_key", "rsa_encrypt", "seal",
                         "decoy_salt", "decoy_key"):
            original = getattr(crypto, function, None)
            if original is None:
                continue
            self.patch(crypto, function,
                       lambda *a, _f=original, _n=function: self.calls.append(_n) or _f(*a))

    def work(self, name):
        """The primitives the server calls for ``name`` (a wrong password)."""
        calls = self.calls = []
        users = Users(alice=make_user("alice"))
        decoys = userstore.DecoyUsers(b"x" * 32, kdf=make_user().kdf)
        server = EKEServerHandshake(users.lookup, decoys=decoys)
        client = client_machine("a guess", name)
        step3 = client.receive(server.receive(client.start()))
        calls.append("--")
        server.receive(step3)
        return calls

    def test_decoy_and_user_call_the_same_primitives(self):
        self.assertEqual(self.work("nobody"), self.work("alice"))

    def test_a_decoy_has_a_key(self):
        record = userstore.DecoyUsers(b"x" * 32).record_for("nobody")
        self.assertEqual(len(record.key), crypto.PASSWORD_KEY_SIZE)
