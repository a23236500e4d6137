"""The group registry: every group the DH handshake can run in, by name.

A group is what message 4 of the DH handshake announces and what the two
public keys of messages 5 and 6 live in (docs/protocols.rst, Groups).  Each
group knows its sizes, its message 4, how to check a peer's key and how to
compute the shared secret, so option parsing, the state machines and the
framings ask this module and never name a kind of group:

- ``ffdhe2048``, ``ffdhe3072``, ``ffdhe4096``: the RFC 7919 finite-field
  groups (:mod:`twisted_keyx.groups.ffdh`);
- ``x25519``: RFC 7748's X25519 (:mod:`twisted_keyx.groups.x25519`);
- ``xwing``, ``mlkem768x25519-sha256``: ML-KEM-768 and X25519 as one KEM,
  with X-Wing's and OpenSSH's combiners (:mod:`twisted_keyx.groups.hybrid`);
- ``file:PATH``: finite-field parameters from a PEM file (``--params``),
  checked once when loaded.

Every group implements :class:`Group`.  Errors are neutral:
:class:`GroupError` for a group or parameters that cannot be used,
:class:`InvalidPublicKey` for a peer's key that cannot be used.
"""

import functools
from typing import Any, Callable, Dict

from twisted_keyx.groups import ffdh
from twisted_keyx.groups import hybrid
from twisted_keyx.groups import x25519
from twisted_keyx.groups.ffdh import UncheckedParameters
from twisted_keyx.groups.api import DiffieHellmanGroup, Group, GroupError, InvalidPublicKey

__all__ = [
    "CUSTOM", "DEFAULT", "DEFAULT_MAX_BITS", "DiffieHellmanGroup", "Group", "GroupError",
    "GroupNotAccepted",
    "InvalidPublicKey", "MAX_PARAMETERS_MESSAGE", "MAX_PUBLIC_KEY_MESSAGE", "MAX_REPLY_MESSAGE", "PARAMETERS_TOKENS",
    "UncheckedParameters", "from_parameters_message", "is_parameters_message",
    "load_parameters_file", "named", "names", "parse_groups_option", "policy_names",
    "read_parameters_message",
]

#: The group served when neither --group nor --params is given.
DEFAULT = "ffdhe2048"

#: Largest group a client accepts from a server unless told otherwise.
DEFAULT_MAX_BITS = 4096


#: Name -> how to get the group (looked up when asked: named FFDH groups
#: are built, and cached, on first use).
_REGISTRY: Dict[str, Callable[[], Any]] = {name: functools.partial(ffdh.named_group, name) for name in ffdh.NAMED_GROUP_PRIMES}
_REGISTRY["x25519"] = lambda: x25519.GROUP
for _group in hybrid.GROUPS:
    _REGISTRY[_group.name] = (lambda group: lambda: group)(_group)

#: The groups whose message 4 is an exact token rather than a PEM parameter
#: block, by token (a new such group registers here and in _REGISTRY).
_TOKEN_GROUPS = {group.parameters_message: group for group in (x25519.GROUP, *hybrid.GROUPS)}
#: Their tokens (the unframed wire's splitter needs them).
PARAMETERS_TOKENS = tuple(_TOKEN_GROUPS)

#: Largest message 4 and largest public key message of any group a client
#: may meet (bounds for the client's framings).
MAX_PARAMETERS_MESSAGE = max(ffdh.MAX_PARAMETERS_PEM, *map(len, PARAMETERS_TOKENS))
MAX_PUBLIC_KEY_MESSAGE = max(ffdh.MAX_PUBLIC_KEY_PEM, x25519.MAX_PUBLIC_KEY_PEM,
                             hybrid.MAX_PUBLIC_KEY_PEM)
#: Largest message 6 body (a DH public key or a KEM ciphertext) of any group.
MAX_REPLY_MESSAGE = max(MAX_PUBLIC_KEY_MESSAGE, hybrid.MAX_CIPHERTEXT_PEM)


