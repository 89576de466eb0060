"""The shared queue (docs/cluster.md, "Matching"): the users who found nobody on their own node, in Redis for
every node to see, taken out by atomic claims so that no user is ever matched twice; and the matcher's lease.

Every call is one Lua script, so each is one atomic step: two nodes that race to claim the same user are put
in an order by Redis, and the second finds the user gone. Keys, under the prefix `vchat:{cluster}:` (the hash
tag `{cluster}` keeps them in the slot of vchat.cluster.presence's keys, so that a script may touch them all
on a Redis Cluster too); `<g>:<w>` is a gender and a want:

    queue               sorted set: the session id of every waiting user, by the time it started waiting
    queue:<g>:<w>       sorted set: those of gender g who want w, likewise (nine partitions)
    queue:node:<id>     set: the session ids of the waiting users that node `id` holds
    queue:entry:<sid>   hash: the user's entry, the fields of vchat.cluster.entries (node, gender, want,
                        country, countries, since)
    matcher             string: the id of the node that holds the matcher's lease, expiring (PX) with it

`enqueue` writes an entry and its three index memberships together, replacing the session's earlier entry if
it had one; `withdraw`, `claim`, `take` and `remove_node` delete the entry with its memberships. `claim(a, b)`
takes both users or neither. `withdraw` is also the claim of a local match where one user only is in the
shared queue: True means this call took the user, and no other node can match it any more. `take` is that
claim with the fairness question asked in the same step (below).

Privacy: the queue holds only waiting users' own attributes (their entries), never a pair or a partner. A
claim deletes both entries and all their index memberships, and writes nothing: once it ran, Redis holds no
trace that the two were paired. (What Redis logs outside its data is the operator's: an append-only file or
a replica receives the script's deletions of both entries together, until the file is rewritten, and MONITOR
shows a claim's arguments.)

Entries that do not decode (written by something else, or by a newer vchat during an upgrade) are left out
of `waiting`, logged, and left in Redis: deleting them could drop a newer node's users. Their node withdraws
or claims them as usual, or `remove_node` removes them once their node is dead.

Fairness (`oldest_compatible`, `take`): before it pairs a user with another on its own node, a node asks
whether another node's user, compatible by gender, want and countries, has waited since before a bound; if so
it leaves the pair to the matcher, which pairs longest wait first across nodes. The answer knows nothing of
recent partners and blocked pairs, which Redis never holds: it may send a user to the matcher that the
matcher cannot pair with the old one, never the other way. It reads at most `scan` entries of each
partition; past that it errs the same way, towards the matcher. Times are the nodes' own clocks: they are
compared across nodes, so nodes should keep them in step (NTP). `take(waiting, arriving, before)` asks it and
acts on the answer atomically, for a local match of an arriving user with a queued one: if `waiting` is gone
it changes nothing; if another node's user has waited long enough it enqueues `arriving` instead, for the
matcher to pair; otherwise it withdraws `waiting`, whom no other node can match any more. One round trip, and
no answer that is stale by the time the node acts on it.

The lease only spares work: two nodes that both believe they hold it (one stalled past its TTL) still
cannot match a user twice, since every match is a claim.

A call that fails (Redis away or silent, a lost connection) may or may not have been applied: its caller
learns the truth from the queue itself (`waiting`, or by enqueueing again). The Redis handler must reply as
`vchat.redis_connection.connect_redis` makes it: bytes (or text), numbers as Redis sends them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine
from enum import Enum
from functools import update_wrapper
from typing import Any, Concatenate, ParamSpec, TypeVar

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import Logger

from vchat.cluster.entries import (
    FIELDS,
    QueueEntry,
    check_id,
    decode_entry,
    encode_entry,
    partner_partitions,
)
from vchat.cluster.presence import KEY_PREFIX, RedisScripts

DEFAULT_SCAN = 32
"""How many entries of each partition `oldest_compatible` and `take` read at most."""

_P = ParamSpec("_P")
_T = TypeVar("_T")
_S = TypeVar("_S")

# Every script starts with this. P is the key prefix, passed as KEYS[1]: the key a Cluster routes by.
# `unlink` takes a session out of the queue and every index it is in; false if it was not waiting. It reads
# the entry's node, gender and want to find its memberships (PCALL: a key of another type is taken as an
# entry without fields), and takes it out of all nine partitions if those are not valid.
# `enqueue(i)` writes the entry whose session id is ARGV[i], its values in FIELDS order following (node,
# gender, want, country, countries, since), replacing the session's earlier entry.
# `oldest(i)` answers the fairness question asked from ARGV[i] on: the seeker's node, its country ('' if
# unknown), its accepted countries (',DE,FR,', '' for any), the latest time wanted, how many entries to read
# in each partition, then the partitions ('<g>:<w>') whose users it accepts by gender and who accept it. It
# gives the oldest matching `since` as text (false if none): the time of the oldest entry of another node
# whose countries suit the seeker's both ways; or, in a partition whose first `scan` entries in time are all
# unsuitable, the last one's, since one after it may suit.
_PRELUDE = """
local P = KEYS[1]
local GENDERS = {m = true, f = true, u = true}
local WANTS = {any = true, m = true, f = true}
local function entry_key(id) return P .. 'queue:entry:' .. id end
local function unlink(id)
  local key = entry_key(id)
  if redis.call('EXISTS', key) == 0 then return false end
  local f = redis.pcall('HMGET', key, 'node', 'gender', 'want')
  if type(f) ~= 'table' or f.err then f = {} end
  redis.call('DEL', key)
  redis.call('ZREM', P .. 'queue', id)
  if GENDERS[f[2]] and WANTS[f[3]] then
    redis.call('ZREM', P .. 'queue:' .. f[2] .. ':' .. f[3], id)
  else
    for g in pairs(GENDERS) do
      for w in pairs(WANTS) do redis.call('ZREM', P .. 'queue:' .. g .. ':' .. w, id) end
    end
  end
  if f[1] then redis.call('SREM', P .. 'queue:node:' .. f[1], id) end
  return true
