"""OPAQUE as a password scheme of the user file (:mod:`twisted_keyx.core.schemes`),
and the daemon's key file (the :class:`~twisted_keyx.opaque.records.ServerSetup`).

A user's object in the user file::

    "bob": {"scheme": "opaque", "client_public_key": "...", "masking_key": "...",
            "envelope": "...", "ksf": {"name": "argon2id", ...},
            "server_key": "SHA256:..."}

``server_key`` (absent in records made before it) is the fingerprint of the
key file's public key the record was made with: ``keyx-admin adduser``
refuses to register against another key file than the other users'.

Nothing in it logs in: it is the RFC 9807 registration record, which opens
only with the password and the server's OPRF seed (in the key file).
"""

import os
import stat
from dataclasses import dataclass

from twisted_keyx.core.fileutil import create_file_exclusively, open_regular, write_file_atomically
from twisted_keyx.opaque.errors import OpaqueError
from twisted_keyx.opaque.records import RegistrationRecord, ServerSetup
from twisted_keyx.opaque.registration import register
from twisted_keyx.trust.knownservers import server_key_fingerprint

DEFAULT_KEY_FILE = "keyx-opaque-key"
#: A server setup is about 1 KiB of JSON.
MAX_KEY_FILE_SIZE = 64 * 1024


@dataclass(frozen=True, repr=False)
class OpaqueUser:
    scheme = "opaque"
    name: str
    record: RegistrationRecord
    #: :func:`~twisted_keyx.trust.knownservers.server_key_fingerprint` of the
    #: key file's public key at registration, or None (an older record).
    server_key: str | None = None

    def __repr__(self):
        return f"OpaqueUser(name={self.name!r}, {self.record.ksf})"


