"""EKE (scrypt) as a password scheme of the user file (:mod:`twisted_keyx.core.schemes`):
records without a ``"scheme"`` field are these."""

from twisted_keyx.eke import records as userstore


def new_user(name, password, kdf=None):
    """The record for ``name``: a fresh salt and scrypt(password, salt)."""
    return userstore.new_user(name, password, kdf=kdf)


class EKEScheme:
    name = "eke"
    description = "EKE (scrypt; the stored key is password-equivalent)"
    #: No options of its own for ``keyx-admin adduser``.
    add_user_options = ()

    def parse(self, name, fields):
        return userstore.eke_record(name, fields)

    def serialise(self, record):
        return userstore.eke_fields(record)

    def describe(self, record):
        return f"eke, {record.kdf}"

    def add_user(self, name, password, options, say, store):
        """``keyx-admin adduser``: the new record and how it is described
        (EKE needs no store: a record is all there is)."""
        record = new_user(name, password)
        return record, str(record.kdf)


SCHEME = EKEScheme()
