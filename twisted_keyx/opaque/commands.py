"""``keyx-client opaque register`` and ``keyx-client opaque passwd``: the
commands OPAQUE adds to its ``keyx-client`` command
(:attr:`twisted_keyx.core.handshakes.Handshake.client_commands`), run with
what ``keyx-client`` lends them (``kit``: its errors and exit statuses, its
password prompts, its connection, its login; the
:class:`twisted_keyx.cli.client.ClientKit` of the entry), so that this
package does not import the command line and the command line names no
handshake."""

import functools
import shlex
import sys

from twisted.internet import defer

from twisted_keyx.chat.machine import ChatFailed
from twisted_keyx.core.machine import ServerHungUp
from twisted_keyx.core.peers import host_port
from twisted_keyx.core.refusals import ServerUnavailable, TooManyAttempts


def add_commands(command, kit):
    """``keyx-client opaque register``: registration with an invitation code
    (``keyx-admin invite``; docs/opaque.rst, Registration), and ``passwd``."""
    command.add_argument("action", nargs="?", choices=("register", "passwd"),
                         metavar="register|passwd",
                         help="register: register USER with an invitation code instead of "
                              "logging in (the code, then the new password twice, are asked "
                              "on the terminal). passwd: log in, then change USER's password "
                              "inside the session (the password is asked, then, once logged "
                              "in, the new one twice); the old password works until the "
                              "server confirms")
    command.add_argument("--code-file", metavar="F",
                         help="register: read the invitation code from the first line of F")
    command.add_argument("--new-password-file", metavar="F",
                         help="passwd: read the new password from the first line of F")
    command.set_defaults(run=functools.partial(run_opaque, kit))


async def run_opaque(kit, reactor, args, out):
    if args.new_password_file and args.action != "passwd":
        raise kit.ClientError("--new-password-file is for passwd", kit.EXIT_USAGE)
    if args.code_file and args.action != "register":
        raise kit.ClientError("--code-file is for register", kit.EXIT_USAGE)
    if args.action == "register":
        return await run_register(kit, reactor, args, out)
    if args.action == "passwd":
        return await run_passwd(kit, reactor, args, out)
    return await kit.run_password(reactor, args, out)


def _read_new_password(kit, args):
    """passwd: the new password, from --new-password-file or asked twice;
    checked as OPAQUE takes it (docs/opaque.rst, Passwords) before anything
    is sent."""
    from twisted_keyx.opaque._password import password_bytes
    from twisted_keyx.opaque.errors import OpaqueError

    try:
        if args.new_password_file:
            password = kit.read_password_file(args.new_password_file)
            warning = kit.password_file_warning(args.new_password_file)
            if warning:
                kit.err(args).write(f"keyx-client: warning: {warning}\n")
        else:
            try:
                password = kit.ask_password(f"New password for {args.user}: ", confirm=True)
            except kit.PasswordError as e:
                if "--password-file" in str(e):
                    raise kit.PasswordError(str(e).replace("--password-file",
                                                           "--new-password-file")) from None
                raise
        password_bytes(password)
    except (kit.PasswordError, OpaqueError) as e:
        raise kit.ClientError(f"new password: {e}", kit.EXIT_USAGE)
    except KeyboardInterrupt:
        raise kit.ClientError("interrupted", kit.EXIT_INTERRUPTED)
    return password


async def run_passwd(kit, reactor, args, out):
    """``keyx-client opaque passwd``: log in, then change the password inside
    the session (docs/opaque.rst, Changing the password), then quit."""
    from twisted_keyx.opaque.passwd import PasswordNotChanged

    password = kit.read_password(args)
    # From a file: read (and checked) before anything is sent; on the
    # terminal: asked once the login has shown the password right.
    new_password = _read_new_password(kit, args) if args.new_password_file else None
    where = host_port(args.host, args.port)

    async def ask(protocol):
        try:
            with kit.ctrl_c_interrupts():
                return _read_new_password(kit, args)
        except kit.ClientError:
            protocol.finished.addErrback(lambda reason: None)  # the session is over
            protocol.abort()
            await kit.aborted(reactor)
            raise

    async def change(protocol):
        new = new_password if new_password is not None else await ask(protocol)
        try:
            await protocol.passwd(new).addTimeout(args.timeout, reactor)
        except BaseException:
            protocol.finished.addErrback(lambda reason: None)  # the session is over
            raise
        out.write(f"Password of {args.user} changed on {where}\n")
        out.flush()
        protocol.quit()
        return await protocol.finished.addTimeout(args.timeout, reactor)

    async def changed(protocol):
        try:
            await change(protocol)
        except defer.TimeoutError:
            await kit.aborted(reactor)
            raise kit.ClientError(f"the server did not answer within {args.timeout:g} seconds "
                                  "(the new password may or may not be stored: try it)",
                                  kit.EXIT_NETWORK)
        except ServerHungUp as e:
            raise kit.ClientError(e.reason, kit.EXIT_NETWORK)
        except TooManyAttempts as e:
            raise kit.ClientError(e.reason, kit.EXIT_TOO_MANY_ATTEMPTS)
        except ServerUnavailable as e:
            raise kit.ClientError(f"password not changed: {e.reason}",
                                  kit.EXIT_SERVER_UNAVAILABLE)
        except PasswordNotChanged as e:
            raise kit.ClientError(f"password not changed: {e.reason}", kit.EXIT_HANDSHAKE_FAILED)
        except ChatFailed as e:
            raise kit.ClientError(f"the chat broke: {e.reason}", kit.EXIT_HANDSHAKE_FAILED)
        return kit.EXIT_OK

    return await kit.run_password(reactor, args, out, password=password, then=changed)


