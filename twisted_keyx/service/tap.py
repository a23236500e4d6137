"""``twistd keyx``: the command-line options, the configuration they make,
and the service built from it.

The dropin ``twisted/plugins/keyx_plugin.py`` points here, so tests can
import :class:`Options` and :func:`makeService` directly.

:class:`Options` reads the command line into one :class:`KeyxConfig`
(``options.config``), typed and frozen, from which :func:`makeService`
builds the service once, whether it serves the endpoints itself or as the
parent of ``--workers``.  The handshakes and their options (``--dh``,
``--eke``, ``--opaque``..., and the daemon-wide options each owns:
``--group``, ``--host-key``, ``--opaque-key``...) come from the handshake
registry (:mod:`twisted_keyx.core.handshakes`): each entry's ``configure``
turns its options into its settings (``config.settings[name]``), and
nothing here names a handshake.  The options here are the daemon's own:
limits, the guess throttle, the users and ``--store``, ``--workers``.

Nothing is written before the daemon knows it can start: a key a handshake
makes on first start (DH's host key, OPAQUE's key file) is made in memory
while the options are read (:class:`~twisted_keyx.core.handshakes.NewFile`),
and written by :meth:`KeyxService.privilegedStartService` once every port
has been found free.
"""

import math
import os
import re
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from twisted.application import internet, service, strports
from twisted.internet import defer, endpoints, error, threads
from twisted.logger import Logger
from twisted.python import usage

from twisted_keyx import __version__
from twisted_keyx.core import handshakes
from twisted_keyx.core.handshakes import NewFile
from twisted_keyx.core.interfaces import IInvitationStore, IServerSetupStore
from twisted_keyx.core.peers import host_port
from twisted_keyx.core.twistedshim import RepeatableOptions
from twisted_keyx.observe import trace
from twisted_keyx.service.invitations import DEFAULT_INVITATION_FILE, InvitationFile
from twisted_keyx.service import endpointspec
from twisted_keyx.service import limits, proxied
from twisted_keyx.service import sqlstore, throttle
from twisted_keyx.service import userfile as userstore
from twisted_keyx.service import workers
from twisted_keyx.service.userfile import DEFAULT_USER_FILE, UserFile, UserFileError


def _check_endpoint(description):
    """Parse an endpoint description now, so a typo is a usage error and not
    a traceback when the service starts."""
    from twisted.internet import reactor

    try:
        endpoints.serverFromString(reactor, description)
    except Exception as e:
        # Each endpoint parser raises what its parsing raises: ValueError,
        # KeyError, OSError for a missing file, OpenSSL.crypto.Error for an
        # ssl: key that is not PEM...  All of them mean a bad description.
        raise usage.UsageError(f"bad endpoint {description!r}: {e}") from None
    if proxied.is_proxied(description) and proxied.is_proxied(proxied.inner(description)):
        # The inner one was Twisted's own wrapper: two headers to send.
        raise usage.UsageError(f"bad endpoint {description!r}: haproxy: given twice")
    # What parses but cannot listen: Twisted takes any integer as a port and
    # any string as a socket path, and bind() refuses them only at start.
    spec = endpointspec.parse(proxied.inner(description))
    address = spec.address()
    if address is None:
        return
    if address[0] == "tcp" and not 0 <= address[1] <= 65535:
        raise usage.UsageError(
            f"bad endpoint {description!r}: port {address[1]} is not between 0 and 65535"
        )
    if address[0] == "unix" and not address[1]:
        raise usage.UsageError(f"bad endpoint {description!r}: no socket path")
    if address[0] == "unix":
        folder = os.path.dirname(os.path.abspath(address[1]))
        if not os.path.isdir(folder):
            raise usage.UsageError(
                f"bad endpoint {description!r}: the folder {folder} does not exist")


