"""A per-source-address rate limit for the STUN listeners, in bounded memory; time is passed in."""

from __future__ import annotations

from vchat.addresses import address_key
from vchat.ratelimit import TokenBucket


class SourceLimiter:
    """Allows each source `rate` requests per second with bursts of `burst`, remembering at most `max_sources`.

    Buckets live in two generations. Every `period` seconds (at least the time a bucket takes to refill)
    the older one is forgotten: a source unseen for a whole period would have a full bucket anyway, so
    forgetting it changes nothing. A flood of distinct (spoofed) sources that fills the current generation
    ends it early; per-source limits cannot help against that, and memory stays bounded.
    """

    __slots__ = ("_burst", "_current", "_max_sources", "_period", "_previous", "_rate", "_rotate_at")

    def __init__(self, rate: float, burst: int, now: float, max_sources: int = 65536) -> None:
        if rate <= 0 or burst < 1 or max_sources < 1:
            raise ValueError("rate must be positive, burst and max_sources at least 1")
        self._rate = rate
        self._burst = burst
        self._max_sources = max_sources
        self._period = max(burst / rate, 1.0)
        self._current: dict[str | bytes, TokenBucket] = {}
        self._previous: dict[str | bytes, TokenBucket] = {}
        self._rotate_at = now + self._period

    def __len__(self) -> int:
        return len(self._current) + len(self._previous)

    def allow(self, host: str, now: float) -> bool:
        """Whether a request from `host` at `now` is within its limit (and count it)."""
        bucket = self._current.get(host)  # IPv4 sources, recently seen: the hot path
        if bucket is None:
            bucket = self._bucket(host if ":" not in host else address_key(host), now)
        return bucket.take(now)

    def _bucket(self, key: str | bytes, now: float) -> TokenBucket:
        bucket = self._current.get(key)
        if bucket is None:
            if now >= self._rotate_at or len(self._current) >= self._max_sources:
                self._rotate(now)
            bucket = self._previous.pop(key, None)
            if bucket is None:
                bucket = TokenBucket(self._rate, self._burst, now)
            self._current[key] = bucket
        return bucket

    def _rotate(self, now: float) -> None:
        # Buckets still in the previous generation were not touched since the last rotation.
        self._previous = self._current
        self._current = {}
        self._rotate_at = now + self._period
