"""Node presence: the node record's codec and the cluster view as plain functions, the heartbeat's timer on
a fake clock, and nodes that see each other, die, leave and live through a Redis outage on a real
redis-server."""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import pytest
import pytest_twisted
import txredisapi
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.task import Clock, deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import LogEvent, LogLevel, capturedLogs, formatEvent

from vchat.cluster.presence import (
    KEY_PREFIX,
    MAX_RECORD,
    ClusterView,
    NodeCounts,
    NodePresence,
    NodeRecord,
    Reading,
    check_node_id,
    decode_record,
    encode_record,
    parse_reading,
    total,
)
from vchat.store import redis_testing
from vchat.store.redis_testing import RedisServer

redis_server = redis_testing.redis_server  # the fixtures, by their names
redis_url = redis_testing.redis_url
own_redis = redis_testing.own_redis

INTERVAL = 0.1
TTL = 0.5

counts_strategy = st.builds(NodeCounts, st.integers(0, 2**53), st.integers(0, 2**53), st.integers(0, 2**53))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def record_text(**fields: object) -> str:
    """A record as JSON, from a valid one with `fields` changed (None: left out)."""
    data: dict[str, object] = {"online": 3, "searching": 1, "matched": 2, "started_at": 1.5}
    data.update(fields)
    return json.dumps({name: value for name, value in data.items() if value is not None})


# The record's codec


@given(counts_strategy, st.floats(allow_nan=False, allow_infinity=False))
def test_a_record_decodes_to_what_was_encoded(counts: NodeCounts, started_at: float) -> None:
    record = NodeRecord(counts, started_at)
    text = encode_record(record)
    assert text.isascii()
    assert decode_record(text) == decode_record(text.encode()) == record


def test_a_record_is_compact_json_with_named_figures() -> None:
    text = encode_record(NodeRecord(NodeCounts(3, 1, 2), 1.5))
    assert json.loads(text) == {"online": 3, "searching": 1, "matched": 2, "started_at": 1.5}
    assert " " not in text


