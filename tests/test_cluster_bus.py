"""The node bus against a real redis-server: messages both ways and in order, broadcasts, malformed payloads,
a Redis that goes away and comes back, and what starting says when Redis cannot be used."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgpack
import pytest
import pytest_twisted
import txredisapi
from twisted.internet import reactor
from twisted.internet.defer import fail
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import LogEvent, capturedLogs, formatEvent
from twisted.python.failure import Failure

from vchat.cluster.bus import NodeBus, NodeBusService
from vchat.cluster.wire import BROADCAST_CHANNEL, MAX_MESSAGE_BYTES, WireError, inbox_channel
from vchat.redis_connection import RedisUnavailable, parse_redis_url
from vchat.store import redis_testing
from vchat.store.redis_testing import RedisServer, free_port, running_redis

redis_server = redis_testing.redis_server  # the fixtures, by their names
redis_url = redis_testing.redis_url


class Inbox:
    """What one node's handler received: (message, broadcast) in order."""

    def __init__(self) -> None:
        self.messages: list[tuple[dict[str, Any], bool]] = []

    def __call__(self, message: dict[str, Any], broadcast: bool) -> None:
        self.messages.append((message, broadcast))


async def until(condition: Callable[[], bool], within: float = 20.0) -> None:
    """Wait for `condition`, turning the reactor; fail after `within` seconds (a bound, not a measurement)."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition did not come true in time")
        await deferLater(reactor, 0.01, lambda: None)


def publish_count(server: RedisServer) -> int:
    """How many PUBLISH commands Redis has run."""
    stats = server.command("INFO", "commandstats").decode()
    line = next((line for line in stats.splitlines() if line.startswith("cmdstat_publish:")), "calls=0,")
    return int(line.split("calls=")[1].split(",")[0])


@asynccontextmanager
async def connected(
    url: str, node_id: str, handler: Callable[[dict[str, Any], bool], object]
) -> AsyncIterator[NodeBus]:
    """A bus of node `node_id`, connected for the block, then disconnected."""
    bus = NodeBus(reactor, parse_redis_url(url), node_id, handler)
    await bus.connect()
    try:
        yield bus
    finally:
        await bus.disconnect()


async def publish_raw(server: RedisServer, channel: str, data: bytes) -> int:
    """PUBLISH `data` as it is, through a connection of its own; the number of subscribers that got it."""
    connection = await txredisapi.Connection(
        "127.0.0.1", server.port, password=server.password, reconnect=False, charset=None
    )
    try:
        receivers: int = await connection.publish(channel, data)
        return receivers
    finally:
        await connection.disconnect()


def lines(events: list[LogEvent]) -> list[str]:
    return [formatEvent(event) for event in events]


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, to stop and start again."""
    with running_redis(tmp_path / "redis") as server:
        yield server


@pytest_twisted.ensureDeferred
async def test_two_nodes_exchange_messages_both_ways(redis_url: str) -> None:
    a_inbox, b_inbox = Inbox(), Inbox()
    async with connected(redis_url, "node-a", a_inbox) as a, connected(redis_url, "node-b", b_inbox) as b:
        assert a.connected and b.connected
        assert a.send("node-b", {"type": "chat", "session": "s1", "text": "hi", "blob": b"\x00\xff"})
        assert b.send("node-a", {"type": "partner_left", "session": "s2", "reason": "disconnect"})
        await until(lambda: len(a_inbox.messages) == 1 and len(b_inbox.messages) == 1)
        assert b_inbox.messages == [
            ({"type": "chat", "session": "s1", "text": "hi", "blob": b"\x00\xff"}, False)
        ]
        assert a_inbox.messages == [
            ({"type": "partner_left", "session": "s2", "reason": "disconnect"}, False)
        ]
        assert (a.counters.sent, a.counters.received, b.counters.sent, b.counters.received) == (1, 1, 1, 1)
        assert a.counters.dropped == a.counters.malformed == 0


@pytest_twisted.ensureDeferred
async def test_a_thousand_messages_arrive_in_the_order_sent(redis_url: str) -> None:
    received = Inbox()
    async with connected(redis_url, "sender", Inbox()) as sender, connected(redis_url, "receiver", received):
        for n in range(1000):
            assert sender.send("receiver", {"type": "signal", "n": n, "payload": {"sdp": "x" * (n % 50)}})
        await until(lambda: len(received.messages) == 1000)
    assert [message["n"] for message, _ in received.messages] == list(range(1000))


