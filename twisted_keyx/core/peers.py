"""How the daemon names the ends of a connection in its logs and messages."""


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
