"""The Redis store: the store contract against a real redis-server, and what is Redis's own: snapshots
that expire by themselves, the key layout, atomic decisions and logins between nodes, purged reports
rewritten in Lua, the URL, a Redis restart, TLS, and what opening says when Redis cannot be used."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import txredisapi
from twisted.internet import reactor
from twisted.internet.defer import DeferredList, gatherResults
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread

from vchat.store import redis_testing
from vchat.store.account_records import DELETED_REPORTER, AccountSettings
from vchat.store.account_testing import a_ban_on, a_login, a_report_by, email_hash
from vchat.store.interface import AlreadyResolved, IStore, StoreError
from vchat.store.records import BanTarget, NewReport, Report
from vchat.store.redis import KEY_PREFIX, RedisAddress, RedisStore, parse_redis_url
from vchat.store.redis_testing import RedisServer, free_port, running_redis
from vchat.store.testing import DurableStoreContract, a_ban, a_flag, a_report, ip_ban, jpeg, png
from vchat.testing import self_signed

redis_server = redis_testing.redis_server  # the fixtures, by their names
redis_url = redis_testing.redis_url


@pytest.fixture
def persistent_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own that keeps everything in its append-only file."""
    with running_redis(tmp_path / "redis", "--appendonly", "yes", "--appendfsync", "always") as server:
        yield server


@pytest.fixture
def replica(redis_server: RedisServer, tmp_path: Path) -> Iterator[RedisServer]:
    """A read-only replica of the session's redis-server."""
    master = ("--replicaof", "127.0.0.1", str(redis_server.port), "--masterauth", redis_server.password)
    with running_redis(tmp_path / "replica", *master) as server:
        yield server