@pytest_twisted.ensureDeferred
async def test_messages_sent_in_one_turn_go_in_one_publish_and_keep_their_order_across_channels(
    redis_server: RedisServer, redis_url: str
) -> None:
    received = Inbox()
    async with (
        connected(redis_url, "sender", Inbox()) as sender,
        connected(redis_url, "receiver", received) as receiver,
    ):
        publishes = publish_count(redis_server)
        for n in range(5):
            sender.send("receiver", {"type": "relay", "n": n})
        sender.broadcast({"type": "ban", "n": 5})
        sender.send("receiver", {"type": "relay", "n": 6})
        assert sender.counters.sent == 0  # published at the end of this turn
        await until(lambda: len(received.messages) == 7)
        assert sender.counters.sent == 7 and receiver.counters.received == 7
        assert publish_count(redis_server) - publishes == 3  # the run of five, the broadcast, the last one
    assert [(message["n"], broadcast) for message, broadcast in received.messages] == [
        (0, False),
        (1, False),
        (2, False),
        (3, False),
        (4, False),
        (5, True),
        (6, False),
    ]


@pytest_twisted.ensureDeferred
async def test_a_broadcast_reaches_every_node_the_sender_included(redis_url: str) -> None:
    inboxes = [Inbox(), Inbox(), Inbox()]
    async with (
        connected(redis_url, "n1", inboxes[0]) as first,
        connected(redis_url, "n2", inboxes[1]),
        connected(redis_url, "n3", inboxes[2]),
    ):
        assert first.broadcast({"type": "ban", "ban_id": "b1"})
        await until(lambda: all(inbox.messages for inbox in inboxes))
        await deferLater(reactor, 0.1, lambda: None)  # nothing more comes
    for inbox in inboxes:
        assert inbox.messages == [({"type": "ban", "ban_id": "b1"}, True)]


@pytest_twisted.ensureDeferred
async def test_a_message_to_one_node_reaches_no_other(redis_url: str) -> None:
    one, other = Inbox(), Inbox()
    async with connected(redis_url, "one", one) as first, connected(redis_url, "other", other):
        first.send("one", {"type": "kick", "session": "s"})  # a node may write to its own inbox
        await until(lambda: bool(one.messages))
        await deferLater(reactor, 0.1, lambda: None)
    assert one.messages == [({"type": "kick", "session": "s"}, False)] and other.messages == []


def nested(depth: int) -> Any:
    """A list `depth` lists deep."""
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


MALFORMED = [
    b"",
    b"\xc1",  # never used in msgpack
    b"\x93\x01\x02\x03",  # a list
    msgpack.packb({"text": "no type"}),
    msgpack.packb({"type": 7}),
    msgpack.packb({"type": ""}),
    msgpack.packb({"type": "chat", 1: "integer key"}, strict_types=False),
    msgpack.packb({"type": "chat", "at": msgpack.Timestamp(1, 0)}),
    msgpack.packb({"type": "chat", "ext": msgpack.ExtType(5, b"x")}),
    msgpack.packb({"type": "chat"}) + b"\x00",  # trailing bytes
    msgpack.packb({"type": "chat", "deep": nested(70)}),  # too deep
    b"\x81\xa4type" + msgpack.packb("x" * MAX_MESSAGE_BYTES),  # too large
]


@pytest_twisted.ensureDeferred
async def test_malformed_payloads_are_dropped_and_counted(redis_server: RedisServer, redis_url: str) -> None:
    received = Inbox()
    async with connected(redis_url, "target", received) as bus:
        with capturedLogs() as events:
            for data in MALFORMED:
                assert await publish_raw(redis_server, inbox_channel("target"), data) == 1
            assert await publish_raw(redis_server, BROADCAST_CHANNEL, b"\xc1") == 1
            await until(lambda: bus.counters.malformed == len(MALFORMED) + 1)
        assert received.messages == [] and bus.counters.received == 0
        # A flood is logged at 1, 2, 4, 8... dropped messages, not once each.
        logged = [line for line in lines(events) if "malformed message" in line]
        assert len(logged) == 4 and "(8 so far)" in logged[-1]
        assert bus.send("target", {"type": "after"})  # and the bus goes on
        await until(lambda: bool(received.messages))
        assert received.messages == [({"type": "after"}, False)]


