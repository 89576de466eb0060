"""Client addresses: behind trusted proxies, the country a proxy vouches for, keys per /64, and the count per key."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vchat.addresses import (
    AddressCounter,
    address_key,
    client_address,
    is_trusted,
    proxy_country,
    proxy_network,
)

PROXIES = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("10.0.0.0/8"))


@pytest.mark.parametrize(
    ("peer", "header", "expected"),
    [
        ("198.51.100.7", "203.0.113.9", "198.51.100.7"),  # not a proxy: the header is a client's claim
        ("127.0.0.1", "203.0.113.9", "203.0.113.9"),
        ("127.0.0.1", "1.2.3.4, 203.0.113.9, 10.0.0.2", "203.0.113.9"),  # read from the right
        ("127.0.0.1", None, "127.0.0.1"),
        ("127.0.0.1", "not-an-address", "127.0.0.1"),
        ("::ffff:127.0.0.1", "2001:db8::5", "2001:db8::5"),
        ("10.0.0.1", "10.0.0.2", "10.0.0.2"),  # only proxies: the last one named
    ],
)
def test_client_address(peer: str, header: str | None, expected: str) -> None:
    assert client_address(peer, header, PROXIES) == expected


def test_only_the_peer_itself_is_trusted_or_not() -> None:
    assert is_trusted("127.0.0.1", PROXIES) and is_trusted("::ffff:10.1.2.3", PROXIES)
    assert not is_trusted("198.51.100.7", PROXIES) and not is_trusted("nonsense", PROXIES)


@pytest.mark.parametrize(
    ("header", "country"),
    [
        ("DE", "DE"),
        ("fr", "FR"),
        (" JP ", "JP"),
        ("XX", None),
        ("T1", None),
        ("DEU", None),
        ("", None),
        (None, None),
    ],
)
def test_proxy_country(header: str | None, country: str | None) -> None:
    assert proxy_country(header) == country


def test_proxy_network_takes_addresses_and_networks() -> None:
    assert proxy_network("10.0.0.1/8") == ipaddress.ip_network("10.0.0.0/8")
    assert proxy_network("::1") == ipaddress.ip_network("::1/128")
    with pytest.raises(ValueError):
        proxy_network(8)


def test_address_keys_group_ipv6_by_64_and_unmap_ipv4() -> None:
    assert address_key("2001:db8:0:1::1") == address_key("2001:db8:0:1:ffff::2")
    assert address_key("2001:db8:0:1::1") != address_key("2001:db8:0:2::1")
    assert address_key("::ffff:192.0.2.1") == "192.0.2.1" == address_key("192.0.2.1")


def test_counter_refuses_past_the_limit_and_frees_at_once() -> None:
    counter = AddressCounter(2)
    assert counter.acquire("a") and counter.acquire("a") and not counter.acquire("a")
    assert counter.acquire("b")
    counter.release("a")
    assert counter.acquire("a")
    counter.release("a")
    counter.release("a")
    counter.release("b")
    assert len(counter) == 0
    unlimited = AddressCounter(0)
    assert all(unlimited.acquire("a") for _ in range(1000))


@given(st.lists(st.tuples(st.booleans(), st.sampled_from("abc")), max_size=200))
def test_counter_matches_a_plain_count(steps: list[tuple[bool, str]]) -> None:
    counter, held = AddressCounter(3), {"a": 0, "b": 0, "c": 0}
    for acquire, key in steps:
        if acquire:
            assert counter.acquire(key) == (held[key] < 3)
            held[key] = min(held[key] + 1, 3)
        elif held[key]:
            counter.release(key)
            held[key] -= 1
    assert len(counter) == sum(1 for count in held.values() if count)
