"""How the server names the other end of a connection in its logs."""

from twisted.internet.address import IPv6Address


def describe_peer(address):
    """``192.0.2.1:40000``, ``[2001:db8::1]:40000``, ``unix:/path`` or ``unix``.

    An IPv6 host is bracketed (RFC 3986 section 3.2.2), or its last group
    could be read as the port.
    """
    host = getattr(address, "host", None)
    if host is not None:
        if isinstance(address, IPv6Address):
            host = f"[{host}]"
        return f"{host}:{address.port}"
    name = getattr(address, "name", None)
    return f"unix:{name.decode() if isinstance(name, bytes) else name}" if name else "unix"
