"""The store for several nodes: bans, reports, flags and accounts in Redis, changed only by Lua scripts.

Every call is one script (EVALSHA, EVAL the first time on a connection), so each runs as one atomic step
and a node never sees another's half-done change. All keys start with `vchat:{store}:`: the hash tag
`{store}` puts them in one slot, so that a script may touch several of them on a Redis Cluster too. Keys
below omit that prefix.

    ban:<id>                  hash: record (JSON: the NewBan and report_id), ended_at (when lifted)
    ban:<id>:snapshot         hash: content_type, data; expires at the ban's end (PEXPIRE)
    bans                      sorted set: every ban id, by created_at
    bans:ends                 sorted set: the ids of bans not lifted, by ends_at (inf: permanent);
                              a ban is active at `now` if its score is above `now`
    bans:user_id:<value>      set: the ids of the bans on this user id (device_id likewise)
    bans:ip                   sorted set, by name (scores 0): <low><high><id> for each IP ban, low and
                              high its network's first and last address as 32 hex digits (`address_key`)
    snapshots:bans            sorted set: the ids of bans whose snapshot falls due, by ends_at
    report:<id>               hash: record (JSON: the NewReport), status, resolved_at, ban_id
    report:<id>:snapshot      hash: content_type, data
    reports:<status>          sorted set: report ids, by created_at
    reports:reporter:<value>  sorted set: the ids of the reports this reporter_user_id made, by created_at
    snapshots:reports         sorted set: the ids of reports with a snapshot, by created_at
    flag:<id>                 hash: record (JSON: the NewFlag), status, resolved_at
    flags:<status>            sorted set: flag ids, by created_at
    account:<id>              hash: created_at, last_login_at, gender, country, settings (JSON; none:
                              the defaults), deleted_at, purge_at (absent: None)
    account:<id>:identities   set: "<provider>:<subject>" for each provider identity linked to it
    account:<id>:emails       set: the e-mail hashes that link to it
    identity:<provider>:<subject>
                              the id of the account this identity logs in to
    email:<hash>              the id of the account this e-mail hash links to (the first that had it)
    accounts:purge            sorted set: deleted accounts, by purge_at; those due are tombstones
    secret:<name>             32 random bytes, made at the first use
    schema                    the version of this layout

Times are Python's `repr` of the float (exact both ways); a record's `has_snapshot` is whether its
snapshot key exists. The IP bans on networks that hold an address are found as the SQLite store finds
them: one range read of `bans:ip` per prefix length, from `<low><address>` to the end of `<low>`, so
that the network's last address is not below the address.

Account ids are the store's own (`new_id`: no colon), so that `account:<id>` names no other key; an id
with a colon is no account's. Purging an account rewrites each of its reports' record in Lua without
decoding it (Redis's cjson would round the times): every top-level member is kept byte for byte but the
reporter's two, so the record reads as Python's JSON of the changed report. A purged account banned at
`now` stays as a tombstone in `accounts:purge` and is purged again (which changes nothing more) at every
purge until its last ban is over.

The store reads no clock, so a ban's snapshot is given a TTL of the ban's remaining time as of the
caller's `now` (the ban's start for `add_ban`, the decision for `resolve_report`): Redis deletes it at
the ban's end on its own, even with no node running, counting on its own clock without needing to agree
with the nodes'. `purge` deletes it at that time too, and a report's snapshot after the retention, which
Redis cannot know.

txredisapi runs some of its timers on the global reactor: the reactor given to `RedisStore.open` must
be that one, as under twistd.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Callable, Coroutine
from dataclasses import fields
from functools import update_wrapper
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar, cast

import txredisapi  # installs the default reactor if none is: import this module after choosing one
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from vchat.outcome import Outcome
from vchat.redis_connection import (
    DEFAULT_TIMEOUT,
    RedisAddress,
    RedisUnavailable,
    connect_redis,
    parse_redis_url,
    unavailable,
)
from vchat.store.account_records import (
    DELETED_REPORTER,
    Account,
    AccountSettings,
    Login,
    ProviderIdentity,
    StoredAccount,
)
from vchat.store.interface import AlreadyResolved, IStore, StoreError
from vchat.store.records import (
    Ban,
    BanTarget,
    Flag,
    FlagStatus,
    NewBan,
    NewFlag,
    NewReport,
    Report,
    ReportStatus,
    Snapshot,
    address_key,
    containing_lows,
    network_bounds,
    new_id,
    plain_address,
)

KEY_PREFIX = "vchat:{store}:"
"""What every key of the store starts with: vchat's, then the hash tag of the store's slot."""
LAYOUT_VERSION = 1
"""The version of the key layout, kept in `schema`: a vchat refuses data laid out by a newer one. Accounts
added keys only: the reports made before them have no `reports:reporter:` index, but they name sessions,
never an account, so an account's data export and purge miss none of its reports."""

AccountImport = Literal["copied", "skipped", "conflict"]
"""What `RedisStore.import_account` did (or, for a dry run, would do) with an account."""
SecretImport = Literal["copied", "kept", "replaced", "differs"]
"""What `RedisStore.import_secret` did (or, for a dry run, would do) with a secret."""

_P = ParamSpec("_P")
_T = TypeVar("_T")

# Helpers every script starts with. P is the key prefix, passed as KEYS[1]: the key a Cluster routes by.
_PRELUDE = """
local P = KEYS[1]
local function record(kind, id)
  local key = P .. kind .. ':' .. id
  local fields = redis.call('HGETALL', key)
  if #fields == 0 then return false end
  local out = {id, redis.call('EXISTS', key .. ':snapshot')}
  for i = 1, #fields do out[#out + 1] = fields[i] end
  return out
end
local function records(kind, ids)
  local out = {}
  for i = 1, #ids do out[i] = record(kind, ids[i]) end
  return out
end
local function active(id, now)
  local ends = redis.call('ZSCORE', P .. 'bans:ends', id)
  return ends ~= false and tonumber(ends) > now
end
local function insert_ban(id, rec, created, ends, kind, member)
  redis.call('HSET', P .. 'ban:' .. id, 'record', rec)
  redis.call('ZADD', P .. 'bans', created, id)
  redis.call('ZADD', P .. 'bans:ends', ends, id)
  if kind == 'ip' then
    redis.call('ZADD', P .. 'bans:ip', 0, member)
  else
    redis.call('SADD', P .. 'bans:' .. kind .. ':' .. member, id)
  end
end
local function expire_ban_snapshot(id, ends, ttl)
  if ttl == '' then return end
  local snapshot = P .. 'ban:' .. id .. ':snapshot'
  redis.call('PEXPIRE', snapshot, ttl)
  if redis.call('EXISTS', snapshot) == 1 then redis.call('ZADD', P .. 'snapshots:bans', ends, id) end
end
"""