@dataclass
class TLSRedis:
    """A redis-server that also takes TLS on `tls_port`, with a certificate from `ca` for 127.0.0.1."""

    server: RedisServer
    tls_port: int
    ca: Path

    @property
    def url(self) -> str:
        return f"rediss://:{self.server.password}@127.0.0.1:{self.tls_port}/0"


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TLSRedis]:
    key, cert = self_signed(tmp_path)
    port = free_port()
    tls = ("--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key))
    with running_redis(tmp_path / "redis", *tls, "--tls-auth-clients", "no") as server:
        yield TLSRedis(server, port, cert)


class TestRedisStore(DurableStoreContract):
    """A restart of vchat is a new connection to the same Redis: `directory` is not used."""

    url: str

    @pytest.fixture(autouse=True)
    def _redis(self, redis_url: str) -> None:
        self.url = redis_url

    async def open_store(self, directory: Path) -> IStore:
        return await RedisStore.open(reactor, self.url)


@asynccontextmanager
async def opened(url: str) -> AsyncIterator[RedisStore]:
    """The store at `url`, open for the block, then closed."""
    store = await RedisStore.open(reactor, url)
    try:
        yield store
    finally:
        await store.close()


async def command(server: RedisServer, *args: str | bytes) -> Any:
    """One command's reply, through a connection of its own (not the store's)."""
    connection = await txredisapi.Connection(
        "127.0.0.1",
        server.port,
        password=server.password,
        reconnect=False,
        charset=None,
        convertNumbers=False,
    )
    try:
        return await connection.execute_command(*args)
    finally:
        await connection.disconnect()


async def open_error(url: str, timeout: float = 5.0) -> str:
    """The message of the StoreError with which opening the store at `url` fails."""
    try:
        store = await RedisStore.open(reactor, url, timeout)
    except StoreError as e:
        return str(e)
    await store.close()
    raise AssertionError(f"the store at {url} opened")


def snapshot_key(kind: str, owner_id: str) -> str:
    """The key of a ban's or a report's snapshot."""
    return f"{KEY_PREFIX}{kind}:{owner_id}:snapshot"


@pytest_twisted.ensureDeferred
async def test_a_ban_s_snapshot_expires_when_the_ban_ends(redis_server: RedisServer, redis_url: str) -> None:
    now = reactor.seconds()
    async with opened(redis_url) as store:
        timed = await store.add_ban(a_ban(created_at=now, ends_at=now + 3600), jpeg(b"timed"))
        permanent = await store.add_ban(a_ban(created_at=now, ends_at=None), jpeg(b"permanent"))
        report = await store.add_report(a_report(created_at=now), png(b"report"))
        ttl = await command(redis_server, "PTTL", snapshot_key("ban", timed.id))
        assert 3_595_000 < ttl <= 3_600_000
        assert await command(redis_server, "PTTL", snapshot_key("ban", permanent.id)) == -1
        # The store cannot know the report retention: purge deletes a report's snapshot.
        assert await command(redis_server, "PTTL", snapshot_key("report", report.id)) == -1

        resolved = await store.resolve_report(report.id, now + 100, a_ban(created_at=now, ends_at=now + 700))
        assert resolved is not None and resolved.ban_id is not None
        ttl = await command(redis_server, "PTTL", snapshot_key("ban", resolved.ban_id))
        assert 595_000 < ttl <= 600_000  # the ban's remaining time at the decision

        await store.end_ban(timed.id, now + 1)
        assert await command(redis_server, "EXISTS", snapshot_key("ban", timed.id)) == 0


@pytest_twisted.ensureDeferred
async def test_redis_deletes_a_ban_s_snapshot_with_no_purge(redis_url: str) -> None:
    now = reactor.seconds()
    async with opened(redis_url) as store:
        ban = await store.add_ban(a_ban(created_at=now, ends_at=now + 0.2), jpeg(b"face"))
        assert await store.ban_snapshot(ban.id) == jpeg(b"face")
        await deferLater(reactor, 0.3, lambda: None)
        assert await store.ban_snapshot(ban.id) is None
        lapsed = await store.get_ban(ban.id)
        assert lapsed is not None and not lapsed.has_snapshot
        assert await store.purge(now + 0.3, 100.0) is None


KEY_SHAPES = [
    r"ban:ID",
    r"ban:ID:snapshot",
    r"bans",
    r"bans:ends",
    r"bans:(user_id|device_id):.+",
    r"bans:ip",
    r"snapshots:bans",
    r"report:ID",
    r"report:ID:snapshot",
    r"reports:(open|dismissed|banned)",
    r"reports:reporter:.+",
    r"snapshots:reports",
    r"flag:ID",
    r"flags:(open|resolved)",
    r"account:ID",
    r"account:ID:identities",
    r"account:ID:emails",
    r"identity:(facebook|vk|oidc):.+",
    r"email:[0-9a-f]{64}",
    r"accounts:purge",
    r"secret:.+",
    r"schema",
]


@pytest_twisted.ensureDeferred
async def test_every_key_has_the_prefix_and_a_documented_shape(
    redis_server: RedisServer, redis_url: str
) -> None:
    async with opened(redis_url) as store:
        await store.add_ban(a_ban(ends_at=None), jpeg())
        await store.add_ban(a_ban(target=BanTarget("device_id", "d:1")), None)
        await store.add_ban(ip_ban("2001:db8::/32"), None)
        for ban in (None, a_ban()):
            report = await store.add_report(a_report(), png())
            await store.resolve_report(report.id, 1100.0, ban)
        await store.add_report(a_report(), jpeg())
        await store.resolve_flag((await store.add_flag(a_flag())).id, 1100.0)
        await store.add_flag(a_flag())
        account = await store.log_in(a_login("oidc", "https://id.example:sub-1"))
        await store.update_settings(account.account_id, AccountSettings(lang="de"))
        await store.delete_account(account.account_id, 2000.0, 9e9)
        await store.secret("email")
    keys: list[str] = []
    cursor = b"0"
    while True:
        cursor, batch = await command(redis_server, "SCAN", cursor, "COUNT", "1000")
        keys += (key.decode() for key in batch)
        if cursor == b"0":
            break
    shapes = [re.compile(shape.replace("ID", r"[A-Za-z0-9_-]{22}")) for shape in KEY_SHAPES]
    seen = set()
    for key in keys:
        assert key.startswith("vchat:{store}:"), key
        matching = [shape for shape in shapes if shape.fullmatch(key.removeprefix(KEY_PREFIX))]
        assert matching, key
        seen.update(matching)
    assert len(seen) == len(KEY_SHAPES)  # every documented shape was met


@pytest_twisted.ensureDeferred
async def test_two_nodes_deciding_one_report_make_one_ban(redis_url: str) -> None:
    async with opened(redis_url) as first, opened(redis_url) as second:
        for _ in range(20):
            report = await first.add_report(a_report(), jpeg())
            decisions = await DeferredList(
                [store.resolve_report(report.id, 1100.0, a_ban()) for store in (first, second)],
                consumeErrors=True,
            )
            outcomes = sorted(type(result).__name__ for _, result in decisions)
            assert outcomes == ["Failure", "Report"]
            assert [result.check(AlreadyResolved) for ok, result in decisions if not ok] == [AlreadyResolved]
        assert len(await first.list_bans(None, 1100.0, 100)) == 20


@pytest_twisted.ensureDeferred
async def test_nodes_logging_a_new_user_in_at_once_make_one_account(redis_url: str) -> None:
    async with opened(redis_url) as first, opened(redis_url) as second:
        for n in range(20):
            mail = email_hash(f"user{n}@example.org")
            logins = [
                store.log_in(a_login(provider, f"{n}-{provider}", email_hash=mail))
                for store in (first, second)
                for provider in ("facebook", "vk")
            ]
            accounts = await gatherResults(logins)
            assert len({account.account_id for account in accounts}) == 1
            final = await first.get_account(accounts[0].account_id)
            assert final is not None and len(final.identities) == 2
            assert await second.secret(f"race-{n}") == await first.secret(f"race-{n}")


@pytest_twisted.ensureDeferred
async def test_a_purge_rewrites_only_the_reporter_of_a_record(
    redis_server: RedisServer, redis_url: str
) -> None:
    """The script rewrites the record's JSON without decoding it: text that looks like JSON inside its
    strings, nested members of the same names and exact times are kept as Python would write them."""
    tricky = 'quote " backslash \\ ","reporter_user_id":"x"} {[ ] ], é \\u00e9 🙂'
    async with opened(redis_url) as store:
        account = await store.log_in(a_login())
        made = NewReport(
            reporter_user_id=account.account_id,
            reporter_device_id='dev "7" \\',
            reported_user_id="u-1",
            reported_device_id=tricky,
            reported_ip="203.0.113.7",
            reported_client={"reporter_user_id": account.account_id, tricky: tricky, "n": 1.1, "b": None},
            reason="spam",
            comment=tricky,
            created_at=1718000000.123456,
        )
        report = await store.add_report(made, None)
        await store.delete_account(account.account_id, 2000.0, 3000.0)
        assert await store.purge(3000.0, 1e9) is None
        expected = replace(report, reporter_user_id=DELETED_REPORTER, reporter_device_id=None)
        assert await store.get_report(report.id) == expected
        stored = await command(redis_server, "HGET", f"{KEY_PREFIX}report:{report.id}", "record")
        fields = {name: getattr(expected, name) for name in NewReport.__dataclass_fields__}
        assert stored == json.dumps(fields, allow_nan=False, separators=(",", ":"), sort_keys=True).encode()
        assert await store.reports_by(DELETED_REPORTER, 10) == [expected]


@pytest_twisted.ensureDeferred
async def test_ids_that_are_no_account_s_find_none(redis_url: str) -> None:
    async with opened(redis_url) as store:
        account = await store.log_in(a_login())
        for key in (f"{account.account_id}:identities", f"{account.account_id}:emails", ""):
            assert await store.get_account(key) is None
            assert await store.update_settings(key, AccountSettings()) is None
            assert await store.delete_account(key, 2000.0, 3000.0) is None
        assert await store.get_account(account.account_id) == account


@pytest_twisted.ensureDeferred
async def test_an_imported_report_is_found_by_its_reporter(redis_url: str) -> None:
    async with opened(redis_url) as store:
        report = Report.of(a_report_by("u-7"), id="imported-report", status="dismissed", resolved_at=5.0)
        assert await store.import_report(report, None)
        assert await store.reports_by("u-7", 10) == [report]


@pytest_twisted.ensureDeferred
async def test_bans_of_one_time_are_listed_as_sqlite_lists_them(redis_url: str) -> None:
    """Newest first, and by id among those of one time, with the limit counted after ordering."""
    async with opened(redis_url) as store:
        bans = [await store.add_ban(a_ban(created_at=float(t)), None) for t in (1, 2, 2, 2, 2, 3)]
        expected = sorted(bans, key=lambda ban: (-ban.created_at, ban.id))
        for limit in range(7):
            assert await store.list_bans(None, 0.0, limit) == expected[:limit]
        lifted = [replace(bans[i], ended_at=5.0) for i in (1, 2, 4, 5)]
        for ban in lifted:
            await store.end_ban(ban.id, 5.0)
        expected = sorted(lifted, key=lambda ban: (-ban.created_at, ban.id))
        for limit in range(6):
            assert await store.list_bans(False, 5.0, limit) == expected[:limit]


@pytest_twisted.ensureDeferred
async def test_a_restarted_redis_keeps_everything_and_the_store_reconnects(
    persistent_redis: RedisServer,
) -> None:
    now = reactor.seconds()
    async with opened(persistent_redis.url) as store:
        ban = await store.add_ban(a_ban(created_at=now, ends_at=now + 3600), jpeg(b"kept"))
        await deferToThread(persistent_redis.stop)
        with pytest.raises(StoreError, match="lost"):  # at once, not when Redis is back
            await store.get_ban(ban.id)
        await deferToThread(persistent_redis.restart)
        for _ in range(100):
            await deferLater(reactor, 0.1, lambda: None)
            try:
                assert await store.get_ban(ban.id) == ban
                break
            except StoreError:
                continue
        else:
            raise AssertionError("the store did not reconnect")
        assert await store.ban_snapshot(ban.id) == jpeg(b"kept")
        ttl = await command(persistent_redis, "PTTL", snapshot_key("ban", ban.id))
        assert 3_500_000 < ttl <= 3_600_000


@pytest_twisted.ensureDeferred
async def test_accounts_and_secrets_survive_a_redis_restart(persistent_redis: RedisServer) -> None:
    async with opened(persistent_redis.url) as store:
        first = await store.log_in(a_login())
        account = await store.update_settings(first.account_id, AccountSettings("de", "en", True, "f"))
        banned = await store.log_in(a_login("vk", "77", email_hash=None))
        await store.add_ban(a_ban_on(banned.account_id, 1000.0, None), None)
        await store.delete_account(banned.account_id, 2000.0, 3000.0)
        assert await store.purge(3000.0, 1e9) is None  # a tombstone while the ban lasts, for good
        tombstone = await store.get_account(banned.account_id)
        key = await store.secret("email")
    await deferToThread(persistent_redis.stop)
    await deferToThread(persistent_redis.restart)
    async with opened(persistent_redis.url) as store:
        assert account is not None and await store.get_account(account.account_id) == account
        assert tombstone is not None and await store.log_in(a_login("vk", "77", at=4000.0)) == tombstone
        assert await store.log_in(a_login(at=4000.0)) == replace(account, last_login_at=4000.0)
        assert await store.secret("email") == key


@pytest_twisted.ensureDeferred
async def test_rediss_verifies_the_server_s_certificate(
    tls_redis: TLSRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    untrusted = await open_error(tls_redis.url)
    assert untrusted.startswith(f"cannot reach Redis at rediss://127.0.0.1:{tls_redis.tls_port}/0 over TLS (")
    assert "certificate verify failed" in untrusted
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_redis.ca))
    async with opened(tls_redis.url) as store:
        ban = await store.add_ban(a_ban(), jpeg())
        assert await store.get_ban(ban.id) == ban
    plain = tls_redis.url.replace(str(tls_redis.tls_port), str(tls_redis.server.port))
    assert "did not answer within 0.5 s" in await open_error(plain, timeout=0.5)  # TLS to a plain port


