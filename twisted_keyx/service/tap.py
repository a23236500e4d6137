"""``twistd keyx``: the command-line options and the service they build.

The dropin ``twisted/plugins/keyx_plugin.py`` points here, so tests can
import :class:`Options` and :func:`makeService` directly.
"""

import math
import os
import re
import shutil
import socket
import sys
import tempfile

from twisted.application import internet, service, strports
from twisted.internet import defer, endpoints, error
from twisted.logger import Logger
from twisted.python import usage

from twisted_keyx import __version__
from twisted_keyx.groups import registry as groups
from twisted_keyx.trust import hostkey
from twisted_keyx.service import limits, proxied
from twisted_keyx.service import sqlstore, throttle
from twisted_keyx.observe import trace
from twisted_keyx.service import workers
from twisted_keyx.dh.protocol import DHServerFactory
from twisted_keyx.dh.raw import RawDHServerFactory
from twisted_keyx.eke.protocol import EKEServerFactory
from twisted_keyx.opaque.protocol import OPAQUEServerFactory
from twisted_keyx.trust.knownservers import server_key_fingerprint
from twisted_keyx.service import userfile as userstore
from twisted_keyx.service.userfile import DEFAULT_USER_FILE, UserFile, UserFileError
from twisted_keyx.core.peers import host_port

DEFAULT_DH_ENDPOINT = "tcp:7777"
DEFAULT_EKE_ENDPOINT = "tcp:8088"
DEFAULT_OPAQUE_ENDPOINT = "tcp:8089"


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
    # What parses but cannot listen: Twisted takes any integer as a port and
    # any string as a socket path, and bind() refuses them only at start.
    address = _listening_address(description)
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


_WILDCARD_INTERFACES = ("", "0.0.0.0", "::")


def _listening_address(description):
    """What an endpoint description listens on: ``("tcp", port, interface)``,
    ``("unix", path)``, or None when it cannot tell (other endpoint types, a
    port that is not a number)."""
    fields = re.split(r"(?<!\\):", description)
    kind = fields[0].lower()
    positional = [f for f in fields[1:] if "=" not in f]
    keywords = dict(f.split("=", 1) for f in fields[1:] if "=" in f)
    if kind in ("tcp", "tcp6", "ssl"):
        port = keywords.get("port", positional[0] if positional else "")
        try:
            port = int(port)
        except ValueError:
            return None
        return ("tcp", port, keywords.get("interface", ""))
    if kind == "unix":
        return ("unix", keywords.get("address", positional[0] if positional else ""))
    return None


def _private_unix(description):
    """``description`` with ``:mode=600`` added if it is a ``unix:`` endpoint
    that gives no mode (Twisted's default is 0666, which lets every local
    user connect)."""
    fields = re.split(r"(?<!\\):", description)
    if fields[0].lower() != "unix":
        return description
    positional = [f for f in fields[1:] if "=" not in f]
    keywords = [f.split("=", 1)[0] for f in fields[1:] if "=" in f]
    if "mode" in keywords or len(positional) > 1:  # unix:PATH:MODE
        return description
    return description + ":mode=600"


def _clash(a, b):
    if a[0] != b[0] or a[1] != b[1]:
        return False
    if a[0] == "unix":
        return True
    return a[2] == b[2] or a[2] in _WILDCARD_INTERFACES or b[2] in _WILDCARD_INTERFACES


def _check_distinct_listeners(listeners, defaulted=()):
    """Refuse two endpoints that would listen on the same port or socket, which
    would otherwise fail with a traceback when the service starts.

    ``listeners`` is a list of ``(option, description)``, defaults first;
    ``defaulted`` names the options whose endpoint is a default the user did
    not give, so that the message says which one to move."""
    seen = []
    for option, description in listeners:
        address = _listening_address(description)
        if address is None or address[:2] == ("tcp", 0):
            continue  # port 0: the kernel picks a free one
        for other_option, other_description, other_address in seen:
            if not _clash(address, other_address):
                continue
            what = "socket" if address[0] == "unix" else "port"
            message = (f"{other_option} {other_description} and {option} {description} "
                       f"would both listen on the same {what}")
            if other_option in defaulted:
                message += (f"; {other_description} is the default for {other_option}: "
                            f"give {other_option} another endpoint, for example "
                            f"{other_option} tcp:7778")
            raise usage.UsageError(message)
        seen.append((option, description, address))


