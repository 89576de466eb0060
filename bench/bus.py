"""Cross-node messages: how long a message takes from `NodeBus.send` on one node to the handler on another.

Run from the repository root with the project's Python:

    .venv/bin/python bench/bus.py [--messages 5000] [--warmup 500] [--burst 20000] [--json FILE]

It starts its own redis-server (Debian's, on a free loopback port, in a temporary directory, as the tests do)
and two node buses in this process, on one reactor, so both ends use one clock. For each kind of message (a
`chat` of about 100 bytes, and a relayed `signal` carrying a 4 KB SDP offer), node A sends --messages messages
one at a time to node B, each only once the one before has reached B's handler: what is measured is the time
from the call to `send` to the call of the handler, without queueing behind other messages. That includes
encoding and checking the message, the PUBLISH through Redis, and decoding and checking on arrival; both ends
and redis-server share the machine's cores. The same is measured for raw pub/sub (txredisapi publishing bytes
straight to a subscriber, no encoding or checks), to show what the bus itself adds. Then A sends --burst
messages back to back, and the rate at which B receives them is reported.

The issue's target: added latency under a millisecond on loopback (p99 of send -> handler).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import txredisapi
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import react

from vchat.bot.stats import percentile
from vchat.cluster.bus import NodeBus
from vchat.cluster.wire import encode_message
from vchat.redis_connection import parse_redis_url
from vchat.store.redis_testing import RedisServer, start_redis

TARGET_P99_MS = 1.0
SDP = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n" + "a=candidate:1 1 udp 2122260223 ...\r\n" * 110
KINDS: dict[str, dict[str, Any]] = {
    "chat (~100 B)": {"type": "chat", "session": "Nq3xK9aZ", "match_id": "m-1", "text": "hello there! " * 4},
    "signal (~4 KB)": {"type": "signal", "session": "Nq3xK9aZ", "match_id": "m-1", "payload": {"sdp": SDP}},
}


class Probe:
    """Sends one message at a time and times its arrival."""

    def __init__(self, send: Callable[[int], object], count: int, warmup: int) -> None:
        self.send = send
        self.count = count
        self.warmup = warmup
        self.sent_at = 0
        self.n = 0
        self.times_us: list[float] = []
        self.done: Deferred[list[float]] = Deferred()

    def start(self) -> Deferred[list[float]]:
        self._next()
        return self.done

    def _next(self) -> None:
        self.sent_at = time.perf_counter_ns()
        self.send(self.n)

    def arrived(self, n: int) -> None:
        elapsed = (time.perf_counter_ns() - self.sent_at) / 1000
        assert n == self.n, f"message {n} arrived while {self.n} was awaited"
        if n >= self.warmup:
            self.times_us.append(elapsed)
        self.n += 1
        if self.n == self.warmup + self.count:
            self.done.callback(self.times_us)
        else:
            self._next()


def summary(times_us: list[float]) -> dict[str, float]:
    ordered = sorted(times_us)
    return {
        "p50_us": round(percentile(ordered, 50), 1),
        "p90_us": round(percentile(ordered, 90), 1),
        "p99_us": round(percentile(ordered, 99), 1),
        "max_us": round(ordered[-1], 1),
        "mean_us": round(sum(ordered) / len(ordered), 1),
    }


async def bus_latency(url: str, message: dict[str, Any], count: int, warmup: int) -> list[float]:
    probe: Probe | None = None

    def received(got: dict[str, Any], broadcast: bool) -> None:
        assert probe is not None
        probe.arrived(got["n"])

    a = NodeBus(_reactor, parse_redis_url(url), "bench-a", lambda m, b: None)
    b = NodeBus(_reactor, parse_redis_url(url), "bench-b", received)
    await a.connect()
    await b.connect()
    try:
        probe = Probe(lambda n: a.send("bench-b", {**message, "n": n}), count, warmup)
        return await probe.start()
    finally:
        await a.disconnect()
        await b.disconnect()


async def raw_latency(server: RedisServer, message: dict[str, Any], count: int, warmup: int) -> list[float]:
    """The same over txredisapi alone: the bytes the bus would send, with no encoding or checks."""
    payload = encode_message(message)
    probe: Probe | None = None

    class Subscriber(txredisapi.SubscriberProtocol):  # type: ignore[misc]
        def messageReceived(self, pattern: object, channel: bytes, data: bytes) -> None:
            assert probe is not None
            probe.arrived(int(data[:12]))

    factory = txredisapi.SubscriberFactory()
    factory.protocol = Subscriber
    factory.charset = None
    factory.password = server.password
    protocol: Any = await TCP4ClientEndpoint(_reactor, "127.0.0.1", server.port).connect(factory)
    await protocol.whenConnected()
    await protocol.subscribe("bench-raw")
    publisher = await txredisapi.Connection(
        "127.0.0.1", server.port, password=server.password, reconnect=False, charset=None
    )
    try:
        probe = Probe(lambda n: publisher.publish("bench-raw", b"%012d" % n + payload), count, warmup)
        return await probe.start()
    finally:
        await publisher.disconnect()
        protocol.transport.loseConnection()


async def burst_rate(url: str, message: dict[str, Any], count: int) -> dict[str, float]:
    arrived = 0
    finished: Deferred[float] = Deferred()

    def received(got: dict[str, Any], broadcast: bool) -> None:
        nonlocal arrived
        arrived += 1
        if arrived == count:
            finished.callback(time.perf_counter())

    a = NodeBus(_reactor, parse_redis_url(url), "burst-a", lambda m, b: None)
    b = NodeBus(_reactor, parse_redis_url(url), "burst-b", received)
    await a.connect()
    await b.connect()
    try:
        started = time.perf_counter()
        for n in range(count):
            a.send("burst-b", {**message, "n": n})
        sent = time.perf_counter()
        ended = await finished
    finally:
        await a.disconnect()
        await b.disconnect()
    return {
        "messages": count,
        "send_calls_per_s": round(count / (sent - started)),
        "received_per_s": round(count / (ended - started)),
    }


async def main(reactor: Any, options: argparse.Namespace) -> None:
    results: dict[str, Any] = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
        "messages": options.messages,
        "warmup": options.warmup,
        "latency": {},
        "raw_pubsub": {},
    }
    with tempfile.TemporaryDirectory(prefix="vchat-bench-bus-") as directory:
        server = start_redis(Path(directory))
        try:
            info = server.command("INFO", "server")
            assert isinstance(info, bytes)
            results["redis"] = info.split(b"redis_version:")[1].split(b"\r")[0].decode()
            for name, message in KINDS.items():
                times = await bus_latency(server.url, message, options.messages, options.warmup)
                raw = await raw_latency(server, message, options.messages, options.warmup)
                results["latency"][name] = summary(times)
                results["raw_pubsub"][name] = summary(raw)
            results["burst"] = await burst_rate(server.url, KINDS["chat (~100 B)"], options.burst)
        finally:
            server.stop()
    out = sys.stdout
    out.write(f"redis-server {results['redis']}, Python {results['python']}, {results['date_utc']} UTC\n")
    out.write(
        f"send -> handler, one message at a time ({options.messages} after {options.warmup} warm-up):\n"
    )
    out.write(f"{'message':16} {'path':10} {'p50 µs':>8} {'p90 µs':>8} {'p99 µs':>8} {'max µs':>8}\n")
    for name in KINDS:
        for path, figures in (("bus", results["latency"][name]), ("raw", results["raw_pubsub"][name])):
            out.write(
                f"{name:16} {path:10} {figures['p50_us']:8.1f} {figures['p90_us']:8.1f} "
                f"{figures['p99_us']:8.1f} {figures['max_us']:8.1f}\n"
            )
    burst = results["burst"]
    out.write(
        f"burst of {burst['messages']} chats: send() {burst['send_calls_per_s']:,}/s, "
        f"received {burst['received_per_s']:,}/s\n"
    )
    worst = max(figures["p99_us"] for figures in results["latency"].values())
    verdict = "met" if worst < TARGET_P99_MS * 1000 else "NOT met"
    out.write(f"target: p99 under {TARGET_P99_MS:g} ms: {verdict} (worst p99 {worst:.0f} µs)\n")
    if options.json:
        Path(options.json).write_text(json.dumps(results, indent=2) + "\n")


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=5000, help="timed messages per kind")
    parser.add_argument("--warmup", type=int, default=500, help="messages sent first, not timed")
    parser.add_argument("--burst", type=int, default=20000, help="messages sent back to back")
    parser.add_argument("--json", help="also write the figures to this file")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    react(lambda reactor: Deferred.fromCoroutine(main(reactor, arguments)))