def test_a_record_may_have_fields_it_does_not_know() -> None:
    assert decode_record(record_text(uptime=4, version="2.0")) == NodeRecord(NodeCounts(3, 1, 2), 1.5)
    assert decode_record(record_text(started_at=7)).started_at == 7.0


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("", "not JSON"),
        ("{", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ("3", "not a JSON object"),
        (record_text(online=None), "online"),
        (record_text(searching=-1), "searching"),
        (record_text(matched=True), "matched"),
        (record_text(online=1.0), "online"),
        (record_text(online="3"), "online"),
        (record_text(online=2**53 + 1), "online"),
        (record_text(started_at=None), "started_at"),
        (record_text(started_at="now"), "started_at"),
        (record_text(started_at=False), "started_at"),
        ('{"online":1,"searching":1,"matched":1,"started_at":NaN}', "started_at"),
        ('{"online":1,"searching":1,"matched":1,"started_at":Infinity}', "started_at"),
        (record_text(padding="x" * MAX_RECORD), "longer"),
        ("[" * 600 + "]" * 600, "longer"),
    ],
)
def test_a_malformed_record_is_refused_saying_why(raw: str | bytes, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        decode_record(raw)


@given(st.text(max_size=200) | st.binary(max_size=200))
def test_any_text_decodes_to_a_record_or_value_error(raw: str | bytes) -> None:
    with suppress(ValueError):
        decode_record(raw)


@given(json_values)
def test_any_json_decodes_to_a_record_or_value_error(value: object) -> None:
    try:
        record = decode_record(json.dumps(value))
    except ValueError:
        return
    assert all(0 <= figure <= 2**53 for figure in (record.counts.online, record.counts.searching))
    assert math.isfinite(record.started_at)


def test_node_ids_are_short_printable_ascii() -> None:
    assert check_node_id("a1-b2.c3_d4") == "a1-b2.c3_d4"
    for bad in ("", "with space", "é", "x" * 65, "tab\t", 12):
        with pytest.raises(ValueError, match="node id"):
            check_node_id(bad)  # type: ignore[arg-type]


# The heartbeat script's reply


def test_a_reading_parses_living_malformed_and_dead_nodes() -> None:
    good = encode_record(NodeRecord(NodeCounts(1, 0, 0), 2.0))
    reply = json.dumps([1, [["a", good], ["b", False], ["c", "junk"], ["bad-shape"], [7, good]], ["x", 8]])
    reading = parse_reading(reply.encode())
    assert reading.joined
    assert reading.living == {"a": NodeRecord(NodeCounts(1, 0, 0), 2.0)}
    assert reading.malformed.keys() == {"b", "c"}
    assert "ASCII" in reading.malformed["b"]
    assert reading.dead == ["x"]


def test_a_reading_takes_lua_s_empty_tables() -> None:
    assert parse_reading("[0,{},{}]") == Reading(False, {}, {}, [])


@pytest.mark.parametrize("reply", [None, 1, [], "", "{}", "[1, 2]", "[1, 2, 3]", '[0, {"a": 1}, []]'])
def test_a_reply_that_is_no_reading_is_a_value_error(reply: object) -> None:
    with pytest.raises(ValueError, match="reply"):
        parse_reading(reply)


@given(json_values)
def test_any_reply_parses_to_a_reading_or_value_error(value: object) -> None:
    with suppress(ValueError):
        parse_reading(json.dumps(value))


# The cluster view


def test_the_totals_sum_the_living_nodes_with_this_node_s_own_figures() -> None:
    view = ClusterView("me", max_age=5.0)
    assert view.totals(NodeCounts(1, 1, 0), now=0.0) == NodeCounts(1, 1, 0)
    view.read({"me": NodeCounts(100, 100, 100), "b": NodeCounts(2, 0, 2), "c": NodeCounts(3, 1, 2)}, now=10.0)
    assert view.nodes(NodeCounts(1, 1, 0), now=11.0) == {
        "me": NodeCounts(1, 1, 0),
        "b": NodeCounts(2, 0, 2),
        "c": NodeCounts(3, 1, 2),
    }
    assert view.totals(NodeCounts(1, 1, 0), now=11.0) == NodeCounts(6, 2, 4)
    assert view.totals(NodeCounts(1, 1, 0), now=15.5) == NodeCounts(1, 1, 0)  # stale
    view.read({"b": NodeCounts(2, 0, 2)}, now=16.0)
    view.lost()
    assert view.nodes(NodeCounts(1, 1, 0), now=16.0) == {"me": NodeCounts(1, 1, 0)}


operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("read"),
            st.dictionaries(st.sampled_from(["me", "a", "b", "c"]), counts_strategy, max_size=4),
        ),
        st.tuples(st.just("lost"), st.none()),
        st.tuples(st.just("wait"), st.floats(0.0, 3.0)),
    ),
    max_size=30,
)


@given(operations, counts_strategy)
def test_the_view_always_counts_this_node_live_and_others_only_while_fresh(
    steps: list[tuple[str, Any]], own: NodeCounts
) -> None:
    view = ClusterView("me", max_age=2.0)
    now, fresh_until, others = 0.0, -1.0, {}
    for kind, argument in steps:
        if kind == "read":
            view.read(argument, now)
            fresh_until = now + 2.0
            others = {node: counts for node, counts in argument.items() if node != "me"}
        elif kind == "lost":
            view.lost()
            fresh_until = -1.0
        else:
            now += argument
        nodes = view.nodes(own, now)
        assert nodes["me"] == own
        assert nodes == {**(others if now <= fresh_until else {}), "me": own}
        assert view.totals(own, now) == total(nodes.values())


# The heartbeat on a fake clock, with a fake Redis


class ScriptedRedis:
    """Answers each script with the next of `replies` (a Deferred, or a callable giving one), recording
    its arguments."""

    def __init__(self, *replies: Callable[[], Deferred[Any]]) -> None:
        self.replies = list(replies)
        self.calls: list[list[str]] = []

    def eval(self, script: str, keys: list[str] = [], args: list[str] = []) -> Deferred[Any]:  # noqa: B006
        self.calls.append(list(args))
        return self.replies.pop(0)() if self.replies else succeed("[0,{},{}]")


def answer(joined: int = 0, living: object = (), dead: object = ()) -> Callable[[], Deferred[Any]]:
    return lambda: succeed(json.dumps([joined, list(living), list(dead)]))


def presence_events(events: list[LogEvent]) -> list[LogEvent]:
    return [event for event in events if event.get("log_namespace") == NodePresence._log.namespace]


def texts(events: list[LogEvent], level: LogLevel | None = None) -> list[str]:
    return [
        formatEvent(event)
        for event in presence_events(events)
        if level is None or event["log_level"] == level
    ]


