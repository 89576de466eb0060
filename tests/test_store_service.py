"""The store service: opens the store, deletes snapshots at the moment they fall due (on a driven clock),
stops the process with a clear message when the store cannot open, and closes the store when stopped."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from vchat.store.account_testing import DAY, a_ban_on, a_login
from vchat.store.interface import IStore, StoreError
from vchat.store.memory import MemoryStore
from vchat.store.service import PURGE_RETRY, PurgingStore, StoreService
from vchat.store.sqlite import DATABASE_NAME, open_sqlite_store
from vchat.store.testing import a_ban, a_report, jpeg
from vchat.testing import fired, result_of

_T = TypeVar("_T")


def started(
    store: IStore, clock: Clock, retention: float = 100.0
) -> tuple[StoreService, IStore, list[dict[str, Any]]]:
    """A started service around `store`, the store it gives, and the events it logs."""
    events: list[dict[str, Any]] = []
    service = StoreService(lambda: succeed(store), clock, on_failure=lambda: None, report_retention=retention)
    service._log = Logger(observer=events.append)
    service.startService()
    return service, fired(service.whenOpen()), events


def test_the_service_gives_a_store() -> None:
    service, store, _ = started(MemoryStore(), Clock())
    assert service.name == "store"
    assert verifyObject(IStore, store)


def test_snapshots_that_fell_due_while_the_server_was_down_are_deleted_at_start() -> None:
    memory = MemoryStore()
    ban = fired(memory.add_ban(a_ban(created_at=0.0, ends_at=100.0), jpeg()))
    report = fired(memory.add_report(a_report(created_at=0.0), jpeg()))
    clock = Clock()
    clock.advance(150)
    started(memory, clock, retention=100.0)
    assert fired(memory.ban_snapshot(ban.id)) is None
    assert fired(memory.report_snapshot(report.id)) is None
    assert clock.getDelayedCalls() == []


def test_a_snapshot_is_deleted_at_the_exact_time_it_falls_due() -> None:
    memory = MemoryStore()
    ban = fired(memory.add_ban(a_ban(created_at=0.0, ends_at=300.0), jpeg()))
    clock = Clock()
    started(memory, clock)
    clock.advance(299)
    assert fired(memory.ban_snapshot(ban.id)) == jpeg()
    clock.advance(1)
    assert fired(memory.ban_snapshot(ban.id)) is None
    assert clock.getDelayedCalls() == []


def test_snapshots_added_through_the_store_bring_the_purge_forward() -> None:
    memory = MemoryStore()
    clock = Clock()
    _, store, _ = started(memory, clock, retention=100.0)
    assert clock.getDelayedCalls() == []
    report = fired(store.add_report(a_report(created_at=10.0), jpeg(b"report")))
    ban = fired(store.add_ban(a_ban(created_at=10.0, ends_at=50.0), jpeg(b"ban")))
    clock.advance(50)
    assert fired(memory.ban_snapshot(ban.id)) is None
    assert fired(memory.report_snapshot(report.id)) == jpeg(b"report")
    clock.advance(60)
    assert fired(memory.report_snapshot(report.id)) is None
    assert clock.getDelayedCalls() == []


def test_a_ban_for_a_report_brings_the_purge_forward() -> None:
    memory = MemoryStore()
    clock = Clock()
    _, store, _ = started(memory, clock, retention=1000.0)
    report = fired(store.add_report(a_report(created_at=0.0), jpeg()))
    [timer] = clock.getDelayedCalls()
    assert timer.getTime() == 1000.0
    clock.advance(10)
    resolved = fired(store.resolve_report(report.id, 10.0, a_ban(created_at=10.0, ends_at=100.0)))
    assert resolved is not None and resolved.ban_id is not None
    [timer] = clock.getDelayedCalls()
    assert timer.getTime() == 100.0
    clock.advance(90)
    assert fired(memory.ban_snapshot(resolved.ban_id)) is None
    assert clock.getDelayedCalls() == []


def test_a_deleted_account_is_purged_at_the_time_asked() -> None:
    memory = MemoryStore()
    clock = Clock()
    _, store, _ = started(memory, clock)
    account = fired(store.log_in(a_login(at=0.0)))
    fired(store.delete_account(account.account_id, 0.0, 30 * DAY))
    clock.advance(30 * DAY - 1)
    assert fired(memory.get_account(account.account_id)) is not None
    clock.advance(1)
    assert fired(memory.get_account(account.account_id)) is None
    assert clock.getDelayedCalls() == []


def test_lifting_the_ban_that_kept_a_deleted_accounts_identities_purges_them() -> None:
    memory = MemoryStore()
    clock = Clock()
    _, store, _ = started(memory, clock)
    account = fired(store.log_in(a_login(at=0.0)))
    ban = fired(store.add_ban(a_ban_on(account.account_id, 0.0), None))  # for good
    fired(store.delete_account(account.account_id, 0.0, 10.0))
    clock.advance(10)
    assert fired(memory.get_account(account.account_id)) is not None  # the ban keeps its identities
    assert clock.getDelayedCalls() == []
    clock.advance(5)
    fired(store.end_ban(ban.id, 15.0))
    clock.advance(0)
    assert fired(memory.get_account(account.account_id)) is None


def test_stopping_cancels_the_timer_and_closes_the_store() -> None:
    memory = MemoryStore()
    clock = Clock()
    service, store, _ = started(memory, clock)
    fired(store.add_ban(a_ban(created_at=0.0, ends_at=300.0), jpeg()))
    assert clock.getDelayedCalls() != []
    assert fired(service.stopService()) is None
    assert clock.getDelayedCalls() == [] and memory.closed


def test_a_store_that_cannot_open_stops_the_process_with_its_message_and_no_traceback() -> None:
    failures: list[bool] = []
    events: list[dict[str, Any]] = []
    service = StoreService(
        lambda: fail(StoreError("/data/vchat.sqlite3 is damaged: restore it")),
        Clock(),
        on_failure=lambda: failures.append(True),
    )
    service._log = Logger(observer=events.append)
    service.startService()
    opened = result_of(service.whenOpen())
    assert isinstance(opened, Failure) and opened.check(StoreError)
    assert failures == [True]
    [event] = events
    assert event["log_level"] == LogLevel.error and "log_failure" not in event
    assert event["reason"] == "/data/vchat.sqlite3 is damaged: restore it"
    assert fired(service.stopService()) is None


def test_a_bug_in_opening_is_logged_with_its_traceback() -> None:
    failures: list[bool] = []
    events: list[dict[str, Any]] = []
    service = StoreService(
        lambda: fail(ZeroDivisionError()), Clock(), on_failure=lambda: failures.append(True)
    )
    service._log = Logger(observer=events.append)
    service.startService()
    service.whenOpen().addErrback(lambda _: None)
    assert failures == [True]
    [event] = events
    assert event["log_failure"].check(ZeroDivisionError)


class FailingPurges(MemoryStore):
    """A memory store whose first purges fail."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.purges = 0

    def purge(self, now: float, report_retention: float) -> Deferred[float | None]:
        self.purges += 1
        if self.failures:
            self.failures -= 1
            return fail(OSError("disk I/O error"))
        return super().purge(now, report_retention)