def _check_distinct_listeners(listeners, defaulted=()):
    """Refuse two endpoints that would listen on the same port or socket, which
    would otherwise fail with a traceback when the service starts.

    ``listeners`` is a list of ``(option, description)``, defaults first;
    ``defaulted`` names the options whose endpoint is a default the user did
    not give, so that the message says which one to move."""
    seen = []
    for option, description in listeners:
        spec = endpointspec.parse(proxied.inner(description))
        for other_option, other_description, other_spec in seen:
            if not spec.clashes(other_spec):
                continue
            what = "socket" if spec.kind == "unix" else "port"
            message = (f"{other_option} {other_description} and {option} {description} "
                       f"would both listen on the same {what}")
            if other_option in defaulted:
                message += (f"; {other_description} is the default for {other_option}: "
                            f"give {other_option} another endpoint, for example "
                            f"{other_option} tcp:7778")
            raise usage.UsageError(message)
        seen.append((option, description, spec))


class _Number(float):
    """A float default that ``--help`` prints as README writes it (30, not 30.0)."""

    def __str__(self):
        return f"{float(self):g}"

    def __format__(self, spec):
        return format(float(self), spec) if spec else str(self)


@dataclass(frozen=True)
class Listener:
    """One endpoint the daemon serves: the option that asked for it
    (``--dh``) and the endpoint description."""

    option: str
    description: str


@dataclass(frozen=True)
class KeyxConfig:
    """Everything ``twistd keyx`` was told, read and checked once."""

    #: The endpoints served, in the order the registry lists the options.
    listeners: tuple
    #: The user file (every password scheme's) and its user count (None: no file yet).
    users: UserFile
    user_count: Any
    limits: limits.Limits
    guess_limits: throttle.GuessLimits
    #: Processes that serve (``--workers``), and the options they parse.
    workers: int
    worker_argv: tuple
    show_secrets: bool
    trace: bool
    #: Handshake name -> what its registry entry's ``configure`` made of its
    #: daemon-wide options (DH's group and host key, OPAQUE's server
    #: setup...); a handshake without ``configure`` has none.
    settings: Mapping[str, Any] = field(default_factory=dict)
    #: Keys made now, written once the daemon knows it can start.
    new_files: tuple = ()
    #: A worker's: the SQLite file of the guess throttle the workers share
    #: ("": a throttle of this process's own).
    throttle_path: str = ""
    #: --store postgresql://...: the :class:`~twisted_keyx.service.pgstore.Deployment`
    #: (users, OPAQUE setup and throttle state in PostgreSQL), or None.
    deployment: Any = None

    def served(self):
        """option -> [descriptions], for the options that serve something."""
        served = {}
        for listener in self.listeners:
            served.setdefault(listener.option, []).append(listener.description)
        return served


@dataclass(frozen=True)
class ServerContext:
    """What a handshake's server factory and banner are built from
    (:meth:`twisted_keyx.core.handshakes.Endpoint.build`): the
    configuration's fields (``context.users``, ``context.show_secrets``...),
    the handshake's own ``settings`` (``config.settings[name]``), and the
    daemon's shared guess throttle and source rule."""

    config: KeyxConfig
    throttle: Any = None
    source_of: Any = None
    settings: Any = None

    def __getattr__(self, name):
        return getattr(self.config, name)


class Shared:
    """What the daemon's own options made, as each handshake's ``configure``
    (:attr:`twisted_keyx.core.handshakes.Handshake.configure`) sees it:
    ``users`` (the user store every password handshake shares),
    ``user_count``, :meth:`user_count_of`, :meth:`store` (the daemon's
    stores by interface: the invitations beside the user file or in
    ``--store``'s database, and what else ``--store`` keeps),
    :meth:`new_file`, :meth:`settings_of`.  The users are read when first asked
    for (so that the start-up errors come in the order of the options'
    checks), and by the daemon after every ``configure``."""

    def __init__(self, options):
        self._options = options
        self._made = None
        #: The keys made in memory (:class:`NewFile`), written at start.
        self.new_files = []
        #: The settings of the handshakes configured so far, by name.
        self.settings = {}

    def _users(self):
        if self._made is None:
            self._made = _users_and_stores(self._options)
        return self._made

    @property
    def users(self):
        return self._users().users

    @property
    def user_count(self):
        return self._users().user_count

    @property
    def deployment(self):
        return self._users().deployment

    def user_count_of(self, scheme):
        """The users of ``scheme`` read at start-up."""
        return self._users().count_of(scheme)

    def store(self, interface):
        """The daemon's provider of ``interface``
        (:mod:`twisted_keyx.core.interfaces`: ``IInvitationStore``, and
        with ``--store`` ``IServerSetupStore``), or None: the handshake
        keeps that state itself (OPAQUE's key file)."""
        return self._users().stores.get(interface)

    def settings_of(self, name):
        """The settings of handshake ``name``, configured before this one
        (in registry order): how a handshake reads an option another owns
        (DH's group...)."""
        try:
            return self.settings[name]
        except KeyError:
            raise LookupError(f"handshake {name!r} has no settings (yet)") from None

    def new_file(self, path, write):
        """Have ``write()`` make ``path`` once the daemon can start
        (:class:`NewFile`)."""
        self.new_files.append(NewFile(path, write))