def test_the_presence_checks_its_settings() -> None:
    def nothing() -> NodeCounts:
        return NodeCounts()

    with pytest.raises(ValueError, match="interval"):
        NodePresence("a", ScriptedRedis(), Clock(), nothing, print, interval=5.0, ttl=5.0)
    with pytest.raises(ValueError, match="node id"):
        NodePresence("a b", ScriptedRedis(), Clock(), nothing, print)
    assert NodePresence("a", ScriptedRedis(), Clock(), nothing, print).name == "cluster-presence"


def test_the_heartbeat_writes_the_record_with_its_ttl_every_interval() -> None:
    clock = Clock()
    clock.advance(1000.0)
    redis = ScriptedRedis()
    presence = NodePresence("a", redis, clock, lambda: NodeCounts(4, 1, 2), print, interval=1.0, ttl=5.0)
    presence.startService()
    clock.advance(0.5)
    presence.stopService()
    assert len(redis.calls) == 2  # the first heartbeat, and leaving
    node, record, ttl, now = redis.calls[0]
    assert (node, ttl, float(now)) == ("a", "5000", 1000.0)
    assert decode_record(record) == NodeRecord(NodeCounts(4, 1, 2), 1000.0)
    assert redis.calls[1] == ["a"]
    assert not clock.getDelayedCalls()


def test_failures_of_the_callbacks_are_logged_and_the_heartbeat_goes_on() -> None:
    clock = Clock()
    figures = [NodeCounts(1, 0, 0)]

    def counts() -> NodeCounts:
        if not figures:
            raise RuntimeError("no figures")
        return figures[0]

    def on_node_dead(node: str) -> Deferred[None]:
        return fail(RuntimeError(f"cannot clean up after {node}"))

    redis = ScriptedRedis(answer(1, dead=["x"]), lambda: fail(RuntimeError("no")), answer(0, dead=["y"]))
    presence = NodePresence("a", redis, clock, counts, on_node_dead, interval=1.0, ttl=5.0)
    with capturedLogs() as events:
        presence.startService()
        figures.clear()
        clock.advance(1.0)
        clock.advance(1.0)
        clock.advance(1.0)
        presence.stopService()
    assert len(redis.calls) == 5  # four heartbeats, and leaving
    assert decode_record(redis.calls[3][1]).counts == NodeCounts(1, 0, 0)  # the last figures known
    failures = [formatEvent(event) for event in presence_events(events) if "log_failure" in event]
    assert sorted(failures) == [
        *["cannot count the users of node a"] * 3,
        "the cleanup after dead node x failed",
        "the cleanup after dead node y failed",
    ]
    assert len(texts(events, LogLevel.warn)) == 1  # the outage, once
    assert len(texts(events, LogLevel.info)) == 3  # two dead nodes, one recovery
    assert not clock.getDelayedCalls()


def test_a_heartbeat_redis_does_not_answer_times_out_and_is_not_repeated_meanwhile() -> None:
    clock = Clock()
    silent: Deferred[Any] = Deferred()
    redis = ScriptedRedis(lambda: silent, Deferred)
    presence = NodePresence("a", redis, clock, NodeCounts, print, interval=1.0, ttl=5.0, timeout=2.5)
    with capturedLogs() as events:
        presence.startService()
        clock.advance(2.0)
        assert len(redis.calls) == 1 and not texts(events)
        clock.advance(0.5)
        assert silent.called  # cancelled
        assert len(redis.calls) == 2  # the next heartbeat, at once: the first was late
        assert not presence.redis_available
        assert presence.nodes() == {"a": NodeCounts()}
        presence.stopService()
    [outage] = texts(events)
    assert "cannot reach Redis" in outage
    assert not clock.getDelayedCalls()


def test_stopping_during_an_outage_does_not_wait_for_redis() -> None:
    clock = Clock()
    redis = ScriptedRedis(lambda: fail(ConnectionError("down")), lambda: Deferred())
    presence = NodePresence("a", redis, clock, NodeCounts, print, interval=1.0, ttl=5.0)
    presence.startService()
    clock.advance(1.0)
    stopped = presence.stopService()
    assert stopped.called
    assert len(redis.calls) == 2  # no attempt to leave
    assert not clock.getDelayedCalls()


# Nodes on a real redis-server


class QuickRetry(txredisapi.RedisFactory):
    """Reconnects within a fifth of a second, so that a test need not wait for the real back-off."""

    initialDelay = 0.05
    maxDelay = 0.2


