"""core.lograte.Bursts: the one log-rate limiter (connection refusals,
per-source lines, the guess throttle's and the chat's lines)."""

from twisted.internet.task import Clock
from twisted.trial import unittest

from twisted_keyx.core.lograte import Bursts


class BurstsTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.summaries = []

    def bursts(self, **options):
        return Bursts(self.clock, lambda key, burst, final: self.summaries.append(
            (key, burst.counted, dict(burst.kinds), len(burst.who), final)), **options)

    def test_allowance_then_counted_then_summarised_at_the_end(self):
        bursts = self.bursts(allowance=2, quiet=10)
        self.assertEqual([bursts.event("a", "x") for _ in range(5)],
                         [True, True, False, False, False])
        self.clock.advance(9.9)
        self.assertEqual(self.summaries, [])
        self.clock.advance(0.1)
        self.assertEqual(self.summaries, [("a", 3, {"x": 3}, 0, True)])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertTrue(bursts.event("a"))  # a new burst

    def test_refill_gives_one_more_per_period(self):
        bursts = self.bursts(allowance=3, refill=1.0, quiet=100)
        self.assertEqual([bursts.event("s") for _ in range(5)], [True] * 3 + [False] * 2)
        self.clock.advance(0.5)
        self.assertFalse(bursts.event("s"))
        self.clock.advance(0.5)
        self.assertTrue(bursts.event("s"))  # one second: one more
        self.assertFalse(bursts.event("s"))
        self.clock.advance(2)
        self.assertEqual([bursts.event("s") for _ in range(3)], [True, True, False])
        # Never more than the allowance, however long the pause.
        self.clock.advance(50)
        self.assertEqual([bursts.event("s") for _ in range(4)], [True] * 3 + [False])

    def test_flush_and_end(self):
        bursts = self.bursts(allowance=1, quiet=10)
        bursts.event("s")
        bursts.flush("s")
        self.assertEqual(self.summaries, [])  # nothing counted
        bursts.event("s", who="p1")
        bursts.event("s", who="p2")
        bursts.flush("s")
        self.assertEqual(self.summaries, [("s", 2, {}, 2, False)])
        bursts.event("s")
        bursts.end("s")
        self.assertEqual(self.summaries[1:], [("s", 1, {}, 0, True)])
        self.assertEqual(len(bursts), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        bursts.end("never seen")

    def test_start_opens_a_burst_that_counts_everything(self):
        calls = []
        bursts = self.bursts(allowance=5, quiet=10, overflowing=calls.append)
        self.assertEqual(bursts.start("u"), ("u", True))
        self.assertEqual(bursts.start("u"), ("u", False))
        self.assertFalse(bursts.event("u", "failed"))
        self.assertEqual(calls, [])  # the caller words a burst it started
        self.assertIsNone(bursts.get("other"))
        self.assertIsNotNone(bursts.get("u"))
        self.clock.advance(10)
        self.assertEqual(self.summaries, [("u", 1, {"failed": 1}, 0, True)])
        self.assertIsNone(bursts.get("u"))

    def test_start_beyond_max_keys_is_the_others(self):
        bursts = self.bursts(allowance=0, max_keys=1)
        self.assertEqual(bursts.start("a"), ("a", True))
        self.assertEqual(bursts.start("b"), (None, True))
        self.assertEqual(bursts.start("c"), (None, False))

    def test_every_summarises_while_the_burst_lasts(self):
        bursts = self.bursts(allowance=0, quiet=10, every=10)
        for _ in range(25):
            bursts.event("k")
            self.clock.advance(1)
        self.assertEqual([s[1] for s in self.summaries], [10, 10])
        self.clock.advance(10)
        self.assertEqual([s[1] for s in self.summaries], [10, 10, 5])
        self.assertTrue(self.summaries[-1][-1])