@dataclass(frozen=True)
class _UsersAndStores:
    users: Any
    user_count: Any
    count_of: Callable[[str], int]
    deployment: Any = None
    stores: Mapping[Any, Any] = field(default_factory=dict)


class Options(RepeatableOptions):
    synopsis = "[options]"
    longdesc = (
        "Serve the key-exchange handshakes of twisted-keyx.  With no options it "
        "serves the framed Diffie-Hellman handshake on tcp:7777 in the RFC 7919 "
        "group ffdhe2048, and the two password handshakes with their encrypted "
        "chat for the users of keyx-users.json: EKE on tcp:8088 and OPAQUE on "
        "tcp:8089.  ENDPOINT is any Twisted "
        "server endpoint string, for example tcp:7777, tcp:7777:interface=127.0.0.1, "
        "ssl:7443:privateKey=key.pem:certKey=cert.pem or unix:/tmp/keyx.sock."
    )
    optFlags = [
        ["show-secrets", None,
         "Log each shared secret and session key in hex, as the tutorial's "
         "server printed them, and each EKE session key Ks. Without it only a "
         "short fingerprint of the session key is logged."],
        ["trace", None,
         "Log every handshake message as it crosses the wire: a connection "
         "id, its direction, the state before and after, its size and a "
         "summary (docs/protocols.rst, Traces); secrets only with "
         "--show-secrets."],
    ]
    optParameters = [
        ["timeout", None, _Number(limits.Limits.timeout),
         "Seconds a client has to finish its handshake; then it is cut off "
         "(0: no limit).", float],
        ["idle-timeout", None, _Number(limits.Limits.idle_timeout),
         "Seconds a chat (EKE or OPAQUE) may stay silent before it is cut off "
         "(0: no limit). The DH handshake closes as soon as it is done.", float],
        ["max-per-ip", None, limits.Limits.max_per_ip,
         "Open connections allowed from one source (an IPv4 address, an IPv6 "
         "/64: see --ipv4-prefix), and at most a quarter of --max-connections; "
         "more are closed at once (0: no limit).", int],
        ["max-connections", None, limits.Limits.max_connections,
         "Open connections allowed in all; more are closed at once "
         "(0: no limit).", int],
        ["ipv4-prefix", None, limits.Limits.ipv4_prefix,
         "IPv4 addresses that share this many leading bits are one source "
         "for --max-per-ip (0 to 32).", int],
        ["ipv6-prefix", None, limits.Limits.ipv6_prefix,
         "IPv6 addresses that share this many leading bits are one source "
         "for --max-per-ip (0 to 128).", int],
        ["workers", None, "1",
         "Serve every endpoint from this many processes (auto: one per CPU; at most "
         f"{workers.MAX_WORKERS}). The "
         "parent binds the sockets (tcp, tcp6, ssl, unix endpoints only, each "
         "also behind haproxy:), the "
         "workers share them, and each worker's log lines come to the one log "
         "marked [worker N]. Each worker allows --max-connections / N and "
         "--max-per-ip / N (rounded up): the limits are divided, not shared. The "
         "guess throttle is shared: every worker charges each guess in one SQLite "
         "file (or the --store database)."],
        ["max-guesses", None, throttle.GuessLimits.free,
         "Failed password guesses per user (and per source) answered at "
         "once; beyond them the answers are held back, at most one per "
         "--guess-delay seconds, until the failures are forgotten (one a "
         "minute) or the user logs in. No lockout.", int],
        ["guess-delay", None, _Number(throttle.GuessLimits.delay),
         "Seconds between answers to the guesses of a throttled user or "
         "source (0: no throttle).", float],
        ["users", None, DEFAULT_USER_FILE,
         "User file (EKE and OPAQUE users), made with keyx-admin adduser; re-read "
         "when it changes. "
         "A missing file means no users yet."],
        ["store", None, None,
         "postgresql://... : the users (looked up per login), the OPAQUE server "
         "setup, the registration invitations and the guess throttle's state in "
         "PostgreSQL, shared by every daemon and worker that names it (in place "
         "of --users and --opaque-key); its schema made "
         "by keyx-admin store-upgrade --store URL. Needs psycopg "
         "(pip install 'twisted-keyx[postgresql]')."],
    ]

    def __init__(self):
        super().__init__()
        for _, endpoint in handshakes.endpoints():
            self[endpoint.option] = []
        #: The configuration, once the options are parsed (:class:`KeyxConfig`).
        self.config = None

    def repeatableOptions(self):
        """One option per endpoint option of the handshake registry
        (``--dh ENDPOINT``...), repeatable."""
        return [(endpoint.option, endpoint.help) for _, endpoint in handshakes.endpoints()]

    def runtimeFlags(self):
        """The daemon-wide flags the handshakes own (``--no-host-key``...)."""
        return [(option.name, option.help) for _, option in handshakes.daemon_options()
                if isinstance(option, handshakes.Flag)]

    def runtimeParameters(self):
        """The daemon-wide parameters the handshakes own (``--group``...)."""
        return [(option.name, option.default, option.help, option.coerce)
                for _, option in handshakes.daemon_options()
                if isinstance(option, handshakes.Parameter)]

    def opt_version(self):
        """Print the version of twisted-keyx and exit."""
        print(f"twisted-keyx {__version__}")
        raise SystemExit(0)

    def parseOptions(self, options=None):
        # The workers of --workers parse the same options again.
        self["argv"] = list(sys.argv[1:] if options is None else options)
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            hint = _twistd_option_hint(str(e))
            if hint is not None:
                e = usage.UsageError(f"{e}: {hint}")
            if isinstance(self.parent, usage.Options):
                # Under twistd, which would print all of --help before the
                # one line that matters (issue 24): that line, and where
                # the rest is.
                _usage_error_exit(e)
            raise e from None

    def postOptions(self):
        self.config = _configure(self)