# ARGV: id, record, created_at, ends score, target kind, index member, TTL in ms, content type, data
_ADD_BAN = """
insert_ban(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
if ARGV[8] ~= '' then
  redis.call('HSET', P .. 'ban:' .. ARGV[1] .. ':snapshot', 'content_type', ARGV[8], 'data', ARGV[9])
  expire_ban_snapshot(ARGV[1], ARGV[4], ARGV[7])
end
return record('ban', ARGV[1])
"""

# ARGV: kind, id
_GET = "return record(ARGV[1], ARGV[2])"

# ARGV: kind, id
_SNAPSHOT = (
    "return redis.call('HMGET', P .. ARGV[1] .. ':' .. ARGV[2] .. ':snapshot', 'content_type', 'data')"
)

# ARGV: now
_ACTIVE_BANS = "return records('ban', redis.call('ZRANGEBYSCORE', P .. 'bans:ends', '(' .. ARGV[1], '+inf'))"

# ARGV: "ended" or "all", now, limit. Gives, newest first, `limit` bans and every other as old as the last
# of them: Redis orders bans of one time by id backwards, Python then orders them as SQLite does.
_LIST_BANS = """
local now, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
local found, last, start = {}, nil, 0
if limit == 0 then return found end
while true do
  local chunk = redis.call('ZREVRANGE', P .. 'bans', start, start + 99, 'WITHSCORES')
  if #chunk == 0 then break end
  for i = 1, #chunk, 2 do
    if last ~= nil and chunk[i + 1] ~= last then return records('ban', found) end
    if ARGV[1] == 'all' or not active(chunk[i], now) then
      found[#found + 1] = chunk[i]
      if #found == limit then last = chunk[i + 1] end
    end
  end
  start = start + 100
end
return records('ban', found)
"""

# ARGV: now, user id, device id, address (32 hex digits), the lows of its networks (`containing_lows`)
_FIND_BANS = """
local now = tonumber(ARGV[1])
local seen, found = {}, {}
local function consider(id)
  if not seen[id] then
    seen[id] = true
    if active(id, now) then found[#found + 1] = id end
  end
end
for i, kind in ipairs({'user_id', 'device_id'}) do
  if ARGV[i + 1] ~= '' then
    for _, id in ipairs(redis.call('SMEMBERS', P .. 'bans:' .. kind .. ':' .. ARGV[i + 1])) do consider(id) end
  end
end
if ARGV[4] ~= '' then
  for i = 5, #ARGV do
    local low = ARGV[i]
    for _, member in ipairs(redis.call('ZRANGEBYLEX', P .. 'bans:ip', '[' .. low .. ARGV[4], '(' .. low .. 'g')) do
      consider(string.sub(member, 65))
    end
  end
end
return records('ban', found)
"""

# ARGV: id, now
_END_BAN = """
local id, key = ARGV[1], P .. 'ban:' .. ARGV[1]
if redis.call('EXISTS', key) == 0 then return false end
if active(id, tonumber(ARGV[2])) then
  redis.call('HSET', key, 'ended_at', ARGV[2])
  redis.call('ZREM', P .. 'bans:ends', id)
end
redis.call('DEL', key .. ':snapshot')
redis.call('ZREM', P .. 'snapshots:bans', id)
return record('ban', id)
"""

# ARGV: id, record, created_at, reporter_user_id, content type, data
_ADD_REPORT = """
local key = P .. 'report:' .. ARGV[1]
redis.call('HSET', key, 'record', ARGV[2], 'status', 'open')
redis.call('ZADD', P .. 'reports:open', ARGV[3], ARGV[1])
redis.call('ZADD', P .. 'reports:reporter:' .. ARGV[4], ARGV[3], ARGV[1])
if ARGV[5] ~= '' then
  redis.call('HSET', key .. ':snapshot', 'content_type', ARGV[5], 'data', ARGV[6])
  redis.call('ZADD', P .. 'snapshots:reports', ARGV[3], ARGV[1])
end
return record('report', ARGV[1])
"""

# ARGV: kind, status, limit
_LIST = """
local limit = tonumber(ARGV[3])
if limit == 0 then return {} end
return records(ARGV[1], redis.call('ZRANGE', P .. ARGV[1] .. 's:' .. ARGV[2], 0, limit - 1))
"""

# ARGV: id, now, then for a ban: its id, record, created_at, ends score, target kind, index member, TTL
_RESOLVE_REPORT = """
local id, now = ARGV[1], ARGV[2]
local key = P .. 'report:' .. id
local status = redis.call('HGET', key, 'status')
if not status then return false end
if status ~= 'open' then return {'already', status} end
local created = redis.call('ZSCORE', P .. 'reports:open', id)
redis.call('ZREM', P .. 'reports:open', id)
redis.call('ZREM', P .. 'snapshots:reports', id)
local snapshot = key .. ':snapshot'
if ARGV[3] == '' then
  redis.call('DEL', snapshot)
  redis.call('HSET', key, 'status', 'dismissed', 'resolved_at', now)
  redis.call('ZADD', P .. 'reports:dismissed', created, id)
else
  local ban = ARGV[3]
  insert_ban(ban, ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
  if redis.call('EXISTS', snapshot) == 1 then
    redis.call('RENAME', snapshot, P .. 'ban:' .. ban .. ':snapshot')
    expire_ban_snapshot(ban, ARGV[6], ARGV[9])
  end
  redis.call('HSET', key, 'status', 'banned', 'resolved_at', now, 'ban_id', ban)
  redis.call('ZADD', P .. 'reports:banned', created, id)
end
return {'resolved', record('report', id)}
"""

