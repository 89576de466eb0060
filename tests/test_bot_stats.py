"""The bot's pure statistics: percentiles, reservoirs, counters and the report."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vchat.bot.stats import (
    RELAYED_TYPES,
    BotStats,
    Samples,
    Snapshot,
    build_report,
    format_progress,
    format_summary,
    percentile,
)
from vchat.protocol.messages import CLIENT_TYPES


def test_percentile_nearest_rank() -> None:
    ordered = [float(i) for i in range(1, 101)]
    assert percentile(ordered, 50) == 50.0
    assert percentile(ordered, 95) == 95.0
    assert percentile(ordered, 99) == 99.0
    assert percentile(ordered, 100) == 100.0
    assert percentile([7.0], 50) == 7.0
    assert percentile([1.0, 2.0], 50) == 1.0
    assert percentile([1.0, 2.0], 51) == 2.0


@pytest.mark.parametrize("q", [0, -1, 100.5])
def test_percentile_rejects_bad_rank(q: float) -> None:
    with pytest.raises(ValueError):
        percentile([1.0], q)


def test_percentile_of_nothing() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)


@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=1), st.floats(min_value=0.01, max_value=100))
def test_percentile_is_a_sample_and_monotonic(values: list[float], q: float) -> None:
    ordered = sorted(values)
    p = percentile(ordered, q)
    assert p in ordered
    assert percentile(ordered, min(q * 2, 100)) >= p
    at_most = sum(1 for v in ordered if v <= p)
    assert at_most / len(ordered) >= q / 100 - 1e-9


def test_samples_summary() -> None:
    samples = Samples()
    assert samples.summary() is None
    for value in range(1, 101):
        samples.add(float(value))
    summary = samples.summary()
    assert summary == {"count": 100, "mean": 50.5, "p50": 50.0, "p95": 95.0, "p99": 99.0, "max": 100.0}


def test_samples_reservoir_is_bounded_but_counts_everything() -> None:
    samples = Samples(capacity=50, rng=random.Random(3))
    for value in range(10_000):
        samples.add(float(value))
    summary = samples.summary()
    assert summary is not None
    assert summary["count"] == 10_000
    assert summary["max"] == 9999.0
    assert len(samples._kept) == 50
    # a uniform sample of 0..9999 has its median somewhere in the middle
    assert 2000 < summary["p50"] < 8000


def test_samples_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Samples(capacity=0)


def test_errors_are_split_into_real_and_stale() -> None:
    stats = BotStats()
    stats.record_error("no_match")
    stats.record_error("partner_reconnecting")
    stats.record_error("rate_limited")
    assert stats.errors == 1
    assert stats.error_codes == {"rate_limited": 1}
    assert stats.expected_errors == 2


def test_only_partner_messages_count_as_relayed() -> None:
    stats = BotStats()
    for kind in ("signal", "chat", "typing", "pong", "matched", "welcome"):
        stats.record_received(kind)
    assert stats.messages_received == 6
    assert stats.messages_relayed == 3
    assert stats.relayed_by_type == {"signal": 1, "chat": 1, "typing": 1}


def test_report_has_the_promised_keys_and_is_json() -> None:
    stats = BotStats(clients=4, ever_connected=4, matches=6)
    stats.time_to_match_ms.add(12.5)
    stats.record_received("chat")
    report = build_report(stats, url="ws://x/ws", codec="json", duration=3.0, ramp=1.0, elapsed=3.0)
    for key in (
        "clients",
        "connected",
        "matches",
        "messages_relayed",
        "errors",
        "time_to_match_ms",
        "rtt_ms",
    ):
        assert key in report
    assert report["clients"] == 4 and report["connected"] == 4 and report["messages_relayed"] == 1
    assert report["time_to_match_ms"]["p50"] == 12.5
    assert set(report["time_to_match_ms"]) >= {"p50", "p95", "p99"}
    assert report["rtt_ms"] is None
    assert json.loads(json.dumps(report)) == report
    lines = format_summary(report)
    assert any("no samples" in line for line in lines)
    assert any("p50=12.5" in line for line in lines)


def test_progress_line() -> None:
    before = Snapshot(messages_relayed=10, messages_received=20, messages_sent=15)
    now = Snapshot(
        connected=5,
        searching=1,
        matched=4,
        matches=2,
        messages_relayed=30,
        messages_received=60,
        messages_sent=35,
        errors=1,
    )
    line = format_progress(2.0, now, before, 2.0)
    assert "connected=5" in line and "searching=1" in line and "matched=4" in line
    assert "relayed=10" in line and "in=20" in line and "out=10" in line and "errors=1" in line
    assert format_progress(0.0, now, before, 0.0)  # no division by zero


def test_relayed_types_are_what_clients_send_their_partners() -> None:
    assert RELAYED_TYPES <= CLIENT_TYPES
