"""The two OPAQUE profiles a daemon can speak (docs/opaque.rst, Profiles).

A profile fixes what RFC 9807 section 7 leaves to the configuration
beyond the cipher suite: the application context of the AKE preamble
(section 6.4.2.1) and how the key stretching function's cost is known.

``twisted-keyx-v1`` (the default; every key file made before profiles)
    Context ``twisted-keyx OPAQUE-3DH v1 ristretto255-SHA512 HKDF-SHA512
    HMAC-SHA512`` followed by the record's 12-byte Argon2id cost, which
    the server also sends in front of KE2: each record keeps the cost it
    was made with, so the cost can rise for new users
    (:mod:`twisted_keyx.opaque.ksf`).

``rfc9807``
    Plain RFC 9807: a context the operator chooses (empty allowed, as
    opaque-ke's packagings use), one Argon2id cost for every record, and
    KE2 exactly as the RFC has it (no header), so that a client that
    implements only the RFC (opaque-ke, ``@serenity-kit/opaque``) logs in.

The profile is stored in the key file (:class:`~twisted_keyx.opaque.records.ServerSetup`),
printed by ``keyx-admin opaque-profile`` and logged by the daemon at start;
a client is told it with ``keyx-client opaque --profile TEXT``, TEXT being
:meth:`Profile.text`::

    twisted-keyx-v1
    rfc9807,m=65536,t=3,p=4,context=BASE64
"""

import base64
import binascii
from dataclasses import dataclass

from twisted_keyx.opaque import ksf as ksf_module
from twisted_keyx.opaque.errors import OpaqueError
from twisted_keyx.opaque.ksf import DEFAULT_ARGON2ID, DEFAULT_KSF_LIMITS, Argon2idParameters

LEGACY_NAME = "twisted-keyx-v1"
RFC_NAME = "rfc9807"
#: The context of the twisted-keyx-v1 profile, before the KSF header.
LEGACY_CONTEXT = b"twisted-keyx OPAQUE-3DH v1 ristretto255-SHA512 HKDF-SHA512 HMAC-SHA512"
MAX_CONTEXT_BYTES = 1024


class FixedCost:
    """Client-side KSF policy of the rfc9807 profile: no header on the
    wire; the cost is the profile's."""

    header_size = 0

    def __init__(self, ksf):
        self.ksf = ksf

    def accept(self, header):
        if header:
            raise OpaqueError("the rfc9807 profile sends no KSF header")
        return self.ksf


@dataclass(frozen=True)
class Profile:
    """``name`` is :data:`LEGACY_NAME` or :data:`RFC_NAME`; ``context`` the
    bytes of the preamble's context (before the KSF header in the legacy
    profile); ``ksf`` the fixed cost (rfc9807) or None (per record)."""

    name: str
    context: bytes
    ksf: object = None

    @property
    def rfc(self):
        return self.name == RFC_NAME

    def check(self):
        if self.name == LEGACY_NAME:
            if self.context != LEGACY_CONTEXT or self.ksf is not None:
                raise OpaqueError(f"the {LEGACY_NAME} profile has a fixed context and "
                                  "per-record costs")
        elif self.name == RFC_NAME:
            if not isinstance(self.ksf, Argon2idParameters):
                raise OpaqueError(f"the {RFC_NAME} profile needs an Argon2id cost")
            self.ksf.check()
            if len(self.context) > MAX_CONTEXT_BYTES:
                raise OpaqueError(f"the context is longer than {MAX_CONTEXT_BYTES} bytes")
        else:
            raise OpaqueError(f"unknown OPAQUE profile {self.name!r} "
                              f"(known: {LEGACY_NAME}, {RFC_NAME})")
        return self

    # --- what the two sides do differently ------------------------------------

    def client_policy(self, ksf_limits=DEFAULT_KSF_LIMITS):
        """The client's KSF policy for :class:`~twisted_keyx.opaque.login.ClientLogin`."""
        return ksf_limits if not self.rfc else FixedCost(self.ksf)

    def registration_ksf(self, default_ksf):
        """The cost a new record gets."""
        return self.ksf if self.rfc else default_ksf

    def header(self, record_ksf):
        """The bytes sent in front of KE2 and appended to the context."""
        return b"" if self.rfc else record_ksf.encode()

    # --- text and JSON ----------------------------------------------------------

    def text(self):
        """The one-word form a client is given (``--profile``)."""
        if not self.rfc:
            return self.name
        k = self.ksf
        context = base64.b64encode(self.context).decode("ascii")
        return (f"{RFC_NAME},m={k.memory_cost},t={k.iterations},p={k.lanes},"
                f"context={context}")

    @classmethod
    def parse(cls, text):
        """A profile from :meth:`text`; :class:`OpaqueError` says what is wrong."""
        name, _, rest = text.strip().partition(",")
        if name == LEGACY_NAME and not rest:
            return LEGACY
        if name != RFC_NAME:
            raise OpaqueError(f"unknown OPAQUE profile {name!r} (known: {LEGACY_NAME}, "
                              f"{RFC_NAME},m=KiB,t=PASSES,p=LANES,context=BASE64)")
        fields = {}
        for item in rest.split(",") if rest else []:
            key, sep, value = item.partition("=")
            if not sep or key not in ("m", "t", "p", "context") or key in fields:
                raise OpaqueError(f"{RFC_NAME} profile: {item!r} is not one of "
                                  "m=, t=, p=, context= (each once)")
            fields[key] = value
        try:
            cost = Argon2idParameters(*(int(fields.get(k, d)) for k, d in (
                ("m", DEFAULT_ARGON2ID.memory_cost), ("t", DEFAULT_ARGON2ID.iterations),
                ("p", DEFAULT_ARGON2ID.lanes))))
        except ValueError:
            raise OpaqueError(f"{RFC_NAME} profile: m, t and p are integers") from None
        return cls(RFC_NAME, _context_from_base64(fields.get("context", "")), cost).check()

    def to_json(self):
        if not self.rfc:
            return {"name": self.name}
        return {"name": self.name, "context": base64.b64encode(self.context).decode("ascii"),
                "ksf": self.ksf.to_json()}

    @classmethod
    def from_json(cls, obj):
        if obj is None:
            return LEGACY
        if not isinstance(obj, dict):
            raise OpaqueError("profile must be an object")
        if obj.get("name") == LEGACY_NAME and set(obj) == {"name"}:
            return LEGACY
        if obj.get("name") != RFC_NAME or set(obj) != {"name", "context", "ksf"}:
            raise OpaqueError(f"profile must be {{\"name\": \"{LEGACY_NAME}\"}} or "
                              f"{RFC_NAME} with context and ksf")
        context = obj["context"]
        if not isinstance(context, str):
            raise OpaqueError("profile context must be base64 text")
        return cls(RFC_NAME, _context_from_base64(context),
                   ksf_module.from_json(obj["ksf"])).check()

    def __str__(self):
        if not self.rfc:
            return self.name
        return f"{RFC_NAME} ({self.ksf}, context {self.context!r})"


def _context_from_base64(text):
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise OpaqueError("the profile's context is not base64") from None


def rfc9807(context=b"", ksf=DEFAULT_ARGON2ID):
    """The plain-RFC profile with ``context`` (bytes) and one cost."""
    return Profile(RFC_NAME, context, ksf).check()


LEGACY = Profile(LEGACY_NAME, LEGACY_CONTEXT)
