"""Which nodes are alive, and their figures: each node's heartbeat in Redis, dead nodes found and cleaned up
after exactly once, and the cluster's totals cached for `welcome`, `/api/stats` and `/metrics`.

Every `interval` a node runs one Lua script that writes its heartbeat, registers it, reads every registered
node's record and claims the dead ones, in one round trip and one atomic step. Keys, under the prefix
`vchat:{cluster}:` (the hash tag `{cluster}` keeps them in one slot, so that the script may touch all of
them on a Redis Cluster too, as the store's `{store}` does):

    nodes          sorted set: the registered node ids, each scored by the time of its last heartbeat (by
                   that node's clock: for people reading it; liveness is only the record's expiry)
    node:<id>      string, expiring `ttl` after the node's last heartbeat (SET ... PX): its record, JSON
                   {"matched": int, "online": int, "searching": int, "started_at": seconds since the epoch,
                    "waiting": {"<gender>:<want>": seconds since the epoch, ...}}, where `waiting` (left out
                   when empty) says since when the longest-waiting user of the node in the shared queue has
                   waited, in each (gender, want) partition that has one: what the other nodes' fairness
                   check reads (vchat.cluster.matchmaker)

A registered node whose record has expired is dead. The script that finds it removes it from `nodes` in the
same atomic step, so exactly one living node claims each dead node and calls `on_node_dead` for it, once.

When Redis fails (no answer within `timeout`, a lost connection, an error), the heartbeat goes on trying
every `interval`, the outage and the recovery are logged once each, and `totals()` and `nodes()` count this
node alone until a heartbeat succeeds again: figures of other nodes that cannot be checked are not shown. A
record that is not valid (written by something else, or by a newer vchat that changed its meaning) is left
out of the figures and logged once per node, never failing the heartbeat.

The pure parts (`NodeCounts`, `NodeRecord`, the record's codec, `parse_reading`, `ClusterView`) use no
Twisted and read no clock.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from vchat.cluster.outage import Outage

KEY_PREFIX = "vchat:{cluster}:"
"""What every key of the cluster's presence starts with: vchat's, then the hash tag of the cluster's slot."""
DEFAULT_INTERVAL = 1.0
"""Seconds between heartbeats."""
DEFAULT_TTL = 5.0
"""Seconds a heartbeat keeps its node alive: a node silent for longer is dead."""
MAX_RECORD = 1024
"""The most characters of a node record read from Redis; a longer one is not valid."""
MAX_COUNT = 2**53
"""Counts above this are not valid: past it, JSON numbers stop being exact in many languages."""

_NODE_ID = re.compile(r"[!-~]{1,64}")
_COUNTS = ("online", "searching", "matched")
_PARTITION = re.compile(r"[mfu]:(?:any|m|f)")

# KEYS[1]: the prefix. ARGV: node id, record, TTL (ms), time of the heartbeat. Gives JSON: [joined (1 when
# this node was not registered), [[id, record, or false if it is not printable ASCII], ...], [dead id, ...]].
# A record is read with PCALL: a key of the wrong type is a malformed record, not a failed heartbeat. Ids
# and records are passed back only if printable ASCII, so that no client's decoding fails on them, and all
# in one JSON string, which no client turns into a number.
_BEAT = """
local P = KEYS[1]
local registry = P .. 'nodes'
local function plain(text) return #text <= 1024 and not string.find(text, '[^ -~]') end
redis.call('SET', P .. 'node:' .. ARGV[1], ARGV[2], 'PX', ARGV[3])
local joined = redis.call('ZADD', registry, ARGV[4], ARGV[1])
local living, dead = {}, {}
for _, id in ipairs(redis.call('ZRANGE', registry, 0, -1)) do
  local record = redis.pcall('GET', P .. 'node:' .. id)
  if not record then
    redis.call('ZREM', registry, id)
    if plain(id) then dead[#dead + 1] = id end
  elseif plain(id) then
    living[#living + 1] = {id, type(record) == 'string' and plain(record) and record}
  end
end
return cjson.encode({joined, living, dead})
"""

# KEYS[1]: the prefix. ARGV: node id.
_LEAVE = """
redis.call('DEL', KEYS[1] .. 'node:' .. ARGV[1])
return redis.call('ZREM', KEYS[1] .. 'nodes', ARGV[1])
"""


@dataclass(frozen=True, slots=True)
class NodeCounts:
    """A node's figures, or the sum of several nodes': users connected, waiting for a partner, in a match."""

    online: int = 0
    searching: int = 0
    matched: int = 0

    def __add__(self, other: NodeCounts) -> NodeCounts:
        return NodeCounts(
            self.online + other.online, self.searching + other.searching, self.matched + other.matched
        )


