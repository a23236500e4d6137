"""The OPAQUE server setup behind
:class:`~twisted_keyx.core.interfaces.IServerSetupStore`: the key file of
``--opaque-key`` (:func:`twisted_keyx.opaque.scheme.load_key_file`), read
in a thread, and a setup held in memory (tests, one-process tools).

The daemon reads the setup once, at start-up, through the store the
configuration names (:func:`twisted_keyx.opaque.entry.configure`): this
key file, or ``--store``'s database
(:class:`twisted_keyx.service.pgstore.ConnectionSetupStore`).
"""

import os

from twisted.internet import defer, threads
from zope.interface import implementer

from twisted_keyx.core.atonce import at_once, result_now
from twisted_keyx.core.interfaces import IServerSetupStore, StoreUnavailable
from twisted_keyx.opaque.scheme import KeyFileError, load_key_file, write_new_key_file


@implementer(IServerSetupStore)
class KeyFileSetup:
    """The setup in the key file at ``path``: None if there is none, or
    :class:`~twisted_keyx.core.interfaces.StoreUnavailable` if it cannot be
    used (too open, unreadable, not a setup), with the file's own words.
    ``run_in_thread`` (default: a thread of the reactor's pool) runs the
    file's reads and writes: :func:`at_once` at start-up."""

    def __init__(self, path, run_in_thread=None):
        self.path = path
        self.where = path
        self._run = run_in_thread if run_in_thread is not None else threads.deferToThread

    def load(self):
        return self._run(self._load)

    def _load(self):
        if not os.path.exists(self.path):
            return None
        try:
            return load_key_file(self.path)
        except KeyFileError as e:
            raise StoreUnavailable(str(e)) from None

    def create(self, setup):
        return self._run(self._create, setup)

    def _create(self, setup):
        try:
            return write_new_key_file(self.path, setup)
        except KeyFileError as e:
            if not os.path.exists(self.path):
                raise StoreUnavailable(str(e)) from None
        return self._load()  # made by someone else first: theirs


@implementer(IServerSetupStore)
class SetupInMemory:
    """A setup already loaded (or None)."""

    where = "memory"

    def __init__(self, setup):
        self.setup = setup

    def load(self):
        return defer.succeed(self.setup)

    def create(self, setup):
        if self.setup is None:
            self.setup = setup
        return defer.succeed(self.setup)


__all__ = ["KeyFileSetup", "SetupInMemory", "at_once", "result_now"]
