"""Moving a single-node store into Redis: every record reads back as it was, the imports lay keys out as the
store's own calls do, a second run copies nothing, a dry run writes nothing, the SQLite file is only read,
and `vchat-migrate-store` says what it did or what is wrong."""

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

from vchat.store import redis_testing
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
    assert dry.summary().startswith("would copy 10 bans, 4 reports, 2 flags and 4 snapshots from ")
    after = await migrate(reactor, str(tmp_path), redis_url, NOW, dry_run=True)
    assert (after.bans_copied, after.bans_skipped, after.snapshots_copied) == (0, 10, 0)


@pytest_twisted.ensureDeferred
async def test_imports_refuse_what_the_store_could_not_hold(tmp_path: Path, redis_url: str) -> None:
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
        assert await redis.list_bans(None, NOW, 10) == []


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
        (["--dry-run"], f"would copy 10 bans, 4 reports, 2 flags and 4 snapshots {place}"),
        ([], f"copied 10 bans, 4 reports, 2 flags and 4 snapshots {place}"),
        ([], f"copied 0 bans, 0 reports, 0 flags and 0 snapshots {place}"),
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