@dataclass(frozen=True, slots=True)
class NodeRecord:
    """What a node's heartbeat says: its figures, when it started (seconds since the epoch), and since when the
    longest-waiting user of each (gender, want) partition it has in the shared queue waits ("m:any": time)."""

    counts: NodeCounts
    started_at: float
    waiting: Mapping[str, float] = field(default_factory=dict)


def total(counts: Iterable[NodeCounts]) -> NodeCounts:
    """The sum of `counts`."""
    return sum(counts, NodeCounts())


def check_node_id(node_id: str) -> str:
    """`node_id`, if it can name a node (1 to 64 printable ASCII characters, no space); ValueError if not."""
    if not isinstance(node_id, str) or not _NODE_ID.fullmatch(node_id):
        raise ValueError(f"a node id is 1 to 64 printable ASCII characters, without spaces: not {node_id!r}")
    return node_id


def encode_record(record: NodeRecord) -> str:
    """`record` as its node's key holds it: compact JSON, ASCII only."""
    counts = record.counts
    fields: dict[str, Any] = {
        "online": counts.online,
        "searching": counts.searching,
        "matched": counts.matched,
        "started_at": float(record.started_at),
    }
    if record.waiting:
        fields["waiting"] = {partition: float(since) for partition, since in record.waiting.items()}
    return json.dumps(
        fields,
        allow_nan=False,
        separators=(",", ":"),
        sort_keys=True,
    )


def decode_record(raw: str | bytes) -> NodeRecord:
    """The record a node's key holds; ValueError, saying why, if it is not one. Unknown fields are
    ignored, so that a newer vchat may add some."""
    if not isinstance(raw, str | bytes):
        raise ValueError(f"a record is text, not {type(raw).__name__}")
    if len(raw) > MAX_RECORD:
        raise ValueError(f"the record is longer than {MAX_RECORD} characters")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise ValueError("the record is not JSON") from None
    if not isinstance(data, dict):
        raise ValueError("the record is not a JSON object")
    counts = []
    for name in _COUNTS:
        value = data.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
            raise ValueError(f"the record's {name} is not a whole number from 0 to {MAX_COUNT}")
        counts.append(value)
    started_at = data.get("started_at")
    if (
        isinstance(started_at, bool)
        or not isinstance(started_at, int | float)
        or not math.isfinite(started_at)
    ):
        raise ValueError("the record's started_at is not a time")
    waiting = data.get("waiting", {})
    if not isinstance(waiting, dict) or not all(
        isinstance(partition, str)
        and _PARTITION.fullmatch(partition)
        and not isinstance(since, bool)
        and isinstance(since, int | float)
        and math.isfinite(since)
        for partition, since in waiting.items()
    ):
        raise ValueError("the record's waiting is not a map of partitions (such as m:any) to times")
    return NodeRecord(
        NodeCounts(*counts),
        float(started_at),
        {partition: float(since) for partition, since in waiting.items()},
    )


@dataclass(frozen=True)
class Reading:
    """What one heartbeat found in Redis."""

    joined: bool
    """Whether the heartbeat registered this node anew: the first one, or one after the node's record was
    lost (Redis lost its data, or the node was silent for longer than the TTL and taken for dead)."""
    living: dict[str, NodeRecord]
    """The valid records of the living nodes, this node's own included."""
    malformed: dict[str, str]
    """The living nodes whose record is not valid, and why."""
    dead: list[str]
    """The dead nodes this heartbeat claimed: this node, and no other, cleans up after them."""


def _array(value: object) -> list[Any]:
    if isinstance(value, list):
        return value
    if value == {}:  # Lua's empty table, which cjson writes as an object
        return []
    raise ValueError("the heartbeat's reply is not a list")


def parse_reading(reply: object) -> Reading:
    """The heartbeat script's reply; ValueError if it is not one. Invalid records are put in `malformed`,
    entries of the wrong shape left out."""
    if not isinstance(reply, str | bytes):
        raise ValueError(f"the heartbeat's reply is {type(reply).__name__}, not JSON text")
    try:
        envelope = json.loads(reply)
    except (ValueError, RecursionError):
        raise ValueError("the heartbeat's reply is not JSON") from None
    if not isinstance(envelope, list) or len(envelope) != 3:
        raise ValueError("the heartbeat's reply is not [joined, living, dead]")
    joined, entries, dead = envelope[0], _array(envelope[1]), _array(envelope[2])
    living: dict[str, NodeRecord] = {}
    malformed: dict[str, str] = {}
    for entry in entries:
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], str)):
            continue
        node_id, raw = entry
        if not isinstance(raw, str):
            malformed[node_id] = f"the record is not printable ASCII text of at most {MAX_RECORD} characters"
            continue
        try:
            living[node_id] = decode_record(raw)
        except ValueError as e:
            malformed[node_id] = str(e)
    return Reading(joined == 1, living, malformed, [node for node in dead if isinstance(node, str)])


