"""Moving a single-node store into Redis: every record and account reads back as it was, the imports lay keys
out as the store's own calls do, a second run copies nothing, a dry run writes nothing, the SQLite file is only
read, the secrets come along unless Redis made accounts with its own, an account whose identity or e-mail Redis
links elsewhere stays out, and `vchat-migrate-store` says what it did or what is wrong."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import txredisapi
from twisted.internet import reactor
from twisted.internet.threads import deferToThread

from vchat.accounts.cookie import issue_cookie, read_cookie
from vchat.accounts.email import email_hash
from vchat.accounts.flow import COOKIE_KEY, EMAIL_KEY
from vchat.store import redis_testing
from vchat.store.account_records import (
    DELETED_REPORTER,
    Account,
    AccountSettings,
    Login,
    ProviderIdentity,
    StoredAccount,
)
from vchat.store.account_testing import DAY, a_ban_on, a_report_by
from vchat.store.interface import IStore, StoreError
from vchat.store.migrate import MigrationReport, copy_store, main, migrate
from vchat.store.records import FLAG_STATUSES, REPORT_STATUSES, Ban, BanTarget, Flag, Report
from vchat.store.redis import KEY_PREFIX, RedisStore
from vchat.store.redis_testing import RedisServer, free_port
from vchat.store.sqlite import DATABASE_NAME, SQLiteStore
from vchat.store.testing import a_ban, a_flag, a_report, ip_ban, jpeg, png

redis_server = redis_testing.redis_server  # the fixtures, by their names
redis_url = redis_testing.redis_url

ROOT = Path(__file__).resolve().parent.parent
NOW = 1_000_000.0
"""When the migration runs: the stores read no clock, so times need not be today's."""
RETENTION = 30 * 86400.0


@dataclass
class Filled:
    """The records `fill` stored, by what they are for."""

    bans: dict[str, Ban]
    reports: dict[str, Report]
    flags: dict[str, Flag]


async def fill(store: IStore, now: float = NOW) -> Filled:
    """Store one of each kind of record a single node leaves behind by `now`, through the store's calls."""
    add = store.add_ban
    bans = {
        "timed": await add(
            a_ban(target=user("u-timed"), created_at=now - 100, ends_at=now + 3600), jpeg(b"t")
        ),
        "permanent": await add(a_ban(target=user("u-perm"), created_at=now - 200, ends_at=None), png(b"p")),
        "lifted": await add(a_ban(target=user("u-lifted"), created_at=now - 300, ends_at=now + 7200), jpeg()),
        # Over at `now`, its snapshot not purged yet: the snapshot is not copied.
        "ended": await add(a_ban(target=user("u-ended"), created_at=now - 9000, ends_at=now - 5000), jpeg()),
        "v4": await add(ip_ban("203.0.113.0/24", created_at=now - 400, ends_at=None), None),
        "v6": await add(ip_ban("2001:db8::/32", created_at=now - 400, ends_at=now + 60), None),
        "host": await add(ip_ban("198.51.100.7", created_at=now - 400, ends_at=now + 86400), None),
        "device": await add(
            a_ban(target=BanTarget("device_id", "d-ban"), created_at=now - 500, ends_at=None), None
        ),
        "chat": await add(
            a_ban(
                target=user("u-chat"),
                category="chat_abuse",
                source="rule",
                messages=("buy now", "http://spam.example"),
                created_at=now - 600,
                ends_at=now + 7 * 86400,
            ),
            None,
        ),
    }
    lifted = await store.end_ban(bans["lifted"].id, now - 50)
    assert lifted is not None
    bans["lifted"] = lifted

    reports = {
        "open": await store.add_report(a_report(created_at=now - 30, comment="look"), jpeg(b"open")),
        "open-plain": await store.add_report(
            a_report(created_at=now - 30, reported_user_id="u-x", reported_ip="2001:db8::9"), None
        ),
        "dismissed": await store.add_report(a_report(created_at=now - 40), png(b"dismissed")),
        "banned": await store.add_report(a_report(created_at=now - 50, reported_user_id="u-rep"), jpeg(b"b")),
    }
    rep_ban = a_ban(target=user("u-rep"), created_at=now - 10, ends_at=now + 600)
    for name, ban in (("dismissed", None), ("banned", rep_ban)):
        resolved = await store.resolve_report(reports[name].id, now - 10, ban)
        assert resolved is not None
        reports[name] = resolved
    ban_id = reports["banned"].ban_id
    assert ban_id is not None
    from_report = await store.get_ban(ban_id)
    assert from_report is not None and from_report.has_snapshot
    bans["from-report"] = from_report

    flags = {"open": await store.add_flag(a_flag(created_at=now - 5))}
    resolved_flag = await store.resolve_flag(
        (await store.add_flag(a_flag(user_id="u-9", created_at=now - 20))).id, now - 1
    )
    assert resolved_flag is not None
    flags["resolved"] = resolved_flag
    return Filled(bans, reports, flags)


