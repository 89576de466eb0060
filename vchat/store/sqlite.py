"""The default store: an SQLite database in the data directory, owned by one worker thread.

The connection is made in, and only ever used by, the store's own one-thread pool: the reactor thread hands
it calls and gets Deferreds back, and never waits on the disk. Snapshots are BLOBs in their own table,
deleted under `secure_delete` (SQLite overwrites what it deletes with zeros); the journal is the rollback
journal, which SQLite unlinks at every commit, so no deleted image lingers in a side file. Records
reference snapshots, so moving a report's snapshot to its ban is one row update in the same transaction.
Accounts keep their provider identities and e-mail hashes in tables of their own, keyed by what a login
looks up; a purged account's rows go under the same `secure_delete`.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from vchat.outcome import Outcome
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

DATABASE_NAME = "vchat.sqlite3"

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE snapshots (
            id INTEGER PRIMARY KEY,
            content_type TEXT NOT NULL,
            data BLOB NOT NULL
        )""",
        """CREATE TABLE reports (
            id TEXT PRIMARY KEY,
            reporter_user_id TEXT NOT NULL,
            reporter_device_id TEXT,
            reported_user_id TEXT NOT NULL,
            reported_device_id TEXT,
            reported_ip TEXT NOT NULL,
            reported_client TEXT NOT NULL,
            reason TEXT NOT NULL,
            comment TEXT,
            created_at REAL NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('open', 'dismissed', 'banned')),
            resolved_at REAL,
            ban_id TEXT REFERENCES bans (id),
            snapshot_id INTEGER REFERENCES snapshots (id) ON DELETE SET NULL
        )""",
        "CREATE INDEX reports_by_status ON reports (status, created_at)",
        "CREATE INDEX reports_by_snapshot ON reports (snapshot_id)",
        # ip_low and ip_high: an IP ban's first and last address, 16 bytes big-endian (IPv4 mapped into IPv6).
        """CREATE TABLE bans (
            id TEXT PRIMARY KEY,
            target_kind TEXT NOT NULL CHECK (target_kind IN ('user_id', 'ip', 'device_id')),
            target_value TEXT NOT NULL,
            ip_low BLOB,
            ip_high BLOB,
            category TEXT NOT NULL,
            reason TEXT NOT NULL,
            source TEXT NOT NULL,
            created_at REAL NOT NULL,
            ends_at REAL,
            ended_at REAL,
            messages TEXT NOT NULL,
            report_id TEXT REFERENCES reports (id),
            snapshot_id INTEGER REFERENCES snapshots (id) ON DELETE SET NULL
        )""",
        "CREATE INDEX bans_by_target ON bans (target_kind, target_value)",
        "CREATE INDEX bans_by_ip ON bans (ip_low)",
        "CREATE INDEX bans_by_start ON bans (created_at)",
        "CREATE INDEX bans_by_snapshot ON bans (snapshot_id)",
        """CREATE TABLE flags (
            id TEXT PRIMARY KEY,
            user_id TEXT NOT NULL,
            device_id TEXT,
            rule TEXT NOT NULL,
            summary TEXT NOT NULL,
            created_at REAL NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('open', 'resolved')),
            resolved_at REAL
        )""",
        "CREATE INDEX flags_by_status ON flags (status, created_at)",
    ),
    (
        # settings: the AccountSettings as JSON, NULL for the defaults (never chosen, or purged).
        """CREATE TABLE accounts (
            id TEXT PRIMARY KEY,
            gender TEXT,
            country TEXT,
            settings TEXT,
            created_at REAL NOT NULL,
            last_login_at REAL NOT NULL,
            deleted_at REAL,
            purge_at REAL
        )""",
        "CREATE INDEX accounts_by_purge ON accounts (purge_at)",
        """CREATE TABLE account_identities (
            provider TEXT NOT NULL,
            subject TEXT NOT NULL,
            account_id TEXT NOT NULL REFERENCES accounts (id),
            PRIMARY KEY (provider, subject)
        ) WITHOUT ROWID""",
        "CREATE INDEX account_identities_by_account ON account_identities (account_id)",
        # An e-mail hash links the first account that had it, and only that one.
        """CREATE TABLE account_emails (
            hash TEXT PRIMARY KEY,
            account_id TEXT NOT NULL REFERENCES accounts (id)
        ) WITHOUT ROWID""",
        "CREATE INDEX account_emails_by_account ON account_emails (account_id)",
        "CREATE TABLE secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID",
        "CREATE INDEX reports_by_reporter ON reports (reporter_user_id, created_at)",
    ),
)
"""The schema, one tuple of statements per version: `PRAGMA user_version` counts those applied."""

