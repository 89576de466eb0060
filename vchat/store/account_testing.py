"""The store contract for accounts (docs/accounts.md): tests written once that every `IStore` must pass, mixed
into `vchat.store.testing.StoreContract`, and sample logins for tests."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest_twisted
from twisted.internet.defer import gatherResults

from vchat.store.account_records import DELETED_REPORTER, AccountSettings, Login, ProviderIdentity
from vchat.store.interface import IStore
from vchat.store.records import BanTarget, NewBan, NewReport

DAY = 86400.0

_Test = TypeVar("_Test", bound=Callable[..., Coroutine[Any, Any, None]])


def store_test(test: _Test) -> _Test:
    """Run an `async def` test method in the reactor (pytest-twisted)."""
    return cast(_Test, pytest_twisted.ensureDeferred(test))


def email_hash(name: str) -> str:
    """A stand-in for the keyed hash of an e-mail address (64 hex digits)."""
    return name.encode().hex().ljust(64, "0")[:64]


def a_login(provider: str = "facebook", subject: str = "1001", **changes: Any) -> Login:
    """A Facebook login of user 1001, who gave a verified e-mail, a gender and a country, with `changes`."""
    fields: dict[str, Any] = {
        "identity": ProviderIdentity(provider, subject),  # type: ignore[arg-type]
        "email_hash": email_hash("ann@example.org"),
        "gender": "f",
        "country": "DE",
        "at": 1000.0,
    }
    return Login(**{**fields, **changes})


def a_report_by(reporter: str, created_at: float = 1000.0) -> NewReport:
    """A report that `reporter` made."""
    return NewReport(
        reporter_user_id=reporter,
        reporter_device_id="dev-r",
        reported_user_id="someone",
        reported_device_id=None,
        reported_ip="203.0.113.9",
        reason="spam",
        created_at=created_at,
    )


def a_ban_on(user_id: str, created_at: float = 1000.0, ends_at: float | None = None) -> NewBan:
    """A harassment ban of `user_id`."""
    return NewBan(
        target=BanTarget("user_id", user_id),
        category="harassment",
        reason="insults",
        source="moderator",
        created_at=created_at,
        ends_at=ends_at,
    )


class AccountContract:
    """What every store must do with accounts."""

    # StoreContract's: the store under test, open for a block.
    opened: Callable[[Path], AbstractAsyncContextManager[IStore]]

    @store_test
    async def test_a_first_login_makes_an_account(self, tmp_path: Path) -> None:
        async with self.opened(tmp_path) as store:
            account = await store.log_in(a_login())
            assert account.identities == (ProviderIdentity("facebook", "1001"),)
            assert (account.gender, account.country, account.has_email) == ("f", "DE", True)
            assert (account.created_at, account.last_login_at) == (1000.0, 1000.0)
            assert account.settings == AccountSettings() and not account.deleted and account.purge_at is None
            assert await store.get_account(account.account_id) == account
            assert await store.get_account("no-such-account") is None

    @store_test
    async def test_the_same_identity_is_the_same_account(self, tmp_path: Path) -> None:
        async with self.opened(tmp_path) as store:
            first = await store.log_in(a_login())
            again = await store.log_in(a_login(at=2000.0, gender=None, country="AT", email_hash=None))
            assert again.account_id == first.account_id
            assert (again.gender, again.country, again.has_email) == ("f", "AT", True)  # None changes nothing
            assert (again.created_at, again.last_login_at) == (1000.0, 2000.0)

    @store_test
    async def test_a_verified_email_links_another_provider(self, tmp_path: Path) -> None:
        async with self.opened(tmp_path) as store:
            facebook = await store.log_in(a_login())
            vk = await store.log_in(a_login("vk", "77", at=2000.0, gender=None))
            assert vk.account_id == facebook.account_id
            assert vk.identities == (ProviderIdentity("facebook", "1001"), ProviderIdentity("vk", "77"))
            # Linked once, found by either identity from then on, even without an e-mail.
            again = await store.log_in(a_login("vk", "77", at=3000.0, email_hash=None))
            assert again.account_id == facebook.account_id

    @store_test
    async def test_no_email_or_another_email_makes_another_account(self, tmp_path: Path) -> None:
        async with self.opened(tmp_path) as store:
            facebook = await store.log_in(a_login())
            unverified = await store.log_in(a_login("vk", "77", email_hash=None))  # the caller drops it
            other = await store.log_in(a_login("oidc", "sub-9", email_hash=email_hash("bob@example.org")))
            assert len({facebook.account_id, unverified.account_id, other.account_id}) == 3
            assert not unverified.has_email

    @store_test
    async def test_an_account_collects_the_emails_of_its_logins(self, tmp_path: Path) -> None:
        async with self.opened(tmp_path) as store:
            first = await store.log_in(a_login())
            await store.log_in(a_login(email_hash=email_hash("ann@work.example"), at=2000.0))
            linked = await store.log_in(a_login("vk", "77", email_hash=email_hash("ann@work.example")))
            assert linked.account_id == first.account_id

    @store_test
    async def test_logins_racing_for_a_new_user_make_one_account(self, tmp_path: Path) -> None:
        async with self.opened(tmp_path) as store:
            accounts = await gatherResults(
                [
                    store.log_in(a_login()),
                    store.log_in(a_login()),
                    store.log_in(a_login("vk", "77")),
                    store.log_in(a_login("oidc", "sub-1")),
                ]
            )
            assert len({account.account_id for account in accounts}) == 1
            final = await store.get_account(accounts[0].account_id)
            assert final is not None and len(final.identities) == 3

    @store_test
    async def test_settings_are_replaced_whole(self, tmp_path: Path) -> None:
        async with self.opened(tmp_path) as store:
            account = await store.log_in(a_login())
            settings = AccountSettings("de", "en", True, "m", ("AT", "CH", "DE"))
            updated = await store.update_settings(account.account_id, settings)
            assert updated == replace(account, settings=settings)
            assert await store.get_account(account.account_id) == updated
            assert await store.update_settings("no-such-account", settings) is None

    @store_test
    async def test_a_deleted_account_is_given_back_unchanged_and_links_nothing(self, tmp_path: Path) -> None:
        async with self.opened(tmp_path) as store:
            account = await store.log_in(a_login())
            deleted = await store.delete_account(account.account_id, 2000.0, 2000.0 + 30 * DAY)
            assert deleted == replace(account, deleted_at=2000.0, purge_at=2000.0 + 30 * DAY)
            assert await store.delete_account(account.account_id, 3000.0, 9e9) == deleted  # asked once
            assert await store.log_in(a_login(at=4000.0, country="FR")) == deleted
            other = await store.log_in(a_login("vk", "77", at=4000.0))
            assert other.account_id != deleted.account_id  # no link to a deleted account
            assert not other.has_email  # whose address it keeps until it is purged
            assert await store.get_account(account.account_id) == deleted
            assert await store.update_settings(account.account_id, AccountSettings(lang="fr")) is None
            assert await store.delete_account("no-such-account", 2000.0, 3000.0) is None

    @store_test
    async def test_a_purged_account_is_gone_and_its_reports_name_no_reporter(self, tmp_path: Path) -> None:
        async with self.opened(tmp_path) as store:
            account = await store.log_in(a_login())
            kept = await store.log_in(a_login("vk", "77", email_hash=None))
            report = await store.add_report(a_report_by(account.account_id), None)
            other = await store.add_report(a_report_by(kept.account_id), None)
            await store.delete_account(account.account_id, 2000.0, 2000.0 + 30 * DAY)
            assert await store.purge(2000.0 + 30 * DAY - 1, 1e9) == 2000.0 + 30 * DAY
            assert await store.get_account(account.account_id) is not None
            await store.purge(2000.0 + 30 * DAY, 1e9)
            assert await store.get_account(account.account_id) is None
            purged = await store.get_report(report.id)
            assert purged is not None
            assert (purged.reporter_user_id, purged.reporter_device_id) == (DELETED_REPORTER, None)
            assert await store.get_report(other.id) == other
            assert await store.reports_by(account.account_id, 10) == []
            fresh = await store.log_in(a_login(at=9e6))  # the identity and the e-mail are free again
            assert fresh.account_id not in (account.account_id, kept.account_id) and not fresh.deleted
            assert fresh.has_email

    @store_test
    async def test_a_banned_account_keeps_only_its_identities_while_the_ban_lasts(
        self, tmp_path: Path
    ) -> None:
        async with self.opened(tmp_path) as store:
            account = await store.log_in(a_login())
            await store.update_settings(account.account_id, AccountSettings(lang="de"))
            ban = await store.add_ban(a_ban_on(account.account_id, 1500.0, 1500.0 + 60 * DAY), None)
            await store.delete_account(account.account_id, 2000.0, 2000.0 + 30 * DAY)
            due = await store.purge(2000.0 + 30 * DAY, 1e9)
            assert due == ban.ends_at
            tombstone = await store.get_account(account.account_id)
            assert tombstone is not None and tombstone.deleted
            assert tombstone.identities == account.identities
            assert (tombstone.gender, tombstone.country, tombstone.has_email) == (None, None, False)
            assert tombstone.settings == AccountSettings()
            assert await store.log_in(a_login(at=3e6)) == tombstone  # still the banned account
            assert await store.log_in(a_login("vk", "77", at=3e6)) != tombstone  # the e-mail links no more
            assert await store.get_ban(ban.id) == ban  # the ban record is kept
            assert ban.ends_at is not None
            assert await store.purge(ban.ends_at, 1e9) is None
            assert await store.get_account(account.account_id) is None
            assert await store.get_ban(ban.id) == ban

    @store_test
    async def test_the_reports_a_user_made_and_the_bans_on_it(self, tmp_path: Path) -> None:
        async with self.opened(tmp_path) as store:
            first = await store.add_report(a_report_by("u-7", 1000.0), None)
            second = await store.add_report(a_report_by("u-7", 1100.0), None)
            await store.add_report(a_report_by("u-8", 1050.0), None)
            assert await store.reports_by("u-7", 10) == [first, second]
            assert await store.reports_by("u-7", 1) == [first]
            ended = await store.add_ban(a_ban_on("u-7", 900.0, 950.0), None)
            lasting = await store.add_ban(a_ban_on("u-7", 1200.0), None)
            await store.add_ban(a_ban_on("u-8", 1000.0), None)
            assert await store.bans_on_user("u-7") == [ended, lasting]
            assert await store.bans_on_user("nobody") == []

    @store_test
    async def test_a_secret_is_made_once_per_name(self, tmp_path: Path) -> None:
        async with self.opened(tmp_path) as store:
            email_key = await store.secret("email")
            assert isinstance(email_key, bytes) and len(email_key) == 32
            assert await store.secret("email") == email_key
            assert await store.secret("cookie") not in (email_key, b"")
            racing = await gatherResults([store.secret("race"), store.secret("race"), store.secret("race")])
            assert len(set(racing)) == 1