def _usage_error_exit(e, err=None):
    """Print a start-up error as one line and a hint, and exit 1 (what
    twistd exits with for a usage error)."""
    err = err if err is not None else sys.stderr
    err.write(f"twistd keyx: {e}\nSee 'twistd keyx --help' for the options.\n")
    err.flush()
    raise SystemExit(1)


def _listeners(options):
    """(listeners, defaulted): every endpoint option given, or its default,
    in registry order; the options whose endpoints are the defaults."""
    listeners, defaulted = [], []
    for _, endpoint in handshakes.endpoints():
        given = options[endpoint.option]
        if not given and endpoint.default is not None:
            given = options[endpoint.option] = [endpoint.default]
            defaulted.append(f"--{endpoint.option}")
        listeners.extend(Listener(endpoint.option, d) for d in given)
    return listeners, defaulted


def _configure(options):
    """The :class:`KeyxConfig` of parsed ``options``; every problem is a
    UsageError, and nothing is written."""
    listeners, defaulted = _listeners(options)
    pairs = [(f"--{l.option}", l.description) for l in listeners]
    for _, description in pairs:
        _check_endpoint(description)
    # The options that have a default first, so that a clash with a default
    # the user did not give names that default.
    has_default = {f"--{e.option}" for _, e in handshakes.endpoints() if e.default}
    _check_distinct_listeners(sorted(pairs, key=lambda pair: pair[0] not in has_default),
                              defaulted)
    options["workers"] = workers.parse_workers(options["workers"])
    if options["workers"] > 1:
        for _, description in pairs:
            workers.check_description(description)
    for name in ("timeout", "idle-timeout", "max-per-ip", "max-connections"):
        # not (x >= 0) also refuses nan, which would break every timer.
        if not (0 <= options[name] < math.inf):
            raise usage.UsageError(f"--{name} must be a number, 0 (no limit) or more")
    if options["max-guesses"] < 0 or not (0 <= options["guess-delay"] <= 60):
        raise usage.UsageError(
            "--max-guesses must be 0 or more, --guess-delay 0 to 60 seconds")
    for name, longest in (("ipv4-prefix", 32), ("ipv6-prefix", 128)):
        if not 0 <= options[name] <= longest:
            raise usage.UsageError(f"--{name} must be 0 to {longest}")
    connection_limits = limits.Limits(
        timeout=options["timeout"], idle_timeout=options["idle-timeout"],
        max_per_ip=options["max-per-ip"], max_connections=options["max-connections"],
        ipv4_prefix=options["ipv4-prefix"], ipv6_prefix=options["ipv6-prefix"],
    )
    shared = Shared(options)
    settings = shared.settings
    for entry in handshakes.handshakes():
        configure = entry.load("configure")
        if configure is not None:
            settings[entry.name] = configure(options, shared)
    return KeyxConfig(
        listeners=tuple(listeners), users=shared.users, user_count=shared.user_count,
        limits=connection_limits,
        guess_limits=throttle.GuessLimits(free=options["max-guesses"],
                                          delay=options["guess-delay"]),
        workers=options["workers"],
        worker_argv=tuple(workers.strip_workers_option(options["argv"])),
        show_secrets=bool(options["show-secrets"]), trace=bool(options["trace"]),
        settings=dict(settings), new_files=tuple(shared.new_files),
        deployment=shared.deployment)


