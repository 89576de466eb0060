"""Running totals of the STUN listeners' work, kept as plain ints for metrics to read at scrape time."""

from __future__ import annotations


class StunCounters:
    """Requests answered (a reply was sent) and dropped (over the rate limit, or not a request to answer)."""

    __slots__ = ("answered", "dropped")

    def __init__(self) -> None:
        self.answered = 0
        self.dropped = 0
