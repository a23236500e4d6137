"""``keyx-admin``: make the files the daemon reads (DH parameters, host keys,
EKE users), and print the state diagrams of the handshakes (docs/protocols.rst).

Exit status: 0 success, 1 failure (message on stderr), 2 usage error,
130 interrupted (Ctrl-C; 128 + SIGINT, as for keyx-client).
"""

import argparse
import contextlib
import os
import sys
import threading
import time

from twisted_keyx import __version__
from twisted_keyx.groups import ffdh
from twisted_keyx.trust import hostkey
from twisted_keyx.core import handshakes, schemes
from twisted_keyx.service import userfile as userstore
from twisted_keyx.login.prompts import (
    PasswordError,
    ask_password,
    password_file_warning,
    read_password_file,
    shown_name,
    user_name_argument,
)
from twisted_keyx.core.fileutil import write_file_atomically


EXIT_INTERRUPTED = 130
#: The longest an invitation may last, in days.
MAX_INVITATION_DAYS = 365
#: The clock of invitations (POSIX seconds); tests replace it.
clock = time.time


class AdminError(Exception):
    """A failure to report in one line on stderr."""


class AdminKit:
    """What ``keyx-admin`` lends the commands a handshake adds
    (:attr:`twisted_keyx.core.handshakes.Handshake.admin_commands`), which
    live in the handshake's package and so cannot import this module."""

    #: Raised by a command: its text is printed as one line, exit status 1.
    AdminError = AdminError


def _warn(err, warning):
    if warning:
        err.write(f"keyx-admin: warning: {warning}\n")