async def fill_accounts(store: IStore, now: float = NOW) -> dict[str, StoredAccount]:
    """Store an account of every shape a single node leaves behind by `now`, through the store's calls, with
    its e-mail hashes made under the store's own key: linked through two providers by a verified e-mail, with
    settings; plain; deleted, awaiting its purge; purged, its identities kept while a ban on it lasts."""
    key = await store.secret(EMAIL_KEY)
    await store.secret(COOKIE_KEY)
    ann, ann_work, bob, eve = (
        email_hash(key, f"{name}@example.org") for name in ("ann", "ann.w", "bob", "eve")
    )
    log_in = store.log_in
    linked = await log_in(Login(ProviderIdentity("facebook", "1001"), ann, "f", "DE", now - 5000))
    await log_in(Login(ProviderIdentity("vk", "77"), ann, None, "AT", now - 4000))  # linked by the e-mail
    await log_in(Login(ProviderIdentity("facebook", "1001"), ann_work, None, None, now - 3000))
    await store.update_settings(linked.account_id, AccountSettings("de", "en", True, "m", ("AT", "DE")))
    plain = await log_in(Login(ProviderIdentity("oidc", "sub-9"), None, None, None, now - 4500))
    deleted = await log_in(Login(ProviderIdentity("facebook", "2002"), bob, "m", None, now - 4200))
    await store.add_report(a_report_by(deleted.account_id, now - 4100), None)
    await store.delete_account(deleted.account_id, now - 100, now + 3600)
    tombstone = await log_in(Login(ProviderIdentity("vk", "88"), eve, "f", "FR", now - 4800))
    await store.add_ban(a_ban_on(tombstone.account_id, now - 4700, now + DAY), None)
    await store.delete_account(tombstone.account_id, now - 4600, now - 1000)
    await store.purge(now - 1000, RETENTION)
    hashes = {linked.account_id: (ann, ann_work), deleted.account_id: (bob,)}  # eve's went with the purge
    made = {"linked": linked, "plain": plain, "deleted": deleted, "tombstone": tombstone}
    return {
        name: await read_back(store, account.account_id, hashes.get(account.account_id, ()))
        for name, account in made.items()
    }


async def read_back(store: IStore, account_id: str, hashes: tuple[str, ...]) -> StoredAccount:
    """The account as `store` holds it now, with the e-mail hashes that link to it."""
    account = await store.get_account(account_id)
    assert account is not None
    return StoredAccount(account, tuple(sorted(hashes)))


def user(user_id: str) -> BanTarget:
    return BanTarget("user_id", user_id)


def migrated(ban: Ban) -> Ban:
    """`ban` as Redis holds it after the migration: without a snapshot that was due at NOW."""
    return replace(ban, has_snapshot=ban.has_snapshot and ban.active_at(NOW))


def sqlite_contents(directory: Path) -> list[str]:
    """Every row of the database, as SQL."""
    db = sqlite3.connect(directory / DATABASE_NAME)
    try:
        return list(db.iterdump())
    finally:
        db.close()


@asynccontextmanager
async def opened_sqlite(directory: Path) -> AsyncIterator[SQLiteStore]:
    store = await SQLiteStore.open(reactor, str(directory))
    try:
        yield store
    finally:
        await store.close()


@asynccontextmanager
async def opened_redis(url: str) -> AsyncIterator[RedisStore]:
    store = await RedisStore.open(reactor, url)
    try:
        yield store
    finally:
        await store.close()


async def filled_sqlite(directory: Path, now: float = NOW) -> Filled:
    async with opened_sqlite(directory) as store:
        return await fill(store, now)


