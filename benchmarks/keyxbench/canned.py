"""The framework alone: ``python -m keyxbench.canned --port N [--group G] [--lines N]``.

A Twisted server on the epoll reactor with Int32 framing that answers the
three DH messages with replies made in advance: no crypto, no checks, no
log.  Its CPU per handshake under the benchmark's load is what accepting,
three reads, three writes and a close cost in Python on Twisted, so
floor / (floor + that) is the best floor / CPU this stack can reach.

With ``--lines N`` it speaks LF lines instead (``LineReceiver``, as the
password handshakes do): it answers each line with :data:`LINE_REPLY` and
closes after the Nth, the I/O of an OPAQUE login and its quit (3) or of an
EKE handshake and its quit (5); the load client is
keyxbench.clients.LinesClient.
"""

import argparse

from keyxbench import project

#: What the line server answers to every line (about a KE2's size).
LINE_REPLY = b"y" * 400


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m keyxbench.canned",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--group", default=project.DEFAULT_GROUP)
    parser.add_argument("--lines", type=int, default=0,
                        help="speak LF lines, closing after this many (0: Int32 DH)")
    args = parser.parse_args(argv)

    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import protocol, reactor
    from twisted.protocols.basic import Int32StringReceiver, LineReceiver

    group = project.named_group(args.group)
    messages = project.messages
    replies = [messages.HEY_THERE, project.parameters_message(group),
               messages.SERVER_KEY_PREFIX + group.public_key_pem(group.generate_private_key())]

    class Canned(Int32StringReceiver):
        MAX_LENGTH = 8192
        count = 0

        def stringReceived(self, string):
            self.sendString(replies[self.count])
            self.count += 1
            if self.count == 3:
                self.transport.loseConnection()

    class CannedLines(LineReceiver):
        delimiter = b"\n"
        MAX_LENGTH = 8192
        count = 0

        def lineReceived(self, line):
            self.sendLine(LINE_REPLY)
            self.count += 1
            if self.count == args.lines:
                self.transport.loseConnection()

    server = CannedLines if args.lines else Canned
    reactor.listenTCP(args.port, protocol.Factory.forProtocol(server),
                      interface="127.0.0.1", backlog=1024)
    reactor.run()


if __name__ == "__main__":
    main()
