"""The shared queue on a real redis-server: entries in and out in wait order, claims that take both users or
neither, nodes that race to claim (checked against the order Redis ran the claims in, read from MONITOR),
a dead node's users removed, the fairness question and the claim of a local match that asks it, and the
matcher's lease."""

from __future__ import annotations

import random
import re
import socket
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from itertools import pairwise
from typing import Any, BinaryIO, cast

import pytest
import pytest_twisted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import LogLevel, capturedLogs, formatEvent

from vchat.cluster.entries import FIELDS, QueueEntry, compatible
from vchat.cluster.presence import KEY_PREFIX
from vchat.cluster.queue import SharedQueue, Take
from vchat.redis_connection import connect_redis, parse_redis_url
from vchat.store import redis_testing
from vchat.store.redis_testing import RedisServer

redis_server = redis_testing.redis_server  # the fixtures, by their names
redis_url = redis_testing.redis_url


def entry(session_id: str, since: float, node_id: str = "node-1", **fields: Any) -> QueueEntry:
    """A waiting user: a woman from Germany who accepts anyone, unless `fields` say otherwise."""
    values: dict[str, Any] = {"gender": "f", "country": "DE", "want": "any", "countries": frozenset()}
    values.update(fields)
    return QueueEntry(session_id, node_id, since=since, **values)


class Nodes:
    """Connections to the test's redis-server, each a node's, closed at the end."""

    def __init__(self, url: str, server: RedisServer) -> None:
        self.url = url
        self.server = server
        self.factories: list[Any] = []

    async def connect(self) -> Any:
        """A connection as a node opens it (vchat.redis_connection), and its command handler."""
        factory = await connect_redis(reactor, parse_redis_url(self.url))
        self.factories.append(factory)
        return factory.handler

    async def queue(self) -> SharedQueue:
        """The shared queue over a connection of its own."""
        return SharedQueue(await self.connect())

    async def command(self, *args: str | bytes | int) -> Any:
        """One command, run outside the reactor's thread (redis_testing's client blocks)."""
        return await deferToThread(self.server.command, *args)

    async def close(self) -> None:
        for factory in self.factories:
            await factory.disconnect()


@pytest_twisted.async_yield_fixture()
async def nodes(redis_url: str, redis_server: RedisServer) -> AsyncIterator[Nodes]:
    connections = Nodes(redis_url, redis_server)
    yield connections
    await connections.close()


async def everything(nodes: Nodes) -> dict[str, Any]:
    """Every key in Redis and what it holds, as text."""
    found: dict[str, Any] = {}
    for raw in await nodes.command("KEYS", "*"):
        key = raw.decode()
        kind = (await nodes.command("TYPE", key)).decode()
        if kind == "hash":
            found[key] = await nodes.command("HGETALL", key)
        elif kind == "zset":
            found[key] = await nodes.command("ZRANGE", key, 0, -1, "WITHSCORES")
        elif kind == "set":
            found[key] = sorted(await nodes.command("SMEMBERS", key))
        else:
            found[key] = await nodes.command("GET", key)
    return found


# Entries in and out


@pytest_twisted.ensureDeferred
async def test_waiting_users_come_out_oldest_first_and_leave_once(nodes: Nodes) -> None:
    queue = await nodes.queue()
    for session, since in [("c", 30.0), ("a", 10.0), ("d", 40.0), ("b", 20.0)]:
        await queue.enqueue(entry(session, since))
    assert [e.session_id for e in await queue.waiting()] == ["a", "b", "c", "d"]
    assert [e.session_id for e in await queue.waiting(2)] == ["a", "b"]
    assert await queue.waiting(0) == []
    assert (await queue.waiting())[0] == entry("a", 10.0)

    assert await queue.withdraw("b") is True
    assert await queue.withdraw("b") is False
    assert await queue.withdraw("never-queued") is False
    assert [e.session_id for e in await queue.waiting()] == ["a", "c", "d"]

    # Enqueued again, a session's entry is replaced, in its place by its new time.
    moved = entry("a", 35.0, "node-2", gender="m", want="f", country=None, countries=frozenset({"FR"}))
    await queue.enqueue(moved)
    assert await queue.waiting() == [entry("c", 30.0), moved, entry("d", 40.0)]


