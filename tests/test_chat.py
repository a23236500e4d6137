"""The chat layer (twisted_keyx.chat): its machines driven directly."""

import base64

from twisted.trial import unittest

from twisted_keyx.chat import records

from twisted_keyx.chat.machine import ChatFailed, ChatState, ClientChat, ServerChat
from twisted_keyx.eke.handshake import EKEResult


def result():
    keys = records.ChatKeys(client_to_server=b"c" * 32, server_to_client=b"s" * 32)
    return EKEResult(user="alice", session_key=b"k" * 32, transcript_hash=b"h" * 32,
                     chat_keys=keys)


def pair():
    return ServerChat(result()), ClientChat(result())


def forged(key_byte, plaintext):
    """A record line sealed under ``key_byte * 32`` (b"c": client to server,
    b"s": server to client) by a fresh cipher (its counter starts at 0)."""
    return base64.b64encode(records.RecordCipher(key_byte * 32).seal(plaintext))


class ChatTests(unittest.TestCase):
    def assertRefused(self, chat, record, reason):
        """``chat.receive(record)`` raises ChatFailed whose reason is ``reason``."""
        with self.assertRaises(ChatFailed) as caught:
            chat.receive(record)
        self.assertEqual(caught.exception.reason, reason)

    def test_say_receive_quit(self):
        server, client = pair()
        reply = server.receive(client.say("hello"))
        text = server.said
        self.assertEqual(text, "hello")
        self.assertEqual(client.receive(reply), "receive hello")
        reply = server.receive(client.quit())
        text = server.said
        self.assertEqual(text, "quit")
        self.assertTrue(server.finished)
        self.assertIsNone(client.receive(reply))
        self.assertTrue(client.finished)

    def test_exact_records(self):
        """Records are base64(AES-256-GCM(key of the direction, nonce = counter))."""
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        server, client = pair()
        first = client.say("hello")
        self.assertEqual(
            first, base64.b64encode(AESGCM(b"c" * 32).encrypt(bytes(12), b"hello", None))
        )
        reply = server.receive(first)
        self.assertEqual(
            reply,
            base64.b64encode(AESGCM(b"s" * 32).encrypt(bytes(12), b"receive hello", None)),
        )
        self.assertEqual(
            client.quit(),
            base64.b64encode(AESGCM(b"c" * 32).encrypt((1).to_bytes(12, "big"), b"quit", None)),
        )

    def test_chat_text_never_in_clear(self):
        server, client = pair()
        record = client.say("attack at dawn")
        self.assertNotIn(b"attack", base64.b64decode(record))
        self.assertNotIn(b"attack", record)

    def test_replayed_line_ends_the_session(self):
        server, client = pair()
        record = client.say("pay 10")
        server.receive(record)
        with self.assertRaises(ChatFailed) as caught:
            server.receive(record)
        self.assertIn("chat record 1 does not decrypt", caught.exception.reason)
        self.assertIs(server.state, ChatState.FAILED)
        with self.assertRaises(ChatFailed):
            server.receive(client.say("later"))  # nothing after a failure

    def test_reordered_lines_end_the_session(self):
        server, client = pair()
        client.say("one")
        second = client.say("two")
        with self.assertRaises(ChatFailed) as caught:
            server.receive(second)
        self.assertIn("chat record 0 does not decrypt", caught.exception.reason)

    def test_replayed_reply_ends_the_session(self):
        server, client = pair()
        reply = server.receive(client.say("one"))
        server.receive(client.say("two"))
        self.assertEqual(client.receive(reply), "receive one")
        self.assertRaises(ChatFailed, client.receive, reply)
        self.assertIs(client.state, ChatState.FAILED)

    def test_altered_record(self):
        server, client = pair()
        record = bytearray(client.say("hello"))
        record[2] = ord("A") if record[2] != ord("A") else ord("B")
        self.assertRaises(ChatFailed, server.receive, bytes(record))

    def test_garbage_record(self):
        server, client = pair()
        self.assertRefused(server, b"hello", "not base64")

    def test_records_of_the_other_direction_do_not_open(self):
        server, client = pair()
        reply = server.receive(client.say("one"))
        self.assertRaises(ChatFailed, server.receive, reply)

    def test_not_utf8(self):
        server, _ = pair()
        record = forged(b"c", b"\xff")
        self.assertRefused(server, record, "a chat record that is not UTF-8")

    def test_too_long(self):
        server, client = pair()
        limit = "x" * records.MAX_CHAT_TEXT_BYTES
        self.assertEqual(client.receive(server.receive(client.say(limit))), "receive " + limit)
        self.assertRaises(ValueError, client.say, limit + "x")
        record = forged(b"c", limit.encode() + b"x")
        self.assertRaises(ChatFailed, ServerChat(result()).receive, record)

    def test_unsolicited_quit_from_the_server(self):
        server, client = pair()
        fake = forged(b"s", b"quit")
        self.assertRefused(client, fake, "quit while chatting")

    def test_quit_confirmed_too_early_means_lines_were_dropped(self):
        server, client = pair()
        client.say("one")  # never reaches the server
        client.quit()
        fake = forged(b"s", b"quit")
        self.assertRefused(client, fake, "quit confirmed with 1 line(s) unanswered")

    def test_reply_to_no_line(self):
        _, client = pair()
        fake = forged(b"s", b"receive x")
        self.assertRefused(client, fake, "a reply to no line")

    def test_something_else_from_the_server(self):
        server, client = pair()
        client.say("one")
        fake = forged(b"s", b"hello")
        self.assertRefused(client, fake, "neither receive <line> nor quit while chatting")

    def test_replies_still_arrive_after_quit(self):
        server, client = pair()
        first = client.say("one")
        quit_record = client.quit()
        self.assertTrue(client.quitting)
        self.assertRaises(RuntimeError, client.say, "two")
        reply = server.receive(first)
        confirmation = server.receive(quit_record)
        self.assertEqual(client.receive(reply), "receive one")
        self.assertIsNone(client.receive(confirmation))
        self.assertTrue(client.finished)

    def test_nothing_after_quit(self):
        server, client = pair()
        server.receive(client.quit())
        cipher = records.RecordCipher(b"c" * 32)
        cipher.seal(b"quit")  # record 0, already sent
        after = base64.b64encode(cipher.seal(b"more"))
        self.assertRefused(server, after, "a record while closed after quit")
