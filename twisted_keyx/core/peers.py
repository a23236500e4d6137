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


def printable(text, backslash=True):
    """``text`` with control and other non-printable characters escaped
    (``\\t``, ``\\x1b``...), for logs and terminals: a peer's text must not
    forge log lines or drive the operator's terminal.  A backslash is
    escaped too (``\\\\``), so that the text ``\\x1b`` a user typed does not
    read as the escape character: the result is unambiguous.  With
    ``backslash=False`` a backslash is left as it is (for a terminal, where
    only control characters matter, or text that is already a repr)."""
    if text.isprintable() and (not backslash or "\\" not in text):
        return text
    return "".join(c if c.isprintable() and (c != "\\" or not backslash) else repr(c)[1:-1]
                   for c in text)
