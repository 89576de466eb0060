"""The SQLite store: the store contract, its schema and migrations, what it says when it cannot open, that
no deleted image or purged account can be found in the data directory, and that only its own thread touches
the database."""

from __future__ import annotations

import sqlite3
import stat
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred

from vchat.store import sqlite as sqlite_store
from vchat.store.account_testing import DAY, a_ban_on, a_login, a_report_by, email_hash
from vchat.store.interface import IStore, StoreError
from vchat.store.sqlite import DATABASE_NAME, MIGRATIONS, SQLiteStore
from vchat.store.testing import DurableStoreContract, a_ban, a_report, jpeg, png


@asynccontextmanager
async def opened(directory: Path) -> AsyncIterator[SQLiteStore]:
    """The store in `directory`, open for the block, then closed (its thread would outlive the test)."""
    store = await SQLiteStore.open(reactor, str(directory))
    try:
        yield store
    finally:
        await store.close()


async def open_error(directory: Path) -> str:
    """The message of the StoreError with which opening the store in `directory` fails."""
    try:
        store = await SQLiteStore.open(reactor, str(directory))
    except StoreError as e:
        return str(e)
    await store.close()
    raise AssertionError(f"the store in {directory} opened")


class TestSQLiteStore(DurableStoreContract):
    async def open_store(self, directory: Path) -> IStore:
        return await SQLiteStore.open(reactor, str(directory))


def schema_version(path: Path) -> int:
    with sqlite3.connect(path) as db:
        (version,) = db.execute("PRAGMA user_version").fetchone()
    db.close()
    return int(version)


@pytest_twisted.ensureDeferred
async def test_a_new_data_directory_is_private(tmp_path: Path) -> None:
    directory = tmp_path / "nested" / "vchat-data"
    async with opened(directory) as store:
        assert store.path == directory / DATABASE_NAME
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE((directory / DATABASE_NAME).stat().st_mode) == 0o600


@pytest_twisted.ensureDeferred
async def test_migrations_run_on_an_empty_file_and_reopening_changes_nothing(tmp_path: Path) -> None:
    (tmp_path / DATABASE_NAME).write_bytes(b"")
    async with opened(tmp_path) as store:
        ban = await store.add_ban(a_ban(), None)
    assert schema_version(tmp_path / DATABASE_NAME) == len(MIGRATIONS)
    async with opened(tmp_path) as store:
        assert await store.get_ban(ban.id) == ban
    assert schema_version(tmp_path / DATABASE_NAME) == len(MIGRATIONS)


def table_names(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        names = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    db.close()
    return names


@pytest.mark.parametrize("version", range(1, len(MIGRATIONS)))
@pytest_twisted.ensureDeferred
async def test_an_older_schema_is_brought_up_to_date_keeping_its_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: int
) -> None:
    with monkeypatch.context() as older:
        older.setattr(sqlite_store, "MIGRATIONS", MIGRATIONS[:version])
        async with opened(tmp_path) as store:
            ban = await store.add_ban(a_ban_on("u-7"), jpeg(b"kept"))
            report = await store.add_report(a_report_by("u-7"), png(b"open"))
        assert schema_version(tmp_path / DATABASE_NAME) == version
        assert "accounts" not in table_names(tmp_path / DATABASE_NAME)

    async with opened(tmp_path) as store:
        assert await store.get_ban(ban.id) == ban
        assert await store.ban_snapshot(ban.id) == jpeg(b"kept")
        assert await store.get_report(report.id) == report
        assert await store.report_snapshot(report.id) == png(b"open")
        assert await store.bans_on_user("u-7") == [ban]
        assert await store.reports_by("u-7", 10) == [report]
        account = await store.log_in(a_login())
        assert await store.get_account(account.account_id) == account
        assert len(await store.secret("email")) == 32
    assert schema_version(tmp_path / DATABASE_NAME) == len(MIGRATIONS)
    assert {"accounts", "account_identities", "account_emails", "secrets"} <= table_names(
        tmp_path / DATABASE_NAME
    )


