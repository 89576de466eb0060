"""Counters, latency samples and the report the load bot writes: pure, no I/O."""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from vchat.protocol.errors import ErrorCode

#: Relayed message types: what a partner sends that the server passes on unchanged.
RELAYED_TYPES = frozenset({"signal", "chat", "typing"})

#: Error codes that races make normal (a `signal` sent just as the partner pressed `next`).
EXPECTED_ERROR_CODES = frozenset({ErrorCode.NO_MATCH.value, ErrorCode.PARTNER_RECONNECTING.value})


def percentile(ordered: list[float], q: float) -> float:
    """The nearest-rank `q`-th percentile (0 < q <= 100) of an ascending, non-empty list."""
    if not ordered:
        raise ValueError("percentile of no samples")
    if not 0 < q <= 100:
        raise ValueError(f"percentile rank {q} is outside (0, 100]")
    rank = math.ceil(q / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


class Samples:
    """Latency samples in milliseconds: exact count, mean and max, percentiles from a bounded reservoir."""

    __slots__ = ("_kept", "_rng", "capacity", "count", "max", "total")

    def __init__(self, capacity: int = 100_000, rng: random.Random | None = None) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.count = 0
        self.total = 0.0
        self.max: float | None = None
        self._kept: list[float] = []
        self._rng = rng if rng is not None else random.Random(0)

    def add(self, value_ms: float) -> None:
        """Record one sample (Algorithm R keeps a uniform sample once the reservoir is full)."""
        self.count += 1
        self.total += value_ms
        if self.max is None or value_ms > self.max:
            self.max = value_ms
        if len(self._kept) < self.capacity:
            self._kept.append(value_ms)
        else:
            slot = self._rng.randrange(self.count)
            if slot < self.capacity:
                self._kept[slot] = value_ms

    def summary(self) -> dict[str, float | int] | None:
        """`{count, mean, p50, p95, p99, max}` rounded to microseconds, or None without samples."""
        if not self.count:
            return None
        ordered = sorted(self._kept)
        return {
            "count": self.count,
            "mean": round(self.total / self.count, 3),
            "p50": round(percentile(ordered, 50), 3),
            "p95": round(percentile(ordered, 95), 3),
            "p99": round(percentile(ordered, 99), 3),
            "max": round(self.max if self.max is not None else 0.0, 3),
        }


@dataclass
class BotStats:
    """What a fleet of bots has seen so far: gauges (now) and counters (since start)."""

    clients: int = 0
    # gauges
    connected: int = 0
    searching: int = 0
    matched: int = 0
    # counters
    connects: int = 0
    ever_connected: int = 0
    connect_failures: int = 0
    drops: int = 0
    reconnects: int = 0
    matches: int = 0
    matches_as_offerer: int = 0
    messages_sent: int = 0
    messages_received: int = 0
    messages_relayed: int = 0
    relayed_by_type: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    error_codes: Counter[str] = field(default_factory=Counter)
    expected_errors: int = 0
    expected_error_codes: Counter[str] = field(default_factory=Counter)
    partner_left: Counter[str] = field(default_factory=Counter)
    abandoned_searches: int = 0
    close_codes: Counter[int] = field(default_factory=Counter)
    time_to_match_ms: Samples = field(default_factory=Samples)
    rtt_ms: Samples = field(default_factory=Samples)

    def record_error(self, code: str) -> None:
        """Count an `error` message, separating the codes races make normal from real errors."""
        if code in EXPECTED_ERROR_CODES:
            self.expected_errors += 1
            self.expected_error_codes[code] += 1
        else:
            self.errors += 1
            self.error_codes[code] += 1

    def record_received(self, kind: str) -> None:
        """Count one message received from the server, and whether a partner sent it."""
        self.messages_received += 1
        if kind in RELAYED_TYPES:
            self.messages_relayed += 1
            self.relayed_by_type[kind] += 1

    def snapshot(self) -> Snapshot:
        """The numbers a progress line shows, frozen now."""
        return Snapshot(
            connected=self.connected,
            searching=self.searching,
            matched=self.matched,
            matches=self.matches,
            messages_sent=self.messages_sent,
            messages_received=self.messages_received,
            messages_relayed=self.messages_relayed,
            errors=self.errors,
            expected_errors=self.expected_errors,
            drops=self.drops,
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A point-in-time copy of the counters a progress line needs."""

    connected: int = 0
    searching: int = 0
    matched: int = 0
    matches: int = 0
    messages_sent: int = 0
    messages_received: int = 0
    messages_relayed: int = 0
    errors: int = 0
    expected_errors: int = 0
    drops: int = 0


def format_progress(elapsed: float, now: Snapshot, before: Snapshot, interval: float) -> str:
    """One progress line: gauges now and message rates over the last `interval` seconds."""
    interval = interval if interval > 0 else 1.0
    relayed_rate = (now.messages_relayed - before.messages_relayed) / interval
    in_rate = (now.messages_received - before.messages_received) / interval
    out_rate = (now.messages_sent - before.messages_sent) / interval
    return (
        f"[{elapsed:7.1f}s] connected={now.connected} searching={now.searching} matched={now.matched}"
        f" matches={now.matches} msg/s in={in_rate:.0f} out={out_rate:.0f} relayed={relayed_rate:.0f}"
        f" errors={now.errors} stale={now.expected_errors} drops={now.drops}"
    )


def build_report(
    stats: BotStats, *, url: str, codec: str, duration: float, ramp: float, elapsed: float
) -> dict[str, Any]:
    """The JSON-ready report of one run."""
    elapsed = max(elapsed, 1e-9)
    return {
        "url": url,
        "codec": codec,
        "duration_s": duration,
        "ramp_s": ramp,
        "elapsed_s": round(elapsed, 3),
        "clients": stats.clients,
        "connected": stats.ever_connected,
        "connected_at_end": stats.connected,
        "connects": stats.connects,
        "connect_failures": stats.connect_failures,
        "drops": stats.drops,
        "reconnects": stats.reconnects,
        "matches": stats.matches,
        "matches_as_offerer": stats.matches_as_offerer,
        "abandoned_searches": stats.abandoned_searches,
        "messages_sent": stats.messages_sent,
        "messages_received": stats.messages_received,
        "messages_relayed": stats.messages_relayed,
        "messages_relayed_by_type": dict(sorted(stats.relayed_by_type.items())),
        "messages_relayed_per_s": round(stats.messages_relayed / elapsed, 1),
        "partner_left": dict(sorted(stats.partner_left.items())),
        "errors": stats.errors,
        "error_codes": dict(sorted(stats.error_codes.items())),
        "expected_errors": stats.expected_errors,
        "expected_error_codes": dict(sorted(stats.expected_error_codes.items())),
        "close_codes": {str(code): n for code, n in sorted(stats.close_codes.items())},
        "time_to_match_ms": stats.time_to_match_ms.summary(),
        "rtt_ms": stats.rtt_ms.summary(),
    }


def _latency(summary: dict[str, float | int] | None) -> str:
    if summary is None:
        return "no samples"
    return (
        f"p50={summary['p50']:.1f} p95={summary['p95']:.1f} p99={summary['p99']:.1f}"
        f" max={summary['max']:.1f} ms (n={summary['count']})"
    )


def format_summary(report: dict[str, Any]) -> list[str]:
    """The closing summary of a run, as lines for a person."""
    lines = [
        f"clients={report['clients']} connected={report['connected']} (at end {report['connected_at_end']})"
        f" connect_failures={report['connect_failures']} drops={report['drops']}"
        f" reconnects={report['reconnects']}",
        f"matches={report['matches']} (as offerer {report['matches_as_offerer']})"
        f" abandoned_searches={report['abandoned_searches']}",
        f"messages sent={report['messages_sent']} received={report['messages_received']}"
        f" relayed={report['messages_relayed']} ({report['messages_relayed_per_s']}/s)",
        f"errors={report['errors']} {report['error_codes'] or ''}".rstrip()
        + f" expected(stale)={report['expected_errors']}",
        f"close codes: {report['close_codes']}",
        f"time to match: {_latency(report['time_to_match_ms'])}",
        f"rtt:           {_latency(report['rtt_ms'])}",
    ]
    return lines