@pytest_twisted.ensureDeferred
async def test_the_key_layout(nodes: Nodes) -> None:
    queue = await nodes.queue()
    await queue.enqueue(entry("s1", 1.5, countries=frozenset({"FR", "AT"})))
    P = KEY_PREFIX
    assert await everything(nodes) == {
        f"{P}queue": [b"s1", b"1.5"],
        f"{P}queue:f:any": [b"s1", b"1.5"],
        f"{P}queue:node:node-1": [b"s1"],
        f"{P}queue:entry:s1": [
            *(b"node", b"node-1", b"gender", b"f", b"want", b"any", b"country", b"DE"),
            *(b"countries", b"AT,FR", b"since", b"1.5"),
        ],
    }
    assert [name.encode() for name in FIELDS] == (await everything(nodes))[f"{P}queue:entry:s1"][::2]

    # Replaced: its old partition and node set are left empty, so Redis drops them.
    await queue.enqueue(entry("s1", 2.5, "node-2", gender="u", want="m"))
    assert set(await everything(nodes)) == {
        f"{P}queue",
        f"{P}queue:u:m",
        f"{P}queue:node:node-2",
        f"{P}queue:entry:s1",
    }
    assert await queue.withdraw("s1") is True
    assert await everything(nodes) == {}


@pytest_twisted.ensureDeferred
async def test_another_prefix_keeps_another_queue(nodes: Nodes) -> None:
    handler = await nodes.connect()
    ours, theirs = SharedQueue(handler), SharedQueue(handler, "test:{other}:")
    await ours.enqueue(entry("s1", 1.0))
    await theirs.enqueue(entry("s2", 2.0))
    assert [e.session_id for e in await ours.waiting()] == ["s1"]
    assert [e.session_id for e in await theirs.waiting()] == ["s2"]
    assert await theirs.claim("s1", "s2") is False


# Claims


@pytest_twisted.ensureDeferred
async def test_a_claim_takes_both_users_once_and_leaves_no_trace_of_the_pair(nodes: Nodes) -> None:
    queue = await nodes.queue()
    await queue.enqueue(entry("alice-session", 1.0, "node-1"))
    await queue.enqueue(entry("bob-session", 2.0, "node-2", gender="m"))
    await queue.enqueue(entry("carol-session", 3.0, "node-2", gender="u"))
    assert await queue.claim("alice-session", "bob-session") is True
    for a, b in [
        ("alice-session", "bob-session"),
        ("bob-session", "alice-session"),
        ("alice-session", "carol-session"),
        ("carol-session", "bob-session"),
    ]:
        assert await queue.claim(a, b) is False
    assert await queue.withdraw("alice-session") is False
    assert [e.session_id for e in await queue.waiting()] == [
        "carol-session"
    ]  # a failed claim changed nothing
    text = repr(await everything(nodes))
    assert "carol-session" in text
    assert "alice" not in text and "bob" not in text


@pytest_twisted.ensureDeferred
async def test_a_claim_of_one_missing_user_changes_nothing(nodes: Nodes) -> None:
    queue = await nodes.queue()
    await queue.enqueue(entry("a", 1.0))
    before = await everything(nodes)
    assert await queue.claim("a", "gone") is False
    assert await queue.claim("gone", "a") is False
    assert await everything(nodes) == before