def _read_registration(kit, args):
    """The invitation code and the new password (asked twice)."""
    from twisted_keyx.opaque import invitation
    from twisted_keyx.opaque.errors import OpaqueError

    try:
        if args.code_file:
            code = kit.read_password_file(args.code_file)
        else:
            code = kit.ask_password(f"Invitation code for {args.user}: ")
        invitation.code_bytes(code)
        if args.password_file:
            password = kit.read_password_file(args.password_file)
            warning = kit.password_file_warning(args.password_file)
            if warning:
                sys.stderr.write(f"keyx-client: warning: {warning}\n")
        else:
            password = kit.ask_password(f"New password for {args.user}: ", confirm=True)
    except (kit.PasswordError, OpaqueError) as e:
        raise kit.ClientError(str(e), kit.EXIT_USAGE)
    except KeyboardInterrupt:
        raise kit.ClientError("interrupted", kit.EXIT_INTERRUPTED)
    return code, password


async def run_register(kit, reactor, args, out):
    """``keyx-client opaque register``: OPAQUE registration with an
    invitation code; the server never sees the password."""
    from twisted_keyx.opaque.handshake import RegistrationFailed
    from twisted_keyx.opaque.protocol import OPAQUERegistrationFactory

    code, password = _read_registration(kit, args)
    options = {} if args.profile is None else {"profile": args.profile}
    factory, file_tracer = kit.with_tracing(args, OPAQUERegistrationFactory(
        args.user, password, code, **options))
    try:
        protocol = await kit.connect(reactor, args, factory)
        await kit.await_handshake(reactor, args.timeout, protocol.authenticated,
                                  {RegistrationFailed: "registration refused: {}"})
        await protocol.disconnected
    finally:
        if file_tracer is not None:
            file_tracer.close()
    out.write(f"Registered {args.user} on {host_port(args.host, args.port)}; log in with: "
              f"{login_command(args)}\n")
    return kit.EXIT_OK


def login_command(args):
    """The ``keyx-client opaque`` command line that logs in where ``args``
    registered: the host, port and profile given (a login without the
    profile of an rfc9807 server fails as a profile mismatch), quoted for
    a shell."""
    from twisted_keyx.opaque.entry import HANDSHAKE

    words = ["keyx-client", "opaque"]
    if args.host != "localhost":
        words += ["--host", args.host]
    if args.port != HANDSHAKE.client_port:
        words += ["--port", str(args.port)]
    if args.profile is not None:
        words += ["--profile", args.profile.text()]
    words += ["--user", args.user]
    return " ".join(shlex.quote(word) for word in words)


def add_admin_commands(commands, kit):
    """``keyx-admin opaque-profile``: ``commands`` is keyx-admin's argparse
    subparsers; ``kit`` is what keyx-admin lends its commands
    (:class:`twisted_keyx.cli.admin.AdminKit`)."""
    from twisted_keyx.opaque.entry import DEFAULT_OPAQUE_KEY, profile_argument

    profile = commands.add_parser(
        "opaque-profile", help="print (or choose) the OPAQUE key file's profile",
        description=(
            "Print the OPAQUE profile of the key file, the text a client gives as "
            "'keyx-client opaque --profile' (docs/opaque.rst, Profiles). With --create "
            "PROFILE, first create the key file (it must not exist) with that profile: "
            "twisted-keyx-v1 (per-record Argon2id costs, the default) or "
            "rfc9807,m=KiB,t=PASSES,p=LANES,context=BASE64 (plain RFC 9807 with one "
            "cost and the given context, empty if omitted: what opaque-ke's packagings "
            "such as @serenity-kit/opaque speak; its default cost is m=65536,t=3,p=4)."
        ),
    )
    profile.add_argument("--opaque-key", metavar="FILE", default=DEFAULT_OPAQUE_KEY,
                         help=f"the OPAQUE server key file [default: {DEFAULT_OPAQUE_KEY}]")
    profile.add_argument("--create", metavar="PROFILE", type=profile_argument, default=None,
                         help="create the key file with this profile")
    profile.set_defaults(run=functools.partial(run_opaque_profile, kit))


def run_opaque_profile(kit, args, out, err):
    """``keyx-admin opaque-profile``: print the key file's profile (what a
    client gives as --profile); with --create, make the key file with that
    profile first."""
    from twisted_keyx.opaque import scheme as opaque_scheme

    try:
        if args.create is not None:
            setup = opaque_scheme.create_key_file(args.opaque_key, profile=args.create)
            err.write(f"keyx-admin: created the OPAQUE key file {args.opaque_key} "
                      f"(mode 0600), profile {setup.profile}\n")
        else:
            setup = opaque_scheme.load_key_file(args.opaque_key)
    except opaque_scheme.KeyFileError as e:
        raise kit.AdminError(str(e)) from None
    out.write(setup.profile.text() + "\n")