def _users_and_stores(options):
    """The users of ``--users``, or ``--store``'s database and what it
    keeps; a UsageError in one line."""
    if options["store"]:
        deployment = _deployment(options["store"])
        from twisted_keyx.service import pgstore

        # Each login looks its user up in the store (docs/fleet.rst, "Users
        # per login"); a registration redeems the store's invitation and adds its
        # user in one transaction (IInvitationStore.register).
        counts = deployment.user_counts
        return _UsersAndStores(
            users=deployment.users, user_count=deployment.user_count,
            count_of=lambda scheme: counts.get(scheme, 0),
            deployment=deployment,
            stores={IServerSetupStore: pgstore.ConnectionSetupStore(deployment.url),
                    IInvitationStore: deployment.invitations})
    # Absolute, so that a daemon that changes directory still finds it.
    users_path = os.path.abspath(options["users"])
    # A missing file means no users yet; a missing folder is a typo.
    if not os.path.isdir(os.path.dirname(users_path)):
        raise usage.UsageError(
            f"--users {options['users']}: the folder {os.path.dirname(users_path)} "
            "does not exist")
    users = UserFile(users_path)
    try:
        user_count = users.load()
    except UserFileError as e:
        raise usage.UsageError(str(e)) from None
    return _UsersAndStores(
        users=users, user_count=user_count, count_of=users.loaded_count,
        # A registration adds its user to this user file (InvitationFile.register).
        stores={IInvitationStore: InvitationFile(os.path.join(os.path.dirname(users_path),
                                                              DEFAULT_INVITATION_FILE),
                                                 users=users,
                                                 run_in_thread=threads.deferToThread)})


def _deployment(url):
    """--store postgresql://...: the schema checked, the users counted; a
    UsageError in one line."""
    from twisted_keyx.service import pgstore

    if not pgstore.is_url(url):
        raise usage.UsageError(f"--store {url!r}: not a postgresql://... URL")
    try:
        return pgstore.Deployment(url)
    except pgstore.StoreError as e:
        raise usage.UsageError(str(e)) from None


_NOT_RECOGNIZED = re.compile(r"option (-{1,2})([^ ]+) not recognized\Z")


