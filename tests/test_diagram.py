"""The state diagrams: drawn from the tables, and the committed ones still
true; and docs/protocols.rst, which they illustrate, still quoting the code's
wire constants and sizes.

The DOT is read back here with a small parser of its own (one edge per line,
``"A" -> "B" [... label="..."]``), and the committed SVGs with an XML parser,
so that the checks do not trust the code that wrote them.  Graphviz is not
needed to run these tests.
"""

import collections
import enum
import io
import os
import re
import sys
import xml.etree.ElementTree as ElementTree

from twisted.trial import unittest

from twisted_keyx.chat import records
from twisted_keyx.core.machine import LocalEvent

from twisted_keyx.cli import admin
from twisted_keyx.observe import diagram
from twisted_keyx.groups import ffdh
from twisted_keyx.dh import messages as dh_messages
from twisted_keyx.dh import protocol as dh_protocol
from twisted_keyx.dh.handshake import DHClientHandshake, DHServerHandshake
from twisted_keyx.eke import crypto
from twisted_keyx.eke import messages as eke_messages
from twisted_keyx.chat.machine import ClientChat, ServerChat
from twisted_keyx.eke.handshake import EKEClientHandshake, EKEServerHandshake
from twisted_keyx.core.machine import StateMachine

DIAGRAMS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "docs", "diagrams")
from twisted_keyx.opaque.handshake import OPAQUEClientHandshake, OPAQUEServerHandshake
from twisted_keyx.opaque.passwd import OPAQUEClientChat, OPAQUEServerChat

REGENERATE = "python -m twisted_keyx.observe.diagram --write docs/diagrams --svg"

EXPECTED_NAMES = [
    "chat-client", "chat-server", "dh-client", "dh-server", "eke-client", "eke-server",
    "opaque-chat-client", "opaque-chat-server", "opaque-client", "opaque-server",
]

_EDGE = re.compile(r'^  "([^"]+)" -> "([^"]+)"(?: \[(.*)\])?;$')
_NODE = re.compile(r'^  "([^"]+)" \[(.*)\];$')
_LABEL = re.compile(r'label="((?:[^"\\]|\\.)*)"')


def _unquote(text):
    return text.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")


def parse_dot(text):
    """``(nodes, edges)``: node name -> label, and a list of (source, target,
    label, attributes) in the order written."""
    nodes, edges = {}, []
    for line in text.splitlines():
        match = _EDGE.match(line)
        if match:
            source, target, attributes = match.groups()
            label = _LABEL.search(attributes or "")
            edges.append((source, target, _unquote(label.group(1)) if label else "",
                          attributes or ""))
            continue
        match = _NODE.match(line)
        if match:
            name, attributes = match.groups()
            label = _LABEL.search(attributes)
            nodes[name] = _unquote(label.group(1)) if label else ""
    return nodes, edges


def parse_svg(path):
    """``(nodes, edges)`` of a Graphviz SVG: node titles, and a multiset of
    (source, target, label lines joined by newlines) for the edges."""
    ns = {"svg": "http://www.w3.org/2000/svg"}
    root = ElementTree.parse(path).getroot()
    nodes, edges = set(), collections.Counter()
    for group in root.iter("{http://www.w3.org/2000/svg}g"):
        title = group.findtext("svg:title", namespaces=ns)
        texts = "\n".join(t.text or "" for t in group.findall("svg:text", ns))
        if group.get("class") == "node":
            nodes.add(title)
        elif group.get("class") == "edge":
            source, _, target = title.partition("->")
            # A loop drawn on a side has its port in the title: "OPEN:w".
            edges[(source.partition(":")[0], target.partition(":")[0], texts)] += 1
    return nodes, edges


def committed(name, extension):
    return os.path.join(DIAGRAMS, f"{name}.{extension}")


