"""EKE (scrypt) as a password scheme of the user file (:mod:`twisted_keyx.core.schemes`):
records without a ``"scheme"`` field are these."""

from twisted_keyx.eke import records as userstore


class EKEScheme:
    name = "eke"
    description = "EKE (scrypt; the stored key is password-equivalent)"

    def parse(self, name, fields):
        return userstore.eke_record(name, fields)

    def serialise(self, record):
        return userstore.eke_fields(record)

    def describe(self, record):
        return f"eke, {record.kdf}"


SCHEME = EKEScheme()