async def keyspace(server: RedisServer, db: int) -> dict[bytes, tuple[str, Any, int]]:
    """Every key of database `db`: its type, its value, and its TTL (-1: none; 1: some)."""
    connection = await txredisapi.Connection(
        "127.0.0.1",
        server.port,
        dbid=db,
        password=server.password,
        reconnect=False,
        charset=None,
        convertNumbers=False,
    )
    run = connection.execute_command
    try:
        found: dict[bytes, tuple[str, Any, int]] = {}
        for key in await run("KEYS", "*"):
            kind = await run("TYPE", key)
            kind = kind.decode() if isinstance(kind, bytes) else str(kind)
            if kind == "hash":
                fields = await run("HGETALL", key)
                value: Any = dict(zip(fields[::2], fields[1::2], strict=True))
            elif kind == "zset":
                value = await run("ZRANGE", key, 0, -1, "WITHSCORES")
            elif kind == "set":
                value = sorted(await run("SMEMBERS", key))
            else:
                value = await run("GET", key)
            ttl = await run("PTTL", key)
            found[key] = (kind, value, min(ttl, 1))
        return found
    finally:
        await connection.disconnect()


async def pttl(server: RedisServer, key: str) -> int:
    connection = await txredisapi.Connection(
        "127.0.0.1", server.port, password=server.password, reconnect=False, charset=None
    )
    try:
        result: int = await connection.execute_command("PTTL", key)
        return result
    finally:
        await connection.disconnect()


def snapshot_key(kind: str, owner_id: str) -> str:
    return f"{KEY_PREFIX}{kind}:{owner_id}:snapshot"


@pytest_twisted.ensureDeferred
async def test_every_record_reads_back_as_it_was(
    tmp_path: Path, redis_server: RedisServer, redis_url: str
) -> None:
    filled = await filled_sqlite(tmp_path)
    before = sqlite_contents(tmp_path)

    report = await migrate(reactor, str(tmp_path), redis_url, NOW)

    assert report == MigrationReport(
        bans_copied=10,
        reports_copied=4,
        flags_copied=2,
        snapshots_copied=4,  # the timed, permanent and report's bans', the open report's
        source=str(tmp_path / DATABASE_NAME),
        target=f"redis://127.0.0.1:{redis_server.port}/0",
    )
    assert sqlite_contents(tmp_path) == before
    async with opened_sqlite(tmp_path) as sqlite, opened_redis(redis_url) as redis:
        for ban in filled.bans.values():
            stored = await sqlite.get_ban(ban.id)
            assert stored is not None
            assert await redis.get_ban(ban.id) == migrated(stored)
            kept = await sqlite.ban_snapshot(ban.id) if ban.active_at(NOW) else None
            assert await redis.ban_snapshot(ban.id) == kept
        for active in (None, True, False):
            listed = await sqlite.list_bans(active, NOW, 100)
            assert await redis.list_bans(active, NOW, 100) == list(map(migrated, listed))
        assert await redis.active_bans(NOW) == await sqlite.active_bans(NOW)
        for identities in (
            ("u-timed", None, None),
            (None, "203.0.113.9", None),
            (None, "2001:db8:1::5", None),
            ("u-chat", "::ffff:198.51.100.7", "d-ban"),
            ("u-rep", "203.0.113.200", None),
            ("u-lifted", "198.51.100.8", None),
            ("u-ended", None, "d-other"),
        ):
            found = await sqlite.find_active_bans(NOW, *identities)
            assert await redis.find_active_bans(NOW, *identities) == found
        assert len(await redis.find_active_bans(NOW, "u-chat", "198.51.100.7", "d-ban")) == 3

        for stored_report in filled.reports.values():
            assert await redis.get_report(stored_report.id) == await sqlite.get_report(stored_report.id)
            assert await redis.report_snapshot(stored_report.id) == await sqlite.report_snapshot(
                stored_report.id
            )
        for status in REPORT_STATUSES:
            assert await redis.list_reports(status, 100) == await sqlite.list_reports(status, 100)
        for flag in filled.flags.values():
            assert await redis.get_flag(flag.id) == flag
        for flag_status in FLAG_STATUSES:
            assert await redis.list_flags(flag_status, 100) == await sqlite.list_flags(flag_status, 100)

        # A ban's snapshot lives for the ban's remaining time at NOW; a permanent ban's for good.
        remaining = await pttl(redis_server, snapshot_key("ban", filled.bans["timed"].id))
        assert 3_590_000 < remaining <= 3_600_000
        remaining = await pttl(redis_server, snapshot_key("ban", filled.bans["from-report"].id))
        assert 590_000 < remaining <= 600_000
        assert await pttl(redis_server, snapshot_key("ban", filled.bans["permanent"].id)) == -1
        # The indexes of what falls due came along: both stores purge alike from here on.
        assert await redis.purge(NOW, RETENTION) == await sqlite.purge(NOW, RETENTION) == NOW + 600