def _with_progress(work, label, err, interval=0.5):
    """Run ``work()`` in a thread while showing elapsed time on ``err``."""
    outcome = {}

    def target():
        try:
            outcome["value"] = work()
        except BaseException as e:  # handed to the caller below
            outcome["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    started = time.monotonic()
    thread.start()
    interactive = getattr(err, "isatty", lambda: False)()
    ticks = 0
    try:
        while thread.is_alive():
            thread.join(interval)
            ticks += 1
            elapsed = time.monotonic() - started
            if interactive:
                err.write(f"\r{label}... {elapsed:4.0f} s")
            elif ticks % 10 == 0:
                err.write(f"{label}... {elapsed:.0f} s\n")
            err.flush()
    except KeyboardInterrupt:
        # Ctrl-C: end the progress line, so that the message starts a line.
        if interactive and ticks:
            err.write("\n")
        raise
    elapsed = time.monotonic() - started
    prefix = "\r" if interactive else ""
    if "error" in outcome:
        err.write(f"{prefix}{label}: failed after {elapsed:.1f} s\n")
        raise outcome["error"]
    err.write(f"{prefix}{label}: done in {elapsed:.1f} s\n")
    return outcome["value"]


def _check_output(path, force, companions=()):
    """Refuse, before any work, an output file ``path`` that cannot or may
    not be written; ``companions`` are files written beside it."""
    for target in (path,) + tuple(companions):
        if os.path.isdir(target):
            raise AdminError(f"cannot write {target}: it is a directory")
    for target in (path,) + tuple(companions):
        if os.path.exists(target) and not force:
            raise AdminError(f"{target} exists; use --force to replace it")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise AdminError(f"cannot write {path}: no directory {directory}")
    # The file is written as a temporary in the same directory, then renamed.
    if not os.access(directory, os.W_OK | os.X_OK):
        raise AdminError(f"cannot write {path}: directory {directory} is not writable")


def cmd_genparams(args, out, err):
    # Everything that can be checked is checked before the slow part.
    _check_output(args.output, args.force)
    label = f"generating a {args.bits}-bit safe prime (this takes a while)"
    try:
        pem = _with_progress(lambda: ffdh.generate_parameters_pem(args.bits), label, err)
        write_file_atomically(args.output, pem)
    except ffdh.ParameterError as e:
        raise AdminError(str(e)) from None
    except OSError as e:
        raise AdminError(f"cannot write {args.output}: {e.strerror}") from None
    out.write(f"wrote {args.output}; use it with: twistd -n keyx --params {args.output}\n")


def cmd_hostkey(args, out, err):
    public_path = args.output + ".pub"
    _check_output(args.output, args.force, companions=(public_path,))
    try:
        written = hostkey.write_host_key(args.output, hostkey.generate_private_key())
    except hostkey.HostKeyError as e:
        raise AdminError(str(e)) from None
    out.write(f"wrote {args.output} (mode 0600) and {public_path}; "
              f"use it with: twistd -n keyx --host-key {args.output}\n")
    out.write(f"{hostkey.KEY_TYPE_DISPLAY} key fingerprint is {written.fingerprint}\n")


def _read_users(path, missing_ok=False):
    try:
        return userstore.read_users(path, missing_ok=missing_ok)
    except userstore.UserFileError as e:
        raise AdminError(str(e)) from None


@contextlib.contextmanager
def _editing_users(path, missing_ok=False):
    """The users of ``path`` to change, locked from read to write."""
    try:
        with userstore.editing_users(path, missing_ok=missing_ok) as users:
            yield users
    except userstore.UserFileError as e:
        raise AdminError(str(e)) from None


def _refuse_existing(users, args):
    if args.name in users:
        raise AdminError(
            f"user {args.name!r} already exists in {args.users}; "
            "remove it first with keyx-admin deluser"
        )


@contextlib.contextmanager
def _store(url, checked=True):
    """A psycopg connection to the store ``url``, its schema checked."""
    from twisted_keyx.service import pgstore

    if not pgstore.is_url(url):
        raise AdminError(f"--store {url!r}: not a postgresql://... URL")
    try:
        connection = pgstore.connect(url)
    except pgstore.StoreError as e:
        raise AdminError(str(e)) from None
    try:
        if checked:
            pgstore.check_schema(connection, url)
        yield connection
    except pgstore.StoreError as e:
        raise AdminError(str(e)) from None
    except _psycopg_errors() as e:
        raise AdminError(f"the store {pgstore.shown(url)}: {str(e).strip().splitlines()[0]}") \
            from None
    finally:
        connection.close()


def _psycopg_errors():
    import psycopg

    return psycopg.Error


def _where(args):
    from twisted_keyx.service import pgstore

    return pgstore.shown(args.store) if args.store else args.users


def cmd_adduser(args, out, err):
    if args.store:
        return _adduser_store(args, out, err)
    # Checked before asking for the password, and again under the lock.
    _refuse_existing(_read_users(args.users, missing_ok=True), args)
    password = _ask(args)
    if args.password_file:
        _warn(err, password_file_warning(args.password_file))
    # The KSF before taking the lock, so that the lock is held briefly.
    scheme = schemes.named(args.scheme)
    # A scheme may refuse a new user given the others (OPAQUE: another key file).
    check = getattr(scheme, "check_new_user", None)
    try:
        if check is not None:
            check(_read_users(args.users, missing_ok=True), vars(args))
    except ValueError as e:
        raise AdminError(str(e)) from None
    record, detail = _new_record(args, password, err, _no_stores)
    with _editing_users(args.users, missing_ok=True) as users:
        _refuse_existing(users, args)
        if check is not None:
            try:
                check(users, vars(args), record)
            except ValueError as e:
                raise AdminError(str(e)) from None
        users[args.name] = record
    out.write(f"added user {args.name} to {args.users} ({detail})\n")


def _ask(args):
    """The new user's password: the first line of --password-file, or asked
    twice on the terminal; a mistake is one line."""
    try:
        if args.password_file:
            return read_password_file(args.password_file)
        return ask_password(f"Password for {args.name}: ", confirm=True)
    except PasswordError as e:
        raise AdminError(str(e)) from None


def _new_record(args, password, err, store):
    """(record, description) of the new user, made by its scheme
    (:mod:`twisted_keyx.core.schemes`: ``add_user``), which finds the state
    it shares with the daemon through ``store(interface)``."""
    try:
        return schemes.named(args.scheme).add_user(
            args.name, password, vars(args), lambda text: err.write(f"keyx-admin: {text}\n"),
            store)
    except ValueError as e:
        raise AdminError(str(e)) from None


def _store_providers(url):
    """``store(interface)`` for a scheme's ``add_user`` with ``--store``:
    the database's providers of the store interfaces, as the daemon's
    (:meth:`twisted_keyx.service.tap.Shared.store`), answering at once."""
    from twisted_keyx.core.interfaces import IServerSetupStore
    from twisted_keyx.service import pgstore

    return {IServerSetupStore: pgstore.ConnectionSetupStore(url)}.get


def _adduser_store(args, out, err):
    from twisted_keyx.core.interfaces import StoreConflict
    from twisted_keyx.service import pgstore

    where = _where(args)
    with _store(args.store) as connection:
        if pgstore.has_user(connection, args.name):
            raise AdminError(f"user {args.name!r} already exists in {where}; "
                             "remove it first with keyx-admin deluser")
        if args.password_file:
            _warn(err, password_file_warning(args.password_file))
        password = _ask(args)
        record, detail = _new_record(args, password, err, _store_providers(args.store))
        try:
            pgstore.add_users(connection, {args.name: record})
        except StoreConflict:
            raise AdminError(f"user {args.name!r} already exists in {where}") from None
    out.write(f"added user {args.name} to {where} ({detail})\n")


def cmd_deluser(args, out, err):
    if args.store:
        from twisted_keyx.service import pgstore

        with _store(args.store) as connection:
            if not pgstore.remove_user(connection, args.name):
                raise AdminError(f"no user {shown_name(args.name)} in {_where(args)}")
        out.write(f"removed user {args.name} from {_where(args)}\n")
    else:
        with _editing_users(args.users) as users:
            if args.name not in users:
                raise AdminError(f"no user {shown_name(args.name)} in {args.users}")
            del users[args.name]
        out.write(f"removed user {args.name} from {args.users}\n")
    # A registration whose invitation file could not be marked afterwards
    # leaves the user beside a pending invitation (docs/opaque.rst,
    # Registration): harmless while the user exists, a working code once
    # the user is gone.  So the user's pending invitation goes too.
    with _invitations(args) as (store, _):
        invitation = _fired(store.lookup(args.name))
        if invitation is not None and invitation.state == "pending" \
                and _fired(store.revoke(args.name)):
            out.write(f"revoked the pending invitation of {args.name} in {store.path}\n")


def cmd_listusers(args, out, err):
    with _invitations(args) as (store, connection):
        if connection is not None:
            from twisted_keyx.service import pgstore

            users = pgstore.read_users(connection)
        else:
            users = _read_users(args.users, missing_ok=True)
            _warn(err, userstore.user_file_warning(args.users))
        invited = _fired(store.invitations())
    if not users:
        err.write(f"keyx-admin: no users in {_where(args)}\n")
    for name, record in sorted(users.items()):
        out.write(f"{name}  {schemes.named(record.scheme).describe(record)}\n")
    now = clock()
    for name, invitation in sorted(invited.items()):
        if name in users and invitation.state == "used":
            continue  # registered: the line above says it
        out.write(f"{name}  {_describe_invitation(invitation, now)}\n")


@contextlib.contextmanager
def _invitations(args):
    """(the invitation store, the store's connection or None): with
    --store, the store's invitations (its table keyx_invitations); else
    --invitations, or the file of that name beside the users file (where
    the daemon looks for it)."""
    from twisted_keyx.service import invitations

    if getattr(args, "store", None):
        from twisted_keyx.service import pgstore

        if args.invitations is not None:
            raise AdminError("give --store or --invitations, not both (a store keeps "
                             "its invitations)")
        with _store(args.store) as connection:
            yield (pgstore.PostgreSQLInvitationStore(pgstore.ConnectionStore(connection),
                                                     pgstore.shown(args.store)), connection)
        return
    path = args.invitations
    if path is None:
        path = os.path.join(os.path.dirname(args.users), invitations.DEFAULT_INVITATION_FILE)
    yield invitations.InvitationFile(path), None


def _fired(deferred):
    """The result of a store call (the file store's Deferreds have fired);
    a store failure is one line."""
    from twisted_keyx.core.interfaces import StoreConflict, StoreUnavailable

    outcome = []
    deferred.addBoth(outcome.append)
    if not outcome:
        raise AdminError("the invitation store did not answer")
    result = outcome[0]
    if hasattr(result, "trap"):  # a Failure
        if result.check(StoreUnavailable, StoreConflict):
            raise AdminError(str(result.value))
        result.raiseException()
    return result


def _utc(seconds):
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seconds))


