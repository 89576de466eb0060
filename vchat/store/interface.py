"""`IStore`: everything that must survive a restart, behind one narrow interface (SQLite now, Redis later)."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from zope.interface import Interface

from vchat.store.account_records import Account, AccountSettings, Login
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


class StoreError(Exception):
    """The store cannot be opened or used; the message tells a person which file and what to do."""


class AlreadyResolved(Exception):
    """The report or flag was resolved before: a second moderator's decision changes nothing."""


class IStore(Interface):
    """Bans, reports and moderation flags, kept across restarts.

    Every method returns a Deferred and never blocks the reactor. The store reads no clock: callers pass
    `now`. An unknown id gives None, never an error. Records are kept for good; what expires is snapshots
    (images): a ban's when the ban ends, an open report's after the report retention, a dismissed report's at
    once. Chat text is kept only as a `chat_abuse` ban's messages.
    """

    def add_ban(ban: NewBan, snapshot: Snapshot | None) -> Deferred[Ban]:
        """Store a ban (with an image of the offender, kept until the ban ends)."""

    def get_ban(ban_id: str) -> Deferred[Ban | None]:
        """The ban with this id."""

    def list_bans(active: bool | None, now: float, limit: int) -> Deferred[list[Ban]]:
        """Up to `limit` bans, newest first: those active at `now` (True), those ended by then (False), or all."""

    def active_bans(now: float) -> Deferred[list[Ban]]:
        """Every ban active at `now`, oldest first: what a ban index loads at start."""

    def find_active_bans(
        now: float, user_id: str | None, ip: str | None, device_id: str | None
    ) -> Deferred[list[Ban]]:
        """The bans active at `now` that bar any of these identities, newest first; an IP ban bars every
        address in its network. Fails with ValueError if `ip` is not an address."""

    def end_ban(ban_id: str, now: float) -> Deferred[Ban | None]:
        """Lift a ban at `now` (a ban already over stays as it was) and delete its snapshot."""

    def ban_snapshot(ban_id: str) -> Deferred[Snapshot | None]:
        """The ban's snapshot while it is kept."""

    def add_report(report: NewReport, snapshot: Snapshot | None) -> Deferred[Report]:
        """Store an open report (with an image of the reported user, kept while the report is open)."""

    def get_report(report_id: str) -> Deferred[Report | None]:
        """The report with this id."""

    def list_reports(status: ReportStatus, limit: int) -> Deferred[list[Report]]:
        """Up to `limit` reports with this status, oldest first (the review queue's order)."""

    def report_snapshot(report_id: str) -> Deferred[Snapshot | None]:
        """The report's snapshot while it is kept."""

    def resolve_report(report_id: str, now: float, ban: NewBan | None) -> Deferred[Report | None]:
        """Decide an open report, in one transaction: with `ban`, store the ban (which takes over the report's
        snapshot) and mark the report "banned"; without, mark it "dismissed" and delete its snapshot.
        Fails with AlreadyResolved if the report is not open."""

    def add_flag(flag: NewFlag) -> Deferred[Flag]:
        """Store an open flag for review."""

    def get_flag(flag_id: str) -> Deferred[Flag | None]:
        """The flag with this id."""

    def list_flags(status: FlagStatus, limit: int) -> Deferred[list[Flag]]:
        """Up to `limit` flags with this status, oldest first."""

    def resolve_flag(flag_id: str, now: float) -> Deferred[Flag | None]:
        """Mark an open flag resolved; fails with AlreadyResolved if it is not open."""

    def log_in(login: Login) -> Deferred[Account]:
        """Record a login, in one atomic step: the account that holds `login.identity`; else, if the login
        has an e-mail hash, the one an earlier login with that hash made, now linked to this identity too;
        else a new account. The gender and country the login gives (when not None) replace the account's,
        its e-mail hash is added to the account's, and `last_login_at` becomes `login.at`. A deleted account
        is given back as it is, changed in nothing and linked to nothing new: the caller refuses the login."""

    def get_account(account_id: str) -> Deferred[Account | None]:
        """The account with this id (also a deleted one, until purged), or None."""

    def update_settings(account_id: str, settings: AccountSettings) -> Deferred[Account | None]:
        """Replace an account's settings; None, changing nothing, if there is no such account or it is
        deleted."""

    def delete_account(account_id: str, now: float, purge_at: float) -> Deferred[Account | None]:
        """The user asked for the account's deletion: inaccessible from `now` (deleted_at), purged at
        `purge_at`. A second request changes nothing. None if there is no such account."""

    def reports_by(user_id: str, limit: int) -> Deferred[list[Report]]:
        """The reports `user_id` made, oldest first, at most `limit` (for the user's data export)."""

    def bans_on_user(user_id: str) -> Deferred[list[Ban]]:
        """Every ban whose target is `user_id`, active or not, oldest first (for the user's data export)."""

    def secret(name: str) -> Deferred[bytes]:
        """A random secret of 32 bytes for `name` (such as the key of the e-mail hashes): made at its first
        use, the same for every caller and every node from then on."""

    def purge(now: float, report_retention: float) -> Deferred[float | None]:
        """Delete every snapshot due by `now` (of bans ended by then, of open reports `report_retention`
        seconds old or older), and purge every account due by `now`: its e-mail hashes, gender, country and
        settings go, and its reports name `DELETED_REPORTER` (without a device id) as their reporter; its
        provider identities are kept only while a ban on the account is active (so that a new login through
        them is still the banned account, deleted), and go at the first purge after the last such ban ends,
        with the account. Fires with when the next thing kept falls due, None if nothing ever will."""

    def close() -> Deferred[None]:
        """Release the store; later calls fail with StoreError."""