@pytest_twisted.ensureDeferred
async def test_bad_arguments_fail_the_call(nodes: Nodes) -> None:
    queue = await nodes.queue()
    await queue.enqueue(entry("a", 1.0))
    calls: list[Deferred[Any]] = [
        queue.claim("a", "a"),
        queue.claim("a", "b c"),
        queue.withdraw(""),
        queue.remove_node("x" * 65),
        queue.waiting(-1),
        queue.acquire_lease("node-1", 0),
        queue.renew_lease("node-1", float("nan")),
        queue.release_lease("a b"),
        queue.enqueue(("a", 1.0)),  # type: ignore[arg-type]
        queue.oldest_compatible(entry("b", 1.0), 5.0, scan=0),
        queue.take("a", entry("a", 2.0), 5.0),
        queue.take("a b", entry("b", 2.0), 5.0),
        queue.take("a", ("b", 2.0), 5.0),  # type: ignore[arg-type]
        queue.take("a", entry("b", 2.0), float("nan")),
        queue.take("a", entry("b", 2.0), True),
        queue.take("a", entry("b", 2.0), 5.0, scan=0),
        queue.take("a", entry("b", 2.0), 5.0, scan=1.5),  # type: ignore[arg-type]
    ]
    for call in calls:
        with pytest.raises((ValueError, TypeError)):
            await call
    assert [e.session_id for e in await queue.waiting()] == ["a"]


@pytest_twisted.ensureDeferred
async def test_a_claim_and_a_withdrawal_racing_for_a_user_one_wins(nodes: Nodes) -> None:
    first, second = await nodes.queue(), await nodes.queue()
    outcomes = Counter[str]()
    for round in range(40):
        a, b = f"a{round}", f"b{round}"
        await first.enqueue(entry(a, round))
        await first.enqueue(entry(b, round + 0.5))
        # Each on its own connection, sent at once: Redis runs them in either order.
        claimer, withdrawer = (first, second) if round % 2 else (second, first)
        if round % 4 < 2:
            claimed, withdrawn = await gatherResults([claimer.claim(a, b), withdrawer.withdraw(a)])
        else:
            withdrawn, claimed = await gatherResults([withdrawer.withdraw(a), claimer.claim(a, b)])
        assert claimed != withdrawn
        left = [e.session_id for e in await first.waiting()]
        assert left == ([] if claimed else [b])
        await first.withdraw(b)
        outcomes["claim" if claimed else "withdraw"] += 1
    # The two connections swap roles, so whichever one Redis serves first, both kinds of call win.
    assert outcomes["claim"] > 0 and outcomes["withdraw"] > 0


class Monitor:
    """The commands Redis runs, in the order it runs them, read from MONITOR in a thread (it blocks)."""

    LINE = re.compile(rb"\+[0-9.]+ \[[0-9]+ ([^\]]+)\] (.*)")
    ARGUMENT = re.compile(rb'"((?:[^"\\]|\\.)*)"')

    def __init__(self, server: RedisServer) -> None:
        self.server = server

    def open(self) -> None:
        self.connection = socket.create_connection(("127.0.0.1", self.server.port), timeout=10.0)
        self.stream = cast(BinaryIO, self.connection.makefile("rb"))
        password = self.server.password.encode()
        self.connection.sendall(b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(password), password))
        self.connection.sendall(b"*1\r\n$7\r\nMONITOR\r\n")
        assert [self.stream.readline(), self.stream.readline()] == [b"+OK\r\n"] * 2

    def read_until(self, marker: bytes) -> list[tuple[str, list[bytes]]]:
        """(client, [command, arguments...]) of each command until GET `marker`; the command in lower case."""
        found: list[tuple[str, list[bytes]]] = []
        try:
            while line := self.stream.readline():
                match = self.LINE.fullmatch(line.rstrip(b"\r\n"))
                assert match, line
                client, rest = match.group(1).decode(), match.group(2)
                words = self.ARGUMENT.findall(rest)
                words[0] = words[0].lower()
                found.append((client, words))
                if words == [b"get", marker]:
                    break
        finally:
            self.connection.close()
        return found


