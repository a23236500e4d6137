"""keyx-client dh checks a server's custom group in a child process
(twisted_keyx.groups.check, twisted_keyx.groups.primechild): the verdict, and the
child killed when the check is cancelled."""

import sys

from twisted.internet import defer, error
from twisted.trial import unittest

from twisted_keyx.groups import ffdh
from twisted_keyx.groups import check as groupcheck
from twisted_keyx.groups import registry as groups
from twisted_keyx.groups import primechild

from .helpers import read_data

CUSTOM = read_data("dhparam-2048.pem")
P, G, _, _ = ffdh.parse_parameters_pem(CUSTOM)
#: A 2048-bit odd composite that passes the size checks.
COMPOSITE = (1 << 2047) + 1


class ChildAnswerTests(unittest.TestCase):
    """What the child answers (primechild.answer, run in this process)."""

    def test_safe_prime(self):
        self.assertEqual(primechild.answer(primechild.request(P, G, None)), primechild.OK)

    def test_composite(self):
        answer = primechild.answer(primechild.request(COMPOSITE, 2, None))
        self.assertTrue(answer.startswith(primechild.REFUSED + b"the parameters failed"))
        self.assertNotIn(b"\n", answer)

    def test_malformed(self):
        for request in (b"", b"zz\n2\n\n", b"\xff\n", b"1\n"):
            self.assertEqual(primechild.answer(request),
                             primechild.REFUSED + b"the group check got a malformed request")


class RecordingCheck(groupcheck._Check):
    """Keeps how each child ended."""

    ended = []

    def processEnded(self, reason):
        self.ended.append(reason)
        super().processEnded(reason)


class CheckInChildTests(unittest.TestCase):
    def setUp(self):
        RecordingCheck.ended = []
        self.patch(groupcheck, "_Check", RecordingCheck)

    async def child_ended(self):
        while not RecordingCheck.ended:
            await deferLater(0.01)
        return RecordingCheck.ended[0]

    def test_custom_group(self):
        async def run():
            group = await groupcheck.check_parameters_message(CUSTOM)
            self.assertEqual((group.p, group.g, group.name), (P, G, "custom"))
            self.assertEqual(group.parameters_message, ffdh.encode_parameters_pem(P, G))
            reason = await self.child_ended()
            self.assertIsInstance(reason.value, error.ProcessDone)
        return defer.Deferred.fromCoroutine(run())

    def test_refused(self):
        async def run():
            pem = ffdh.encode_parameters_pem(COMPOSITE, 2)
            with self.assertRaises(groups.GroupError) as caught:
                await groupcheck.check_parameters_message(pem)
            self.assertIn("safety checks", str(caught.exception))
        return defer.Deferred.fromCoroutine(run())

    def test_named_and_oversized_groups_start_no_child(self):
        self.assertIs(self.successResultOf(groupcheck.check_parameters_message(
            read_data("ffdhe3072.pem"))), ffdh.named_group("ffdhe3072"))
        big = ffdh.encode_parameters_pem((1 << 4095) + 1, 2)
        failure = self.failureResultOf(groupcheck.check_parameters_message(big, max_bits=3072),
                                       groups.GroupError)
        self.assertIn("at most 3072 are accepted", str(failure.value))
        self.assertEqual(RecordingCheck.ended, [])

    def test_a_broken_child_is_a_refusal(self):
        async def run():
            argv = [sys.executable, "-c", "print('ok?')"]
            parameters = ffdh.read_parameters_pem(CUSTOM)
            with self.assertRaises(groups.GroupError) as caught:
                await groupcheck.check_in_child(parameters, argv=argv)
            self.assertIn("the group check failed", str(caught.exception))
        return defer.Deferred.fromCoroutine(run())

    def test_cancel_kills_the_child(self):
        async def run():
            # A check that would take a minute: cancelled, it is killed.
            argv = [sys.executable, "-c", "import time; time.sleep(60)"]
            check = groupcheck.check_in_child(ffdh.read_parameters_pem(CUSTOM), argv=argv)
            await deferLater(0.1)
            check.cancel()
            self.failureResultOf(check, defer.CancelledError)
            reason = await self.child_ended()
            self.assertIsInstance(reason.value, error.ProcessTerminated)
            self.assertEqual(reason.value.signal, 9)
        return defer.Deferred.fromCoroutine(run())


def deferLater(seconds):
    from twisted.internet import reactor, task
    return task.deferLater(reactor, seconds, lambda: None)
