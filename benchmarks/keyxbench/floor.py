"""The crypto of one handshake, timed in this process (CPU time, one core).

- :func:`cryptography_floor`: cryptography's own work for the server's side
  of one DH handshake (load the client's PEM key with cryptography's loader,
  make a key pair, serialise its public key, exchange): no server can do
  less, so it is "the floor" the servers are compared with;
- :func:`group_crypto`: the same four steps through the project's group
  (``Group.load_peer_key`` adds the strict PEM/DER parse, the same-group and
  range checks and the subgroup check);
- :func:`eke_floor`: the EKE server's side of one login, as the daemon
  runs it without the network: its machine (``EKEServerHandshake``: the
  four steps, each line parsed, RSA-OAEP encryption of Ks, the AES-GCM
  boxes, the transcript, the chat keys) and the chat's ``quit`` (open the
  client's record, seal the reply);
- :func:`opaque_floor`: the same for OPAQUE: ``OPAQUEServerHandshake``
  (the two lines parsed; ``ServerLogin.respond`` and ``finish``: the OPRF
  evaluation, masking, 3DH and the MACs; the transcript, the chat keys) and
  the chat's ``quit``.  These two are comparable: each is the server's
  sans-I/O machine for a real user found in a dict, then the quit;
- :func:`opaque_crypto`: the crypto alone of :func:`opaque_floor`
  (``ServerLogin`` respond and finish, the chat keys, the quit), to show
  what the machine adds.

The client's work between the server's steps is not counted in any of them;
the three login floors are the median of seven slices' means
(:func:`median_of_slices`).
"""

import time
import warnings

from keyxbench import project


def per_call(function, inputs, seconds):
    """CPU seconds per ``function(x)``, cycling through ``inputs`` for about
    ``seconds`` of process time after one warm-up round."""
    for x in inputs:
        function(x)
    runs = 0
    start = time.process_time()
    while time.process_time() - start < seconds:
        for x in inputs:
            function(x)
        runs += len(inputs)
    return (time.process_time() - start) / runs


def median_of_slices(one, seconds, slices=7):
    """Server CPU seconds per login: ``one()`` runs a login and returns the
    server's CPU seconds in it; run for about ``seconds`` of them in
    ``slices`` slices, and take the median slice's mean (a shared machine's
    bursts land in a few slices, not in the median)."""
    one()
    means = []
    for _ in range(slices):
        spent, runs = 0.0, 0
        while spent < seconds / slices:
            spent += one()
            runs += 1
        means.append(spent / runs)
    return sorted(means)[slices // 2]


def _client_keys(group, n=16):
    return [group.public_key_pem(group.generate_private_key()) for _ in range(n)]


def cryptography_floor(group_name=project.DEFAULT_GROUP, seconds=3.0):
    """Seconds of cryptography's own work per server-side handshake."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.utils import CryptographyDeprecationWarning

    group = project.named_group(group_name)
    if group.post_quantum:
        return _kem_floor(group, seconds)
    pems = _client_keys(group)
    pem_format = (serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    if group_name == "x25519":
        from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

        generate = X25519PrivateKey.generate
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            parameters = serialization.load_pem_parameters(project.parameters_message(group))
        generate = parameters.generate_private_key

    def one(pem):
        peer = serialization.load_pem_public_key(pem)
        key = generate()
        key.public_key().public_bytes(*pem_format)
        key.exchange(peer)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        return per_call(one, pems, seconds)


def _kem_floor(group, seconds):
    """cryptography's own work for the server's side of a hybrid KEM
    (X-Wing, mlkem768x25519-sha256): load the two halves of the client's
    key, ML-KEM-768 encapsulation, an ephemeral X25519 key, its public bytes,
    the exchange, and the combiner."""
    from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

    raws = [group.parse_public_key(pem) for pem in _client_keys(group)]

    def one(raw):
        ml = mlkem.MLKEM768PublicKey.from_public_bytes(raw[:1184])
        peer = x25519.X25519PublicKey.from_public_bytes(raw[1184:])
        ephemeral = x25519.X25519PrivateKey.generate()
        ct_x = ephemeral.public_key().public_bytes_raw()
        ss_x = ephemeral.exchange(peer)
        ss_m, ct_m = ml.encapsulate()
        group.combiner(ss_m, ss_x, ct_x, raw[1184:])

    return per_call(one, raws, seconds)


def group_crypto(group_name=project.DEFAULT_GROUP, seconds=3.0):
    """Seconds per server-side handshake of the project's group operations
    (the seam the server's machine calls: load the client's key, encapsulate:
    for DH, a key of its own, its public key and the exchange)."""
    group = project.named_group(group_name)

    def one(pem):
        group.encapsulate(group.load_peer_key(pem))

    return per_call(one, _client_keys(group), seconds)


def _server_login_cpu(client, new_server, check=False):
    """CPU seconds of the server's side of one login (its machine, made by
    ``new_server()``) and of the chat's quit, the client's work not counted;
    with ``check``, a login that did not finish on both sides is an error."""
    eke = project.eke
    line = client.start()
    t = time.process_time()
    server = new_server()
    spent = time.process_time() - t
    while line is not None:
        t = time.process_time()
        reply = server.receive(line)
        spent += time.process_time() - t
        line = client.receive(reply)
    if check and not (server.finished and client.finished):
        raise RuntimeError("the floor's login failed")
    quit_line = eke.ClientChat(client.result).quit()
    t = time.process_time()
    eke.ServerChat(server.result).receive(quit_line)
    return spent + time.process_time() - t


def eke_floor(seconds=3.0):
    """Seconds of server work per EKE handshake and its quit: the server's
    four steps and the chat's quit, timed alone (the client's work between
    them is not counted)."""
    from keyxbench.clients import EKE_PASSWORD, EKE_USER

    eke = project.eke
    crypto = eke.crypto
    users = project.bench_users(EKE_USER, EKE_PASSWORD)
    rsa_pool = [crypto.generate_rsa_key() for _ in range(4)]
    cheap = crypto.KdfLimits(min_memory=1)
    runs = [0]

    def one():
        key = rsa_pool[runs[0] % len(rsa_pool)]
        runs[0] += 1
        client = eke.EKEClientHandshake(EKE_USER, EKE_PASSWORD, kdf_limits=cheap,
                                        rsa_key_factory=lambda: key)
        return _server_login_cpu(client, lambda: eke.EKEServerHandshake(users.get))

    return median_of_slices(one, seconds)


def _opaque_login_parts():
    """(setup, user, ksf limits): a server setup and a user registered with
    it, both at the cheapest Argon2id, as the benchmark's daemon has them."""
    from keyxbench.clients import OPAQUE_PASSWORD, OPAQUE_USER

    setup = project.opaque.ServerSetup.generate(project.cheap_argon2id())
    user = project.opaque_bench_user(OPAQUE_USER, OPAQUE_PASSWORD, setup)
    return setup, user, project.cheap_ksf_limits()


