"""A cluster whose Redis is found through Sentinel (`--redis redis-sentinel://...`): real redis-servers (a
master and its replica) and a real Sentinel; when the master dies, the Sentinel promotes the replica and the
nodes find it, store and matching included."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from vchat.store.redis_testing import RedisServer, Sentinel, replicated_redis
from vchat.testing import RunningServer, SignalingClient, start_server


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer, Sentinel]]:
    with replicated_redis(tmp_path) as group:
        yield group


@pytest_twisted.async_yield_fixture()
async def nodes(servers: tuple[RedisServer, RedisServer, Sentinel]) -> AsyncIterator[list[RunningServer]]:
    master, _, sentinel = servers
    url = f"redis-sentinel://:{master.password}@127.0.0.1:{sentinel.port}/vchat/0"
    started = [await start_server(reactor, "--redis", url, "--node-id", f"n{i}") for i in (1, 2)]
    try:
        yield started
    finally:
        for node in started:
            await node.stop()


async def eventually(check: object, within: float = 30.0) -> None:
    """Wait until `check()` is true, turning the reactor; fail after `within` seconds (a bound)."""
    deadline = time.monotonic() + within
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("not within the time allowed")
        await deferLater(reactor, 0.05, lambda: None)


async def meet(first: RunningServer, second: RunningServer) -> tuple[SignalingClient, SignalingClient, str]:
    """A woman on `first` and a man on `second`, matched; and their match id."""
    her = await first.client("json", hello=True, gender="f")
    him = await second.client("msgpack", hello=True, gender="m")
    her.send({"type": "search", "want": "m"})
    him.send({"type": "search", "want": "f"})
    await her.expect("searching")
    await him.expect("searching")
    match_id = (await her.expect("matched", timeout=15.0))["match_id"]
    await him.expect("matched", timeout=15.0)
    her.send({"type": "chat", "match_id": match_id, "text": "through Sentinel's master"})
    assert (await him.expect("chat"))["text"] == "through Sentinel's master"
    return her, him, match_id


@pytest_twisted.ensureDeferred
async def test_nodes_follow_the_master_through_a_failover(
    servers: tuple[RedisServer, RedisServer, Sentinel], nodes: list[RunningServer]
) -> None:
    master, replica, sentinel = servers
    buses = [node.service.getServiceNamed("cluster").bus for node in nodes]
    await eventually(lambda: all(bus.connected for bus in buses))
    await meet(nodes[0], nodes[1])
    ban = await nodes[0].moderation.ban("device_id", "before-failover", "spam", "spam", 3600.0)
    assert master.command("WAIT", 1, 15000) == 1  # the replica has it (replication is asynchronous)
    assert master.process is not None
    master.process.kill()  # no goodbye: the Sentinel sees it silent, and promotes the replica
    master.process.wait()
    master.process = None
    await eventually(lambda: sentinel.master() == ("127.0.0.1", replica.port))
    await eventually(lambda: all(bus.connected for bus in buses))
    store = await nodes[1].store()
    stored = []

    async def read() -> None:
        try:
            stored.append(await store.get_ban(ban.id))
        except Exception:
            await deferLater(reactor, 0.2, lambda: None)

    deadline = time.monotonic() + 30
    while not stored and time.monotonic() < deadline:
        await read()
    assert stored and stored[0] is not None and stored[0].id == ban.id
    await meet(nodes[1], nodes[0])