@pytest_twisted.ensureDeferred
async def test_imports_lay_keys_out_as_the_store_s_own_calls_do(
    redis_server: RedisServer, redis_url: str
) -> None:
    """A store filled through its calls in database 0, copied into database 1: the same keys and values."""
    async with opened_redis(redis_url) as source, opened_redis(redis_url[: -len("0")] + "1") as target:
        await fill(source)
        await source.purge(NOW, RETENTION)  # what was due at NOW is not copied
        report = await copy_store(source, target, NOW)
    assert (report.bans_copied, report.reports_copied, report.flags_copied) == (10, 4, 2)
    original, copy = await keyspace(redis_server, 0), await keyspace(redis_server, 1)
    assert original == copy


@pytest_twisted.ensureDeferred
async def test_a_second_run_copies_nothing_and_changes_nothing(tmp_path: Path, redis_url: str) -> None:
    filled = await filled_sqlite(tmp_path)
    await migrate(reactor, str(tmp_path), redis_url, NOW)
    timed = filled.bans["timed"]
    async with opened_redis(redis_url) as redis:
        await redis.end_ban(timed.id, NOW + 1)  # a cluster node lifts it meanwhile

    again = await migrate(reactor, str(tmp_path), redis_url, NOW + 2)

    assert (again.bans_copied, again.reports_copied, again.flags_copied, again.snapshots_copied) == (
        0,
        0,
        0,
        0,
    )
    assert (again.bans_skipped, again.reports_skipped, again.flags_skipped) == (10, 4, 2)
    async with opened_redis(redis_url) as redis:
        lifted = await redis.get_ban(timed.id)
        assert lifted is not None and lifted.ended_at == NOW + 1 and not lifted.has_snapshot
        assert await redis.import_ban(timed, jpeg(b"t"), NOW) is False
        assert await redis.import_report(filled.reports["open"], None) is False
        assert await redis.import_flag(filled.flags["open"]) is False
        assert await redis.get_ban(timed.id) == lifted


@pytest_twisted.ensureDeferred
async def test_a_dry_run_counts_and_writes_nothing(
    tmp_path: Path, redis_server: RedisServer, redis_url: str
) -> None:
    await filled_sqlite(tmp_path)
    dry = await migrate(reactor, str(tmp_path), redis_url, NOW, dry_run=True)
    # Opening the store marks the layout version, as every vchat does; nothing else is written.
    assert list(await keyspace(redis_server, 0)) == [f"{KEY_PREFIX}schema".encode()]
    real = await migrate(reactor, str(tmp_path), redis_url, NOW)
    assert replace(dry, dry_run=False) == real
    assert dry.summary().startswith(
        "would copy 10 bans, 4 reports, 2 flags, 0 accounts, 0 secrets and 4 snapshots from "
    )
    after = await migrate(reactor, str(tmp_path), redis_url, NOW, dry_run=True)
    assert (after.bans_copied, after.bans_skipped, after.snapshots_copied) == (0, 10, 0)


def test_a_stored_account_checks_its_e_mail_hashes() -> None:
    hashed = "ab" * 32
    account = Account("a-1", (ProviderIdentity("vk", "1"),), None, None, has_email=True)
    assert StoredAccount(account, (hashed,)).email_hashes == (hashed,)
    for hashes, problem in (
        ((), "if, and only if"),
        (("AB" * 32,), "64 lower-case hex digits"),
        ((hashed, hashed), "sorted, each once"),
        (["ab" * 32], "sorted, each once"),
    ):
        with pytest.raises(ValueError, match=problem):
            StoredAccount(account, hashes)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="if, and only if"):
        StoredAccount(replace(account, has_email=False), (hashed,))