@pytest_twisted.ensureDeferred
async def test_a_newer_schema_stops_the_start(tmp_path: Path) -> None:
    async with opened(tmp_path):
        pass
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.close()
    assert "newer than this vchat knows" in await open_error(tmp_path)


@pytest_twisted.ensureDeferred
async def test_a_file_that_is_no_database_stops_the_start_with_advice(tmp_path: Path) -> None:
    (tmp_path / DATABASE_NAME).write_bytes(b"these are not the bytes of a database " * 200)
    message = await open_error(tmp_path)
    assert message.startswith(f"{tmp_path / DATABASE_NAME} is damaged or is not a vchat database")
    assert "Restore it from a backup, or move it aside" in message


@pytest_twisted.ensureDeferred
async def test_a_damaged_database_stops_the_start(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        for _ in range(50):
            await store.add_report(a_report(comment="x" * 400), None)
    path = tmp_path / DATABASE_NAME
    data = bytearray(path.read_bytes())
    page = 4096
    data[page * 2 : page * 4] = b"\x55" * (page * 2)  # scribble over b-tree pages 3 and 4
    path.write_bytes(bytes(data))
    assert "is damaged" in await open_error(tmp_path)


@pytest_twisted.ensureDeferred
async def test_a_database_that_cannot_be_written_stops_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As root, no permission stops a write: SQLite's read-only mode stands in for an unwritable file."""
    async with opened(tmp_path):
        pass
    connect = sqlite3.connect

    def read_only(path: Path, **options: Any) -> sqlite3.Connection:
        return connect(f"file:{path}?mode=ro", uri=True, **options)

    monkeypatch.setattr(sqlite3, "connect", read_only)
    message = await open_error(tmp_path)
    assert message.startswith(f"cannot write {tmp_path / DATABASE_NAME}")
    assert "Make the data directory and the file writable by the user vchat runs as" in message


@pytest_twisted.ensureDeferred
async def test_a_data_directory_that_is_a_file_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / "data").write_text("a file")
    assert "is a file" in await open_error(tmp_path / "data")
    # mkdir fails under a file, even for root
    assert "is a file" in await open_error(tmp_path / "data" / "below")


@pytest_twisted.ensureDeferred
async def test_a_database_that_is_a_directory_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / DATABASE_NAME).mkdir()
    assert "is a directory, not a database" in await open_error(tmp_path)


@pytest_twisted.ensureDeferred
async def test_no_deleted_image_remains_anywhere_in_the_data_directory(tmp_path: Path) -> None:
    """Snapshots of an ended ban, a lifted ban, a dismissed report and an expired report: after the purge,
    no file in the data directory (database, journal, anything) holds the marker in any of them."""
    markers = [f"MARKER-{name}-7f3a9c".encode() for name in ("ended", "lifted", "dismissed", "expired")]
    kept = b"MARKER-permanent-7f3a9c"
    async with opened(tmp_path) as store:
        ended = await store.add_ban(a_ban(created_at=1000.0, ends_at=1100.0), jpeg(markers[0], size=200_000))
        lifted = await store.add_ban(a_ban(created_at=1000.0, ends_at=None), jpeg(markers[1], size=3000))
        dismissed = await store.add_report(a_report(created_at=1000.0), png(markers[2]))
        expired = await store.add_report(a_report(created_at=1000.0), jpeg(markers[3], size=100_000))
        permanent = await store.add_ban(a_ban(created_at=1000.0, ends_at=None), jpeg(kept))
        await store.end_ban(lifted.id, 1050.0)
        await store.resolve_report(dismissed.id, 1050.0, None)
        assert await store.purge(1200.0, 100.0) is None

    files = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert [path.name for path in files] == [DATABASE_NAME]  # no journal left behind
    contents = b"".join(path.read_bytes() for path in files)
    assert kept in contents  # the search finds a marker that is still there
    for marker in markers:
        assert marker not in contents
    async with opened(tmp_path) as store:
        assert await store.get_ban(ended.id) == replace(ended, has_snapshot=False)
        assert await store.get_ban(lifted.id) == replace(lifted, ended_at=1050.0, has_snapshot=False)
        assert await store.get_report(expired.id) == replace(expired, has_snapshot=False)
        assert await store.ban_snapshot(permanent.id) == jpeg(kept)


