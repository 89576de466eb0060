"""The figures behind /api/stats: they move as sessions come and go, match, relay, report, get flagged and
banned, as the webhook's queue fills, and as STUN answers and drops requests over real loopback sockets; in
cluster mode, nodes on a real redis-server list and sum each other's figures, and count this node alone
while Redis is gone."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from test_admin_openapi import record_schema
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock, deferLater
from twisted.internet.threads import deferToThread
from zope.interface import implementer

from vchat.admin.figures import ClusterSources, Figures, Stats
from vchat.cluster.bus import NodeBus
from vchat.cluster.presence import NodeCounts, NodePresence
from vchat.cluster.wire import inbox_channel
from vchat.matching import MatchingEngine
from vchat.moderation.rules import BanAction, FlagAction, IModerationRule
from vchat.moderation.service import ModerationService
from vchat.moderation.signals import Signals
from vchat.moderation.webhook import ModerationWebhook
from vchat.protocol.errors import ProtocolError
from vchat.protocol.messages import Hello, Report, Search
from vchat.protocol.session import Session
from vchat.protocol.switchboard import Switchboard
from vchat.redis_connection import connect_redis, parse_redis_url
from vchat.store import redis_testing
from vchat.store.memory import MemoryStore
from vchat.store.redis_testing import RedisServer
from vchat.store.service import StoreService
from vchat.stun.config import StunConfig
from vchat.stun.service import StunService
from vchat.stun.testing import UdpClient, request, start_stun
from vchat.testing import RecordingPeer, fired

redis_server = redis_testing.redis_server  # the fixtures, by their names
redis_url = redis_testing.redis_url
own_redis = redis_testing.own_redis

ANY = Search("any", frozenset())
INTERVAL = 0.1
"""Seconds between a test node's heartbeats."""
TTL = 0.5


@implementer(IModerationRule)
@dataclass(frozen=True)
class OnEvent:
    """A rule that acts on a session's first `event`."""

    name: str
    event: str
    action: FlagAction | BanAction

    def configure(self, options: Mapping[str, Any]) -> OnEvent:
        return self

    def judge(self, signals: Signals, now: float) -> FlagAction | BanAction | None:
        return self.action if signals.event == self.event else None


class Unreachable:
    """An `IWebhookClient` never asked: the webhook is not started, so its queue only fills."""

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Deferred[Any]:
        raise AssertionError("the webhook is not started")

    def close(self) -> Deferred[None]:
        return succeed(None)


class Rig:
    """A switchboard, its engine and moderation (on a memory store) on a driven clock, and their figures."""

    def __init__(
        self,
        rules: tuple[IModerationRule, ...] = (),
        webhook: bool = False,
        stun: StunService | None = None,
    ) -> None:
        self.clock = Clock()
        self.engine = MatchingEngine()
        self.board = Switchboard(self.clock, self.engine, resume_grace=15.0)
        stores = StoreService(lambda: succeed(MemoryStore()), self.clock, on_failure=lambda: None)
        self.moderation = ModerationService(stores, self.board, self.clock, rules=rules)
        stores.startService()
        self.moderation.startService()
        self.webhook = None
        if webhook:
            self.webhook = self.moderation.webhook = ModerationWebhook(
                "http://127.0.0.1:1/hook", "secret", self.clock, Unreachable(), lambda *_: None, queue_size=1
            )
        self.stun = stun
        self.figures = self.figures_with()

    def figures_with(self, cluster: ClusterSources | None = None) -> Figures:
        """The rig's figures: those of a node in cluster mode with `cluster`, or of a single node."""
        return Figures(
            self.board, self.engine, self.moderation, lambda: self.stun, self.webhook, cluster=cluster
        )

    def join(self, gender: str = "m") -> tuple[Session, RecordingPeer]:
        peer = RecordingPeer()
        return self.board.open(Hello(gender, None, {}, None), peer, country=None), peer

    def pair(self) -> tuple[Session, Session]:
        (a, _), (b, _) = self.join("f"), self.join("m")
        self.board.search(a, ANY)
        self.board.search(b, ANY)
        return a, b

    def stats(self) -> Stats:
        return self.figures.stats()