class ClusterView:
    """What one node knows of the others' figures: those of its latest successful reading, while that is
    at most `max_age` seconds old; none once Redis failed. Its own figures are always given by the caller,
    so they are always current."""

    def __init__(self, own_id: str, max_age: float) -> None:
        self.own_id = own_id
        self._max_age = max_age
        self._others: dict[str, NodeCounts] = {}
        self._read_at: float | None = None

    def read(self, counts: Mapping[str, NodeCounts], now: float) -> None:
        """Redis gave the living nodes' `counts` at `now` (this node's among them or not)."""
        self._others = {node: figures for node, figures in counts.items() if node != self.own_id}
        self._read_at = now

    def lost(self) -> None:
        """Redis failed: the other nodes' figures can no longer be checked."""
        self._others = {}
        self._read_at = None

    def others(self, now: float) -> dict[str, NodeCounts]:
        """The other living nodes' figures, none if Redis failed or the reading is older than `max_age`."""
        if self._read_at is None or now - self._read_at > self._max_age:
            return {}
        return dict(self._others)

    def nodes(self, own: NodeCounts, now: float) -> dict[str, NodeCounts]:
        """Each living node's figures, this node's being `own`."""
        return {**self.others(now), self.own_id: own}

    def totals(self, own: NodeCounts, now: float) -> NodeCounts:
        """The sum of the living nodes' figures, this node's being `own`; `own` alone without Redis."""
        return total(self.nodes(own, now).values())


class RedisScripts(Protocol):
    """What the presence needs of a Redis client: txredisapi's connection handler has it."""

    def eval(self, script: str, keys: Sequence[str] = ..., args: Sequence[str] = ...) -> Deferred[Any]: ...