class OpaqueScheme:
    name = "opaque"
    description = "OPAQUE (RFC 9807, Argon2id; nothing stored logs in)"
    #: ``keyx-admin adduser``'s options for this scheme: (flags, argparse keywords).
    add_user_options = (
        (("--opaque-key",), dict(
            metavar="FILE", default=DEFAULT_KEY_FILE,
            help="the OPAQUE server key file, created (mode 0600) if missing "
                 f"[default: {DEFAULT_KEY_FILE}]")),
    )

    #: ``keyx-admin copy-users``'s options for this scheme (:meth:`copy_users`).
    copy_users_options = (
        (("--opaque-key",), dict(
            metavar="FILE", default=DEFAULT_KEY_FILE,
            help=f"the OPAQUE key file beside a user file [default: {DEFAULT_KEY_FILE}]")),
    )

    def parse(self, name, fields):
        keys = {"client_public_key", "masking_key", "envelope", "ksf"}
        if set(fields) - {"server_key"} != keys:
            raise ValueError(f"expected an object with exactly {', '.join(sorted(keys))}, "
                             "scheme (and server_key)")
        server_key = fields.get("server_key")
        if server_key is not None and not (isinstance(server_key, str)
                                           and server_key.startswith("SHA256:")
                                           and len(server_key) == 50):
            raise ValueError("server_key must be SHA256: and 43 base64 characters")
        try:
            record = RegistrationRecord.from_json({k: fields[k] for k in keys})
        except OpaqueError as e:
            raise ValueError(str(e)) from None
        return OpaqueUser(name, record, server_key)

    def serialise(self, user):
        fields = user.record.to_json()
        if user.server_key is not None:
            fields["server_key"] = user.server_key
        return fields

    def describe(self, user):
        return f"opaque, {user.record.ksf}"

    def add_user(self, name, password, options, say, store):
        """``keyx-admin adduser``: run registration against the server
        setup of ``store(IServerSetupStore)`` (``--store``'s database) or,
        when there is none, of the key file of ``options["opaque_key"]``;
        either is made first if missing (``say`` tells the user so).  The
        record and how it is described.  ValueError for a setup that cannot
        be used."""
        from twisted_keyx.core.interfaces import IServerSetupStore

        shared = store(IServerSetupStore)
        if shared is not None:
            setup = _shared_setup(shared, say)
        else:
            path = options["opaque_key"]
            try:
                setup, created = load_or_create_key_file(path)
            except KeyFileError as e:
                raise ValueError(str(e)) from None
            if created:
                say(f"created the OPAQUE key file {path} (mode 0600)")
        try:
            user = new_user(name, password, setup)
        except OpaqueError as e:  # the key stretching failed here, or the password
            raise ValueError(str(e)) from None
        return user, f"opaque, {user.record.ksf}"

    def check_new_user(self, users, options, user=None):
        """``keyx-admin adduser``, before :meth:`add_user` (``user`` None)
        and again under the user file's lock (``user``, the new record):
        ValueError if ``options["opaque_key"]`` is not the key file the
        other OPAQUE users of ``users`` were registered with (a missing one
        while there are OPAQUE users included): the new user could never
        log in to the daemon that serves theirs."""
        given = options["opaque_key"]
        path = os.path.abspath(given)
        if user is None:
            registered = sorted(n for n, u in users.items() if u.scheme == self.name)
            if registered and not os.path.exists(path):
                raise ValueError(
                    f"no OPAQUE key file {path}, but the user file has {len(registered)} "
                    f"OPAQUE user(s) ({', '.join(registered[:3])}), who can log in only "
                    "with the key file they were registered with; give --opaque-key the "
                    "daemon's key file")
            if not os.path.exists(path):
                return
            try:
                mine = server_key_fingerprint(load_key_file(given).server_public_key)
            except KeyFileError as e:
                raise ValueError(str(e)) from None
        else:
            mine = user.server_key
        others = other_key_files(users, mine)
        if others:
            key, names = next(iter(others.items()))
            raise ValueError(
                f"the OPAQUE key file {path} (server key {mine}) is not the one the "
                f"OPAQUE users of the user file were registered with "
                f"({', '.join(names[:3])}{', ...' if len(names) > 3 else ''}: server key "
                f"{key}); give --opaque-key the daemon's key file")

    def copy_users(self, names, options, store, where):
        """``keyx-admin copy-users``, at the source ``where``: the OPAQUE
        users ``names`` are copied; their server setup is read from
        ``store(IServerSetupStore)`` (a store's) or else the key file of
        ``options["opaque_key"]``.  Returns ``deliver(store, where)``, run
        at the destination before any user is copied: the setup stored in
        its IServerSetupStore, or else in that key file (written mode 0600
        if missing); ValueError, one line, if the destination holds another
        setup (the users would not log in there) or either cannot be used."""
        from twisted_keyx.core.atonce import result_now
        from twisted_keyx.core.interfaces import IServerSetupStore, StoreUnavailable

        shared = store(IServerSetupStore)
        try:
            if shared is not None:
                setup = result_now(shared.load())
                if setup is None:
                    raise ValueError(f"{where} has OPAQUE users but no OPAQUE server setup")
            else:
                setup = load_key_file(options["opaque_key"])
        except (StoreUnavailable, KeyFileError) as e:
            raise ValueError(f"{where} has OPAQUE users: {e}") from None

        def deliver(store, where):
            shared = store(IServerSetupStore)
            if shared is not None:
                try:
                    stored = result_now(shared.create(setup))
                except StoreUnavailable as e:
                    raise ValueError(str(e)) from None
                if stored.dumps() != setup.dumps():
                    raise ValueError(f"{where} has another OPAQUE server setup: the OPAQUE "
                                     f"users {', '.join(names)} would not log in there")
                return
            path = options["opaque_key"]
            if not os.path.exists(path):
                try:
                    write_file_atomically(path, setup.dumps(), mode=0o600)
                except OSError as e:
                    raise ValueError(f"cannot write {path}: {e.strerror}") from None
                return
            try:
                existing = load_key_file(path)
            except KeyFileError as e:
                raise ValueError(str(e)) from None
            if existing.dumps() != setup.dumps():
                raise ValueError(f"{path} holds another OPAQUE server setup")

        return deliver


SCHEME = OpaqueScheme()


def load_or_create(store, generate):
    """(setup, created): the setup ``store``
    (:class:`~twisted_keyx.core.interfaces.IServerSetupStore`) holds, or,
    when it has none, ``generate()``'s stored there (created: True), unless
    another process stored one first (that one; created: False).  The
    store must answer at once (:func:`twisted_keyx.core.atonce.result_now`:
    the daemon's start-up, keyx-admin); a store that cannot be used raises
    :class:`~twisted_keyx.core.interfaces.StoreUnavailable`."""
    from twisted_keyx.core.atonce import result_now

    setup = result_now(store.load())
    if setup is not None:
        return setup, False
    made = generate()
    setup = result_now(store.create(made))
    return setup, setup.dumps() == made.dumps()


