"""Registration (RFC 9807 section 5): the client blinds its password, the
server evaluates the OPRF under the user's key, the client builds its
envelope and uploads the record.

``keyx-admin adduser --scheme opaque`` runs both halves in one process with
:func:`register`; the halves are separate so a network registration could
use them later.
"""

import os

from twisted_keyx.opaque import credentials, envelope, oprf
from twisted_keyx.opaque._password import password_bytes
from twisted_keyx.opaque.errors import OpaqueError
from twisted_keyx.opaque.ksf import DEFAULT_ARGON2ID
from twisted_keyx.opaque.messages import RegistrationRequest, RegistrationResponse
from twisted_keyx.opaque.records import RegistrationRecord


class RegistrationClient:
    """The client's half: :meth:`start` gives the RegistrationRequest
    (CreateRegistrationRequest, section 5.2.1); :meth:`finish` takes the
    RegistrationResponse and gives (record, export_key)
    (FinalizeRegistrationRequest, section 5.2.3)."""

    def __init__(self, password, ksf=DEFAULT_ARGON2ID, rng=os.urandom,
                 server_identity=None, client_identity=None):
        self._password = password_bytes(password)
        self._ksf = ksf
        self._rng = rng
        self._server_identity = server_identity
        self._client_identity = client_identity
        self._blind = None
        self._finished = False

    def start(self):
        if self._blind is not None or self._finished:
            raise OpaqueError("registration already started")
        self._blind, blinded = oprf.blind(self._password, self._rng)
        return RegistrationRequest(blinded).to_bytes()

    def finish(self, response):
        if self._blind is None:
            raise OpaqueError("registration not started or already finished")
        blind, self._blind, self._finished = self._blind, None, True
        response = RegistrationResponse.from_bytes(response)
        rwd = credentials.randomized_password(
            self._password, blind, response.evaluated_message, self._ksf
        )
        env, client_public_key, masking_key, export_key = envelope.store(
            rwd, response.server_public_key, self._server_identity, self._client_identity,
            self._rng,
        )
        return RegistrationRecord(client_public_key, masking_key, env, self._ksf), export_key


def registration_response(server_setup, request, credential_identifier):
    """CreateRegistrationResponse (RFC 9807 section 5.2.2): the bytes of the
    RegistrationResponse for a RegistrationRequest's bytes."""
    request = RegistrationRequest.from_bytes(request)
    key = credentials.oprf_key(server_setup.oprf_seed, credential_identifier)
    evaluated = oprf.blind_evaluate(key, request.blinded_message)
    return RegistrationResponse(evaluated, server_setup.server_public_key).to_bytes()


def register(password, server_setup, credential_identifier, ksf=None, rng=os.urandom):
    """Both halves in one process: (record, export_key).  ``ksf`` defaults
    to the server's default, which is also what fake records use, so the
    record's cost does not single its user out (docs/protocols.rst, OPAQUE)."""
    ksf = ksf or server_setup.profile.registration_ksf(server_setup.default_ksf)
    client = RegistrationClient(password, ksf, rng)
    response = registration_response(server_setup, client.start(), credential_identifier)
    return client.finish(response)
