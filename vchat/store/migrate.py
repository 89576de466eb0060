"""`vchat-migrate-store`: move a single-node store (SQLite, in the data directory) into Redis, for a cluster.

Every record is copied as it is, with its id, times and status, and so is every snapshot still kept: a ban's
expires at the ban's end, reckoned from the time of the copy, and one already due is not copied. A record
whose id Redis holds already is left as it is, so that a second run copies nothing and an interrupted run
can simply be run again. The records in the SQLite file are only read.

The store's secrets come first, then its accounts: an account is linked by e-mail hashes made with one secret
and named by login cookies signed with another, so the accounts are copied only if Redis ends up with the
store's secrets. An account whose identity or e-mail hash Redis links to another account is not copied.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorFromThreads, IReactorTCP, IReactorTime
from twisted.internet.task import react
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)

from vchat.store.interface import IStore, StoreError
from vchat.store.records import FLAG_STATUSES, REPORT_STATUSES
from vchat.store.redis import RedisStore
from vchat.store.sqlite import DATABASE_NAME, SQLiteStore

PROGRAM = "vchat-migrate-store"
EVERY = 10**15
"""A listing limit above any store's count, exact as a double (the number type of Redis's scripts)."""


class IMigrationReactor(IReactorFromThreads, IReactorTCP, IReactorTime):
    """What a migration needs: the SQLite store's worker thread, and a connection to Redis with timeouts."""


@dataclass(frozen=True)
class MigrationReport:
    """What a migration copied, and what it found in Redis already and left as it was."""

    dry_run: bool = False
    bans_copied: int = 0
    bans_skipped: int = 0
    reports_copied: int = 0
    reports_skipped: int = 0
    flags_copied: int = 0
    flags_skipped: int = 0
    snapshots_copied: int = 0
    accounts_copied: int = 0
    accounts_skipped: int = 0
    account_conflicts: tuple[str, ...] = ()  # the ids of those whose identity or e-mail Redis links elsewhere
    accounts_refused: int = 0  # not copied, since Redis holds other secrets (`secrets_differing`)
    secrets_copied: int = 0  # Redis held none
    secrets_replaced: int = 0  # Redis held another, and no account
    secrets_kept: int = 0  # Redis held the same
    secrets_differing: int = 0  # Redis held another, and accounts: left as it was
    source: str = ""  # the SQLite file
    target: str = ""  # Redis's URL, without its password

    def summary(self) -> str:
        """One line for a person: what was (or, for a dry run, would be) copied, and what was there."""
        places = f" from {self.source} into Redis at {self.target}" if self.source and self.target else ""
        copied = _counted(
            self.bans_copied,
            self.reports_copied,
            self.flags_copied,
            self.accounts_copied,
            self.secrets_copied + self.secrets_replaced,
        )
        skipped = _counted(
            self.bans_skipped,
            self.reports_skipped,
            self.flags_skipped,
            self.accounts_skipped,
            self.secrets_kept,
        )
        snapshots = _plural(self.snapshots_copied, "snapshot")
        line = (
            f"{'would copy' if self.dry_run else 'copied'} {copied} and {snapshots}{places}; "
            f"already in Redis, left as they were: {skipped}"
        )
        if self.secrets_replaced:
            replaced = "would replace" if self.dry_run else "replaced"
            line += f"; of the secrets, {self.secrets_replaced} {replaced} Redis's own, which no account used"
        return line

    def problems(self) -> list[str]:
        """What was (or would be) left out, one line each for a person: nothing if all could be copied."""
        found = []
        if self.secrets_differing:
            found.append(
                f"no account {'would be' if self.dry_run else 'was'} copied "
                f"({_plural(self.accounts_refused, 'account')} in the store): Redis holds "
                f"{_plural(self.secrets_differing, 'secret')} other than the store's (the keys of the login "
                "cookies and e-mail hashes) and accounts made with them, so the store's accounts would not "
                "link there. They can move only into a Redis with no vchat accounts yet; bans, reports and "
                "flags are copied all the same"
            )
        if self.account_conflicts:
            found.append(
                f"{_plural(len(self.account_conflicts), 'account')} "
                f"{'would not be' if self.dry_run else 'not'} copied, because Redis links an identity or "
                f"e-mail hash of each to another account: {', '.join(self.account_conflicts)}. Nothing of "
                "them is written to Redis"
            )
        return found


def _plural(count: int, kind: str) -> str:
    return f"{count} {kind}{'' if count == 1 else 's'}"


def _counted(bans: int, reports: int, flags: int, accounts: int, secrets: int) -> str:
    counts = {"ban": bans, "report": reports, "flag": flags, "account": accounts, "secret": secrets}
    return ", ".join(_plural(count, kind) for kind, count in counts.items())