def _expiry_days(text):
    try:
        days = float(text)
    except ValueError:
        days = -1.0
    if not 0 < days <= MAX_INVITATION_DAYS:
        raise argparse.ArgumentTypeError(
            f"expected a number of days above 0, at most {MAX_INVITATION_DAYS}")
    return days


def cmd_invite(args, out, err):
    from twisted_keyx.core.interfaces import Invitation
    from twisted_keyx.opaque import invitation as protocol

    with _invitations(args) as (store, connection):
        if connection is not None:
            from twisted_keyx.service import pgstore

            if pgstore.has_user(connection, args.name):
                raise AdminError(f"user {args.name!r} already exists in {_where(args)}; "
                                 "remove it first with keyx-admin deluser")
        else:
            _refuse_existing(_read_users(args.users, missing_ok=True), args)
        previous = _fired(store.lookup(args.name))
        now = clock()
        code = protocol.new_code()
        expires = now + args.expires * 24 * 3600
        _fired(store.invite(Invitation(args.name, protocol.code_hash(code), now, expires)))
    if previous is not None and previous.usable(now):
        err.write(f"keyx-admin: the pending invitation of {shown_name(args.name)} is "
                  "replaced; its code no longer works\n")
    err.write(f"keyx-admin: invited {shown_name(args.name)} in {store.path} until "
              f"{_utc(expires)}; the code is shown once, for: "
              f"keyx-client opaque register --user {args.name}\n")
    out.write(code + "\n")