class _Number(float):
    """A float default that ``--help`` prints as README writes it (30, not 30.0)."""

    def __str__(self):
        return f"{float(self):g}"

    __format__ = lambda self, spec: format(float(self), spec) if spec else str(self)


#: The host key used when --host-key is not given; made on first start.
DEFAULT_HOST_KEY = "keyx-host-key"


def _load_host_key(options):
    """Set ``options["host-key-loaded"]`` (a HostKey or None) and
    ``options["host-key-created"]``; every problem is a UsageError."""
    options["host-key-loaded"], options["host-key-created"] = None, False
    if options["no-host-key"]:
        if options["host-key"]:
            raise usage.UsageError("give either --host-key or --no-host-key, not both")
        return
    try:
        if options["host-key"]:
            options["host-key-loaded"] = hostkey.load_host_key(options["host-key"])
        else:
            options["host-key-loaded"], options["host-key-created"] = \
                hostkey.load_or_create_host_key(os.path.abspath(DEFAULT_HOST_KEY))
    except hostkey.HostKeyError as e:
        option = "--host-key" if options["host-key"] else f"host key ({DEFAULT_HOST_KEY})"
        raise usage.UsageError(f"{option}: {e}") from None


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Serve the key-exchange handshakes of twisted-keyx.  With no options it "
        "serves the framed Diffie-Hellman handshake on tcp:7777 in the RFC 7919 "
        "group ffdhe2048, and the EKE password handshake with its encrypted chat "
        "on tcp:8088 for the users of keyx-users.json.  ENDPOINT is any Twisted "
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
        ["hide-unknown-users", None,
         "EKE: answer yes to every well-formed user name and let an unknown "
         "name fail at the nonce step exactly like a wrong password, so that "
         "probing cannot list user names. Without it an unknown user gets no "
         "and the connection closes, as in the original."],
        ["no-host-key", None,
         "Serve the DH handshake without a host key: a client that asks for the "
         "host key signature (Host key?) is refused as the tutorial's server "
         "refuses it, and falls back to the unauthenticated handshake."],
    ]
    optParameters = [
        ["group", None, None,
         "Group for the DH handshake: the RFC 7919 groups, X25519 (RFC 7748), "
         "or ML-KEM-768 + X25519 with X-Wing's or OpenSSH's combiner (post-quantum "
         "hybrids): "
         + ", ".join(groups.names()) + f" [default: {groups.DEFAULT}]"],
        ["host-key", None, None,
         "Ed25519 host key (OpenSSH private key format, mode 0600) that signs "
         "the DH handshake for clients that ask (docs/hostkey.rst) "
         f"[default: {DEFAULT_HOST_KEY}, created on first start]"],
        ["params", None, None,
         "PEM file of DH parameters ('DH PARAMETERS' from openssl dhparam or "
         "'X9.42 DH PARAMETERS' from openssl genpkey -genparam), checked once "
         "at start-up; instead of --group. Once checked, a handshake in it "
         "costs the server less than twice one in the named group of its size."],
        ["timeout", None, _Number(limits.Limits.timeout),
         "Seconds a client has to finish its handshake; then it is cut off "
         "(0: no limit).", float],
        ["idle-timeout", None, _Number(limits.Limits.idle_timeout),
         "Seconds an EKE chat may stay silent before it is cut off (0: no "
         "limit). The DH handshake closes as soon as it is done.", float],
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
        ["opaque-key", None, "keyx-opaque-key",
         "OPAQUE key file (the OPRF seed and the server's key pair), mode 0600, "
         "made by keyx-admin adduser --scheme opaque.  Missing with no OPAQUE "
         "users: a fresh one is written.  Missing with OPAQUE users: an error."],
        ["workers", None, "1",
         "Serve every endpoint from this many processes (auto: one per CPU). The "
         "parent binds the sockets (tcp, tcp6, ssl, unix endpoints only), the "
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
         "EKE user file, made with keyx-admin adduser; re-read when it changes. "
         "A missing file means no users yet."],
        ["store", None, None,
         "postgresql://... : the users, the OPAQUE server setup and the guess "
         "throttle's state in PostgreSQL, shared by every daemon and worker "
         "that names it (in place of --users and --opaque-key); its schema made "
         "by keyx-admin store-upgrade --store URL. Needs psycopg "
         "(pip install 'twisted-keyx[postgresql]')."],
    ]

    def __init__(self):
        super().__init__()
        self["dh"] = []
        self["dh-raw"] = []
        self["eke"] = []
        self["opaque"] = []

    def opt_opaque(self, description):
        # One line: usage.Options would keep a line break's indentation.
        """Serve the OPAQUE password handshake and chat on ENDPOINT; may be repeated [default: tcp:8089]"""
        self["opaque"].append(description)

    def opt_dh(self, description):
        """Serve the framed DH handshake on ENDPOINT; may be repeated [default: tcp:7777]"""
        self["dh"].append(description)

    def opt_dh_raw(self, description):
        # One line: usage.Options would keep a line break's indentation.
        """Serve the DH handshake unframed (the tutorial's wire format) on ENDPOINT (repeatable)"""
        self["dh-raw"].append(description)

    def opt_eke(self, description):
        # One line: usage.Options would keep a line break's indentation.
        """Serve the EKE password handshake and chat on ENDPOINT; may be repeated [default: tcp:8088]"""
        self["eke"].append(description)

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
            if hint is None:
                raise
            raise usage.UsageError(f"{e}: {hint}") from None

    def postOptions(self):
        defaulted = []
        if not self["dh"]:
            self["dh"] = [DEFAULT_DH_ENDPOINT]
            defaulted.append("--dh")
        if not self["eke"]:
            self["eke"] = [DEFAULT_EKE_ENDPOINT]
            defaulted.append("--eke")
        if not self["opaque"]:
            self["opaque"] = [DEFAULT_OPAQUE_ENDPOINT]
            defaulted.append("--opaque")
        listeners = [("--dh", d) for d in self["dh"]] + [("--eke", d) for d in self["eke"]]
        listeners += [("--opaque", d) for d in self["opaque"]]
        listeners += [("--dh-raw", d) for d in self["dh-raw"]]
        for _, description in listeners:
            _check_endpoint(description)
        _check_distinct_listeners(listeners, defaulted)
        self["workers"] = workers.parse_workers(self["workers"])
        if self["workers"] > 1:
            for _, description in listeners:
                workers.check_description(description)
        self["listeners"] = listeners
        for name in ("timeout", "idle-timeout", "max-per-ip", "max-connections"):
            # not (x >= 0) also refuses nan, which would break every timer.
            if not (0 <= self[name] < math.inf):
                raise usage.UsageError(f"--{name} must be a number, 0 (no limit) or more")
        if self["max-guesses"] < 0 or not (0 <= self["guess-delay"] <= 60):
            raise usage.UsageError(
                "--max-guesses must be 0 or more, --guess-delay 0 to 60 seconds")
        self["guess-limits"] = throttle.GuessLimits(
            free=self["max-guesses"], delay=self["guess-delay"])
        for name, longest in (("ipv4-prefix", 32), ("ipv6-prefix", 128)):
            if not 0 <= self[name] <= longest:
                raise usage.UsageError(f"--{name} must be 0 to {longest}")
        self["limits"] = limits.Limits(
            timeout=self["timeout"], idle_timeout=self["idle-timeout"],
            max_per_ip=self["max-per-ip"], max_connections=self["max-connections"],
            ipv4_prefix=self["ipv4-prefix"], ipv6_prefix=self["ipv6-prefix"],
        )
        if self["params"] and self["group"]:
            raise usage.UsageError("give either --group or --params, not both")
        try:
            if self["params"]:
                self["dh-group"] = groups.load_parameters_file(self["params"])
            else:
                self["dh-group"] = groups.named(self["group"] or groups.DEFAULT)
        except groups.GroupError as e:
            raise usage.UsageError(str(e)) from None
        _load_host_key(self)
        if self["store"]:
            self._useStore()
            return
        # Absolute, so that a daemon that changes directory still finds it.
        users = os.path.abspath(self["users"])
        # A missing file means no users yet; a missing folder is a typo.
        if not os.path.isdir(os.path.dirname(users)):
            raise usage.UsageError(
                f"--users {self['users']}: the folder {os.path.dirname(users)} does not exist")
        self["user-file"] = UserFile(users)
        try:
            self["user-count"] = self["user-file"].load()
        except UserFileError as e:
            raise usage.UsageError(str(e)) from None
        self["opaque-setup"], self["opaque-key-created"] = _opaque_setup(
            os.path.abspath(self["opaque-key"]), self["user-file"].count("opaque"))


    def _useStore(self):
        """--store postgresql://...: the schema checked, users and the OPAQUE
        setup loaded (made once if missing), the throttle's state there."""
        from twisted_keyx.service import pgstore

        if not pgstore.is_url(self["store"]):
            raise usage.UsageError(
                f"--store {self['store']!r}: not a postgresql://... URL")
        try:
            deployment = pgstore.Deployment(self["store"])
        except pgstore.StoreError as e:
            raise usage.UsageError(str(e)) from None
        self["deployment"] = deployment
        self["user-file"] = deployment.snapshot
        self["user-count"] = len(deployment.initial_users)
        self["opaque-setup"] = deployment.setup
        self["opaque-key"] = deployment.where
        self["opaque-key-created"] = deployment.setup_created
        self["throttle-store"] = deployment.throttle


