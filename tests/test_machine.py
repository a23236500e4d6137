"""The machine base (twisted_keyx.core.machine): tables checked when a class is
defined, one place that moves a machine to FAILED, no Twisted."""

import enum
import subprocess
import sys

from twisted.trial import unittest

from twisted_keyx.core.machine import (
    START,
    MachineDefinitionError,
    ProtocolFailed,
    StateMachine,
)


class State(enum.Enum):
    START = "not started"
    WAITING = "waiting"
    DONE = "done"
    FAILED = "failed"


class Event(enum.Enum):
    PING = "ping"
    BAD = "bad"


def define(transitions, **attributes):
    namespace = {"TRANSITIONS": transitions, "INITIAL": State.START,
                 "DONE": State.DONE, "FAILED": State.FAILED}
    namespace.update(attributes)
    return type("Toy", (StateMachine,), namespace)


class Toy(StateMachine):
    TRANSITIONS = {
        (State.START, START): ("_on_start", State.WAITING),
        (State.WAITING, Event.PING): ("_on_ping", State.DONE),
        (State.WAITING, Event.BAD): ("_on_bad", State.DONE),
    }
    INITIAL = State.START
    DONE = State.DONE
    FAILED = State.FAILED

    def start(self):
        return self._start()

    def receive(self, event):
        return self._dispatch(event, event)

    def _on_start(self, payload):
        return b"hello"

    def _on_ping(self, payload):
        return b"pong"

    def _on_bad(self, payload):
        raise ProtocolFailed("bad handler")

    def _unexpected(self, event, payload):
        return ProtocolFailed(f"{event} while {self.state.value}")

    def _too_long(self, reason):
        return ProtocolFailed(reason)


class DefinitionTests(unittest.TestCase):
    def test_a_handler_name_with_a_typo_fails_at_definition(self):
        with self.assertRaises(MachineDefinitionError) as caught:
            define({(State.START, Event.PING): ("_on_pnig", State.DONE)},
                   _on_ping=lambda self, payload: None)
        self.assertIn("'_on_pnig'", str(caught.exception))
        self.assertIn("does not define", str(caught.exception))

    def test_a_handler_that_is_not_callable_fails(self):
        self.assertRaises(MachineDefinitionError, define,
                          {(State.START, Event.PING): ("_on_ping", State.DONE)},
                          _on_ping="not a method")

    def test_a_step_that_is_not_a_pair_fails(self):
        self.assertRaises(MachineDefinitionError, define,
                          {(State.START, Event.PING): "_on_ping"},
                          _on_ping=lambda self, payload: None)

    def test_states_are_required(self):
        for missing in ("INITIAL", "DONE", "FAILED"):
            with self.assertRaises(MachineDefinitionError) as caught:
                define({(State.START, Event.PING): ("_on_ping", State.DONE)},
                       _on_ping=lambda self, payload: None, **{missing: None})
            self.assertIn(missing, str(caught.exception))

    def test_slow_states_must_be_the_tables(self):
        class Other(enum.Enum):
            ELSEWHERE = "elsewhere"

        table = {(State.START, Event.PING): ("_on_ping", State.DONE)}
        with self.assertRaises(MachineDefinitionError) as caught:
            define(table, _on_ping=lambda self, payload: None, SLOW_STATES={Other.ELSEWHERE})
        self.assertIn("SLOW_STATES", str(caught.exception))
        machine = define(table, _on_ping=lambda self, payload: None,
                         SLOW_STATES=frozenset({State.START}))()
        self.assertTrue(machine.slow)
        machine.state = State.DONE
        self.assertFalse(machine.slow)

    def test_a_base_without_a_table_is_allowed(self):
        self.assertEqual(type("Base", (StateMachine,), {}).TRANSITIONS, {})

    def test_every_machine_of_the_project_is_defined(self):
        # Importing them is the check; this names them so that a table whose
        # handler is renamed fails here too.
        from twisted_keyx.observe import diagram

        for name in diagram.names():
            cls = diagram.machine_class(name)
            self.assertTrue(issubclass(cls, StateMachine), name)
            for (state, event), (handler, target) in cls.TRANSITIONS.items():
                self.assertTrue(callable(getattr(cls, handler)), (name, handler))


class FailureTests(unittest.TestCase):
    def test_an_unexpected_event_fails_the_machine(self):
        machine = Toy()
        self.assertRaises(ProtocolFailed, machine.receive, Event.PING)  # before start()
        self.assertIs(machine.state, State.FAILED)
        self.assertTrue(machine.failed)

    def test_a_failing_handler_fails_the_machine(self):
        machine = Toy()
        self.assertEqual(machine.start(), b"hello")
        self.assertRaises(ProtocolFailed, machine.receive, Event.BAD)
        self.assertIs(machine.state, State.FAILED)

    def test_nothing_after_done(self):
        machine = Toy()
        machine.start()
        self.assertEqual(machine.feed(Event.PING), b"pong")
        self.assertTrue(machine.finished)
        self.assertRaises(ProtocolFailed, machine.receive, Event.PING)
        self.assertIs(machine.state, State.FAILED)

    def test_too_long_fails_the_machine(self):
        machine = Toy()
        machine.start()
        failure = machine.too_long("a frame of 9 bytes")
        self.assertEqual(failure.reason, "a frame of 9 bytes")
        self.assertIs(machine.state, State.FAILED)

    def test_refuse_from_outside_fails_the_machine(self):
        machine = Toy()
        machine.start()
        failure = ProtocolFailed("throttled")
        self.assertIs(machine.refuse(failure), failure)
        self.assertIs(machine.state, State.FAILED)

    def test_start_twice_is_a_programming_error(self):
        machine = Toy()
        machine.start()
        self.assertRaises(RuntimeError, machine.start)
        self.assertIs(machine.state, State.WAITING)


class NoTwistedTests(unittest.TestCase):
    def test_the_machine_base_imports_no_twisted(self):
        code = ("import sys, twisted_keyx.core.machine; "
                "print(sorted(m for m in sys.modules if m.split('.')[0] == 'twisted'))")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True).stdout
        self.assertEqual(out.strip(), "[]")