@pytest_twisted.ensureDeferred
async def test_nodes_racing_to_claim_never_match_a_user_twice(nodes: Nodes) -> None:
    """Four nodes claim (and now and then withdraw) overlapping random pairs of 200 users at once, three calls
    in flight each. Replaying the calls in the order Redis ran them (MONITOR) on a plain set gives exactly the
    results every node got, every user is taken at most once, and the users left are exactly those no call
    took."""
    rng = random.Random(20240611)
    users = [f"user-{i:03d}" for i in range(200)]
    node_count, calls_per_node, in_flight = 4, 150, 3
    handlers = [await nodes.connect() for _ in range(node_count)]
    queues = [SharedQueue(handler) for handler in handlers]
    entries = {
        user: entry(user, rng.uniform(0, 100), f"node-{i % node_count}", gender=rng.choice("mfu"))
        for i, user in enumerate(users)
    }
    for made in entries.values():
        await queues[0].enqueue(made)

    plans: list[list[tuple[str, ...]]] = []
    for _ in range(node_count):
        plan: list[tuple[str, ...]] = []
        for _ in range(calls_per_node):
            a, b = rng.sample(users, 2)
            plan.append(("withdraw", a) if rng.random() < 0.1 else ("claim", a, b))
        plans.append(plan)
    results: list[list[tuple[tuple[str, ...], bool]]] = [[] for _ in range(node_count)]

    async def worker(node: int, share: list[tuple[str, ...]]) -> None:
        queue = queues[node]
        for call in share:
            done = queue.withdraw(call[1]) if call[0] == "withdraw" else queue.claim(call[1], call[2])
            results[node].append((call, await done))

    monitor = Monitor(nodes.server)
    await deferToThread(monitor.open)
    feed = deferToThread(monitor.read_until, b"race:end")
    for node, handler in enumerate(handlers):  # tells MONITOR which client each node is
        await handler.get(f"race:node-{node}")
    await gatherResults(
        [
            Deferred.fromCoroutine(worker(node, plans[node][start::in_flight]))
            for node in range(node_count)
            for start in range(in_flight)
        ]
    )
    await handlers[0].get("race:end")
    commands = await feed

    # Which client each node is, then the calls in the order Redis ran them.
    client_node = {
        client: int(words[1].decode().removeprefix("race:node-"))
        for client, words in commands
        if words[0] == b"get" and words[1].startswith(b"race:node-")
    }
    assert len(client_node) == node_count
    ran: list[tuple[int, tuple[str, ...]]] = []
    for client, words in commands:
        if client in client_node and words[0] in (b"eval", b"evalsha"):
            assert words[2:4] == [b"1", KEY_PREFIX.encode()]
            sessions = tuple(word.decode() for word in words[4:])
            ran.append(
                (client_node[client], ("claim", *sessions) if len(sessions) == 2 else ("withdraw", *sessions))
            )
    assert len(ran) == node_count * calls_per_node
    switches = sum(1 for before, after in pairwise(ran) if before[0] != after[0])
    assert switches > 100, "the nodes' calls did not interleave"

    # Replay on a set: what each call should have given, in the order Redis ran them.
    present = set(users)
    expected: dict[tuple[int, tuple[str, ...]], list[bool]] = defaultdict(list)
    taken = Counter[str]()
    for node, call in ran:
        sessions = call[1:]
        won = all(session in present for session in sessions)
        if won:
            present -= set(sessions)
            taken.update(sessions)
        expected[node, call].append(won)
    got: dict[tuple[int, tuple[str, ...]], list[bool]] = defaultdict(list)
    for node in range(node_count):
        for call, won in results[node]:
            got[node, call].append(won)
    assert {key: sorted(value) for key, value in got.items()} == {
        key: sorted(value) for key, value in expected.items()
    }

    # No user taken twice, however many calls named it; the others all still wait, in order.
    wins = [call for node in results for call, won in node if won]
    claims = [call for call in wins if call[0] == "claim"]
    assert max(taken.values()) == 1
    assert len(claims) > 20 and len(wins) - len(claims) > 5  # the race had both kinds of winners
    assert Counter(session for call in wins for session in call[1:]) == taken
    left = await queues[1].waiting()
    assert left == sorted((entries[user] for user in present), key=lambda made: made.since)


# A dead node


