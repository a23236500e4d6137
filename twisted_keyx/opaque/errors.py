"""The one exception of the OPAQUE layer (docs/protocols.rst, OPAQUE)."""


class OpaqueError(Exception):
    """A message, key, record or parameter is unusable, or a MAC did not
    verify.  Every failure a peer can cause is this one type; its text says
    what failed, never a secret, and callers should answer a peer with one
    generic failure whatever the text (RFC 9807 section 9.3, error
    considerations)."""


class KeyStretchingFailed(OpaqueError):
    """The key stretching function (Argon2id) failed on this machine: not
    enough memory, or the library refused the cost.  Nothing the peer did;
    never reported as a wrong password or a lost connection."""


class ServerMacFailed(OpaqueError):
    """Client side: the password opened the envelope (the server holds the
    record and the OPRF key), but the server's MAC in KE2 does not verify:
    the two sides disagree on the context (another profile), not on the
    password."""