# ARGV: id, record, created_at
_ADD_FLAG = """
redis.call('HSET', P .. 'flag:' .. ARGV[1], 'record', ARGV[2], 'status', 'open')
redis.call('ZADD', P .. 'flags:open', ARGV[3], ARGV[1])
return record('flag', ARGV[1])
"""

# ARGV: id, now
_RESOLVE_FLAG = """
local id, key = ARGV[1], P .. 'flag:' .. ARGV[1]
local status = redis.call('HGET', key, 'status')
if not status then return false end
if status ~= 'open' then return {'already', status} end
local created = redis.call('ZSCORE', P .. 'flags:open', id)
redis.call('ZREM', P .. 'flags:open', id)
redis.call('HSET', key, 'status', 'resolved', 'resolved_at', ARGV[2])
redis.call('ZADD', P .. 'flags:resolved', created, id)
return {'resolved', record('flag', id)}
"""

# Helpers of the account scripts (after the prelude).
_ACCOUNTS = """
local function account(id)
  local key = P .. 'account:' .. id
  local fields = redis.call('HGETALL', key)
  if #fields == 0 then return false end
  return {id, fields, redis.call('SMEMBERS', key .. ':identities'), redis.call('SCARD', key .. ':emails')}
end
local function deleted(id)
  return redis.call('HEXISTS', P .. 'account:' .. id, 'deleted_at') == 1
end
"""

# ARGV: a new account id, identity ("<provider>:<subject>"), e-mail hash, gender, country, at ('': none)
_LOG_IN = """
local identity, email, at = ARGV[2], ARGV[3], ARGV[6]
local id = redis.call('GET', P .. 'identity:' .. identity)
if id and redis.call('EXISTS', P .. 'account:' .. id) == 0 then id = false end
if id and deleted(id) then return account(id) end
if not id and email ~= '' then
  id = redis.call('GET', P .. 'email:' .. email)
  if id and deleted(id) then id = false end
end
if not id then
  id = ARGV[1]
  redis.call('HSET', P .. 'account:' .. id, 'created_at', at)
end
local key = P .. 'account:' .. id
redis.call('SET', P .. 'identity:' .. identity, id)
redis.call('SADD', key .. ':identities', identity)
if email ~= '' then
  redis.call('SET', P .. 'email:' .. email, id, 'NX')
  if redis.call('GET', P .. 'email:' .. email) == id then redis.call('SADD', key .. ':emails', email) end
end
redis.call('HSET', key, 'last_login_at', at)
if ARGV[4] ~= '' then redis.call('HSET', key, 'gender', ARGV[4]) end
if ARGV[5] ~= '' then redis.call('HSET', key, 'country', ARGV[5]) end
return account(id)
"""

# ARGV: id
_GET_ACCOUNT = "return account(ARGV[1])"

# ARGV: id, settings (JSON)
_UPDATE_SETTINGS = """
if redis.call('EXISTS', P .. 'account:' .. ARGV[1]) == 0 or deleted(ARGV[1]) then return false end
redis.call('HSET', P .. 'account:' .. ARGV[1], 'settings', ARGV[2])
return account(ARGV[1])
"""

# ARGV: id, now, purge_at
_DELETE_ACCOUNT = """
local id = ARGV[1]
if redis.call('EXISTS', P .. 'account:' .. id) == 0 then return false end
if not deleted(id) then
  redis.call('HSET', P .. 'account:' .. id, 'deleted_at', ARGV[2], 'purge_at', ARGV[3])
  redis.call('ZADD', P .. 'accounts:purge', ARGV[3], id)
end
return account(id)
"""

# ARGV: user id, limit
_REPORTS_BY = """
local limit = tonumber(ARGV[2])
if limit == 0 then return {} end
return records('report', redis.call('ZRANGE', P .. 'reports:reporter:' .. ARGV[1], 0, limit - 1))
"""

# ARGV: user id
_BANS_ON_USER = "return records('ban', redis.call('SMEMBERS', P .. 'bans:user_id:' .. ARGV[1]))"

# ARGV: name, 32 random bytes (the secret, if it is the first use)
_SECRET = """
redis.call('SET', P .. 'secret:' .. ARGV[1], ARGV[2], 'NX')
return redis.call('GET', P .. 'secret:' .. ARGV[1])
"""