def test_a_failed_purge_is_logged_and_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[dict[str, Any]] = []
    monkeypatch.setattr(PurgingStore, "_log", Logger(observer=events.append))
    memory = FailingPurges(failures=1)
    ban = fired(memory.add_ban(a_ban(created_at=0.0, ends_at=10.0), jpeg()))
    clock = Clock()
    clock.advance(20)
    started(memory, clock)
    assert memory.purges == 1 and fired(memory.ban_snapshot(ban.id)) == jpeg()
    [event] = events
    assert event["log_failure"].check(OSError)
    clock.advance(PURGE_RETRY)
    assert memory.purges == 2 and fired(memory.ban_snapshot(ban.id)) is None


def test_stopping_while_the_store_opens_closes_it_once_open() -> None:
    opening: Deferred[IStore] = Deferred()
    service = StoreService(lambda: opening, Clock(), on_failure=lambda: None)
    service.startService()
    stopping = service.stopService()
    assert not stopping.called
    memory = MemoryStore()
    opening.callback(memory)
    assert fired(stopping) is None and memory.closed


def test_a_service_never_started_stops_at_once() -> None:
    service = StoreService(lambda: succeed(MemoryStore()), Clock(), on_failure=lambda: None)
    assert fired(service.stopService()) is None


@pytest_twisted.ensureDeferred
async def test_the_service_opens_and_closes_the_sqlite_store(tmp_path: Path) -> None:
    service = StoreService(
        partial(open_sqlite_store, reactor, str(tmp_path)), reactor, on_failure=lambda: None
    )
    service.startService()
    store = await service.whenOpen()
    ban = await store.add_ban(a_ban(), jpeg())
    assert await store.get_ban(ban.id) == ban
    await service.stopService()
    with pytest.raises(StoreError):
        await store.get_ban(ban.id)


@pytest_twisted.ensureDeferred
async def test_a_damaged_sqlite_store_stops_the_process(tmp_path: Path) -> None:
    (tmp_path / DATABASE_NAME).write_bytes(b"garbage " * 1000)
    failures: list[bool] = []
    events: list[dict[str, Any]] = []
    service = StoreService(
        partial(open_sqlite_store, reactor, str(tmp_path)), reactor, on_failure=lambda: failures.append(True)
    )
    service._log = Logger(observer=events.append)
    service.startService()
    with pytest.raises(StoreError):
        await service.whenOpen()
    assert failures == [True]
    [event] = events
    assert "log_failure" not in event and str(tmp_path / DATABASE_NAME) in event["reason"]
    await service.stopService()
