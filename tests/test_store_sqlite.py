"""The SQLite store: the store contract, its schema and migrations, what it says when it cannot open, that
no deleted image can be found in the data directory, and that only its own thread touches the database."""

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