class Cluster:
    """Presences on one redis-server, each on a connection of its own, stopped and closed at the end."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.presences: dict[str, NodePresence] = {}
        self.figures: dict[str, NodeCounts] = {}
        self.dead: list[tuple[str, str]] = []  # (claimed by, dead node)
        self.connections: list[Any] = []

    async def connect(self, plain_client: bool = False) -> Any:
        """A connection as vchat's (bytes, numbers as sent), or with txredisapi's defaults (text,
        numbers converted)."""
        if plain_client:
            handler = await txredisapi.Connection(
                "127.0.0.1", self.server.port, password=self.server.password
            )
            self.connections.append(handler)
            return handler
        factory = QuickRetry(
            "test", None, 1, charset=None, password=self.server.password, convertNumbers=False
        )
        factory.startConnecting(HostnameEndpoint(reactor, "127.0.0.1", self.server.port))
        handler = await factory.deferred
        self.connections.append(handler)
        return handler

    async def start(self, node: str, counts: NodeCounts, plain_client: bool = False) -> NodePresence:
        self.figures[node] = counts
        connection = await self.connect(plain_client)
        presence = NodePresence(
            node,
            connection,
            reactor,
            lambda: self.figures[node],
            lambda dead: self.dead.append((node, dead)),
            interval=INTERVAL,
            ttl=TTL,
        )
        presence.startService()
        self.presences[node] = presence
        return presence

    async def close(self) -> None:
        for presence in self.presences.values():
            if presence.running:
                await presence.stopService()
        for connection in self.connections:
            await connection.disconnect()


@pytest_twisted.async_yield_fixture()
async def cluster(redis_url: str, redis_server: RedisServer) -> AsyncIterator[Cluster]:
    nodes = Cluster(redis_server)
    yield nodes
    await nodes.close()


async def eventually(check: Callable[[], bool], within: float = 3.0) -> float:
    """Wait until `check()` holds, polling; the seconds it took."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > within:
            raise AssertionError(f"not so within {within} s")
        await deferLater(reactor, 0.02, lambda: None)
    return time.monotonic() - start