@pytest_twisted.ensureDeferred
async def test_no_purged_account_remains_anywhere_in_the_data_directory(tmp_path: Path) -> None:
    """An account purged outright and one kept as a tombstone: after the purge, no file in the data directory
    holds their e-mail hashes, and the tombstone's identity is still there while its ban lasts."""
    gone_hash, banned_hash = email_hash("gone@example.org"), email_hash("banned@example.org")
    async with opened(tmp_path) as store:
        gone = await store.log_in(a_login("vk", "gone-7f3a9c", email_hash=gone_hash))
        banned = await store.log_in(a_login("oidc", "banned-7f3a9c", email_hash=banned_hash))
        await store.add_ban(a_ban_on(banned.account_id, 1000.0, 5000.0), None)
        for account in (gone, banned):
            await store.delete_account(account.account_id, 1000.0, 2000.0)
        assert await store.purge(2000.0, 1e9) == 5000.0

    contents = b"".join(path.read_bytes() for path in tmp_path.rglob("*") if path.is_file())
    assert b"banned-7f3a9c" in contents  # the search finds what is still there
    for gone_data in (gone_hash, banned_hash, "gone-7f3a9c"):
        assert gone_data.encode() not in contents
    async with opened(tmp_path) as store:
        assert await store.get_account(gone.account_id) is None
        assert await store.get_account(banned.account_id) is not None
        assert await store.purge(5000.0, 1e9) is None
        assert await store.get_account(banned.account_id) is None


@pytest_twisted.ensureDeferred
async def test_a_tombstone_falls_due_when_its_last_ban_ends(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        timed = await store.log_in(a_login("vk", "1", email_hash=None))
        permanent = await store.log_in(a_login("vk", "2", email_hash=None))
        await store.add_ban(a_ban_on(timed.account_id, 1000.0, 60 * DAY), None)
        await store.add_ban(a_ban_on(timed.account_id, 1000.0, 90 * DAY), None)
        await store.add_ban(a_ban_on(permanent.account_id, 1000.0, 10 * DAY), None)
        lifetime = await store.add_ban(a_ban_on(permanent.account_id, 1000.0), None)
        for account in (timed, permanent):
            await store.delete_account(account.account_id, 2000.0, 3000.0)
        assert await store.purge(3000.0, 1e9) == 90 * DAY  # a permanent ban never falls due
        assert await store.purge(90 * DAY, 1e9) is None
        assert await store.get_account(timed.account_id) is None
        await store.end_ban(lifetime.id, 91 * DAY)  # a lifted ban frees the tombstone at the next purge
        assert await store.get_account(permanent.account_id) is not None
        assert await store.purge(91 * DAY, 1e9) is None
        assert await store.get_account(permanent.account_id) is None


@pytest_twisted.ensureDeferred
async def test_only_the_store_s_thread_touches_the_database(tmp_path: Path) -> None:
    async with opened(tmp_path) as store:
        database = store._database
        assert database.thread != threading.get_ident()
        with pytest.raises(sqlite3.ProgrammingError, match="thread"):
            database.get_ban("any")  # SQLite refuses the reactor thread
        calls: list[Deferred[Any]] = [
            store.add_ban(a_ban(), None),
            store.get_ban("any"),
            store.find_active_bans(1500.0, "u-1", "203.0.113.7", None),
            store.purge(1500.0, 100.0),
        ]
        assert not any(call.called for call in calls)  # each waits on the worker thread
        for call in calls:
            await call
