"""Credential retrieval and the OPRF key (RFC 9807 sections 5.2 and 6.3.2).

These are the RFC's functions one for one; the registration and login
objects in :mod:`twisted_keyx.opaque.registration` and
:mod:`twisted_keyx.opaque.login` call them in order.
"""

from twisted_keyx.opaque import envelope as envelope_module
from twisted_keyx.opaque import group, oprf, primitives
from twisted_keyx.opaque.errors import OpaqueError
from twisted_keyx.opaque.messages import MASKED_RESPONSE_SIZE, CredentialResponse, Envelope
from twisted_keyx.opaque.primitives import NH, NN, NOK, NPK

_OPRF_KEY_INFO = b"OPAQUE-DeriveKeyPair"


def oprf_key(oprf_seed, credential_identifier):
    """seed = Expand(oprf_seed, credential_identifier || "OprfKey", Nok);
    DeriveKeyPair(seed, "OPAQUE-DeriveKeyPair") (RFC 9807 section 5.2.2).
    A user name given as text is its UTF-8."""
    if isinstance(credential_identifier, str):
        credential_identifier = credential_identifier.encode("utf-8")
    if not isinstance(credential_identifier, bytes) or len(credential_identifier) > 0xFFFF:
        raise OpaqueError("the credential identifier must be bytes, at most 65535")
    seed = primitives.expand(oprf_seed, credential_identifier + b"OprfKey", NOK)
    return oprf.derive_secret_key(seed, _OPRF_KEY_INFO)


def randomized_password(password, blind, evaluated_element, ksf):
    """oprf_output = Finalize(password, blind, evaluated_element);
    randomized_password = Extract("", oprf_output || Stretch(oprf_output))
    (RFC 9807 sections 5.2.3 and 6.3.2.3)."""
    oprf_output = oprf.finalize(password, blind, evaluated_element)
    return primitives.extract(b"", oprf_output + ksf.stretch(oprf_output))


def _pad(masking_key, masking_nonce):
    return primitives.expand(masking_key, masking_nonce + b"CredentialResponsePad",
                             MASKED_RESPONSE_SIZE)


def create_credential_response(blinded_element, server_public_key, record,
                               credential_identifier, oprf_seed, rng):
    """CreateCredentialResponse (RFC 9807 section 6.3.2.2).  A fake record
    goes through exactly the same steps."""
    evaluated = oprf.blind_evaluate(oprf_key(oprf_seed, credential_identifier), blinded_element)
    masking_nonce = rng(NN)
    masked = primitives.xor(
        _pad(record.masking_key, masking_nonce), server_public_key + record.envelope.to_bytes()
    )
    return CredentialResponse(evaluated, masking_nonce, masked)


def recover_credentials(password, blind, response, ksf, server_identity, client_identity):
    """RecoverCredentials (RFC 9807 section 6.3.2.3): (client_private_key,
    cleartext_credentials, export_key); :class:`OpaqueError` if the
    unmasked server key is not a valid element or the envelope fails."""
    rwd = randomized_password(password, blind, response.evaluated_message, ksf)
    masking_key = primitives.expand(rwd, b"MaskingKey", NH)
    unmasked = primitives.xor(_pad(masking_key, response.masking_nonce), response.masked_response)
    try:
        server_public_key = group.deserialize_element(unmasked[:NPK])
    except OpaqueError:
        # What a wrong password gives almost always: say that.
        raise OpaqueError("the envelope did not verify (wrong password or server)") from None
    env = Envelope.from_bytes(unmasked[NPK:])
    return envelope_module.recover(rwd, server_public_key, env, server_identity, client_identity)
