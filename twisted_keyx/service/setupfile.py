"""The OPAQUE server setup behind
:class:`~twisted_keyx.core.interfaces.IServerSetupStore`: the key file of
``--opaque-key`` (:func:`twisted_keyx.opaque.scheme.load_key_file`), read
in a thread, and a setup held in memory (tests, one-process tools)."""

from twisted.internet import defer, threads
from zope.interface import implementer

from twisted_keyx.core.interfaces import IServerSetupStore, StoreUnavailable
from twisted_keyx.opaque.scheme import KeyFileError, load_key_file


@implementer(IServerSetupStore)
class KeyFileSetup:
    """The setup in the key file at ``path``: None if there is none, or
    :class:`~twisted_keyx.core.interfaces.StoreUnavailable` if it cannot be
    used (too open, unreadable, not a setup), with the file's own words."""

    def __init__(self, path, run_in_thread=None):
        self.path = path
        self._run = run_in_thread if run_in_thread is not None else threads.deferToThread

    def load(self):
        return self._run(self._load)

    def _load(self):
        import os

        if not os.path.exists(self.path):
            return None
        try:
            return load_key_file(self.path)
        except KeyFileError as e:
            raise StoreUnavailable(str(e)) from None


@implementer(IServerSetupStore)
class SetupInMemory:
    """A setup already loaded (or None)."""

    def __init__(self, setup):
        self.setup = setup

    def load(self):
        return defer.succeed(self.setup)