class RegistryTests(unittest.TestCase):
    def test_names(self):
        self.assertEqual(diagram.names(), EXPECTED_NAMES)

    def test_every_entry_is_a_machine(self):
        for name in diagram.names():
            cls = diagram.machine_class(name)
            self.assertTrue(issubclass(cls, StateMachine), name)
            self.assertTrue(cls.TRANSITIONS, name)

    def test_classes(self):
        self.assertIs(diagram.machine_class("dh-server"), DHServerHandshake)
        self.assertIs(diagram.machine_class("dh-client"), DHClientHandshake)
        self.assertIs(diagram.machine_class("eke-server"), EKEServerHandshake)
        self.assertIs(diagram.machine_class("eke-client"), EKEClientHandshake)
        self.assertIs(diagram.machine_class("chat-server"), ServerChat)
        self.assertIs(diagram.machine_class("chat-client"), ClientChat)

    def test_unknown_name(self):
        with self.assertRaises(diagram.UnknownMachine) as caught:
            diagram.machine_dot("dh-sever")
        self.assertEqual(
            str(caught.exception),
            "unknown machine 'dh-sever'; known machines: " + ", ".join(EXPECTED_NAMES),
        )
        self.assertRaises(diagram.UnknownMachine, diagram.machine_class, "")


def _new_machines():
    """A fresh machine of each kind, built as cheaply as possible."""
    keys = records.ChatKeys(client_to_server=b"c" * 32, server_to_client=b"s" * 32)

    class Result:
        chat_keys = keys
        user = "alice"
        session_key = b"k" * 32
        transcript_hash = b"h" * 32

    factories = {
        "dh-server": lambda: DHServerHandshake(ffdh.named_group("ffdhe2048")),
        "dh-client": DHClientHandshake,
        "eke-server": lambda: EKEServerHandshake(lambda name: None),
        "eke-client": lambda: EKEClientHandshake("alice", "a password"),
        "opaque-server": lambda: OPAQUEServerHandshake(None, lambda name: None),
        "opaque-client": lambda: OPAQUEClientHandshake("alice", "a password"),
        "chat-server": lambda: ServerChat(Result()),
        "chat-client": lambda: ClientChat(Result()),
        "opaque-chat-server": lambda: OPAQUEServerChat(Result(), None, None),
        "opaque-chat-client": lambda: OPAQUEClientChat(Result()),
    }
    assert sorted(factories) == diagram.names()
    return {name: factory() for name, factory in factories.items()}


class DotTests(unittest.TestCase):
    def test_every_transition_is_an_edge(self):
        for name in diagram.names():
            cls = diagram.machine_class(name)
            nodes, edges = parse_dot(diagram.machine_dot(name))
            drawn = collections.Counter(
                (source, target, label) for source, target, label, attributes in edges
                if "dashed" not in attributes and "dotted" not in attributes
                and source != "__initial"
            )
            table = collections.Counter(
                (state.name, target.name,
                 f"{event.value}\n{getattr(handler, '__name__', handler)}")
                for (state, event), (handler, target) in cls.TRANSITIONS.items()
            )
            self.assertEqual(drawn, table, name)

    def test_every_state_is_a_node_with_its_description(self):
        for name in diagram.names():
            cls = diagram.machine_class(name)
            nodes, _ = parse_dot(diagram.machine_dot(name))
            states = {cls.DONE, cls.FAILED}
            for (state, _), (_, target) in cls.TRANSITIONS.items():
                states.update((state, target))
            for state in states:
                label = f"{state.name}\n{state.value}"
                if state in cls.SLOW_STATES:
                    label += "\n(next message: in a thread)"
                self.assertEqual(nodes.get(state.name), label, name)

    def test_the_clients_password_steps_are_marked_slow(self):
        marked = {name: [state for state, label in parse_dot(diagram.machine_dot(name))[0].items()
                         if label.endswith("(next message: in a thread)")]
                  for name in diagram.names()}
        self.assertEqual({name: states for name, states in marked.items() if states},
                         {"eke-client": ["AWAIT_ANSWER"], "opaque-client": ["AWAIT_KE2"],
                          "opaque-chat-client": ["AWAIT_P2"]})

    def test_every_other_state_can_fail(self):
        for name in diagram.names():
            cls = diagram.machine_class(name)
            nodes, edges = parse_dot(diagram.machine_dot(name))
            failing = {source for source, target, _, attributes in edges
                       if target == cls.FAILED.name and "dashed" in attributes}
            for state, event in cls.TRANSITIONS:
                if isinstance(event, LocalEvent):
                    continue  # start(): a call of this side's, which no peer can refuse
                self.assertIn(state.name, failing, name)
            self.assertNotIn(cls.DONE.name, failing)
            self.assertNotIn(cls.FAILED.name, failing)

    def test_initial_state_is_where_a_new_machine_starts(self):
        for name, machine in _new_machines().items():
            _, edges = parse_dot(diagram.machine_dot(name))
            entries = [target for source, target, _, _ in edges if source == "__initial"]
            self.assertEqual(entries, [machine.state.name], name)

    def test_start_edge_is_where_start_goes(self):
        machines = _new_machines()
        started = {}
        for name in ("dh-client", "eke-client", "opaque-client"):
            machines[name].start()
            started[name] = machines[name].state.name
        for name in diagram.names():
            _, edges = parse_dot(diagram.machine_dot(name))
            start_edges = [(s, t) for s, t, label, _ in edges if label.startswith("start()")]
            if name in started:
                self.assertEqual(start_edges, [("START", started[name])], name)
            else:
                self.assertEqual(start_edges, [], name)

    def test_order_does_not_depend_on_the_table(self):
        class State(enum.Enum):
            A = "first"
            B = "second"
            DONE = "done"
            FAILED = "failed"

        class Event(enum.Enum):
            X = "x"
            Y = 'say "y"'

        table = {
            (State.A, Event.X): ("_x", State.B),
            (State.A, Event.Y): ("_y", State.A),
            (State.B, Event.X): ("_done", State.DONE),
        }

        def machine(transitions):
            return type("Toy", (StateMachine,), {
                "TRANSITIONS": transitions, "DONE": State.DONE, "FAILED": State.FAILED,
                "INITIAL": State.A,
                "_x": lambda self, payload: None, "_y": lambda self, payload: None,
                "_done": lambda self, payload: None,
            })

        forward = diagram.class_dot(machine(table), "toy", "Toy")
        backward = diagram.class_dot(machine(dict(reversed(table.items()))), "toy", "Toy")
        self.assertEqual(forward, backward)
        _, edges = parse_dot(forward)
        self.assertEqual(
            [(s, t, label) for s, t, label, _ in edges],
            [("__initial", "A", ""), ("A", "B", "x\n_x"), ("A", "A", 'say "y"\n_y'),
             ("B", "DONE", "x\n_done"), ("A", "FAILED", "refused"),
             ("B", "FAILED", "refused")],
        )

    def test_quoting(self):
        self.assertEqual(diagram._quote('a "b" \\ c\nd'), '"a \\"b\\" \\\\ c\\nd"')