def test_the_shape_of_a_fresh_servers_figures() -> None:
    stats = Rig().stats()
    assert set(stats) == {
        "sessions", "matches_total", "messages_relayed_total", "reports_total", "bans_active",
        "moderation_actions_total", "queue_lengths", "stun", "webhook", "process", "cluster",
    }  # fmt: skip
    assert stats["sessions"] == {"online": 0, "kept": 0, "searching": 0, "matched": 0}
    assert stats["messages_relayed_total"] == {"signal": 0, "chat": 0, "typing": 0}
    assert stats["moderation_actions_total"] == {"flag": 0, "ban": 0}
    assert stats["matches_total"] == stats["reports_total"] == stats["bans_active"] == 0
    assert len(stats["queue_lengths"]) == 9 and all(q["waiting"] == 0 for q in stats["queue_lengths"])
    assert stats["stun"] == {"enabled": False, "running": False, "answered_total": 0, "dropped_total": 0}
    assert stats["webhook"] == {"enabled": False, "queued": 0, "dropped_total": 0}
    assert stats["cluster"]["enabled"] is False
    process = stats["process"]
    assert set(process) == {"cpu_seconds_total", "resident_memory_bytes", "open_fds", "start_time_seconds"}
    assert isinstance(process["cpu_seconds_total"], float) and isinstance(process["open_fds"], int)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="no /proc here: the figures are zeros")
def test_process_figures_come_from_proc() -> None:
    process = Rig().stats()["process"]
    assert process["resident_memory_bytes"] > 1_000_000 and process["open_fds"] > 0
    assert process["start_time_seconds"] > 1_500_000_000 and process["cpu_seconds_total"] > 0


def test_sessions_come_and_go() -> None:
    rig = Rig()
    a, pa = rig.join("f")
    b, _ = rig.join("m")
    rig.board.search(a, ANY)
    assert rig.stats()["sessions"] == {"online": 2, "kept": 2, "searching": 1, "matched": 0}
    waiting = {(q["gender"], q["want"]): q["waiting"] for q in rig.stats()["queue_lengths"]}
    assert waiting[("f", "any")] == 1 and sum(waiting.values()) == 1
    rig.board.search(b, ANY)
    assert rig.stats()["sessions"] == {"online": 2, "kept": 2, "searching": 0, "matched": 2}
    assert rig.stats()["matches_total"] == 1
    rig.board.lost(a, pa, abnormal=True)  # kept for the grace window, no longer in the match
    assert rig.stats()["sessions"] == {"online": 1, "kept": 2, "searching": 0, "matched": 1}
    rig.clock.advance(15)
    assert rig.stats()["sessions"] == {"online": 1, "kept": 1, "searching": 0, "matched": 0}
    rig.board.next(b)
    c, _ = rig.join("f")
    rig.board.search(c, ANY)
    assert rig.stats()["matches_total"] == 2 and rig.stats()["sessions"]["matched"] == 2
    rig.board.end(b)
    rig.board.end(c)
    assert rig.stats()["sessions"] == {"online": 0, "kept": 0, "searching": 0, "matched": 0}
    assert rig.stats()["matches_total"] == 2


def test_relayed_messages_are_counted_by_type() -> None:
    rig = Rig()
    a, b = rig.pair()
    assert a.match is not None
    match_id = a.match.match_id
    rig.board.relay(a, match_id, {"type": "signal", "match_id": match_id, "payload": {}})
    rig.board.relay(b, match_id, {"type": "signal", "match_id": match_id, "payload": {}})
    rig.board.relay(a, match_id, {"type": "typing", "match_id": match_id})
    rig.board.chat(b, match_id, "hi")
    with pytest.raises(ProtocolError, match="no such match"):
        rig.board.chat(b, "another match", "hi")  # not relayed, not counted
    assert rig.stats()["messages_relayed_total"] == {"signal": 2, "chat": 1, "typing": 1}


def test_a_report_counts_once_per_match() -> None:
    rig = Rig()
    a, b = rig.pair()
    assert a.match is not None
    report = Report(a.match.match_id, "spam", None, None)
    first = fired(rig.board.report(a, report, rig.moderation))
    assert fired(rig.board.report(a, report, rig.moderation)) == first
    assert rig.stats()["reports_total"] == 1
    fired(rig.board.report(b, Report(a.match.match_id, "other", None, None), rig.moderation))
    assert rig.stats()["reports_total"] == 2


def test_automatic_flags_and_bans_are_counted_and_the_ban_is_active() -> None:
    rules = (
        OnEvent("flag-on-match", "match_started", FlagAction()),
        OnEvent("ban-on-chat", "chat", BanAction(60.0, "spam", "testing")),
    )
    rig = Rig(rules)
    a, _ = rig.pair()
    assert rig.stats()["moderation_actions_total"] == {"flag": 2, "ban": 0}
    assert a.match is not None
    rig.board.chat(a, a.match.match_id, "hello")
    rig.clock.advance(0)  # a rule's ban waits for the switchboard to finish what it does
    stats = rig.stats()
    assert stats["moderation_actions_total"] == {"flag": 2, "ban": 1}
    assert stats["bans_active"] == 1
    assert stats["sessions"] == {"online": 1, "kept": 1, "searching": 0, "matched": 0}