end
local function enqueue(i)
  local id, node, gender, want, since = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 6]
  unlink(id)
  redis.call('HSET', entry_key(id), 'node', node, 'gender', gender, 'want', want, 'country', ARGV[i + 4],
    'countries', ARGV[i + 5], 'since', since)
  redis.call('ZADD', P .. 'queue', since, id)
  redis.call('ZADD', P .. 'queue:' .. gender .. ':' .. want, since, id)
  redis.call('SADD', P .. 'queue:node:' .. node, id)
end
local function oldest(i)
  local node, country, wanted, before = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local scan = tonumber(ARGV[i + 4])
  local best, best_text = nil, false
  local function suits(id)
    local f = redis.pcall('HMGET', entry_key(id), 'node', 'country', 'countries')
    if type(f) ~= 'table' or f.err or not f[1] or f[1] == node then return false end
    local theirs, accepted = f[2] or '', f[3] or ''
    if wanted ~= '' and (theirs == '' or not string.find(wanted, ',' .. theirs .. ',', 1, true)) then
      return false
    end
    return accepted == '' or
      (country ~= '' and string.find(',' .. accepted .. ',', ',' .. country .. ',', 1, true))
  end
  for k = i + 5, #ARGV do
    local found = redis.call('ZRANGEBYSCORE', P .. 'queue:' .. ARGV[k], '-inf', before, 'WITHSCORES',
      'LIMIT', 0, scan)
    local decided = false
    for j = 1, #found, 2 do
      local since = tonumber(found[j + 1])
      if best and since >= best then decided = true break end
      if suits(found[j]) then
        best, best_text, decided = since, found[j + 1], true
        break
      end
    end
    if not decided and #found == 2 * scan then
      local since = tonumber(found[#found])
      if not best or since < best then best, best_text = since, found[#found] end
    end
  end
  return best_text
end
"""

# ARGV: session id, then the entry's values in FIELDS order.
_ENQUEUE = "enqueue(1) return 1"

# ARGV: session id.
_WITHDRAW = "return unlink(ARGV[1]) and 1 or 0"

# ARGV: two different session ids.
_CLAIM = """
if ARGV[1] == ARGV[2] then return 0 end
if redis.call('EXISTS', entry_key(ARGV[1])) == 0 or redis.call('EXISTS', entry_key(ARGV[2])) == 0 then
  return 0
end
unlink(ARGV[1])
unlink(ARGV[2])
return 1
"""

# ARGV: the index of the last entry wanted (-1: all). Gives a flat list, seven items an entry: its session
# id, then its fields' values in FIELDS order (nil if missing, all nil for a key of another type).
_WAITING = """
local out = {}
for _, id in ipairs(redis.call('ZRANGE', P .. 'queue', 0, ARGV[1])) do
  local f = redis.pcall('HMGET', entry_key(id), 'node', 'gender', 'want', 'country', 'countries', 'since')
  if type(f) ~= 'table' or f.err then f = {} end
  out[#out + 1] = id
  for i = 1, 6 do out[#out + 1] = f[i] or false end
end
return out
"""

# ARGV: node id. Gives the session ids removed. A member of the node's set whose entry is gone or names
# another node is only dropped from the set.
_REMOVE_NODE = """
local set = P .. 'queue:node:' .. ARGV[1]
local removed = {}
for _, id in ipairs(redis.call('SMEMBERS', set)) do
  if redis.pcall('HGET', entry_key(id), 'node') == ARGV[1] then
    unlink(id)
    removed[#removed + 1] = id
  end
end
redis.call('DEL', set)
return removed
"""

# ARGV: the seeker's question, as `oldest` takes it.
_OLDEST = "return oldest(1)"

# ARGV: the waiting user's session id; the arriving user's session id and entry values, as `enqueue` takes
# them; then the arriving user's question, as `oldest` takes it. Gives a `Take`'s value.
_TAKE = """
if redis.call('EXISTS', entry_key(ARGV[1])) == 0 then return 'gone' end
if oldest(9) then
  enqueue(2)
  return 'deferred'
end
unlink(ARGV[1])
return 'taken'
"""

# ARGV: node id, TTL in ms. Takes the lease if nobody holds it; extends it if this node does.
_ACQUIRE = """
local key = P .. 'matcher'
local holder = redis.call('GET', key)
if holder == ARGV[1] then
  redis.call('PEXPIRE', key, ARGV[2])
  return 1
end
if holder then return 0 end
redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
return 1
"""

# ARGV: node id, TTL in ms.
_RENEW = """
if redis.call('GET', P .. 'matcher') ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', P .. 'matcher', ARGV[2])
return 1
"""

# ARGV: node id.
_RELEASE = """
if redis.call('GET', P .. 'matcher') ~= ARGV[1] then return 0 end
redis.call('DEL', P .. 'matcher')
return 1
"""

_HOLDER = "return redis.call('GET', P .. 'matcher')"


def _deferred(
    method: Callable[Concatenate[_S, _P], Coroutine[Any, Any, _T]],
) -> Callable[Concatenate[_S, _P], Deferred[_T]]:
    """Run the coroutine `method` as a Deferred, its exceptions (bad arguments too) as its failure."""

    def call(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> Deferred[_T]:
        return Deferred.fromCoroutine(method(self, *args, **kwargs))

    update_wrapper(call, method)
    return call


def _text(value: object) -> str:
    """A string of a script's reply, sent as bytes or text."""
    if isinstance(value, bytes):
        return value.decode("ascii", "replace")
    if isinstance(value, str):
        return value
    raise ValueError(f"Redis replied {value!r} where text was expected")


def _question(seeker: object, before: float, scan: int, call: str) -> list[str]:
    """The arguments of `oldest` for `seeker`'s fairness question; TypeError or ValueError if they are not
    valid (`call` names the method in the message)."""
    if not isinstance(seeker, QueueEntry):
        raise TypeError(f"{call} takes a QueueEntry, not {type(seeker).__name__}")
    if isinstance(before, bool) or not isinstance(before, int | float) or math.isnan(before):
        raise ValueError(f"before is a time in seconds, not {before!r}")
    if isinstance(scan, bool) or not isinstance(scan, int) or scan < 1:
        raise ValueError(f"scan is a whole number from 1, not {scan!r}")
    wanted = "".join(f",{code}" for code in sorted(seeker.countries))
    return [
        seeker.node_id,
        seeker.country or "",
        wanted + "," if wanted else "",
        repr(float(before)),  # inf and -inf are Redis's too
        str(scan),
        *(f"{gender}:{want}" for gender, want in partner_partitions(seeker.gender, seeker.want)),
    ]


def _milliseconds(ttl_s: float) -> str:
    if isinstance(ttl_s, bool) or not (isinstance(ttl_s, int | float) and math.isfinite(ttl_s) and ttl_s > 0):
        raise ValueError(f"a lease's TTL is a positive number of seconds, not {ttl_s!r}")
    return str(max(1, math.ceil(ttl_s * 1000)))


class Take(Enum):
    """What `SharedQueue.take` did."""

    TAKEN = "taken"
    """The waiting user was in the queue and this call took it out; the arriving one was not enqueued."""
    GONE = "gone"
    """The waiting user was not in the queue (claimed or withdrawn already); nothing changed."""
    DEFERRED = "deferred"
    """Another node's user suited the arriving one and had waited long enough: the arriving user was enqueued,
    the waiting one left in place."""


class SharedQueue:
    """The users waiting in Redis for a partner on any node, and the matcher's lease (see the module)."""

    _log = Logger()

    def __init__(self, redis: RedisScripts, key_prefix: str = KEY_PREFIX) -> None:
        """`redis` is a txredisapi connection handler, such as `connect_redis` gives; `key_prefix` should
        hold a hash tag."""
        self._redis = redis
        self._prefix = key_prefix

    def _run(self, script: str, *args: str) -> Deferred[Any]:
        return maybeDeferred(self._redis.eval, _PRELUDE + script, [self._prefix], list(args))

    async def _done(self, script: str, *args: str) -> bool:
        """Whether `script`, which replies 1 or 0, did what it was for."""
        return bool(await self._run(script, *args) == 1)

    @_deferred
    async def enqueue(self, entry: QueueEntry) -> None:
        """Put `entry` in the queue, replacing its session's earlier entry, if any, in the same step."""
        if not isinstance(entry, QueueEntry):
            raise TypeError(f"enqueue takes a QueueEntry, not {type(entry).__name__}")
        await self._run(_ENQUEUE, entry.session_id, *encode_entry(entry))

    @_deferred
    async def withdraw(self, session_id: str) -> bool:
        """Take a user out of the queue: True if this call did, False if it was not there (claimed by a
        match, withdrawn, removed with its node, or never queued)."""
        return await self._done(_WITHDRAW, check_id(session_id, "a session id"))

    @_deferred
    async def claim(self, a: str, b: str) -> bool:
        """Take both users out of the queue for a match, in one step, if both are waiting; if either is not,
        change nothing and give False."""
        check_id(a, "a session id")
        check_id(b, "a session id")
        if a == b:
            raise ValueError(f"a user cannot be matched with itself ({a!r})")
        return await self._done(_CLAIM, a, b)

    @_deferred
    async def waiting(self, limit: int | None = None) -> list[QueueEntry]:
        """The waiting users, the longest-waiting first (the `limit` longest-waiting, if given); entries
        that do not decode are left out, and logged."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise ValueError(f"limit is a whole number from 0, or None, not {limit!r}")
        if limit == 0:
            return []
        reply = await self._run(_WAITING, str(-1 if limit is None else limit - 1))
        entries: list[QueueEntry] = []
        malformed: dict[str, str] = {}
        width = 1 + len(FIELDS)
        for start in range(0, len(reply), width):
            session_id, *values = reply[start : start + width]
            try:
                entries.append(decode_entry(session_id, values))
            except ValueError as e:
                malformed[_text(session_id)] = str(e)
        if malformed:
            self._log.warn(
                "{count} entries of the shared queue are not valid, left out: {why}",
                count=len(malformed),
                why="; ".join(f"{session}: {why}" for session, why in sorted(malformed.items())[:10]),
            )
        return entries

    @_deferred
    async def remove_node(self, node_id: str) -> list[str]:
        """Take every user of node `node_id` (a dead one) out of the queue, in one step; their session ids."""
        reply = await self._run(_REMOVE_NODE, check_id(node_id, "a node id"))
        return [_text(session_id) for session_id in reply]

    @_deferred
    async def oldest_compatible(
        self, seeker: QueueEntry, before: float, scan: int = DEFAULT_SCAN
    ) -> float | None:
        """When the longest-waiting user of another node that suits `seeker` by gender, want and countries
        (both ways) started waiting, if at or before `before`; None if none did. Reads at most `scan`
        entries of each partition, and errs towards an answer past that (see the module)."""
        reply = await self._run(_OLDEST, *_question(seeker, before, scan, "oldest_compatible"))
        return None if reply is None else float(_text(reply))

    @_deferred
    async def take(self, waiting: str, arriving: QueueEntry, before: float, scan: int = DEFAULT_SCAN) -> Take:
        """The claim of a local match of queued user `waiting` with `arriving`, fair to other nodes, in one
        step: GONE if `waiting` is not in the queue; else DEFERRED, `arriving` enqueued, if
        `oldest_compatible(arriving, before, scan)` finds someone; else TAKEN, `waiting` withdrawn."""
        check_id(waiting, "a session id")
        question = _question(arriving, before, scan, "take")
        if waiting == arriving.session_id:
            raise ValueError(f"a user cannot be matched with itself ({waiting!r})")
        reply = await self._run(_TAKE, waiting, arriving.session_id, *encode_entry(arriving), *question)
        return Take(_text(reply))

    @_deferred
    async def acquire_lease(self, node_id: str, ttl_s: float) -> bool:
        """Take the matcher's lease for `ttl_s` seconds if nobody holds it (or extend it if `node_id` does);
        whether `node_id` holds it now."""
        return await self._done(_ACQUIRE, check_id(node_id, "a node id"), _milliseconds(ttl_s))

    @_deferred
    async def renew_lease(self, node_id: str, ttl_s: float) -> bool:
        """Extend the lease to `ttl_s` seconds from now if `node_id` holds it; False (and nothing changed) if
        it does not, its lease having expired or been taken."""
        return await self._done(_RENEW, check_id(node_id, "a node id"), _milliseconds(ttl_s))

    @_deferred
    async def release_lease(self, node_id: str) -> bool:
        """Give the lease up if `node_id` holds it; whether it did."""
        return await self._done(_RELEASE, check_id(node_id, "a node id"))

    @_deferred
    async def lease_holder(self) -> str | None:
        """The node that holds the matcher's lease, or None."""
        reply = await self._run(_HOLDER)
        return None if reply is None else _text(reply)
