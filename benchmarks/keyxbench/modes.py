"""What the benchmark can measure: one entry of :data:`MODES` per mode.

A mode is a server (started by the benchmark itself, pinned to the server
core) and the client the load generator runs against it.  Adding a mode is
one entry; ``x25519`` below is one (``twistd keyx --group x25519``), and
``dh-hostkey``/``x25519-hostkey`` another pair: the daemon makes its host key
in the run's directory on first start, and the client
(keyxbench.clients.HostKeyDHSteps) asks for the signature and verifies it.

:data:`RATIOS` lists the comparisons printed at the end, by mode name
(``floor``: cryptography's own work, :func:`keyxbench.floor.cryptography_floor`;
``floor:eke`` and ``floor:opaque``: the server's side of one login and its
quit, :func:`keyxbench.floor.eke_floor` and :func:`keyxbench.floor.opaque_floor`).
"""

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass, field

from keyxbench import process, project
from keyxbench.clients import EKE_PASSWORD, EKE_USER, OPAQUE_PASSWORD, OPAQUE_USER


@dataclass
class Running:
    """A started server: its process, and what the client needs to know."""

    server: process.ServerProcess
    directory: str
    client_options: dict = field(default_factory=dict)

    def stop(self):
        """Stop it; return (its log's text, its last stdout line or "")."""
        log = self.server.stop()
        out = self.server.process.stdout.read() if self.server.process.stdout else ""
        shutil.rmtree(self.directory, ignore_errors=True)
        return log, out.strip().splitlines()[-1] if out.strip() else ""


def bench_users(directory):
    """The run's user file and OPAQUE key file, in ``directory``: one EKE
    user whose scrypt is cheap, and one OPAQUE user registered (as
    ``keyx-admin adduser --scheme opaque`` does) with a key file whose
    default Argon2id is the cheapest (so the fake record's is too).  The
    server never runs scrypt or Argon2id; cheap ones keep the load
    generator from being the limit.  Returns the options for both files."""
    users, key = os.path.join(directory, "users.json"), os.path.join(directory, "opaque-key")
    setup = project.create_opaque_key_file(key)
    project.write_user_file(users, EKE_USER, EKE_PASSWORD,
                            [project.opaque_bench_user(OPAQUE_USER, OPAQUE_PASSWORD, setup)])
    return ["--users", users, "--opaque-key", key]


class Keyx:
    """``twistd -n keyx`` serving every handshake on ports of its own; the
    load goes to the one named by ``endpoint`` (``--dh``, ``--dh-raw``,
    ``--eke``, ``--opaque``).  ``options`` are more ``twistd keyx`` options; ``prepare``,
    if given, makes files in the run's directory and returns more options.

    twistd finds the dropin ``twisted/plugins/keyx_plugin.py`` of this
    checkout through PYTHONPATH (keyxbench.process.environment), so no
    install is needed.
    """

    is_ours = True

    def __init__(self, endpoint, *options, prepare=None, workers=None, pinned=None):
        self.endpoint = endpoint
        self.options = list(options)
        self.prepare = prepare
        #: ``--workers``: with 2 or more the server is not pinned (each
        #: worker may run on any core, the load generator's included)...
        self.workers = workers
        #: ... unless ``pinned``: the parent and every worker on the server
        #: core, which measures what the workers cost, not what they gain.
        #: ``pinned=False`` leaves a single process unpinned too (Independent).
        self.pinned = pinned

    def start(self, group, run_options=(), profile=None):
        directory = tempfile.mkdtemp(prefix="keyx-bench-")
        # Every endpoint on a free port (--opaque too: its default, tcp:8089,
        # may be another run's on a shared machine).
        ports = {name: process.free_port() for name in ("--dh", "--dh-raw", "--eke", "--opaque")}
        log = os.path.join(directory, "twistd.log")
        pinned = self.pinned if self.pinned is not None else (self.workers or 1) < 2
        pin = process.pin_prefix(process.SERVER_CORE) if pinned else []
        command = pin + [
            sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "-n", "--logfile", log, "--pidfile", "", "--reactor", "epoll",
        ]
        if profile:
            command += ["--profiler", "cprofile", "--profile", profile, "--savestats"]
        command += ["keyx"]
        for name, port in ports.items():
            command += [name, f"tcp:{port}:interface=127.0.0.1:backlog=1024"]
        if self.workers:
            command += ["--workers", str(self.workers)]
        command += [*bench_users(directory), "--group", group, *self.options, *run_options]
        if self.prepare is not None:
            command += self.prepare(directory)
        # The daemon raises its own soft limit on open files at start-up.
        server = process.ServerProcess(command, ports[self.endpoint], cwd=directory, log=log)
        return Running(server, directory)


