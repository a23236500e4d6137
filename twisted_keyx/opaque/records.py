"""What the server keeps: one registration record per user (RFC 9807
section 5.1, plus the record's KSF cost) and one server setup (the OPRF
seed and the AKE key pair of RFC 9807 section 3.1, plus the fake record of
section 6.3.2.2), each as JSON-friendly fields (base64 for bytes).
"""

import base64
import binascii
import json
import os
from dataclasses import dataclass

from twisted_keyx.opaque import group, ksf as ksf_module
from twisted_keyx.opaque.errors import OpaqueError
from twisted_keyx.opaque.messages import (
    ENVELOPE_SIZE,
    REGISTRATION_RECORD_SIZE,
    Envelope,
    _split,
)
from twisted_keyx.opaque.primitives import NH, NPK
from twisted_keyx.opaque.profile import LEGACY, Profile

SETUP_FORMAT = "twisted-keyx opaque-3dh ristretto255-sha512 v1"
OPRF_SEED_SIZE = NH


def _b64(data):
    return base64.b64encode(data).decode("ascii")


def _unb64(obj, key, size):
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, str):
        raise OpaqueError(f"{key} is missing or not a string")
    try:
        data = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise OpaqueError(f"{key} is not base64") from None
    if len(data) != size:
        raise OpaqueError(f"{key} is {len(data)} bytes, not {size}")
    return data


@dataclass(frozen=True, repr=False)
class RegistrationRecord:
    """RFC 9807 section 5.1's RegistrationRecord and the KSF cost the
    client registered with (sent to it before each KE2)."""

    client_public_key: bytes
    masking_key: bytes
    envelope: Envelope
    ksf: object

    def to_bytes(self):
        """The RFC's 192-byte RegistrationRecord (the KSF is not in it)."""
        return self.client_public_key + self.masking_key + self.envelope.to_bytes()

    @classmethod
    def from_bytes(cls, data, ksf):
        client_pk, masking_key, envelope = _split(
            data, "registration record", NPK, NH, ENVELOPE_SIZE
        )
        return cls(group.deserialize_element(client_pk), masking_key,
                   Envelope.from_bytes(envelope), ksf)

    def to_json(self):
        return {
            "client_public_key": _b64(self.client_public_key),
            "masking_key": _b64(self.masking_key),
            "envelope": _b64(self.envelope.to_bytes()),
            "ksf": self.ksf.to_json(),
        }

    @classmethod
    def from_json(cls, obj):
        if not isinstance(obj, dict):
            raise OpaqueError("an OPAQUE record must be an object")
        data = (
            _unb64(obj, "client_public_key", NPK)
            + _unb64(obj, "masking_key", NH)
            + _unb64(obj, "envelope", ENVELOPE_SIZE)
        )
        assert len(data) == REGISTRATION_RECORD_SIZE
        return cls.from_bytes(data, ksf_module.from_json(obj.get("ksf")))

    def __repr__(self):
        return f"<RegistrationRecord {self.ksf}>"


def fake_record(ksf, rng=os.urandom):
    """A record for users that do not exist (RFC 9807 section 6.3.2.2): a
    random client public key, a random masking key, an all-zero envelope."""
    client_public_key = group.scalar_mult_gen(group.random_scalar(rng))
    zero_envelope = Envelope.from_bytes(bytes(ENVELOPE_SIZE))
    return RegistrationRecord(client_public_key, rng(NH), zero_envelope, ksf)


@dataclass(frozen=True, repr=False)
class ServerSetup:
    """The server's long-term secrets (RFC 9807 sections 3.1 and 5):
    oprf_seed (Nh bytes, one for all users, RFC 9807 section 10.9), the AKE
    key pair, the KSF cost new records get, and the one fake record served
    for every unknown user (created once, as section 6.3.2.2 recommends)."""

    oprf_seed: bytes
    server_private_key: bytes
    server_public_key: bytes
    default_ksf: object
    fake_record: RegistrationRecord
    #: The profile (:mod:`twisted_keyx.opaque.profile`): context and KSF
    #: rules; twisted-keyx-v1 for a key file that names none.
    profile: Profile = LEGACY

    @classmethod
    def generate(cls, default_ksf=ksf_module.DEFAULT_ARGON2ID, rng=os.urandom, profile=LEGACY):
        """A fresh setup; in the rfc9807 profile every record (and the fake
        one) has the profile's cost, whatever ``default_ksf``."""
        if profile.rfc:
            default_ksf = profile.ksf
        oprf_seed = rng(OPRF_SEED_SIZE)
        private = group.random_scalar(rng)
        return cls(oprf_seed, private, group.scalar_mult_gen(private), default_ksf,
                   fake_record(default_ksf, rng), profile)

    def check(self):
        """The key pair matches and every size is right."""
        if len(self.oprf_seed) != OPRF_SEED_SIZE:
            raise OpaqueError(f"oprf_seed must be {OPRF_SEED_SIZE} bytes")
        private = group.deserialize_scalar(self.server_private_key)
        if group.is_zero_scalar(private) or (
            group.scalar_mult_gen(private) != self.server_public_key
        ):
            raise OpaqueError("the server's private and public keys do not match")
        if self.profile.rfc and (self.default_ksf != self.profile.ksf
                                 or self.fake_record.ksf != self.profile.ksf):
            raise OpaqueError("in the rfc9807 profile the default and fake record's cost "
                              "are the profile's")
        return self

    def to_json(self):
        return {
            "format": SETUP_FORMAT,
            "oprf_seed": _b64(self.oprf_seed),
            "server_private_key": _b64(self.server_private_key),
            "server_public_key": _b64(self.server_public_key),
            "default_ksf": self.default_ksf.to_json(),
            "fake_record": self.fake_record.to_json(),
            "profile": self.profile.to_json(),
        }

    @classmethod
    def from_json(cls, obj):
        if not isinstance(obj, dict) or obj.get("format") != SETUP_FORMAT:
            raise OpaqueError(f"not an OPAQUE server setup ({SETUP_FORMAT})")
        return cls(
            _unb64(obj, "oprf_seed", OPRF_SEED_SIZE),
            _unb64(obj, "server_private_key", group.SCALAR_SIZE),
            group.deserialize_element(_unb64(obj, "server_public_key", NPK)),
            ksf_module.from_json(obj.get("default_ksf")),
            RegistrationRecord.from_json(obj.get("fake_record")),
            Profile.from_json(obj.get("profile")),
        ).check()

    def dumps(self):
        """The file's contents (the daemon keeps them mode 0600)."""
        return (json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n").encode("ascii")

    @classmethod
    def loads(cls, data):
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise OpaqueError("the OPAQUE server setup is not JSON") from None
        except RecursionError:  # e.g. 30,000 "[": one line, never a traceback
            raise OpaqueError("the OPAQUE server setup is nested too deeply") from None
        return cls.from_json(obj)

    def __repr__(self):
        return f"<ServerSetup public key {self.server_public_key.hex()[:16]}...>"
