"""EKE's user records (scrypt salt and parameters, the password key) and
the decoys that stand in for unknown users when they are hidden.

How a record is stored is :mod:`twisted_keyx.eke.scheme` (the user file's
EKE scheme, :mod:`twisted_keyx.core.schemes`); where it is stored is an
:class:`~twisted_keyx.core.interfaces.IUserStore` (the JSON user file,
:mod:`twisted_keyx.service.userfile`).
"""

import os
from dataclasses import dataclass

from twisted_keyx.eke import crypto, messages
from twisted_keyx.eke.messages import MalformedLine


class UserRecordError(ValueError):
    """A stored EKE record that is not usable (the message names the user
    and the field)."""


@dataclass(frozen=True, repr=False)
class UserRecord:
    scheme = "eke"
    name: str
    salt: bytes
    kdf: crypto.ScryptParameters
    #: scrypt(password, salt); for a decoy (see :class:`DecoyUsers`) a key
    #: from the per-process secret, which no password gives.
    key: bytes

    def __repr__(self):
        return f"UserRecord(name={self.name!r}, kdf={self.kdf}, <key>)"


def new_user(name, password, kdf=None, random_bytes=crypto.random_bytes):
    """A record for ``name`` and ``password`` (str): fresh salt, derived key,
    with ``kdf`` or :data:`~twisted_keyx.eke.crypto.DEFAULT_SCRYPT`.
    Raises ValueError for a bad name or an empty password."""
    kdf = kdf if kdf is not None else crypto.DEFAULT_SCRYPT
    messages.check_user_name(name)
    if not password:
        raise ValueError("the password is empty")
    salt = random_bytes(messages.SALT_SIZE)
    key = crypto.derive_password_key(crypto.normalize_password(password), salt, kdf.check())
    return UserRecord(name=name, salt=salt, kdf=kdf, key=key)


def exact_keys(obj, keys, where, error=UserRecordError):
    """Raise ``error`` unless ``obj`` is a JSON object with exactly ``keys``."""
    if not isinstance(obj, dict) or set(obj) != set(keys):
        raise error(f"{where}: expected an object with exactly {', '.join(keys)}")


def _integer(value, where):
    if type(value) is not int:
        raise UserRecordError(f"{where}: not an integer")
    return value


def _base64(value, size, where):
    if not isinstance(value, str):
        raise UserRecordError(f"{where}: not a string")
    try:
        return messages.decode_item(value.encode("ascii"), size)
    except (UnicodeEncodeError, MalformedLine) as e:
        raise UserRecordError(f"{where}: {e}") from None


def eke_record(name, entry):
    """EKE's record from its fields (the scheme's ``parse``)."""
    where = f"user {name!r}"
    exact_keys(entry, ("salt", "kdf", "key"), where)
    kdf = entry["kdf"]
    exact_keys(kdf, ("name", "n", "r", "p"), f"{where}, kdf")
    if kdf["name"] != "scrypt":
        raise UserRecordError(f"{where}: unknown KDF {kdf['name']!r}")
    params = crypto.ScryptParameters(*(_integer(kdf[k], f"{where}, kdf {k}") for k in "nrp"))
    try:
        params.check()
    except ValueError as e:
        raise UserRecordError(f"{where}: {e}") from None
    return UserRecord(
        name=name,
        salt=_base64(entry["salt"], messages.SALT_SIZE, f"{where}, salt"),
        kdf=params,
        key=_base64(entry["key"], crypto.PASSWORD_KEY_SIZE, f"{where}, key"),
    )


def eke_fields(record):
    """The fields stored for an EKE record (the scheme's ``serialise``)."""
    return {
        "salt": messages.encode_item(record.salt).decode("ascii"),
        "kdf": {"name": "scrypt", "n": record.kdf.n, "r": record.kdf.r, "p": record.kdf.p},
        "key": messages.encode_item(record.key).decode("ascii"),
    }


class DecoyUsers:
    """Records for names that are not users (``--hide-unknown-users``): a salt
    from a per-process secret and the name, the default KDF, and a key from
    the secret (so that step 3 opens the box with it as it would a user's:
    the same work, the same time).  The same name gets the same answer for
    as long as the server runs."""

    def __init__(self, secret=None, kdf=crypto.DEFAULT_SCRYPT):
        self._secret = secret if secret is not None else os.urandom(32)
        self._kdf = kdf

    def record_for(self, name):
        return UserRecord(
            name=name, salt=crypto.decoy_salt(self._secret, name), kdf=self._kdf,
            key=crypto.decoy_key(self._secret, name),
        )