class CommittedDiagramTests(unittest.TestCase):
    """docs/diagrams/ holds, for every machine, the DOT of its table now and
    its rendering; regenerate them with the command in REGENERATE."""

    def test_dot_files_match_the_tables(self):
        for name in diagram.names():
            path = committed(name, "dot")
            self.assertTrue(os.path.exists(path), f"{path} is missing; run {REGENERATE}")
            with open(path, encoding="utf-8") as f:
                self.assertEqual(
                    f.read(), diagram.machine_dot(name),
                    f"{path} no longer matches the table; run {REGENERATE}",
                )

    def test_no_stale_diagrams(self):
        files = sorted(os.listdir(DIAGRAMS))
        expected = sorted(f"{name}.{ext}" for name in diagram.names() for ext in ("dot", "svg"))
        self.assertEqual(files, expected)

    def test_svg_files_render_the_dot_files(self):
        for name in diagram.names():
            nodes, edges = parse_dot(diagram.machine_dot(name))
            svg_nodes, svg_edges = parse_svg(committed(name, "svg"))
            self.assertEqual(svg_nodes, set(nodes), f"{name}.svg is stale; run {REGENERATE}")
            self.assertEqual(
                svg_edges,
                collections.Counter((s, t, label) for s, t, label, _ in edges),
                f"{name}.svg is stale; run {REGENERATE}",
            )

    def test_write_reproduces_the_committed_dot_files(self):
        directory = self.mktemp()
        out = io.StringIO()
        self.assertEqual(diagram.main(["--write", directory], out=out, err=io.StringIO()), 0)
        self.assertEqual(sorted(os.listdir(directory)),
                         [f"{name}.dot" for name in EXPECTED_NAMES])
        for name in EXPECTED_NAMES:
            with open(os.path.join(directory, f"{name}.dot"), encoding="utf-8") as mine, \
                    open(committed(name, "dot"), encoding="utf-8") as theirs:
                self.assertEqual(mine.read(), theirs.read(), name)
        self.assertEqual(out.getvalue().count("\n"), len(EXPECTED_NAMES))