def _is_store(where):
    return isinstance(where, str) and where.startswith(("postgresql://", "postgres://"))


def _opaque_setup(path, opaque_users):
    """(setup, created) for --opaque-key: the file's; a fresh one written
    there when it does not exist and no user needs the old one; a usage
    error when OPAQUE users exist without it (their records open only with
    its OPRF seed), or when it is unusable or readable by others."""
    from twisted_keyx.opaque import scheme as opaque_scheme

    try:
        if not os.path.exists(path):
            if opaque_users:
                raise usage.UsageError(
                    f"--opaque-key {path}: no such file, but the user file has "
                    f"{opaque_users} OPAQUE user(s), who can log in only with the key "
                    "file they were registered with; restore it, or give its path")
            return opaque_scheme.create_key_file(path), True
        return opaque_scheme.load_key_file(path), False
    except opaque_scheme.KeyFileError as e:
        raise usage.UsageError(f"--opaque-key: {e}") from None


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


class KeyxService(service.MultiService):
    """All the listening endpoints of one daemon; logs what it serves at start."""

    log = Logger()

    def __init__(self, group, dh_endpoints, dh_raw_endpoints=(), eke_endpoints=(),
                 user_file=None, user_count=None, connection_limits=limits.Limits(),
                 daemon=False, opaque_endpoints=(), opaque_key=None, host_key=None,
                 host_key_created=False):
        super().__init__()
        self.opaque_endpoints = list(opaque_endpoints)
        #: (path, setup, created) of the OPAQUE key file.
        self.opaque_key = opaque_key
        self.daemon = daemon
        self.host_key = host_key
        self.host_key_created = host_key_created
        self.group = group
        self.dh_endpoints = dh_endpoints
        self.dh_raw_endpoints = list(dh_raw_endpoints)
        self.eke_endpoints = list(eke_endpoints)
        self.user_file = user_file
        self.user_count = user_count
        self.limits = connection_limits

    def privilegedStartService(self):
        # strports services listen here, synchronously: a port in use is a
        # user mistake, so say it in one line instead of a traceback.  Every
        # address is tried first, so that nothing listens, not even for a
        # moment, when one of them cannot be had.
        try:
            for description in (self.dh_endpoints + self.dh_raw_endpoints + self.eke_endpoints
                                + self.opaque_endpoints):
                _check_can_listen(description)
            super().privilegedStartService()
        except error.CannotListenError as e:
            self._cannotStart(_describe_cannot_listen(e))
        except OSError as e:  # a unix: socket's lock file, say
            where = e.filename2 or e.filename
            self._cannotStart(f"cannot listen: {e.strerror}" + (f": {where}" if where else ""))

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
        raise SystemExit(f"twistd keyx: {message}") from None


    def startService(self):
        endpoints = ", ".join(self.dh_endpoints)
        if self.dh_raw_endpoints:
            endpoints += "; unframed (the tutorial's wire format) on " + ", ".join(
                self.dh_raw_endpoints
            )
        if self.host_key is None:
            host = "no host key (unauthenticated only)"
        else:
            host = f"host key {self.host_key.fingerprint}"
            if self.host_key_created:
                host += " (created now)"
        self.log.info(
            "twisted-keyx {version}: DH handshake on {endpoints} with group {group} "
            "({bits} bits); {host}",
            version=__version__, endpoints=endpoints,
            group=self.group.name, bits=self.group.bits, host=host,
        )
        if self.eke_endpoints:
            self.log.info(
                "twisted-keyx {version}: EKE handshake and chat on {endpoints}; "
                "users from {path} ({users})",
                version=__version__, endpoints=", ".join(self.eke_endpoints),
                path=self.user_file,
                users="file not found: no users yet" if self.user_count is None
                else f"{self.user_count} user(s)",
            )
        if self.opaque_endpoints and self.opaque_key is not None:
            path, setup, created = self.opaque_key
            self.log.info(
                "twisted-keyx {version}: OPAQUE handshake and chat on {endpoints}; "
                "key file {path} ({state}), server key fingerprint {fingerprint}",
                version=__version__, endpoints=", ".join(self.opaque_endpoints), path=path,
                state="created now, no OPAQUE users yet" if created else "loaded",
                fingerprint=server_key_fingerprint(setup.server_public_key),
            )
        warning = (userstore.user_file_warning(self.user_file)
                   if self.eke_endpoints and not _is_store(self.user_file) else None)
        if warning:
            # Not "warning=": the legacy log bridge takes that key for a Python warning.
            self.log.warn("user file {problem}", problem=warning)
        self._logLimits()
        super().startService()

    #: A folder of the daemon's own to remove when it stops (the workers'
    #: throttle file).
    throttle_folder = None

    def stopService(self):
        outcome = defer.maybeDeferred(super().stopService)
        if self.throttle_folder is not None:
            outcome.addBoth(self._removeFolder)
        return outcome

    def _removeFolder(self, result):
        shutil.rmtree(self.throttle_folder, ignore_errors=True)
        return result

    def _logLimits(self):
        wanted = self.limits.max_connections + 64 if self.limits.max_connections else 1 << 20
        files = limits.raise_open_file_limit(wanted)
        self.log.info(
            "Limits (0: none): handshake timeout {timeout:g} s, idle timeout {idle:g} s, "
            "{per_ip} connections per source (IPv4 /{v4}, IPv6 /{v6}), {total} in all; "
            "open-file limit {files}",
            timeout=self.limits.timeout, idle=self.limits.idle_timeout,
            per_ip=self.limits.per_source, v4=self.limits.ipv4_prefix,
            v6=self.limits.ipv6_prefix, total=self.limits.max_connections, files=files,
        )
        if self.limits.max_connections and self.limits.max_connections + 64 > files:
            self.log.warn(
                "--max-connections {total} is more than the open-file limit "
                "({files}) allows; connections beyond it will fail to be accepted",
                total=self.limits.max_connections, files=files,
            )



