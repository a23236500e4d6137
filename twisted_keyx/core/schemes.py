"""The password-scheme registry: what a user record in the user file is.

Each record in the user file (:mod:`twisted_keyx.service.userfile`) names its
scheme in a ``"scheme"`` field; a record without one is EKE's (the format
before schemes existed, which keeps reading unchanged).  A scheme knows how
to turn its part of a record into an object and back:

- ``name``: the string stored in the record (``"eke"``, ``"opaque"``);
- ``description``: for ``keyx-admin`` (``"EKE (scrypt)"``);
- ``parse(name, fields) -> record``: ``fields`` is the record's JSON object
  without ``"scheme"``; raises ``ValueError`` (or a subclass) if unusable;
- ``serialise(record) -> dict``: the fields to store (without ``"scheme"``);
- ``describe(record) -> str``: one line for ``keyx-admin listusers``;
- ``add_user(name, password, options, say, store) -> (record, description)``:
  ``keyx-admin adduser``; ``options`` is a mapping of the command's options
  (its own among them), ``say(text)`` tells the user something on the way;
  ``store(interface)`` is the provider of a store interface of
  :mod:`twisted_keyx.core.interfaces` where the users go (``--store``'s
  database: ``IServerSetupStore``), or None (the user file: the scheme
  keeps that state itself, as OPAQUE its key file), as the daemon's
  ``shared.store`` in an entry's ``configure``; its Deferreds have fired
  when they are returned (keyx-admin runs no reactor);
  raises ``ValueError`` with a one-line message;
- ``add_user_options``: ``((flags, argparse keywords), ...)``, the options
  of its own ``keyx-admin adduser`` offers;
- optionally ``check_new_user(users, options, record=None)``: ``keyx-admin
  adduser`` to the user file refuses a new user given the others
  (ValueError; OPAQUE: registered against another key file);
- optionally ``copy_users(names, options, store, where) -> deliver``:
  ``keyx-admin copy-users`` copies the users ``names`` of this scheme from
  ``where`` (``store`` as for ``add_user``), and the scheme keeps more
  than their records (OPAQUE: the server setup); it reads that now, and
  ``deliver(store, where)`` puts it at the destination before any user is
  copied; ValueError in one line; and ``copy_users_options``, the options
  of its own ``keyx-admin copy-users`` offers (as ``add_user_options``).

Every record object has a ``scheme`` attribute naming its scheme; servers
ask the user file for the records of their own scheme only, so an EKE
server treats an OPAQUE user as unknown and vice versa.

A password handshake names its scheme in its entry of the handshake
registry (:attr:`twisted_keyx.core.handshakes.Handshake.scheme`); the
schemes are loaded from there the first time they are asked for, in the
registry's order, the first being the default of ``keyx-admin adduser``.
"""

from typing import Any, Dict, Optional, Tuple

from twisted_keyx.core import handshakes

#: The scheme of ``keyx-admin adduser`` without ``--scheme``: OPAQUE, whose
#: server never shows a salt, so that a fake server cannot make one table
#: for every client that logs in to it as EKE allows (docs/protocols.rst).
DEFAULT_SCHEME = "opaque"

#: A record without a "scheme" field is EKE's.
IMPLICIT_SCHEME = "eke"

class UnknownScheme(ValueError):
    """A record names a scheme no password handshake registers."""


_cache: Tuple[Optional[int], Dict[str, Any]] = (None, {})


def _schemes() -> Dict[str, Any]:
    """name -> scheme, for every password handshake the registry has now."""
    global _cache
    if _cache[0] == handshakes.generation and _cache[1]:
        return _cache[1]
    schemes: Dict[str, Any] = {}
    for entry in handshakes.password_handshakes():
        scheme = entry.load("scheme")
        if scheme.name in schemes:
            raise ValueError(f"scheme {scheme.name!r} is registered twice")
        schemes[scheme.name] = scheme
    _cache = (handshakes.generation, schemes)
    return schemes


def named(name):
    """The scheme called ``name``, or :class:`UnknownScheme`."""
    try:
        return _schemes()[name]
    except KeyError:
        raise UnknownScheme(f"unknown password scheme {name!r}") from None


def names():
    """The registered schemes' names, the default first."""
    return list(_schemes())


def parse_record(name, fields):
    """The record object for one user's JSON object (a dict)."""
    fields = dict(fields)
    scheme_name = fields.pop("scheme", IMPLICIT_SCHEME)
    if not isinstance(scheme_name, str):
        raise UnknownScheme("scheme: not a string")
    return named(scheme_name).parse(name, fields)


def serialise_record(record):
    """The JSON object stored for ``record``: EKE's without a "scheme"
    field (as before schemes existed), every other with one."""
    fields = named(record.scheme).serialise(record)
    if record.scheme != IMPLICIT_SCHEME:
        fields = {"scheme": record.scheme, **fields}
    return fields