@pytest_twisted.ensureDeferred
async def test_an_unreachable_redis_stops_the_start_with_advice() -> None:
    message = await open_error(f"redis://127.0.0.1:{free_port()}/0")
    assert message.startswith("cannot reach Redis at redis://127.0.0.1:")
    assert "is it running, and does --redis name it?" in message


@pytest_twisted.ensureDeferred
async def test_a_wrong_password_or_database_stops_the_start(redis_server: RedisServer) -> None:
    wrong = f"redis://:not-{redis_server.password}@127.0.0.1:{redis_server.port}/0"
    message = await open_error(wrong)
    assert message.startswith(f"Redis at redis://127.0.0.1:{redis_server.port}/0 refused vchat")
    assert "Check the user, password and database in --redis" in message
    assert redis_server.password not in message
    assert "refused vchat" in await open_error(redis_server.url.removesuffix("/0") + "/99")


@pytest_twisted.ensureDeferred
async def test_a_server_that_never_answers_stops_the_start() -> None:
    silent = reactor.listenTCP(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
    where = f"127.0.0.1:{silent.getHost().port}/0"
    try:
        for login in ("", ":secret@"):  # no login: the first call waits; a login: the login waits
            message = await open_error(f"redis://{login}{where}", timeout=0.3)
            assert message == f"Redis at redis://{where} did not answer within 0.3 s"
    finally:
        await silent.stopListening()


class NotRedis(Protocol):
    """A server of another protocol: it answers with an error of its own and hangs up."""

    def connectionMade(self) -> None:
        self.transport.write(b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n")
        self.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_a_server_that_is_no_redis_stops_the_start() -> None:
    other = reactor.listenTCP(0, Factory.forProtocol(NotRedis), interface="127.0.0.1")
    try:
        for login in ("", ":secret@"):
            message = await open_error(f"redis://{login}127.0.0.1:{other.getHost().port}/0")
            assert message.startswith(
                f"Redis at redis://127.0.0.1:{other.getHost().port}/0 closed the connection"
            )
    finally:
        await other.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_read_only_replica_stops_the_start(replica: RedisServer) -> None:
    message = await open_error(replica.url)
    assert message.startswith(f"Redis at redis://127.0.0.1:{replica.port}/0: READONLY")


@pytest_twisted.ensureDeferred
async def test_a_newer_layout_stops_the_start(redis_server: RedisServer, redis_url: str) -> None:
    await command(redis_server, "SET", f"{KEY_PREFIX}schema", "2")
    assert "layout version 2, newer than this vchat knows (1)" in await open_error(redis_url)


@pytest_twisted.ensureDeferred
async def test_sentinels_that_cannot_be_asked_stop_the_start() -> None:
    message = await open_error(f"redis-sentinel://127.0.0.1:{free_port()}/mymaster")
    assert "no Sentinel of redis-sentinel://127.0.0.1:" in message and "is the service name right?" in message


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("redis://redis.example", RedisAddress("redis.example")),
        ("redis://10.0.0.5:6380/3", RedisAddress("10.0.0.5", 6380, 3)),
        ("redis://[::1]:6380", RedisAddress("::1", 6380)),
        ("rediss://:p%40ss@redis.example/", RedisAddress("redis.example", tls=True, password="p@ss")),
        (
            "redis://vchat:secret@redis.example:6379/0",
            RedisAddress("redis.example", username="vchat", password="secret"),
        ),
        (
            "redis-sentinel://:pw@s1,[::1]:26380/my%20master/2",
            RedisAddress(
                "s1", 26379, 2, password="pw", sentinels=(("s1", 26379), ("::1", 26380)), service="my master"
            ),
        ),
    ],
)
def test_redis_urls(url: str, address: RedisAddress) -> None:
    assert parse_redis_url(url) == address


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://redis.example", "is not a Redis URL"),
        ("redis://", "names no host"),
        ("redis://redis.example:99999", "is not a Redis URL"),
        ("redis://redis.example/zero", "must be a number"),
        ("redis://redis.example/0?timeout=1", "takes no options"),
        ("redis-sentinel://s1:26379,s2:26379", "names no service"),
        ("redis-sentinel://s1,/mymaster", "names no host"),
        ("redis://h/0/1", "expected redis://host:port/db"),
    ],
)
def test_bad_redis_urls(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_redis_url(url)


def test_an_address_shows_no_password() -> None:
    address = parse_redis_url("rediss://:secret@[2001:db8::1]:6390/2")
    assert str(address) == "rediss://[2001:db8::1]:6390/2"
    assert "secret" not in repr(address)
    sentinel = parse_redis_url("redis-sentinel://u:secret@s1:1,s2:2/svc/1")
    assert str(sentinel) == "redis-sentinel://s1:1,s2:2/svc/1" and "secret" not in repr(sentinel)
    for url in ("redis://u:secret@h:x/0", "redis-sentinel://:secret@s1"):
        with pytest.raises(ValueError) as refused:
            parse_redis_url(url)
        assert "secret" not in str(refused.value) and "***" in str(refused.value)
