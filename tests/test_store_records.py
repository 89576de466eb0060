"""The store's records check themselves, and the IP keys a store indexes agree with `ipaddress`."""

from __future__ import annotations

import ipaddress
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vchat.store.records import (
    MAX_BAN_MESSAGES,
    MAX_SNAPSHOT_BYTES,
    Ban,
    BanTarget,
    Snapshot,
    address_key,
    ban_network,
    containing_lows,
    network_bounds,
    new_id,
    plain_address,
)
from vchat.store.testing import a_ban, a_flag, a_report


def test_snapshots_are_small_jpeg_or_png_images() -> None:
    Snapshot("image/jpeg", b"\xff\xd8\xff" + b"\0" * (MAX_SNAPSHOT_BYTES - 3))
    Snapshot("image/png", b"\x89PNG\r\n\x1a\n")
    for content_type, data in [
        ("image/jpeg", b"\xff\xd8\xff" + b"\0" * (MAX_SNAPSHOT_BYTES - 2)),
        ("image/jpeg", b""),
        ("image/jpeg", b"\x89PNG\r\n\x1a\n"),
        ("image/gif", b"GIF89a"),
    ]:
        with pytest.raises(ValueError):
            Snapshot(content_type, data)  # type: ignore[arg-type]
    assert "data" not in repr(Snapshot("image/png", b"\x89PNG\r\n\x1a\n"))


@pytest.mark.parametrize(
    ("given_value", "kept"),
    [
        ("203.0.113.7", "203.0.113.7/32"),
        (" 203.0.113.7/24 ", "203.0.113.0/24"),
        ("::ffff:203.0.113.7", "203.0.113.7/32"),
        ("::ffff:203.0.113.0/120", "203.0.113.0/24"),
        ("::ffff:0:0/96", "0.0.0.0/0"),
        ("::ffff:0:0/95", "::fffe:0:0/95"),  # wider than the mapped range: IPv6
        ("2001:DB8::1/32", "2001:db8::/32"),
    ],
)
def test_ip_targets_are_kept_as_networks(given_value: str, kept: str) -> None:
    assert BanTarget("ip", given_value).value == kept
    assert BanTarget("ip", given_value) == BanTarget("ip", kept)


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("ip", "not-an-address"),
        ("ip", "10.0.0.0/33"),
        ("user_id", ""),
        ("device_id", "x" * 129),
        ("name", "x"),
    ],
)
def test_bad_targets_are_refused(kind: Any, value: str) -> None:
    with pytest.raises(ValueError):
        BanTarget(kind, value)


def test_only_an_ip_target_has_a_network() -> None:
    assert BanTarget("ip", "10.0.0.0/8").network == ipaddress.ip_network("10.0.0.0/8")
    with pytest.raises(ValueError):
        _ = BanTarget("user_id", "u-1").network


def test_messages_are_kept_only_for_chat_abuse() -> None:
    assert a_ban(category="chat_abuse", messages=("hi",) * MAX_BAN_MESSAGES).messages[0] == "hi"
    for changes in [
        {"category": "harassment", "messages": ("hi",)},
        {"category": "chat_abuse", "messages": ("hi",) * (MAX_BAN_MESSAGES + 1)},
        {"category": "chat_abuse", "messages": ("x" * 1001,)},
        {"category": "chat_abuse", "messages": ["hi"]},
    ]:
        with pytest.raises(ValueError):
            a_ban(**changes)


@pytest.mark.parametrize(
    "changes",
    [
        {"category": "rudeness"},
        {"reason": ""},
        {"source": "someone"},
        {"created_at": math.nan},
        {"ends_at": math.inf},
        {"created_at": 100.0, "ends_at": 100.0},
        {"target": "u-1"},
    ],
)
def test_bad_bans_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        a_ban(**changes)


def test_a_ban_is_active_until_its_end_or_until_lifted() -> None:
    timed = Ban.of(a_ban(created_at=0.0, ends_at=10.0), id="b")
    assert timed.active_at(9.999) and not timed.active_at(10.0)
    assert timed.snapshot_due == 10.0
    lifted = Ban.of(a_ban(created_at=0.0, ends_at=10.0), id="b", ended_at=4.0)
    assert not lifted.active_at(5.0) and lifted.snapshot_due == 4.0
    permanent = Ban.of(a_ban(ends_at=None), id="b")
    assert permanent.active_at(1e18) and permanent.snapshot_due is None


def test_a_report_keeps_a_plain_address_and_a_copy_of_the_client_facts() -> None:
    facts = {"browser": "firefox", "gpu": None}
    report = a_report(reported_ip="::ffff:192.0.2.1", reported_client=facts)
    facts["browser"] = "changed"
    assert report.reported_ip == "192.0.2.1" and report.reported_client["browser"] == "firefox"


@pytest.mark.parametrize(
    "changes",
    [
        {"reported_ip": "somewhere"},
        {"reported_ip": "10.0.0.0/8"},
        {"comment": "x" * 501},
        {"comment": ""},
        {"reason": "boring"},
        {"reporter_user_id": ""},
        {"reported_client": {"nested": ["no"]}},
        {"reported_client": {"nan": math.nan}},
        {"reported_client": {"long": "x" * 129}},
        {"reported_client": {str(n): n for n in range(17)}},
    ],
)
def test_bad_reports_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        a_report(**changes)


@pytest.mark.parametrize(
    "changes", [{"rule": ""}, {"rule": "x" * 65}, {"summary": {"none": None}}, {"user_id": None}]
)
def test_bad_flags_are_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        a_flag(**changes)


def test_ids_are_random_and_url_safe() -> None:
    made = {new_id() for _ in range(100)}
    assert len(made) == 100
    assert all(len(made_id) == 22 and made_id.replace("-", "").replace("_", "").isalnum() for made_id in made)


@st.composite
def networks(draw: st.DrawFn) -> str:
    """A network near 10.0.0.0 or 2001:db8::, so that drawn addresses often fall in it; some IPv4-mapped."""
    if draw(st.booleans()):
        address = ipaddress.IPv4Address(0x0A000000 + draw(st.integers(0, 2**16 - 1)))
        prefix = draw(st.integers(0, 32))
        if draw(st.booleans()):
            return f"::ffff:{address}/{prefix + 96}"
        return f"{address}/{prefix}"
    address6 = ipaddress.IPv6Address((0x20010DB8 << 96) + draw(st.integers(0, 2**16 - 1)))
    return f"{address6}/{draw(st.integers(0, 128))}"


addresses = st.one_of(
    st.integers(0, 2**16 - 1).map(lambda n: str(ipaddress.IPv4Address(0x0A000000 + n))),
    st.integers(0, 2**16 - 1).map(lambda n: f"::ffff:{ipaddress.IPv4Address(0x0A000000 + n)}"),
    st.integers(0, 2**16 - 1).map(lambda n: str(ipaddress.IPv6Address((0x20010DB8 << 96) + n))),
    st.ip_addresses().map(str),
)


@settings(max_examples=300)
@given(networks(), addresses)
def test_index_keys_find_exactly_the_networks_that_hold_an_address(network: str, address: str) -> None:
    """What a store looks up (the network's first address among the address's candidate lows, and its last
    address not below the address) holds exactly when `ipaddress` says the network holds the address."""
    kept = ban_network(network)
    client = plain_address(address)
    low, high = network_bounds(kept)
    found = low in containing_lows(client) and high >= address_key(client)
    assert found == (kept.version == client.version and client in kept)
