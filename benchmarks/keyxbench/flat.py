"""Ours without its layers: the daemon's DH checks, transcript, session key
and finished line in the naive server's shape, one ``Int32StringReceiver``
method (no connection policy, session adapter, framing object or state
machine).  Not a server to run: what ``bench_instructions.py --servers
ours,naive,flat`` counts to say what our checks cost apart from our
layers (docs/benchmarks.rst, "Where issue 12's targets stand").

Same wire as ``twistd keyx --dh`` without a host key: messages in order or
``I do not understand you, hanging up``; the client's key read and checked
by the group (``load_peer_key``: strict PEM/DER, same group, range,
subgroup) or ``Invalid client public key, hanging up``; the transcript of
the six messages, the session key (HKDF) and the daemon's finished line,
its text made before twisted.logger sees it.
"""

from twisted.protocols.basic import Int32StringReceiver

from keyxbench import project

_m = project.messages
UNEXPECTED = b"I do not understand you, hanging up"
INVALID_KEY = b"Invalid client public key, hanging up"


def flat_protocol(group, log):
    """The protocol class, for ``group``, logging to ``log`` (a Logger)."""
    parameters = project.parameters_message(group)

    class FlatDH(Int32StringReceiver):
        MAX_LENGTH = len(_m.CLIENT_KEY_PREFIX) + group.max_public_key_message
        #: Messages received so far (the next one expected: Hello, Params?, the key).
        received = 0

        def connectionMade(self):
            self.transcript = project.Transcript()

        def stringReceived(self, message):
            peer_key = None
            if self.received == 0 and message == _m.HELLO:
                reply = _m.HEY_THERE
            elif self.received == 1 and message == _m.PARAMS_REQUEST:
                reply = parameters
            elif self.received == 2 and message.startswith(_m.CLIENT_KEY_PREFIX):
                try:
                    peer_key = group.load_peer_key(message[len(_m.CLIENT_KEY_PREFIX):])
                except project.InvalidPublicKey:
                    self.hangUp(INVALID_KEY)
                    return
                private_key = group.generate_private_key()
                reply = _m.SERVER_KEY_PREFIX + group.public_key_pem(private_key)
            else:
                self.hangUp(UNEXPECTED)
                return
            self.transcript.add(message)
            self.transcript.add(reply)
            self.sendString(reply)
            self.received += 1
            if peer_key is not None:
                self.finish(group.exchange(private_key, peer_key))

        def finish(self, shared_secret):
            session_key = project.derive_session_key(
                shared_secret, _m.SESSION_KEY_LABEL, self.transcript.digest())
            peer = project.describe_peer(self.transport.getPeer())
            key = project.session_key_fingerprint(session_key)
            log.info(project.literal(f"DH handshake with {peer} finished ({group.name}); "
                                     f"session key fingerprint {key}"),
                     peer=peer, group=group.name, fingerprint=key)
            self.transport.loseConnection()

        def hangUp(self, reply):
            self.sendString(reply)
            self.transport.loseConnection()

    return FlatDH