class AdminDiagramTests(unittest.TestCase):
    def admin(self, *argv):
        out, err = io.StringIO(), io.StringIO()
        status = admin.main(list(argv), out=out, err=err)
        return status, out.getvalue(), err.getvalue()

    def usage_error(self, *argv):
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        with self.assertRaises(SystemExit) as caught:
            self.admin(*argv)
        self.assertEqual(caught.exception.code, 2)
        return stderr.getvalue()

    def test_prints_the_dot(self):
        for name in EXPECTED_NAMES:
            status, out, err = self.admin("diagram", name)
            self.assertEqual((status, err), (0, ""))
            self.assertEqual(out, diagram.machine_dot(name))

    def test_list(self):
        status, out, err = self.admin("diagram", "--list")
        self.assertEqual((status, err), (0, ""))
        self.assertEqual([line.split()[0] for line in out.splitlines()], EXPECTED_NAMES)
        self.assertIn("dh-server  DH handshake, server side\n", out)

    def test_unknown_name_is_a_usage_error_listing_the_names(self):
        err = self.usage_error("diagram", "dh")
        self.assertIn(
            "argument NAME: unknown machine 'dh'; known machines: " + ", ".join(EXPECTED_NAMES),
            err,
        )

    def test_name_or_list(self):
        self.assertIn("give NAME (see keyx-admin diagram --list)", self.usage_error("diagram"))
        self.assertIn("give NAME or --list, not both",
                      self.usage_error("diagram", "--list", "dh-server"))


class DiagramMainTests(unittest.TestCase):
    def test_prints_one(self):
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(diagram.main(["eke-server"], out=out, err=err), 0)
        self.assertEqual(out.getvalue(), diagram.machine_dot("eke-server"))

    def test_unknown(self):
        out, err = io.StringIO(), io.StringIO()
        self.assertEqual(diagram.main(["nope"], out=out, err=err), 2)
        self.assertEqual(out.getvalue(), "")
        self.assertIn("unknown machine 'nope'; known machines: chat-client", err.getvalue())