def opaque_floor(seconds=3.0):
    """Seconds of server work per OPAQUE login and its quit: the server's
    machine for a real user and the chat's quit, timed alone."""
    from keyxbench.clients import OPAQUE_PASSWORD, OPAQUE_USER

    opaque = project.opaque
    setup, user, limits = _opaque_login_parts()
    users = {OPAQUE_USER: user}

    def one():
        client = opaque.OPAQUEClientHandshake(OPAQUE_USER, OPAQUE_PASSWORD, ksf_limits=limits)
        return _server_login_cpu(client, lambda: opaque.OPAQUEServerHandshake(setup, users.get),
                                 check=True)

    return median_of_slices(one, seconds)


def opaque_crypto(seconds=3.0):
    """Seconds per OPAQUE login of the server's crypto alone: ``ServerLogin``
    respond and finish, the two chat keys (HKDF-SHA256, over a transcript
    hash made outside the clock) and the quit record (open, seal)."""
    from keyxbench.clients import OPAQUE_PASSWORD, OPAQUE_USER

    opaque, eke = project.opaque, project.eke
    setup, user, limits = _opaque_login_parts()
    name = OPAQUE_USER.encode("utf-8")
    transcript_hash = bytes(32)

    def one():
        client = opaque.ClientLogin(OPAQUE_PASSWORD, ksf_limits=limits)
        ke1 = client.start()
        t = time.process_time()
        server = opaque.ServerLogin(setup, user.record, name)
        ke2 = server.respond(ke1)
        spent = time.process_time() - t
        result = client.finish(ke2)
        client_keys = opaque.derive_chat_keys(result.session_key, transcript_hash,
                                              opaque.CHAT_LABEL)
        quit_line = eke.ClientChat(client_keys).quit()
        t = time.process_time()
        session_key = server.finish(result.ke3)
        keys = opaque.derive_chat_keys(session_key, transcript_hash, opaque.CHAT_LABEL)
        eke.ServerChat(keys).receive(quit_line)
        return spent + time.process_time() - t

    return median_of_slices(one, seconds)
