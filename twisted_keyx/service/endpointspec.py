"""Twisted server endpoint strings (``tcp:7777:interface=127.0.0.1``,
``unix:/tmp/k.sock:mode=600``) read once, for everything here that needs
to know what one listens on: ``twistd keyx``'s checks, the sockets
``--workers`` binds, the private mode of a unix socket, ``keyx-lab``'s
loopback check.

The syntax is Twisted's (``twisted.internet.endpoints.serverFromString``):
fields separated by ``:``, a field with ``=`` is a keyword, and a
backslash makes the next character plain (``tcp6:7777:interface=\\:\\:1``).
Twisted itself decides whether a description is valid; this only reads
what the fields say.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping


def _split(text: str, separator: str, limit: int = -1) -> list[str]:
    """``text`` split at each ``separator`` not escaped by a backslash (at
    most ``limit`` times), each piece kept as written (escapes and all)."""
    pieces, current, escaped = [], [], False
    for character in text:
        if escaped:
            current.append(character)
            escaped = False
        elif character == "\\":
            current.append(character)
            escaped = True
        elif character == separator and limit != 0:
            pieces.append("".join(current))
            current = []
            limit -= 1
        else:
            current.append(character)
    pieces.append("".join(current))
    return pieces


def unescape(text: str) -> str:
    """A field as Twisted reads it: each ``\\x`` becomes ``x``."""
    out, escaped = [], False
    for character in text:
        if escaped or character != "\\":
            out.append(character)
            escaped = False
        else:
            escaped = True
    return "".join(out)


#: An interface that listens on every address.
WILDCARD_INTERFACES = ("", "0.0.0.0", "::")


@dataclass(frozen=True)
class EndpointSpec:
    """What a server endpoint description says: its ``kind`` (``tcp``,
    ``tcp6``, ``ssl``, ``unix``...), its positional fields and its keywords,
    unescaped."""

    description: str
    kind: str
    positional: tuple[str, ...] = ()
    keywords: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, description: str) -> "EndpointSpec":
        fields = _split(description, ":")
        positional, keywords = [], {}
        for raw in fields[1:]:
            parts = _split(raw, "=", 1)
            if len(parts) == 2:
                keywords[unescape(parts[0])] = unescape(parts[1])
            else:
                positional.append(unescape(raw))
        return cls(description, unescape(fields[0]).lower(), tuple(positional), keywords)

    def _field(self, name: str, index: int) -> str | None:
        if name in self.keywords:
            return self.keywords[name]
        return self.positional[index] if len(self.positional) > index else None

    @property
    def is_tcp(self) -> bool:
        return self.kind in ("tcp", "tcp6", "ssl")

    @property
    def port(self) -> int | None:
        """The TCP port (tcp, tcp6, ssl), or None if not a number or not TCP."""
        if not self.is_tcp:
            return None
        try:
            return int(self._field("port", 0) or "")
        except ValueError:
            return None

    @property
    def interface(self) -> str:
        return self.keywords.get("interface", "")

    @property
    def path(self) -> str | None:
        """A unix socket's path, or None if not a unix endpoint."""
        if self.kind != "unix":
            return None
        return self._field("address", 0) or ""

    @property
    def mode(self) -> int | None:
        """A unix socket's mode if the description gives one."""
        text = self._field("mode", 1) if self.kind == "unix" else None
        return int(text, 8) if text else None

    @property
    def backlog(self) -> int | None:
        text = self.keywords.get("backlog")
        return int(text) if text else None

    def address(self) -> tuple | None:
        """What it listens on: ``("tcp", port, interface)``, ``("unix",
        path)``, or None when that cannot be told (other kinds, a port that
        is not a number)."""
        if self.is_tcp:
            port = self.port
            return None if port is None else ("tcp", port, self.interface)
        if self.kind == "unix":
            return ("unix", self.path)
        return None

    def clashes(self, other: "EndpointSpec") -> bool:
        """Whether both would listen on the same port or socket (port 0
        never clashes: the kernel picks a free one)."""
        a, b = self.address(), other.address()
        if a is None or b is None or a[0] != b[0] or a[1] != b[1]:
            return False
        if a[0] == "unix":
            return True
        if a[1] == 0:
            return False
        return a[2] == b[2] or a[2] in WILDCARD_INTERFACES or b[2] in WILDCARD_INTERFACES

    def private(self) -> str:
        """The description with ``:mode=600`` added if it is a ``unix:``
        endpoint that gives no mode (Twisted's default is 0666, which lets
        every local user connect)."""
        if self.kind != "unix" or "mode" in self.keywords or len(self.positional) > 1:
            return self.description
        return self.description + ":mode=600"


def parse(description: str) -> EndpointSpec:
    return EndpointSpec.parse(description)