def _twistd_option_hint(message):
    """For "option -n not recognized" where -n is one of twistd's own
    options (``twistd keyx -n``): where it goes instead, else None."""
    match = _NOT_RECOGNIZED.match(message)
    if match is None:
        return None
    from twisted.scripts.twistd import ServerOptions

    dashes, name = match.groups()
    if name not in ServerOptions().synonyms:
        return None
    return f"twistd's own options go before keyx, as in: twistd {dashes}{name} ... keyx"


class StartupError(Exception):
    """The daemon cannot start (a port in use...): one line for the user."""


# twistd's daemon mode hands the waiting parent only the first 100 bytes of
# "module.Class: message"; a short module name leaves the message room.
StartupError.__module__ = "keyx"


class StartupExit(SystemExit, Exception):
    """The daemon cannot start, in the foreground: exits with the one-line
    message as a SystemExit does.  An Exception too, so that twistd, which
    removes its pid file for an Exception from the start only, does so
    before it lets this go on to end the process."""


class KeyxService(service.MultiService):
    """All the listening endpoints of one daemon (or the parent of its
    ``--workers``), from one :class:`KeyxConfig`; logs what it serves at
    start (``announce``: a worker leaves that to its parent)."""

    log = Logger()

    def __init__(self, config, daemon=False, announce=True):
        super().__init__()
        self.config = config
        self.daemon = daemon
        self.announce = announce

    def privilegedStartService(self):
        # strports services listen here, synchronously: a port in use is a
        # user mistake, so say it in one line instead of a traceback.  Every
        # address is tried first, so that nothing listens, not even for a
        # moment, when one of them cannot be had; and nothing is written
        # (a new host key...) before then.
        try:
            for listener in self.config.listeners:
                _check_can_listen(listener.description)
            self._writeNewFiles()
            self._makeThrottleFolder()
            super().privilegedStartService()
        except error.CannotListenError as e:
            self._cannotStart(_describe_cannot_listen(e))
        except OSError as e:  # a unix: socket's lock file, say
            where = e.filename2 or e.filename
            self._cannotStart(f"cannot listen: {e.strerror}" + (f": {where}" if where else ""))

    #: Whether the keys made while the options were read are on disk.
    _written = False

    def _writeNewFiles(self):
        if self._written:
            return
        self._written = True
        for new in self.config.new_files:
            try:
                new.write()
            except FileExistsError:
                self._cannotStart(f"{new.path} was made by another process while this one "
                                  "started; start again to use it")
            except Exception as e:  # HostKeyError, KeyFileError: one line each
                self._cannotStart(str(e))

    def _cannotStart(self, message):
        if self.daemon:
            # twistd's daemon mode reports an ordinary exception to the
            # waiting parent ("An error has occurred: ..."); SystemExit would
            # leave the parent waiting forever.  The exception then ends the
            # process, and Python would print its traceback to stderr, which
            # is the log file by then: the log gets this one line instead.
            self.log.error("twistd keyx: {reason}", reason=message)
            sys.excepthook = _quiet_about(StartupError, sys.excepthook)
            raise StartupError(message) from None
        raise StartupExit(f"twistd keyx: {message}") from None

    def startService(self):
        # twistd calls privilegedStartService first, which wrote them; a
        # service started without it (a program's own) writes them now.
        self._writeNewFiles()
        self._makeThrottleFolder()
        if self.announce:
            self._announce()
        self._logLimits()
        super().startService()

    def _announce(self):
        """One line per handshake served, as its registry entry words it."""
        served = self.config.served()
        password = False
        for entry in handshakes.handshakes():
            mine = {o: served[o] for o in entry.options() if o in served}
            if not mine:
                continue
            password = password or entry.scheme is not None
            for text, fields in _banner(entry, self.config, mine):
                self.log.info("twisted-keyx {version}: " + text, version=__version__, **fields)
        warning = (userstore.user_file_warning(self.config.users.path)
                   if password and self.config.deployment is None else None)
        if warning:
            # Not "warning=": the legacy log bridge takes that key for a Python warning.
            self.log.warn("user file {problem}", problem=warning)

    #: The parent of ``--workers``: its :class:`~twisted_keyx.service.workers.WorkerPool`.
    worker_pool = None
    #: A folder of the daemon's own to remove when it stops (the workers'
    #: throttle file).
    throttle_folder = None

    def _makeThrottleFolder(self):
        """The workers' shared guess throttle file, in a folder of the
        daemon's own, made once the daemon knows it can start."""
        if (self.worker_pool is None or self.throttle_folder is not None
                or self.config.deployment is not None):
            return  # no workers, done, or they share the --store database
        self.throttle_folder = tempfile.mkdtemp(prefix="keyx-throttle-")
        path = os.path.join(self.throttle_folder, "throttle.sqlite")
        sqlstore.SQLThrottleStore.sqlite(path).close()
        self.worker_pool.throttle_path = path

    def stopService(self):
        outcome = defer.maybeDeferred(super().stopService)
        if self.throttle_folder is not None:
            outcome.addBoth(self._removeFolder)
        return outcome

    def _removeFolder(self, result):
        shutil.rmtree(self.throttle_folder, ignore_errors=True)
        return result

    def _logLimits(self):
        bounds = self.config.limits
        wanted = bounds.max_connections + 64 if bounds.max_connections else 1 << 20
        files = limits.raise_open_file_limit(wanted)
        self.log.info(
            "Limits (0: none): handshake timeout {timeout:g} s, idle timeout {idle:g} s, "
            "{per_ip} connections per source (IPv4 /{v4}, IPv6 /{v6}), {total} in all; "
            "open-file limit {files}",
            timeout=bounds.timeout, idle=bounds.idle_timeout,
            per_ip=bounds.per_source, v4=bounds.ipv4_prefix,
            v6=bounds.ipv6_prefix, total=bounds.max_connections, files=files,
        )
        if bounds.max_connections and bounds.max_connections + 64 > files:
            self.log.warn(
                "--max-connections {total} is more than the open-file limit "
                "({files}) allows; connections beyond it will fail to be accepted",
                total=bounds.max_connections, files=files,
            )