@pytest_twisted.ensureDeferred
async def test_every_account_and_secret_reads_back_as_it_was(tmp_path: Path, redis_url: str) -> None:
    async with opened_sqlite(tmp_path) as sqlite:
        accounts = await fill_accounts(sqlite)
        exported = await sqlite.export_accounts()
        secrets = {name: await sqlite.secret(name) for name in (COOKIE_KEY, EMAIL_KEY)}
        assert await sqlite.export_secrets() == secrets
    oldest_first = ("linked", "tombstone", "plain", "deleted")
    assert exported == [accounts[name] for name in oldest_first]
    before = sqlite_contents(tmp_path)

    report = await migrate(reactor, str(tmp_path), redis_url, NOW)

    assert (report.accounts_copied, report.accounts_skipped, report.account_conflicts) == (4, 0, ())
    assert (report.secrets_copied, report.secrets_replaced, report.secrets_kept) == (2, 0, 0)
    assert (report.bans_copied, report.reports_copied, report.problems()) == (1, 1, [])
    assert sqlite_contents(tmp_path) == before
    async with opened_sqlite(tmp_path) as sqlite, opened_redis(redis_url) as redis:
        for name, value in secrets.items():
            assert await redis.secret(name) == value
        for stored in accounts.values():
            account_id = stored.account.account_id
            assert await redis.get_account(account_id) == stored.account
            assert await redis.bans_on_user(account_id) == await sqlite.bans_on_user(account_id)
            assert await redis.reports_by(account_id, 10) == await sqlite.reports_by(account_id, 10)

        # A login cookie the single node issued is good on the cluster.
        linked = accounts["linked"].account
        cookie = issue_cookie(secrets[COOKIE_KEY], linked.account_id, NOW, 3600.0)
        assert read_cookie(await redis.secret(COOKIE_KEY), cookie, NOW + 1) == linked.account_id

        # Logins find the accounts by identity, and by the e-mail hashed under the key that came along.
        again = await redis.log_in(Login(ProviderIdentity("vk", "77"), None, None, None, NOW + 10))
        assert again == replace(linked, last_login_at=NOW + 10)
        key = await redis.secret(EMAIL_KEY)
        new_provider = ProviderIdentity("oidc", "sub-ann")
        by_email = await redis.log_in(
            Login(new_provider, email_hash(key, "ann.w@example.org"), None, None, NOW)
        )
        assert by_email.account_id == linked.account_id
        assert by_email.identities == tuple(sorted((*linked.identities, new_provider)))
        for name, identity in (
            ("deleted", ProviderIdentity("facebook", "2002")),
            ("tombstone", ProviderIdentity("vk", "88")),
        ):
            login = Login(identity, None, None, None, NOW + 20)
            assert await redis.log_in(login) == accounts[name].account  # refused by the caller
        # The deleted account's e-mail links nothing new (and the tombstone's went with its purge).
        for address in ("bob", "eve"):
            login = Login(
                ProviderIdentity("oidc", address), email_hash(key, f"{address}@example.org"), None, None, NOW
            )
            assert (await redis.log_in(login)).account_id not in {
                s.account.account_id for s in accounts.values()
            }


@pytest_twisted.ensureDeferred
async def test_account_imports_lay_keys_out_as_logins_do(redis_server: RedisServer, redis_url: str) -> None:
    """Accounts made through the calls in database 0, imported into database 1: the same keys and values."""
    async with opened_redis(redis_url) as source, opened_redis(redis_url[: -len("0")] + "1") as target:
        accounts = await fill_accounts(source)
        for stored in accounts.values():
            assert await target.import_account(stored) == "copied"
        for name in (COOKIE_KEY, EMAIL_KEY):
            assert await target.import_secret(name, await source.secret(name)) == "copied"
    kinds = ("account:", "accounts:", "identity:", "email:", "secret:", "schema")
    ours = tuple(f"{KEY_PREFIX}{kind}".encode() for kind in kinds)
    original, copy = await keyspace(redis_server, 0), await keyspace(redis_server, 1)
    assert {key: value for key, value in original.items() if key.startswith(ours)} == copy
    assert {key.split(b":")[2] for key in copy} == {b"schema", *(kind[:-1].encode() for kind in kinds[:-1])}