# ARGV: now, report retention, DELETED_REPORTER, its JSON. Purges the accounts due, then the snapshots
# due. Gives the next ban due, the oldest kept report's created_at (scores as Redis writes them: exact),
# for Python to add the retention as SQLite would, and when the next account falls due.
_PURGE = r"""
local now, retention, nobody, nobody_json = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4]
-- A report's record (JSON as Python writes it) naming nobody as its reporter, without a device: every other
-- top-level member is kept as it is, byte for byte.
local function unnamed(json)
  local members, i = {}, 2
  while i < #json do
    local colon = string.find(json, '":', i, true)
    local name = string.sub(json, i + 1, colon - 1)
    local j, depth, quoted = colon + 2, 0, false
    while true do
      j = string.find(json, '[\\"{}%[%],]', j)
      local c = string.sub(json, j, j)
      if quoted then
        if c == '\\' then j = j + 1 elseif c == '"' then quoted = false end
      elseif c == '"' then quoted = true
      elseif c == '{' or c == '[' then depth = depth + 1
      elseif depth > 0 then
        if c == '}' or c == ']' then depth = depth - 1 end
      elseif c == ',' or c == '}' then break
      end
      j = j + 1
    end
    local value = string.sub(json, colon + 2, j - 1)
    if name == 'reporter_user_id' then
      value = nobody_json
    elseif name == 'reporter_device_id' then
      value = 'null'
    end
    members[#members + 1] = '"' .. name .. '":' .. value
    i = j + 1
  end
  return '{' .. table.concat(members, ',') .. '}'
end
-- Purge account `id`, which is due. Gives, if a ban keeps it as a tombstone, when its last active ban ends
-- ('inf': never).
local function purge_account(id)
  local key = P .. 'account:' .. id
  for _, hash in ipairs(redis.call('SMEMBERS', key .. ':emails')) do
    if redis.call('GET', P .. 'email:' .. hash) == id then redis.call('DEL', P .. 'email:' .. hash) end
  end
  redis.call('DEL', key .. ':emails')
  redis.call('HDEL', key, 'gender', 'country', 'settings')
  local made = P .. 'reports:reporter:' .. id
  local reports = redis.call('ZRANGE', made, 0, -1, 'WITHSCORES')
  for i = 1, #reports, 2 do
    local report = P .. 'report:' .. reports[i]
    local rec = redis.call('HGET', report, 'record')
    if rec then redis.call('HSET', report, 'record', unnamed(rec)) end
    redis.call('ZADD', P .. 'reports:reporter:' .. nobody, reports[i + 1], reports[i])
  end
  redis.call('DEL', made)
  local last = false
  for _, ban in ipairs(redis.call('SMEMBERS', P .. 'bans:user_id:' .. id)) do
    local ends = redis.call('ZSCORE', P .. 'bans:ends', ban)
    if ends and tonumber(ends) > now and (not last or tonumber(ends) > tonumber(last)) then last = ends end
  end
  if last then return last end
  for _, identity in ipairs(redis.call('SMEMBERS', key .. ':identities')) do
    local owner = P .. 'identity:' .. identity
    if redis.call('GET', owner) == id then redis.call('DEL', owner) end
  end
  redis.call('DEL', key .. ':identities', key)
  redis.call('ZREM', P .. 'accounts:purge', id)
  return false
end
local due = P .. 'accounts:purge'
local later = redis.call('ZRANGEBYSCORE', due, '(' .. ARGV[1], '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
local account_due = later[2] or false
for _, id in ipairs(redis.call('ZRANGEBYSCORE', due, '-inf', ARGV[1])) do
  local last = purge_account(id)
  if last and tonumber(last) < math.huge and (not account_due or tonumber(last) < tonumber(account_due)) then
    account_due = last
  end
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. 'snapshots:bans', '-inf', ARGV[1])) do
  redis.call('DEL', P .. 'ban:' .. id .. ':snapshot')
end
redis.call('ZREMRANGEBYSCORE', P .. 'snapshots:bans', '-inf', ARGV[1])
local kept = false
while not kept do
  local oldest = redis.call('ZRANGE', P .. 'snapshots:reports', 0, 0, 'WITHSCORES')
  if #oldest == 0 then break end
  if tonumber(oldest[2]) + retention <= now then
    redis.call('DEL', P .. 'report:' .. oldest[1] .. ':snapshot')
    redis.call('ZREM', P .. 'snapshots:reports', oldest[1])
  else
    kept = oldest[2]
  end
end
return {redis.call('ZRANGE', P .. 'snapshots:bans', 0, 0, 'WITHSCORES')[2] or false, kept, account_due}
"""

# ARGV: this vchat's layout version. Gives the stored one; the first write proves Redis takes writes.
_LAYOUT = "redis.call('SET', P .. 'schema', ARGV[1], 'NX') return redis.call('GET', P .. 'schema')"

# The imports of a migration: each writes a record as it is, with its id, and the indexes exactly as the
# calls that made it would have left them; an id already there is left as it is (0).

# ARGV: id, record, created_at, ends score, target kind, index member, TTL in ms, ended_at, content
# type, data. A lifted ban leaves `bans:ends`, as `_END_BAN` does.
_IMPORT_BAN = """
local id = ARGV[1]
local key = P .. 'ban:' .. id
if redis.call('EXISTS', key) == 1 then return 0 end
insert_ban(id, ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6])
if ARGV[8] ~= '' then
  redis.call('HSET', key, 'ended_at', ARGV[8])
  redis.call('ZREM', P .. 'bans:ends', id)
end
if ARGV[9] ~= '' then
  redis.call('HSET', key .. ':snapshot', 'content_type', ARGV[9], 'data', ARGV[10])
  expire_ban_snapshot(id, ARGV[4], ARGV[7])
end
return 1
"""

# ARGV: id, record, created_at, status, resolved_at, ban_id, reporter_user_id, content type, data
_IMPORT_REPORT = """
local id = ARGV[1]
local key = P .. 'report:' .. id
if redis.call('EXISTS', key) == 1 then return 0 end
redis.call('HSET', key, 'record', ARGV[2], 'status', ARGV[4])
if ARGV[5] ~= '' then redis.call('HSET', key, 'resolved_at', ARGV[5]) end
if ARGV[6] ~= '' then redis.call('HSET', key, 'ban_id', ARGV[6]) end
redis.call('ZADD', P .. 'reports:' .. ARGV[4], ARGV[3], id)
redis.call('ZADD', P .. 'reports:reporter:' .. ARGV[7], ARGV[3], id)
if ARGV[8] ~= '' then
  redis.call('HSET', key .. ':snapshot', 'content_type', ARGV[8], 'data', ARGV[9])
  redis.call('ZADD', P .. 'snapshots:reports', ARGV[3], id)
end
return 1
"""

# ARGV: id, record, created_at, status, resolved_at
_IMPORT_FLAG = """
local key = P .. 'flag:' .. ARGV[1]
if redis.call('EXISTS', key) == 1 then return 0 end
redis.call('HSET', key, 'record', ARGV[2], 'status', ARGV[4])
if ARGV[5] ~= '' then redis.call('HSET', key, 'resolved_at', ARGV[5]) end
redis.call('ZADD', P .. 'flags:' .. ARGV[4], ARGV[3], ARGV[1])
return 1
"""

