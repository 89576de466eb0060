"""The index of active bans, against a brute-force reference: a list of bans checked with `ipaddress`."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from vchat.moderation.banlist import BanList, bars
from vchat.store.records import Ban, BanTarget, NewBan, new_id


def ban(kind: str, value: str, ends_at: float | None = 2000.0, created_at: float = 1000.0) -> Ban:
    new = NewBan(
        target=BanTarget(kind, value),  # type: ignore[arg-type]
        category="other",
        reason="because",
        source="moderator",
        created_at=created_at,
        ends_at=ends_at,
    )
    return Ban.of(new, id=new_id())


def test_each_kind_of_target() -> None:
    bans = BanList()
    user, device = ban("user_id", "u-1"), ban("device_id", "d-1")
    v4, net4, net6 = ban("ip", "192.0.2.7"), ban("ip", "198.51.100.0/24"), ban("ip", "2001:db8:1:2::/64")
    for each in (user, device, v4, net4, net6):
        bans.add(each)
    assert len(bans) == 5
    assert bans.match(1500.0, "u-1", None, None) is user
    assert bans.match(1500.0, None, None, "d-1") is device
    assert bans.match(1500.0, None, "192.0.2.7", None) is v4
    assert bans.match(1500.0, None, "::ffff:192.0.2.7", None) is v4
    assert bans.match(1500.0, None, "192.0.2.8", None) is None
    assert bans.match(1500.0, None, "198.51.100.255", None) is net4
    assert bans.match(1500.0, None, "198.51.101.0", None) is None
    assert bans.match(1500.0, None, "2001:db8:1:2:ffff::1", None) is net6
    assert bans.match(1500.0, None, "2001:db8:1:3::1", None) is None
    assert bans.match(1500.0, "u-2", "not an address", "d-2") is None
    assert bans.match(1500.0, None, None, None) is None


def test_the_longest_ban_wins_and_ended_ones_do_not_count() -> None:
    bans = BanList()
    short, long = ban("user_id", "u", ends_at=1100.0), ban("device_id", "d", ends_at=3000.0)
    for each in (short, long):
        bans.add(each)
    assert bans.match(1050.0, "u", None, "d") is long
    permanent = ban("ip", "10.0.0.0/8", ends_at=None)
    bans.add(permanent)
    assert bans.match(1050.0, "u", "10.1.2.3", "d") is permanent
    assert bans.match(1100.0, "u", None, None) is None  # its end is not in it
    assert bans.next_end() == 1100.0
    assert bans.expire(1100.0) == [short]
    assert short.id not in bans and len(bans) == 2
    assert bans.expire(5000.0) == [long]
    assert bans.next_end() is None
    assert bans.match(9e9, "u", "10.1.2.3", "d") is permanent


def test_remove() -> None:
    bans = BanList()
    one, two = ban("ip", "10.0.0.0/8"), ban("ip", "10.0.0.0/8")
    bans.add(one)
    bans.add(two)
    assert bans.remove(one.id) is one
    assert bans.remove(one.id) is None
    assert bans.match(1500.0, None, "10.0.0.1", None) is two
    assert bans.remove(two.id) is two
    assert bans.match(1500.0, None, "10.0.0.1", None) is None
    assert bans.expire(9e9) == []  # removed bans leave nothing to expire


NETWORKS = ["0.0.0.0/0", "10.0.0.0/8", "10.1.0.0/16", "10.1.2.3", "::/0", "2001:db8::/32", "2001:db8::/64",
            "2001:db8::1", "::ffff:10.1.0.0/112", "192.0.2.0/31"]  # fmt: skip
ADDRESSES = ["10.1.2.3", "10.1.2.4", "10.2.0.1", "192.0.2.1", "192.0.2.2", "2001:db8::1", "2001:db8::2:1",
             "2001:db8:1::1", "::ffff:10.1.2.3", "::1"]  # fmt: skip
targets = st.one_of(
    st.tuples(st.just("ip"), st.sampled_from(NETWORKS)),
    st.tuples(st.sampled_from(["user_id", "device_id"]), st.sampled_from(["a", "b"])),
)
bans_ = st.builds(
    lambda target, ends_at: ban(*target, ends_at=ends_at),
    targets,
    st.none() | st.sampled_from([1100.0, 1200.0, 1300.0]),
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), bans_),
        st.tuples(st.just("remove"), st.integers(0, 20)),
        st.tuples(st.just("expire"), st.sampled_from([1050.0, 1100.0, 1250.0])),
    ),
    max_size=25,
)
queries = st.tuples(
    st.sampled_from([1000.0, 1100.0, 1150.0, 1299.0, 1300.0]),
    st.none() | st.sampled_from(["a", "b"]),
    st.none() | st.sampled_from(ADDRESSES),
    st.none() | st.sampled_from(["a", "b"]),
)


def reference_bars(each: Ban, user_id: str | None, ip: str | None, device_id: str | None) -> bool:
    """Whether `each` bars the identities, by `ipaddress` alone."""
    kind, value = each.target.kind, each.target.value
    if kind == "user_id":
        return user_id == value
    if kind == "device_id":
        return device_id == value
    if ip is None:
        return False
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    network = ipaddress.ip_network(value)
    return address.version == network.version and address in network


def rank(each: Ban) -> float:
    return float("inf") if each.ends_at is None else each.ends_at


@given(operations, st.lists(queries, min_size=1, max_size=8))
def test_the_index_agrees_with_a_brute_force_reference(ops: list, checks: list) -> None:
    index, reference = BanList(), {}
    expired_by = 0.0
    for op, arg in ops:
        if op == "add":
            index.add(arg)
            reference[arg.id] = arg
        elif op == "remove" and reference:
            ban_id = sorted(reference)[arg % len(reference)]
            assert index.remove(ban_id) is reference.pop(ban_id)
        elif op == "expire":
            index.expire(arg)
            expired_by = max(expired_by, arg)
            reference = {i: b for i, b in reference.items() if b.active_at(arg)}
    assert len(index) == len(reference)
    for now, user_id, ip, device_id in checks:
        if now < expired_by:
            continue  # the index has forgotten bans that ended by then: it answers for now onwards
        candidates = [
            b for b in reference.values() if b.active_at(now) and reference_bars(b, user_id, ip, device_id)
        ]
        found = index.match(now, user_id, ip, device_id)
        if not candidates:
            assert found is None
        else:
            assert found is not None and found in candidates
            assert rank(found) == max(rank(b) for b in candidates)
        for each in reference.values():
            assert bars(each, user_id, ip, device_id) == reference_bars(each, user_id, ip, device_id)
