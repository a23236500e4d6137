"""State diagrams drawn from the machines' own tables, as Graphviz DOT.

A machine class (see :mod:`twisted_keyx.core.machine`) declares its legal moves in
``TRANSITIONS``, ``{(state, event): (handler name, next state)}``, and its
``DONE`` and ``FAILED`` states.  :func:`machine_dot` turns exactly that into
a DOT digraph, so a diagram cannot say more or less than the code does:

- one node per state that the table, ``DONE`` or ``FAILED`` names, labelled
  with the member's name and its ``value`` (the description the logs use);
  the initial state (``INITIAL``) has an arrow in from a dot; ``DONE`` is a double octagon, ``FAILED`` grey;
  a state of ``SLOW_STATES`` says that its next message is handled in a
  thread (a client's password stretching);
- one solid edge per table entry, labelled with the event's ``value`` and
  the handler that runs (every second loop on a state drawn on its left, so
  that Graphviz does not print their labels over each other);
- one dashed edge from every other state into ``FAILED``: any event the
  table does not list there, or a handler that fails, ends the machine
  (:mod:`twisted_keyx.core.machine` does that in one place);
- for a client, the move made by its ``start()`` method (which sends the
  first message and is not an event of the table) as a dotted edge, when
  its registry entry declares it (:class:`twisted_keyx.core.handshakes.Machine`).

The output is deterministic: states in the order of their enum, edges in
table order of (state, event) enum positions, nothing that depends on a hash
or the clock.  The committed diagrams under ``docs/diagrams/`` are generated
with::

    python -m twisted_keyx.observe.diagram --write docs/diagrams

(``--svg`` also renders each with Graphviz's ``dot -Tsvg``);
``tests/test_diagram.py`` fails when one no longer matches the tables.
``keyx-admin diagram NAME`` prints one.  docs/protocols.rst describes the
protocols the diagrams show.
"""

import argparse
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

from twisted_keyx.core import handshakes
from twisted_keyx.core.machine import LocalEvent


class UnknownMachine(LookupError):
    """No machine of that name; ``str()`` lists the names there are."""

    def __init__(self, name):
        super().__init__(f"unknown machine {name!r}; known machines: {', '.join(names())}")
        self.name = name


#: What the diagram knows of a machine: where its class lives, its title,
#: the state its ``start()`` moves to.
MachineEntry = handshakes.Machine


def machines():
    """Every machine that has a diagram, by name: the machines of every
    entry of the handshake registry (:mod:`twisted_keyx.core.handshakes`),
    whose classes are imported only when a diagram is drawn."""
    return handshakes.machines()


def names():
    """The machine names, sorted."""
    return sorted(machines())


def entry(name):
    try:
        return machines()[name]
    except KeyError:
        raise UnknownMachine(name) from None


def machine_class(name):
    """The class behind ``name``; raises :class:`UnknownMachine`."""
    return entry(name).load()


def _quote(text):
    """A DOT double-quoted string; ``\\n`` in ``text`` becomes a line break."""
    escaped = str(text).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n") + '"'


def _position(member):
    """Sort key: a member's place in its enum, so the order is the source's
    (then its enum's name: a table may mix two enums, as a chat extended
    with more states does, and the order must not depend on hashing)."""
    return list(type(member)).index(member), type(member).__qualname__


def handler_name(handler):
    """A table's handler as the diagram names it: the method name, whether
    the table holds the name or the function."""
    return getattr(handler, "__name__", str(handler))


@dataclass(frozen=True)
class Edge:
    source: object
    target: object
    event: object
    handler: str


def table_edges(cls):
    """The table's transitions as :class:`Edge` objects, in a stable order."""
    edges = [
        Edge(state, target, event, handler_name(handler))
        for (state, event), (handler, target) in cls.TRANSITIONS.items()
    ]
    return sorted(edges, key=lambda e: (_position(e.source), _position(e.event)))


def states(cls, start=None):
    """The states a diagram of ``cls`` shows, in the order of their enum
    (``start``: the state its ``start()`` moves to, if any)."""
    shown = {initial_state(cls), cls.DONE, cls.FAILED}
    for (state, _), (_, target) in cls.TRANSITIONS.items():
        shown.update((state, target))
    if start is not None:
        shown.add(start)
    return sorted(shown, key=_position)


def machine_dot(name):
    """The DOT text of machine ``name``; raises :class:`UnknownMachine`."""
    machine = entry(name)
    return class_dot(machine.load(), name, machine.title, machine.start)


def initial_state(cls):
    """The state a new machine of ``cls`` is in (its ``INITIAL``)."""
    return cls.INITIAL


