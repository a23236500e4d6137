"""The stall test: many connections held mid-handshake, and the daemon's memory.

``python -m keyxbench.stall --port N --stall S`` (the staller, a process of
its own) opens S connections that send ``Hello`` and ``Params?`` and then go
silent, so that the server holds each in "awaiting the client's public
key"; it prints a JSON line once they are all held, waits ``--settle``
seconds (the parent reads the server's RSS meanwhile), times one fresh
handshake, prints a second line, and closes them.

:func:`run` is the parent's side, given a started daemon.
"""

import argparse
import json
import sys
import time

from keyxbench import process


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m keyxbench.stall",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--stall", type=int, default=10000)
    parser.add_argument("--settle", type=float, default=2.0)
    args = parser.parse_args(argv)
    process.raise_fd_limit()
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import defer, protocol, reactor, task
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
    from twisted.protocols.basic import Int32StringReceiver

    from keyxbench.clients import is_parameters_message
    from keyxbench.project import dh_client_protocol, messages

    held = []
    lost = [0]

    class Staller(Int32StringReceiver):
        MAX_LENGTH = 16384

        def connectionMade(self):
            self.sendString(messages.HELLO)
            self.sendString(messages.PARAMS_REQUEST)

        def stringReceived(self, payload):
            if is_parameters_message(payload):
                held.append(self)

        def connectionLost(self, reason):
            lost[0] += 1

    factory = protocol.ClientFactory.forProtocol(Staller)

    async def run():
        out = {}
        t0 = time.perf_counter()
        batch = 250
        for start in range(0, args.stall, batch):
            for _ in range(min(batch, args.stall - start)):
                reactor.connectTCP("127.0.0.1", args.port, factory, timeout=60)
            target = min(start + batch, args.stall)
            while len(held) + lost[0] < target:
                await task.deferLater(reactor, 0.01)
        out["held"] = len(held)
        out["lost_while_opening"] = lost[0]
        out["open_seconds"] = time.perf_counter() - t0
        print(json.dumps({"phase": "held", **out}), flush=True)
        await task.deferLater(reactor, args.settle)
        t1 = time.perf_counter()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", args.port, timeout=10)
        client = await connectProtocol(endpoint, dh_client_protocol()())
        await client.finished
        out["fresh_handshake_ms"] = 1e3 * (time.perf_counter() - t1)
        out["still_held"] = len(held) - lost[0]
        print(json.dumps({"phase": "fresh", **out}), flush=True)
        for staller in held:
            staller.transport.abortConnection()
        await task.deferLater(reactor, 0.5)

    task.react(lambda reactor: defer.Deferred.fromCoroutine(run()))


def run(server, connections, settle=2.0):
    """Hold ``connections`` on ``server`` (a started daemon with a long
    ``--timeout``); returns the staller's report with the server's RSS."""
    import subprocess

    rss_before = server.rss()
    command = process.python_module("keyxbench.stall", "--port", server.port,
                                    "--stall", connections, "--settle", settle,
                                    core=process.LOAD_CORE)
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=process.environment())
    held = json.loads(child.stdout.readline())
    time.sleep(min(1.0, settle / 2))
    rss_held = server.rss()
    fresh = json.loads(child.stdout.readline())
    child.wait(60)
    return dict(held, **fresh, rss_before=rss_before, rss_held=rss_held, rss_peak=server.peak_rss())


if __name__ == "__main__":
    sys.exit(main())