# ARGV: '1' to write ('' for a dry run), id, created_at, last_login_at, gender, country, settings,
# deleted_at, purge_at ('': none), the number of identities, the identities ("<provider>:<subject>"), the
# e-mail hashes. Lays the account out as `_LOG_IN`, `_UPDATE_SETTINGS` and `_DELETE_ACCOUNT` do. Gives
# 'skipped' if the id is stored already, 'conflict' if Redis links one of its identities or e-mail hashes
# to another account (which is not overwritten), else 'copied'; nothing is written unless 'copied'.
_IMPORT_ACCOUNT = """
local id = ARGV[2]
local key = P .. 'account:' .. id
if redis.call('EXISTS', key) == 1 then return 'skipped' end
local count = tonumber(ARGV[10])
local links = {}
for i = 11, #ARGV do
  links[#links + 1] = {i <= 10 + count and 'identity:' or 'email:', ARGV[i]}
end
for _, link in ipairs(links) do
  local owner = redis.call('GET', P .. link[1] .. link[2])
  if owner and owner ~= id then return 'conflict' end
end
if ARGV[1] ~= '1' then return 'copied' end
redis.call('HSET', key, 'created_at', ARGV[3], 'last_login_at', ARGV[4])
for i, name in ipairs({'gender', 'country', 'settings', 'deleted_at', 'purge_at'}) do
  if ARGV[4 + i] ~= '' then redis.call('HSET', key, name, ARGV[4 + i]) end
end
for _, link in ipairs(links) do
  redis.call('SET', P .. link[1] .. link[2], id)
  redis.call('SADD', key .. (link[1] == 'identity:' and ':identities' or ':emails'), link[2])
end
if ARGV[9] ~= '' then redis.call('ZADD', P .. 'accounts:purge', ARGV[9], id) end
return 'copied'
"""

# ARGV: '1' to write ('' for a dry run), name, value. Gives 'kept' if Redis holds this value already,
# 'copied' if it holds none, 'replaced' if it held another but no account, 'differs' (leaving it) if it holds
# another and accounts. Replacing is safe only without accounts: what is made with a secret and outlives a
# login is an account's (its e-mail hashes, which link the next logins; the login cookies, which name it),
# so with no account nothing depends on Redis's secret but the logins under way, which start again.
_IMPORT_SECRET = """
local key, value = P .. 'secret:' .. ARGV[2], ARGV[3]
local held = redis.call('GET', key)
if held == value then return 'kept' end
if held then
  local cursor = '0'
  repeat
    local page = redis.call('SCAN', cursor, 'MATCH', P .. 'account:*', 'COUNT', 1000)
    if #page[2] > 0 then return 'differs' end
    cursor = page[1]
  until cursor == '0'
end
if ARGV[1] == '1' then redis.call('SET', key, value) end
return held and 'replaced' or 'copied'
"""


def _number(value: float) -> str:
    return repr(float(value))


def _optional_number(value: float | None) -> str:
    return "" if value is None else _number(value)


def _identity(identity: ProviderIdentity) -> str:
    """How the scripts name a provider identity: `<provider>:<subject>`."""
    return f"{identity.provider}:{identity.subject}"


def _json(value: object) -> str:
    return json.dumps(value, allow_nan=False, separators=(",", ":"), sort_keys=True)


def _limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError("a limit must be a whole number, 0 or more")
    return limit


def _ban_arguments(ban_id: str, ban: NewBan, report_id: str | None, now: float | None) -> list[str]:
    """What a script needs to store `ban`, its snapshot expiring when the ban ends, reckoned from `now`
    (from the ban's start if None)."""
    if not isinstance(ban, NewBan) or isinstance(ban, Ban):
        raise TypeError("expected a NewBan")
    if now is None:
        now = ban.created_at
    record = {f.name: getattr(ban, f.name) for f in fields(NewBan)}
    record.update(target=[ban.target.kind, ban.target.value], report_id=report_id)
    if ban.target.kind == "ip":
        low, high = network_bounds(ban.target.network)
        member = low.hex() + high.hex() + ban_id
    else:
        member = ban.target.value
    ends = "+inf" if ban.ends_at is None else _number(ban.ends_at)
    ttl = "" if ban.ends_at is None else str(math.ceil((ban.ends_at - now) * 1000))
    return [ban_id, _json(record), _number(ban.created_at), ends, ban.target.kind, member, ttl]


def _fields(reply: list[Any]) -> tuple[str, bool, dict[str, bytes]]:
    """A record as the scripts give it: id, whether its snapshot exists, then its hash's fields."""
    names = (name.decode() for name in reply[2::2])
    return reply[0].decode(), reply[1] == 1, dict(zip(names, reply[3::2], strict=True))


def _time(value: bytes | None) -> float | None:
    return None if value is None else float(value)


def _ban_of(reply: list[Any]) -> Ban:
    ban_id, has_snapshot, stored = _fields(reply)
    record = json.loads(stored["record"])
    target, messages = record.pop("target"), record.pop("messages")
    return Ban(
        **record,
        target=BanTarget(*target),
        messages=tuple(messages),
        id=ban_id,
        ended_at=_time(stored.get("ended_at")),
        has_snapshot=has_snapshot,
    )


def _report_of(reply: list[Any]) -> Report:
    report_id, has_snapshot, stored = _fields(reply)
    ban_id = stored.get("ban_id")
    return Report(
        **json.loads(stored["record"]),
        id=report_id,
        status=cast(ReportStatus, stored["status"].decode()),
        resolved_at=_time(stored.get("resolved_at")),
        ban_id=None if ban_id is None else ban_id.decode(),
        has_snapshot=has_snapshot,
    )


def _flag_of(reply: list[Any]) -> Flag:
    flag_id, _, stored = _fields(reply)
    return Flag(
        **json.loads(stored["record"]),
        id=flag_id,
        status=cast(FlagStatus, stored["status"].decode()),
        resolved_at=_time(stored.get("resolved_at")),
    )


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode()


def _settings_json(settings: AccountSettings) -> str:
    return _json({f.name: getattr(settings, f.name) for f in fields(AccountSettings)})


