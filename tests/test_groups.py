"""The group registry (twisted_keyx.groups.registry) and custom FFDH groups on GMP:
checked once, then cheap; keys byte-identical to OpenSSL's; the client's
--max-bits; X9.42 parameters with q = (p - 1) / 2."""

import contextlib
import functools
import io
import json

import gmpy2
from twisted.internet import defer
from twisted.trial import unittest

from twisted_keyx.cli import client
from twisted_keyx.groups import ffdh
from twisted_keyx.groups import registry as groups
from twisted_keyx.groups import x25519
from twisted_keyx.dh import messages
from twisted_keyx.dh.handshake import BadParameters, DHClientHandshake, DHServerHandshake

from .helpers import CLIENT_X, SERVER_X, TrackingDHServerFactory, data_path, fixed_key, read_data
from .test_client import _Loopback, unauthenticated
from .test_dh_handshake import run_handshake


class RegistryTests(unittest.TestCase):
    def test_names(self):
        self.assertEqual(groups.names(), ["ffdhe2048", "ffdhe3072", "ffdhe4096", "x25519",
                                          "xwing", "mlkem768x25519-sha256"])
        self.assertEqual(groups.DEFAULT, "ffdhe2048")
        for name in groups.names():
            self.assertEqual(groups.named(name).name, name)
        self.assertIs(groups.named("ffdhe2048"), ffdh.named_group("ffdhe2048"))

    def test_unknown(self):
        with self.assertRaises(groups.GroupError) as caught:
            groups.named("modp2048")
        self.assertEqual(str(caught.exception), "unknown group 'modp2048'; known groups: "
                                                "ffdhe2048, ffdhe3072, ffdhe4096, x25519, "
                                                "xwing, mlkem768x25519-sha256")

    def test_neutral_errors(self):
        self.assertTrue(issubclass(ffdh.ParameterError, groups.GroupError))
        self.assertIs(ffdh.InvalidPublicKey, groups.InvalidPublicKey)
        for error in (groups.GroupError, groups.InvalidPublicKey):
            self.assertNotIn("DH", error.__name__)

    def test_every_group_has_the_interface(self):
        groups_ = [groups.named(name) for name in groups.names()]
        groups_.append(groups.load_parameters_file(data_path("dhparam-2048.pem")))
        for group in groups_:
            key = group.generate_private_key()
            pem = group.public_key_pem(key)
            self.assertTrue(pem.endswith(b" PUBLIC KEY-----\n"), group.name)
            self.assertLessEqual(len(pem), group.max_public_key_message)
            self.assertLessEqual(len(pem), groups.MAX_PUBLIC_KEY_MESSAGE)
            self.assertLessEqual(len(group.parameters_message), groups.MAX_PARAMETERS_MESSAGE)
            reply, secret = group.encapsulate(group.load_peer_key(pem))
            self.assertLessEqual(len(reply), group.max_reply_message, group.name)
            self.assertLessEqual(len(reply), groups.MAX_REPLY_MESSAGE, group.name)
            self.assertEqual(group.decapsulate(key, reply), secret, group.name)
            self.assertEqual(len(secret), group.secret_length, group.name)
            self.assertTrue(groups.is_parameters_message(group.parameters_message), group.name)

    def test_parameters_message_shapes(self):
        self.assertFalse(groups.is_parameters_message(b"Group: x25519\n"))
        self.assertFalse(groups.is_parameters_message(b"Group: x448"))
        self.assertTrue(groups.is_parameters_message(read_data("dhx-2048.pem")))