class NodePresence(Service):
    """This node's heartbeat in Redis, the cluster's figures as of the latest heartbeat, and the cleanup
    after dead nodes (see the module's docstring)."""

    name = "cluster-presence"
    _log = Logger()

    def __init__(
        self,
        node_id: str,
        redis: RedisScripts,
        clock: IReactorTime,
        counts: Callable[[], NodeCounts],
        on_node_dead: Callable[[str], object],
        interval: float = DEFAULT_INTERVAL,
        ttl: float = DEFAULT_TTL,
        timeout: float | None = None,
        waiting: Callable[[], Mapping[str, float]] = dict,
    ) -> None:
        """`counts` gives this node's current figures, and `waiting` the record's `waiting`;
        `on_node_dead(node_id)` is called once in the whole cluster for each dead node (it may return a
        Deferred; its failures are logged). A heartbeat that Redis has not answered within `timeout` seconds
        (default: `ttl`) failed."""
        if not 0 < interval < ttl:
            raise ValueError(
                f"the heartbeat interval ({interval:g} s) must be above 0 and below the TTL ({ttl:g} s)"
            )
        self.node_id = check_node_id(node_id)
        self._redis = redis
        self._clock = clock
        self._counts = counts
        self._on_node_dead = on_node_dead
        self._interval = interval
        self._ttl = ttl
        self._timeout = ttl if timeout is None else timeout
        self._view = ClusterView(node_id, ttl)
        self._waiting = waiting
        # The other living nodes' `waiting`, as of the latest reading (read when), none since a failure.
        self._others_waiting: list[Mapping[str, float]] = []
        self._waiting_read_at = 0.0
        self._started_at = 0.0
        self._last_counts = NodeCounts()
        self._next: IDelayedCall | None = None
        self._beating: Deferred[None] | None = None
        self._beats = 0
        self._outage = Outage(clock, self._log)
        self._malformed: set[str] = set()

    def totals(self) -> NodeCounts:
        """The sum of the living nodes' figures, this node's current ones included; this node's alone while
        Redis fails. Needs no round trip to Redis."""
        return self._view.totals(self._counts(), self._clock.seconds())

    def others_waiting(self) -> list[Mapping[str, float]]:
        """The other living nodes' `waiting` (see the module) as of the latest heartbeat, if that is at most
        `ttl` old; none while Redis fails."""
        if self._clock.seconds() - self._waiting_read_at > self._ttl:
            return []
        return self._others_waiting

    def others(self) -> dict[str, NodeCounts]:
        """The other living nodes' figures as of the latest heartbeat (none while Redis fails); cheap: no
        count of this node's own is taken."""
        return self._view.others(self._clock.seconds())

    def nodes(self) -> dict[str, NodeCounts]:
        """Each living node's figures, by node id, this node's current ones included; only this node's while
        Redis fails."""
        return self._view.nodes(self._counts(), self._clock.seconds())

    @property
    def redis_available(self) -> bool:
        """Whether the latest heartbeat succeeded (False before the first one has)."""
        return self._beats > 0 and not self._outage.ongoing

    def startService(self) -> None:
        super().startService()
        self._started_at = self._clock.seconds()
        self._beats = 0
        self._tick()

    def stopService(self) -> Deferred[None]:
        """Stop the heartbeat and remove this node from Redis (best effort: after a failed heartbeat, or if
        Redis fails now, its record expires by itself and another node takes it for dead)."""
        super().stopService()
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        return Deferred.fromCoroutine(self._leave())

    async def _leave(self) -> None:
        beating = self._beating
        if beating is not None:
            if self._outage.ongoing:  # it would wait for Redis until its timeout
                beating.cancel()
            with suppress(Exception):  # it logged its own failure
                await beating
        if not self._outage.ongoing:
            try:
                await self._run(_LEAVE, self.node_id)
            except Exception as e:
                self._log.warn(
                    "node {node} could not leave the cluster's registry: {error}", node=self.node_id, error=e
                )
        self._view.lost()

    def _tick(self) -> None:
        """Run one heartbeat, then schedule the next (fenced: a failure is logged, the heartbeat goes on)."""
        self._next = None
        started = self._clock.seconds()
        self._beating = beating = Deferred.fromCoroutine(self._beat())
        beating.addErrback(self._log_failure)
        beating.addBoth(self._schedule, started)

    def _log_failure(self, failure: Failure) -> None:
        self._log.failure("the heartbeat of node {node} failed", failure, node=self.node_id)

    def _schedule(self, _: object, started: float) -> None:
        self._beating = None
        if self.running:
            delay = max(0.0, started + self._interval - self._clock.seconds())
            self._next = self._clock.callLater(delay, self._tick)

    async def _beat(self) -> None:
        record = encode_record(NodeRecord(self._current_counts(), self._started_at, self._current_waiting()))
        now = self._clock.seconds()
        try:
            reply = await self._run(_BEAT, self.node_id, record, str(math.ceil(self._ttl * 1000)), repr(now))
            reading = parse_reading(reply)
        except Exception as e:
            self._failed(e)
            return
        self._beats += 1
        self._succeeded(reading)
        self._view.read(
            {node: record.counts for node, record in reading.living.items()}, self._clock.seconds()
        )
        self._others_waiting = [
            record.waiting
            for node, record in reading.living.items()
            if node != self.node_id and record.waiting
        ]
        self._waiting_read_at = self._clock.seconds()
        self._note_malformed(reading.malformed)
        for node in reading.dead:
            if node != self.node_id:
                self._bury(node)

    def _current_counts(self) -> NodeCounts:
        try:
            self._last_counts = self._counts()
        except Exception:
            self._log.failure("cannot count the users of node {node}", node=self.node_id)
        return self._last_counts

    def _current_waiting(self) -> Mapping[str, float]:
        try:
            return self._waiting()
        except Exception:
            self._log.failure("cannot read the waiting users of node {node}", node=self.node_id)
            return {}

    def _run(self, script: str, *args: str) -> Deferred[Any]:
        running: Deferred[Any] = maybeDeferred(self._redis.eval, script, [KEY_PREFIX], list(args))
        return running.addTimeout(self._timeout, self._clock)

    def _failed(self, error: Exception) -> None:
        self._view.lost()
        self._others_waiting = []
        self._outage.failed(
            "node {node} cannot reach Redis ({error}): counting this node's users alone until it is back",
            node=self.node_id,
            error=str(error) or type(error).__name__,
        )

    def _succeeded(self, reading: Reading) -> None:
        self._outage.succeeded("node {node} reaches Redis again, after {seconds:.1f} s", node=self.node_id)
        if reading.joined and self._beats > 1:
            self._log.warn(
                "node {node} was no longer registered (Redis lost its data, or this node was silent for over "
                "{ttl:g} s and other nodes took it for dead): registered again",
                node=self.node_id,
                ttl=self._ttl,
            )

    def _note_malformed(self, malformed: Mapping[str, str]) -> None:
        for node in malformed.keys() - self._malformed:
            self._log.warn(
                "node {node}'s record in Redis is not valid, left out: {why}", node=node, why=malformed[node]
            )
        self._malformed = set(malformed)

    def _bury(self, node: str) -> None:
        self._log.info(
            "node {node} stopped its heartbeat: node {own} cleans up after it", node=node, own=self.node_id
        )
        burying = maybeDeferred(self._on_node_dead, node)
        burying.addErrback(
            lambda failure: self._log.failure(
                "the cleanup after dead node {node} failed", failure, node=node, own=self.node_id
            )
        )