def class_dot(cls, name, title, start=None):
    """The DOT text of machine class ``cls``; ``start`` names the state its
    ``start()`` moves to, if it has one."""
    state_enum = type(cls.DONE)
    initial = initial_state(cls)
    start = state_enum[start] if start is not None else None
    shown = states(cls, start)
    edges = table_edges(cls)

    lines = [
        f"// {name}: {title}, drawn from {cls.__module__}.{cls.__qualname__}.TRANSITIONS",
        "// by twisted_keyx.observe.diagram; regenerate, do not edit (docs/protocols.rst).",
        f"digraph {_quote(name)} {{",
        f"  label={_quote(title)};",
        "  labelloc=t;",
        '  fontname="Helvetica";',
        "  rankdir=TB;",
        '  node [shape=box, style=rounded, fontname="Helvetica", fontsize=11];',
        '  edge [fontname="Helvetica", fontsize=10];',
        '  "__initial" [shape=point, width=0.15, label=""];',
    ]
    for state in shown:
        label = f"{state.name}\n{state.value}"
        if state in cls.SLOW_STATES:
            label += "\n(next message: in a thread)"
        attributes = [f"label={_quote(label)}"]
        if state is cls.DONE:
            attributes.append("shape=doubleoctagon")
        elif state is cls.FAILED:
            attributes.append("color=gray40, fontcolor=gray40")
        lines.append(f"  {_quote(state.name)} [{', '.join(attributes)}];")
    lines.append(f'  "__initial" -> {_quote(initial.name)};')
    # A start() the table already lists (as an event) needs no edge of its own.
    if start is not None and any(e.source is initial for e in edges):
        start = None
    if start is not None:
        lines.append(
            f"  {_quote(initial.name)} -> {_quote(start.name)} "
            '[label="start()", style=dotted];'
        )
    loops = {}
    for e in edges:
        label = f"{e.event.value}\n{e.handler}"
        attributes = f"label={_quote(label)}"
        if e.source is e.target:
            # Graphviz stacks the labels of several loops on one side of a
            # node over each other: put every second loop on the other side.
            loops[e.source] = loops.get(e.source, 0) + 1
            if loops[e.source] % 2 == 0:
                attributes = "tailport=w, headport=w, " + attributes
        lines.append(f"  {_quote(e.source.name)} -> {_quote(e.target.name)} [{attributes}];")
    for state in shown:
        if state in (cls.DONE, cls.FAILED):
            continue
        events = [e.event for e in edges if e.source is state]
        if (state is initial and start is not None) or (
                events and all(isinstance(event, LocalEvent) for event in events)):
            continue  # start() is a method call, not a message that can be refused
        lines.append(
            f"  {_quote(state.name)} -> {_quote(cls.FAILED.name)} "
            '[style=dashed, color=gray40, fontcolor=gray40, label="refused"];'
        )
    lines.append("}")
    return "\n".join(lines) + "\n"


def write_diagrams(directory, svg=False, dot_command="dot"):
    """Write ``NAME.dot`` (and with ``svg``, ``NAME.svg``) for every machine
    into ``directory``; return the paths written."""
    os.makedirs(directory, exist_ok=True)
    written = []
    for name in names():
        text = machine_dot(name)
        dot_path = os.path.join(directory, f"{name}.dot")
        with open(dot_path, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        written.append(dot_path)
        if svg:
            svg_path = os.path.join(directory, f"{name}.svg")
            rendered = subprocess.run(
                [dot_command, "-Tsvg"], input=text.encode("utf-8"),
                check=True, capture_output=True,
            ).stdout
            with open(svg_path, "wb") as f:
                f.write(rendered)
            written.append(svg_path)
    return written


def main(argv=None, out=None, err=None):
    """``python -m twisted_keyx.observe.diagram``: print one diagram, or write them all."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    parser = argparse.ArgumentParser(
        prog="python -m twisted_keyx.observe.diagram",
        description="Graphviz DOT of the handshake state machines, from their tables.",
    )
    parser.add_argument("name", nargs="?", metavar="NAME", help="the machine to print")
    parser.add_argument("--write", metavar="DIR",
                        help="write NAME.dot for every machine into DIR")
    parser.add_argument("--svg", action="store_true",
                        help="with --write, also render NAME.svg with Graphviz's dot")
    args = parser.parse_args(argv)
    if args.write:
        if args.svg and shutil.which("dot") is None:
            err.write("diagram: Graphviz's dot is not installed; --svg needs it\n")
            return 1
        for path in write_diagrams(args.write, svg=args.svg):
            out.write(f"wrote {path}\n")
        return 0
    if args.name is None:
        parser.error("give NAME, or --write DIR")
    try:
        out.write(machine_dot(args.name))
    except UnknownMachine as e:
        err.write(f"diagram: {e}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
