"""The entry points of the ``keyx-client`` and ``keyx-admin`` scripts.

Ctrl-C is one line and exit status 130 at any moment, also in the first
fraction of a second, while Python imports Twisted and cryptography: this
module imports nothing else before it can catch KeyboardInterrupt, and
imports the command's module inside the ``try``.  (Only a Ctrl-C before
Python has installed its own SIGINT handler, in the first milliseconds of
the interpreter or while it runs ``site``, still ends the process by the
signal or with Python's own traceback: that is before any code of ours.)
"""

import importlib
import sys

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


def _run(module, program):
    try:
        return importlib.import_module(module).main()
    except KeyboardInterrupt:
        sys.stderr.write(f"{program}: interrupted\n")
        return EXIT_INTERRUPTED


def keyx_client():
    return _run("twisted_keyx.cli.client", "keyx-client")


def keyx_admin():
    return _run("twisted_keyx.cli.admin", "keyx-admin")


def keyx_lab():
    return _run("twisted_keyx.cli.lab", "keyx-lab")