@pytest_twisted.ensureDeferred
async def test_a_dead_node_s_users_are_removed_and_only_those(nodes: Nodes) -> None:
    queue = await nodes.queue()
    for i in range(12):
        await queue.enqueue(entry(f"s{i}", i, f"node-{i % 3}"))
    await queue.enqueue(entry("s1", 20.0, "node-0"))  # resumed on another node: no longer node-1's
    assert sorted(await queue.remove_node("node-1")) == ["s10", "s4", "s7"]
    assert await queue.remove_node("node-1") == []
    assert await queue.remove_node("node-never") == []
    left = [e.session_id for e in await queue.waiting()]
    assert left == ["s0", "s2", "s3", "s5", "s6", "s8", "s9", "s11", "s1"]
    keys = set(await everything(nodes))
    assert f"{KEY_PREFIX}queue:node:node-1" not in keys
    assert not any(key.endswith(("entry:s4", "entry:s7", "entry:s10")) for key in keys)


# Entries that are not valid


@pytest_twisted.ensureDeferred
async def test_entries_that_do_not_decode_are_left_out_logged_and_left_in_place(nodes: Nodes) -> None:
    queue = await nodes.queue()
    await queue.enqueue(entry("good", 2.0))
    P = KEY_PREFIX
    await nodes.command("HSET", f"{P}queue:entry:bad", "node", "node-9", "gender", "x", "since", "1.0")
    await nodes.command("ZADD", f"{P}queue", "1.0", "bad")
    await nodes.command("ZADD", f"{P}queue:m:any", "1.0", "bad")
    await nodes.command("SET", f"{P}queue:entry:text", "not a hash")
    await nodes.command("ZADD", f"{P}queue", "3.0", "text")
    with capturedLogs() as events:
        assert [e.session_id for e in await queue.waiting()] == ["good"]
    warnings = [formatEvent(event) for event in events if event["log_level"] == LogLevel.warn]
    assert len(warnings) == 1
    assert "2 entries" in warnings[0] and "bad: " in warnings[0] and "text: " in warnings[0]
    assert {f"{P}queue:entry:bad", f"{P}queue:entry:text"} <= set(await everything(nodes))

    # Still, they can be taken out, with every index they are in.
    assert await queue.withdraw("bad") is True
    assert await queue.withdraw("text") is True
    assert set(await everything(nodes)) == {
        f"{P}queue",
        f"{P}queue:f:any",
        f"{P}queue:node:node-1",
        f"{P}queue:entry:good",
    }


# Fairness


@pytest_twisted.ensureDeferred
async def test_oldest_compatible_is_the_oldest_other_node_user_that_suits_both_ways(nodes: Nodes) -> None:
    rng = random.Random(7)
    queue = await nodes.queue()
    countries = ["DE", "FR", "US"]

    def someone(session: str) -> QueueEntry:
        return entry(
            session,
            round(rng.uniform(0, 100), 3),
            rng.choice(["node-1", "node-2", "node-3"]),
            gender=rng.choice("mfu"),
            want=rng.choice(["any", "any", "m", "f"]),
            country=rng.choice([None, *countries]),
            countries=frozenset(rng.sample(countries, rng.choice([0, 0, 1, 2]))),
        )

    waiting = [someone(f"w{i}") for i in range(150)]
    for made in waiting:
        await queue.enqueue(made)
    answers = Counter[str]()
    for i in range(80):
        seeker = someone(f"seeker{i}")
        before = rng.choice([0.0, 20.0, 60.0, 100.0, float("inf")])
        suitable = [
            made.since
            for made in waiting
            if made.node_id != seeker.node_id and made.since <= before and compatible(seeker, made)
        ]
        found = await queue.oldest_compatible(seeker, before, scan=1000)
        assert found == (min(suitable) if suitable else None)
        answers["some" if suitable else "none"] += 1
    assert answers["some"] > 10 and answers["none"] > 10


