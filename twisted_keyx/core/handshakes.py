"""The handshake registry: what the daemon, the command line and the
observability tools know about each handshake, in one entry per handshake.

An entry (:class:`Handshake`) lives in its handshake's package
(``twisted_keyx/dh/entry.py``, ``eke/entry.py``, ``opaque/entry.py``,
``chat/entry.py``), as a module-level ``HANDSHAKE``; this module imports
those modules by name (:data:`HANDSHAKE_MODULES`) the first time it is asked,
so nothing here imports a handshake, and a layer below the handshakes can
hold the type.  Everything an entry points at (a factory, a machine class, a
summary function, a chart) is named as ``"package.module:attribute"`` and
imported only when it is used: listing the handshakes costs nothing.

Who reads what:

- ``twistd keyx`` (:mod:`twisted_keyx.service.tap`): each entry's
  :attr:`Handshake.endpoints` is an option (``--dh``, ``--dh-raw``,
  ``--eke``, ``--opaque``) with its help and default endpoint, and the
  function that builds the server factory for it;
  :attr:`Handshake.daemon_options` are the daemon-wide options it owns
  (``--group``, ``--host-key``, ``--opaque-key``...), which
  :attr:`Handshake.configure` checks and turns into the handshake's
  settings (:class:`Flag`, :class:`Parameter`, :class:`NewFile`);
  :attr:`Handshake.banner` makes the daemon's start-up line for the
  handshake;
- ``keyx-admin diagram`` and :mod:`twisted_keyx.observe.diagram`:
  :attr:`Handshake.machines`; ``keyx-admin``: the commands of
  :attr:`Handshake.admin_commands`;
- traces (:mod:`twisted_keyx.observe.trace`): :attr:`Handshake.summaries`,
  the summary of a message by its machine's class name;
- the sequence charts (:mod:`twisted_keyx.observe.sequence`):
  :attr:`Handshake.charts`;
- the user file and ``keyx-admin adduser`` (:mod:`twisted_keyx.core.schemes`):
  :attr:`Handshake.scheme`, for a password handshake;
- ``keyx-client``: :attr:`Handshake.client` and what follows it
  (:attr:`Handshake.client_pin`, :attr:`Handshake.after_login`), for a
  password handshake (one command each, named after the handshake, with
  the actions of :attr:`Handshake.client_commands`);
- ``keyx-lab crack``: :attr:`Handshake.recording`, what a recorded login
  gives an offline attacker.

A new handshake is its own package with an ``entry.py``, one line in
:data:`HANDSHAKE_MODULES` (or a call to :func:`register`, as the tests do
for a toy handshake), and its package named in the handshakes' layer of
``setup.cfg``'s import-linter contract (docs/reference/layout.rst,
"Adding a handshake").
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

#: The modules that define a ``HANDSHAKE``, in the order the daemon serves
#: them, ``--help`` lists their options and ``keyx-admin adduser`` offers
#: their schemes (the first password scheme is its default).
HANDSHAKE_MODULES = (
    "twisted_keyx.dh.entry",
    "twisted_keyx.eke.entry",
    "twisted_keyx.opaque.entry",
    "twisted_keyx.chat.entry",
)


def load_path(path: str) -> Any:
    """The object ``"package.module:attribute"`` names (imported now)."""
    module, _, attribute = path.partition(":")
    if not attribute:
        raise ValueError(f"not module:attribute: {path!r}")
    return getattr(importlib.import_module(module), attribute)


def _resolve(thing: Any) -> Any:
    """A ``"module:attribute"`` string loaded; anything else as it is."""
    return load_path(thing) if isinstance(thing, str) else thing


@dataclass(frozen=True)
class Endpoint:
    """One listening option of ``twistd keyx`` (``--dh ENDPOINT``).

    ``factory`` (``"module:function"`` or the function) builds the server
    factory from the daemon's :class:`twisted_keyx.service.tap.ServerContext`;
    ``default`` is the endpoint served when the option is not given (None:
    served only when given); ``help`` is one line for ``--help``."""

    option: str
    help: str
    factory: str | Callable[..., Any]
    default: str | None = None

    def build(self, context: Any) -> Any:
        """The server factory for ``context``."""
        return _resolve(self.factory)(context)


@dataclass(frozen=True)
class Flag:
    """A daemon-wide flag of ``twistd keyx`` that a handshake owns (an
    ``optFlags`` line of :class:`twisted.python.usage.Options`):
    ``options[name]`` is 1 when given, else 0."""

    name: str
    help: str


@dataclass(frozen=True)
class Parameter:
    """A daemon-wide option of ``twistd keyx`` that takes a value and that a
    handshake owns (an ``optParameters`` line): ``options[name]`` is the
    value, made by ``coerce`` (None: the string), or ``default``.  For a
    default ``--help`` should not print (``[default: ...]``), leave
    ``default`` None and say it in ``help``."""

    name: str
    help: str
    default: Any = None
    coerce: Callable[[str], Any] | None = None


@dataclass(frozen=True)
class NewFile:
    """A key a handshake's :attr:`Handshake.configure` made in memory, to be
    written to ``path`` when the daemon knows it can start (every port
    found free): ``write()`` raises FileExistsError if someone made the
    file meanwhile, OSError or the key's own error if it cannot be
    written."""

    path: str
    write: Callable[[], Any]


@dataclass(frozen=True)
class Machine:
    """A machine that has a state diagram (:mod:`twisted_keyx.observe.diagram`).

    ``path`` is ``"package.module:ClassName"``, imported when the diagram is
    drawn; ``start`` names the state the machine's ``start()`` moves to (a
    client that begins by sending), None for one that begins by receiving."""

    name: str
    path: str | type
    title: str
    start: str | None = None

    def load(self) -> type:
        return _resolve(self.path)


@dataclass(frozen=True)
class Handshake:
    """One handshake, as everything outside its package knows it (see the
    module docstring for who reads which field)."""

    #: Short name: ``dh``, ``eke``, ``opaque``.
    name: str
    #: What it is, in a few words (``--help``, listings).
    title: str
    #: The ``twistd keyx`` options that serve it.
    endpoints: tuple[Endpoint, ...] = ()
    #: The daemon-wide options of ``twistd keyx`` it owns (:class:`Flag`,
    #: :class:`Parameter`): listed in ``--help``, parsed with the others,
    #: and read by :attr:`configure`.  An option two handshakes would use
    #: belongs to one of them (DH owns ``--group``), and the other reads
    #: that one's settings from the configuration.
    daemon_options: tuple[Flag | Parameter, ...] = ()
    #: ``"module:function"``: ``(options, shared) -> settings``, called once
    #: the options are parsed (in every process: the workers of
    #: ``--workers`` parse the same options again), whether or not the
    #: handshake is served.  ``options`` is the parsed ``twistd keyx``
    #: options (``options["group"]``); ``shared`` is what the daemon's own
    #: options made (:class:`twisted_keyx.service.tap.Shared`: the users,
    #: ``shared.user_count``, the stores of ``--store``), and
    #: ``shared.new_file(path, write)`` has a key made in memory written
    #: once the daemon can start (:class:`NewFile`).  A problem is a
    #: :class:`twisted.python.usage.UsageError` of one line, and nothing is
    #: written.  The settings (any object, typically a frozen dataclass)
    #: reach the handshake's server factories and banner as
    #: ``context.settings``, and others as ``config.settings[name]``.
    #: None: no settings.
    configure: str | Callable[..., Any] | None = None
    #: ``"module:function"``: ``(context, served) -> [(format, fields), ...]``,
    #: the daemon's start-up line(s) for the handshake; ``served`` maps each
    #: of its options to the endpoints given.  None: a generic line.
    banner: str | Callable[..., Any] | None = None
    #: The machines it draws diagrams of.
    machines: tuple[Machine, ...] = ()
    #: Machine class name -> ``"module:function"``: ``(payload) -> Summary or
    #: None`` for a trace (None: the generic summary).
    summaries: Mapping[str, str | Callable[..., Any]] = field(default_factory=dict)
    #: Chart name -> ``"module:function"``: ``async (reactor) -> text``.
    charts: Mapping[str, str | Callable[..., Any]] = field(default_factory=dict)
    #: ``"module:NAME"`` of its password scheme (:mod:`twisted_keyx.core.schemes`),
    #: for a password handshake.
    scheme: str | None = None
    #: For a password handshake, ``"module:function"``:
    #: ``(user, password, reply_received) -> client factory``.
    client: str | Callable[..., Any] | None = None
    #: The TCP port ``keyx-client`` connects to by default.
    client_port: int | None = None
    #: ``keyx-client NAME --help``'s description, for a password handshake.
    client_description: str = ""
    #: ``keyx-client NAME``'s own options: ``(flags, argparse keywords)``
    #: pairs; each one's value goes to :attr:`client` as the keyword of its
    #: ``dest`` (OPAQUE: ``--profile``).
    client_options: tuple = ()
    #: ``"module:function"``: ``(command, kit)``, the handshake's own
    #: actions and options of ``keyx-client NAME`` (OPAQUE: ``register`` and
    #: ``passwd``): ``command`` is its :class:`argparse.ArgumentParser`, with
    #: the options every password handshake has; the hook adds to it, and
    #: sets its default ``run`` (``async (reactor, args, out) -> exit
    #: status``) to run them.  ``kit``
    #: (:class:`twisted_keyx.cli.client.ClientKit`) is what keyx-client lends
    #: them, as the handshake's package cannot import it: ``ClientError``
    #: and the exit statuses, the password prompts, ``connect``,
    #: ``with_tracing``, and ``run_password`` (the login of :attr:`client`,
    #: then the chat or what follows).
    client_commands: str | Callable[..., Any] | None = None
    #: ``"module:function"``: ``(commands, kit)``, the ``keyx-admin``
    #: commands of its own (OPAQUE: ``opaque-profile``), added to
    #: ``commands`` (keyx-admin's argparse subparsers, after ``adduser``),
    #: each with its default ``run``: ``(args, out, err)``; ``kit``
    #: (:class:`twisted_keyx.cli.admin.AdminKit`) lends them ``AdminError``,
    #: a failure said in one line.
    admin_commands: str | Callable[..., Any] | None = None
    #: ``"module:function"``: ``(result, host, port, out, err)``, what
    #: ``keyx-client`` does once logged in, before the chat (OPAQUE: the
    #: server key's fingerprint, checked against the last one seen).
    after_login: str | Callable[..., Any] | None = None
    #: ``"module:function"``: ``(host, port, user) -> pin``, made by
    #: ``keyx-client NAME`` before the password is asked, for a client that
    #: pins what the server showed at the first login (EKE: the salt and
    #: scrypt cost of step 2).  The pin's ``options`` go to :attr:`client`
    #: as keywords; ``logged_in(handshake)`` records what the finished
    #: client machine saw and returns a warning or None; ``refusal(error)``
    #: is the text that replaces a failed login's own (None: not the pin's
    #: business).  A pin that cannot be read raises :class:`ClientHookError`.
    client_pin: str | Callable[..., Any] | None = None
    #: ``"module:function"``: ``(events) -> OfflineAttack or str`` for
    #: ``keyx-lab crack``: what a recording of this handshake gives an
    #: offline attacker (a string: why it gives nothing).
    recording: str | Callable[..., Any] | None = None

    def options(self) -> list[str]:
        """The names of its endpoint options."""
        return [endpoint.option for endpoint in self.endpoints]

    def option_names(self) -> list[str]:
        """Every ``twistd keyx`` option it owns: endpoints, then daemon-wide."""
        return self.options() + [option.name for option in self.daemon_options]

    def load(self, field_name: str) -> Any:
        """The object a ``"module:attribute"`` field names (None stays None)."""
        value = getattr(self, field_name)
        return None if value is None else _resolve(value)

    def summary_function(self, machine_name: str) -> Callable[..., Any] | None:
        function = self.summaries.get(machine_name)
        return None if function is None else _resolve(function)


_handshakes: dict[str, Handshake] = {}
_loaded = False
#: Counts the changes to the registry, for those who cache what they read.
generation = 0


def _changed() -> None:
    global generation
    generation += 1
    _summaries_cache.clear()


def register(handshake: Handshake) -> Handshake:
    """Add ``handshake`` to the registry; a name, an option or a machine
    name that another entry has already is refused (ValueError)."""
    _load()
    _check_new(handshake)
    _handshakes[handshake.name] = handshake
    _changed()
    return handshake


def unregister(name: str) -> None:
    """Remove the entry ``name`` (for tests that register a toy one)."""
    _handshakes.pop(name, None)
    _changed()


def _check_new(handshake: Handshake) -> None:
    if handshake.name in _handshakes:
        raise ValueError(f"handshake {handshake.name!r} is registered twice")
    options = {o for h in _handshakes.values() for o in h.option_names()}
    machines = {m.name for h in _handshakes.values() for m in h.machines}
    for option in handshake.option_names():
        if option in options:
            raise ValueError(f"option --{option} is registered twice")
    for machine in handshake.machines:
        if machine.name in machines:
            raise ValueError(f"machine {machine.name!r} is registered twice")


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in HANDSHAKE_MODULES:
        entry = importlib.import_module(module).HANDSHAKE
        _check_new(entry)
        _handshakes[entry.name] = entry


def handshakes() -> list[Handshake]:
    """Every entry, in registration order."""
    _load()
    return list(_handshakes.values())


class UnknownHandshake(LookupError):
    pass


class ClientHookError(Exception):
    """What a client hook of an entry (:attr:`Handshake.client_pin`) raises
    to stop ``keyx-client`` with its text, one line, as a failed handshake."""


def named(name: str) -> Handshake:
    _load()
    try:
        return _handshakes[name]
    except KeyError:
        raise UnknownHandshake(f"unknown handshake {name!r}") from None


def endpoints() -> list[tuple[Handshake, Endpoint]]:
    """Every ``twistd keyx`` listening option, with its handshake."""
    return [(h, e) for h in handshakes() for e in h.endpoints]


def daemon_options() -> list[tuple[Handshake, Flag | Parameter]]:
    """Every daemon-wide ``twistd keyx`` option a handshake owns, with it."""
    return [(h, o) for h in handshakes() for o in h.daemon_options]


def machines() -> dict[str, Machine]:
    """Every machine that has a diagram, by name."""
    return {m.name: m for h in handshakes() for m in h.machines}


def charts() -> dict[str, Callable[..., Any]]:
    """Every sequence chart recipe, by name (loaded now)."""
    return {name: _resolve(recipe) for h in handshakes() for name, recipe in h.charts.items()}


_summaries_cache: dict[str, Callable[..., Any] | None] = {}


def summary_function(machine_name: str) -> Callable[..., Any] | None:
    """The summary function an entry gives for the messages of the machine
    class called ``machine_name``, or None."""
    if machine_name not in _summaries_cache:
        found = None
        for h in handshakes():
            found = h.summary_function(machine_name)
            if found is not None:
                break
        _summaries_cache[machine_name] = found
    return _summaries_cache[machine_name]


def handshake_of_machine(machine_name: str) -> Handshake | None:
    """The entry whose machines or summaries name the class ``machine_name``."""
    for h in handshakes():
        names = {_class_name(m.path) for m in h.machines} | set(h.summaries)
        if machine_name in names:
            return h
    return None


def _class_name(path: str | type) -> str:
    return path.rpartition(":")[2] if isinstance(path, str) else path.__name__


def password_handshakes() -> list[Handshake]:
    """The entries with a password scheme, in order."""
    return [h for h in handshakes() if h.scheme is not None]


@dataclass(frozen=True)
class Summary:
    """What a traced message is.  ``kind`` is the same in every run
    (sequence charts use it); ``detail`` adds what differs from run to run
    (sizes that vary, a key's first bytes)."""

    kind: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind} {self.detail}".strip() if self.detail else self.kind


@dataclass(frozen=True)
class OfflineAttack:
    """What a recorded login gives an offline attacker (``keyx-lab crack``):
    ``summary`` says what was recovered (user, salt, cost) and
    ``test(guess) -> bool`` tries one password against the recording."""

    summary: str
    test: Callable[[str], bool]