def _banner(entry, config, served):
    if entry.banner is None:
        return [("{title} on {endpoints}", dict(
            title=entry.title, endpoints=", ".join(d for ds in served.values() for d in ds)))]
    banner = handshakes.load_path(entry.banner) if isinstance(entry.banner, str) else entry.banner
    return banner(ServerContext(config, settings=config.settings.get(entry.name)), served)


def _quiet_about(kind, excepthook):
    """An excepthook that prints nothing for an uncaught ``kind`` (already
    logged) and hands anything else to ``excepthook``."""

    def hook(exc_type, value, tb):
        if not issubclass(exc_type, kind):
            excepthook(exc_type, value, tb)

    return hook


def _check_can_listen(description):
    """Raise :class:`~twisted.internet.error.CannotListenError` if the TCP
    port or unix socket ``description`` names is taken, without listening:
    a TCP socket is bound (as Twisted binds it, with SO_REUSEADDR) and
    closed; a unix socket path that answers a connection is in use.  Port 0,
    other endpoint types and what cannot be told are left to Twisted."""
    spec = endpointspec.parse(proxied.inner(description))
    address = spec.address()
    if address is None:
        return
    if address[0] == "unix":
        path = address[1]
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(path)
        except OSError:
            return  # nothing there, or nothing answering: Twisted decides
        finally:
            probe.close()
        raise error.CannotListenError(None, path, "another server is listening there")
    _, port, interface = address
    if port == 0:
        return
    if spec.kind == "tcp6":
        family, interface = socket.AF_INET6, interface or "::"
    else:  # tcp, ssl: IPv6 only for an IPv6 interface, as twisted.internet.tcp.Port
        family = socket.AF_INET6 if ":" in interface else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((interface, port))
    except socket.gaierror:
        return  # an interface name Twisted will refuse in its own words
    except OSError as e:
        raise error.CannotListenError(interface, port, e) from None
    finally:
        probe.close()