@pytest_twisted.ensureDeferred
async def test_a_failing_handler_is_logged_and_the_bus_goes_on(redis_url: str) -> None:
    seen: list[dict[str, Any]] = []

    def handler(message: dict[str, Any], broadcast: bool) -> object:
        seen.append(message)
        if message["type"] == "raise":
            raise RuntimeError("bug")
        if message["type"] == "fail":
            return fail(RuntimeError("later bug"))
        return None

    async with connected(redis_url, "node", handler) as bus:
        with capturedLogs() as events:
            for kind in ("raise", "fail", "fine"):
                bus.send("node", {"type": kind, "secret": "never logged"})
            await until(lambda: len(seen) == 3)
        failures = [event for event in events if "log_failure" in event]
        assert [formatEvent(event) for event in failures] == [
            "handling a 'raise' message from another node failed",
            "handling a 'fail' message from another node failed",
        ]
        assert "never logged" not in repr(lines(events))
        assert bus.counters.received == 3


@pytest_twisted.ensureDeferred
async def test_what_cannot_go_between_nodes_is_refused_before_sending(redis_url: str) -> None:
    async with connected(redis_url, "node", Inbox()) as bus:
        with pytest.raises(WireError):
            bus.send("node", {"type": "chat", "when": (1, 2)})
        with pytest.raises(WireError):
            bus.broadcast({"no": "type"})
        with pytest.raises(ValueError, match="not a node id"):
            bus.send("has space", {"type": "chat"})
        assert bus.counters.sent == bus.counters.dropped == 0


@pytest_twisted.ensureDeferred
async def test_redis_going_away_drops_at_once_and_coming_back_resubscribes(own_redis: RedisServer) -> None:
    a_inbox, b_inbox = Inbox(), Inbox()
    with capturedLogs() as events:
        async with (
            connected(own_redis.url, "node-a", a_inbox) as a,
            connected(own_redis.url, "node-b", b_inbox) as b,
        ):
            await deferToThread(own_redis.stop)
            await until(lambda: not a.connected and not b.connected)
            started = time.monotonic()
            for n in range(1000):
                assert a.send("node-b", {"type": "chat", "n": n}) is False
            assert time.monotonic() - started < 5.0  # nothing waits for Redis (a loose bound: a slow CI box)
            assert a.broadcast({"type": "ban"}) is False
            assert (a.counters.dropped, a.counters.sent) == (1001, 0)
            await deferLater(reactor, 1.5, lambda: None)  # reconnection attempts fail meanwhile
            assert not a.connected

            await deferToThread(own_redis.restart)
            await until(lambda: a.connected and b.connected)
            assert a.send("node-b", {"type": "chat", "n": "after"})
            assert b.send("node-a", {"type": "chat", "n": "after"})
            await until(lambda: bool(a_inbox.messages) and bool(b_inbox.messages))
            assert b_inbox.messages == [({"type": "chat", "n": "after"}, False)]
            assert a_inbox.messages == [({"type": "chat", "n": "after"}, False)]
    logged = lines(events)
    address = f"redis://127.0.0.1:{own_redis.port}/0"
    lost = [line for line in logged if line.startswith(f"lost the connection to Redis at {address}")]
    back = [line for line in logged if line.startswith(f"the connection to Redis at {address} is back")]
    assert len(lost) == 2 and len(back) == 2  # once for each node
    assert "(1001 messages to other nodes dropped meanwhile)" in " ".join(back)
    assert own_redis.password not in repr(logged)


@pytest_twisted.ensureDeferred
async def test_a_bus_not_connected_drops(redis_url: str) -> None:
    bus = NodeBus(reactor, parse_redis_url(redis_url), "idle", Inbox())
    assert bus.send("other", {"type": "chat"}) is False and bus.counters.dropped == 1
    await bus.connect()
    await bus.disconnect()
    assert not bus.connected
    assert bus.broadcast({"type": "ban"}) is False and bus.counters.dropped == 2


async def connect_error(url: str, timeout: float = 5.0) -> str:
    bus = NodeBus(reactor, parse_redis_url(url), "node", Inbox(), timeout)
    try:
        await bus.connect()
    except RedisUnavailable as e:
        return str(e)
    await bus.disconnect()
    raise AssertionError(f"the bus connected to {url}")