def test_the_webhook_queue_and_its_drops() -> None:
    rig = Rig((OnEvent("flag-on-match", "match_started", FlagAction()),), webhook=True)
    assert rig.stats()["webhook"] == {"enabled": True, "queued": 0, "dropped_total": 0}
    rig.pair()  # a flag for each: the queue holds one, so the first is dropped
    assert rig.stats()["webhook"] == {"enabled": True, "queued": 1, "dropped_total": 1}


async def until(condition: Any, timeout: float = 5.0) -> None:
    """Wait, letting the reactor run, until `condition()` holds; AssertionError after `timeout` s."""
    for _ in range(int(timeout / 0.01)):
        if condition():
            return
        await deferLater(reactor, 0.01)
    assert condition()


@pytest_twisted.ensureDeferred
async def test_stun_requests_answered_and_dropped_over_udp() -> None:
    # A token every 100 s: the burst of 3 is all this source gets while the test runs.
    service, listening = await start_stun(
        reactor, StunConfig(udp_port=0, interfaces=("127.0.0.1",), rate=0.01, burst=3)
    )
    rig = Rig(stun=service)
    client = UdpClient("127.0.0.1")
    try:
        [server] = listening.udp
        assert rig.stats()["stun"] == {
            "enabled": True,
            "running": True,
            "answered_total": 0,
            "dropped_total": 0,
        }
        # Garbage (not STUN: no reply) and two requests use up the burst; three more are over the limit.
        garbage = b"\x17" * 20
        replies = await deferToThread(client.exchange, server, garbage, request(), request(), replies=2)
        assert len(replies) == 2
        await until(lambda: rig.stats()["stun"]["dropped_total"] == 1)
        assert rig.stats()["stun"] == {
            "enabled": True,
            "running": True,
            "answered_total": 2,
            "dropped_total": 1,
        }
        await deferToThread(client.exchange, server, request(), request(), request(), replies=0)
        await until(lambda: rig.stats()["stun"]["dropped_total"] == 4)
        assert rig.stats()["stun"]["answered_total"] == 2
    finally:
        client.close()
        await service.stopService()
    # Stopped, the service keeps its counts.
    assert rig.stats()["stun"] == {"enabled": True, "running": False, "answered_total": 2, "dropped_total": 4}


@pytest_twisted.ensureDeferred
async def test_stun_requests_answered_and_dropped_over_tcp() -> None:
    service, listening = await start_stun(
        reactor, StunConfig(udp_port=None, tcp_endpoint="tcp:0:interface=127.0.0.1", rate=0)
    )
    rig = Rig(stun=service)
    assert listening.tcp is not None
    port = listening.tcp.getHost().port
    response = bytes.fromhex("0101 0000 2112a442") + bytes(12)  # framed like STUN, but not a request

    def exchange() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(response + request())
            return sock.recv(4096)

    try:
        assert (await deferToThread(exchange))[:2] == b"\x01\x01"
        await until(lambda: rig.stats()["stun"]["answered_total"] == 1)
        assert rig.stats()["stun"] == {
            "enabled": True,
            "running": True,
            "answered_total": 1,
            "dropped_total": 1,
        }
    finally:
        await service.stopService()


# Cluster mode


def test_on_a_single_node_the_cluster_is_this_node_alone() -> None:
    rig = Rig()
    rig.pair()
    rig.board.search(rig.join()[0], ANY)
    stats = rig.stats()
    assert stats["cluster"] == {
        "enabled": False,
        "node_id": None,
        "redis_up": False,
        "nodes": [],
        "totals": {"online": 3, "searching": 1, "matched": 2},
        "bus": {"sent_total": 0, "received_total": 0, "dropped_total": 0, "malformed_total": 0},
    }
    sessions = stats["sessions"]
    assert stats["cluster"]["totals"] == {key: sessions[key] for key in ("online", "searching", "matched")}
    record_schema("Stats").validate(stats)  # as documented


def node_counts(board: Switchboard) -> Callable[[], NodeCounts]:
    """What the heartbeat of `board`'s node tells the other nodes."""
    return lambda: NodeCounts(board.online, board.waiting, board.matched)


