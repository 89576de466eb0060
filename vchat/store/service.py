"""The store service: opens the durable store at start, deletes snapshots the moment they fall due, and
closes the store at stop."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vchat.outcome import Outcome
from vchat.store.account_records import Account, AccountSettings, Login
from vchat.store.interface import IStore, StoreError
from vchat.store.records import (
    Ban,
    Flag,
    FlagStatus,
    NewBan,
    NewFlag,
    NewReport,
    Report,
    ReportStatus,
    Snapshot,
)

_R = TypeVar("_R")

DEFAULT_REPORT_RETENTION = 30 * 86400.0
"""Seconds an open report keeps its snapshot: 30 days."""

PURGE_RETRY = 60.0
"""Seconds before a purge that failed is tried again."""


@implementer(IStore)
class PurgingStore:
    """Another store, whose snapshots (and deleted accounts) are purged at the moment they fall due: `start`
    purges what fell due while the server was down, and each purge is followed by one timed for the next due
    time, brought forward when something added or changed through this store falls due sooner."""

    _log = Logger()

    def __init__(self, store: IStore, clock: IReactorTime, report_retention: float) -> None:
        self._store = store
        self._clock = clock
        self._retention = report_retention
        self._timer: IDelayedCall | None = None
        self._closed = False

    def start(self) -> None:
        """Purge now, then whenever the next snapshot falls due."""
        self._purge(self._clock.seconds())

    def _purge(self, due: float) -> None:
        self._timer = None
        if self._closed:
            return
        # A timer may fire a hair before `due` as floats round; the snapshot is due all the same.
        now = max(self._clock.seconds(), due)
        try:
            purging = self._store.purge(now, self._retention)
        except Exception:
            purging = fail()
        purging.addCallbacks(self._due, self._failed)

    def _failed(self, failure: Failure) -> None:
        self._log.failure("cannot delete the snapshots that fell due; trying again soon", failure)
        self._due(self._clock.seconds() + PURGE_RETRY)

    def _due(self, when: float | None) -> None:
        """Purge at `when`, unless a purge is timed for then or sooner."""
        if when is None or self._closed:
            return
        timer = self._timer
        if timer is not None and timer.active():
            if timer.getTime() <= when:
                return
            timer.cancel()
        self._timer = self._clock.callLater(max(0.0, when - self._clock.seconds()), self._purge, when)

    def _watch(self, result: _R, due: float | None) -> _R:
        """Pass `result` on, having made sure a purge runs by `due`."""
        self._due(due)
        return result

    def add_ban(self, ban: NewBan, snapshot: Snapshot | None) -> Deferred[Ban]:
        adding = self._store.add_ban(ban, snapshot)
        if snapshot is not None:
            adding.addCallback(self._watch, ban.ends_at)
        return adding

    def get_ban(self, ban_id: str) -> Deferred[Ban | None]:
        return self._store.get_ban(ban_id)

    def list_bans(self, active: bool | None, now: float, limit: int) -> Deferred[list[Ban]]:
        return self._store.list_bans(active, now, limit)

    def active_bans(self, now: float) -> Deferred[list[Ban]]:
        return self._store.active_bans(now)

    def find_active_bans(
        self, now: float, user_id: str | None, ip: str | None, device_id: str | None
    ) -> Deferred[list[Ban]]:
        return self._store.find_active_bans(now, user_id, ip, device_id)

    def end_ban(self, ban_id: str, now: float) -> Deferred[Ban | None]:
        # Purged now: the lifted ban may have been what kept a deleted account's identities.
        return self._store.end_ban(ban_id, now).addCallback(self._watch, now)

    def ban_snapshot(self, ban_id: str) -> Deferred[Snapshot | None]:
        return self._store.ban_snapshot(ban_id)

    def add_report(self, report: NewReport, snapshot: Snapshot | None) -> Deferred[Report]:
        adding = self._store.add_report(report, snapshot)
        if snapshot is not None:
            adding.addCallback(self._watch, report.created_at + self._retention)
        return adding

    def get_report(self, report_id: str) -> Deferred[Report | None]:
        return self._store.get_report(report_id)

    def list_reports(self, status: ReportStatus, limit: int) -> Deferred[list[Report]]:
        return self._store.list_reports(status, limit)

    def report_snapshot(self, report_id: str) -> Deferred[Snapshot | None]:
        return self._store.report_snapshot(report_id)

    def resolve_report(self, report_id: str, now: float, ban: NewBan | None) -> Deferred[Report | None]:
        resolving = self._store.resolve_report(report_id, now, ban)
        if ban is not None:
            resolving.addCallback(self._watch, ban.ends_at)  # the ban may take over the report's snapshot
        return resolving

    def add_flag(self, flag: NewFlag) -> Deferred[Flag]:
        return self._store.add_flag(flag)

    def get_flag(self, flag_id: str) -> Deferred[Flag | None]:
        return self._store.get_flag(flag_id)

    def list_flags(self, status: FlagStatus, limit: int) -> Deferred[list[Flag]]:
        return self._store.list_flags(status, limit)

    def resolve_flag(self, flag_id: str, now: float) -> Deferred[Flag | None]:
        return self._store.resolve_flag(flag_id, now)

    def log_in(self, login: Login) -> Deferred[Account]:
        return self._store.log_in(login)

    def get_account(self, account_id: str) -> Deferred[Account | None]:
        return self._store.get_account(account_id)

    def update_settings(self, account_id: str, settings: AccountSettings) -> Deferred[Account | None]:
        return self._store.update_settings(account_id, settings)

    def delete_account(self, account_id: str, now: float, purge_at: float) -> Deferred[Account | None]:
        return self._store.delete_account(account_id, now, purge_at).addCallback(self._watch, purge_at)

    def reports_by(self, user_id: str, limit: int) -> Deferred[list[Report]]:
        return self._store.reports_by(user_id, limit)

    def bans_on_user(self, user_id: str) -> Deferred[list[Ban]]:
        return self._store.bans_on_user(user_id)

    def secret(self, name: str) -> Deferred[bytes]:
        return self._store.secret(name)

    def purge(self, now: float, report_retention: float) -> Deferred[float | None]:
        return self._store.purge(now, report_retention)

    def close(self) -> Deferred[None]:
        self._closed = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        return self._store.close()


class StoreService(Service):
    """Opens the store when started (off the reactor thread) and gives it to those who wait with `whenOpen`;
    purges snapshots as they fall due; closes the store when stopped.

    `open_store` opens the store (e.g. `partial(open_sqlite_store, reactor, data_dir)`); `on_failure` runs
    when it cannot (twistd passes a function that stops the process).
    """

    _log = Logger()

    def __init__(
        self,
        open_store: Callable[[], Deferred[IStore]],
        clock: IReactorTime,
        on_failure: Callable[[], object],
        report_retention: float = DEFAULT_REPORT_RETENTION,
    ) -> None:
        self.setName("store")
        self._open_store = open_store
        self._clock = clock
        self._on_failure = on_failure
        self._retention = report_retention
        self._opened: Outcome[IStore] = Outcome()
        self._started = False

    def whenOpen(self) -> Deferred[IStore]:
        """Fires with the open store, or fails as opening it failed."""
        return self._opened.observe()

    def startService(self) -> None:
        super().startService()
        if self._started:
            return
        self._started = True
        maybeDeferred(self._open_store).addCallbacks(self._open, self._failed)

    def _open(self, store: IStore) -> None:
        purging = PurgingStore(store, self._clock, self._retention)
        if self.running:
            purging.start()
        self._log.info("store open: {store!r}", store=store)
        self._opened.fire(purging)

    def _failed(self, failure: Failure) -> None:
        if failure.check(StoreError):
            self._log.error("cannot open the store: {reason}", reason=str(failure.value))
        else:
            self._log.failure("cannot open the store", failure)
        self._on_failure()
        self._opened.fire(failure)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if not self._started:
            return succeed(None)
        # An opening store cannot be abandoned (its thread would linger): wait for it, then close it.
        return self._opened.observe().addCallbacks(lambda store: store.close(), lambda _: None)