def _quiet_about(kind, excepthook):
    """An excepthook that prints nothing for an uncaught ``kind`` (already
    logged) and hands anything else to ``excepthook``."""

    def hook(exc_type, value, tb):
        if not issubclass(exc_type, kind):
            excepthook(exc_type, value, tb)

    return hook


def _unescape(field):
    return re.sub(r"\\(.)", r"\1", field)


def _check_can_listen(description):
    """Raise :class:`~twisted.internet.error.CannotListenError` if the TCP
    port or unix socket ``description`` names is taken, without listening:
    a TCP socket is bound (as Twisted binds it, with SO_REUSEADDR) and
    closed; a unix socket path that answers a connection is in use.  Port 0,
    other endpoint types and what cannot be told are left to Twisted."""
    address = _listening_address(description)
    if address is None:
        return
    if address[0] == "unix":
        path = _unescape(address[1])
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(path)
        except OSError:
            return  # nothing there, or nothing answering: Twisted decides
        finally:
            probe.close()
        raise error.CannotListenError(None, path, "another server is listening there")
    _, port, interface = address
    interface = _unescape(interface)
    if port == 0:
        return
    kind = description.split(":", 1)[0].lower()
    if kind == "tcp6":
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

def _traced(options, factory):
    """``factory``, tracing into the log with ``--trace``."""
    if options.get("trace"):
        show = options["show-secrets"]
        trace.traced(factory, lambda protocol: trace.TextTracer(show_secrets=show))
    return factory