class Independent:
    """``copies`` separate daemons (``server``, a :class:`Keyx` that is not
    pinned), each one process on ports of its own, the load generator's
    clients spread over them, CPU summed: what as many processes as
    ``--workers N`` has cost on this machine without sharing anything, the
    peer ``--workers N`` is measured against."""

    is_ours = True
    workers = None

    def __init__(self, server, copies=2):
        self.server = server
        self.copies = copies

    def start(self, group, run_options=(), profile=None):
        runs = []
        try:
            for _ in range(self.copies):
                runs.append(self.server.start(group, run_options))
        except BaseException:
            for running in runs:
                running.stop()
            raise
        return RunningSet(runs)


class RunningSet:
    """Several :class:`Running` servers as one (:class:`Independent`)."""

    def __init__(self, runs):
        self.runs = runs
        self.server = process.ServerSet(running.server for running in runs)
        self.client_options = runs[0].client_options

    def stop(self):
        logs = [running.stop()[0] for running in self.runs]
        return "".join(logs), ""


class NaivePeer:
    """``benchmarks/peer_naive.py``, serving the daemon's own message 4."""

    is_ours = False

    def start(self, group, run_options=(), profile=None):
        directory = tempfile.mkdtemp(prefix="keyx-bench-naive-")
        params = os.path.join(directory, "params.pem")
        with open(params, "wb") as f:
            f.write(project.parameters_message(project.named_group(group)))
        port, log = process.free_port(), os.path.join(directory, "naive.log")
        command = process.pin_prefix(process.SERVER_CORE) + [
            sys.executable, os.path.join(process.BENCHMARKS, "peer_naive.py"),
            "--port", str(port), "--params", params, "--log", log]
        return Running(process.ServerProcess(command, port, log=log), directory)


class TLSPeer:
    """``benchmarks/peer_tls.py``; the client verifies its certificate.
    ``groups``: the server's only key-exchange groups (``--groups``), which
    the client offers alone as well."""

    is_ours = False

    def __init__(self, groups=None):
        self.groups = groups

    def start(self, group, run_options=(), profile=None):
        import subprocess

        directory = tempfile.mkdtemp(prefix="keyx-bench-tls-")
        port = process.free_port()
        command = process.pin_prefix(process.SERVER_CORE) + [
            sys.executable, os.path.join(process.BENCHMARKS, "peer_tls.py"),
            "--port", str(port), "--directory", directory,
            *(["--groups", self.groups] if self.groups else [])]
        server = process.ServerProcess(command, port, stdout=subprocess.PIPE)
        options = {"tls_ca": os.path.join(directory, "cert.pem")}
        if self.groups:
            options["tls_groups"] = self.groups
        return Running(server, directory, options)


class Canned:
    """keyxbench.canned: replies made in advance (the framework alone); with
    ``lines``, that many LF lines each way, then the server closes."""

    is_ours = False

    def __init__(self, lines=0):
        self.lines = lines

    def start(self, group, run_options=(), profile=None):
        port = process.free_port()
        command = process.python_module("keyxbench.canned", "--port", port, "--group", group,
                                        "--lines", self.lines, core=process.SERVER_CORE)
        return Running(process.ServerProcess(command, port), tempfile.mkdtemp())


@dataclass
class Mode:
    #: What the output calls it; ``{group}`` is replaced by the run's group.
    label: str
    server: object
    #: The load generator's client (keyxbench.clients.CLIENTS).
    client: str
    #: The group of the run, when the mode fixes it (else ``--group``).
    group: str | None = None
    #: More for the load generator (:func:`keyxbench.load.drive`): ``sources``.
    load_options: dict = field(default_factory=dict)