def _account_of(reply: list[Any]) -> Account:
    """An account as the scripts give it: id, its hash's fields, its identities, its number of e-mails."""
    account_id, pairs, identities, emails = reply
    stored: dict[str, bytes] = dict(zip((name.decode() for name in pairs[::2]), pairs[1::2], strict=True))
    settings = json.loads(stored["settings"]) if "settings" in stored else {}
    if "countries" in settings:
        settings["countries"] = tuple(settings["countries"])
    created_at, last_login_at = _time(stored.get("created_at")), _time(stored.get("last_login_at"))
    return Account(
        account_id=account_id.decode(),
        identities=tuple(sorted(ProviderIdentity(*member.decode().split(":", 1)) for member in identities)),
        gender=_text(stored.get("gender")),
        country=_text(stored.get("country")),
        settings=AccountSettings(**settings),
        has_email=emails > 0,
        created_at=created_at or 0.0,
        last_login_at=last_login_at or 0.0,
        deleted_at=_time(stored.get("deleted_at")),
        purge_at=_time(stored.get("purge_at")),
    )


def _account_or_none(reply: list[Any] | None) -> Account | None:
    return None if reply is None else _account_of(reply)


def _account_key(account_id: str) -> bool:
    """Whether `account_id` can be an account's: the store's ids have no colon, so `account:<id>` is no
    other account's key (`account:<id>:identities`)."""
    if not isinstance(account_id, str):
        raise TypeError("an account id is a string")
    return bool(account_id) and ":" not in account_id


def _check_times(*values: float) -> None:
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError("a time is a finite number of seconds")


def _newest_first(ban: Ban) -> tuple[float, str]:
    return -ban.created_at, ban.id


def _resolved(reply: Any, what: str) -> list[Any] | None:
    """The record a resolving script gives, None for an unknown id; AlreadyResolved if it was not open."""
    if reply is None:
        return None
    tag, value = reply
    if tag == b"already":
        raise AlreadyResolved(f"{what} is already {value.decode()}")
    record: list[Any] = value
    return record


def _deferred(
    method: Callable[Concatenate[RedisStore, _P], Coroutine[Any, Any, _T]],
) -> Callable[Concatenate[RedisStore, _P], Deferred[_T]]:
    """Run the coroutine `method` as a Deferred, its exceptions (bad arguments too) as its failure."""

    def call(self: RedisStore, /, *args: _P.args, **kwargs: _P.kwargs) -> Deferred[_T]:
        return Deferred.fromCoroutine(method(self, *args, **kwargs))

    update_wrapper(call, method)
    return call


def open_redis_store(reactor: IReactorTime, url: str) -> Deferred[IStore]:
    """`RedisStore.open`, typed as any store: what `StoreService` takes, e.g. through `functools.partial`."""
    return RedisStore.open(reactor, url).addCallback(_as_store)


def _as_store(store: RedisStore) -> IStore:
    return store