@pytest_twisted.ensureDeferred
async def test_accounts_are_copied_once_and_not_by_a_dry_run(
    tmp_path: Path, redis_server: RedisServer, redis_url: str
) -> None:
    async with opened_sqlite(tmp_path) as sqlite:
        accounts = await fill_accounts(sqlite)
    dry = await migrate(reactor, str(tmp_path), redis_url, NOW, dry_run=True)
    assert list(await keyspace(redis_server, 0)) == [f"{KEY_PREFIX}schema".encode()]
    assert (dry.accounts_copied, dry.secrets_copied) == (4, 2)
    assert dry.summary().startswith("would copy 1 ban, 1 report, 0 flags, 4 accounts, 2 secrets and ")
    assert replace(dry, dry_run=False) == await migrate(reactor, str(tmp_path), redis_url, NOW)
    linked = accounts["linked"].account
    async with opened_redis(redis_url) as redis:  # a cluster node changes it meanwhile
        changed = await redis.update_settings(linked.account_id, AccountSettings(lang="fr"))

    again = await migrate(reactor, str(tmp_path), redis_url, NOW + 1)

    assert (again.accounts_copied, again.accounts_skipped, again.account_conflicts) == (0, 4, ())
    assert (again.secrets_copied, again.secrets_kept, again.problems()) == (0, 2, [])
    assert "left as they were: 1 ban, 1 report, 0 flags, 4 accounts, 2 secrets" in again.summary()
    async with opened_redis(redis_url) as redis:
        assert await redis.get_account(linked.account_id) == changed


@pytest_twisted.ensureDeferred
async def test_a_secret_redis_made_before_any_account_is_replaced(tmp_path: Path, redis_url: str) -> None:
    async with opened_sqlite(tmp_path) as sqlite:
        accounts = await fill_accounts(sqlite)
        ours = await sqlite.secret(EMAIL_KEY)
    async with opened_redis(redis_url) as redis:
        theirs = await redis.secret(EMAIL_KEY)  # a node started a login that came to nothing
    assert theirs != ours

    dry = await migrate(reactor, str(tmp_path), redis_url, NOW, dry_run=True)
    report = await migrate(reactor, str(tmp_path), redis_url, NOW)

    assert replace(dry, dry_run=False) == report
    assert (report.secrets_copied, report.secrets_replaced, report.secrets_differing) == (1, 1, 0)
    assert (report.accounts_copied, report.problems()) == (4, [])
    assert report.summary().startswith("copied 1 ban, 1 report, 0 flags, 4 accounts, 2 secrets and ")
    assert report.summary().endswith("; of the secrets, 1 replaced Redis's own, which no account used")
    assert "1 would replace Redis's own" in dry.summary()
    async with opened_redis(redis_url) as redis:
        assert await redis.secret(EMAIL_KEY) == ours
        login = Login(ProviderIdentity("oidc", "x"), email_hash(ours, "ann@example.org"), None, None, NOW)
        assert (await redis.log_in(login)).account_id == accounts["linked"].account.account_id


@pytest_twisted.ensureDeferred
async def test_a_secret_redis_made_accounts_with_keeps_the_accounts_out(
    tmp_path: Path, redis_server: RedisServer, redis_url: str
) -> None:
    now = reactor.seconds()  # the command migrates at the time it runs
    await filled_sqlite(tmp_path, now)
    async with opened_sqlite(tmp_path) as sqlite:
        accounts = await fill_accounts(sqlite, now)
        ours = [await sqlite.secret(name) for name in (COOKIE_KEY, EMAIL_KEY)]
    async with opened_redis(redis_url) as redis:  # the cluster made an account with its own e-mail key
        theirs = await redis.secret(EMAIL_KEY)
        login = Login(ProviderIdentity("oidc", "zoe"), email_hash(theirs, "zoe@example.org"), None, None, now)
        cluster = await redis.log_in(login)

    done = await deferToThread(command, "--data-dir", str(tmp_path), "--redis", redis_url)

    assert done.returncode == 1
    assert done.stdout.startswith(
        "vchat-migrate-store: copied 11 bans, 5 reports, 2 flags, 0 accounts, 1 secret and 4 snapshots from "
    )
    assert done.stderr == (
        "vchat-migrate-store: error: no account was copied (4 accounts in the store): Redis holds 1 secret "
        "other than the store's (the keys of the login cookies and e-mail hashes) and accounts made with "
        "them, so the store's accounts would not link there. They can move only into a Redis with no vchat "
        "accounts yet; bans, reports and flags are copied all the same\n"
    )
    for value in (*ours, theirs):
        assert value.hex() not in done.stdout + done.stderr
    async with opened_redis(redis_url) as redis:
        assert await redis.secret(EMAIL_KEY) == theirs
        assert await redis.secret(COOKIE_KEY) == ours[0]
        assert await redis.log_in(replace(login, at=now + 1)) == replace(cluster, last_login_at=now + 1)
        for stored in accounts.values():
            assert await redis.get_account(stored.account.account_id) is None
        assert len(await redis.list_bans(None, now, 100)) == 11


