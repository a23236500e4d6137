"""The guess throttle (twisted_keyx.service.throttle), alone and behind EKE, on a
task.Clock: no real waiting.  The attacks of issue 22: guesses sent at once,
from rotating addresses, after a flood of made-up names; the real user from
a familiar source while thousands of addresses guess."""

from twisted.internet import task
from twisted.internet.address import IPv4Address
from twisted.logger import capturedLogs, formatEvent
from twisted.trial import unittest
from zope.interface.verify import verifyObject

from twisted_keyx.core.interfaces import IGuessThrottle, IThrottleStore
from twisted_keyx.core.refusals import ServerUnavailable, TooManyAttempts, refusal
from twisted_keyx.eke.protocol import EKEServerFactory
from twisted_keyx.service import throttle as throttle_module
from twisted_keyx.service.throttle import (
    DAY, SUMMARY_EVERY, GuessLimits, GuessThrottle, MemoryThrottleStore)

from tests.helpers import PASSWORD, RecordingRandom, Users, make_user
from tests.test_eke_protocol import up_to_step_4

USERS = Users(alice=make_user("alice"))


def log_text(events):
    return [formatEvent(event) for event in events]


class Reserving:
    """Helpers for a throttle whose store answers at once."""

    def reserve(self, user="alice", source="192.0.2.1", throttle=None):
        """The delay of one guess, or None if it was refused."""
        outcome = (throttle or self.throttle).reserve(user, source, source + ":1")
        result = []
        outcome.addBoth(result.append)
        [value] = result
        if isinstance(value, Exception) or hasattr(value, "trap"):
            value.trap(TooManyAttempts)
            self.refusal = value.value
            return None
        return value

    def login(self, user="alice", source="192.0.2.1"):
        """A successful login: its guess reserved, then settled."""
        self.assertIsNotNone(self.reserve(user, source))
        self.throttle.succeeded(user, source)