@pytest_twisted.ensureDeferred
async def test_connecting_fails_at_once_with_advice(redis_server: RedisServer) -> None:
    unreachable = await connect_error(f"redis://127.0.0.1:{free_port()}/0")
    assert unreachable.startswith("cannot reach Redis at redis://127.0.0.1:")
    assert "is it running" in unreachable
    wrong = await connect_error(f"redis://:wrong@127.0.0.1:{redis_server.port}/0")
    assert wrong.startswith(f"Redis at redis://127.0.0.1:{redis_server.port}/0 refused vchat")
    silent = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
    try:
        where = f"127.0.0.1:{silent.getHost().port}/0"
        assert (
            await connect_error(f"redis://:secret@{where}", 0.3)
            == f"Redis at redis://{where} did not answer within 0.3 s"
        )
    finally:
        await silent.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_user_without_the_channels_cannot_connect(redis_server: RedisServer) -> None:
    redis_server.command("ACL", "SETUSER", "nochannels", "on", ">pw", "~*", "resetchannels", "+@all")
    try:
        message = await connect_error(f"redis://nochannels:pw@127.0.0.1:{redis_server.port}/0")
    finally:
        redis_server.command("ACL", "DELUSER", "nochannels")
    assert message.startswith(
        f"Redis at redis://127.0.0.1:{redis_server.port}/0 refused to subscribe: NOPERM"
    )


@pytest_twisted.ensureDeferred
async def test_the_service_connects_at_start_and_disconnects_at_stop(redis_url: str) -> None:
    failures: list[None] = []
    service = NodeBusService(
        NodeBus(reactor, parse_redis_url(redis_url), "node", Inbox()), lambda: failures.append(None)
    )
    assert service.name == "cluster-bus"
    for _ in range(2):  # it may be started again
        service.startService()
        await service.whenConnected()
        assert service.bus.connected
        await service.stopService()
        assert not service.bus.connected and service.bus.send("node", {"type": "x"}) is False
    assert failures == []


@pytest_twisted.ensureDeferred
async def test_the_service_reports_a_failure_to_start() -> None:
    failures: list[None] = []
    bus = NodeBus(reactor, parse_redis_url(f"redis://127.0.0.1:{free_port()}/0"), "node", Inbox())
    service = NodeBusService(bus, lambda: failures.append(None))
    with capturedLogs() as events:
        service.startService()
        with pytest.raises(RedisUnavailable):
            await service.whenConnected()
    assert failures == [None]
    assert lines(events)[-1].startswith("cannot start the node bus: cannot reach Redis at redis://127.0.0.1:")
    await service.stopService()


@pytest_twisted.ensureDeferred
async def test_stopping_the_service_while_it_connects_cancels_the_connection() -> None:
    silent = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
    try:
        failures: list[None] = []
        url = f"redis://:secret@127.0.0.1:{silent.getHost().port}/0"
        service = NodeBusService(
            NodeBus(reactor, parse_redis_url(url), "node", Inbox()), lambda: failures.append(None)
        )
        service.startService()
        waiting = service.whenConnected()
        await deferLater(reactor, 0.05, lambda: None)
        started = time.monotonic()
        await service.stopService()
        assert time.monotonic() - started < 5.0  # not the 10 s timeout
        assert failures == []
        outcome: list[object] = []
        waiting.addBoth(outcome.append)
        assert isinstance(outcome[0], Failure)
    finally:
        await silent.stopListening()


def test_send_needs_a_dict_of_a_known_shape() -> None:
    """Checked before anything goes to Redis, so no reactor is needed."""
    bus = NodeBus(reactor, parse_redis_url("redis://127.0.0.1:1/0"), "node", Inbox())
    with pytest.raises(WireError):
        bus.send("node", {"type": "x", "too_big": b"x" * MAX_MESSAGE_BYTES})
    with pytest.raises(ValueError, match="not a node id"):
        NodeBus(reactor, parse_redis_url("redis://127.0.0.1:1/0"), "", Inbox())


@pytest_twisted.ensureDeferred
async def test_an_inbox_redis_stops_answering_is_found_by_its_keepalive(
    own_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection that stays open while Redis answers nothing (as through a network cut) is dropped by the
    inbox's PING going unanswered for the timeout, and made again."""
    monkeypatch.setattr("vchat.cluster.bus.KEEPALIVE_INTERVAL", 0.1)
    inbox = Inbox()
    bus = NodeBus(reactor, parse_redis_url(own_redis.url), "node", inbox, timeout=0.5)
    await bus.connect()
    try:
        with capturedLogs() as events:
            own_redis.command("CLIENT", "PAUSE", "1500", "ALL")
            await until(lambda: not bus.connected)
            await until(lambda: bus.connected)
        assert bus.send("node", {"type": "after"})
        await until(lambda: bool(inbox.messages))
    finally:
        await bus.disconnect()
    logged = lines(events)
    assert sum(line.startswith("lost the connection") for line in logged) == 1
    assert sum(" is back, " in line for line in logged) == 1
