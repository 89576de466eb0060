"""Client addresses: the client behind trusted proxies, the country a trusted proxy vouches for, and the key an
address is counted under (IPv6 per /64, since one subscriber gets a whole /64)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from socket import AF_INET6, inet_pton

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_NOT_COUNTRIES = frozenset({"XX", "T1"})  # Cloudflare's "unknown" and "Tor"


def proxy_network(value: object) -> Network:
    """A trusted proxy's address or network, as an option value."""
    if not isinstance(value, str):
        raise ValueError("expected an address or network such as 10.0.0.0/8")
    return ipaddress.ip_network(value, strict=False)


def unmap_ipv4(host: str) -> str:
    """The IPv4 address inside an IPv4-mapped IPv6 address ("::ffff:192.0.2.1"), else `host` unchanged."""
    if host[:7].lower() == "::ffff:" and "." in host:
        return host[7:]
    return host


def address_key(host: str) -> str | bytes:
    """The key an address is counted or limited under: the IPv4 address, or the /64 an IPv6 address is in."""
    if ":" not in host:
        return host
    host = unmap_ipv4(host)
    if ":" not in host:
        return host
    try:
        return inet_pton(AF_INET6, host.split("%", 1)[0])[:8]
    except OSError:
        return host


def _plain(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_trusted(peer: str, trusted: Iterable[Network]) -> bool:
    """Whether `peer` (the other end of the TCP connection) is one of the trusted proxies."""
    ip = _plain(peer)
    return ip is not None and any(ip in network for network in trusted)


def client_address(peer: str, forwarded_for: str | None, trusted: Iterable[Network]) -> str:
    """The client's address: `peer`, unless `peer` is a trusted proxy, then the nearest untrusted hop of
    X-Forwarded-For (clients can forge the header's left part, so it is read from the right)."""
    networks = tuple(trusted)
    current = _plain(peer)
    if current is None:
        return peer
    hops = [hop for hop in (forwarded_for or "").split(",") if hop.strip()]
    while hops and any(current in network for network in networks):
        previous = _plain(hops.pop())
        if previous is None:
            break
        current = previous
    return str(current)


def proxy_country(header: str | None) -> str | None:
    """The country in a trusted proxy's CF-IPCountry header (Cloudflare), if it names one."""
    if header is None:
        return None
    code = header.strip().upper()
    if len(code) != 2 or not code.isascii() or not code.isalpha() or code in _NOT_COUNTRIES:
        return None
    return code


class AddressCounter:
    """How many connections each address key holds; refuses one more than `limit` (0: no limit)."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._counts: dict[str | bytes, int] = {}

    def __len__(self) -> int:
        return len(self._counts)

    def acquire(self, key: str | bytes) -> bool:
        """Count one more connection under `key`, unless that would pass the limit."""
        held = self._counts.get(key, 0)
        if self._limit and held >= self._limit:
            return False
        self._counts[key] = held + 1
        return True

    def release(self, key: str | bytes) -> None:
        """One connection under `key` is gone."""
        held = self._counts.pop(key, 0) - 1
        if held > 0:
            self._counts[key] = held
