"""``keyx-admin``: make the files the daemon reads.

Exit status: 0 success, 1 failure (message on stderr), 2 usage error.
"""

import argparse
import os
import sys
import threading
import time

from twisted_keyx import __version__, ffdh
from twisted_keyx.fileutil import write_file_atomically


class AdminError(Exception):
    """A failure to report in one line on stderr."""


def _with_progress(work, label, err, interval=0.5):
    """Run ``work()`` in a thread while showing elapsed time on ``err``."""
    outcome = {}

    def target():
        try:
            outcome["value"] = work()
        except BaseException as e:  # handed to the caller below
            outcome["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    started = time.monotonic()
    thread.start()
    interactive = getattr(err, "isatty", lambda: False)()
    ticks = 0
    while thread.is_alive():
        thread.join(interval)
        ticks += 1
        elapsed = time.monotonic() - started
        if interactive:
            err.write(f"\r{label}... {elapsed:4.0f} s")
        elif ticks % 10 == 0:
            err.write(f"{label}... {elapsed:.0f} s\n")
        err.flush()
    elapsed = time.monotonic() - started
    prefix = "\r" if interactive else ""
    if "error" in outcome:
        err.write(f"{prefix}{label}: failed after {elapsed:.1f} s\n")
        raise outcome["error"]
    err.write(f"{prefix}{label}: done in {elapsed:.1f} s\n")
    return outcome["value"]


def cmd_genparams(args, out, err):
    # Everything that can be checked is checked before the slow part.
    if os.path.exists(args.output) and not args.force:
        raise AdminError(f"{args.output} exists; use --force to replace it")
    directory = os.path.dirname(os.path.abspath(args.output))
    if not os.path.isdir(directory):
        raise AdminError(f"cannot write {args.output}: no directory {directory}")
    label = f"generating a {args.bits}-bit safe prime (this takes a while)"
    try:
        pem = _with_progress(lambda: ffdh.generate_parameters_pem(args.bits), label, err)
        write_file_atomically(args.output, pem)
    except ffdh.ParameterError as e:
        raise AdminError(str(e)) from None
    except OSError as e:
        raise AdminError(f"cannot write {args.output}: {e.strerror}") from None
    out.write(f"wrote {args.output}; use it with: twistd -n keyx --params {args.output}\n")


def _bits(text):
    try:
        bits = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not ffdh.MIN_BITS <= bits <= ffdh.MAX_BITS:
        raise argparse.ArgumentTypeError(
            f"must be between {ffdh.MIN_BITS} and {ffdh.MAX_BITS}, not {bits}")
    return bits


def build_parser():
    parser = argparse.ArgumentParser(
        prog="keyx-admin", description="Make the files the twisted-keyx daemon reads."
    )
    parser.add_argument("--version", action="version", version=f"twisted-keyx {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    genparams = commands.add_parser(
        "genparams",
        help="generate a DH parameter file for twistd keyx --params",
        description=(
            "Generate fresh Diffie-Hellman parameters (a safe prime, generator 2) "
            "and write them as PEM 'DH PARAMETERS', the format of openssl dhparam. "
            "This takes tens of seconds at 2048 bits and minutes above. The "
            "built-in RFC 7919 groups are faster to use and as safe; a custom "
            "group is for study."
        ),
    )
    genparams.add_argument("--bits", type=_bits, default=2048,
                           help=f"size of the prime, {ffdh.MIN_BITS} to {ffdh.MAX_BITS} "
                                "[default: 2048]")
    genparams.add_argument("-o", "--output", required=True, metavar="FILE",
                           help="where to write the parameters")
    genparams.add_argument("--force", action="store_true", help="replace FILE if it exists")
    genparams.set_defaults(run=cmd_genparams)
    return parser


def main(argv=None, out=None, err=None):
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    args = build_parser().parse_args(argv)
    try:
        args.run(args, out, err)
    except AdminError as e:
        err.write(f"keyx-admin: {e}\n")
        return 1
    except KeyboardInterrupt:
        err.write("keyx-admin: interrupted\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