class KEMShapeTests(unittest.TestCase):
    """A Diffie-Hellman group through the KEM-shaped seam: the server's
    encapsulation is a key of its own (from the factory) and its public key,
    the client's decapsulation the exchange with that key."""

    def test_dh_groups_encapsulate_with_the_factory_and_decapsulate(self):
        for name in ("ffdhe2048", "x25519"):
            group = groups.named(name)
            client_key = fixed_key(CLIENT_X)(group)
            peer = group.load_peer_key(group.public_key_pem(client_key))
            asked = []

            def factory(g):
                asked.append(g)
                return fixed_key(SERVER_X)(g)

            reply, secret = group.encapsulate(peer, factory)
            self.assertEqual(asked, [group], name)
            server_key = fixed_key(SERVER_X)(group)
            self.assertEqual(reply, group.public_key_pem(server_key), name)
            self.assertEqual(secret, group.exchange(server_key, peer), name)
            self.assertEqual(group.decapsulate(client_key, reply), secret, name)
            self.assertEqual(len(secret), group.secret_length, name)
            self.assertEqual(group.max_reply_message, group.max_public_key_message, name)
            self.assertFalse(group.post_quantum, name)

    def test_decapsulate_refuses_a_bad_reply(self):
        group = groups.named("x25519")
        key = group.generate_private_key()
        low_order = x25519.encode_public_key_pem(bytes(32))
        with self.assertRaises(groups.InvalidPublicKey):
            group.decapsulate(key, low_order)
        with self.assertRaises(groups.InvalidPublicKey):
            group.decapsulate(key, b"-----BEGIN PUBLIC KEY-----\n")

    def test_without_a_factory_each_encapsulation_is_fresh(self):
        group = groups.named("x25519")
        peer = group.load_peer_key(group.public_key_pem(group.generate_private_key()))
        first, second = group.encapsulate(peer), group.encapsulate(peer)
        self.assertNotEqual(first[0], second[0])
        self.assertNotEqual(first[1], second[1])


class MaxBitsTests(unittest.TestCase):
    def test_larger_groups_refused_before_any_check(self):
        def fail(*args):
            raise AssertionError("checked a group it should have refused first")

        self.patch(ffdh, "_check_parameters", fail)
        for pem, max_bits in [(ffdh.encode_parameters_pem(2**5000 + 1, 2), 4096),
                              (ffdh.named_group("ffdhe4096").parameters_message, 3072),
                              (ffdh.named_group("ffdhe3072").parameters_message, 2048)]:
            bits = ffdh.parse_parameters_pem(pem)[0].bit_length()
            with self.assertRaises(groups.GroupError) as caught:
                groups.from_parameters_message(pem, max_bits=max_bits)
            self.assertEqual(str(caught.exception), f"the modulus has {bits} bits; "
                                                    f"at most {max_bits} are accepted (--max-bits)")

    def test_default_is_4096(self):
        self.assertEqual(groups.DEFAULT_MAX_BITS, 4096)
        pem = ffdh.encode_parameters_pem(2**4097 + 1, 2)
        self.assertRaises(groups.GroupError, groups.from_parameters_message, pem)
        self.assertIs(groups.from_parameters_message(
            ffdh.named_group("ffdhe4096").parameters_message), ffdh.named_group("ffdhe4096"))
        self.assertIs(groups.from_parameters_message(b"Group: x25519", max_bits=2048),
                      x25519.GROUP)

    def test_client_machine_reports_it(self):
        machine = DHClientHandshake()
        machine.start()
        machine.receive(messages.HEY_THERE)
        with self.assertRaises(BadParameters) as caught:
            machine.receive(ffdh.encode_parameters_pem(2**8000 + 1, 2))
        self.assertEqual(caught.exception.reason, "unusable parameters from the server: "
                         "the modulus has 8001 bits; at most 4096 are accepted (--max-bits)")


class ClientMaxBitsTests(_Loopback, unittest.TestCase):
    def test_usage(self):
        parser = client.build_parser()
        self.assertEqual(parser.parse_args(["dh"]).max_bits, 4096)
        self.assertEqual(parser.parse_args(["dh", "--max-bits", "8192"]).max_bits, 8192)
        for bad, message in [("1024", "must be between 2048 and 8192, not 1024"),
                             ("8193", "must be between 2048 and 8192, not 8193"),
                             ("lots", "not a number: 'lots'")]:
            err = io.StringIO()
            with self.assertRaises(SystemExit), contextlib.redirect_stderr(err):
                parser.parse_args(["dh", "--max-bits", bad])
            self.assertIn(f"argument --max-bits: {message}", err.getvalue())

    def test_refused_group_is_one_line(self):
        async def run():
            server = TrackingDHServerFactory(ffdh.named_group("ffdhe3072"))
            port, status, out, err = await self.serve_and_run_dh(server, "--max-bits", "2048")
            self.assertEqual((status, out), (1, ""))
            # After the fallback's warning (the server has no host key).
            self.assertEqual(err, unauthenticated(port)
                             + "keyx-client: unusable parameters from the server: "
                             "the modulus has 3072 bits; at most 2048 are accepted (--max-bits)\n")
        return defer.Deferred.fromCoroutine(run())


