"""Every use of a private Twisted attribute, in one place.

Twisted gives no public way to do these few things, so they reach into its
objects; each is named here, written once, and has a test
(``tests/test_twistedshim.py``) that fails if Twisted renames or changes the
attribute, so an upgrade breaks one test, not a daemon in production.

- :func:`server_tls_context_factory`: the TLS context factory of an ``ssl:``
  server endpoint (``SSL4ServerEndpoint._sslContextFactory``), for a worker
  that adopts an inherited socket and wraps its factory in TLS itself.
- :func:`share_listening_port`: a listening port whose socket other
  processes share: closing it must not ``shutdown()`` the socket for them
  (``tcp.Port._shouldShutdown``), nor remove a unix socket's file, which is
  the parent's (``unix.Port._bindPath``).
- :class:`RepeatableOptions`: options named at run time, which
  :class:`twisted.python.usage.Options` takes only through its private
  ``_gather_handlers`` (``twistd keyx`` takes one per endpoint option of
  the handshake registry, and the daemon-wide options each handshake
  owns).
- :func:`proxy_header_parser`: the PROXY protocol header parsers of
  :mod:`twisted.protocols.haproxy` (its private ``_v1parser``,
  ``_v2parser`` and ``_exceptions``), whose public endpoint wrapper
  connects the protocol before the header has named the client
  (:mod:`twisted_keyx.service.proxied` reads the header first).
"""

import ipaddress
from typing import Any, Iterable, Tuple

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.protocols.haproxy._exceptions import InvalidProxyHeader
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser
from twisted.python import usage

#: What a parser of :func:`proxy_header_parser` raises for a bad header.
InvalidProxyHeader = InvalidProxyHeader
#: The 12 bytes a PROXY v2 header begins with.
PROXY_V2_SIGNATURE: bytes = V2Parser.PREFIX


def server_tls_context_factory(endpoint: Any) -> Any:
    """The context factory an ``ssl:`` server endpoint string was parsed
    into (``endpoints.serverFromString(reactor, "ssl:...")``)."""
    return endpoint._sslContextFactory


def share_listening_port(port: Any, unix: bool = False) -> None:
    """Make ``port`` (from ``reactor.adoptStreamPort``) close only this
    process's copy of a shared listening socket: no ``shutdown()`` that
    would stop it for the other processes, and, for a unix socket, no
    removal of its file (a path of ``b"\\0"`` is in the abstract namespace,
    which Twisted does not unlink)."""
    port._shouldShutdown = False
    if unix:
        port._bindPath = b"\0"


class RepeatableOptions(usage.Options):
    """:class:`twisted.python.usage.Options` with more options than its
    ``opt_`` methods and ``optParameters``: :meth:`repeatableOptions` names
    them at run time (``twistd keyx`` takes one per endpoint option of the
    handshake registry), each takes a value and may be repeated, and its
    values collect, in order, in ``self[name]`` (a list the subclass makes).

    :meth:`runtimeFlags` and :meth:`runtimeParameters` add flags and
    parameters as ``optFlags`` and ``optParameters`` would, named at run time
    (long names only).  A name given twice is a ValueError.

    usage.Options has no public way to add an option at run time; this
    extends its private ``_gather_handlers``, which returns ``(longOpt,
    shortOpt, docs, settings, synonyms, dispatch)``.
    """

    def repeatableOptions(self) -> Iterable[Tuple[str, str]]:
        """``(name, help)`` of each option to add."""
        return ()

    def runtimeFlags(self) -> Iterable[Tuple[str, str]]:
        """``(name, help)`` of each flag to add: ``self[name]`` is 1 when
        given, else 0."""
        return ()

    def runtimeParameters(self) -> Iterable[Tuple[str, Any, str, Any]]:
        """``(name, default, help, coerce)`` of each parameter to add
        (``coerce``: None for the string); ``--help`` adds ``[default: ...]``
        unless ``default`` is None, as for ``optParameters``."""
        return ()

    def _gather_handlers(self):
        longOpt, shortOpt, docs, settings, synonyms, dispatch = super()._gather_handlers()
        taken = set(self.synonyms) | set(synonyms) | {o.rstrip("=") for o in longOpt}

        def add(name, help):
            if name in taken:
                raise ValueError(f"option --{name} is defined twice")
            taken.add(name)
            docs[name] = help
            synonyms[name] = name

        for name, help in self.repeatableOptions():
            add(name, help)
            longOpt.append(name + "=")
            dispatch[name] = lambda option, value, name=name: self[name].append(value)
        for name, help in self.runtimeFlags():
            add(name, help)
            longOpt.append(name)
            settings[name] = 0
            dispatch[name] = self._flag
        for name, default, help, coerce in self.runtimeParameters():
            add(name, help)
            longOpt.append(name + "=")
            settings[name] = default
            dispatch[name] = usage.CoerceParameter(self, coerce or str)
        return longOpt, shortOpt, docs, settings, synonyms, dispatch

    def _flag(self, name, value=None):
        # As usage.Options' own flags: a value is refused.
        if value not in ("", None):
            raise usage.UsageError(f"Flag '{name}' takes no argument. Not even \"{value}\".")
        self[name] = 1