def _describe_cannot_listen(e):
    """One line for a CannotListenError: ``cannot listen on WHERE: WHY``."""
    if isinstance(e.port, (bytes, str)):  # a unix socket: port is its path
        path = os.fsdecode(e.port)
        why = e.socketError
        if why == "Cannot acquire lock":
            why = f"its lock file {path}.lock is held by another process"
        return f"cannot listen on unix:{path}: {why}"
    return f"cannot listen on {host_port(e.interface or '*', e.port)}: {e.socketError}"

def _traced(config, factory):
    """``factory``, tracing into the log with ``--trace``."""
    if config.trace:
        show = config.show_secrets
        trace.traced(factory, lambda protocol: trace.TextTracer(show_secrets=show))
    return factory


def _daemon(options):
    # twistd's own options are the parent of ours; without -n it daemonizes.
    parent = getattr(options, "parent", None) or {}
    return bool(parent) and not parent.get("nodaemon", True)


def _prune(guesses, clock):
    if clock is None:
        from twisted.internet import reactor as clock
    outcome = guesses.store.prune(clock.seconds(), guesses.limits)
    outcome.addErrback(lambda failure: None)  # down: the next round prunes
    return outcome


def makeService(options, reactor=None, listen=None):
    """The service twistd runs, built once from ``options.config``;
    ``reactor`` is for tests (default: the global one).

    With ``--workers`` N > 1 it is the parent of N workers
    (:mod:`twisted_keyx.service.workers`), which logs what they serve; each
    of them calls this with its own options and ``listen``, which makes the
    service listening on ``description`` with ``factory`` (default: the
    endpoint's own, through strports)."""
    config = options.config
    top = KeyxService(config, daemon=_daemon(options), announce=listen is None)
    if listen is None and config.workers > 1:
        # In the order makeService listens (the workers match them up by it).
        listeners = [(f"--{l.option}", endpointspec.parse(l.description).private())
                     for l in config.listeners]
        # The workers' guess throttle: its state in one SQLite file they all
        # charge (twisted_keyx.service.workers), in a folder of ours made
        # when the daemon starts (KeyxService._makeThrottleFolder).
        top.worker_pool = workers.WorkerPool(config.workers, listeners, config.worker_argv,
                                             reactor=reactor)
        top.worker_pool.setServiceParent(top)
        return top
    if listen is None:
        def listen(description, factory):
            if proxied.is_proxied(description):
                # Behind HAProxy: the client's address from its PROXY header.
                clock = reactor
                if clock is None:
                    from twisted.internet import reactor as clock
                return internet.StreamServerEndpointService(
                    proxied.endpoint(clock, description), factory)
            return strports.service(endpointspec.parse(description).private(), factory,
                                    reactor=reactor)
    # One policy for every endpoint of every handshake: the limits are the
    # daemon's, not one listener's.
    policy = limits.ConnectionPolicy(config.limits, reactor)
    policy.setServiceParent(top)
    # One throttle for every password handshake: a user's guesses count
    # together whichever endpoint or protocol they come through (and,
    # through the parent's SQLite file, whichever worker).
    if config.deployment is not None:
        store = config.deployment.throttle
    elif config.throttle_path:
        store = sqlstore.SQLThrottleStore.sqlite(config.throttle_path)
    else:
        store = None
    guesses = throttle.GuessThrottle(config.guess_limits, reactor, store=store)
    guesses.lines = policy.global_lines  # one bound on strangers' lines in all
    guesses.setServiceParent(top)
    if hasattr(guesses.store, "prune"):
        # SQL throttle state (--workers' SQLite file, --store): the rows that
        # hold nothing any more deleted now and then, by every process (each
        # DELETE is one transaction; two at once delete nothing twice).
        internet.TimerService(
            throttle.PRUNE_EVERY, _prune, guesses, reactor).setServiceParent(top)
    top.guess_throttle = guesses
    served = config.served()
    for entry, endpoint in handshakes.endpoints():
        if endpoint.option not in served:
            continue
        context = ServerContext(config, guesses, config.limits.source_of,
                                config.settings.get(entry.name))
        factory = _traced(config, endpoint.build(context))
        for description in served[endpoint.option]:
            listen(description, policy.wrap(factory)).setServiceParent(top)
    return top
