"""The client's two trust-on-first-use stores (known_hosts, OPAQUE known
servers) share one folder rule and one result type."""

import os

from twisted.trial import unittest

from twisted_keyx.trust import knownhosts, knownservers, tofu
from twisted_keyx.trust.tofu import TrustCheck, TrustStatus


class DefaultPathTests(unittest.TestCase):
    def setUp(self):
        self.patch(os.path, "expanduser", lambda path: path.replace("~", "/home/u"))

    def paths(self, environ):
        """Both stores' default paths, as the client finds them with this
        environment (read from os.environ, as the client does)."""
        self.patch(os, "environ", dict(environ))
        return (knownhosts.KnownHosts().path, knownservers.KnownServers().path)

    def test_unset_empty_or_relative_is_the_home_config(self):
        """A relative XDG_CONFIG_HOME is ignored, as the XDG Base Directory
        Specification says, by both stores (the known servers went to
        ./relative/dir/twisted-keyx/opaque_servers, known_hosts to ~/.config)."""
        for environ in ({}, {"XDG_CONFIG_HOME": ""}, {"XDG_CONFIG_HOME": "relative/dir"},
                        {"XDG_CONFIG_HOME": "rel"}):
            self.assertEqual(self.paths(environ),
                             ("/home/u/.config/twisted-keyx/known_hosts",
                              "/home/u/.config/twisted-keyx/opaque_servers"), environ)

    def test_absolute_config_home(self):
        self.assertEqual(self.paths({"XDG_CONFIG_HOME": "/etc/xdg-u"}),
                         ("/etc/xdg-u/twisted-keyx/known_hosts",
                          "/etc/xdg-u/twisted-keyx/opaque_servers"))

    def test_one_folder(self):
        for environ in ({}, {"XDG_CONFIG_HOME": "x"}, {"XDG_CONFIG_HOME": "/abs"}):
            self.assertEqual(os.path.dirname(knownhosts.default_path(environ)),
                             tofu.config_folder(environ))
            self.assertEqual(os.path.dirname(knownservers.default_path(environ)),
                             tofu.config_folder(environ))


class ResultTypeTests(unittest.TestCase):
    """Both stores answer with a TrustCheck whose status is a TrustStatus."""

    def setUp(self):
        self.dir = self.mktemp()
        os.makedirs(self.dir)

    def test_known_hosts(self):
        from cryptography.hazmat.primitives.asymmetric import ed25519

        key = ed25519.Ed25519PrivateKey.generate().public_key()
        known = knownhosts.KnownHosts(os.path.join(self.dir, "known_hosts"))
        first = known.check("127.0.0.1", 7777, key)
        self.assertEqual(first, TrustCheck(TrustStatus.NEW, "[127.0.0.1]:7777", known.path))
        known.record("127.0.0.1", 7777, key)
        self.assertIs(known.check("127.0.0.1", 7777, key).status, TrustStatus.KNOWN)
        other = ed25519.Ed25519PrivateKey.generate().public_key()
        self.assertIs(known.check("127.0.0.1", 7777, other).status, TrustStatus.CHANGED)

    def test_known_servers(self):
        known = knownservers.KnownServers(os.path.join(self.dir, "opaque_servers"))
        first = known.check_and_record("127.0.0.1", 7777, b"a" * 32)
        self.assertEqual(first, TrustCheck(TrustStatus.NEW, "127.0.0.1:7777", known.path))
        again = known.check_and_record("127.0.0.1", 7777, b"a" * 32)
        self.assertIs(again.status, TrustStatus.KNOWN)
        changed = known.check_and_record("127.0.0.1", 7777, b"b" * 32)
        self.assertEqual((changed.status, changed.previous),
                         (TrustStatus.CHANGED, knownservers.server_key_fingerprint(b"a" * 32)))