def cmd_revoke(args, out, err):
    with _invitations(args) as (store, _):
        revoked = _fired(store.revoke(args.name))
    if not revoked:
        raise AdminError(f"no pending invitation for {shown_name(args.name)} in {store.path}")
    out.write(f"revoked the invitation of {args.name} in {store.path}\n")


def _describe_invitation(invitation, now):
    if invitation.state == "pending":
        if invitation.usable(now):
            return f"invited, code unused, expires {_utc(invitation.expires)}"
        return f"invited, code expired {_utc(invitation.expires)}"
    return f"invitation {invitation.state}"


def cmd_store_upgrade(args, out, err):
    from twisted_keyx.service import pgstore

    with _store(args.store, checked=False) as connection:
        before, after = pgstore.upgrade(connection)
    where = pgstore.shown(args.store)
    if before == after:
        out.write(f"the store {where} has schema version {after}: nothing to do\n")
    else:
        out.write(f"the store {where}: schema upgraded from version {before} to {after}\n")


def _no_stores(interface):
    """``store(interface)`` of the user file: it keeps no store of a
    scheme's (each keeps its own: OPAQUE's key file)."""
    return None


def _read_side(where, args):
    """(users, deliveries) of a file or a store: its users, and what
    carries to the destination what the schemes of those users keep
    besides their records (``deliver(store, where)``; OPAQUE: its server
    setup), read now (:func:`_carried`)."""
    from twisted_keyx.service import pgstore

    if pgstore.is_url(where):
        with _store(where) as connection:
            users = pgstore.read_users(connection)
            return users, _carried(users, args, _store_providers(where), pgstore.shown(where))
    users = _read_users(where)
    return users, _carried(users, args, _no_stores, where)