class ThrottleTests(Reserving, unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1_000_000)
        self.throttle = GuessThrottle(GuessLimits(), self.clock)

    def test_it_provides_the_interfaces(self):
        self.assertTrue(verifyObject(IGuessThrottle, self.throttle))
        self.assertTrue(verifyObject(IThrottleStore, MemoryThrottleStore()))

    def test_three_free_guesses_then_one_answer_a_second(self):
        delays = [self.reserve() for _ in range(8)]
        self.assertEqual(delays, [0, 0, 0, 0, 1, 2, 3, 4])

    def test_a_guess_is_counted_when_reserved_not_when_it_fails(self):
        """Sixty guesses at once from one address (issue 22: OPAQUE answered
        60 of 60 in 0.55 s): each counted the moment its answer is reserved,
        so only the free ones and one a second up to max_wait are answered."""
        delays = [self.reserve() for _ in range(60)]
        answered = [d for d in delays if d is not None]
        self.assertEqual(answered, [0, 0, 0, 0] + list(range(1, 11)))
        self.assertEqual(len([d for d in answered if d < 3]), 6)
        self.assertEqual(self.refusal.retry_after, 1)

    def test_rotating_addresses_are_one_user(self):
        """One guess every 10 ms from 19 rotating addresses for 3 s: the
        user's bucket paces them all."""
        answered_within_3s = 0
        for i in range(300):
            delay = self.reserve(source=f"198.51.100.{i % 19}")
            if delay is not None and i * 0.01 + delay <= 3:
                answered_within_3s += 1
            self.clock.advance(0.01)
        self.assertLessEqual(answered_within_3s, 7)

    def test_and_one_source_guessing_many_users_is_paced(self):
        delays = [self.reserve(user=f"user{i}") for i in range(6)]
        self.assertEqual(delays, [0, 0, 0, 0, 1, 2])

    def test_a_flood_of_made_up_names_does_not_forget_a_users_failures(self):
        """Issue 22: after 76,000 junk logins the old table had dropped bob's
        failures and a second burst got 60 of 60.  In a small sketch (1024
        counters a row, so the flood fills every one of them many times
        over) bob's failures are still all there."""
        self.throttle = GuessThrottle(GuessLimits(), self.clock,
                                      store=MemoryThrottleStore(width=1024))
        first = [self.reserve("bob") for _ in range(60)]
        self.assertEqual(len([d for d in first if d is not None]), 14)
        for i in range(20_000):
            self.reserve(f"junk{i}", f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
        second = [self.reserve("bob") for _ in range(60)]
        self.assertEqual([d for d in second if d is not None], [])

    def test_a_flood_of_made_up_names_does_not_throttle_other_users(self):
        """The sketch's default size: 20,000 names from 20,000 sources leave
        carol's counters (nearly surely) below the free failures."""
        for i in range(20_000):
            self.reserve(f"junk{i}", f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
        self.assertEqual(self.reserve("carol", "203.0.113.50"), 0)

    def test_memory_is_bounded(self):
        store = MemoryThrottleStore(width=1024)
        self.throttle = GuessThrottle(GuessLimits(), self.clock, store=store)
        for i in range(5000):
            self.reserve(f"junk{i}", f"10.0.{i >> 8 & 255}.{i & 255}")
        self.assertEqual(len(store._sketch.failures), 4 * 1024)
        self.assertEqual(store._familiar, {})

    def test_failures_are_forgotten(self):
        for _ in range(3):
            self.reserve()
        self.clock.advance(3 * 60)
        self.assertEqual([self.reserve() for _ in range(4)], [0, 0, 0, 0])

    def test_a_released_guess_is_refunded(self):
        for _ in range(3):
            self.reserve()
            self.throttle.release("alice", "192.0.2.1")
        self.assertEqual([self.reserve() for _ in range(5)], [0, 0, 0, 0, 1])

    def test_a_long_queue_is_refused_with_when_to_try_again(self):
        delays = [self.reserve() for _ in range(20)]
        self.assertIsNone(delays[-1])
        self.assertEqual(str(self.refusal),
                         "too many attempts for this user; try again in 1 s")
        self.assertEqual(self.refusal.reply,
                         b"too many attempts for this user; try again in 1 s")
        self.clock.advance(11)
        self.assertEqual(self.reserve(), 0)

    def test_no_throttle_with_delay_0(self):
        self.throttle = GuessThrottle(GuessLimits(delay=0), self.clock)
        self.assertEqual([self.reserve() for _ in range(20)], [0] * 20)


class FamiliarSourceTests(Reserving, unittest.TestCase):
    """A source the user logged in from has a failure budget of its own."""

    def setUp(self):
        self.clock = task.Clock()
        self.clock.advance(1_000_000)
        self.throttle = GuessThrottle(GuessLimits(), self.clock)

    def attack(self, sources=10_000):
        for i in range(sources):
            self.reserve("alice", f"127.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255 or 1}")

    def test_the_real_user_from_a_familiar_source_is_answered_during_an_attack(self):
        self.login("alice", "192.0.2.1")
        self.clock.advance(DAY)
        self.attack()
        self.assertEqual(self.reserve("alice", "192.0.2.1"), 0)
        self.throttle.succeeded("alice", "192.0.2.1")
        # From an unfamiliar source she waits, and is told so.
        self.assertIsNone(self.reserve("alice", "203.0.113.9"))
        self.assertIsInstance(self.refusal, TooManyAttempts)

    def test_unfamiliar_failures_cannot_spend_the_familiar_budget(self):
        self.login("alice", "192.0.2.1")
        self.attack(200)
        self.assertEqual([self.reserve("alice", "192.0.2.1") for _ in range(5)],
                         [0, 0, 0, 0, 1])

    def test_and_the_familiar_budget_is_a_budget(self):
        self.login("alice", "192.0.2.1")
        delays = [self.reserve("alice", "192.0.2.1") for _ in range(20)]
        self.assertEqual(delays[:6], [0, 0, 0, 0, 1, 2])
        self.assertIsNone(delays[-1])
        # The user's unfamiliar bucket is untouched by them.
        self.assertEqual(self.reserve("alice", "203.0.113.9"), 0)

    def test_a_login_from_the_familiar_source_clears_its_failures(self):
        self.login("alice", "192.0.2.1")
        for _ in range(5):
            self.reserve("alice", "192.0.2.1")
        self.throttle.succeeded("alice", "192.0.2.1")
        self.assertEqual([self.reserve("alice", "192.0.2.1") for _ in range(4)], [0] * 4)

    def test_a_source_is_familiar_for_30_days_after_a_login(self):
        self.login("alice", "192.0.2.1")
        self.clock.advance(29 * DAY)
        store = self.throttle.store
        limits = self.throttle.limits
        self.assertTrue(self.successResultOf(
            store.familiar("alice", "192.0.2.1", self.clock.seconds(), limits)))
        self.clock.advance(2 * DAY)
        self.assertFalse(self.successResultOf(
            store.familiar("alice", "192.0.2.1", self.clock.seconds(), limits)))
        self.attack(100)
        self.assertIsNone(self.reserve("alice", "192.0.2.1"))

    def test_familiar_to_one_user_only(self):
        self.login("alice", "192.0.2.1")
        self.attack(100)
        for i in range(3):
            self.reserve(f"user{i}", "192.0.2.1")
        self.assertEqual(self.reserve("bob", "192.0.2.1"), 0)  # the source's slot of now
        self.assertEqual(self.reserve("bob", "192.0.2.1"), 1)

    def test_a_login_from_a_new_source_refunds_its_guess(self):
        for _ in range(2):
            self.reserve("alice", "198.51.100.1")
        self.login("alice", "198.51.100.2")
        # Two charged failures left for the user: one more free, then the
        # slot of now, then one a second.
        self.assertEqual([self.reserve("alice", "203.0.113.1") for _ in range(3)], [0, 0, 1])


class SummaryTests(Reserving, unittest.TestCase):
    def setUp(self):
        self.clock = task.Clock()
        self.throttle = GuessThrottle(GuessLimits(), self.clock)

    def guess(self, i, user="alice", source="192.0.2.1"):
        if self.reserve(user, source) is not None:
            self.throttle.failed(user, source, f"{source}:{1000 + i}", "EKE")

    def test_each_guess_logged_until_a_burst_then_summaries(self):
        with capturedLogs() as events:
            for i in range(50):
                self.guess(i)
                self.clock.advance(0.5)
        text = log_text(events)
        singles = [line for line in text if line.startswith("Failed guess for user")]
        self.assertEqual(singles[0], "Failed guess for user 'alice' from 192.0.2.1:1000: EKE")
        # Three free failures, less what half a second each forgets: the
        # fifth reservation finds the bucket throttled and starts the burst.
        self.assertEqual(len(singles), 4)
        self.assertIn("Guessing user 'alice': more than 3 failed guesses", text[4])
        summaries = [line for line in text if " in 10.0 s from " in line]
        self.assertGreaterEqual(len(summaries), 2)
        self.assertLess(len(text), 15)
        self.clock.advance(3 * SUMMARY_EVERY)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_every_failure_and_refusal_is_logged_or_counted(self):
        answered = refused = 0
        with capturedLogs() as events:
            for i in range(200):
                delay = self.reserve("alice", f"198.51.100.{i % 50}")
                if delay is None:
                    refused += 1
                else:
                    answered += 1
                    self.throttle.failed("alice", f"198.51.100.{i % 50}", "x", "EKE")
                self.clock.advance(0.05)
            self.clock.advance(3 * SUMMARY_EVERY)
        text = log_text(events)
        singles = len([line for line in text if line.startswith("Failed guess")])
        counted = refusals = 0
        for line in text:
            if " failed guess(es) in " in line:
                counted += int(line.split(": ", 1)[1].split(" ", 1)[0])
                refusals += int(line.split("; ")[-1].split(" ", 1)[0])
        self.assertEqual(singles + counted, answered)
        self.assertEqual(refusals, refused)
        self.assertGreater(refused, 100)

    def test_beyond_max_bursts_the_others_are_summed(self):
        self.patch(throttle_module, "MAX_BURSTS", 2)
        self.throttle = GuessThrottle(GuessLimits(), self.clock)
        with capturedLogs() as events:
            for user in ("a", "b", "c", "d"):
                for i in range(5):
                    self.guess(i, user=user, source=f"192.0.2.{ord(user)}")
            self.clock.advance(SUMMARY_EVERY)
        text = log_text(events)
        others = [line for line in text if line.startswith("Guessing other users and sources:")]
        self.assertEqual(len(others), 1)
        # Every failure logged alone or counted in a summary.
        singles = len([line for line in text if line.startswith("Failed guess")])
        counted = sum(int(line.split(": ", 1)[1].split(" ", 1)[0])
                      for line in text if " failed guess(es) in " in line
                      and not line.startswith("Guessing from"))
        self.assertEqual(singles + counted, 20)

    def test_stopping_logs_open_bursts_and_leaves_no_timer(self):
        for i in range(5):
            self.guess(i)
        with capturedLogs() as events:
            self.throttle.stopService()
        self.assertTrue(any("failed guess(es)" in line for line in log_text(events)))
        self.assertEqual(self.clock.getDelayedCalls(), [])


class RefusalLineTests(unittest.TestCase):
    def test_the_lines_round_trip(self):
        for exception in (TooManyAttempts(0.2), TooManyAttempts(37), ServerUnavailable()):
            back = refusal(exception.reply)
            self.assertIs(type(back), type(exception))
            self.assertEqual(back.reason, exception.reason)
        self.assertEqual(TooManyAttempts(0.2).retry_after, 1)
        self.assertEqual(TooManyAttempts(36.1).retry_after, 37)

    def test_other_lines_are_no_refusal(self):
        for line in (b"authentication failed", b"too many attempts for this user; try again in 0 s",
                     b"too many attempts for this user; try again in 1 s ", b"no"):
            self.assertIsNone(refusal(line))


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
        _, transport, client = up_to_step_4(self.factory, password,
                                            IPv4Address("TCP", host, self.port))
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
        self.assertEqual(transport.value(),
                         b"too many attempts for this user; try again in 1 s\n")
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

    def test_counted_chat_lines_are_said_once_the_chat_is_quiet(self):
        """A flood followed by silence: the count is said when the chat has
        been quiet long enough to log a whole burst again, not only at the
        next line or at the end."""
        from twisted_keyx.chat.machine import ClientChat
        from twisted_keyx.eke.protocol import LOG_BURST, LOG_EVERY

        protocol, transport, client, _ = self.helper.authenticate()
        chat = ClientChat(client.result)
        with capturedLogs() as events:
            for i in range(30):
                protocol.dataReceived(chat.say(f"line {i}") + b"\n")
            self.clock.advance(LOG_BURST * LOG_EVERY - 0.5)
            self.assertEqual(len(log_text(events)), LOG_BURST)
            self.clock.advance(0.5)
        text = log_text(events)
        self.assertEqual(text[LOG_BURST:], [
            "EKE: 10 chat line(s) of user alice from 192.0.2.7:4242 "
            "not logged (more than 20 at once)"])
        self.assertEqual(self.clock.getDelayedCalls(), [])