#: Every mode, in the order a run measures them.
MODES = {
    "canned": Mode("framework only (canned replies, no crypto, no log)", Canned(), "dh-framed"),
    "dh": Mode("DH framed, {group} (twistd keyx)", Keyx("--dh"), "dh-framed"),
    "raw": Mode("DH raw, {group} (twistd keyx)", Keyx("--dh-raw"), "dh-raw"),
    "eke": Mode("EKE, handshake + quit (twistd keyx)", Keyx("--eke"), "eke"),
    "opaque": Mode("OPAQUE, login + quit (twistd keyx)", Keyx("--opaque"), "opaque"),
    # The I/O of an OPAQUE login and quit (3 lines each way) and of EKE's
    # (5), with canned replies: run after "canned" when opaque or eke is.
    "canned-opaque": Mode("framework only, 3 lines each way (OPAQUE's I/O, canned)",
                          Canned(lines=3), "lines-3"),
    "canned-eke": Mode("framework only, 5 lines each way (EKE's I/O, canned)",
                       Canned(lines=5), "lines-5"),
    "naive": Mode("naive Twisted DH server, {group} (peer_naive.py)", NaivePeer(), "dh-framed"),
    # Clients from many loopback addresses: each source makes a handshake or
    # two a round, so the daemon logs every one (its per-source summaries,
    # twisted_keyx.service.limits.PeerLines, never start), as the naive server does.
    "dh-sources": Mode("DH framed, {group} (twistd keyx), clients from 16384 sources",
                       Keyx("--dh"), "dh-framed", load_options={"sources": 16384}),
    "naive-sources": Mode("naive Twisted DH server, {group}, clients from 16384 sources",
                          NaivePeer(), "dh-framed", load_options={"sources": 16384}),
    "tls": Mode("Twisted TLS 1.3, Ed25519 + X25519 (peer_tls.py)", TLSPeer(), "tls"),
    "x25519": Mode("DH framed, x25519 (twistd keyx)", Keyx("--dh"), "dh-framed", group="x25519"),
    # With a host key (made by the daemon in its directory on first start),
    # the client asking for it and verifying message 7 (docs/hostkey.rst).
    "dh-hostkey": Mode("DH framed, {group}, host key signed (twistd keyx)", Keyx("--dh"),
                       "dh-framed-hostkey"),
    "x25519-hostkey": Mode("DH framed, x25519, host key signed (twistd keyx)", Keyx("--dh"),
                           "dh-framed-hostkey", group="x25519"),
    # Post-quantum (issue 23): X-Wing with the host key, beside TLS 1.3
    # negotiating the hybrid X25519MLKEM768 (pyOpenSSL's client on
    # cryptography's OpenSSL, which has ML-KEM; the ssl module's has not).
    "xwing": Mode("DH framed, xwing (twistd keyx)", Keyx("--dh"), "dh-framed", group="xwing"),
    "xwing-hostkey": Mode("DH framed, xwing, host key signed (twistd keyx)", Keyx("--dh"),
                          "dh-framed-hostkey", group="xwing"),
    "tls-hybrid": Mode("Twisted TLS 1.3, Ed25519 + X25519MLKEM768 (peer_tls.py --groups)",
                       TLSPeer(groups="X25519MLKEM768"), "tls-pyopenssl"),
    # --workers: CPU per handshake summed over the parent and its workers.
    # With 2 workers the server is not pinned: on 2 cores the workers and the
    # load generator compete for them.
    "dh-w1": Mode("DH framed, {group} (twistd keyx --workers 1)", Keyx("--dh", workers=1),
                  "dh-framed"),
    "dh-w2": Mode("DH framed, {group} (twistd keyx --workers 2, unpinned)",
                  Keyx("--dh", workers=2), "dh-framed"),
    # The parent and both workers on the server core: no core gained, so
    # what CPU per handshake grows by is what the workers cost (the relay
    # of their log lines, two processes on one core), without the fight for
    # the load generator's core that dh-w2 has on a 2-core machine.
    "dh-w2-core0": Mode("DH framed, {group} (twistd keyx --workers 2, all on the server core)",
                        Keyx("--dh", workers=2, pinned=True), "dh-framed"),
    "x25519-w1": Mode("DH framed, x25519 (twistd keyx --workers 1)", Keyx("--dh", workers=1),
                      "dh-framed", group="x25519"),
    # Two single-process daemons side by side, unpinned like --workers 2:
    # what two processes cost on this machine when they share nothing.
    "dh-2x1": Mode("DH framed, {group} (two separate twistd keyx, unpinned)",
                   Independent(Keyx("--dh", pinned=False)), "dh-framed"),
    "x25519-2x1": Mode("DH framed, x25519 (two separate twistd keyx, unpinned)",
                       Independent(Keyx("--dh", pinned=False)), "dh-framed", group="x25519"),
    "x25519-w2": Mode("DH framed, x25519 (twistd keyx --workers 2, unpinned)",
                      Keyx("--dh", workers=2), "dh-framed", group="x25519"),
    "x25519-w2-core0": Mode("DH framed, x25519 (twistd keyx --workers 2, all on the server core)",
                            Keyx("--dh", workers=2, pinned=True), "dh-framed", group="x25519"),
}

