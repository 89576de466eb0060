"""The active bans in memory, indexed so that a `hello` is checked at once, without waiting for the disk.

Pure Python: no Twisted, no clock; `now` is passed in. IP bans are indexed by their network's first address (as
the store keys it, IPv4 mapped into IPv6): an address finds the networks that can hold it with one lookup per
prefix length (`containing_lows`), and each candidate's last address decides.
"""

from __future__ import annotations

import heapq
from typing import TypeVar

from vchat.store.records import Address, Ban, address_key, containing_lows, network_bounds, plain_address

_K = TypeVar("_K", str, bytes)


def _latest_end(ban: Ban) -> tuple[bool, float]:
    """Sort key: permanent bans last (the greatest), then by end."""
    return (ban.ends_at is None, ban.ends_at or 0.0)


class BanList:
    """An index of bans by user id, device id and IP network; `match` answers who is barred at `now`."""

    def __init__(self) -> None:
        self._bans: dict[str, Ban] = {}
        self._users: dict[str, set[str]] = {}
        self._devices: dict[str, set[str]] = {}
        self._networks: dict[bytes, set[str]] = {}  # a network's first address -> ban ids
        self._highs: dict[str, bytes] = {}  # an IP ban's id -> its network's last address
        self._ends: list[tuple[float, str]] = []  # (end, ban id), a heap, for `expire`

    def __len__(self) -> int:
        return len(self._bans)

    def __contains__(self, ban_id: object) -> bool:
        return ban_id in self._bans

    def add(self, ban: Ban) -> None:
        """Index `ban` (again, if a ban with its id is indexed: the newer record wins)."""
        self.remove(ban.id)
        self._bans[ban.id] = ban
        target = ban.target
        if target.kind == "user_id":
            self._users.setdefault(target.value, set()).add(ban.id)
        elif target.kind == "device_id":
            self._devices.setdefault(target.value, set()).add(ban.id)
        else:
            low, high = network_bounds(target.network)
            self._networks.setdefault(low, set()).add(ban.id)
            self._highs[ban.id] = high
        if ban.ends_at is not None:
            heapq.heappush(self._ends, (ban.ends_at, ban.id))

    def remove(self, ban_id: str) -> Ban | None:
        """Drop the ban with this id from the index; returns it, or None if it was not indexed."""
        ban = self._bans.pop(ban_id, None)
        if ban is None:
            return None
        target = ban.target
        if target.kind == "ip":
            del self._highs[ban_id]
            _discard(self._networks, network_bounds(target.network)[0], ban_id)
        else:
            _discard(self._users if target.kind == "user_id" else self._devices, target.value, ban_id)
        return ban  # its entry in the end heap stays until `expire` meets it

    def match(self, now: float, user_id: str | None, ip: str | None, device_id: str | None) -> Ban | None:
        """The ban active at `now` that bars any of these identities and lasts longest (a permanent one first),
        or None; an `ip` that is not an address matches no IP ban."""
        found = [*self._users.get(user_id or "", ()), *self._devices.get(device_id or "", ())]
        address = _address(ip)
        if address is not None:
            key = address_key(address)
            for low in containing_lows(address):
                found += (ban_id for ban_id in self._networks.get(low, ()) if self._highs[ban_id] >= key)
        active = (self._bans[ban_id] for ban_id in found if self._bans[ban_id].active_at(now))
        return max(active, key=_latest_end, default=None)

    def expire(self, now: float) -> list[Ban]:
        """Drop the bans that have ended by `now`; returns them."""
        ended = []
        while self._ends and self._ends[0][0] <= now:
            ends_at, ban_id = heapq.heappop(self._ends)
            ban = self._bans.get(ban_id)
            if ban is not None and ban.ends_at == ends_at:
                self.remove(ban_id)
                ended.append(ban)
        return ended

    def next_end(self) -> float | None:
        """When the next indexed timed ban ends, None if none will (a hint: it may name a removed ban)."""
        return self._ends[0][0] if self._ends else None


def _discard(index: dict[_K, set[str]], key: _K, ban_id: str) -> None:
    ids = index[key]
    ids.discard(ban_id)
    if not ids:
        del index[key]


def bars(ban: Ban, user_id: str | None, ip: str | None, device_id: str | None) -> bool:
    """Whether `ban`'s target covers a client with these identities, active or not; a bad `ip` is no address."""
    return ban.target.matches(user_id, _address(ip), device_id)


def _address(ip: str | None) -> Address | None:
    if ip is None:
        return None
    try:
        return plain_address(ip)
    except ValueError:
        return None