def proxy_header_parser(data: bytes) -> Any:
    """A parser for the PROXY protocol header (v1 or v2) that ``data``, the
    first bytes of a connection, begins; None if they begin none.  Its
    ``feed(data)`` returns ``(info, remaining)``: ``info`` None while more
    of the header is to come, else with ``source`` and ``destination``
    addresses (``source`` None for a v2 ``LOCAL`` header, a health
    check); it raises :data:`InvalidProxyHeader` for anything else,
    including what Twisted's parsers let through: a v1 address that is no
    IP address (``PROXY TCP4 nonsense ...`` became the host
    ``"nonsense"``), a port above 65535, and a port that is no number
    (a ValueError, which became a traceback)."""
    if len(data) >= 16 and data[:12] == V2Parser.PREFIX and data[12] & 0xF0 == 0x20:
        return _CheckedParser(V2Parser())
    if len(data) >= 8 and data[:5] == V1Parser.PROXYSTR:
        return _CheckedParser(V1Parser())
    return None


def proxy_header_may_begin(data: bytes) -> bool:
    """Whether ``data``, the first bytes of a connection, are too few for
    :func:`proxy_header_parser` to tell and may still begin a PROXY header
    (TCP may cut the header anywhere: wait for more)."""
    if len(data) < 16 and V2Parser.PREFIX.startswith(data[:12]):
        return len(data) <= 12 or data[12] & 0xF0 == 0x20
    return len(data) < 8 and V1Parser.PROXYSTR.startswith(data[:5])


class _CheckedParser:
    """A parser of :mod:`twisted.protocols.haproxy` whose addresses are checked."""

    def __init__(self, parser: Any) -> None:
        self.parser = parser

    def feed(self, data: bytes) -> Tuple[Any, Any]:
        try:
            info, remaining = self.parser.feed(data)
        except ValueError as e:  # int(b"x") for a port
            raise InvalidProxyHeader() from e
        if info is not None and info.source is not None:
            for address in (info.source, info.destination):
                _check_address(address)
        return info, remaining


def _check_address(address: Any) -> None:
    """An IPv4 or IPv6 address of its own family with a port; anything else
    (a UNIX address from a v2 header too: the daemon counts sources by IP
    address) is InvalidProxyHeader."""
    family = {IPv4Address: 4, IPv6Address: 6}.get(type(address))
    try:
        ip = ipaddress.ip_address(address.host)
    except (AttributeError, ValueError):
        raise InvalidProxyHeader() from None
    if ip.version != family or not 0 <= address.port <= 65535:
        raise InvalidProxyHeader()