_BAN = """SELECT id, target_kind, target_value, category, reason, source, created_at, ends_at, ended_at,
    messages, report_id, snapshot_id IS NOT NULL FROM bans"""
_REPORT = """SELECT id, reporter_user_id, reporter_device_id, reported_user_id, reported_device_id, reported_ip,
    reported_client, reason, comment, created_at, status, resolved_at, ban_id, snapshot_id IS NOT NULL
    FROM reports"""
_FLAG = "SELECT id, user_id, device_id, rule, summary, created_at, status, resolved_at FROM flags"
_ACTIVE = "(ended_at IS NULL AND (ends_at IS NULL OR ends_at > :now))"
_NEWEST_FIRST = "ORDER BY created_at DESC, id"
_OLDEST_FIRST = "ORDER BY created_at, id"
_ACCOUNT = """SELECT id, gender, country, settings, created_at, last_login_at, deleted_at, purge_at,
    EXISTS (SELECT 1 FROM account_emails WHERE account_id = accounts.id) FROM accounts"""
_PURGED = "(SELECT id FROM accounts WHERE purge_at <= :now)"
_BANNED = f"""EXISTS (SELECT 1 FROM bans WHERE target_kind = 'user_id' AND target_value = accounts.id
    AND {_ACTIVE})"""

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _json(value: object) -> str:
    return json.dumps(value, allow_nan=False, separators=(",", ":"), sort_keys=True)


def _limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError("a limit must be a whole number, 0 or more")
    return limit


def _ban_of(row: Sequence[Any]) -> Ban:
    return Ban(
        id=row[0],
        target=BanTarget(row[1], row[2]),
        category=row[3],
        reason=row[4],
        source=row[5],
        created_at=row[6],
        ends_at=row[7],
        ended_at=row[8],
        messages=tuple(json.loads(row[9])),
        report_id=row[10],
        has_snapshot=bool(row[11]),
    )


def _report_of(row: Sequence[Any]) -> Report:
    return Report(
        id=row[0],
        reporter_user_id=row[1],
        reporter_device_id=row[2],
        reported_user_id=row[3],
        reported_device_id=row[4],
        reported_ip=row[5],
        reported_client=json.loads(row[6]),
        reason=row[7],
        comment=row[8],
        created_at=row[9],
        status=row[10],
        resolved_at=row[11],
        ban_id=row[12],
        has_snapshot=bool(row[13]),
    )


def _flag_of(row: Sequence[Any]) -> Flag:
    return Flag(
        id=row[0],
        user_id=row[1],
        device_id=row[2],
        rule=row[3],
        summary=json.loads(row[4]),
        created_at=row[5],
        status=row[6],
        resolved_at=row[7],
    )


def _settings_json(settings: AccountSettings) -> str:
    return _json(
        {
            "lang": settings.lang,
            "translate_to": settings.translate_to,
            "translate": settings.translate,
            "want": settings.want,
            "countries": list(settings.countries),
        }
    )


def _settings_of(stored: str | None) -> AccountSettings:
    if stored is None:
        return AccountSettings()
    fields = json.loads(stored)
    return AccountSettings(
        lang=fields["lang"],
        translate_to=fields["translate_to"],
        translate=fields["translate"],
        want=fields["want"],
        countries=tuple(fields["countries"]),
    )


def _open_error(path: Path, error: sqlite3.Error) -> StoreError:
    """What a person should know and do when the database cannot be opened."""
    name = getattr(error, "sqlite_errorname", "")
    if name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
        return StoreError(
            f"{path} is damaged or is not a vchat database ({error}). Restore it from a backup, or move it "
            "aside to start with no bans and no reports."
        )
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return StoreError(f"{path} is locked by another process ({error}): is another vchat using it?")
    if name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_IOERR", "SQLITE_FULL")):
        return StoreError(
            f"cannot write {path} ({error}). Make the data directory and the file writable by the user "
            "vchat runs as (and check the disk is not full or read-only), or choose another --data-dir."
        )
    return StoreError(f"cannot open {path}: {error}")


def _make_directory(directory: Path) -> None:
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise StoreError(
            f"the data directory {directory} cannot be created: it, or a directory above it, is a file. "
            "Choose a directory with --data-dir."
        ) from None
    except OSError as e:
        raise StoreError(
            f"cannot create the data directory {directory} ({e.strerror}). Create it for the user vchat "
            "runs as, or choose another with --data-dir."
        ) from None


