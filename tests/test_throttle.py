"""The guess throttle (twisted_keyx.service.throttle), alone and behind EKE, on a
task.Clock: no real waiting."""

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransportWithDisconnection
from twisted.logger import capturedLogs, formatEvent
from twisted.trial import unittest

from twisted_keyx.service import throttle as throttle_module
from twisted_keyx.eke.protocol import EKEServerFactory
from twisted_keyx.service.throttle import SUMMARY_EVERY, BadMessage, GuessLimits, GuessThrottle, decode, encode

from tests.helpers import PASSWORD, RecordingRandom, Users, make_user
from tests.test_eke_protocol import client_machine

USERS = Users(alice=make_user("alice"))


def log_text(events):
    return [formatEvent(event) for event in events]


class ThrottleTests(unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.throttle = GuessThrottle(GuessLimits(), self.clock)

    def guesses(self, times, user="alice", source="192.0.2.1"):
        for _ in range(times):
            self.throttle.failed(user, source)

    def test_free_guesses_are_answered_at_once(self):
        self.guesses(2)
        self.assertEqual(self.throttle.delay_for("alice", "192.0.2.1"), 0)

    def test_then_one_answer_a_second_per_user_from_any_source(self):
        self.guesses(3)
        delays = [self.throttle.delay_for("alice", f"198.51.100.{i}") for i in range(5)]
        self.assertEqual(delays, [0, 1, 2, 3, 4])
        self.assertEqual(self.throttle.delay_for("bob", "203.0.113.9"), 0)

    def test_and_per_source_for_any_user(self):
        for i in range(3):
            self.throttle.failed(f"user{i}", "192.0.2.1")
        delays = [self.throttle.delay_for(f"other{i}", "192.0.2.1") for i in range(3)]
        self.assertEqual(delays, [0, 1, 2])

    def test_a_long_queue_is_refused_unchecked(self):
        self.guesses(3)
        delays = [self.throttle.delay_for("alice", "192.0.2.1") for _ in range(13)]
        self.assertEqual(delays[:11], list(range(11)))
        self.assertEqual(delays[11:], [None, None])
        self.clock.advance(11)
        self.assertEqual(self.throttle.delay_for("alice", "192.0.2.1"), 0)

    def test_a_success_resets_the_user(self):
        self.guesses(5)
        self.throttle.succeeded("alice", "192.0.2.1")
        self.assertEqual(self.throttle.delay_for("alice", "203.0.113.1"), 0)

    def test_failures_are_forgotten(self):
        self.guesses(3)
        self.clock.advance(60)
        self.assertEqual(self.throttle.delay_for("alice", "192.0.2.1"), 0)

    def test_no_throttle_with_delay_0(self):
        throttle = GuessThrottle(GuessLimits(delay=0), self.clock)
        for _ in range(10):
            throttle.failed("alice", "192.0.2.1")
        self.assertEqual(throttle.delay_for("alice", "192.0.2.1"), 0)

    def test_each_guess_logged_until_a_burst_then_summaries(self):
        with capturedLogs() as events:
            for i in range(50):
                self.throttle.failed("alice", "192.0.2.1", f"192.0.2.1:{1000 + i}", "EKE")
                self.clock.advance(0.5)
        text = log_text(events)
        singles = [line for line in text if line.startswith("Failed guess for user")]
        self.assertEqual(singles[0], "Failed guess for user 'alice' from 192.0.2.1:1000: EKE")
        # Three free failures, less what half a second each forgets: the
        # fourth starts the burst.
        self.assertEqual(len(singles), 4)
        self.assertIn("Guessing user 'alice': more than 3 failed guesses", text[4])
        summaries = [line for line in text if " in 10.0 s from " in line]
        self.assertGreaterEqual(len(summaries), 2)
        self.assertLess(len(text), 15)
        self.clock.advance(3 * SUMMARY_EVERY)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stopping_logs_open_bursts_and_leaves_no_timer(self):
        self.guesses(5)
        with capturedLogs() as events:
            self.throttle.stopService()
        self.assertTrue(any("failed guess(es)" in line for line in log_text(events)))
        self.assertEqual(self.clock.getDelayedCalls(), [])


class SharedThrottleTests(unittest.TestCase):
    """Throttles of several processes (``--workers``): two workers' and the
    parent's, wired as twisted_keyx.service.workers wires them, through the wire
    encoding."""

    def setUp(self):
        self.clock = task.Clock()
        self.parent = GuessThrottle(GuessLimits(), self.clock)
        self.sent = {1: [], 2: []}
        self.workers = {i: GuessThrottle(GuessLimits(), self.clock, share=self.sent[i].append)
                        for i in (1, 2)}

    def relay(self):
        """What each worker sent: to the parent, and to the other worker."""
        for index, sent in self.sent.items():
            while sent:
                message = decode(encode(sent.pop(0)))
                self.parent.apply(message, system=f"worker {index}")
                if message[0] != "refused":
                    self.workers[3 - index].apply(message)

    def test_failures_in_one_worker_throttle_the_other(self):
        for _ in range(3):
            self.workers[1].failed("alice", "192.0.2.1", "192.0.2.1:1000", "EKE")
        self.assertEqual(self.workers[2].delay_for("alice", "198.51.100.1"), 0)  # not yet told
        self.relay()
        self.assertEqual(self.workers[2].delay_for("alice", "198.51.100.1"), 0)  # the slot of now
        self.relay()
        # The slot worker 2 took is worker 1's too.
        self.assertEqual(self.workers[1].delay_for("alice", "198.51.100.2"), 1)
        self.relay()
        self.assertEqual(self.workers[2].delay_for("alice", "198.51.100.3"), 2)

    def test_only_the_parent_logs_failures_and_bursts_once(self):
        with capturedLogs() as events:
            for i in range(6):
                self.workers[1 + i % 2].failed("alice", "192.0.2.1", f"192.0.2.1:{1000 + i}",
                                               "EKE")
                self.relay()
        systems = [(event.get("log_system"), formatEvent(event)) for event in events]
        self.assertEqual([s for s, line in systems if line.startswith("Failed guess")],
                         ["worker 1", "worker 2", "worker 1"])
        self.assertEqual(sum(line.startswith("Guessing user 'alice': more than 3") for _, line
                             in systems), 1)
        self.assertEqual({id(event["log_source"]) for event in events}, {id(self.parent)})
        self.clock.advance(3 * SUMMARY_EVERY)
        for worker in self.workers.values():
            worker.stopService()
        self.parent.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_login_in_one_worker_resets_the_user_in_the_other(self):
        for _ in range(5):
            self.workers[1].failed("alice", "192.0.2.1")
        self.workers[1].succeeded("alice", "192.0.2.1")
        self.relay()
        self.assertEqual(self.workers[2].delay_for("alice", "198.51.100.1"), 0)
        self.assertEqual(self.workers[2].delay_for("alice", "198.51.100.1"), 0)

    def test_a_refusal_counts_in_the_parents_summary(self):
        for _ in range(4):
            self.workers[1].failed("alice", "192.0.2.1")
        self.workers[1].refused("alice", "192.0.2.1")
        self.relay()
        with capturedLogs() as events:
            self.clock.advance(SUMMARY_EVERY)
        self.assertTrue(any("1 more refused unchecked" in line for line in log_text(events)))

    def test_a_new_worker_starts_from_the_parents_state(self):
        for _ in range(3):
            self.workers[1].failed("alice", "192.0.2.1")
        self.workers[1].delay_for("alice", "192.0.2.1")
        self.relay()
        new = GuessThrottle(GuessLimits(), self.clock, share=[].append)
        for message in self.parent.state():
            new.apply(decode(encode(message)))
        self.assertEqual(new.delay_for("alice", "198.51.100.1"), 1)


class MessageTests(unittest.TestCase):
    """The wire form of the throttle's messages between processes."""

    def test_every_message_round_trips(self):
        for message in [("failed", "al\nice \u00e9\udcff", "2001:db8::/64", "[::1]:5", "EKE, x"),
                        ("succeeded", "alice", "192.0.2.1"), ("refused", "", "x"),
                        ("held", "user", "alice", 1764590400.25),
                        ("state", "source", "192.0.2.1", 2.5, 0.0)]:
            line = encode(message)
            self.assertNotIn("\n", line)
            self.assertEqual(line, line.encode("ascii").decode())
            self.assertEqual(decode(line), message)

    def test_what_is_not_a_message_is_refused(self):
        for line in ["", "not json", "{}", "[]", '["failed"]', '["nope", "a", "b"]',
                     '["failed", "a", "b", "c"]', '["failed", "a", 1, "c", "d"]',
                     '["held", "user", "a", "soon"]', '["held", "user", "a", NaN]',
                     '["held", "user", "a", Infinity]', '["held", "user", "a", true]',
                     '["held", "group", "a", 1]', '["state", "user", "a", 1]',
                     "[" * 100000, '"failed"', b"\xff".decode("latin-1")]:
            with self.assertRaises(BadMessage, msg=line):
                decode(line)

    def test_a_held_time_may_be_an_integer(self):
        self.assertEqual(decode('["held","source","x",5]'), ("held", "source", "x", 5.0))

    def test_the_kinds_are_documented(self):
        for kind in throttle_module._MESSAGES:
            self.assertIn(f'("{kind}"', throttle_module.__doc__)


class EKEThrottleTests(unittest.TestCase):
    """The factory holds step 4 back, whatever the guess."""

    def setUp(self):
        self.clock = task.Clock()
        self.throttle = GuessThrottle(GuessLimits(), self.clock)
        self.factory = EKEServerFactory(USERS, random_bytes=RecordingRandom(b"s"),
                                        throttle=self.throttle)
        self.port = 4000

    def attempt(self, password, host="192.0.2.7"):
        """Steps 1 and 3; return the transport, the client and the step-4 lines so far."""
        self.port += 1
        protocol = self.factory.buildProtocol(None)
        transport = StringTransportWithDisconnection(
            peerAddress=IPv4Address("TCP", host, self.port))
        transport.protocol = protocol
        protocol.makeConnection(transport)
        client = client_machine(password)
        protocol.dataReceived(client.start() + b"\n")
        answer = transport.value()
        transport.clear()
        protocol.dataReceived(client.receive(answer[:-1]) + b"\n")
        return transport, client

    def test_after_three_failures_step_4_waits_on_the_clock(self):
        for _ in range(3):
            transport, _ = self.attempt("guess")
            self.assertNotEqual(transport.value(), b"")  # answered at once
        first, _ = self.attempt("guess", host="198.51.100.1")
        second, _ = self.attempt("guess", host="198.51.100.2")
        self.assertNotEqual(first.value(), b"")  # the slot of now
        self.assertEqual(second.value(), b"")  # held back one second
        self.clock.advance(0.99)
        self.assertEqual(second.value(), b"")
        self.clock.advance(0.01)
        self.assertEqual(len(second.value()), 381)

    def test_the_real_user_still_gets_in_within_seconds(self):
        for _ in range(10):
            self.attempt("guess")
        transport, client = self.attempt(PASSWORD)
        self.clock.advance(10)  # at most GuessLimits.max_wait
        line = client.receive(transport.value()[:-1])
        self.assertIsNotNone(line)
        self.assertIsNone(client._doomed)

    def test_a_long_queue_is_refused_at_step_3(self):
        for _ in range(20):
            transport, _ = self.attempt("guess")
        self.assertEqual(transport.value(), b"authentication failed\n")
        self.assertFalse(transport.connected)


class ChatLogTests(unittest.TestCase):
    """Log flooding: chat lines are cut and rate-limited per connection."""

    def setUp(self):
        from tests.test_eke_protocol import ServerProtocolTests

        self.helper = ServerProtocolTests()
        self.clock = task.Clock()
        self.helper.factory = EKEServerFactory(
            USERS, random_bytes=RecordingRandom(b"s"),
            throttle=GuessThrottle(GuessLimits(), self.clock))

    def test_a_long_chat_line_is_cut_in_the_log(self):
        from twisted_keyx.chat.machine import ClientChat

        protocol, transport, client, _ = self.helper.authenticate()
        chat = ClientChat(client.result)
        with capturedLogs() as events:
            protocol.dataReceived(chat.say("x" * 4000) + b"\n")
        [line] = log_text(events)
        self.assertEqual(line, "User alice say: " + "x" * 200 + "... (3800 more characters)")

    def test_a_flood_of_chat_lines_is_summarised(self):
        from twisted_keyx.chat.machine import ClientChat

        protocol, transport, client, _ = self.helper.authenticate()
        chat = ClientChat(client.result)
        with capturedLogs() as events:
            for i in range(1000):
                protocol.dataReceived(chat.say(f"line {i}") + b"\n")
            self.clock.advance(1)
            protocol.dataReceived(chat.say("later") + b"\n")
        text = log_text(events)
        self.assertEqual(len(text), 22)
        self.assertEqual(text[20], "EKE: 980 chat line(s) of user alice from 192.0.2.7:4242 "
                                   "not logged (more than 20 at once)")
        self.assertEqual(text[21], "User alice say: later")