@implementer(IStore)
class RedisStore:
    """The store shared by the nodes of a cluster, in Redis, over one reconnecting connection."""

    def __init__(self, address: RedisAddress, factory: Any, timeout: float) -> None:
        self.address = address
        self._factory = factory  # txredisapi's RedisFactory: its `handler` runs commands
        self._timeout = timeout
        self._closed: Outcome[None] | None = None

    def __repr__(self) -> str:
        return f"<RedisStore {self.address}>"

    @classmethod
    def open(cls, reactor: IReactorTime, url: str, timeout: float = DEFAULT_TIMEOUT) -> Deferred[RedisStore]:
        """Connect to Redis at `url` (`reactor` must also do TCP) and check the key layout; fails with
        StoreError, whose message says what to do, if Redis cannot be reached or used."""
        try:
            address = parse_redis_url(url)
        except ValueError as e:
            return fail(StoreError(str(e)))
        return Deferred.fromCoroutine(cls._connect(reactor, address, timeout))

    @classmethod
    async def _connect(cls, reactor: IReactorTime, address: RedisAddress, timeout: float) -> RedisStore:
        # One connection (each call is one script, and replies come in order), replies as bytes (snapshots
        # are binary): connect_redis's defaults.
        try:
            factory = await connect_redis(reactor, address, timeout)
        except RedisUnavailable as e:
            raise StoreError(str(e)) from None
        store = cls(address, factory, timeout)
        try:
            await store._check_layout()
        except Exception as e:
            await factory.disconnect()
            raise _open_error(address, e, timeout) from None
        return store

    async def _check_layout(self) -> None:
        stored = int(await self._run(_LAYOUT, LAYOUT_VERSION))
        if stored > LAYOUT_VERSION:
            raise StoreError(
                f"the vchat data in Redis at {self.address} has layout version {stored}, newer than this "
                f"vchat knows ({LAYOUT_VERSION}): run the newer vchat."
            )

    def _run(self, script: str, *args: str | bytes | int) -> Deferred[Any]:
        """Run `script` (after the prelude) on `args`; StoreError if Redis cannot."""
        if self._closed is not None:
            return fail(StoreError(f"the store in Redis at {self.address} is closed"))
        if not self._factory.size:  # calls would wait for the reconnection: tell the caller now
            return fail(StoreError(f"the connection to Redis at {self.address} is lost; reconnecting"))
        running: Deferred[Any] = self._factory.handler.eval(_PRELUDE + script, [KEY_PREFIX], list(args))
        return running.addErrback(self._failed)

    def _failed(self, failure: Failure) -> None:
        if failure.check(txredisapi.TimeoutError):
            raise StoreError(f"Redis at {self.address} did not answer within {self._timeout:g} s")
        failure.trap(txredisapi.RedisError)
        raise StoreError(f"Redis at {self.address}: {failure.getErrorMessage()}") from failure.value

    async def _snapshot(self, kind: str, owner_id: str) -> Snapshot | None:
        content_type, data = await self._run(_SNAPSHOT, kind, owner_id)
        return None if content_type is None else Snapshot(content_type.decode(), data)

    @_deferred
    async def add_ban(self, ban: NewBan, snapshot: Snapshot | None) -> Ban:
        arguments: list[str | bytes] = [*_ban_arguments(new_id(), ban, None, None)]
        arguments += ["", b""] if snapshot is None else [snapshot.content_type, snapshot.data]
        return _ban_of(await self._run(_ADD_BAN, *arguments))

    @_deferred
    async def get_ban(self, ban_id: str) -> Ban | None:
        reply = await self._run(_GET, "ban", ban_id)
        return None if reply is None else _ban_of(reply)

    @_deferred
    async def list_bans(self, active: bool | None, now: float, limit: int) -> list[Ban]:
        _limit(limit)
        if active:
            replies = await self._run(_ACTIVE_BANS, _number(now))
        else:
            replies = await self._run(_LIST_BANS, "all" if active is None else "ended", _number(now), limit)
        return sorted(map(_ban_of, replies), key=_newest_first)[:limit]

    @_deferred
    async def active_bans(self, now: float) -> list[Ban]:
        replies = await self._run(_ACTIVE_BANS, _number(now))
        return sorted(map(_ban_of, replies), key=lambda ban: (ban.created_at, ban.id))

    @_deferred
    async def find_active_bans(
        self, now: float, user_id: str | None, ip: str | None, device_id: str | None
    ) -> list[Ban]:
        address = None if ip is None else plain_address(ip)
        lows = [] if address is None else [low.hex() for low in containing_lows(address)]
        replies = await self._run(
            _FIND_BANS,
            _number(now),
            user_id or "",
            device_id or "",
            "" if address is None else address_key(address).hex(),
            *lows,
        )
        return sorted(map(_ban_of, replies), key=_newest_first)

    @_deferred
    async def end_ban(self, ban_id: str, now: float) -> Ban | None:
        reply = await self._run(_END_BAN, ban_id, _number(now))
        return None if reply is None else _ban_of(reply)

    @_deferred
    async def ban_snapshot(self, ban_id: str) -> Snapshot | None:
        return await self._snapshot("ban", ban_id)

    @_deferred
    async def add_report(self, report: NewReport, snapshot: Snapshot | None) -> Report:
        if not isinstance(report, NewReport) or isinstance(report, Report):
            raise TypeError("expected a NewReport")
        record = _json({f.name: getattr(report, f.name) for f in fields(NewReport)})
        arguments: list[str | bytes] = [new_id(), record, _number(report.created_at), report.reporter_user_id]
        arguments += ["", b""] if snapshot is None else [snapshot.content_type, snapshot.data]
        return _report_of(await self._run(_ADD_REPORT, *arguments))

    @_deferred
    async def get_report(self, report_id: str) -> Report | None:
        reply = await self._run(_GET, "report", report_id)
        return None if reply is None else _report_of(reply)

    @_deferred
    async def list_reports(self, status: ReportStatus, limit: int) -> list[Report]:
        return list(map(_report_of, await self._run(_LIST, "report", status, _limit(limit))))

    @_deferred
    async def report_snapshot(self, report_id: str) -> Snapshot | None:
        return await self._snapshot("report", report_id)

    @_deferred
    async def resolve_report(self, report_id: str, now: float, ban: NewBan | None) -> Report | None:
        arguments = [""] if ban is None else _ban_arguments(new_id(), ban, report_id, now)
        reply = await self._run(_RESOLVE_REPORT, report_id, _number(now), *arguments)
        resolved = _resolved(reply, f"report {report_id}")
        return None if resolved is None else _report_of(resolved)

    @_deferred
    async def add_flag(self, flag: NewFlag) -> Flag:
        if not isinstance(flag, NewFlag) or isinstance(flag, Flag):
            raise TypeError("expected a NewFlag")
        record = _json({f.name: getattr(flag, f.name) for f in fields(NewFlag)})
        return _flag_of(await self._run(_ADD_FLAG, new_id(), record, _number(flag.created_at)))

    @_deferred
    async def get_flag(self, flag_id: str) -> Flag | None:
        reply = await self._run(_GET, "flag", flag_id)
        return None if reply is None else _flag_of(reply)

    @_deferred
    async def list_flags(self, status: FlagStatus, limit: int) -> list[Flag]:
        return list(map(_flag_of, await self._run(_LIST, "flag", status, _limit(limit))))

    @_deferred
    async def resolve_flag(self, flag_id: str, now: float) -> Flag | None:
        resolved = _resolved(await self._run(_RESOLVE_FLAG, flag_id, _number(now)), f"flag {flag_id}")
        return None if resolved is None else _flag_of(resolved)

    @_deferred
    async def log_in(self, login: Login) -> Account:
        if not isinstance(login, Login):
            raise TypeError("expected a Login")
        reply = await self._run(
            _ACCOUNTS + _LOG_IN,
            new_id(),
            _identity(login.identity),
            login.email_hash or "",
            login.gender or "",
            login.country or "",
            _number(login.at),
        )
        return _account_of(reply)

    @_deferred
    async def get_account(self, account_id: str) -> Account | None:
        if not _account_key(account_id):
            return None
        return _account_or_none(await self._run(_ACCOUNTS + _GET_ACCOUNT, account_id))

    @_deferred
    async def update_settings(self, account_id: str, settings: AccountSettings) -> Account | None:
        if not isinstance(settings, AccountSettings):
            raise TypeError("expected AccountSettings")
        if not _account_key(account_id):
            return None
        reply = await self._run(_ACCOUNTS + _UPDATE_SETTINGS, account_id, _settings_json(settings))
        return _account_or_none(reply)

    @_deferred
    async def delete_account(self, account_id: str, now: float, purge_at: float) -> Account | None:
        _check_times(now, purge_at)
        if not _account_key(account_id):
            return None
        reply = await self._run(_ACCOUNTS + _DELETE_ACCOUNT, account_id, _number(now), _number(purge_at))
        return _account_or_none(reply)

    @_deferred
    async def reports_by(self, user_id: str, limit: int) -> list[Report]:
        return list(map(_report_of, await self._run(_REPORTS_BY, user_id, _limit(limit))))

    @_deferred
    async def bans_on_user(self, user_id: str) -> list[Ban]:
        replies = await self._run(_BANS_ON_USER, user_id)
        return sorted(map(_ban_of, replies), key=lambda ban: (ban.created_at, ban.id))

    @_deferred
    async def secret(self, name: str) -> bytes:
        if not isinstance(name, str) or not name:
            raise ValueError("a secret's name is a string, not empty")
        value: bytes = await self._run(_SECRET, name, secrets.token_bytes(32))
        return value

    @_deferred
    async def purge(self, now: float, report_retention: float) -> float | None:
        ban_due, report_created, account_due = await self._run(
            _PURGE, _number(now), _number(report_retention), DELETED_REPORTER, _json(DELETED_REPORTER)
        )
        due = [float(found) for found in (ban_due, account_due) if found is not None]
        if report_created is not None:
            due.append(float(report_created) + report_retention)
        return min(due, default=None)

    def close(self) -> Deferred[None]:
        if self._closed is None:
            self._closed = Outcome()
            self._factory.disconnect().addBoth(lambda _: None).addBoth(self._closed.fire)
        return self._closed.observe()

    # Not part of IStore: what a migration (`vchat.store.migrate`) writes, never the server. Each takes a
    # stored record as it is (id, times, status) and lays it out as the calls that made it would have.

    @_deferred
    async def import_ban(self, ban: Ban, snapshot: Snapshot | None, now: float) -> bool:
        """Store `ban` as it is, with `snapshot` expiring at the ban's end as reckoned from `now`; False,
        changing nothing, if a ban with its id is stored already. A ban over at `now` takes no snapshot."""
        if not isinstance(ban, Ban):
            raise TypeError("expected a Ban")
        if not ban.id:
            raise ValueError("a ban to import needs its id")
        if snapshot is not None and not ban.active_at(now):
            raise ValueError(f"ban {ban.id} is over at {now!r}, so it keeps no snapshot")
        new = NewBan(**{f.name: getattr(ban, f.name) for f in fields(NewBan)})
        arguments: list[str | bytes] = [*_ban_arguments(ban.id, new, ban.report_id, now)]
        arguments.append(_optional_number(ban.ended_at))
        arguments += ["", b""] if snapshot is None else [snapshot.content_type, snapshot.data]
        return bool(await self._run(_IMPORT_BAN, *arguments))

    @_deferred
    async def import_report(self, report: Report, snapshot: Snapshot | None) -> bool:
        """Store `report` as it is, with `snapshot` if it is open; False, changing nothing, if a report
        with its id is stored already."""
        if not isinstance(report, Report):
            raise TypeError("expected a Report")
        if not report.id:
            raise ValueError("a report to import needs its id")
        if snapshot is not None and report.status != "open":
            raise ValueError(f"report {report.id} is {report.status}: only an open report keeps a snapshot")
        record = _json({f.name: getattr(report, f.name) for f in fields(NewReport)})
        arguments: list[str | bytes] = [
            report.id,
            record,
            _number(report.created_at),
            report.status,
            _optional_number(report.resolved_at),
            report.ban_id or "",
            report.reporter_user_id,
        ]
        arguments += ["", b""] if snapshot is None else [snapshot.content_type, snapshot.data]
        return bool(await self._run(_IMPORT_REPORT, *arguments))

    @_deferred
    async def import_flag(self, flag: Flag) -> bool:
        """Store `flag` as it is; False, changing nothing, if a flag with its id is stored already."""
        if not isinstance(flag, Flag):
            raise TypeError("expected a Flag")
        if not flag.id:
            raise ValueError("a flag to import needs its id")
        record = _json({f.name: getattr(flag, f.name) for f in fields(NewFlag)})
        reply = await self._run(
            _IMPORT_FLAG,
            flag.id,
            record,
            _number(flag.created_at),
            flag.status,
            _optional_number(flag.resolved_at),
        )
        return bool(reply)

    @_deferred
    async def import_account(self, stored: StoredAccount, dry_run: bool = False) -> AccountImport:
        """Store an account as it is (id, times, deletion), its identities and e-mail hashes linking to it
        as logins would have linked them: "copied"; "skipped" if an account with its id is stored already,
        "conflict" if Redis links one of its identities or e-mail hashes to another account, both changing
        nothing. With `dry_run`, say which, and write nothing."""
        if not isinstance(stored, StoredAccount):
            raise TypeError("expected a StoredAccount")
        account = stored.account
        if not _account_key(account.account_id):
            raise ValueError(f"{account.account_id!r} cannot be an account id of this store: it has a colon")
        # The default settings are no field, as before any `update_settings`: they read back the same.
        settings = "" if account.settings == AccountSettings() else _settings_json(account.settings)
        identities = [_identity(identity) for identity in account.identities]
        reply = await self._run(
            _IMPORT_ACCOUNT,
            "" if dry_run else "1",
            account.account_id,
            _number(account.created_at),
            _number(account.last_login_at),
            account.gender or "",
            account.country or "",
            settings,
            _optional_number(account.deleted_at),
            _optional_number(account.purge_at),
            len(identities),
            *identities,
            *stored.email_hashes,
        )
        return cast(AccountImport, reply.decode())

    @_deferred
    async def import_secret(self, name: str, value: bytes, dry_run: bool = False) -> SecretImport:
        """Store secret `name` with `value` if Redis holds none ("copied") or holds another but no account
        ("replaced"); "kept" if it holds this one, "differs", changing nothing, if another and accounts.
        With `dry_run`, say which, and write nothing."""
        if not isinstance(name, str) or not name:
            raise ValueError("a secret's name is a string, not empty")
        if not isinstance(value, bytes) or len(value) != 32:
            raise ValueError(f"secret {name!r} is not 32 bytes")
        reply = await self._run(_IMPORT_SECRET, "" if dry_run else "1", name, value)
        return cast(SecretImport, reply.decode())


def _open_error(address: RedisAddress, error: Exception, timeout: float) -> StoreError:
    """What a person should know and do when Redis cannot be used by the store's first call."""
    cause = error.__cause__ if isinstance(error, StoreError) else error
    if isinstance(error, StoreError) and not isinstance(cause, txredisapi.ConnectionError):
        return error  # Redis answered, and refused (or did not answer in time)
    return StoreError(str(unavailable(address, cause if cause is not None else error, timeout)))