def makeService(options, reactor=None, listen=None):
    """The service twistd runs; ``reactor`` is for tests (default: the global one).

    With ``--workers`` N > 1 it is the parent of N workers
    (:mod:`twisted_keyx.service.workers`); each of them calls this again with
    ``listen``, which makes the service listening on ``description`` with
    ``factory`` (default: the endpoint's own, through strports)."""
    group = options["dh-group"]
    connection_limits = options.get("limits", limits.Limits())
    parent = getattr(options, "parent", None) or {}
    if listen is None and options.get("workers", 1) > 1:
        top = KeyxService(group, options["dh"], options["dh-raw"], options["eke"],
                          options["user-file"].path, options["user-count"], connection_limits,
                          daemon=bool(parent) and not parent.get("nodaemon", True))
        # In the order makeService listens (the workers match them up by it).
        order = ["--dh", "--dh-raw", "--eke", "--opaque"]
        listeners = sorted(((o, _private_unix(d)) for o, d in options["listeners"]),
                           key=lambda listener: order.index(listener[0]))
        throttle_path = ""  # with --store: the database's, for every worker
        if not options.get("deployment"):
            # The workers' guess throttle: its state in one SQLite file they
            # all charge (twisted_keyx.service.workers), in a folder of ours.
            folder = tempfile.mkdtemp(prefix="keyx-throttle-")
            throttle_path = os.path.join(folder, "throttle.sqlite")
            sqlstore.SQLThrottleStore.sqlite(throttle_path).close()
            top.throttle_folder = folder
        workers.WorkerPool(options["workers"], listeners,
                           workers.strip_workers_option(options["argv"]),
                           reactor=reactor, throttle_path=throttle_path).setServiceParent(top)
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
            return strports.service(_private_unix(description), factory, reactor=reactor)
    # twistd's own options are the parent of ours; without -n it daemonizes.
    top = KeyxService(group, options["dh"], options["dh-raw"], options["eke"],
                      options["user-file"].path, options["user-count"], connection_limits,
                      daemon=bool(parent) and not parent.get("nodaemon", True),
                      opaque_endpoints=options.get("opaque", []),
                      opaque_key=(options["opaque-key"] if options.get("deployment")
                                  else os.path.abspath(options["opaque-key"]),
                                  options["opaque-setup"], options["opaque-key-created"])
                      if options.get("opaque") else None,
                      host_key=options.get("host-key-loaded"),
                      host_key_created=options.get("host-key-created", False))
    if options.get("deployment"):
        # --store: the users reloaded from the database when they change.
        options["user-file"].setServiceParent(top)
    # One policy for every endpoint of every handshake: the limits are the
    # daemon's, not one listener's.
    policy = limits.ConnectionPolicy(connection_limits, reactor)
    policy.setServiceParent(top)
    host_key = options.get("host-key-loaded")
    dh_factory = _traced(options, DHServerFactory(
        group, show_secrets=options["show-secrets"], host_key=host_key))
    for description in options["dh"]:
        listen(description, policy.wrap(dh_factory)).setServiceParent(top)
    if options["dh-raw"]:
        raw_factory = _traced(options, RawDHServerFactory(
            group, show_secrets=options["show-secrets"], host_key=host_key))
        for description in options["dh-raw"]:
            listen(description, policy.wrap(raw_factory)).setServiceParent(top)
    # One throttle for every password handshake: a user's guesses count
    # together whichever endpoint or protocol they come through.
    guesses = throttle.GuessThrottle(options.get("guess-limits", throttle.GuessLimits()),
                                     reactor, store=options.get("throttle-store"))
    guesses.setServiceParent(top)
    top.guess_throttle = guesses
    eke_factory = _traced(options, EKEServerFactory(
        options["user-file"],
        hide_unknown_users=options["hide-unknown-users"],
        show_secrets=options["show-secrets"],
        throttle=guesses, source_of=connection_limits.source_of,
    ))
    for description in options["eke"]:
        listen(description, policy.wrap(eke_factory)).setServiceParent(top)
    if options.get("opaque"):
        opaque_factory = _traced(options, OPAQUEServerFactory(
            options["user-file"], options["opaque-setup"], show_secrets=options["show-secrets"],
            throttle=guesses, source_of=connection_limits.source_of))
        for description in options["opaque"]:
            listen(description, policy.wrap(opaque_factory)).setServiceParent(top)
    return top
