"""The moderation webhook's waiting items: a queue bounded in items and bytes that drops its oldest item when
full, and the backoff between delivery attempts.

Pure Python: no Twisted, no clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from vchat.moderation.webhook_message import Subject


@dataclass(frozen=True)
class Delivery:
    """One item to POST: what it is about, and its JSON body (built once, signed at each attempt)."""

    subject: Subject
    body: bytes = field(repr=False)


class DeliveryQueue:
    """Items waiting to be delivered, oldest first: at most `max_items` of them and `max_bytes` of bodies.

    Pushing onto a full queue drops the oldest items until the new one fits, and counts them in `dropped`; an
    item larger than `max_bytes` on its own is dropped at once.
    """

    def __init__(self, max_items: int, max_bytes: int) -> None:
        if max_items < 1 or max_bytes < 1:
            raise ValueError("a delivery queue holds at least one item and one byte")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.dropped = 0
        self._items: deque[Delivery] = deque()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        """The bytes of bodies waiting."""
        return self._bytes

    def push(self, item: Delivery) -> int:
        """Add `item` at the end; returns how many items were dropped to make room (or 1: itself, if it can
        never fit)."""
        if len(item.body) > self.max_bytes:
            self.dropped += 1
            return 1
        dropped = 0
        while self._items and (
            len(self._items) >= self.max_items or self._bytes + len(item.body) > self.max_bytes
        ):
            self._bytes -= len(self._items.popleft().body)
            dropped += 1
        self._items.append(item)
        self._bytes += len(item.body)
        self.dropped += dropped
        return dropped

    def pop(self) -> Delivery | None:
        """The oldest item, taken off the queue; None if it is empty."""
        if not self._items:
            return None
        item = self._items.popleft()
        self._bytes -= len(item.body)
        return item


def backoff(failures: int, first_s: float = 1.0, max_s: float = 60.0) -> float:
    """Seconds to wait after the `failures`-th failed attempt of an item (1, 2, 4, ... up to `max_s`)."""
    if failures < 1:
        raise ValueError("backoff follows at least one failure")
    return min(max_s, first_s * 2.0 ** min(failures - 1, 64))