@pytest_twisted.ensureDeferred
async def test_oldest_compatible_errs_towards_fairness_past_its_scan(nodes: Nodes) -> None:
    queue = await nodes.queue()
    seeker = entry("me", 0.0, "node-1", country="DE")
    for i in range(5):  # they want France only
        await queue.enqueue(entry(f"picky{i}", 10.0 + i, "node-2", countries=frozenset({"FR"})))
    await queue.enqueue(entry("fits", 20.0, "node-2"))
    await queue.enqueue(entry("mine", 1.0, "node-1"))  # this node's own: its engine sees it already
    assert await queue.oldest_compatible(seeker, 30.0) == 20.0
    assert await queue.oldest_compatible(seeker, 19.0) is None
    # Three read (its own among them), none suits: one after them may, and the last one's time counts.
    assert await queue.oldest_compatible(seeker, 30.0, scan=3) == 11.0
    assert await queue.oldest_compatible(seeker, 30.0, scan=7) == 20.0
    picky = entry("me", 0.0, "node-1", country="DE", countries=frozenset({"FR"}))
    assert await queue.oldest_compatible(picky, 30.0) is None  # "fits" is from DE
    assert await queue.oldest_compatible(entry("me", 0.0, "node-3", gender="m", want="m"), 30.0) is None


# The claim of a local match, fair to other nodes


def arriving(
    session_id: str = "arriving", since: float = 50.0, node_id: str = "node-1", **fields: Any
) -> QueueEntry:
    """The user who arrives on node-1 and is matched there with a queued one: a man wanting a woman."""
    return entry(session_id, since, node_id, **{"gender": "m", "want": "f", **fields})


async def memberships(nodes: Nodes, made: QueueEntry) -> dict[str, Any]:
    """Where `made`'s session is in the queue's keys: its entry, its scores and its node set."""
    P, session = KEY_PREFIX, made.session_id
    return {
        "entry": await nodes.command("HGETALL", f"{P}queue:entry:{session}"),
        "queue": await nodes.command("ZSCORE", f"{P}queue", session),
        "partition": await nodes.command("ZSCORE", f"{P}queue:{made.gender}:{made.want}", session),
        "node": await nodes.command("SISMEMBER", f"{P}queue:node:{made.node_id}", session),
    }


@pytest_twisted.ensureDeferred
async def test_take_withdraws_the_waiting_user_when_nobody_has_waited_long_enough(nodes: Nodes) -> None:
    queue = await nodes.queue()
    await queue.enqueue(entry("local", 10.0, "node-1"))
    await queue.enqueue(entry("remote", 30.0, "node-2"))  # suits, but since after the bound
    assert await queue.take("local", arriving(), 20.0) is Take.TAKEN
    assert [e.session_id for e in await queue.waiting()] == ["remote"]
    assert await queue.withdraw("local") is False
    assert await queue.take("local", arriving(), 20.0) is Take.GONE


@pytest_twisted.ensureDeferred
async def test_take_of_a_user_gone_changes_nothing(nodes: Nodes) -> None:
    queue = await nodes.queue()
    await queue.enqueue(entry("remote", 1.0, "node-2"))  # would defer, were "local" there
    await queue.enqueue(entry("other", 2.0, "node-1", gender="u"))
    before = await everything(nodes)
    assert await queue.take("local", arriving(), 20.0) is Take.GONE
    assert await everything(nodes) == before


@pytest_twisted.ensureDeferred
async def test_take_defers_to_another_node_s_user_who_waited_long_enough(nodes: Nodes) -> None:
    queue = await nodes.queue()
    await queue.enqueue(entry("local", 10.0, "node-1"))
    await queue.enqueue(entry("remote", 5.0, "node-2"))
    local = await memberships(nodes, entry("local", 10.0, "node-1"))
    came = arriving(countries=frozenset({"DE", "FR"}))
    assert await queue.take("local", came, 5.0) is Take.DEFERRED
    assert await memberships(nodes, entry("local", 10.0, "node-1")) == local
    assert await memberships(nodes, came) == {
        "entry": [
            *(b"node", b"node-1", b"gender", b"m", b"want", b"f", b"country", b"DE"),
            *(b"countries", b"DE,FR", b"since", b"50.0"),
        ],
        "queue": b"50",
        "partition": b"50",
        "node": 1,
    }
    assert await queue.waiting() == [entry("remote", 5.0, "node-2"), entry("local", 10.0, "node-1"), came]

    # Deferred again (searching anew), it replaces its entry as `enqueue` does.
    again = arriving(since=60.0, want="any")
    assert await queue.take("local", again, 5.0) is Take.DEFERRED
    assert [e.session_id for e in await queue.waiting()] == ["remote", "local", "arriving"]
    assert (await memberships(nodes, came))["partition"] is None
    assert (await memberships(nodes, again))["partition"] == b"60"