@pytest_twisted.ensureDeferred
async def test_an_identity_or_e_mail_redis_links_to_another_account_keeps_that_account_out(
    tmp_path: Path, redis_url: str
) -> None:
    async with opened_sqlite(tmp_path) as sqlite:
        accounts = await fill_accounts(sqlite)
        key = await sqlite.secret(EMAIL_KEY)
    linked, deleted = accounts["linked"].account, accounts["deleted"].account
    async with opened_redis(redis_url) as redis:  # the cluster logged them in already, as other accounts
        facebook = await redis.log_in(Login(ProviderIdentity("facebook", "1001"), None, None, None, NOW))
        by_email = Login(ProviderIdentity("oidc", "bob"), email_hash(key, "bob@example.org"), None, None, NOW)
        bob = await redis.log_in(by_email)

    dry = await migrate(reactor, str(tmp_path), redis_url, NOW, dry_run=True)
    report = await migrate(reactor, str(tmp_path), redis_url, NOW)

    assert replace(dry, dry_run=False) == report
    assert report.account_conflicts == (linked.account_id, deleted.account_id)
    assert (report.accounts_copied, report.secrets_copied) == (2, 2)
    assert report.problems() == [
        "2 accounts not copied, because Redis links an identity or e-mail hash of each to another account: "
        f"{linked.account_id}, {deleted.account_id}. Nothing of them is written to Redis"
    ]
    assert dry.problems()[0].startswith("2 accounts would not be copied, because ")
    again = await migrate(reactor, str(tmp_path), redis_url, NOW)
    assert (again.account_conflicts, again.accounts_skipped) == (report.account_conflicts, 2)
    async with opened_redis(redis_url) as redis:
        for conflicting in (linked, deleted):
            assert await redis.get_account(conflicting.account_id) is None
        assert await redis.log_in(Login(ProviderIdentity("facebook", "1001"), None, None, None, NOW + 1)) == (
            replace(facebook, last_login_at=NOW + 1)
        )
        assert (await redis.log_in(replace(by_email, at=NOW + 1))).account_id == bob.account_id
        # Nothing of the linked account was written: its other identity is free.
        other = await redis.log_in(Login(ProviderIdentity("vk", "77"), None, None, None, NOW + 1))
        assert other.account_id not in (linked.account_id, facebook.account_id)


@pytest_twisted.ensureDeferred
async def test_a_migrated_deletion_is_purged_at_its_time(tmp_path: Path, redis_url: str) -> None:
    async with opened_sqlite(tmp_path) as sqlite:
        accounts = await fill_accounts(sqlite)
    await migrate(reactor, str(tmp_path), redis_url, NOW)
    deleted, tombstone = accounts["deleted"].account, accounts["tombstone"].account
    assert deleted.purge_at == NOW + 3600
    async with opened_sqlite(tmp_path) as sqlite, opened_redis(redis_url) as redis:
        [report] = await redis.reports_by(deleted.account_id, 10)
        assert await redis.purge(NOW, RETENTION) == await sqlite.purge(NOW, RETENTION) == deleted.purge_at
        assert await redis.get_account(deleted.account_id) == deleted
        assert await redis.purge(deleted.purge_at, RETENTION) == NOW + DAY  # the tombstone's ban ends
        assert await redis.get_account(deleted.account_id) is None
        purged = await redis.get_report(report.id)
        assert purged is not None and purged.reporter_user_id == DELETED_REPORTER
        assert await redis.get_account(tombstone.account_id) == tombstone
        assert await redis.purge(NOW + DAY, RETENTION) is None
        assert await redis.get_account(tombstone.account_id) is None
        for identity in (ProviderIdentity("facebook", "2002"), ProviderIdentity("vk", "88")):
            fresh = await redis.log_in(Login(identity, None, None, None, NOW + DAY + 1))
            assert fresh.account_id not in (deleted.account_id, tombstone.account_id) and not fresh.deleted