def _shared_setup(store, say):
    """The setup of ``store`` (an IServerSetupStore that answers at once),
    made and stored there first if it has none; ValueError in one line
    for a store that cannot be used."""
    from twisted_keyx.core.interfaces import StoreUnavailable

    try:
        setup, created = load_or_create(store, ServerSetup.generate)
    except StoreUnavailable as e:
        raise ValueError(str(e)) from None
    if created:
        say(f"made the OPAQUE server setup in {store.where}")
    return setup


def new_user(name, password, setup):
    """Run registration locally (RFC 9807 section 5): the record for
    ``name``; the password is used here and dropped."""
    record, _export_key = register(password, setup, name.encode("utf-8"))
    return OpaqueUser(name, record, server_key_fingerprint(setup.server_public_key))


def other_key_files(users, mine):
    """The server key fingerprints of the OPAQUE users in ``users`` (a dict
    of records) that were registered against another key file than the one
    whose fingerprint is ``mine``: {fingerprint: [names]}."""
    others = {}
    for name, user in sorted(users.items()):
        key = getattr(user, "server_key", None)
        if getattr(user, "scheme", None) == "opaque" and key is not None and key != mine:
            others.setdefault(key, []).append(name)
    return others


class KeyFileError(Exception):
    """The key file is missing, too open, or not a server setup."""


def load_key_file(path):
    """The :class:`ServerSetup` in ``path``; :class:`KeyFileError` if it does
    not exist, is readable by group or others, or is not one."""
    try:
        fd = open_regular(path)  # a named pipe is refused, not waited on
    except FileNotFoundError:
        raise KeyFileError(f"no OPAQUE key file {path}") from None
    except OSError as e:
        raise KeyFileError(f"cannot read {path}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(
                f"{path} is readable by group or others (mode {mode:04o}): it holds "
                f"the server's OPRF seed and private key; chmod 600 {path}")
        data = f.read(MAX_KEY_FILE_SIZE + 1)
    if len(data) > MAX_KEY_FILE_SIZE:
        raise KeyFileError(f"{path}: larger than {MAX_KEY_FILE_SIZE} bytes")
    try:
        return ServerSetup.loads(data)
    except OpaqueError as e:
        raise KeyFileError(f"{path}: {e}") from None


class KeyFileExists(KeyFileError):
    """:func:`create_key_file` found the file made by someone else first."""


def create_key_file(path, default_ksf=None, profile=None):
    """Write a fresh :class:`ServerSetup` to ``path`` (mode 0600) and return
    it.  Never replaces a file: the setup is written to a temporary file
    and hard-linked to ``path``, which fails if ``path`` exists
    (:class:`KeyFileExists`), as the host key is made; replacing it would
    lock out every user registered against the other setup."""
    options = {} if profile is None else {"profile": profile}
    if default_ksf is not None:
        options["default_ksf"] = default_ksf
    return write_new_key_file(path, ServerSetup.generate(**options))


def write_new_key_file(path, setup):
    """Write ``setup`` to ``path`` (mode 0600), which must not exist
    (:class:`KeyFileExists`); return it."""
    try:
        create_file_exclusively(path, setup.dumps())
    except FileExistsError:
        raise KeyFileExists(f"{path} exists already; it was not replaced") from None
    except OSError as e:
        raise KeyFileError(f"cannot write {path}: {e.strerror}") from None
    return setup


def load_or_create_key_file(path):
    """(setup, created): the setup in ``path``, made first if it does not
    exist; if another process makes it in between, that one."""
    if not os.path.exists(path):
        try:
            return create_key_file(path), True
        except KeyFileExists:
            pass
    return load_key_file(path), False


__all__ = ["OpaqueUser", "SCHEME", "new_user", "KeyFileError", "load_key_file",
           "create_key_file", "write_new_key_file", "KeyFileExists", "load_or_create_key_file", "DEFAULT_KEY_FILE",
           "load_or_create"]