async def copy_store(
    source: IStore, target: RedisStore, now: float, dry_run: bool = False
) -> MigrationReport:
    """Copy every record of `source`, and the snapshots it keeps at `now`, into `target`, leaving those
    whose id `target` holds already as they are; with `dry_run`, only count what would be copied."""
    counts: Counter[str] = Counter()
    for ban in await source.list_bans(None, now, EVERY):
        copied = await target.get_ban(ban.id) is None
        if copied:
            keeps = ban.has_snapshot and ban.active_at(now)  # a snapshot already due is not copied
            snapshot = await source.ban_snapshot(ban.id) if keeps else None
            if not dry_run:
                copied = await target.import_ban(ban, snapshot, now)
            counts["snapshots"] += copied and snapshot is not None
        counts["bans_copied" if copied else "bans_skipped"] += 1
    for status in REPORT_STATUSES:
        for report in await source.list_reports(status, EVERY):
            copied = await target.get_report(report.id) is None
            if copied:
                keeps = report.has_snapshot and report.status == "open"
                snapshot = await source.report_snapshot(report.id) if keeps else None
                if not dry_run:
                    copied = await target.import_report(report, snapshot)
                counts["snapshots"] += copied and snapshot is not None
            counts["reports_copied" if copied else "reports_skipped"] += 1
    for flag_status in FLAG_STATUSES:
        for flag in await source.list_flags(flag_status, EVERY):
            copied = await target.get_flag(flag.id) is None
            if copied and not dry_run:
                copied = await target.import_flag(flag)
            counts["flags_copied" if copied else "flags_skipped"] += 1
    return MigrationReport(
        dry_run=dry_run,
        bans_copied=counts["bans_copied"],
        bans_skipped=counts["bans_skipped"],
        reports_copied=counts["reports_copied"],
        reports_skipped=counts["reports_skipped"],
        flags_copied=counts["flags_copied"],
        flags_skipped=counts["flags_skipped"],
        snapshots_copied=counts["snapshots"],
    )


async def copy_accounts(source: SQLiteStore, target: RedisStore, report: MigrationReport) -> MigrationReport:
    """`report` (of `copy_store`) with the secrets and the accounts of `source` copied into `target` too (for
    a dry run, counted): the secrets first, and no account if `target` keeps another secret."""
    dry_run = report.dry_run
    exported = sorted((await source.export_secrets()).items())
    secrets = Counter([await target.import_secret(name, value, dry_run) for name, value in exported])
    report = replace(
        report,
        secrets_copied=secrets["copied"],
        secrets_replaced=secrets["replaced"],
        secrets_kept=secrets["kept"],
        secrets_differing=secrets["differs"],
    )
    accounts = await source.export_accounts()
    if secrets["differs"]:
        return replace(report, accounts_refused=len(accounts))
    done = {stored.account.account_id: await target.import_account(stored, dry_run) for stored in accounts}
    counts = Counter(done.values())
    return replace(
        report,
        accounts_copied=counts["copied"],
        accounts_skipped=counts["skipped"],
        account_conflicts=tuple(account_id for account_id, did in done.items() if did == "conflict"),
    )


def _check_data_dir(directory: Path) -> None:
    """StoreError unless `directory` holds a store: opening one where there is none would create it."""
    again = "give the --data-dir of the vchat whose store to move"
    if not directory.exists():
        raise StoreError(f"the data directory {directory} does not exist: {again}")
    if not directory.is_dir():
        raise StoreError(f"{directory} is not a directory: {again}")
    if not (directory / DATABASE_NAME).is_file():
        raise StoreError(f"{directory} holds no vchat store ({DATABASE_NAME} is missing): {again}")


async def migrate(
    reactor: IMigrationReactor, data_dir: str, redis_url: str, now: float, dry_run: bool = False
) -> MigrationReport:
    """Copy the store in `data_dir` into the Redis at `redis_url` (see `copy_store` and `copy_accounts`);
    fails with StoreError, whose message says what to do, if either cannot be used."""
    _check_data_dir(Path(data_dir))
    target = await RedisStore.open(reactor, redis_url)
    try:
        source = await SQLiteStore.open(reactor, data_dir)
        try:
            report = await copy_accounts(source, target, await copy_store(source, target, now, dry_run))
            return replace(report, source=str(source.path), target=str(target.address))
        finally:
            await source.close()
    finally:
        await target.close()


def build_parser() -> argparse.ArgumentParser:
    """The command line of `vchat-migrate-store`."""
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description=(
            "Copy a single-node vchat store (bans, reports, flags, the snapshots still kept, accounts and "
            "the store's secrets) from its SQLite file into Redis, for vchat nodes run with --redis. Stop "
            "vchat first. Records already in Redis are left as they are: running it again copies nothing. "
            "The SQLite file is only read."
        ),
    )
    add = parser.add_argument
    add("--data-dir", required=True, metavar="DIR", help="the single-node vchat's data directory")
    add(
        "--redis",
        required=True,
        metavar="URL",
        help="redis://[[user]:password@]host[:port][/db], or rediss://",
    )
    add("--dry-run", action="store_true", help="count what would be copied, and copy nothing")
    return parser


async def run(reactor: IMigrationReactor, args: argparse.Namespace, out: TextIO, err: TextIO) -> None:
    """Migrate as `args` say, writing the summary line to `out`; a StoreError's message, or what was left out
    (`MigrationReport.problems`), goes to `err`, and the exit status is 1."""
    try:
        report = await migrate(reactor, args.data_dir, args.redis, reactor.seconds(), args.dry_run)
    except StoreError as e:
        err.write(f"{PROGRAM}: error: {e}\n")
        raise SystemExit(1) from None
    out.write(f"{PROGRAM}: {report.summary()}\n")
    problems = report.problems()
    for problem in problems:
        err.write(f"{PROGRAM}: error: {problem}\n")
    if problems:
        raise SystemExit(1)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of `vchat-migrate-store` and `python -m vchat.store.migrate`."""
    args = build_parser().parse_args(argv)
    levels = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr), [levels])], redirectStandardIO=False
    )

    def start(reactor: IMigrationReactor) -> Deferred[None]:
        return ensureDeferred(run(reactor, args, sys.stdout, sys.stderr))

    react(start)


if __name__ == "__main__":
    main()