def names():
    """The names ``--group`` accepts, in the order ``--help`` lists them."""
    return list(_REGISTRY)


def named(name):
    """The group called ``name``; raises :class:`GroupError` if there is none."""
    try:
        make = _REGISTRY[name]
    except (KeyError, TypeError):
        known = ", ".join(_REGISTRY)
        raise GroupError(f"unknown group {name!r}; known groups: {known}") from None
    return make()


def load_parameters_file(path):
    """The group of a PEM parameter file (``--params``), checked once, now."""
    return ffdh.load_parameters_file(path)


#: The name ``keyx-client dh --groups`` gives any finite-field group that is
#: not one of the named ones (checked as a parameter file is).
CUSTOM = "custom"


class GroupNotAccepted(GroupError):
    """Client side: the server's group is not one the client accepts
    (``--groups``); str() is the one line to show."""


def policy_names():
    """What ``keyx-client dh --groups`` accepts: every group's name and
    :data:`CUSTOM`; all of them by default."""
    return names() + [CUSTOM]


def parse_groups_option(text):
    """``--groups xwing,x25519``: the tuple of names, in the order given,
    each one of :func:`policy_names`; raises :class:`GroupError`."""
    chosen = []
    for name in text.split(","):
        name = name.strip()
        if name not in policy_names():
            known = ", ".join(policy_names())
            raise GroupError(f"unknown group {name!r}; known groups: {known}")
        if name not in chosen:
            chosen.append(name)
    return tuple(chosen)


def _offered(group):
    """The --groups name of a group (or UncheckedParameters) a server sent."""
    name = getattr(group, "name", CUSTOM)
    return name if name in _REGISTRY else CUSTOM


def _refuse_unless_accepted(group, accepted):
    if accepted is not None and _offered(group) not in accepted:
        raise GroupNotAccepted(
            f"the server offers group {_offered(group)}, and this client accepts "
            f"only {', '.join(accepted)} (--groups)")
    return group


def is_parameters_message(payload):
    """Whether ``payload`` has the shape of a message 4 (not whether it is usable)."""
    if payload in PARAMETERS_TOKENS:
        return True
    return payload.lstrip().startswith(b"-----BEGIN ") and b"PARAMETERS-----" in payload[:64]


def from_parameters_message(payload, max_bits=DEFAULT_MAX_BITS, accepted=None):
    """Client side: the group a server announced in message 4.

    A group not in ``accepted`` (names of :func:`policy_names`; None: all)
    is refused with :class:`GroupNotAccepted`, and a group larger than
    ``max_bits``, before any expensive check; a named group is recognised
    by its parameters; any other is checked as a parameter file would be.
    Raises :class:`GroupError`.
    """
    parameters = read_parameters_message(payload, max_bits, accepted)
    if isinstance(parameters, UncheckedParameters):
        parameters.check()
        return parameters.group()
    return parameters


def read_parameters_message(payload, max_bits=DEFAULT_MAX_BITS, accepted=None):
    """The cheap half of :func:`from_parameters_message`: the group, or
    :class:`UncheckedParameters` whose ``check()`` (the costly half) is
    still to run; raises :class:`GroupError` (:class:`GroupNotAccepted` for
    a group not in ``accepted``).  ``keyx-client dh`` runs the check in
    another process (:mod:`twisted_keyx.groups.check`)."""
    group = _TOKEN_GROUPS.get(payload)
    if group is not None:
        return _refuse_unless_accepted(group, accepted)
    if accepted is not None and not any(
            name == CUSTOM or name in ffdh.NAMED_GROUP_PRIMES for name in accepted):
        # No finite-field group is acceptable: refused unread.
        raise GroupNotAccepted(
            f"the server offers a finite-field group, and this client accepts "
            f"only {', '.join(accepted)} (--groups)")
    return _refuse_unless_accepted(ffdh.read_parameters_pem(payload, max_bits=max_bits),
                                   accepted)