#: Modes run when ``--modes`` is not given ("canned" always runs first).
DEFAULT_MODES = ("dh", "raw", "eke", "naive", "tls")

#: The comparisons printed: (what it says, numerator, denominator), each a
#: mode's server CPU per handshake, or "floor" (cryptography's own work for
#: the run's group; "floor:x25519" for a group a mode fixes).
RATIOS = (
    ("ours / naive server CPU per handshake (target <= 1)", "dh", "naive"),
    ("ours / naive, clients from 16384 sources (both log every handshake)", "dh-sources",
     "naive-sources"),
    ("floor / ours (target >= 0.75)", "floor", "dh"),
    ("floor / naive", "floor", "naive"),
    ("TLS 1.3 / ours", "tls", "dh"),
    ("ours raw / ours framed", "raw", "dh"),
    ("floor:x25519 / ours x25519", "floor:x25519", "x25519"),
    ("ours x25519 / TLS 1.3 (target <= 0.67, once authenticated)", "x25519", "tls"),
    ("TLS 1.3 / ours x25519 with host key (target >= 1.5)", "tls", "x25519-hostkey"),
    ("TLS 1.3 / ours ffdhe with host key", "tls", "dh-hostkey"),
    ("ours xwing with host key / TLS 1.3 X25519MLKEM768 (target <= 0.67)", "xwing-hostkey",
     "tls-hybrid"),
    ("ours xwing with host key / ours x25519 with host key", "xwing-hostkey", "x25519-hostkey"),
    ("TLS 1.3 X25519MLKEM768 / TLS 1.3 X25519", "tls-hybrid", "tls"),
    ("floor:xwing / ours xwing", "floor:xwing", "xwing"),
    ("--workers 2 / --workers 1, CPU per handshake (target <= 1)", "dh-w2", "dh-w1"),
    ("--workers 2 on one core / --workers 1, CPU per handshake (target <= 1)",
     "dh-w2-core0", "dh-w1"),
    ("x25519 --workers 2 / x25519, CPU per handshake", "x25519-w2", "x25519"),
    ("x25519 --workers 2 / --workers 1, CPU per handshake", "x25519-w2", "x25519-w1"),
    ("--workers 2 / two separate daemons, CPU per handshake", "dh-w2", "dh-2x1"),
    ("two separate daemons / one, CPU per handshake", "dh-2x1", "dh"),
    ("x25519 --workers 2 / two separate daemons, CPU per handshake", "x25519-w2", "x25519-2x1"),
    ("x25519 two separate daemons / one, CPU per handshake", "x25519-2x1", "x25519"),
    ("x25519 --workers 2 on one core / x25519, CPU per handshake", "x25519-w2-core0", "x25519"),
    # floor:eke and floor:opaque: the server's machine and the chat's quit,
    # in process (keyxbench.floor.eke_floor, keyxbench.floor.opaque_floor).
    ("EKE: ours / floor:eke, server CPU per login (target <= 1.5)", "eke", "floor:eke"),
    ("OPAQUE: ours / floor:opaque, server CPU per login (target <= 1.5)", "opaque",
     "floor:opaque"),
    ("EKE: canned-eke / floor:eke (so the best ours / floor:eke is 1 + this)", "canned-eke",
     "floor:eke"),
    ("OPAQUE: canned-opaque / floor:opaque (so the best ours / floor:opaque is 1 + this)",
     "canned-opaque", "floor:opaque"),
    ("OPAQUE / EKE, server CPU per login", "opaque", "eke"),
)