@pytest.mark.parametrize(
    "old",
    [
        entry("old", 1.0, "node-1"),  # the arriving user's own node: its engine saw it already
        entry("old", 1.0, "node-2", gender="m"),  # the arriving man wants a woman
        entry("old", 1.0, "node-2", want="f"),  # she wants a woman
        entry("old", 1.0, "node-2", countries=frozenset({"FR"})),  # she accepts France only
        entry("old", 1.0, "node-2", country="US"),  # he accepts Germany only (below)
        entry("old", 1.0, "node-2", country=None),  # and she has no known country
    ],
    ids=["same node", "gender", "want", "her countries", "his countries", "no country"],
)
@pytest_twisted.ensureDeferred
async def test_take_does_not_defer_to_a_user_who_would_not_suit(nodes: Nodes, old: QueueEntry) -> None:
    queue = await nodes.queue()
    await queue.enqueue(old)
    await queue.enqueue(entry("local", 10.0, "node-1"))
    assert await queue.take("local", arriving(countries=frozenset({"DE"})), 20.0) is Take.TAKEN
    assert await queue.waiting() == [old]


@pytest_twisted.ensureDeferred
async def test_two_takes_of_one_user_racing_one_wins(nodes: Nodes) -> None:
    first, second = await nodes.queue(), await nodes.queue()
    winners = Counter[str]()
    for round in range(40):
        waiting, young = f"w{round}", f"young{round}"
        await first.enqueue(entry(waiting, round, "node-1"))
        await first.enqueue(entry(young, 100.0 + round, "node-2"))  # suits them, but has not waited enough
        one, two = arriving(f"a{round}", 100.0), arriving(f"b{round}", 100.0, gender="u")
        # Each on its own connection, sent at once, the connections swapping roles.
        left, right = (first, second) if round % 2 else (second, first)
        outcomes = await gatherResults([left.take(waiting, one, 99.0), right.take(waiting, two, 99.0)])
        assert sorted(outcome.value for outcome in outcomes) == ["gone", "taken"]
        assert [e.session_id for e in await first.waiting()] == [young]  # neither arrival enqueued
        await first.withdraw(young)
        winners[(one, two)[outcomes.index(Take.TAKEN)].session_id[0]] += 1
    assert winners["a"] > 0 and winners["b"] > 0


@pytest_twisted.ensureDeferred
async def test_a_claim_and_a_take_racing_for_a_user_one_wins(nodes: Nodes) -> None:
    first, second = await nodes.queue(), await nodes.queue()
    outcomes = Counter[str]()
    for round in range(40):
        waiting, remote = f"w{round}", f"r{round}"
        await first.enqueue(entry(waiting, round, "node-1"))
        await first.enqueue(entry(remote, round + 0.5, "node-2", gender="m"))  # not one for `came`
        came = arriving(f"a{round}", 100.0)
        # Each on its own connection, sent at once (in this order): Redis runs them in either order.
        claimer, taker = (first, second) if round % 2 else (second, first)
        if round % 4 < 2:
            claim, take = claimer.claim(waiting, remote), taker.take(waiting, came, 99.0)
        else:
            take, claim = taker.take(waiting, came, 99.0), claimer.claim(waiting, remote)
        claimed, took = await claim, await take
        assert took in (Take.TAKEN, Take.GONE)
        assert claimed is (took is Take.GONE)
        left = [e.session_id for e in await first.waiting()]
        assert left == ([] if claimed else [remote])
        await first.withdraw(remote)
        outcomes["claim" if claimed else "take"] += 1
    assert outcomes["claim"] > 0 and outcomes["take"] > 0


