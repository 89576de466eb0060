"""An in-memory store: the same contract as the SQLite store, nothing kept across restarts (for tests)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import replace
from functools import update_wrapper
from typing import Concatenate, ParamSpec, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from vchat.store.account_records import (
    DELETED_REPORTER,
    Account,
    AccountSettings,
    Login,
    ProviderIdentity,
)
from vchat.store.interface import AlreadyResolved, IStore, StoreError
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
    new_id,
    plain_address,
)

_P = ParamSpec("_P")
_T = TypeVar("_T")


def _deferred(
    method: Callable[Concatenate[MemoryStore, _P], _T],
) -> Callable[Concatenate[MemoryStore, _P], Deferred[_T]]:
    """Run `method` at once, its result or exception in an already fired Deferred, as a store must."""

    def call(self: MemoryStore, /, *args: _P.args, **kwargs: _P.kwargs) -> Deferred[_T]:
        if self.closed:
            return fail(StoreError("the memory store is closed"))
        try:
            return succeed(method(self, *args, **kwargs))
        except Exception as e:
            return fail(e)

    update_wrapper(call, method)
    return call


def _limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError("a limit must be a whole number, 0 or more")
    return limit


def _newest_first(ban: Ban) -> tuple[float, str]:
    return -ban.created_at, ban.id


def _oldest_first(record: Ban | Report) -> tuple[float, str]:
    return record.created_at, record.id


@implementer(IStore)
class MemoryStore:
    """Bans, reports, flags and accounts in dictionaries; every Deferred it returns has already fired."""

    def __init__(self) -> None:
        self._bans: dict[str, Ban] = {}
        self._reports: dict[str, Report] = {}
        self._flags: dict[str, Flag] = {}
        self._ban_snapshots: dict[str, Snapshot] = {}
        self._report_snapshots: dict[str, Snapshot] = {}
        self._accounts: dict[str, Account] = {}
        self._account_ids: dict[ProviderIdentity, str] = {}
        self._emails: dict[str, set[str]] = {}  # an account's e-mail hashes
        self._email_links: dict[str, str] = {}  # the account a login with this e-mail hash joins
        self._secrets: dict[str, bytes] = {}
        self.closed = False

    def _new_ban(self, ban: NewBan, snapshot: Snapshot | None, report_id: str | None) -> Ban:
        if not isinstance(ban, NewBan) or isinstance(ban, Ban):
            raise TypeError("expected a NewBan")
        stored = Ban.of(ban, id=new_id(), report_id=report_id, has_snapshot=snapshot is not None)
        self._bans[stored.id] = stored
        if snapshot is not None:
            self._ban_snapshots[stored.id] = snapshot
        return stored

    def _drop_ban_snapshot(self, ban_id: str) -> None:
        if self._ban_snapshots.pop(ban_id, None) is not None:
            self._bans[ban_id] = replace(self._bans[ban_id], has_snapshot=False)

    def _drop_report_snapshot(self, report_id: str) -> None:
        if self._report_snapshots.pop(report_id, None) is not None:
            self._reports[report_id] = replace(self._reports[report_id], has_snapshot=False)

    @_deferred
    def add_ban(self, ban: NewBan, snapshot: Snapshot | None) -> Ban:
        return self._new_ban(ban, snapshot, None)

    @_deferred
    def get_ban(self, ban_id: str) -> Ban | None:
        return self._bans.get(ban_id)

    @_deferred
    def list_bans(self, active: bool | None, now: float, limit: int) -> list[Ban]:
        chosen = [ban for ban in self._bans.values() if active is None or ban.active_at(now) == active]
        return sorted(chosen, key=_newest_first)[: _limit(limit)]

    @_deferred
    def active_bans(self, now: float) -> list[Ban]:
        chosen = (ban for ban in self._bans.values() if ban.active_at(now))
        return sorted(chosen, key=lambda ban: (ban.created_at, ban.id))

    @_deferred
    def find_active_bans(
        self, now: float, user_id: str | None, ip: str | None, device_id: str | None
    ) -> list[Ban]:
        address = None if ip is None else plain_address(ip)
        found = (
            ban
            for ban in self._bans.values()
            if ban.active_at(now) and ban.target.matches(user_id, address, device_id)
        )
        return sorted(found, key=_newest_first)

    @_deferred
    def end_ban(self, ban_id: str, now: float) -> Ban | None:
        ban = self._bans.get(ban_id)
        if ban is None:
            return None
        if ban.active_at(now):
            self._bans[ban_id] = replace(ban, ended_at=now)
        self._drop_ban_snapshot(ban_id)
        return self._bans[ban_id]

    @_deferred
    def ban_snapshot(self, ban_id: str) -> Snapshot | None:
        return self._ban_snapshots.get(ban_id)

    @_deferred
    def add_report(self, report: NewReport, snapshot: Snapshot | None) -> Report:
        if not isinstance(report, NewReport) or isinstance(report, Report):
            raise TypeError("expected a NewReport")
        stored = Report.of(report, id=new_id(), has_snapshot=snapshot is not None)
        self._reports[stored.id] = stored
        if snapshot is not None:
            self._report_snapshots[stored.id] = snapshot
        return stored

    @_deferred
    def get_report(self, report_id: str) -> Report | None:
        return self._reports.get(report_id)

    @_deferred
    def list_reports(self, status: ReportStatus, limit: int) -> list[Report]:
        chosen = (report for report in self._reports.values() if report.status == status)
        return sorted(chosen, key=lambda report: (report.created_at, report.id))[: _limit(limit)]

    @_deferred
    def report_snapshot(self, report_id: str) -> Snapshot | None:
        return self._report_snapshots.get(report_id)

    @_deferred
    def resolve_report(self, report_id: str, now: float, ban: NewBan | None) -> Report | None:
        report = self._reports.get(report_id)
        if report is None:
            return None
        if report.status != "open":
            raise AlreadyResolved(f"report {report_id} is already {report.status}")
        if ban is None:
            resolved = replace(report, status="dismissed", resolved_at=now, has_snapshot=False)
        else:
            stored = self._new_ban(ban, self._report_snapshots.get(report_id), report_id)
            resolved = replace(report, status="banned", resolved_at=now, ban_id=stored.id, has_snapshot=False)
        self._report_snapshots.pop(report_id, None)
        self._reports[report_id] = resolved
        return resolved

    @_deferred
    def add_flag(self, flag: NewFlag) -> Flag:
        if not isinstance(flag, NewFlag) or isinstance(flag, Flag):
            raise TypeError("expected a NewFlag")
        stored = Flag.of(flag, id=new_id())
        self._flags[stored.id] = stored
        return stored

    @_deferred
    def get_flag(self, flag_id: str) -> Flag | None:
        return self._flags.get(flag_id)

    @_deferred
    def list_flags(self, status: FlagStatus, limit: int) -> list[Flag]:
        chosen = (flag for flag in self._flags.values() if flag.status == status)
        return sorted(chosen, key=lambda flag: (flag.created_at, flag.id))[: _limit(limit)]

    @_deferred
    def resolve_flag(self, flag_id: str, now: float) -> Flag | None:
        flag = self._flags.get(flag_id)
        if flag is None:
            return None
        if flag.status != "open":
            raise AlreadyResolved(f"flag {flag_id} is already {flag.status}")
        self._flags[flag_id] = resolved = replace(flag, status="resolved", resolved_at=now)
        return resolved

    def _linked_account(self, login: Login) -> Account | None:
        account_id = self._account_ids.get(login.identity)
        if account_id is not None:
            return self._accounts[account_id]
        if login.email_hash is not None:
            account_id = self._email_links.get(login.email_hash)
            if account_id is not None and not self._accounts[account_id].deleted:
                return self._accounts[account_id]
        return None

    @_deferred
    def log_in(self, login: Login) -> Account:
        if not isinstance(login, Login):
            raise TypeError("expected a Login")
        account = self._linked_account(login)
        if account is None:
            account = Account(
                account_id=new_id(), identities=(), gender=None, country=None, created_at=login.at
            )
            self._emails[account.account_id] = set()
        elif account.deleted:
            return account
        emails = self._emails[account.account_id]
        # An address belongs to the first account that had it (a deleted one keeps it until purged).
        if login.email_hash is not None and self._email_links.setdefault(
            login.email_hash, account.account_id
        ) == (account.account_id):
            emails.add(login.email_hash)
        self._account_ids[login.identity] = account.account_id
        account = replace(
            account,
            identities=tuple(sorted({*account.identities, login.identity})),
            gender=account.gender if login.gender is None else login.gender,
            country=account.country if login.country is None else login.country,
            has_email=bool(emails),
            last_login_at=login.at,
        )
        self._accounts[account.account_id] = account
        return account

    @_deferred
    def get_account(self, account_id: str) -> Account | None:
        return self._accounts.get(account_id)

    @_deferred
    def update_settings(self, account_id: str, settings: AccountSettings) -> Account | None:
        if not isinstance(settings, AccountSettings):
            raise TypeError("expected AccountSettings")
        account = self._accounts.get(account_id)
        if account is None or account.deleted:
            return None
        self._accounts[account_id] = updated = replace(account, settings=settings)
        return updated

    @_deferred
    def delete_account(self, account_id: str, now: float, purge_at: float) -> Account | None:
        account = self._accounts.get(account_id)
        if account is None or account.deleted:
            return account
        self._accounts[account_id] = deleted = replace(account, deleted_at=now, purge_at=purge_at)
        return deleted

    @_deferred
    def reports_by(self, user_id: str, limit: int) -> list[Report]:
        chosen = (report for report in self._reports.values() if report.reporter_user_id == user_id)
        return sorted(chosen, key=_oldest_first)[: _limit(limit)]

    @_deferred
    def bans_on_user(self, user_id: str) -> list[Ban]:
        return sorted(self._bans_on(user_id), key=_oldest_first)

    def _bans_on(self, user_id: str) -> list[Ban]:
        return [
            ban for ban in self._bans.values() if ban.target.kind == "user_id" and ban.target.value == user_id
        ]

    @_deferred
    def secret(self, name: str) -> bytes:
        if name not in self._secrets:
            self._secrets[name] = secrets.token_bytes(32)
        return self._secrets[name]

    def _purge_account(self, account: Account, now: float) -> float | None:
        """Purge a due account: keep only a tombstone (its identities) while a ban on it is active; when it
        will go, None if never (a permanent ban)."""
        account_id = account.account_id
        for email_hash in self._emails.pop(account_id, set()):
            if self._email_links.get(email_hash) == account_id:
                del self._email_links[email_hash]
        for report in list(self._reports.values()):
            if report.reporter_user_id == account_id:
                self._reports[report.id] = replace(
                    report, reporter_user_id=DELETED_REPORTER, reporter_device_id=None
                )
        ends = [ban.ends_at for ban in self._bans_on(account_id) if ban.active_at(now)]
        if not ends:
            for identity in account.identities:
                del self._account_ids[identity]
            del self._accounts[account_id]
            return None
        self._accounts[account_id] = replace(
            account, gender=None, country=None, settings=AccountSettings(), has_email=False
        )
        return None if None in ends else max(end for end in ends if end is not None)

    @_deferred
    def purge(self, now: float, report_retention: float) -> float | None:
        pending: list[float] = []
        for ban_id in list(self._ban_snapshots):
            due = self._bans[ban_id].snapshot_due
            if due is not None and due <= now:
                self._drop_ban_snapshot(ban_id)
            elif due is not None:
                pending.append(due)
        for report_id in list(self._report_snapshots):
            due = self._reports[report_id].created_at + report_retention
            if due <= now:
                self._drop_report_snapshot(report_id)
            else:
                pending.append(due)
        for account in list(self._accounts.values()):
            if account.purge_at is None:
                continue
            if account.purge_at > now:
                pending.append(account.purge_at)
            elif (kept_until := self._purge_account(account, now)) is not None:
                pending.append(kept_until)
        return min(pending, default=None)

    def close(self) -> Deferred[None]:
        self.closed = True
        return succeed(None)
