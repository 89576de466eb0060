"""Running totals of what the switchboard does, kept as plain ints for metrics to read at scrape time."""

from __future__ import annotations

RELAYED_TYPES = ("signal", "chat", "typing")
"""The message types the switchboard relays between partners."""


class SignalingCounters:
    """Totals since start: matches made, messages relayed by type (`RELAYED_TYPES`), reports filed by users."""

    __slots__ = ("matches", "relayed", "reports")

    def __init__(self) -> None:
        self.matches = 0
        self.relayed: dict[str, int] = dict.fromkeys(RELAYED_TYPES, 0)
        self.reports = 0