class GroupPolicyTests(unittest.TestCase):
    """The client's --groups: which groups it accepts from the server."""

    def test_option(self):
        self.assertEqual(groups.parse_groups_option("xwing"), ("xwing",))
        self.assertEqual(groups.parse_groups_option("xwing, x25519,xwing"), ("xwing", "x25519"))
        self.assertEqual(groups.policy_names(), groups.names() + ["custom"])
        for bad in ("", "xwing,", "X25519", "file:dh.pem"):
            with self.assertRaises(groups.GroupError) as caught:
                groups.parse_groups_option(bad)
            self.assertIn("unknown group", str(caught.exception))

    def test_default_accepts_what_it_accepted_before_and_the_hybrids(self):
        for name in groups.names():
            group = groups.named(name)
            self.assertIs(groups.from_parameters_message(group.parameters_message), group)
        custom = groups.from_parameters_message(read_data("dhparam-2048.pem"))
        self.assertEqual(custom.name, "custom")

    def test_a_token_group_not_accepted(self):
        with self.assertRaises(groups.GroupNotAccepted) as caught:
            groups.read_parameters_message(b"Group: x25519", accepted=("xwing",))
        self.assertEqual(str(caught.exception), "the server offers group x25519, and this "
                                                "client accepts only xwing (--groups)")
        self.assertIs(groups.read_parameters_message(b"Group: xwing", accepted=("xwing",)),
                      groups.named("xwing"))

    def test_finite_field_groups_not_accepted_are_refused_unread(self):
        for payload in (read_data("ffdhe2048.pem"), b"-----BEGIN DH PARAMETERS-----\nnot"):
            with self.assertRaises(groups.GroupNotAccepted) as caught:
                groups.read_parameters_message(payload, accepted=("xwing", "x25519"))
            self.assertEqual(str(caught.exception),
                             "the server offers a finite-field group, and this client "
                             "accepts only xwing, x25519 (--groups)")

    def test_named_and_custom_finite_field_groups(self):
        ffdhe2048 = read_data("ffdhe2048.pem")
        custom = read_data("dhparam-2048.pem")
        self.assertIs(groups.from_parameters_message(ffdhe2048, accepted=("ffdhe2048",)),
                      groups.named("ffdhe2048"))
        with self.assertRaises(groups.GroupNotAccepted) as caught:
            groups.read_parameters_message(custom, accepted=("ffdhe2048",))
        self.assertIn("offers group custom", str(caught.exception))
        with self.assertRaises(groups.GroupNotAccepted):
            groups.read_parameters_message(ffdhe2048, accepted=("ffdhe3072", "custom"))
        self.assertIsInstance(groups.read_parameters_message(custom, accepted=("custom",)),
                              groups.UncheckedParameters)

    def test_client_refuses_before_sending_its_key(self):
        accept = functools.partial(groups.from_parameters_message, accepted=("xwing",))
        client_machine = DHClientHandshake(accept_parameters=accept)
        server = DHServerHandshake(groups.named("x25519"))
        message = client_machine.start()
        message = client_machine.receive(server.receive(message))  # Params?
        four = server.receive(message)
        self.assertEqual(four, b"Group: x25519")
        with self.assertRaises(BadParameters) as caught:
            client_machine.receive(four)
        self.assertEqual(str(caught.exception), "the server offers group x25519, and this "
                                                "client accepts only xwing (--groups)")
        self.assertIsNone(client_machine.group)
        self.assertIsNone(client_machine._private_key)


