"""A node's matchmaking in a cluster, on a real redis-server: which calls to Redis each path makes (none for a
local match made within the queue delay), the delay itself, fairness told by the heartbeats, and what a
withdrawal costs. Time on the node is a driven clock; Redis answers in real time."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest_twisted
import txredisapi
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.task import Clock, deferLater
from zope.interface import implementer

from vchat.cluster.entries import QueueEntry
from vchat.cluster.matchmaker import FAIR_WAIT, QUEUE_DELAY, ClusterMatchmaker
from vchat.cluster.queue import SharedQueue, Take
from vchat.matching import MatchingEngine
from vchat.protocol.messages import Hello, Search
from vchat.protocol.remote import INodeLink, NodeMessage
from vchat.protocol.session import Session, SessionState
from vchat.protocol.switchboard import Switchboard
from vchat.store import redis_testing
from vchat.store.redis_testing import RedisServer
from vchat.testing import RecordingPeer

redis_server = redis_testing.redis_server  # the fixtures, by their names
redis_url = redis_testing.redis_url


class RecordingQueue(SharedQueue):
    """The real shared queue, noting the name of each call made to it."""

    def __init__(self, redis: Any) -> None:
        super().__init__(redis)
        self.calls: list[str] = []

    def enqueue(self, entry: QueueEntry) -> Deferred[None]:
        self.calls.append("enqueue")
        return super().enqueue(entry)

    def withdraw(self, session_id: str) -> Deferred[bool]:
        self.calls.append("withdraw")
        return super().withdraw(session_id)

    def take(self, waiting: str, arriving: QueueEntry, before: float, scan: int = 32) -> Deferred[Take]:
        self.calls.append("take")
        return super().take(waiting, arriving, before, scan)


@implementer(INodeLink)
class NoOtherNodes:
    """A link to nobody: what a node would send, kept."""

    def __init__(self) -> None:
        self.sent: list[NodeMessage] = []

    def send(self, node_id: str, message: NodeMessage) -> bool:
        self.sent.append(message)
        return True

    def broadcast(self, message: NodeMessage) -> bool:
        return self.send("*", message)

    def fetch_session(self, node_id: str, token: str) -> Deferred[Any]:
        return succeed((None, None))  # nobody to hand a session over


class Node:
    """One node: a switchboard on a driven clock whose matchmaker is the cluster's, over the real queue."""

    def __init__(self, queue: RecordingQueue, waits: Callable[[], list[Mapping[str, float]]] = list) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000.0)
        self.queue = queue
        self.board = Switchboard(self.clock, MatchingEngine(), resume_grace=15.0)
        self.matchmaker = ClusterMatchmaker(
            "n1", self.board.matchmaker.engine, queue, self.board, NoOtherNodes(), self.clock
        )
        self.matchmaker.others_waiting = waits
        self.board.matchmaker = self.matchmaker
        self.peers: dict[str, RecordingPeer] = {}

    def search(self, gender: str = "u", want: str = "any") -> Session:
        peer = RecordingPeer()
        session = self.board.open(Hello(gender, None, {}, None, None), peer, None)
        self.peers[session.session_id] = peer
        self.board.search(session, Search(want, frozenset()))
        return session

    async def settle(self) -> None:
        """Let Redis answer what was sent."""
        await deferLater(reactor, 0.05, lambda: None)


async def queue_of(server: RedisServer, connections: list[Any]) -> RecordingQueue:
    factory = txredisapi.RedisFactory(
        "test", None, 1, charset=None, password=server.password, convertNumbers=False
    )
    factory.startConnecting(HostnameEndpoint(reactor, "127.0.0.1", server.port))
    handler = await factory.deferred
    connections.append(factory)
    return RecordingQueue(handler)


@pytest_twisted.async_yield_fixture()
async def queue(redis_url: str, redis_server: RedisServer) -> AsyncIterator[RecordingQueue]:
    connections: list[Any] = []
    yield await queue_of(redis_server, connections)
    for factory in connections:
        await factory.disconnect()


@pytest_twisted.ensureDeferred
async def test_two_users_who_meet_within_the_delay_cost_redis_nothing(queue: RecordingQueue) -> None:
    node = Node(queue)
    first, second = node.search(), node.search()
    assert first.state is second.state is SessionState.MATCHED
    node.clock.advance(QUEUE_DELAY * 2)
    await node.settle()
    assert queue.calls == [] and await queue.waiting() == []


@pytest_twisted.ensureDeferred
async def test_a_user_alone_goes_to_the_shared_queue_after_the_delay_and_is_taken_from_it(
    queue: RecordingQueue,
) -> None:
    node = Node(queue)
    first = node.search()
    node.clock.advance(QUEUE_DELAY / 2)
    assert queue.calls == []
    node.clock.advance(QUEUE_DELAY)
    await node.settle()
    assert queue.calls == ["enqueue"] and [entry.session_id for entry in await queue.waiting()] == [
        first.session_id
    ]
    second = node.search()
    await node.settle()
    assert queue.calls == ["enqueue", "take"]
    assert first.state is second.state is SessionState.MATCHED
    assert await queue.waiting() == []


@pytest_twisted.ensureDeferred
async def test_leaving_before_the_delay_costs_nothing_and_after_it_one_withdrawal(
    queue: RecordingQueue,
) -> None:
    node = Node(queue)
    early = node.search()
    node.board.stop(early)
    node.clock.advance(QUEUE_DELAY * 2)
    await node.settle()
    assert queue.calls == []
    late = node.search()
    node.clock.advance(QUEUE_DELAY * 2)
    await node.settle()
    node.board.stop(late)
    await node.settle()
    assert queue.calls == ["enqueue", "withdraw"] and await queue.waiting() == []


@pytest_twisted.ensureDeferred
async def test_someone_waiting_long_on_another_node_sends_an_arrival_to_the_matcher(
    queue: RecordingQueue,
) -> None:
    waits: list[Mapping[str, float]] = []
    node = Node(queue, lambda: waits)
    first = node.search()
    waits.append({"u:any": node.clock.seconds() - FAIR_WAIT - 1})  # a heartbeat told of it
    second = node.search()
    await node.settle()
    assert first.state is second.state is SessionState.SEARCHING  # not matched with each other here
    assert queue.calls == ["enqueue"]
    assert [entry.session_id for entry in await queue.waiting()] == [second.session_id]
    waits[0] = {"m:f": 0.0, "u:any": node.clock.seconds()}  # incompatible, or not waiting long: no matter
    third = node.search()
    assert first.state is third.state is SessionState.MATCHED


@pytest_twisted.ensureDeferred
async def test_the_longest_waits_are_what_the_heartbeat_tells(queue: RecordingQueue) -> None:
    node = Node(queue)
    since = node.clock.seconds()
    node.search("m", "f")
    node.clock.advance(1.0)
    node.search("m", "f")
    assert node.matchmaker.longest_waits() == {"m:f": since}  # the second is not in the shared queue yet
    await node.settle()