def _carried(users, args, store, where):
    """For each scheme of ``users`` that keeps more than its records (its
    ``copy_users``: :mod:`twisted_keyx.core.schemes`), what it delivers to
    the destination, read from the source's ``store`` now."""
    deliveries = []
    for name in sorted({record.scheme for record in users.values()}):
        copy = getattr(schemes.named(name), "copy_users", None)
        if copy is None:
            continue
        names = sorted(n for n, record in users.items() if record.scheme == name)
        try:
            deliveries.append(copy(names, vars(args), store, where))
        except ValueError as e:
            raise AdminError(str(e)) from None
    return deliveries


def _deliver(deliveries, store, where):
    try:
        for deliver in deliveries:
            deliver(store, where)
    except ValueError as e:
        raise AdminError(str(e)) from None


def cmd_copy_users(args, out, err):
    from twisted_keyx.core.interfaces import StoreConflict
    from twisted_keyx.service import pgstore

    users, deliveries = _read_side(args.source, args)
    if not users:
        raise AdminError(f"no users in {pgstore.shown(args.source)}")
    if pgstore.is_url(args.destination):
        with _store(args.destination) as connection:
            _deliver(deliveries, _store_providers(args.destination),
                     pgstore.shown(args.destination))
            try:
                pgstore.add_users(connection, users, replace=args.replace)
            except StoreConflict as e:
                raise AdminError(f"{e} in {pgstore.shown(args.destination)} "
                                 "(nothing copied; --replace to overwrite)") from None
    else:
        _deliver(deliveries, _no_stores, args.destination)
        with _editing_users(args.destination, missing_ok=True) as existing:
            clash = sorted(set(existing) & set(users))
            if clash and not args.replace:
                raise AdminError(f"user {clash[0]!r} already exists in {args.destination} "
                                 "(nothing copied; --replace to overwrite)")
            existing.update(users)
    out.write(f"copied {len(users)} user(s) from {pgstore.shown(args.source)} "
              f"to {pgstore.shown(args.destination)}\n")


def cmd_diagram(args, out, err):
    # Imported here: the other commands do not need the machine modules.
    from twisted_keyx.observe import diagram

    if args.list:
        for name in diagram.names():
            out.write(f"{name}  {diagram.entry(name).title}\n")
        return
    out.write(diagram.machine_dot(args.name))


def _machine_name(text):
    """An argparse ``type``: an unknown machine is a usage error (exit 2)
    that lists the known ones."""
    from twisted_keyx.observe import diagram

    try:
        diagram.entry(text)
    except diagram.UnknownMachine as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _add_users_option(parser):
    parser.add_argument(
        "--users", metavar="FILE", default=userstore.DEFAULT_USER_FILE,
        help="the user file, which holds the EKE and the OPAQUE users "
             f"[default: {userstore.DEFAULT_USER_FILE}]",
    )
    parser.add_argument(
        "--store", metavar="URL",
        help="postgresql://... : the users and invitations in this PostgreSQL store "
             "(as twistd keyx --store) instead of --users",
    )


