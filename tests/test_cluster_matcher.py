"""The matcher on a real redis-server: users waiting on different nodes are paired by mutual preferences, the
longest-waiting first, each claimed once; one matcher at a time holds the lease and another takes over when
it stops; a claim lost to a withdrawal leaves the other user to be paired later, with either user again at
once; blocked pairs stay apart; recent partners meet again only after rematch_after; and a Redis outage is
logged once and survived."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest
import pytest_twisted
import txredisapi
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.task import Clock, deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import LogEvent, LogLevel, capturedLogs, formatEvent

from vchat.cluster.entries import QueueEntry
from vchat.cluster.matcher import Matcher
from vchat.cluster.presence import KEY_PREFIX
from vchat.cluster.queue import SharedQueue
from vchat.store import redis_testing
from vchat.store.redis_testing import RedisServer

redis_server = redis_testing.redis_server  # the fixtures, by their names
redis_url = redis_testing.redis_url
own_redis = redis_testing.own_redis

TTL = 0.6
INTERVAL = 0.05


def entry(session_id: str, since: float, node_id: str, **fields: Any) -> QueueEntry:
    """A waiting user: a woman from Germany who accepts anyone, unless `fields` say otherwise."""
    values: dict[str, Any] = {"gender": "f", "country": "DE", "want": "any", "countries": frozenset()}
    values.update(fields)
    return QueueEntry(session_id, node_id, since=since, **values)


def telling_matcher(
    queue: SharedQueue,
    told: list[tuple[str, str]] | Callable[[QueueEntry, QueueEntry], object],
    recent_seconds: float = 600.0,
) -> Matcher:
    """Node 1's matcher, with the test's lease and interval, that appends each pair (offer's id, answer's id) to
    `told`, or calls it with the entries."""
    on_pair = told if callable(told) else lambda a, b: told.append((a.session_id, b.session_id))
    return Matcher(
        queue, "node-1", reactor, on_pair, 10, recent_seconds, 30.0, lease_ttl=TTL, interval=INTERVAL
    )


class QuickRetry(txredisapi.RedisFactory):
    """Reconnects within a fifth of a second, so that a test need not wait for the real back-off."""

    initialDelay = 0.05
    maxDelay = 0.2


class Cluster:
    """Nodes on one redis-server, each with a connection of its own and maybe a matcher; all stopped and
    closed at the end. `pairs` lists (matcher's node, offer's session, answer's session) as told."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.connections: list[Any] = []
        self.matchers: dict[str, Matcher] = {}
        self.pairs: list[tuple[str, str, str]] = []
        self.entries: list[tuple[QueueEntry, QueueEntry]] = []

    async def queue(self) -> SharedQueue:
        """The shared queue over a connection of its own, as a node's."""
        factory = QuickRetry(
            "test", None, 1, charset=None, password=self.server.password, convertNumbers=False
        )
        factory.startConnecting(HostnameEndpoint(reactor, "127.0.0.1", self.server.port))
        handler = await factory.deferred
        self.connections.append(handler)
        return SharedQueue(handler)

    async def matcher(self, node: str, **settings: Any) -> Matcher:
        """A started matcher for `node`, recording the pairs it passes on."""

        def told(offer: QueueEntry, answer: QueueEntry) -> None:
            self.pairs.append((node, offer.session_id, answer.session_id))
            self.entries.append((offer, answer))

        settings = {"lease_ttl": TTL, "interval": INTERVAL, **settings}
        matcher = Matcher(await self.queue(), node, reactor, told, **settings)
        matcher.startService()
        self.matchers[node] = matcher
        return matcher

    def paired(self) -> list[tuple[str, str]]:
        return [(offer, answer) for _, offer, answer in self.pairs]

    async def close(self) -> None:
        for matcher in self.matchers.values():
            if matcher.running:
                await matcher.stopService()
        for connection in self.connections:
            await connection.disconnect()


@pytest_twisted.async_yield_fixture()
async def cluster(redis_url: str, redis_server: RedisServer) -> AsyncIterator[Cluster]:
    nodes = Cluster(redis_server)
    yield nodes
    await nodes.close()


async def pause(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


async def eventually(check: Callable[[], bool], within: float = 3.0) -> float:
    """Wait until `check()` holds, polling; the seconds it took."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > within:
            raise AssertionError(f"not so within {within} s")
        await pause(0.02)
    return time.monotonic() - start


async def waiting_ids(queue: SharedQueue) -> list[str]:
    return [waiting.session_id for waiting in await queue.waiting()]


def texts(events: Sequence[LogEvent], level: LogLevel) -> list[str]:
    return [formatEvent(event) for event in events if event["log_level"] == level]


# Pairing


@pytest_twisted.ensureDeferred
async def test_users_on_different_nodes_are_paired_and_leave_the_queue(cluster: Cluster) -> None:
    one, two, three = await cluster.queue(), await cluster.queue(), await cluster.queue()
    await one.enqueue(entry("anna", 1.0, "node-1", want="m"))
    await two.enqueue(entry("bert", 2.0, "node-2", gender="m", country="FR", want="f"))
    await three.enqueue(entry("carl", 3.0, "node-3", gender="m", want="m"))  # wants a man: nobody here

    await cluster.matcher("node-1")
    await eventually(lambda: len(cluster.pairs) == 1)
    await pause(5 * INTERVAL)
    assert cluster.pairs == [("node-1", "anna", "bert")]
    offer, answer = cluster.entries[0]
    assert (offer.node_id, answer.node_id) == ("node-1", "node-2")  # the entries, as queued
    assert answer.country == "FR"
    assert await waiting_ids(three) == ["carl"]


@pytest_twisted.ensureDeferred
async def test_gender_want_and_country_filters_keep_users_apart(cluster: Cluster) -> None:
    one, two, three = await cluster.queue(), await cluster.queue(), await cluster.queue()
    await one.enqueue(entry("fm", 1.0, "node-1", want="m"))  # a woman who wants a man
    await two.enqueue(entry("ff", 2.0, "node-2", want="f"))  # a woman who wants a woman: not fm
    await three.enqueue(entry("mf-us", 3.0, "node-3", gender="m", country="US", want="f"))
    await one.enqueue(entry("fm-fr", 4.0, "node-1", want="m", countries=frozenset({"FR"})))
    matcher = await cluster.matcher("node-2")
    await eventually(lambda: len(cluster.pairs) == 1)
    # mf-us takes fm (fm-fr accepts only France; ff wants a woman).
    assert cluster.paired() == [("fm", "mf-us")]

    await three.enqueue(entry("mf-de", 5.0, "node-3", gender="m", country="DE", want="f"))
    matcher.nudge()
    await pause(6 * INTERVAL)
    assert cluster.paired() == [("fm", "mf-us")]  # a German man: fm-fr refuses him, ff does not want him
    assert sorted(await waiting_ids(one)) == ["ff", "fm-fr", "mf-de"]

    await two.enqueue(entry("mf-fr", 6.0, "node-2", gender="m", country="FR", want="f"))
    await eventually(lambda: len(cluster.pairs) == 2)
    assert cluster.paired()[1] == ("fm-fr", "mf-fr")
    assert sorted(await waiting_ids(one)) == ["ff", "mf-de"]


@pytest_twisted.ensureDeferred
async def test_the_longest_waiting_user_is_paired_first(cluster: Cluster) -> None:
    one, two, three = await cluster.queue(), await cluster.queue(), await cluster.queue()
    # Queued youngest first: the matcher goes by the time each started waiting, not by arrival.
    await two.enqueue(entry("young", 20.0, "node-2", want="m"))
    await one.enqueue(entry("old", 10.0, "node-1", want="m"))
    await three.enqueue(entry("man", 30.0, "node-3", gender="m", want="f"))
    await cluster.matcher("node-3")
    await eventually(lambda: len(cluster.pairs) == 1)
    assert cluster.paired() == [("old", "man")]
    assert await waiting_ids(one) == ["young"]


@pytest_twisted.ensureDeferred
async def test_the_offer_is_made_by_the_user_who_waited_longer(cluster: Cluster) -> None:
    one, two = await cluster.queue(), await cluster.queue()
    matcher = await cluster.matcher("node-1")
    await eventually(lambda: matcher.holds_lease)
    await one.enqueue(entry("later", 50.0, "node-1"))
    await pause(3 * INTERVAL)
    await two.enqueue(entry("earlier", 40.0, "node-2", gender="m"))  # read after "later", waited longer
    await eventually(lambda: len(cluster.pairs) == 1)
    assert cluster.paired() == [("earlier", "later")]


# The lease


@pytest_twisted.ensureDeferred
async def test_one_matcher_holds_the_lease_and_makes_every_pair_once(cluster: Cluster) -> None:
    queues = [await cluster.queue() for _ in range(3)]
    first = await cluster.matcher("node-1")
    second = await cluster.matcher("node-2")
    await eventually(lambda: first.holds_lease or second.holds_lease)
    await pause(3 * INTERVAL)
    assert first.holds_lease != second.holds_lease
    holder = "node-1" if first.holds_lease else "node-2"
    assert await queues[0].lease_holder() == holder

    for i in range(60):  # as users come: women and men on three nodes, some waiting
        gender = "f" if i % 2 else "m"
        await queues[i % 3].enqueue(entry(f"u{i}", 100.0 + i, f"node-{i % 3 + 1}", gender=gender, want="any"))
        if i % 7 == 0:
            await pause(INTERVAL)
    await eventually(lambda: len(cluster.pairs) == 30)
    await pause(5 * INTERVAL)
    assert {node for node, _, _ in cluster.pairs} == {holder}
    users = Counter(user for _, offer, answer in cluster.pairs for user in (offer, answer))
    assert len(users) == 60 and set(users.values()) == {1}
    assert await queues[0].waiting() == []


@pytest_twisted.ensureDeferred
async def test_when_the_holder_stops_another_takes_over(cluster: Cluster) -> None:
    queue = await cluster.queue()
    first = await cluster.matcher("node-1")
    await eventually(lambda: first.holds_lease)
    second = await cluster.matcher("node-2")
    await pause(3 * INTERVAL)
    assert not second.holds_lease

    await first.stopService()
    assert await queue.lease_holder() != "node-1"  # given up at once
    took = await eventually(lambda: second.holds_lease, within=2 * TTL)
    assert took < TTL
    await queue.enqueue(entry("a", 1.0, "node-3"))
    await queue.enqueue(entry("b", 2.0, "node-1", gender="m"))
    await eventually(lambda: len(cluster.pairs) == 1)
    assert cluster.pairs == [("node-2", "a", "b")]


@pytest_twisted.ensureDeferred
async def test_a_crashed_holder_s_lease_expires_and_another_takes_over(cluster: Cluster) -> None:
    queue = await cluster.queue()
    await queue.acquire_lease("node-dead", TTL)  # a holder that then went silent
    matcher = await cluster.matcher("node-2")
    await pause(TTL / 2)
    assert not matcher.holds_lease
    await eventually(lambda: matcher.holds_lease, within=2 * TTL)
    await queue.enqueue(entry("a", 1.0, "node-3"))
    await queue.enqueue(entry("b", 2.0, "node-1", gender="m"))
    await eventually(lambda: len(cluster.pairs) == 1)


# Claims that lose


class RacingQueue(SharedQueue):
    """A shared queue whose next claim loses: just before it, another node withdraws `victim`."""

    def __init__(self, redis: Any, rival: SharedQueue, victim: str) -> None:
        super().__init__(redis)
        self.rival = rival
        self.victim: str | None = victim
        self.claims: list[tuple[str, str, bool]] = []

    def claim(self, a: str, b: str) -> Deferred[bool]:
        return Deferred.fromCoroutine(self._claim(a, b))

    async def _claim(self, a: str, b: str) -> bool:
        victim = self.victim
        if victim in (a, b):
            self.victim = None
            assert await self.rival.withdraw(victim) is True
        claimed = await super().claim(a, b)
        self.claims.append((a, b, claimed))
        return claimed


@pytest_twisted.ensureDeferred
async def test_a_claim_lost_to_a_withdrawal_leaves_the_other_user_to_be_paired_later(
    cluster: Cluster,
) -> None:
    rival = await cluster.queue()
    mine = await cluster.queue()
    queue = RacingQueue(mine._redis, rival, "taken")
    told: list[tuple[str, str]] = []
    matcher = telling_matcher(queue, told)
    await rival.enqueue(entry("left", 1.0, "node-2"))
    await rival.enqueue(entry("taken", 2.0, "node-2", gender="m"))  # its node matches it locally meanwhile
    matcher.startService()
    try:
        await eventually(lambda: len(queue.claims) == 1)
        assert queue.claims == [("left", "taken", False)]
        await pause(4 * INTERVAL)
        assert await waiting_ids(rival) == ["left"]
        assert told == []

        await rival.enqueue(entry("newcomer", 3.0, "node-3", gender="m"))
        await eventually(lambda: len(told) == 1)
        assert told == [("left", "newcomer")]
        assert await rival.waiting() == []
    finally:
        await matcher.stopService()


@pytest_twisted.ensureDeferred
async def test_after_a_lost_claim_the_two_can_be_paired_at_once(cluster: Cluster) -> None:
    rival = await cluster.queue()
    mine = await cluster.queue()
    queue = RacingQueue(mine._redis, rival, "taken")
    told: list[tuple[str, str]] = []
    matcher = telling_matcher(queue, told)
    await rival.enqueue(entry("left", 1.0, "node-2"))
    await rival.enqueue(entry("taken", 2.0, "node-2", gender="m"))
    matcher.startService()
    try:
        await eventually(lambda: len(queue.claims) == 1)
        assert queue.claims == [("left", "taken", False)]
        # Its local match fell through, and it searches again: the two never met, so recency does not
        # keep them apart for rematch_after (30 s).
        await rival.enqueue(entry("taken", 3.0, "node-2", gender="m"))
        await eventually(lambda: len(told) == 1)
        assert told == [("left", "taken")]
        assert queue.claims[1:] == [("left", "taken", True)]
    finally:
        await matcher.stopService()


# What the engine keeps: blocks and recent partners


@pytest_twisted.ensureDeferred
async def test_a_blocked_pair_is_never_matched(cluster: Cluster) -> None:
    queue = await cluster.queue()
    matcher = await cluster.matcher("node-1")
    matcher.block("a", "b")
    await queue.enqueue(entry("a", 1.0, "node-1"))
    await queue.enqueue(entry("b", 2.0, "node-2", gender="m"))
    await pause(6 * INTERVAL)
    assert cluster.pairs == []
    await queue.enqueue(entry("c", 3.0, "node-3", gender="m"))
    await eventually(lambda: len(cluster.pairs) == 1)
    assert cluster.paired() == [("a", "c")]
    await pause(3 * INTERVAL)
    assert await waiting_ids(queue) == ["b"]


@pytest_twisted.ensureDeferred
async def test_recent_partners_meet_again_only_after_rematch_after(cluster: Cluster) -> None:
    queue = await cluster.queue()
    await cluster.matcher("node-1", rematch_after=0.5)
    await queue.enqueue(entry("a", 1.0, "node-1"))
    await queue.enqueue(entry("b", 2.0, "node-2", gender="m"))
    await eventually(lambda: len(cluster.pairs) == 1)

    # They talked, and both search again: nobody else waits, so they meet again, but only after 0.5 s.
    await queue.enqueue(entry("a", 10.0, "node-1"))
    await queue.enqueue(entry("b", 11.0, "node-2", gender="m"))
    took = await eventually(lambda: len(cluster.pairs) == 2)
    assert took >= 0.4
    assert cluster.paired() == [("a", "b"), ("a", "b")]
    assert await deferToThread(cluster.server.command, "KEYS", KEY_PREFIX + "queue*") == []


# Redis outages


@pytest_twisted.ensureDeferred
async def test_a_redis_outage_is_logged_once_and_the_matcher_pairs_again_after_it(
    own_redis: RedisServer,
) -> None:
    cluster = Cluster(own_redis)
    try:
        with capturedLogs() as events:
            queue = await cluster.queue()
            matcher = await cluster.matcher("node-1")
            await eventually(lambda: matcher.holds_lease)
            await queue.enqueue(entry("a", 1.0, "node-1"))
            await queue.enqueue(entry("b", 2.0, "node-2", gender="m"))
            await eventually(lambda: len(cluster.pairs) == 1)

            await deferToThread(own_redis.stop)
            await eventually(lambda: not matcher.redis_available)
            assert not matcher.holds_lease
            await pause(2 * TTL)
            await deferToThread(own_redis.restart)  # with none of its data
            await eventually(lambda: matcher.holds_lease and matcher.redis_available, within=5.0)
            await queue.enqueue(entry("c", 3.0, "node-1"))
            await queue.enqueue(entry("d", 4.0, "node-2", gender="m"))
            await eventually(lambda: len(cluster.pairs) == 2)
        assert cluster.paired() == [("a", "b"), ("c", "d")]
        assert len([text for text in texts(events, LogLevel.warn) if "cannot reach Redis" in text]) == 1
        assert len([text for text in texts(events, LogLevel.info) if "reaches Redis again" in text]) == 1
        assert not [event for event in events if event.get("log_failure") is not None]
        assert await deferToThread(own_redis.command, "GET", KEY_PREFIX + "matcher") == b"node-1"
    finally:
        await cluster.close()
    assert await deferToThread(own_redis.command, "GET", KEY_PREFIX + "matcher") is None  # given up


# Without Redis: the loop's schedule on a fake clock


class FakeQueue:
    """Just enough of a SharedQueue: one that always grants the lease and holds nobody."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    def _answer(self, name: str, value: Any) -> Deferred[Any]:
        self.calls[name] += 1
        done: Deferred[Any] = Deferred()
        done.callback(value)
        return done

    def acquire_lease(self, node_id: str, ttl_s: float) -> Deferred[bool]:
        return self._answer("acquire_lease", True)

    def renew_lease(self, node_id: str, ttl_s: float) -> Deferred[bool]:
        return self._answer("renew_lease", True)

    def release_lease(self, node_id: str) -> Deferred[bool]:
        return self._answer("release_lease", True)

    def waiting(self) -> Deferred[list[QueueEntry]]:
        return self._answer("waiting", [])


def test_nudges_coalesce_and_the_lease_is_renewed_every_third_of_its_ttl() -> None:
    clock = Clock()
    queue = FakeQueue()
    matcher = Matcher(queue, "node-1", clock, lambda a, b: None, lease_ttl=3.0, interval=0.1)  # type: ignore[arg-type]
    matcher.startService()
    assert matcher.holds_lease and queue.calls == {"acquire_lease": 1, "waiting": 1}
    for _ in range(5):
        matcher.nudge()
    clock.advance(0)
    assert queue.calls["waiting"] == 2  # five nudges, one reading
    clock.pump([0.1] * 35)
    assert queue.calls["waiting"] == 37  # one each interval
    assert queue.calls["renew_lease"] == 3  # about every second, a third of the TTL
    matcher.stopService()
    assert queue.calls["release_lease"] == 1
    clock.advance(1)
    assert queue.calls["waiting"] == 37 and not clock.getDelayedCalls()


def test_the_matcher_checks_its_settings() -> None:
    queue: Any = FakeQueue()
    with pytest.raises(ValueError):
        Matcher(queue, "node 1", Clock(), print)
    with pytest.raises(ValueError):
        Matcher(queue, "node-1", Clock(), print, lease_ttl=0)
    with pytest.raises(ValueError):
        Matcher(queue, "node-1", Clock(), print, lease_ttl=1.0, interval=1.0)
    with pytest.raises(ValueError):
        Matcher(queue, "node-1", Clock(), print, rematch_after=0)


@pytest_twisted.ensureDeferred
async def test_the_matcher_sweeps_spent_histories(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nobody tells the matcher when the users it paired end: their histories go once no longer recent."""
    monkeypatch.setattr("vchat.cluster.matcher.EXPIRE_EVERY", 0.0)
    queue = await cluster.queue()
    told: list[tuple[str, str]] = []
    matcher = telling_matcher(queue, told, recent_seconds=0.2)  # recent for 0.2 s only
    await queue.enqueue(entry("a", 1.0, "node-2"))
    await queue.enqueue(entry("b", 2.0, "node-3", gender="m"))
    matcher.startService()
    try:
        await eventually(lambda: told == [("a", "b")])
        assert set(matcher._engine._history) == {"a", "b"}
        await eventually(lambda: matcher._engine._history == {})
    finally:
        await matcher.stopService()


@pytest_twisted.ensureDeferred
async def test_a_pair_that_cannot_be_passed_on_goes_back_and_is_paired_again(cluster: Cluster) -> None:
    """The wiring could not tell the nodes (Redis away for the bus): both go back to the queue, as they were,
    and are not kept apart as recent partners, since they never met."""
    queue = await cluster.queue()
    told: list[tuple[str, str]] = []

    def on_pair(a: QueueEntry, b: QueueEntry) -> bool:
        told.append((a.session_id, b.session_id))
        return len(told) > 1  # the first one is lost

    matcher = telling_matcher(queue, on_pair)
    await queue.enqueue(entry("a", 1.0, "node-2"))
    await queue.enqueue(entry("b", 2.0, "node-3", gender="m"))
    matcher.startService()
    try:
        await eventually(lambda: len(told) == 2)
        assert told == [("a", "b"), ("a", "b")]
        assert await queue.waiting() == []
    finally:
        await matcher.stopService()