# Drawn so that many pairs suit each other, and many do not.
_PEOPLE = st.tuples(
    st.sampled_from(["node-1", "node-2"]),
    st.sampled_from("mfu"),
    st.sampled_from(["any", "any", "m", "f"]),
    st.sampled_from(["DE", None, "FR"]),
    st.sampled_from([frozenset(), frozenset({"DE"}), frozenset({"DE", "FR"})]),
    st.sampled_from([1.0, 2.0, 5.0, 9.0]),
)


def _made(session_id: str, values: tuple[Any, ...]) -> QueueEntry:
    node, gender, want, country, countries, since = values
    return QueueEntry(session_id, node, gender, country, want, countries, since)


@settings(max_examples=80, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    others=st.lists(_PEOPLE, min_size=1, max_size=8),
    came=_PEOPLE,
    queued=st.sampled_from([True, True, False]),
    before=st.sampled_from([float("inf"), 5.0, 2.0, 0.0]),
)
@pytest_twisted.ensureDeferred
async def test_take_agrees_with_a_model_of_the_queue(
    nodes: Nodes, others: list[tuple[Any, ...]], came: tuple[Any, ...], queued: bool, before: float
) -> None:
    """Random queues and arrivals: `take` does what a plain reading of `compatible` says."""
    await nodes.command("FLUSHALL")
    queue = await nodes.queue()
    waiters = [_made(f"o{i}", values) for i, values in enumerate(others)]
    arrival = _made("arriving", came)
    for made in [*waiters, *([entry("waiting", 3.0, arrival.node_id)] if queued else [])]:
        await queue.enqueue(made)
    fair = any(
        other.node_id != arrival.node_id and other.since <= before and compatible(arrival, other)
        for other in waiters
    )
    expected = Take.GONE if not queued else Take.DEFERRED if fair else Take.TAKEN
    assert await queue.take("waiting", arrival, before) is expected
    left = {made.session_id for made in await queue.waiting()}
    assert left == {made.session_id for made in waiters} | (
        {"waiting", "arriving"} if expected is Take.DEFERRED else set()
    )


# The matcher's lease


@pytest_twisted.ensureDeferred
async def test_one_node_holds_the_lease_and_only_it_renews_or_releases_it(nodes: Nodes) -> None:
    one, two = await nodes.queue(), await nodes.queue()
    assert await one.lease_holder() is None
    assert await one.acquire_lease("node-1", 0.3) is True
    assert await two.acquire_lease("node-2", 0.3) is False
    assert await two.lease_holder() == "node-1"
    assert await one.acquire_lease("node-1", 0.3) is True  # its own: extended

    assert await two.renew_lease("node-2", 10.0) is False
    assert await two.release_lease("node-2") is False
    assert await two.lease_holder() == "node-1"
    assert await one.renew_lease("node-1", 10.0) is True
    assert 9000 < int(await nodes.command("PTTL", f"{KEY_PREFIX}matcher")) <= 10000
    assert await one.release_lease("node-1") is True
    assert await one.lease_holder() is None
    assert await one.renew_lease("node-1", 1.0) is False  # a lease given up is not renewed

    # A lease not renewed expires, and another node takes it.
    assert await one.acquire_lease("node-1", 0.1) is True
    await deferLater(reactor, 0.2, lambda: None)
    assert await one.lease_holder() is None
    assert await one.renew_lease("node-1", 1.0) is False
    assert await two.acquire_lease("node-2", 1.0) is True
    assert await one.lease_holder() == "node-2"


@pytest_twisted.ensureDeferred
async def test_racing_nodes_take_the_lease_one_at_a_time(nodes: Nodes) -> None:
    queues = [await nodes.queue() for _ in range(4)]
    for _ in range(10):
        won = await gatherResults([queue.acquire_lease(f"node-{i}", 5.0) for i, queue in enumerate(queues)])
        assert sum(won) == 1
        holder = f"node-{won.index(True)}"
        assert await queues[0].lease_holder() == holder
        assert await queues[0].release_lease(holder) is True