def _create_private(path: Path) -> None:
    """Create the database file readable by its owner only (SQLite gives its journal the same mode)."""
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    except IsADirectoryError:
        raise StoreError(f"{path} is a directory, not a database: move it aside.") from None
    except OSError as e:
        raise StoreError(
            f"cannot open {path} ({e.strerror}). Make the data directory writable by the user vchat runs "
            "as, or choose another --data-dir."
        ) from None


class Database:
    """The connection and every query, synchronous: only the store's worker thread may call it (SQLite
    refuses calls from other threads)."""

    def __init__(self, path: Path, connection: sqlite3.Connection) -> None:
        self.path = path
        self.thread = threading.get_ident()  # the thread that made the connection
        self._db = connection

    @classmethod
    def open(cls, data_dir: str) -> Database:
        """Open (or create) the database in `data_dir` and bring its schema up to date; StoreError if not."""
        directory = Path(data_dir)
        _make_directory(directory)
        path = directory / DATABASE_NAME
        _create_private(path)
        try:
            connection = sqlite3.connect(path, isolation_level=None, timeout=5.0)
        except sqlite3.Error as e:
            raise _open_error(path, e) from None
        try:
            _prepare(connection, path)
        except sqlite3.Error as e:
            connection.close()
            raise _open_error(path, e) from None
        except BaseException:
            connection.close()
            raise
        return cls(path, connection)

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def _insert_snapshot(self, snapshot: Snapshot | None) -> int | None:
        if snapshot is None:
            return None
        cursor = self._db.execute(
            "INSERT INTO snapshots (content_type, data) VALUES (?, ?)", (snapshot.content_type, snapshot.data)
        )
        return cursor.lastrowid

    def _insert_ban(self, ban: NewBan, snapshot_id: int | None, report_id: str | None) -> Ban:
        if not isinstance(ban, NewBan) or isinstance(ban, Ban):
            raise TypeError("expected a NewBan")
        low, high = network_bounds(ban.target.network) if ban.target.kind == "ip" else (None, None)
        stored = Ban.of(ban, id=new_id(), report_id=report_id, has_snapshot=snapshot_id is not None)
        self._db.execute(
            """INSERT INTO bans (id, target_kind, target_value, ip_low, ip_high, category, reason, source,
                created_at, ends_at, ended_at, messages, report_id, snapshot_id)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?)""",
            (
                stored.id,
                ban.target.kind,
                ban.target.value,
                low,
                high,
                ban.category,
                ban.reason,
                ban.source,
                ban.created_at,
                ban.ends_at,
                _json(list(ban.messages)),
                report_id,
                snapshot_id,
            ),
        )
        return stored

    def add_ban(self, ban: NewBan, snapshot: Snapshot | None) -> Ban:
        """See `IStore.add_ban`."""
        with self._transaction():
            return self._insert_ban(ban, self._insert_snapshot(snapshot), None)

    def get_ban(self, ban_id: str) -> Ban | None:
        """See `IStore.get_ban`."""
        row = self._db.execute(f"{_BAN} WHERE id = ?", (ban_id,)).fetchone()
        return None if row is None else _ban_of(row)

    def list_bans(self, active: bool | None, now: float, limit: int) -> list[Ban]:
        """See `IStore.list_bans`."""
        where = {True: _ACTIVE, False: f"NOT {_ACTIVE}", None: "1"}[active]
        rows = self._db.execute(
            f"{_BAN} WHERE {where} {_NEWEST_FIRST} LIMIT :limit", {"now": now, "limit": _limit(limit)}
        )
        return [_ban_of(row) for row in rows]

    def active_bans(self, now: float) -> list[Ban]:
        """See `IStore.active_bans`."""
        rows = self._db.execute(f"{_BAN} WHERE {_ACTIVE} {_OLDEST_FIRST}", {"now": now})
        return [_ban_of(row) for row in rows]

    def find_active_bans(
        self, now: float, user_id: str | None, ip: str | None, device_id: str | None
    ) -> list[Ban]:
        """See `IStore.find_active_bans`."""
        address = None if ip is None else plain_address(ip)
        rows: list[Any] = []
        for kind, value in (("user_id", user_id), ("device_id", device_id)):
            if value is not None:
                rows += self._db.execute(
                    f"{_BAN} WHERE target_kind = :kind AND target_value = :value AND {_ACTIVE}",
                    {"kind": kind, "value": value, "now": now},
                ).fetchall()
        if address is not None:
            # Each network that can hold the address starts at the address with its low bits cleared:
            # one index seek per prefix length, then the network's last address decides.
            lows = containing_lows(address)
            rows += self._db.execute(
                f"{_BAN} WHERE ip_low IN ({', '.join('?' * len(lows))}) AND ip_high >= ? "
                "AND ended_at IS NULL AND (ends_at IS NULL OR ends_at > ?)",
                (*lows, address_key(address), now),
            ).fetchall()
        bans = {ban.id: ban for ban in map(_ban_of, rows)}
        return sorted(bans.values(), key=lambda ban: (-ban.created_at, ban.id))

    def end_ban(self, ban_id: str, now: float) -> Ban | None:
        """See `IStore.end_ban`."""
        with self._transaction() as db:
            db.execute(
                f"UPDATE bans SET ended_at = :now WHERE id = :id AND {_ACTIVE}", {"id": ban_id, "now": now}
            )
            db.execute(
                "DELETE FROM snapshots WHERE id = (SELECT snapshot_id FROM bans WHERE id = ?)", (ban_id,)
            )
            return self.get_ban(ban_id)

    def ban_snapshot(self, ban_id: str) -> Snapshot | None:
        """See `IStore.ban_snapshot`."""
        return self._snapshot("SELECT snapshot_id FROM bans WHERE id = ?", ban_id)

    def _snapshot(self, owner: str, owner_id: str) -> Snapshot | None:
        row = self._db.execute(
            f"SELECT content_type, data FROM snapshots WHERE id = ({owner})", (owner_id,)
        ).fetchone()
        return None if row is None else Snapshot(row[0], row[1])

    def add_report(self, report: NewReport, snapshot: Snapshot | None) -> Report:
        """See `IStore.add_report`."""
        if not isinstance(report, NewReport) or isinstance(report, Report):
            raise TypeError("expected a NewReport")
        with self._transaction() as db:
            snapshot_id = self._insert_snapshot(snapshot)
            stored = Report.of(report, id=new_id(), has_snapshot=snapshot_id is not None)
            db.execute(
                """INSERT INTO reports (id, reporter_user_id, reporter_device_id, reported_user_id,
                    reported_device_id, reported_ip, reported_client, reason, comment, created_at, status,
                    snapshot_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'open', ?)""",
                (
                    stored.id,
                    report.reporter_user_id,
                    report.reporter_device_id,
                    report.reported_user_id,
                    report.reported_device_id,
                    report.reported_ip,
                    _json(dict(report.reported_client)),
                    report.reason,
                    report.comment,
                    report.created_at,
                    snapshot_id,
                ),
            )
            return stored

    def get_report(self, report_id: str) -> Report | None:
        """See `IStore.get_report`."""
        row = self._db.execute(f"{_REPORT} WHERE id = ?", (report_id,)).fetchone()
        return None if row is None else _report_of(row)

    def list_reports(self, status: ReportStatus, limit: int) -> list[Report]:
        """See `IStore.list_reports`."""
        rows = self._db.execute(
            f"{_REPORT} WHERE status = ? {_OLDEST_FIRST} LIMIT ?", (status, _limit(limit))
        )
        return [_report_of(row) for row in rows]

    def report_snapshot(self, report_id: str) -> Snapshot | None:
        """See `IStore.report_snapshot`."""
        return self._snapshot("SELECT snapshot_id FROM reports WHERE id = ?", report_id)

    def resolve_report(self, report_id: str, now: float, ban: NewBan | None) -> Report | None:
        """See `IStore.resolve_report`."""
        with self._transaction() as db:
            row = db.execute("SELECT status, snapshot_id FROM reports WHERE id = ?", (report_id,)).fetchone()
            if row is None:
                return None
            status, snapshot_id = row
            if status != "open":
                raise AlreadyResolved(f"report {report_id} is already {status}")
            if ban is None:
                db.execute(
                    "UPDATE reports SET status = 'dismissed', resolved_at = ?, snapshot_id = NULL WHERE id = ?",
                    (now, report_id),
                )
                db.execute("DELETE FROM snapshots WHERE id = ?", (snapshot_id,))
            else:
                stored = self._insert_ban(ban, snapshot_id, report_id)
                db.execute(
                    """UPDATE reports SET status = 'banned', resolved_at = ?, ban_id = ?, snapshot_id = NULL
                        WHERE id = ?""",
                    (now, stored.id, report_id),
                )
            return self.get_report(report_id)

    def add_flag(self, flag: NewFlag) -> Flag:
        """See `IStore.add_flag`."""
        if not isinstance(flag, NewFlag) or isinstance(flag, Flag):
            raise TypeError("expected a NewFlag")
        stored = Flag.of(flag, id=new_id())
        with self._transaction() as db:
            db.execute(
                """INSERT INTO flags (id, user_id, device_id, rule, summary, created_at, status)
                    VALUES (?, ?, ?, ?, ?, ?, 'open')""",
                (
                    stored.id,
                    flag.user_id,
                    flag.device_id,
                    flag.rule,
                    _json(dict(flag.summary)),
                    flag.created_at,
                ),
            )
        return stored

    def get_flag(self, flag_id: str) -> Flag | None:
        """See `IStore.get_flag`."""
        row = self._db.execute(f"{_FLAG} WHERE id = ?", (flag_id,)).fetchone()
        return None if row is None else _flag_of(row)

    def list_flags(self, status: FlagStatus, limit: int) -> list[Flag]:
        """See `IStore.list_flags`."""
        rows = self._db.execute(f"{_FLAG} WHERE status = ? {_OLDEST_FIRST} LIMIT ?", (status, _limit(limit)))
        return [_flag_of(row) for row in rows]

    def resolve_flag(self, flag_id: str, now: float) -> Flag | None:
        """See `IStore.resolve_flag`."""
        with self._transaction() as db:
            row = db.execute("SELECT status FROM flags WHERE id = ?", (flag_id,)).fetchone()
            if row is None:
                return None
            if row[0] != "open":
                raise AlreadyResolved(f"flag {flag_id} is already {row[0]}")
            db.execute("UPDATE flags SET status = 'resolved', resolved_at = ? WHERE id = ?", (now, flag_id))
            return self.get_flag(flag_id)

    def _account(self, account_id: str) -> Account | None:
        row = self._db.execute(f"{_ACCOUNT} WHERE id = ?", (account_id,)).fetchone()
        if row is None:
            return None
        identities = self._db.execute(
            "SELECT provider, subject FROM account_identities WHERE account_id = ? ORDER BY provider, subject",
            (account_id,),
        )
        return Account(
            account_id=row[0],
            identities=tuple(ProviderIdentity(provider, subject) for provider, subject in identities),
            gender=row[1],
            country=row[2],
            settings=_settings_of(row[3]),
            created_at=row[4],
            last_login_at=row[5],
            deleted_at=row[6],
            purge_at=row[7],
            has_email=bool(row[8]),
        )

    def _link(self, account_id: str, identity: ProviderIdentity) -> None:
        self._db.execute(
            "INSERT INTO account_identities (provider, subject, account_id) VALUES (?, ?, ?)",
            (identity.provider, identity.subject, account_id),
        )

    def log_in(self, login: Login) -> Account:
        """See `IStore.log_in`."""
        if not isinstance(login, Login):
            raise TypeError("expected a Login")
        identity = login.identity
        with self._transaction() as db:
            row = db.execute(
                "SELECT account_id FROM account_identities WHERE provider = ? AND subject = ?",
                (identity.provider, identity.subject),
            ).fetchone()
            if row is not None:
                account_id: str = row[0]
                known = self._account(account_id)
                if known is not None and known.deleted:
                    return known
            else:
                if login.email_hash is not None:  # a deleted account links nothing new
                    row = db.execute(
                        """SELECT account_id FROM account_emails JOIN accounts ON accounts.id = account_id
                            WHERE hash = ? AND deleted_at IS NULL""",
                        (login.email_hash,),
                    ).fetchone()
                if row is None:
                    account_id = new_id()
                    db.execute(
                        "INSERT INTO accounts (id, created_at, last_login_at) VALUES (?, ?, ?)",
                        (account_id, login.at, login.at),
                    )
                else:
                    account_id = row[0]
                self._link(account_id, identity)
            db.execute(
                """UPDATE accounts SET gender = coalesce(?, gender), country = coalesce(?, country),
                    last_login_at = ? WHERE id = ?""",
                (login.gender, login.country, login.at, account_id),
            )
            if login.email_hash is not None:  # a hash another account holds stays with it
                db.execute(
                    "INSERT OR IGNORE INTO account_emails (hash, account_id) VALUES (?, ?)",
                    (login.email_hash, account_id),
                )
            account = self._account(account_id)
            assert account is not None
            return account

    def get_account(self, account_id: str) -> Account | None:
        """See `IStore.get_account`."""
        return self._account(account_id)

    def update_settings(self, account_id: str, settings: AccountSettings) -> Account | None:
        """See `IStore.update_settings`."""
        if not isinstance(settings, AccountSettings):
            raise TypeError("expected AccountSettings")
        with self._transaction() as db:
            db.execute(
                "UPDATE accounts SET settings = ? WHERE id = ? AND deleted_at IS NULL",
                (_settings_json(settings), account_id),
            )
            account = self._account(account_id)
            return None if account is None or account.deleted else account

    def delete_account(self, account_id: str, now: float, purge_at: float) -> Account | None:
        """See `IStore.delete_account`."""
        with self._transaction() as db:
            account = self._account(account_id)
            if account is None or account.deleted:
                return account
            deleted = replace(account, deleted_at=now, purge_at=purge_at)  # which checks the times
            db.execute(
                "UPDATE accounts SET deleted_at = ?, purge_at = ? WHERE id = ?",
                (deleted.deleted_at, deleted.purge_at, account_id),
            )
            return deleted

    def reports_by(self, user_id: str, limit: int) -> list[Report]:
        """See `IStore.reports_by`."""
        rows = self._db.execute(
            f"{_REPORT} WHERE reporter_user_id = ? {_OLDEST_FIRST} LIMIT ?", (user_id, _limit(limit))
        )
        return [_report_of(row) for row in rows]

    def bans_on_user(self, user_id: str) -> list[Ban]:
        """See `IStore.bans_on_user`."""
        rows = self._db.execute(
            f"{_BAN} WHERE target_kind = 'user_id' AND target_value = ? {_OLDEST_FIRST}", (user_id,)
        )
        return [_ban_of(row) for row in rows]

    def secret(self, name: str) -> bytes:
        """See `IStore.secret`."""
        if not isinstance(name, str):
            raise TypeError("a secret's name is a string")
        with self._transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO secrets (name, value) VALUES (?, ?)", (name, secrets.token_bytes(32))
            )
            (value,) = db.execute("SELECT value FROM secrets WHERE name = ?", (name,)).fetchone()
            return bytes(value)

    def _purge_accounts(self, now: float) -> None:
        """Purge the accounts due by `now`; those banned at `now` stay, as tombstones with their identities.
        A tombstone is purged again at every purge (nothing is left to change) until its last ban is over."""
        due = {"now": now, "deleted": DELETED_REPORTER}
        db = self._db
        db.execute(
            f"""UPDATE reports SET reporter_user_id = :deleted, reporter_device_id = NULL
                WHERE reporter_user_id IN {_PURGED}""",
            due,
        )
        db.execute(f"DELETE FROM account_emails WHERE account_id IN {_PURGED}", due)
        db.execute(
            "UPDATE accounts SET gender = NULL, country = NULL, settings = NULL WHERE purge_at <= :now", due
        )
        gone = f"(SELECT id FROM accounts WHERE purge_at <= :now AND NOT {_BANNED})"
        db.execute(f"DELETE FROM account_identities WHERE account_id IN {gone}", due)
        db.execute(f"DELETE FROM accounts WHERE id IN {gone}", due)

    def purge(self, now: float, report_retention: float) -> float | None:
        """See `IStore.purge`."""
        due = {"now": now, "retention": report_retention}
        with self._transaction() as db:
            self._purge_accounts(now)
            db.execute(
                """DELETE FROM snapshots WHERE id IN (SELECT snapshot_id FROM bans WHERE snapshot_id IS NOT NULL
                    AND (ended_at IS NOT NULL OR ends_at <= :now))""",
                due,
            )
            db.execute(
                """DELETE FROM snapshots WHERE id IN (SELECT snapshot_id FROM reports
                    WHERE snapshot_id IS NOT NULL AND (status != 'open' OR created_at + :retention <= :now))""",
                due,
            )
            db.execute(  # none should exist: a snapshot always has an owner
                """DELETE FROM snapshots
                    WHERE id NOT IN (SELECT snapshot_id FROM bans WHERE snapshot_id IS NOT NULL)
                    AND id NOT IN (SELECT snapshot_id FROM reports WHERE snapshot_id IS NOT NULL)"""
            )
            (next_due,) = db.execute(
                f"""SELECT min(due) FROM (
                    SELECT ends_at AS due FROM bans
                        WHERE snapshot_id IS NOT NULL AND ended_at IS NULL AND ends_at IS NOT NULL
                    UNION ALL
                    SELECT created_at + :retention FROM reports
                        WHERE snapshot_id IS NOT NULL AND status = 'open'
                    UNION ALL
                    SELECT purge_at FROM accounts WHERE purge_at > :now
                    UNION ALL
                    -- a tombstone falls due when its last active ban ends: never while one is permanent
                    SELECT CASE WHEN count(*) = count(bans.ends_at) THEN max(bans.ends_at) END
                        FROM accounts JOIN bans ON target_kind = 'user_id' AND target_value = accounts.id
                        WHERE purge_at <= :now AND {_ACTIVE}
                        GROUP BY accounts.id)""",
                due,
            ).fetchone()
        return None if next_due is None else float(next_due)

    # Not part of IStore: what a migration (`vchat.store.migrate`) reads, never the server.

    def export_accounts(self) -> list[StoredAccount]:
        """Every account, oldest first, with the e-mail hashes that link to it."""
        ids = [row[0] for row in self._db.execute(f"SELECT id FROM accounts {_OLDEST_FIRST}")]
        exported = []
        for account_id in ids:
            account = self._account(account_id)
            assert account is not None
            hashes = self._db.execute(
                "SELECT hash FROM account_emails WHERE account_id = ? ORDER BY hash", (account_id,)
            )
            exported.append(StoredAccount(account, tuple(hashed for (hashed,) in hashes)))
        return exported

    def export_secrets(self) -> dict[str, bytes]:
        """Every secret made so far, by name: `secret` would make the missing ones, and write."""
        return {name: bytes(value) for name, value in self._db.execute("SELECT name, value FROM secrets")}


