"""Hostile clients against the EKE server, driven by Hypothesis.

A real client machine runs the handshake and the chat; at each of its lines
a plan says what actually goes out: the line, a mutant of it (one byte
changed, cut, or a newline slipped in), garbage, or nothing more; sometimes a
garbage line rides along in the same delivery.  Deliveries are cut at
arbitrary places.  The oracle follows docs/protocols.rst, EKE and Chat: anything
but the legal line at a handshake step ends the connection with ``no`` (step
1) or the one failure reply, except a well-formed but wrong step-3 box, which
the server answers with a decoy and refuses at step 5; in the chat, anything
but a legal record closes the connection.  The chat never starts unless
every handshake line was legal.  No exception, no logged failure, no timer
or connection slot left.
"""

import base64

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger, formatEvent
from twisted.python.failure import Failure
from twisted.trial import unittest

from twisted_keyx.service import limits
from twisted_keyx.eke import messages
from twisted_keyx.chat.machine import ClientChat
from twisted_keyx.eke.handshake import EKEClientHandshake, HandshakeFailed
from twisted_keyx.eke.protocol import EKEServerFactory

from .helpers import PASSWORD, TEST_LIMITS, Users, make_user, rsa_key
from .test_hostile_dh import FailureCatcher

PEER = IPv4Address("TCP", "198.51.100.22", 50002)
USERS = Users(alice=make_user("alice"))
STEPS = (1, 3, 5, 7, "chat", "chat", "quit")

garbage_lines = st.one_of(
    st.binary(max_size=80).map(lambda b: b.replace(b"\n", b"")),
    st.binary(min_size=1, max_size=600).map(base64.b64encode),
    st.sampled_from([b"", b"yes", b"quit", b"alice bob", b"\xff\xfe", b"=" * 40]),
)


@st.composite
def mutants(draw, line):
    data = bytearray(line)
    how = draw(st.sampled_from(["flip", "cut", "newline", "append"]))
    at = draw(st.randoms(use_true_random=False)).randint(0, max(len(data) - 1, 0))
    if how == "flip" and data:
        # No filter on the old byte: the lines carry fresh randomness, and the
        # draws must not depend on it (Hypothesis replays them).
        new = draw(st.sampled_from(b"ABab019+/=~ "))
        data[at] = new if new != data[at] else (ord("B") if new == ord("A") else ord("A"))
    elif how == "cut":
        del data[at:]
    elif how == "newline":
        data[at:at] = b"\n"
    else:
        data += draw(st.sampled_from([b"A", b"==", b" ", b"\r"]))
    return bytes(data)


def is_box(line, step):
    try:
        messages.decode_box(line, step)
    except messages.MalformedLine:
        return False
    return True


class HostileEKEClientTests(unittest.TestCase):
    def setUp(self):
        self.catcher = FailureCatcher(self)

    @given(st.data())
    def test_eke_server_survives_any_client(self, data):
        lines = []
        clock = Clock()
        factory = EKEServerFactory(USERS)
        factory.log = Logger(observer=lambda e: lines.append(formatEvent(e)))
        policy = limits.ConnectionPolicy(limits.Limits(timeout=30, idle_timeout=60), clock)
        proto = policy.wrap(factory).buildProtocol(PEER)
        transport = StringTransport(peerAddress=PEER)
        proto.makeConnection(transport)

        client = EKEClientHandshake("alice", PASSWORD, kdf_limits=TEST_LIMITS,
                                    rsa_key_factory=rsa_key)
        chat = None
        line = client.start()
        expect = "pending"  # what the server must have done at the end
        authenticated = False  # has the legal step-7 line gone out?
        for index, step in enumerate(STEPS):
            if step == "chat":
                said = f"line {data.draw(st.integers(0, 99))}"
                line = chat.say(said)
            elif step == "quit":
                line = chat.quit()
            action = data.draw(st.sampled_from(["legal"] * 6 + ["mutant", "garbage", "stop",
                                                                "extra"]))
            if action == "stop":
                break
            sent = line
            if action == "mutant":
                sent = data.draw(mutants(line))
            elif action == "garbage":
                sent = data.draw(garbage_lines)
            rider = data.draw(garbage_lines) if action == "extra" else None
            stream = sent + b"\n" + (rider + b"\n" if rider is not None else b"")
            for chunk in data.draw(st.lists(st.integers(1, 400), max_size=4)):
                cut = min(chunk, len(stream))
                proto.dataReceived(stream[:cut])
                stream = stream[cut:]
            proto.dataReceived(stream)
            written = transport.value().split(b"\n")[:-1]
            transport.clear()
            authenticated = authenticated or (step == 7 and sent == line)

            if rider is not None:
                # The legal line is answered; the rider is the next step's line.
                following = STEPS[index + 1] if index + 1 < len(STEPS) else None
                if step == "quit":
                    expect = "quit"  # nothing is read after quit
                elif following in ("chat", "quit"):
                    expect = "chat broken"
                elif following == 3 and is_box(rider, 3):
                    expect = "pending"  # a decoy box answers it
                    self.assertTrue(is_box(written[-1], 4))
                else:
                    expect = "rejected"
                    self.assertEqual(written[-1], messages.FAILURE_REPLY)
                break
            if sent != line:
                if step == 3 and is_box(sent, 3):
                    # Wrong password, as far as the server knows: a decoy box,
                    # and the refusal would come at step 5.
                    self.assertEqual(len(written), 1)
                    self.assertTrue(is_box(written[0], 4))
                    expect = "pending"
                elif step in ("chat", "quit"):
                    self.assertEqual(written, [])
                    expect = "chat broken"
                else:
                    expect = "rejected"
                    if step == 1:
                        self.assertIn(written, ([messages.NO], [messages.FAILURE_REPLY]))
                    else:
                        self.assertEqual(written, [messages.FAILURE_REPLY])
                break

            # A legal line: the server must answer like a real server.
            self.assertEqual(len(written), 1, written)
            if step in ("chat", "quit"):
                text = chat.receive(written[0])
                if step == "quit":
                    self.assertTrue(chat.finished)
                    expect = "quit"
                    break
                self.assertEqual(text, "receive " + said)
                continue
            try:
                line = client.receive(written[0])
            except HandshakeFailed as e:  # a server bug
                self.fail(f"a legal client was refused: {e}")
            if client.finished:
                self.assertIsNone(line)
                chat = ClientChat(client.result)
                expect = "chatting"

        logged_in = [entry for entry in lines if "authenticated" in entry]
        self.assertEqual(len(logged_in), 1 if authenticated else 0, lines)
        if expect in ("rejected", "chat broken", "quit"):
            self.assertTrue(transport.disconnecting)
        else:
            self.assertFalse(transport.disconnecting)

        proto.connectionLost(Failure(ConnectionDone()))
        final = lines[-1]
        # A wrong guess is logged at step 3, once: not again when it ends.
        words = {"pending": ("abandoned", "failed guess"), "rejected": ("failed",),
                 "chatting": ("without quit",), "chat broken": ("broken",), "quit": ("quit",)}
        self.assertTrue(any(word in final.lower() for word in words[expect]), lines)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual((policy.open_connections, policy.per_ip), (0, {}))
        self.assertEqual(self.catcher.failures, [])