def _add_invitations_option(parser):
    parser.add_argument(
        "--invitations", metavar="FILE", default=None,
        help="the invitation file [default: keyx-invitations.json beside the users file]",
    )


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keyx-admin",
        description="Make the files the twisted-keyx daemon reads; print the state "
                    "diagrams of its handshakes.",
        epilog="Exit status: 0 done; 1 the command failed; 2 usage error; "
               "130 interrupted (Ctrl-C).",
    )
    parser.add_argument("--version", action="version", version=f"twisted-keyx {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    genparams = commands.add_parser(
        "genparams",
        help="generate a DH parameter file for twistd keyx --params",
        description=(
            "Generate fresh Diffie-Hellman parameters (a safe prime, generator 2) "
            "and write them as PEM 'DH PARAMETERS', the format of openssl dhparam. "
            "This takes tens of seconds at 2048 bits and minutes above. The "
            "built-in RFC 7919 groups are faster to use and as safe; a custom "
            "group is for study."
        ),
    )
    genparams.add_argument("--bits", type=ffdh.bits_argument, default=2048,
                           help=f"size of the prime, {ffdh.MIN_BITS} to {ffdh.MAX_BITS} "
                                "[default: 2048]")
    genparams.add_argument("-o", "--output", required=True, metavar="FILE",
                           help="where to write the parameters")
    genparams.add_argument("--force", action="store_true", help="replace FILE if it exists")
    genparams.set_defaults(run=cmd_genparams)

    hostkey_command = commands.add_parser(
        "hostkey",
        help="generate an Ed25519 host key for twistd keyx --host-key",
        description=(
            "Generate a fresh Ed25519 host key and write it to FILE in OpenSSH's "
            "private key format, unencrypted, mode 0600 (a daemon cannot ask for a "
            "passphrase), and its public key to FILE.pub in OpenSSH's public key "
            "format. Both are replaced atomically. Prints the key's fingerprint, "
            "as ssh-keygen -lf prints it, for clients to compare on first contact. "
            "A key from ssh-keygen -t ed25519 -N '' works as well."
        ),
    )
    hostkey_command.add_argument("-o", "--output", required=True, metavar="FILE",
                                 help="where to write the private key (FILE.pub: the public key)")
    hostkey_command.add_argument("--force", action="store_true",
                                 help="replace FILE and FILE.pub if they exist")
    hostkey_command.set_defaults(run=cmd_hostkey)

    adduser = commands.add_parser(
        "adduser",
        help="add a user (EKE or OPAQUE)",
        description=(
            "Add a user to the user file (created if missing, mode 0600, "
            "replaced atomically) or to --store's database. It never keeps the password: for an OPAQUE "
            "user (the default) the OPAQUE registration record (RFC 9807: the "
            "client's public key and its envelope, made with the key file "
            "--opaque-key and an Argon2id stretch of the password); "
            "for an EKE user a random salt, the scrypt parameters and "
            "scrypt(password, salt). The daemon picks the change up without a "
            "restart. Without --password-file the password is asked twice on "
            "the terminal."
        ),
    )
    adduser.add_argument("name", metavar="NAME", type=user_name_argument,
                         help="1 to 64 bytes of UTF-8, printable, no whitespace")
    _add_users_option(adduser)
    adduser.add_argument("--password-file", metavar="F",
                         help="read the password from the first line of F")
    adduser.add_argument("--scheme", choices=schemes.names(), default=schemes.DEFAULT_SCHEME,
                         help="the password handshake the user logs in with: "
                              + _scheme_choices() + f" [default: {schemes.DEFAULT_SCHEME}]")
    for name in schemes.names():
        for flags, keywords in schemes.named(name).add_user_options:
            adduser.add_argument(*flags, **keywords)
    adduser.set_defaults(run=cmd_adduser)

    # The commands a handshake adds (OPAQUE: opaque-profile).
    for entry in handshakes.handshakes():
        add_commands = entry.load("admin_commands")
        if add_commands is not None:
            add_commands(commands, AdminKit)

    deluser = commands.add_parser(
        "deluser", help="remove a user (any scheme)",
        description="Remove a user from the user file (or --store), and the user's "
                    "pending invitation if there is one.",
    )
    deluser.add_argument("name", metavar="NAME")
    _add_users_option(deluser)
    _add_invitations_option(deluser)
    deluser.set_defaults(run=cmd_deluser)

    listusers = commands.add_parser(
        "listusers", help="list the users and their schemes",
        description="Print each user of the user file (or of --store's database), "
                    "its scheme and its KDF cost, then each invitation (keyx-admin "
                    "invite) not used by a user now listed: pending with its expiry, "
                    "expired, revoked or used.",
    )
    _add_users_option(listusers)
    _add_invitations_option(listusers)
    listusers.set_defaults(run=cmd_listusers)

    invite = commands.add_parser(
        "invite", help="invite a new OPAQUE user to register over the network",
        description=(
            "Make a one-time invitation code for NAME (160 random bits) and print it "
            "once on standard output; the invitation file (or the --store database) "
            "keeps only a hash of it. "
            "The user registers with 'keyx-client opaque register --user NAME', which "
            "asks for the code and a password the server never sees (docs/opaque.rst, "
            "Registration). A new invitation replaces NAME's previous one."
        ),
    )
    invite.add_argument("name", metavar="NAME", type=user_name_argument,
                        help="1 to 64 bytes of UTF-8, printable, no whitespace")
    _add_users_option(invite)
    _add_invitations_option(invite)
    invite.add_argument("--expires", metavar="DAYS", type=_expiry_days, default=7.0,
                        help=f"the code works for DAYS days, at most {MAX_INVITATION_DAYS} "
                             "[default: 7]")
    invite.set_defaults(run=cmd_invite)

    revoke = commands.add_parser(
        "revoke", help="revoke a pending invitation",
        description="Revoke NAME's pending invitation: its code no longer works.",
    )
    revoke.add_argument("name", metavar="NAME")
    _add_users_option(revoke)
    _add_invitations_option(revoke)
    revoke.set_defaults(run=cmd_revoke)

    store_upgrade = commands.add_parser(
        "store-upgrade", help="create or upgrade a PostgreSQL store's schema",
        description=(
            "Create the twisted-keyx schema in the PostgreSQL database --store names, "
            "or bring it to this version's, each step one transaction (versioned "
            "migrations). A daemon refuses a store whose schema is missing, older "
            "or newer than its own."),
    )
    store_upgrade.add_argument("--store", metavar="URL", required=True,
                               help="postgresql://user@host/database (or ?host=/socket/dir)")
    store_upgrade.set_defaults(run=cmd_store_upgrade)

    copy_users = commands.add_parser(
        "copy-users", help="copy every user from one store to another",
        description=(
            "Copy every user from SOURCE to DESTINATION, each a user file or a "
            "postgresql://... store, in one transaction (all or none). OPAQUE users "
            "need their server setup: from or to --opaque-key for a file, the "
            "store's own for a store (a store without one gets the source's)."),
    )
    copy_users.add_argument("source", metavar="SOURCE")
    copy_users.add_argument("destination", metavar="DESTINATION")
    for name in schemes.names():
        for flags, keywords in getattr(schemes.named(name), "copy_users_options", ()):
            copy_users.add_argument(*flags, **keywords)
    copy_users.add_argument("--replace", action="store_true",
                            help="overwrite users that exist in DESTINATION")
    copy_users.set_defaults(run=cmd_copy_users)

    diagram = commands.add_parser(
        "diagram", help="print a handshake's state diagram (Graphviz DOT)",
        description=(
            "Print the state diagram of one handshake machine as Graphviz DOT, "
            "drawn from the machine's own transition table; render it with, for "
            "instance, 'keyx-admin diagram dh-server | dot -Tsvg > dh-server.svg'. "
            "--list names the machines."
        ),
    )
    diagram.add_argument("name", metavar="NAME", nargs="?", type=_machine_name,
                         help="the machine: dh-server, dh-client, eke-server, ...")
    diagram.add_argument("--list", action="store_true", help="list the machines")
    diagram.set_defaults(
        run=cmd_diagram, check=lambda args: _check_diagram_arguments(diagram, args))
    return parser


def _scheme_choices():
    """``opaque (keyx-client opaque, port 8089) or eke (...)``: the
    password handshakes of the registry, the default first."""
    entries = sorted(handshakes.password_handshakes(),
                     key=lambda entry: entry.load("scheme").name != schemes.DEFAULT_SCHEME)
    choices = [f"{entry.load('scheme').name} (keyx-client {entry.name}, port "
               f"{entry.client_port})" for entry in entries]
    return ", ".join(choices[:-1]) + " or " + choices[-1] if len(choices) > 1 else choices[0]


def _check_diagram_arguments(parser, args):
    if args.list and args.name is not None:
        parser.error("give NAME or --list, not both")
    if not args.list and args.name is None:
        parser.error("give NAME (see keyx-admin diagram --list)")


def main(argv=None, out=None, err=None):
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    try:
        args = build_parser().parse_args(argv)
        if hasattr(args, "check"):
            args.check(args)
        args.run(args, out, err)
    except AdminError as e:
        err.write(f"keyx-admin: {e}\n")
        return 1
    except KeyboardInterrupt:
        err.write("keyx-admin: interrupted\n")
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