async def pause(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


@contextmanager
def logs() -> Iterator[list[LogEvent]]:
    with capturedLogs() as events:
        yield events


@pytest_twisted.ensureDeferred
async def test_nodes_see_each_other_s_figures_and_the_totals(cluster: Cluster) -> None:
    a = await cluster.start("a", NodeCounts(3, 1, 2))
    b = await cluster.start("b", NodeCounts(5, 0, 4))
    c = await cluster.start("12345", NodeCounts(1, 1, 0), plain_client=True)  # a number, to a plain client
    everyone = {"a": NodeCounts(3, 1, 2), "b": NodeCounts(5, 0, 4), "12345": NodeCounts(1, 1, 0)}
    await eventually(lambda: all(presence.nodes() == everyone for presence in (a, b, c)))
    assert a.totals() == b.totals() == c.totals() == NodeCounts(9, 2, 6)
    assert a.redis_available

    cluster.figures["a"] = NodeCounts(4, 2, 2)
    assert a.totals() == NodeCounts(10, 3, 6)  # its own, at once
    await eventually(lambda: b.totals() == NodeCounts(10, 3, 6))  # the others', after a heartbeat

    server = cluster.server
    members = await deferToThread(server.command, "ZRANGE", KEY_PREFIX + "nodes", 0, -1)
    assert sorted(members) == [b"12345", b"a", b"b"]
    ttl = await deferToThread(server.command, "PTTL", KEY_PREFIX + "node:a")
    assert 0 < ttl <= TTL * 1000
    assert not cluster.dead


@pytest_twisted.ensureDeferred
async def test_a_crashed_node_is_found_dead_by_exactly_one_other(cluster: Cluster) -> None:
    await cluster.start("a", NodeCounts(1, 0, 0))
    b = await cluster.start("b", NodeCounts(1, 0, 0))
    c = await cluster.start("c", NodeCounts(1, 0, 0))
    await eventually(lambda: len(b.nodes()) == 3)
    await cluster.connections[2].disconnect()  # c can no longer reach Redis: for the others, it crashed
    took = await eventually(lambda: bool(cluster.dead))
    assert took < TTL + INTERVAL + 0.3
    await pause(TTL + 2 * INTERVAL)  # long enough for a second claim, if there were one
    assert [dead for _, dead in cluster.dead] == ["c"]
    assert cluster.dead[0][0] in ("a", "b")
    assert set(b.nodes()) == {"a", "b"}
    assert c.totals() == NodeCounts(1, 0, 0)  # c counts itself alone
    start = time.monotonic()
    await c.stopService()
    assert time.monotonic() - start < 0.2


@pytest_twisted.ensureDeferred
async def test_a_node_that_stops_leaves_at_once(cluster: Cluster) -> None:
    a = await cluster.start("a", NodeCounts(1, 0, 0))
    b = await cluster.start("b", NodeCounts(2, 0, 0))
    await eventually(lambda: len(a.nodes()) == 2)
    await b.stopService()
    server = cluster.server
    assert await deferToThread(server.command, "EXISTS", KEY_PREFIX + "node:b") == 0
    assert await deferToThread(server.command, "ZSCORE", KEY_PREFIX + "nodes", "b") is None
    assert b.totals() == NodeCounts(2, 0, 0)
    took = await eventually(lambda: a.nodes() == {"a": NodeCounts(1, 0, 0)})
    assert took < INTERVAL + 0.2
    await pause(TTL + INTERVAL)
    assert not cluster.dead


@pytest_twisted.ensureDeferred
async def test_malformed_records_are_left_out_and_logged_once(cluster: Cluster) -> None:
    server = cluster.server
    good = encode_record(NodeRecord(NodeCounts(7, 0, 6), 1.0))
    written: list[tuple[str | bytes, str | bytes]] = [
        ("good", good),
        ("json", "not json"),
        ("negative", record_text(online=-1)),
        ("binary", b"\xff\xfe" + good.encode()),
        ("long", record_text(padding="x" * 2000)),
        ("ünïcode".encode(), good),
    ]
    for node, record in written:
        await deferToThread(server.command, "SET", KEY_PREFIX.encode() + b"node:" + _bytes(node), record)
    await deferToThread(server.command, "HSET", KEY_PREFIX + "node:hash", "online", "1")
    for node in [*(node for node, _ in written), "hash", "ghost"]:
        await deferToThread(server.command, "ZADD", KEY_PREFIX + "nodes", 1, node)
    with logs() as events:
        a = await cluster.start("a", NodeCounts(1, 0, 0))
        await eventually(lambda: len(a.nodes()) == 2)
        await pause(5 * INTERVAL)
    assert a.nodes() == {"a": NodeCounts(1, 0, 0), "good": NodeCounts(7, 0, 6)}
    assert a.totals() == NodeCounts(8, 0, 6)
    warnings = texts(events, LogLevel.warn)
    assert len(warnings) == 5  # json, negative, binary, long, hash: once each
    assert sum("node json's record" in text for text in warnings) == 1
    assert not [event for event in presence_events(events) if "log_failure" in event]
    assert cluster.dead == [("a", "ghost")]  # registered, with no record: dead


def _bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


@pytest_twisted.ensureDeferred
async def test_through_a_redis_outage_each_node_counts_itself_and_logs_once(own_redis: RedisServer) -> None:
    cluster = Cluster(own_redis)
    try:
        with logs() as events:
            a = await cluster.start("a", NodeCounts(1, 0, 0))
            b = await cluster.start("b", NodeCounts(2, 1, 0))
            await eventually(lambda: len(a.nodes()) == len(b.nodes()) == 2)

            await deferToThread(own_redis.stop)
            await eventually(lambda: not a.redis_available and not b.redis_available)
            assert a.totals() == NodeCounts(1, 0, 0)
            assert b.nodes() == {"b": NodeCounts(2, 1, 0)}
            await pause(6 * INTERVAL)
            outages = [text for text in texts(events, LogLevel.warn) if "cannot reach Redis" in text]
            assert len(outages) == 2  # one each

            await deferToThread(own_redis.restart)  # with none of its data
            await eventually(lambda: len(a.nodes()) == len(b.nodes()) == 2)
            await pause(3 * INTERVAL)
        assert a.totals() == b.totals() == NodeCounts(3, 1, 0)
        assert await deferToThread(own_redis.command, "EXISTS", KEY_PREFIX + "node:a") == 1
        recoveries = [text for text in texts(events, LogLevel.info) if "reaches Redis again" in text]
        assert len(recoveries) == 2
        assert len(texts(events, LogLevel.warn)) == 4  # and one "registered again" each
        assert not [event for event in presence_events(events) if "log_failure" in event]
        assert not cluster.dead
    finally:
        await cluster.close()
