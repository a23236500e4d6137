"""How the daemon names the ends of a connection in its logs and messages,
groups peers into sources, and what a server factory asks of the
connection policy (:mod:`twisted_keyx.service.limits`, which installs
itself through these hooks: the handshakes import nothing of it)."""

import functools
import ipaddress
import socket


def host_port(host, port):
    """``host:port``, with an IPv6 host in brackets (RFC 3986 section 3.2.2):
    unbracketed, the last group of ``::1:7777`` could be read as the port."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def describe_peer(address):
    """``192.0.2.1:40000``, ``[2001:db8::1]:40000``, ``unix:/path`` or ``unix``."""
    host = getattr(address, "host", None)
    if host is not None:
        return host_port(host, address.port)
    name = getattr(address, "name", None)
    return f"unix:{name.decode() if isinstance(name, bytes) else name}" if name else "unix"


def printable(text):
    """``text`` with control and other non-printable characters escaped
    (``\\t``, ``\\x1b``...), for logs and terminals: a peer's text must not
    forge log lines or drive the operator's terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _is_plain_ipv4(host):
    """Whether ``host`` is an IPv4 address written as the system writes one,
    as every IPv4 peer address from Twisted is.  Two C calls: about an
    eighth of the cost of parsing it with :mod:`ipaddress`."""
    try:
        return socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, host)) == host
    except (OSError, TypeError, ValueError):
        return False


#: Source groups remembered (a host asks once per connection; peers repeat).
SOURCE_CACHE_SIZE = 4096


@functools.lru_cache(maxsize=SOURCE_CACHE_SIZE)
def source_group(host, ipv4_prefix=32, ipv6_prefix=64):
    """The source group ``host`` belongs to (:meth:`twisted_keyx.service.limits.Limits.source_of`), cached: parsing an address costs more than
    the rest of the connection policy.  An IPv4 address at /32 is its own
    group and is not parsed, so that peers from more addresses than the
    cache holds (each connection a miss) do not each cost a parse."""
    if ipv4_prefix == 32 and _is_plain_ipv4(host):
        return host
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = ipv4_prefix if ip.version == 4 else ipv6_prefix
    if prefix == 32 and ip.version == 4:
        return str(ip)
    network = ipaddress.ip_network((int(ip), prefix), strict=False)
    if prefix == ip.max_prefixlen:
        return str(network.network_address)  # no scope, no "/32"
    return str(network)


def handshake_finished(transport):
    """Tell the connection's guard, if any, that the handshake is over.

    The handshake deadline stops and the idle timeout starts.  A protocol
    whose connection ends with its handshake (DH) need not call it.
    """
    notify = getattr(transport, "handshakeFinished", None)
    if notify is not None:
        notify()


class PeerLogging:
    """For a server factory: its lines about a connection go through
    ``peer_lines`` (a :class:`twisted_keyx.service.limits.PeerLines`, set by
    :meth:`twisted_keyx.service.limits.ConnectionPolicy.wrap`; None: all are logged)."""

    peer_lines = None

    def peerMayLog(self, session, kind):
        """Whether the line of ``kind`` about ``session``'s connection is logged."""
        if self.peer_lines is None:
            return True
        return self.peer_lines.admit(session.transport.getPeer(), kind)