class ProtocolsDocumentTests(unittest.TestCase):
    """docs/protocols.rst, which the diagrams illustrate, quotes the wire
    constants and sizes of the code; these fail when one of them changes
    without the document."""

    def setUp(self):
        path = os.path.join(os.path.dirname(DIAGRAMS), "protocols.rst")
        with open(path, encoding="utf-8") as f:
            self.text = f.read()
        # Words wrapped over lines read as one line.
        self.flat = re.sub(r"\s+", " ", self.text)

    def assertSays(self, snippet):
        """The document holds ``snippet`` (line breaks in it read as spaces);
        a failure names the snippet, not the whole document."""
        if snippet not in self.text and snippet not in self.flat:
            self.fail(f"docs/protocols.rst does not say {snippet!r}")

    def assertQuoted(self, value):
        if isinstance(value, bytes):
            value = value.decode("ascii")
        self.assertSays(f"``{value}``")

    def test_sections_that_docstrings_cite(self):
        titles = re.findall(r"^(.+)\n=+\n", self.text, re.MULTILINE)
        for title in ("DH handshake", "Groups", "Unframed wire", "EKE", "Chat",
                      "Host key", "OPAQUE", "State diagrams"):
            self.assertIn(title, titles)

    def test_dh_messages_and_replies(self):
        for token in (dh_messages.HELLO, dh_messages.HEY_THERE, dh_messages.PARAMS_REQUEST,
                      dh_messages.CLIENT_KEY_PREFIX, dh_messages.SERVER_KEY_PREFIX):
            self.assertQuoted(token)
        for reply in dh_messages.ERROR_REPLIES:
            self.assertSays(f"``{reply.decode()}`` ({len(reply)} bytes)")
        self.assertSays(f'"{dh_messages.SESSION_KEY_LABEL.decode()}"')

    def test_dh_sizes(self):
        bounds = [dh_protocol.server_max_message_length(ffdh.named_group(name))
                  for name in ("ffdhe2048", "ffdhe3072", "ffdhe4096")]
        self.assertSays(
            "{:,} bytes in ffdhe2048, {:,} in ffdhe3072, {:,} in ffdhe4096".format(*bounds))
        self.assertSays(f"({dh_protocol.CLIENT_MAX_MESSAGE_LENGTH:,} bytes today")
        sizes = [len(ffdh.named_group(name).parameters_pem)
                 for name in ("ffdhe2048", "ffdhe3072", "ffdhe4096")]
        self.assertSays("{}, {} and {} bytes".format(*sizes))

    def test_eke_steps(self):
        rows = dict(
            (int(step), (int(decoded), int(chars)))
            for step, decoded, chars in re.findall(
                r"^([3-8]) +[US]→[US] .*? (\d+) +(\d+)$", self.text, re.MULTILINE)
        )
        self.assertEqual(rows, {
            step: (size, eke_messages.base64_length(size))
            for step, size in eke_messages.BOX_SIZES.items()
        })
        self.assertSays(f"≤ {eke_messages.MAX_ANSWER_LINE}")
        self.assertQuoted(eke_messages.FAILURE_REPLY)
        self.assertQuoted(eke_messages.SUCCESS)
        self.assertSays(f"{records.MAX_CLIENT_RECORD_LINE:,} characters")
        self.assertSays(f"{records.MAX_SERVER_RECORD_LINE:,} from the server")

    def test_eke_labels(self):
        for label in (crypto._BOX_LABEL, crypto.CHAT_LABEL + b" client to server v1",
                      crypto.CHAT_LABEL + b" server to client v1", crypto._DECOY_SALT_LABEL):
            self.assertSays(label.decode())
        limits = crypto.DEFAULT_KDF_LIMITS
        self.assertSays(
            f"N ≤ 2^{limits.max_n.bit_length() - 1}, r ≤ {limits.max_r}, p ≤ {limits.max_p}, "
            f"and memory 128·N·r between {limits.min_memory >> 20} MiB and "
            f"{limits.max_memory >> 20} MiB")

    def test_every_diagram_is_linked(self):
        for name in diagram.names():
            self.assertSays(f"<diagrams/{name}.svg>")
            self.assertSays(f"<diagrams/{name}.dot>")

    def chart(self, heading, end):
        start = self.text.index(f"{heading}\n{'-' * len(heading)}\n")
        return self.text[start:self.text.index(end, start)]

    def assertChartStates(self, chart, *state_enums):
        """Every state the chart names is a member of one of the enums, and
        each side's states first appear in the order of its enum (the order
        a handshake goes through them)."""
        named = re.findall(r"\b(?:AWAIT_[A-Z_]+|START|DONE|FAILED|OPEN|QUITTING|CLOSED)\b", chart)
        members = {member.name for state_enum in state_enums for member in state_enum}
        self.assertEqual([name for name in named if name not in members], [])
        for state_enum in state_enums:
            order = [member.name for member in state_enum]
            first = sorted({name for name in named if name in order}, key=named.index)
            self.assertEqual(first, sorted(first, key=order.index), state_enum.__name__)
            self.assertGreaterEqual(len(first), 3, state_enum.__name__)

    def test_dh_chart(self):
        from twisted_keyx.dh import handshake

        chart = self.chart("DH sequence chart", "State diagrams:")
        self.assertChartStates(chart, handshake.DHServerState, handshake.DHClientState)
        numbered = re.findall(r"\b([1-6]) (Hello|Hey there!|Params\?|PEM parameters"
                              r"|Client public key:|Server public key:)", chart)
        self.assertEqual([number for number, _ in numbered], list("123456"))
        for reply in dh_messages.ERROR_REPLIES:
            self.assertIn(reply.decode(), chart)
        self.assertIn(dh_messages.SESSION_KEY_LABEL.decode(), chart)

    def test_eke_chart(self):
        from twisted_keyx.eke import handshake

        chart = self.chart("EKE sequence chart", "State diagrams:")
        self.assertChartStates(chart, handshake.EKEServerState, handshake.EKEClientState)
        steps = re.findall(r"(?:^|\s)([1-8]) (?:alice|yes|E_pw|E_Ks)", chart)
        self.assertEqual(steps, list("12345678"))
        self.assertIn(eke_messages.SUCCESS.decode(), chart)

    def test_chat_chart(self):
        from twisted_keyx.chat import machine as chat

        start = self.text.index("Chat\n====\n")
        chart = self.text[start:self.text.index("State diagrams:", start)]
        self.assertChartStates(chart[chart.index("::\n\n    user"):], chat.ChatState)
