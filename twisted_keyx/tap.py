"""``twistd keyx``: the command-line options and the service they build.

The dropin ``twisted/plugins/keyx_plugin.py`` points here, so tests can
import :class:`Options` and :func:`makeService` directly.
"""

from twisted.application import service, strports
from twisted.internet import endpoints
from twisted.logger import Logger
from twisted.python import usage

from twisted_keyx import __version__, ffdh
from twisted_keyx.dh.protocol import DHServerFactory

DEFAULT_DH_ENDPOINT = "tcp:7777"


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


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Serve the key-exchange handshakes of twisted-keyx.  With no options it "
        "serves the framed Diffie-Hellman handshake on tcp:7777 in the RFC 7919 "
        "group ffdhe2048.  ENDPOINT is any Twisted server endpoint string, for "
        "example tcp:7777, tcp:7777:interface=127.0.0.1, "
        "ssl:7443:privateKey=key.pem:certKey=cert.pem or unix:/tmp/keyx.sock."
    )
    optFlags = [
        ["show-secrets", None,
         "Log each shared secret and session key in hex, as the tutorial's "
         "server printed them. Without it only a short fingerprint of the "
         "session key is logged."],
    ]
    optParameters = [
        ["group", None, None,
         "RFC 7919 group for the DH handshake: "
         + ", ".join(ffdh.NAMED_GROUP_PRIMES) + f" [default: {ffdh.DEFAULT_GROUP}]"],
        ["params", None, None,
         "PEM file of DH parameters ('DH PARAMETERS' from openssl dhparam or "
         "'X9.42 DH PARAMETERS' from openssl genpkey -genparam), checked once "
         "at start-up; instead of --group. Custom groups are slow: cryptography "
         "re-checks them for every client key (about 0.3 s at 2048 bits)."],
    ]

    def __init__(self):
        super().__init__()
        self["dh"] = []

    def opt_dh(self, description):
        """Serve the framed DH handshake on ENDPOINT; may be repeated [default: tcp:7777]"""
        self["dh"].append(description)

    def opt_version(self):
        """Print the version of twisted-keyx and exit."""
        print(f"twisted-keyx {__version__}")
        raise SystemExit(0)

    def postOptions(self):
        if not self["dh"]:
            self["dh"] = [DEFAULT_DH_ENDPOINT]
        for description in self["dh"]:
            _check_endpoint(description)
        if self["params"] and self["group"]:
            raise usage.UsageError("give either --group or --params, not both")
        try:
            if self["params"]:
                self["dh-group"] = ffdh.load_parameters_file(self["params"])
            else:
                self["dh-group"] = ffdh.named_group(self["group"] or ffdh.DEFAULT_GROUP)
        except ffdh.ParameterError as e:
            raise usage.UsageError(str(e)) from None


class KeyxService(service.MultiService):
    """All the listening endpoints of one daemon; logs what it serves at start."""

    log = Logger()

    def __init__(self, group, dh_endpoints):
        super().__init__()
        self.group = group
        self.dh_endpoints = dh_endpoints

    def startService(self):
        self.log.info(
            "twisted-keyx {version}: DH handshake on {endpoints} with group {group} "
            "({bits} bits)",
            version=__version__, endpoints=", ".join(self.dh_endpoints),
            group=self.group.name, bits=self.group.bits,
        )
        super().startService()


def makeService(options, reactor=None):
    """The service twistd runs; ``reactor`` is for tests (default: the global one)."""
    group = options["dh-group"]
    top = KeyxService(group, options["dh"])
    dh_factory = DHServerFactory(group, show_secrets=options["show-secrets"])
    for description in options["dh"]:
        strports.service(description, dh_factory, reactor=reactor).setServiceParent(top)
    return top
