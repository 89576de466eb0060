"""Token buckets: bursts, refills, and never more than the bucket allows, whatever the timing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vchat.ratelimit import TokenBucket


def test_a_full_bucket_allows_a_burst_then_refills_at_the_rate() -> None:
    bucket = TokenBucket(rate=2, burst=3, now=100.0)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(100.25) is False
    assert bucket.take(100.5) is True  # half a second at 2 per second: one token
    assert bucket.take(100.5) is False


def test_tokens_do_not_pile_up_beyond_the_burst() -> None:
    bucket = TokenBucket(rate=1, burst=2, now=0.0)
    assert [bucket.take(3600.0) for _ in range(3)] == [True, True, False]


def test_refused_events_cost_nothing() -> None:
    bucket = TokenBucket(rate=1, burst=1, now=0.0)
    assert bucket.take(0.0) is True
    assert [bucket.take(0.5) for _ in range(10)] == [False] * 10
    assert bucket.take(1.0) is True


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0), (1, 0.5)])
def test_nonsense_limits_are_refused(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate, burst, now=0.0)


def test_a_clock_stepping_back_takes_no_tokens() -> None:
    bucket = TokenBucket(rate=20, burst=60, now=1000.0)
    assert bucket.take(990.0) is True  # NTP stepped the clock back ten seconds
    assert bucket.take(990.0) is True


@given(
    rate=st.floats(min_value=0.1, max_value=100),
    burst=st.integers(min_value=1, max_value=20),
    gaps=st.lists(st.floats(min_value=0, max_value=2), max_size=60),
)
def test_never_more_than_burst_plus_rate_times_elapsed(rate: float, burst: int, gaps: list[float]) -> None:
    start = 1000.0
    bucket = TokenBucket(rate, burst, start)
    times = [start]
    for gap in gaps:
        times.append(times[-1] + gap)
    allowed = [t for t in times if bucket.take(t)]
    for first in range(len(allowed)):
        for last in range(first, len(allowed)):
            events = last - first + 1
            assert events <= burst + rate * (allowed[last] - allowed[first]) + 1e-6
    # nor stingier than promised: after long enough a whole burst passes again
    later = times[-1] + 2 * burst / rate
    assert all(bucket.take(later) for _ in range(burst))
