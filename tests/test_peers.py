"""How peers are named in the logs (twisted_keyx.core.peers)."""

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.trial import unittest

from twisted_keyx.core.peers import describe_peer


class DescribePeerTests(unittest.TestCase):
    def test_ipv4(self):
        self.assertEqual(describe_peer(IPv4Address("TCP", "192.0.2.1", 40000)),
                         "192.0.2.1:40000")

    def test_ipv6_is_bracketed(self):
        # Unbracketed, "::1:40000" could be the address ::1:40000 with no port.
        self.assertEqual(describe_peer(IPv6Address("TCP", "::1", 40000)), "[::1]:40000")
        self.assertEqual(describe_peer(IPv6Address("TCP", "2001:db8::7", 443)),
                         "[2001:db8::7]:443")

    def test_ipv4_mapped_ipv6_is_bracketed(self):
        self.assertEqual(describe_peer(IPv6Address("TCP", "::ffff:192.0.2.1", 40000)),
                         "[::ffff:192.0.2.1]:40000")

    def test_unix_socket_with_and_without_a_name(self):
        self.assertEqual(describe_peer(UNIXAddress(b"/run/keyx.sock")), "unix:/run/keyx.sock")
        self.assertEqual(describe_peer(UNIXAddress("/run/keyx.sock")), "unix:/run/keyx.sock")
        # A client socket accepted on a UNIX listener has no name.
        self.assertEqual(describe_peer(UNIXAddress(None)), "unix")