class ClientGroupsTests(_Loopback, unittest.TestCase):
    def run_client(self, server, *options):
        return defer.Deferred.fromCoroutine(self.serve_and_run_dh(server, *options))

    @defer.inlineCallbacks
    def test_refuses_a_server_offering_another_group(self):
        server = TrackingDHServerFactory(groups.named("x25519"))
        port, status, out, err = yield self.run_client(server, "--groups", "xwing")
        self.assertEqual((status, out), (1, ""))
        self.assertEqual(err, unauthenticated(port) + "keyx-client: the server offers group "
                              "x25519, and this client accepts only xwing (--groups)\n")
        self.assertEqual(server.results, [])

    @defer.inlineCallbacks
    def test_agrees_in_an_accepted_group(self):
        server = TrackingDHServerFactory(groups.named("xwing"))
        port, status, out, err = yield self.run_client(server, "--groups", "xwing", "--json")
        self.assertEqual(status, 0, err)
        report = json.loads(out)
        [result] = server.results
        self.assertEqual(report["group"], "xwing")
        self.assertEqual(report["shared_secret"], result.shared_secret.hex())

    def test_usage(self):
        parser = client.build_parser()
        self.assertIsNone(parser.parse_args(["dh"]).groups)
        self.assertEqual(parser.parse_args(["dh", "--groups", "xwing,x25519"]).groups,
                         ("xwing", "x25519"))
        err = io.StringIO()
        with self.assertRaises(SystemExit), contextlib.redirect_stderr(err):
            parser.parse_args(["dh", "--groups", "kyber"])
        self.assertIn("argument --groups: unknown group 'kyber'", err.getvalue())


class ExponentTests(unittest.TestCase):
    def test_table(self):
        # RFC 7919 appendix A: 225, 275, 325, 375, 400 bits.
        for bits, expected in [(2048, 225), (2049, 275), (3072, 275), (4096, 325),
                               (6144, 375), (8192, 400)]:
            self.assertEqual(ffdh.private_exponent_bits(bits), expected, bits)
        self.assertRaises(ValueError, ffdh.private_exponent_bits, 8193)

    def test_generated_exponents(self):
        safe = groups.load_parameters_file(data_path("dhparam-2048.pem"))
        dhx = groups.load_parameters_file(data_path("dhx-2048.pem"))
        for group, bound in [(safe, 2**225), (dhx, dhx.q)]:
            xs = [int(group.generate_private_key().x) for _ in range(32)]
            self.assertTrue(all(1 < x < bound for x in xs), group.name)
            # 32 draws all below bound / 2^5 would have probability 2^-160.
            self.assertGreater(max(xs), bound >> 5, group.name)
            self.assertEqual(len(set(xs)), 32)
        for x in (0, 1, dhx.q):
            self.assertRaises(ValueError, dhx.private_key_from_value, x)

    def test_key_repr_hides_the_exponent(self):
        key = groups.load_parameters_file(data_path("dhparam-2048.pem")).private_key_from_value(
            SERVER_X)
        self.assertNotIn(str(SERVER_X), repr(key))
        self.assertNotIn(hex(SERVER_X)[2:], repr(key))


