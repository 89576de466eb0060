"""The store contract: tests written once that every `IStore` must pass, and sample records for tests.

A test module subclasses `StoreContract` (or `DurableStoreContract`, for a store that survives a restart)
as `Test...` and says how to open its store in a directory; pytest collects the inherited tests. Times are
whole numbers of seconds, so that due times compare exactly.
"""

from __future__ import annotations

import ipaddress
import random
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from zope.interface.verify import verifyObject

from vchat.store.account_testing import AccountContract, store_test
from vchat.store.interface import AlreadyResolved, IStore, StoreError
from vchat.store.records import (
    Ban,
    BanTarget,
    Flag,
    NewBan,
    NewFlag,
    NewReport,
    Report,
    Snapshot,
    ban_network,
    plain_address,
)


def jpeg(marker: bytes = b"", size: int = 64) -> Snapshot:
    """A JPEG snapshot of about `size` bytes that holds `marker` (its bytes are not a real image)."""
    filler = bytes(range(256)) * (size // 256 + 1)
    return Snapshot("image/jpeg", b"\xff\xd8\xff\xe0" + marker + filler[:size] + marker + b"\xff\xd9")


def png(marker: bytes = b"") -> Snapshot:
    """A PNG snapshot that holds `marker`."""
    return Snapshot("image/png", b"\x89PNG\r\n\x1a\n" + marker + b"IEND")


def a_ban(**changes: Any) -> NewBan:
    """A two-week harassment ban of user u-1, with `changes`."""
    fields: dict[str, Any] = {
        "target": BanTarget("user_id", "u-1"),
        "category": "harassment",
        "reason": "insults",
        "source": "moderator",
        "created_at": 1000.0,
        "ends_at": 1000.0 + 14 * 86400,
    }
    return NewBan(**{**fields, **changes})


def a_report(**changes: Any) -> NewReport:
    """A report by u-2 of u-1 for spam, with `changes`."""
    fields: dict[str, Any] = {
        "reporter_user_id": "u-2",
        "reporter_device_id": "d-2",
        "reported_user_id": "u-1",
        "reported_device_id": "d-1",
        "reported_ip": "203.0.113.7",
        "reported_client": {"browser": "firefox", "version": 128, "mobile": False},
        "reason": "spam",
        "comment": None,
        "created_at": 1000.0,
    }
    return NewReport(**{**fields, **changes})


def a_flag(**changes: Any) -> NewFlag:
    """A flag of u-1 by the "many-reports" rule, with `changes`."""
    fields: dict[str, Any] = {
        "user_id": "u-1",
        "device_id": "d-1",
        "rule": "many-reports",
        "summary": {"reports": 5, "window": "1h"},
        "created_at": 1000.0,
    }
    return NewFlag(**{**fields, **changes})


def ip_ban(network: str, **changes: Any) -> NewBan:
    """A ban of an address or network."""
    return a_ban(target=BanTarget("ip", network), **changes)


def ids(records: list[Ban] | list[Report] | list[Flag]) -> list[str]:
    """The ids of `records`, in order."""
    return [record.id for record in records]


class StoreContract(AccountContract, ABC):
    """What every store must do. Subclasses say how to open one in a directory (empty at first)."""

    @abstractmethod
    async def open_store(self, directory: Path) -> IStore:
        """Open the store under test, kept in `directory` if it keeps anything."""

    @asynccontextmanager
    async def opened(self, directory: Path) -> AsyncIterator[IStore]:
        """The store, open for the block, then closed."""
        store = await self.open_store(directory)
        try:
            yield store
        finally:
            await store.close()

    @store_test
    async def test_provides_the_interface(self, tmp_path: Path) -> None:
        async with self.opened(tmp_path) as store:
            assert verifyObject(IStore, store)

    @store_test
    async def test_a_ban_round_trips(self, tmp_path: Path) -> None:
        async with self.opened(tmp_path) as store:
            ban = a_ban(category="chat_abuse", messages=("first", "zweite 🙂", ""))
            stored = await store.add_ban(ban, None)
            assert re.fullmatch(r"[A-Za-z0-9_-]{16,}", stored.id)
            assert stored == Ban.of(ban, id=stored.id)
            assert await store.get_ban(stored.id) == stored
            permanent = await store.add_ban(ip_ban("2001:DB8::1", ends_at=None, source="rule"), None)
            assert permanent.id != stored.id
            assert permanent.target.value == "2001:db8::1/128"
            assert await store.get_ban(permanent.id) == permanent
            assert await store.get_ban("no-such-ban") is None

    @store_test
    async def test_a_stored_ban_is_no_new_ban(self, tmp_path: Path) -> None:
        async with self.opened(tmp_path) as store:
            stored = await store.add_ban(a_ban(), None)
            with pytest.raises(TypeError):
                await store.add_ban(stored, None)

    @store_test
    async def test_a_ban_keeps_its_snapshot(self, tmp_path: Path) -> None:
        async with self.opened(tmp_path) as store:
            with_jpeg = await store.add_ban(a_ban(), jpeg(b"face"))
            with_png = await store.add_ban(a_ban(), png(b"face"))
            without = await store.add_ban(a_ban(), None)
            assert with_jpeg.has_snapshot and with_png.has_snapshot and not without.has_snapshot
            assert await store.ban_snapshot(with_jpeg.id) == jpeg(b"face")
            assert await store.ban_snapshot(with_png.id) == png(b"face")
            assert await store.ban_snapshot(without.id) is None
            assert await store.ban_snapshot("no-such-ban") is None

    @store_test
    async def test_a_ban_is_over_at_its_end(self, tmp_path: Path) -> None:
        async with self.opened(tmp_path) as store:
            timed = await store.add_ban(a_ban(created_at=1000.0, ends_at=2000.0), None)
            permanent = await store.add_ban(a_ban(created_at=900.0, ends_at=None), None)
            assert timed.active_at(1999.5) and not timed.active_at(2000.0)
            assert ids(await store.find_active_bans(1999.5, "u-1", None, None)) == [timed.id, permanent.id]
            assert ids(await store.find_active_bans(2000.0, "u-1", None, None)) == [permanent.id]
            assert ids(await store.list_bans(True, 1999.5, 10)) == [timed.id, permanent.id]
            assert ids(await store.list_bans(True, 2000.0, 10)) == [permanent.id]
            assert ids(await store.list_bans(False, 2000.0, 10)) == [timed.id]
            assert ids(await store.list_bans(True, 1e12, 10)) == [permanent.id]

    @store_test
    async def test_every_active_ban_oldest_first(self, tmp_path: Path) -> None:
        async with self.opened(tmp_path) as store:
            assert await store.active_bans(1000.0) == []
            timed = await store.add_ban(a_ban(created_at=1000.0, ends_at=2000.0), None)
            permanent = await store.add_ban(ip_ban("10.0.0.0/8", created_at=900.0, ends_at=None), None)
            lifted = await store.add_ban(a_ban(created_at=800.0, ends_at=None), None)
            await store.end_ban(lifted.id, 1100.0)
            assert await store.active_bans(1500.0) == [permanent, timed]
            assert await store.active_bans(2000.0) == [permanent]

    @store_test
    async def test_lifting_a_ban(self, tmp_path: Path) -> None:
        async with self.opened(tmp_path) as store:
            ban = await store.add_ban(a_ban(created_at=1000.0, ends_at=2000.0), jpeg(b"face"))
            lifted = await store.end_ban(ban.id, 1500.0)
            assert lifted == replace(ban, ended_at=1500.0, has_snapshot=False)
            assert await store.get_ban(ban.id) == lifted
            assert await store.ban_snapshot(ban.id) is None
            assert await store.find_active_bans(1500.0, "u-1", None, None) == []
            assert ids(await store.list_bans(False, 1500.0, 10)) == [ban.id]
            assert await store.end_ban(ban.id, 1600.0) == lifted  # lifted once, at the first time
            assert await store.end_ban("no-such-ban", 1600.0) is None

    @store_test
    async def test_lifting_a_ban_that_is_over_changes_only_its_snapshot(self, tmp_path: Path) -> None:
        async with self.opened(tmp_path) as store:
            ban = await store.add_ban(a_ban(created_at=1000.0, ends_at=2000.0), jpeg(b"face"))
            assert await store.end_ban(ban.id, 2000.0) == replace(ban, has_snapshot=False)
            assert await store.ban_snapshot(ban.id) is None

    @store_test
    async def test_bans_by_user_and_by_device(self, tmp_path: Path) -> None:
        async with self.opened(tmp_path) as store:
            user = await store.add_ban(a_ban(target=BanTarget("user_id", "same"), created_at=1.0), None)
            device = await store.add_ban(a_ban(target=BanTarget("device_id", "same"), created_at=2.0), None)
            assert ids(await store.find_active_bans(10.0, "same", None, None)) == [user.id]
            assert ids(await store.find_active_bans(10.0, None, None, "same")) == [device.id]
            assert ids(await store.find_active_bans(10.0, "same", None, "same")) == [device.id, user.id]
            assert await store.find_active_bans(10.0, "other", None, "other") == []
            assert await store.find_active_bans(10.0, None, None, None) == []

    @store_test
    async def test_bans_by_address_and_network(self, tmp_path: Path) -> None:
        async with self.opened(tmp_path) as store:
            bans = {
                network: await store.add_ban(ip_ban(network), None)
                for network in (
                    "203.0.113.0/24",
                    "198.51.100.7",
                    "2001:db8::/32",
                    "2001:db8:ffff::1",
                    "::ffff:192.0.2.0/120",  # IPv4-mapped: 192.0.2.0/24
                    "10.1.2.3/8",  # host bits ignored: 10.0.0.0/8
                )
            }
            assert bans["::ffff:192.0.2.0/120"].target.value == "192.0.2.0/24"
            assert bans["10.1.2.3/8"].target.value == "10.0.0.0/8"
            expected = {
                "203.0.113.0": ["203.0.113.0/24"],
                "203.0.113.255": ["203.0.113.0/24"],
                "::ffff:203.0.113.9": ["203.0.113.0/24"],
                "203.0.114.0": [],
                "203.0.112.255": [],
                "198.51.100.7": ["198.51.100.7"],
                "::ffff:198.51.100.7": ["198.51.100.7"],
                "198.51.100.8": [],
                "192.0.2.200": ["::ffff:192.0.2.0/120"],
                "10.200.0.1": ["10.1.2.3/8"],
                "11.0.0.0": [],
                "2001:db8::": ["2001:db8::/32"],
                "2001:db8:ffff::1": ["2001:db8::/32", "2001:db8:ffff::1"],
                "2001:db8:ffff::2": ["2001:db8::/32"],
                "2001:db9::": [],
                "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff": [],
            }
            for address, networks in expected.items():
                found = await store.find_active_bans(1500.0, None, address, None)
                assert sorted(ids(found)) == sorted(bans[network].id for network in networks), address

    @store_test
    async def test_ipv6_networks_do_not_bar_ipv4_clients(self, tmp_path: Path) -> None:
        async with self.opened(tmp_path) as store:
            everything6 = await store.add_ban(ip_ban("::/0"), None)
            assert await store.find_active_bans(1500.0, None, "192.0.2.1", None) == []
            assert await store.find_active_bans(1500.0, None, "::ffff:192.0.2.1", None) == []
            assert ids(await store.find_active_bans(1500.0, None, "2001:db8::1", None)) == [everything6.id]
            everything4 = await store.add_ban(ip_ban("0.0.0.0/0"), None)
            assert ids(await store.find_active_bans(1500.0, None, "::ffff:192.0.2.1", None)) == [
                everything4.id
            ]
            assert ids(await store.find_active_bans(1500.0, None, "::1", None)) == [everything6.id]

    @store_test
    async def test_ip_bans_match_as_ipaddress_does(self, tmp_path: Path) -> None:
        """Networks and addresses drawn close together, so that many contain each other."""
        rng = random.Random(20240521)

        def address() -> str:
            if rng.random() < 0.5:
                v4 = ipaddress.IPv4Address(0x0A000000 + rng.getrandbits(12))
                return f"::ffff:{v4}" if rng.random() < 0.3 else str(v4)
            return str(ipaddress.IPv6Address(0x20010DB8 << 96 | rng.getrandbits(12)))

        def network() -> str:
            where = address()
            version = plain_address(where).version
            prefix = rng.randint(20, 32) if version == 4 else rng.randint(116, 128)
            if where.startswith("::ffff:"):
                prefix += 96
            return f"{where}/{prefix}"

        async with self.opened(tmp_path) as store:
            bans = [await store.add_ban(ip_ban(network()), None) for _ in range(40)]
            for _ in range(60):
                query = address()
                client = plain_address(query)
                expected = sorted(
                    ban.id
                    for ban in bans
                    if ban.target.network.version == client.version
                    and client in ban_network(ban.target.value)
                )
                assert sorted(ids(await store.find_active_bans(1500.0, None, query, None))) == expected, query

    @store_test
    async def test_a_malformed_address_is_refused(self, tmp_path: Path) -> None:
        async with self.opened(tmp_path) as store:
            with pytest.raises(ValueError):
                await store.find_active_bans(1500.0, None, "not-an-address", None)

    @store_test
    async def test_bans_by_any_identity_newest_first(self, tmp_path: Path) -> None:
        async with self.opened(tmp_path) as store:
            by_device = await store.add_ban(a_ban(target=BanTarget("device_id", "d-1"), created_at=3.0), None)
            by_ip = await store.add_ban(ip_ban("203.0.113.0/24", created_at=2.0), None)
            by_user = await store.add_ban(a_ban(created_at=1.0), None)
            await store.add_ban(a_ban(target=BanTarget("user_id", "u-9"), created_at=4.0), None)
            found = await store.find_active_bans(10.0, "u-1", "203.0.113.7", "d-1")
            assert ids(found) == [by_device.id, by_ip.id, by_user.id]

    @store_test
    async def test_listing_bans(self, tmp_path: Path) -> None:
        async with self.opened(tmp_path) as store:
            ends = (101.0, 200.0, 101.5, None, 102.0)
            bans = [
                await store.add_ban(a_ban(created_at=float(start), ends_at=end), None)
                for start, end in enumerate(ends, start=1)
            ]
            newest_first = ids(bans[::-1])
            assert ids(await store.list_bans(None, 0.0, 10)) == newest_first
            assert ids(await store.list_bans(None, 0.0, 2)) == newest_first[:2]
            assert await store.list_bans(None, 0.0, 0) == []
            assert ids(await store.list_bans(True, 102.0, 10)) == [bans[3].id, bans[1].id]
            assert ids(await store.list_bans(False, 102.0, 10)) == [bans[4].id, bans[2].id, bans[0].id]
            assert ids(await store.list_bans(False, 102.0, 1)) == [bans[4].id]
            with pytest.raises(ValueError):
                await store.list_bans(None, 0.0, -1)

    @store_test
    async def test_a_report_round_trips(self, tmp_path: Path) -> None:
        async with self.opened(tmp_path) as store:
            report = a_report(
                reported_ip="::ffff:203.0.113.7",
                reported_client={
                    "browser": "firefox",
                    "version": 128,
                    "ratio": 1.5,
                    "mobile": False,
                    "gpu": None,
                },
                comment="shouted at me",
                reporter_device_id=None,
            )
            stored = await store.add_report(report, png(b"face"))
            assert stored == Report.of(report, id=stored.id, has_snapshot=True)
            assert stored.reported_ip == "203.0.113.7" and stored.status == "open"
            assert await store.get_report(stored.id) == stored
            assert await store.report_snapshot(stored.id) == png(b"face")
            bare = await store.add_report(a_report(), None)
            assert not bare.has_snapshot and await store.report_snapshot(bare.id) is None
            assert await store.get_report("no-such-report") is None
            assert await store.report_snapshot("no-such-report") is None

    @store_test
    async def test_listing_reports_oldest_first(self, tmp_path: Path) -> None:
        async with self.opened(tmp_path) as store:
            reports = [await store.add_report(a_report(created_at=float(t)), None) for t in (3, 1, 2)]
            oldest_first = [reports[1].id, reports[2].id, reports[0].id]
            assert ids(await store.list_reports("open", 10)) == oldest_first
            assert ids(await store.list_reports("open", 2)) == oldest_first[:2]
            await store.resolve_report(reports[1].id, 5.0, None)
            assert ids(await store.list_reports("open", 10)) == oldest_first[1:]
            assert ids(await store.list_reports("dismissed", 10)) == [reports[1].id]
            assert await store.list_reports("banned", 10) == []

    @store_test
    async def test_banning_for_a_report(self, tmp_path: Path) -> None:
        async with self.opened(tmp_path) as store:
            report = await store.add_report(a_report(reason="nudity"), jpeg(b"face"))
            ban = a_ban(category="nudity", created_at=1200.0, ends_at=5000.0)
            resolved = await store.resolve_report(report.id, 1200.0, ban)
            assert resolved is not None and resolved.ban_id is not None
            assert resolved == replace(
                report, status="banned", resolved_at=1200.0, ban_id=resolved.ban_id, has_snapshot=False
            )
            assert await store.get_report(report.id) == resolved
            assert await store.report_snapshot(report.id) is None
            stored = await store.get_ban(resolved.ban_id)
            assert stored == Ban.of(ban, id=resolved.ban_id, report_id=report.id, has_snapshot=True)
            assert await store.ban_snapshot(resolved.ban_id) == jpeg(b"face")
            assert ids(await store.list_reports("banned", 10)) == [report.id]
            with pytest.raises(AlreadyResolved):
                await store.resolve_report(report.id, 1300.0, None)
            with pytest.raises(AlreadyResolved):
                await store.resolve_report(report.id, 1300.0, ban)
            assert ids(await store.list_bans(None, 1300.0, 10)) == [resolved.ban_id]
            assert await store.resolve_report("no-such-report", 1300.0, ban) is None
            assert ids(await store.list_bans(None, 1300.0, 10)) == [resolved.ban_id]

    @store_test
    async def test_banning_for_a_report_without_snapshot(self, tmp_path: Path) -> None:
        async with self.opened(tmp_path) as store:
            report = await store.add_report(a_report(), None)
            resolved = await store.resolve_report(report.id, 1200.0, a_ban())
            assert resolved is not None and resolved.ban_id is not None
            ban = await store.get_ban(resolved.ban_id)
            assert ban is not None and not ban.has_snapshot and ban.report_id == report.id

    @store_test
    async def test_dismissing_a_report(self, tmp_path: Path) -> None:
        async with self.opened(tmp_path) as store:
            report = await store.add_report(a_report(), jpeg(b"face"))
            resolved = await store.resolve_report(report.id, 1200.0, None)
            assert resolved == replace(report, status="dismissed", resolved_at=1200.0, has_snapshot=False)
            assert await store.get_report(report.id) == resolved
            assert await store.report_snapshot(report.id) is None
            assert await store.list_bans(None, 1200.0, 10) == []
            with pytest.raises(AlreadyResolved):
                await store.resolve_report(report.id, 1300.0, None)

    @store_test
    async def test_flags(self, tmp_path: Path) -> None:
        async with self.opened(tmp_path) as store:
            later = await store.add_flag(a_flag(created_at=2.0, device_id=None))
            earlier = await store.add_flag(a_flag(created_at=1.0, summary={"ratio": 0.5, "new": True}))
            assert later == Flag.of(a_flag(created_at=2.0, device_id=None), id=later.id)
            assert await store.get_flag(earlier.id) == earlier
            assert await store.get_flag("no-such-flag") is None
            assert ids(await store.list_flags("open", 10)) == [earlier.id, later.id]
            assert ids(await store.list_flags("open", 1)) == [earlier.id]
            resolved = await store.resolve_flag(earlier.id, 5.0)
            assert resolved == replace(earlier, status="resolved", resolved_at=5.0)
            assert await store.get_flag(earlier.id) == resolved
            assert ids(await store.list_flags("open", 10)) == [later.id]
            assert ids(await store.list_flags("resolved", 10)) == [earlier.id]
            with pytest.raises(AlreadyResolved):
                await store.resolve_flag(earlier.id, 6.0)
            assert await store.resolve_flag("no-such-flag", 6.0) is None

    @store_test
    async def test_purge_deletes_exactly_what_is_due(self, tmp_path: Path) -> None:
        async with self.opened(tmp_path) as store:
            assert await store.purge(0.0, 100.0) is None
            old_report = await store.add_report(a_report(created_at=1000.0), jpeg(b"r1"))
            await store.add_report(a_report(created_at=1050.0), None)
            new_report = await store.add_report(a_report(created_at=1020.0), jpeg(b"r3"))
            timed = await store.add_ban(a_ban(created_at=1000.0, ends_at=1110.0), jpeg(b"b1"))
            permanent = await store.add_ban(a_ban(created_at=1000.0, ends_at=None), jpeg(b"b2"))
            await store.add_ban(a_ban(created_at=1000.0, ends_at=1050.0), None)
            assert await store.purge(1000.0, 100.0) == 1100.0
            assert await store.purge(1099.5, 100.0) == 1100.0
            assert await store.report_snapshot(old_report.id) == jpeg(b"r1")
            assert await store.purge(1100.0, 100.0) == 1110.0
            assert await store.report_snapshot(old_report.id) is None
            assert await store.get_report(old_report.id) == replace(old_report, has_snapshot=False)
            assert await store.ban_snapshot(timed.id) == jpeg(b"b1")
            assert await store.purge(1110.0, 100.0) == 1120.0
            assert await store.ban_snapshot(timed.id) is None
            assert await store.get_ban(timed.id) == replace(timed, has_snapshot=False)
            assert await store.purge(1120.0, 100.0) is None
            assert await store.report_snapshot(new_report.id) is None
            assert await store.ban_snapshot(permanent.id) == jpeg(b"b2")
            assert len(await store.list_bans(None, 1120.0, 10)) == 3
            assert len(await store.list_reports("open", 10)) == 3

    @store_test
    async def test_a_banned_report_s_snapshot_lasts_as_long_as_the_ban(self, tmp_path: Path) -> None:
        async with self.opened(tmp_path) as store:
            report = await store.add_report(a_report(created_at=1000.0), jpeg(b"face"))
            resolved = await store.resolve_report(report.id, 1010.0, a_ban(created_at=1010.0, ends_at=5000.0))
            assert resolved is not None and resolved.ban_id is not None
            assert await store.purge(1200.0, 100.0) == 5000.0  # the report's retention no longer applies
            assert await store.ban_snapshot(resolved.ban_id) == jpeg(b"face")
            assert await store.purge(5000.0, 100.0) is None
            assert await store.ban_snapshot(resolved.ban_id) is None

    @store_test
    async def test_a_lifted_ban_s_snapshot_is_not_due_again(self, tmp_path: Path) -> None:
        async with self.opened(tmp_path) as store:
            ban = await store.add_ban(a_ban(created_at=1000.0, ends_at=5000.0), jpeg(b"face"))
            assert await store.purge(1000.0, 100.0) == 5000.0
            await store.end_ban(ban.id, 2000.0)
            assert await store.purge(2000.0, 100.0) is None

    @store_test
    async def test_a_closed_store_refuses_calls(self, tmp_path: Path) -> None:
        store = await self.open_store(tmp_path)
        await store.close()
        with pytest.raises(StoreError):
            await store.get_ban("any")
        with pytest.raises(StoreError):
            await store.add_flag(a_flag())
        await store.close()


class DurableStoreContract(StoreContract):
    """What a store that keeps its records in a directory must also do: survive a restart."""

    async def reopen(self, store: IStore, directory: Path) -> IStore:
        """Close `store` and open it again, as a restarted server would."""
        await store.close()
        return await self.open_store(directory)

    @store_test
    async def test_everything_survives_a_restart(self, tmp_path: Path) -> None:
        store = await self.open_store(tmp_path)
        try:
            user = await store.add_ban(a_ban(category="chat_abuse", messages=("hello",)), jpeg(b"b"))
            network = await store.add_ban(ip_ban("2001:db8::/48", ends_at=None), None)
            lifted = await store.end_ban((await store.add_ban(a_ban(), None)).id, 1500.0)
            open_report = await store.add_report(a_report(comment="rude"), png(b"r"))
            dismissed = await store.resolve_report((await store.add_report(a_report(), None)).id, 1.0, None)
            banned = await store.resolve_report(
                (await store.add_report(a_report(), jpeg(b"moved"))).id, 2.0, a_ban()
            )
            open_flag = await store.add_flag(a_flag())
            resolved_flag = await store.resolve_flag((await store.add_flag(a_flag())).id, 3.0)
            assert lifted and dismissed and banned and banned.ban_id and resolved_flag
            moved = await store.get_ban(banned.ban_id)

            store = await self.reopen(store, tmp_path)

            for ban in (user, network, lifted, moved):
                assert ban is not None and await store.get_ban(ban.id) == ban
            for report in (open_report, dismissed, banned):
                assert await store.get_report(report.id) == report
            for flag in (open_flag, resolved_flag):
                assert await store.get_flag(flag.id) == flag
            assert await store.ban_snapshot(user.id) == jpeg(b"b")
            assert await store.ban_snapshot(banned.ban_id) == jpeg(b"moved")
            assert await store.report_snapshot(open_report.id) == png(b"r")
            found = await store.find_active_bans(1500.0, "u-1", "2001:db8:0:1::5", None)
            assert sorted(ids(found)) == sorted([user.id, network.id, banned.ban_id])
        finally:
            await store.close()

    @store_test
    async def test_snapshots_due_while_closed_are_purged_after_a_restart(self, tmp_path: Path) -> None:
        store = await self.open_store(tmp_path)
        try:
            ban = await store.add_ban(a_ban(created_at=1000.0, ends_at=1100.0), jpeg(b"b"))
            report = await store.add_report(a_report(created_at=1000.0), png(b"r"))
            assert await store.purge(1000.0, 50.0) == 1050.0

            store = await self.reopen(store, tmp_path)

            assert await store.purge(2000.0, 50.0) is None
            assert await store.ban_snapshot(ban.id) is None
            assert await store.report_snapshot(report.id) is None
            assert await store.get_ban(ban.id) == replace(ban, has_snapshot=False)
            assert await store.get_report(report.id) == replace(report, has_snapshot=False)
        finally:
            await store.close()
