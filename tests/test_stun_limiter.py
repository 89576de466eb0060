"""The per-source STUN rate limit: buckets per address (IPv6 per /64), bounded memory, and the defaults that
let a crowd behind one carrier-grade NAT through while holding a flood back."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vchat.stun.config import DEFAULT_BURST, DEFAULT_RATE
from vchat.stun.limiter import SourceLimiter


def test_limiter_allows_burst_then_rate() -> None:
    limiter = SourceLimiter(rate=10, burst=5, now=0.0)
    assert [limiter.allow("192.0.2.9", 0.0) for _ in range(6)] == [True] * 5 + [False]
    assert limiter.allow("192.0.2.10", 0.0)  # another source has its own bucket
    assert limiter.allow("192.0.2.9", 0.1) and not limiter.allow("192.0.2.9", 0.1)


def test_limiter_groups_ipv6_by_64_and_unmaps_ipv4() -> None:
    limiter = SourceLimiter(rate=1, burst=1, now=0.0)
    assert limiter.allow("2001:db8::1", 0.0) and not limiter.allow("2001:db8::2", 0.0)


def test_limiter_memory_is_bounded() -> None:
    limiter = SourceLimiter(rate=20, burst=40, now=0.0, max_sources=100)
    for n in range(10_000):
        assert limiter.allow(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}", n * 0.0001)
        assert len(limiter) <= 200
    # Idle sources are forgotten after a period or two.
    for n in range(50):
        limiter.allow(f"192.0.2.{n}", 100.0)
    limiter.allow("198.51.100.1", 110.0)
    limiter.allow("198.51.100.2", 120.0)
    assert len(limiter) <= 2


@given(st.lists(st.tuples(st.integers(0, 3), st.floats(0, 2.0)), max_size=200))
def test_limiter_never_allows_more_than_a_bucket_would(events: list[tuple[int, float]]) -> None:
    # Whatever the interleaving and however generations turn over, no source gets more than one
    # token bucket would give it.
    rate, burst = 4.0, 3
    limiter = SourceLimiter(rate=rate, burst=burst, now=0.0)
    now = 0.0
    allowed = [0, 0, 0, 0]
    for source, step in events:
        now += step
        allowed[source] += limiter.allow(f"192.0.2.{source}", now)
    assert all(count <= burst + rate * now + 1e-9 for count in allowed)
    assert len(limiter) <= 4


def test_defaults_let_a_crowd_behind_one_nat_through() -> None:
    # A thousand phones behind one carrier-grade NAT address start calls at the same moment, each
    # browser sending two Binding requests, then keep asking at a busy crowd's steady rate.
    limiter = SourceLimiter(DEFAULT_RATE, DEFAULT_BURST, now=0.0)
    assert all(limiter.allow("203.0.113.7", 0.0) for _ in range(1000 * 2))
    for tick in range(1, 61):
        assert all(limiter.allow("203.0.113.7", float(tick)) for _ in range(400))


def test_defaults_hold_a_flood_back() -> None:
    # One source sending as fast as a core can answer (about 100k requests per second) gets through
    # only its burst and its rate: under 3 % of them.
    limiter = SourceLimiter(DEFAULT_RATE, DEFAULT_BURST, now=0.0)
    answered = sum(limiter.allow("198.51.100.66", n / 100_000) for n in range(100_000))
    assert answered <= DEFAULT_BURST + DEFAULT_RATE
    assert limiter.allow("203.0.113.7", 1.0)  # everyone else still gets answers