def _prepare(db: sqlite3.Connection, path: Path) -> None:
    """Configure the connection, check the file, and migrate the schema: all at open."""
    db.execute("PRAGMA journal_mode = DELETE")  # the first read: a file that is no database fails here
    db.execute("PRAGMA synchronous = FULL")
    db.execute("PRAGMA foreign_keys = ON")
    db.execute("PRAGMA secure_delete = ON")
    if db.execute("PRAGMA secure_delete").fetchone() != (1,):
        raise StoreError(f"this SQLite cannot securely delete, so {path} could keep deleted images")
    problems = db.execute("PRAGMA quick_check").fetchall()
    if problems != [("ok",)]:
        found = "; ".join(str(problem[0]) for problem in problems[:3])
        raise StoreError(
            f"{path} is damaged ({found}). Restore it from a backup, or move it aside to start with no bans "
            "and no reports."
        )
    migrate(db, path)


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Apply the migrations the database lacks, in one transaction; the version is written even when none
    is missing, which proves at start that the database can be written."""
    (version,) = db.execute("PRAGMA user_version").fetchone()
    if version > len(MIGRATIONS):
        raise StoreError(
            f"{path} has schema version {version}, newer than this vchat knows ({len(MIGRATIONS)}): run the "
            "newer vchat, or restore a backup made for this one."
        )
    db.execute("BEGIN IMMEDIATE")
    try:
        for migration in MIGRATIONS[version:]:
            for statement in migration:
                db.execute(statement)
        db.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def open_sqlite_store(reactor: IReactorFromThreads, data_dir: str) -> Deferred[IStore]:
    """`SQLiteStore.open`, typed as any store: what `StoreService` takes, e.g. through `functools.partial`."""
    return SQLiteStore.open(reactor, data_dir).addCallback(_as_store)


def _as_store(store: SQLiteStore) -> IStore:
    return store


@implementer(IStore)
class SQLiteStore:
    """The default store: `vchat.sqlite3` in the data directory, used only by the store's own thread."""

    def __init__(self, reactor: IReactorFromThreads, pool: ThreadPool, database: Database) -> None:
        self._reactor = reactor
        self._pool = pool
        self._database = database
        self._closed: Outcome[None] | None = None

    def __repr__(self) -> str:
        return f"<SQLiteStore {self.path}>"

    @property
    def path(self) -> Path:
        """The database file."""
        return self._database.path

    @classmethod
    def open(cls, reactor: IReactorFromThreads, data_dir: str) -> Deferred[SQLiteStore]:
        """Open the store in `data_dir` (created, mode 0700, if missing) off the reactor thread; fails with
        StoreError, whose message says what to do, if the directory or the database cannot be used."""
        pool = ThreadPool(minthreads=1, maxthreads=1, name="vchat-store")
        pool.start()

        def opened(database: Database) -> SQLiteStore:
            return cls(reactor, pool, database)

        def failed(failure: Any) -> Any:
            pool.stop()
            return failure

        return deferToThreadPool(reactor, pool, Database.open, data_dir).addCallbacks(opened, failed)

    def _call(self, f: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> Deferred[_R]:
        if self._closed is not None:
            return fail(StoreError(f"the store in {self.path} is closed"))
        return deferToThreadPool(self._reactor, self._pool, f, *args, **kwargs)

    def add_ban(self, ban: NewBan, snapshot: Snapshot | None) -> Deferred[Ban]:
        return self._call(self._database.add_ban, ban, snapshot)

    def get_ban(self, ban_id: str) -> Deferred[Ban | None]:
        return self._call(self._database.get_ban, ban_id)

    def list_bans(self, active: bool | None, now: float, limit: int) -> Deferred[list[Ban]]:
        return self._call(self._database.list_bans, active, now, limit)

    def active_bans(self, now: float) -> Deferred[list[Ban]]:
        return self._call(self._database.active_bans, now)

    def find_active_bans(
        self, now: float, user_id: str | None, ip: str | None, device_id: str | None
    ) -> Deferred[list[Ban]]:
        return self._call(self._database.find_active_bans, now, user_id, ip, device_id)

    def end_ban(self, ban_id: str, now: float) -> Deferred[Ban | None]:
        return self._call(self._database.end_ban, ban_id, now)

    def ban_snapshot(self, ban_id: str) -> Deferred[Snapshot | None]:
        return self._call(self._database.ban_snapshot, ban_id)

    def add_report(self, report: NewReport, snapshot: Snapshot | None) -> Deferred[Report]:
        return self._call(self._database.add_report, report, snapshot)

    def get_report(self, report_id: str) -> Deferred[Report | None]:
        return self._call(self._database.get_report, report_id)

    def list_reports(self, status: ReportStatus, limit: int) -> Deferred[list[Report]]:
        return self._call(self._database.list_reports, status, limit)

    def report_snapshot(self, report_id: str) -> Deferred[Snapshot | None]:
        return self._call(self._database.report_snapshot, report_id)

    def resolve_report(self, report_id: str, now: float, ban: NewBan | None) -> Deferred[Report | None]:
        return self._call(self._database.resolve_report, report_id, now, ban)

    def add_flag(self, flag: NewFlag) -> Deferred[Flag]:
        return self._call(self._database.add_flag, flag)

    def get_flag(self, flag_id: str) -> Deferred[Flag | None]:
        return self._call(self._database.get_flag, flag_id)

    def list_flags(self, status: FlagStatus, limit: int) -> Deferred[list[Flag]]:
        return self._call(self._database.list_flags, status, limit)

    def resolve_flag(self, flag_id: str, now: float) -> Deferred[Flag | None]:
        return self._call(self._database.resolve_flag, flag_id, now)

    def log_in(self, login: Login) -> Deferred[Account]:
        return self._call(self._database.log_in, login)

    def get_account(self, account_id: str) -> Deferred[Account | None]:
        return self._call(self._database.get_account, account_id)

    def update_settings(self, account_id: str, settings: AccountSettings) -> Deferred[Account | None]:
        return self._call(self._database.update_settings, account_id, settings)

    def delete_account(self, account_id: str, now: float, purge_at: float) -> Deferred[Account | None]:
        return self._call(self._database.delete_account, account_id, now, purge_at)

    def reports_by(self, user_id: str, limit: int) -> Deferred[list[Report]]:
        return self._call(self._database.reports_by, user_id, limit)

    def bans_on_user(self, user_id: str) -> Deferred[list[Ban]]:
        return self._call(self._database.bans_on_user, user_id)

    def secret(self, name: str) -> Deferred[bytes]:
        return self._call(self._database.secret, name)

    def purge(self, now: float, report_retention: float) -> Deferred[float | None]:
        return self._call(self._database.purge, now, report_retention)

    def close(self) -> Deferred[None]:
        if self._closed is None:
            self._closed = Outcome()
            closing = deferToThreadPool(self._reactor, self._pool, self._database.close)
            closing.addBoth(self._stop_pool).addBoth(self._closed.fire)
        return self._closed.observe()

    def _stop_pool(self, result: object) -> object:
        self._pool.stop()  # the worker is idle: its queue ended with the close
        return result

    # Not part of IStore: what a migration (`vchat.store.migrate`) reads, never the server.

    def export_accounts(self) -> Deferred[list[StoredAccount]]:
        """Every account, oldest first, with the e-mail hashes that link to it: for a migration."""
        return self._call(self._database.export_accounts)

    def export_secrets(self) -> Deferred[dict[str, bytes]]:
        """Every secret made so far, by name, making none: for a migration."""
        return self._call(self._database.export_secrets)