@pytest_twisted.ensureDeferred
async def test_imports_refuse_what_the_store_could_not_hold(
    tmp_path: Path, redis_server: RedisServer, redis_url: str
) -> None:
    filled = await filled_sqlite(tmp_path)
    async with opened_redis(redis_url) as redis:
        with pytest.raises(ValueError, match="keeps no snapshot"):
            await redis.import_ban(filled.bans["lifted"], jpeg(), NOW)
        with pytest.raises(ValueError, match="keeps no snapshot"):
            await redis.import_ban(filled.bans["ended"], jpeg(), NOW)
        with pytest.raises(ValueError, match="only an open report keeps a snapshot"):
            await redis.import_report(filled.reports["dismissed"], png())
        with pytest.raises(TypeError, match="expected a Ban"):
            await redis.import_ban(a_ban(), None, NOW)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="expected a Report"):
            await redis.import_report(a_report(), None)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="expected a Flag"):
            await redis.import_flag(a_flag())  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="expected a StoredAccount"):
            await redis.import_account(Account("a-1", (), None, None))  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="has a colon"):
            await redis.import_account(StoredAccount(Account("a:1", (), None, None)))
        with pytest.raises(ValueError, match="is not 32 bytes"):
            await redis.import_secret(EMAIL_KEY, b"short")
        assert await redis.list_bans(None, NOW, 10) == []
        assert await redis.get_account("a-1") is None
    assert list(await keyspace(redis_server, 0)) == [f"{KEY_PREFIX}schema".encode()]


@pytest_twisted.ensureDeferred
async def test_a_missing_store_is_neither_created_nor_migrated(tmp_path: Path, redis_url: str) -> None:
    for directory, problem in (
        (tmp_path / "absent", "does not exist"),
        (tmp_path, re.escape("holds no vchat store (vchat.sqlite3 is missing)")),
    ):
        with pytest.raises(StoreError, match=problem):
            await migrate(reactor, str(directory), redis_url, NOW)
    assert list(tmp_path.iterdir()) == []


@pytest_twisted.ensureDeferred
async def test_unreachable_redis_leaves_the_store_as_it_was(tmp_path: Path) -> None:
    await filled_sqlite(tmp_path)
    before = sqlite_contents(tmp_path)
    with pytest.raises(StoreError, match=re.escape("cannot reach Redis at redis://127.0.0.1:")):
        await migrate(reactor, str(tmp_path), f"redis://127.0.0.1:{free_port()}/0", NOW)
    assert sqlite_contents(tmp_path) == before


def command(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `vchat-migrate-store` with `args`, as its entry point does."""
    return subprocess.run(
        [sys.executable, "-c", "from vchat.store.migrate import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


@pytest_twisted.ensureDeferred
async def test_the_command(tmp_path: Path, redis_server: RedisServer, redis_url: str) -> None:
    await filled_sqlite(tmp_path, reactor.seconds())  # the command migrates at the time it runs
    data_dir = str(tmp_path)
    place = f"from {tmp_path / DATABASE_NAME} into Redis at redis://127.0.0.1:{redis_server.port}/0"
    for extra, said in (
        (
            ["--dry-run"],
            f"would copy 10 bans, 4 reports, 2 flags, 0 accounts, 0 secrets and 4 snapshots {place}",
        ),
        ([], f"copied 10 bans, 4 reports, 2 flags, 0 accounts, 0 secrets and 4 snapshots {place}"),
        ([], f"copied 0 bans, 0 reports, 0 flags, 0 accounts, 0 secrets and 0 snapshots {place}"),
    ):
        done = await deferToThread(command, "--data-dir", data_dir, "--redis", redis_url, *extra)
        assert (done.returncode, done.stderr) == (0, "")
        assert done.stdout.startswith(f"vchat-migrate-store: {said}; already in Redis")
    assert redis_server.password not in done.stdout

    absent = await deferToThread(command, "--data-dir", str(tmp_path / "absent"), "--redis", redis_url)
    assert absent.returncode == 1 and absent.stdout == ""
    assert absent.stderr == (
        f"vchat-migrate-store: error: the data directory {tmp_path / 'absent'} does not exist: give the "
        "--data-dir of the vchat whose store to move\n"
    )
    unreachable = f"redis://127.0.0.1:{free_port()}/0"
    refused = await deferToThread(command, "--data-dir", data_dir, "--redis", unreachable)
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"vchat-migrate-store: error: cannot reach Redis at {unreachable} (")
    assert refused.stderr.count("\n") == 1  # one line, no traceback
    usage = await deferToThread(command, "--data-dir", data_dir)
    assert usage.returncode == 2 and "the following arguments are required: --redis" in usage.stderr


def test_the_command_is_installed_by_its_name() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["vchat-migrate-store"] == "vchat.store.migrate:main"
    assert main.__module__ == "vchat.store.migrate"