class CustomGroupTests(unittest.TestCase):
    def test_public_keys_are_what_openssl_writes(self):
        # tests/data/*-public-5e12.pem: written by cryptography (OpenSSL)
        # for the private value SERVER_X; see tests/data/README.
        for fixture, group in [
                ("ffdhe2048", groups.named("ffdhe2048")),
                ("dhparam-2048", groups.load_parameters_file(data_path("dhparam-2048.pem"))),
                ("dhx-2048", groups.load_parameters_file(data_path("dhx-2048.pem")))]:
            self.assertEqual(group.public_key_pem(group.private_key_from_value(SERVER_X)),
                             read_data(f"{fixture}-public-5e12.pem"), fixture)

    def test_checked_once_then_no_cryptography_per_handshake(self):
        group = groups.load_parameters_file(data_path("dhparam-2048.pem"))

        def fail(*args, **kwargs):
            raise AssertionError("cryptography's FFDH used during a handshake")

        for name in ("_ParameterNumbers", "_PublicNumbers", "_PrivateNumbers"):
            self.patch(ffdh, name, fail)
        self.patch(gmpy2, "is_prime", fail)
        server = DHServerHandshake(group)
        # The client trusts the group it knows: no re-check on its side either.
        client_machine = DHClientHandshake(accept_parameters=lambda payload: group)
        run_handshake(server, client_machine)
        self.assertEqual(server.result.shared_secret, client_machine.result.shared_secret)
        self.assertEqual(len(server.result.shared_secret), 256)

    def test_exchange_matches_the_arithmetic(self):
        group = groups.load_parameters_file(data_path("dhx-2048.pem"))
        server = DHServerHandshake(group, fixed_key(SERVER_X))
        client_machine = DHClientHandshake(fixed_key(CLIENT_X))
        run_handshake(server, client_machine)
        expected = pow(group.g, SERVER_X * CLIENT_X, group.p).to_bytes(256, "big")
        self.assertEqual(server.result.shared_secret, expected)
        self.assertEqual(client_machine.result.shared_secret, expected)

    def test_valid_parameters_need_no_openssl(self):
        def fail(*args):
            raise AssertionError("OpenSSL's check ran for valid parameters")

        self.patch(ffdh, "_openssl_check", fail)
        for name in ("dhparam-2048.pem", "dhx-2048.pem", "dhx-2048-safe-q.pem"):
            groups.load_parameters_file(data_path(name))

    def test_gmp_refuses_what_openssl_accepts(self):
        # Both refuse a composite p; OpenSSL's reason is the one given.
        pem = ffdh.encode_parameters_pem(2**2047 + 1, 2)
        with self.assertRaises(ffdh.ParameterError) as caught:
            groups.from_parameters_message(pem)
        self.assertIn("failed OpenSSL's safety checks", str(caught.exception))
        # Where OpenSSL would accept, GMP's reason stands.
        self.patch(ffdh, "_openssl_check", lambda p, g, q: None)
        with self.assertRaises(ffdh.ParameterError) as caught:
            groups.from_parameters_message(pem)
        self.assertEqual(str(caught.exception),
                         "the parameters failed the safety checks: p is not a safe prime")

    def test_gmp_checks(self):
        p, g, q, _ = ffdh.parse_parameters_pem(read_data("dhx-2048.pem"))
        safe_p = ffdh.parse_parameters_pem(read_data("dhparam-2048.pem"))[0]
        ffdh._gmp_check(p, g, q)
        ffdh._gmp_check(safe_p, 2, None)
        ffdh._gmp_check(safe_p, 2, (safe_p - 1) // 2)
        for numbers, reason in [((p + 2, g, q), "p is not prime"),
                                ((p, g, None), "p is not a safe prime"),
                                ((p, g, q + 2), "q is not a prime factor of p - 1"),
                                ((p, 3, q), "g does not have order q")]:
            with self.assertRaises(ffdh.ParameterError) as caught:
                ffdh._gmp_check(*numbers)
            self.assertIn(reason, str(caught.exception))


class X942SafePrimeTests(unittest.TestCase):
    """X9.42 parameters whose q is (p - 1) / 2 (tests/data/dhx-2048-safe-q.pem):
    OpenSSL's check accepts them, but OpenSSL's key generation fails for them
    (an InternalError at every handshake, before): the keys are GMP's now."""

    def test_loaded_as_a_safe_prime_group(self):
        group = groups.load_parameters_file(data_path("dhx-2048-safe-q.pem"))
        self.assertEqual(group.q, (group.p - 1) // 2)
        self.assertEqual(group.bits, 2048)

    def test_handshake(self):
        group = groups.load_parameters_file(data_path("dhx-2048-safe-q.pem"))
        server = DHServerHandshake(group)
        # The client builds the group from message 4, as from any server.
        client_machine = DHClientHandshake()
        run_handshake(server, client_machine)
        self.assertEqual(server.result.shared_secret, client_machine.result.shared_secret)
        self.assertEqual(server.result.session_key, client_machine.result.session_key)
        self.assertEqual(client_machine.group.q, group.q)

    def test_a_server_announcing_them(self):
        machine = DHClientHandshake()
        machine.start()
        machine.receive(messages.HEY_THERE)
        message5 = machine.receive(read_data("dhx-2048-safe-q.pem"))
        self.assertTrue(message5.startswith(messages.CLIENT_KEY_PREFIX + b"-----BEGIN PUBLIC KEY"))