@asynccontextmanager
async def cluster_node(
    url: str, node_id: str, counts: Callable[[], NodeCounts]
) -> AsyncIterator[ClusterSources]:
    """Node `node_id` of a cluster on the Redis at `url`, its figures given by `counts`: its presence, beating
    every INTERVAL, and its bus, connected; both stopped after the block."""
    address = parse_redis_url(url)
    connection = await connect_redis(reactor, address)
    presence = NodePresence(
        node_id, connection.handler, reactor, counts, lambda dead: None, interval=INTERVAL, ttl=TTL
    )
    bus = NodeBus(reactor, address, node_id, lambda message, broadcast: None)
    try:
        await bus.connect()
        presence.startService()
        try:
            yield ClusterSources(presence, bus)
        finally:
            await presence.stopService()
    finally:
        await bus.disconnect()
        await connection.disconnect()


@pytest_twisted.ensureDeferred
async def test_in_a_cluster_each_node_lists_every_node_and_sums_them(redis_url: str) -> None:
    first, second = Rig(), Rig()
    a, b = first.pair()
    c, _ = second.join()
    second.board.search(c, ANY)
    assert a.match is not None
    secrets = (a.session_id, b.session_id, c.session_id, a.resume_token, c.resume_token, a.match.match_id)
    async with (
        cluster_node(redis_url, "node-a", node_counts(first.board)) as node_a,
        cluster_node(redis_url, "node-b", node_counts(second.board)) as node_b,
    ):
        first.figures, second.figures = first.figures_with(node_a), second.figures_with(node_b)
        both = [
            {"node_id": "node-a", "online": 2, "searching": 0, "matched": 2},
            {"node_id": "node-b", "online": 1, "searching": 1, "matched": 0},
        ]
        await until(lambda: first.stats()["cluster"]["nodes"] == second.stats()["cluster"]["nodes"] == both)
        for rig, node in ((first, "node-a"), (second, "node-b")):
            cluster = rig.stats()["cluster"]
            assert cluster["enabled"] is cluster["redis_up"] is True
            assert cluster["node_id"] == node
            assert cluster["totals"] == {"online": 3, "searching": 1, "matched": 2}
            record_schema("Stats").validate(rig.stats())  # as documented
        # Node ids are shown; no session, resume token or match of any node is.
        text = json.dumps([first.stats(), second.stats()])
        assert "node-a" in text and "node-b" in text
        assert not [secret for secret in secrets if secret in text]
        # The node's own figures stay its own, and count in the totals at once.
        assert first.stats()["sessions"] == {"online": 2, "kept": 2, "searching": 0, "matched": 2}
        first.board.end(a)  # b is left alone, idle
        assert first.stats()["cluster"]["totals"] == {"online": 2, "searching": 1, "matched": 0}


@pytest_twisted.ensureDeferred
async def test_the_bus_counters_in_a_cluster(redis_server: RedisServer, redis_url: str) -> None:
    rig = Rig()

    def bus() -> dict[str, int]:
        return dict(rig.stats()["cluster"]["bus"])

    async with cluster_node(redis_url, "node-a", node_counts(rig.board)) as node:
        rig.figures = rig.figures_with(node)
        assert node.bus.send("node-a", {"type": "kick", "session": "s"})  # a node may write to its own inbox
        await until(lambda: bus()["received_total"] == 1)
        await deferToThread(redis_server.command, "PUBLISH", inbox_channel("node-a"), b"\xc1")  # no msgpack
        await until(lambda: bus()["malformed_total"] == 1)
    assert not node.bus.send("node-a", {"type": "kick", "session": "s"})  # disconnected: dropped
    assert bus() == {"sent_total": 1, "received_total": 1, "dropped_total": 1, "malformed_total": 1}


@pytest_twisted.ensureDeferred
async def test_without_redis_a_node_counts_itself_alone(own_redis: RedisServer) -> None:
    rig = Rig()
    rig.join()
    async with (
        cluster_node(own_redis.url, "node-a", node_counts(rig.board)) as node,
        cluster_node(own_redis.url, "node-b", lambda: NodeCounts(5, 1, 4)),
    ):
        rig.figures = rig.figures_with(node)
        await until(lambda: len(rig.stats()["cluster"]["nodes"]) == 2)
        assert rig.stats()["cluster"]["totals"] == {"online": 6, "searching": 1, "matched": 4}
        await deferToThread(own_redis.stop)
        await until(
            lambda: not rig.stats()["cluster"]["redis_up"] and len(rig.stats()["cluster"]["nodes"]) == 1
        )
        cluster = rig.stats()["cluster"]
        assert cluster["nodes"] == [{"node_id": "node-a", "online": 1, "searching": 0, "matched": 0}]
        assert cluster["totals"] == {"online": 1, "searching": 0, "matched": 0}
