"""Tests for the pure matching engine: the rules one by one, then random interleavings against a reference."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from vchat.matching import MatchingEngine, Pair, Seeker


def man(
    sid: str, country: str | None = "DE", want: str = "f", countries: frozenset[str] = frozenset()
) -> Seeker:
    """A man, by default from DE wanting a woman from anywhere."""
    return Seeker(sid, "m", country, want, countries)


def woman(
    sid: str, country: str | None = "DE", want: str = "m", countries: frozenset[str] = frozenset()
) -> Seeker:
    """A woman, by default from DE wanting a man from anywhere."""
    return Seeker(sid, "f", country, want, countries)


def pair_up(engine: MatchingEngine, a: Seeker, b: Seeker, now: float) -> None:
    """Match two users with each other (neither is waiting before, both are free after)."""
    assert engine.search(a, now) is None
    assert engine.search(b, now) == Pair(a.session_id, b.session_id)


# Construction


@pytest.mark.parametrize(
    "kwargs",
    [
        {"recent_partners": 0},
        {"recent_partners": -1},
        {"recent_partners": 1.5},
        {"recent_seconds": 0},
        {"recent_seconds": -1.0},
        {"recent_seconds": float("nan")},
        {"rematch_after": 0.0},
        {"rematch_after": -30},
    ],
)
def test_constructor_rejects_non_positive_limits(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        MatchingEngine(**kwargs)  # type: ignore[arg-type]


def test_unknown_gender_or_want_is_rejected() -> None:
    engine = MatchingEngine()
    with pytest.raises(ValueError):
        engine.search(Seeker("a", "x", None), 0.0)
    with pytest.raises(ValueError):
        engine.search(Seeker("a", "m", None, want="u"), 0.0)
    assert len(engine) == 0


# Preferences


def test_first_seeker_waits() -> None:
    engine = MatchingEngine()
    assert engine.search(man("a"), 0.0) is None
    assert engine.is_waiting("a")
    assert len(engine) == 1
    assert engine.waiting_seeker("a") == man("a")
    assert engine.waiting_seeker("b") is None


@pytest.mark.parametrize(
    ("a", "b", "compatible"),
    [
        (("m", "f"), ("f", "m"), True),
        (("m", "f"), ("f", "any"), True),
        (("m", "any"), ("f", "any"), True),
        (("m", "any"), ("m", "any"), True),
        (("m", "m"), ("m", "m"), True),
        (("f", "f"), ("f", "f"), True),
        (("m", "f"), ("m", "f"), False),
        (("m", "f"), ("f", "f"), False),
        (("m", "m"), ("f", "any"), False),
        (("f", "any"), ("f", "m"), False),
        # "u" is accepted only by "any", and its own want decides the other side.
        (("u", "any"), ("m", "any"), True),
        (("u", "any"), ("u", "any"), True),
        (("u", "f"), ("f", "any"), True),
        (("u", "any"), ("m", "f"), False),
        (("u", "any"), ("f", "m"), False),
        (("u", "m"), ("m", "m"), False),
    ],
)
def test_gender_and_want_must_agree_both_ways(
    a: tuple[str, str], b: tuple[str, str], compatible: bool
) -> None:
    for first, second in ((a, b), (b, a)):
        engine = MatchingEngine()
        assert engine.search(Seeker("a", first[0], "DE", first[1]), 0.0) is None
        result = engine.search(Seeker("b", second[0], "DE", second[1]), 1.0)
        assert result == (Pair("a", "b") if compatible else None)
        assert len(engine) == (0 if compatible else 2)


@pytest.mark.parametrize(
    ("a_country", "a_filter", "b_country", "b_filter", "compatible"),
    [
        ("DE", set(), "FR", set(), True),
        ("DE", {"FR"}, "FR", set(), True),
        ("DE", {"FR", "IT"}, "FR", {"DE"}, True),
        ("DE", {"IT"}, "FR", set(), False),
        ("DE", {"FR"}, "FR", {"IT"}, False),
        ("DE", {"DE"}, "DE", {"DE"}, True),
        # An unknown country only meets users without a country filter.
        (None, set(), "FR", set(), True),
        (None, set(), None, set(), True),
        (None, {"FR"}, "FR", set(), True),
        (None, set(), "FR", {"DE"}, False),
        (None, {"FR"}, None, set(), False),
    ],
)
def test_country_filters_must_agree_both_ways(
    a_country: str | None, a_filter: set[str], b_country: str | None, b_filter: set[str], compatible: bool
) -> None:
    a = man("a", a_country, "any", frozenset(a_filter))
    b = woman("b", b_country, "any", frozenset(b_filter))
    for first, second in ((a, b), (b, a)):
        engine = MatchingEngine()
        assert engine.search(first, 0.0) is None
        expected = Pair(first.session_id, second.session_id) if compatible else None
        assert engine.search(second, 1.0) == expected


def test_never_matched_with_itself() -> None:
    engine = MatchingEngine()
    assert engine.search(Seeker("a", "m", "DE", "any"), 0.0) is None
    assert engine.search(Seeker("a", "m", "DE", "any"), 1.0) is None
    assert len(engine) == 1
    assert engine.poll(1000.0) == []


# Waiting order


def test_longest_waiting_compatible_user_is_chosen() -> None:
    engine = MatchingEngine()
    # Incompatible with the women below (country filters), and the oldest.
    assert engine.search(man("no", "IT", "f", frozenset({"AT"})), 0.5) is None
    assert engine.search(man("other", "IT", "f", frozenset({"FR"})), 0.7) is None
    # Compatible with them, from different partitions of the queue.
    assert engine.search(man("old", "IT", "f", frozenset({"DE", "AT"})), 1.0) is None
    assert engine.search(man("mid", None, "f"), 2.0) is None
    assert engine.search(man("new", "FR", "any"), 3.0) is None
    seq = [engine.search(woman(f"w{i}", "DE", "any"), 4.0 + i) for i in range(3)]
    assert seq == [Pair("old", "w0"), Pair("mid", "w1"), Pair("new", "w2")]
    assert sorted(s for s in ("no", "other") if engine.is_waiting(s)) == ["no", "other"]


def test_longest_waiting_with_country_filter() -> None:
    engine = MatchingEngine()
    assert engine.search(man("de", "DE"), 0.0) is None
    assert engine.search(man("fr", "FR"), 1.0) is None
    assert engine.search(man("it", "IT"), 2.0) is None
    assert engine.search(woman("w", "DE", "m", frozenset({"IT", "FR"})), 3.0) == Pair("fr", "w")


def test_searching_again_replaces_the_entry_and_restarts_the_wait() -> None:
    engine = MatchingEngine()
    assert engine.search(man("a"), 0.0) is None
    assert engine.search(man("b"), 1.0) is None
    assert engine.search(man("a", "FR"), 2.0) is None
    assert len(engine) == 2
    assert engine.waiting_seeker("a") == man("a", "FR")
    # "a" went to the back of the queue.
    assert engine.search(woman("w"), 3.0) == Pair("b", "w")
    assert engine.search(woman("v", countries=frozenset({"DE"})), 3.0) is None


def test_searching_again_with_other_preferences_leaves_the_old_ones() -> None:
    engine = MatchingEngine()
    assert engine.search(man("a", want="f", countries=frozenset({"DE", "FR"})), 0.0) is None
    assert engine.search(man("a", want="m"), 1.0) is None
    assert engine.search(woman("w", "FR"), 2.0) is None
    assert engine.search(man("b", want="m"), 3.0) == Pair("a", "b")
    assert len(engine) == 1


def test_cancel() -> None:
    engine = MatchingEngine()
    assert engine.search(man("a"), 0.0) is None
    assert engine.cancel("a") is True
    assert engine.cancel("a") is False
    assert engine.cancel("nobody") is False
    assert not engine.is_waiting("a")
    assert len(engine) == 0
    assert engine.search(woman("w"), 1.0) is None


def test_queue_lengths_count_each_waiting_user_once_by_gender_and_want() -> None:
    engine = MatchingEngine()
    assert engine.queue_lengths() == {(g, w): 0 for g in ("m", "f", "u") for w in ("any", "m", "f")}
    # Nobody here accepts anybody else; "a" sits in two country partitions, and counts once.
    engine.search(man("a", countries=frozenset({"DE", "FR"})), 0.0)
    engine.search(man("b"), 0.0)
    engine.search(man("c", want="any"), 0.0)
    engine.search(woman("d", want="f"), 0.0)
    engine.search(Seeker("e", "u", None, "f"), 0.0)
    lengths = engine.queue_lengths()
    expected = {("m", "f"): 2, ("m", "any"): 1, ("f", "f"): 1, ("u", "f"): 1}
    assert {key: n for key, n in lengths.items() if n} == expected
    assert sum(lengths.values()) == len(engine) == 5


# Recent partners


def test_recent_partner_is_not_matched_again() -> None:
    engine = MatchingEngine()
    pair_up(engine, man("a"), woman("b"), 0.0)
    assert engine.search(man("a"), 1.0) is None
    assert engine.search(woman("b"), 2.0) is None
    assert len(engine) == 2
    # Someone else is fine.
    assert engine.search(woman("c"), 3.0) == Pair("a", "c")
    assert engine.search(man("d"), 4.0) == Pair("b", "d")


@pytest.mark.parametrize("countries", [frozenset(), frozenset({"DE", "FR"})], ids=["no filter", "filter"])
@pytest.mark.parametrize("remembers", ["arriving", "waiting"])
def test_either_history_blocks_until_rematch_after(countries: frozenset[str], remembers: str) -> None:
    engine = MatchingEngine(recent_partners=1, recent_seconds=600.0, rematch_after=30.0)
    pair_up(engine, man("a"), woman("b"), 0.0)
    # Only one of them still has the other among its last partner(s).
    if remembers == "arriving":
        pair_up(engine, man("a"), woman("x"), 1.0)
    else:
        pair_up(engine, man("y"), woman("b"), 1.0)
    assert engine.search(man("a"), 2.0) is None
    assert engine.search(woman("b", countries=countries), 31.9) is None
    engine.cancel("b")
    assert engine.search(woman("b", countries=countries), 32.0) == Pair("a", "b")


def test_blocked_head_is_skipped_for_the_next_one() -> None:
    engine = MatchingEngine()
    pair_up(engine, man("a"), woman("b"), 0.0)
    assert engine.search(man("a"), 1.0) is None
    assert engine.search(man("c"), 2.0) is None
    assert engine.search(woman("b"), 3.0) == Pair("c", "b")
    assert engine.is_waiting("a")


def test_recency_ends_when_the_partner_drops_out_of_the_last_n() -> None:
    engine = MatchingEngine(recent_partners=2, recent_seconds=600.0, rematch_after=1000.0)
    pair_up(engine, man("a"), woman("b"), 0.0)
    pair_up(engine, man("a"), woman("c"), 1.0)
    # Still among a's last two and b's last one.
    assert engine.search(man("a"), 2.0) is None
    assert engine.search(woman("b"), 2.0) is None
    engine.cancel("a")
    engine.cancel("b")
    pair_up(engine, man("a"), woman("d"), 3.0)
    # Out of a's last two, but a is still b's last partner: either side blocks, whoever waits.
    assert engine.search(man("a"), 4.0) is None
    assert engine.search(woman("b"), 4.0) is None
    engine.cancel("a")
    assert engine.search(man("a"), 4.0) is None
    engine.cancel("b")
    assert engine.search(woman("b"), 4.0) is None
    assert engine.search(man("a"), 4.0) is None
    engine.cancel("a")
    engine.cancel("b")
    pair_up(engine, man("e"), woman("b"), 5.0)
    pair_up(engine, man("f"), woman("b"), 6.0)
    assert engine.search(man("a"), 7.0) is None
    assert engine.search(woman("b"), 7.0) == Pair("a", "b")


@pytest.mark.parametrize("rematch", ["poll", "a waits", "a arrives"])
def test_recency_counts_distinct_partners_by_latest_match(rematch: str) -> None:
    engine = MatchingEngine(recent_partners=2, recent_seconds=600.0, rematch_after=10.0)
    pair_up(engine, man("a"), woman("b"), 0.0)
    pair_up(engine, man("a"), woman("c"), 1.0)
    # a meets b a second time once rematch_after allows it: b is a's latest partner again.
    if rematch == "poll":
        assert engine.search(man("a"), 2.0) is None
        assert engine.search(woman("b"), 3.0) is None
        assert engine.poll(12.0) == [Pair("a", "b")]
    elif rematch == "a waits":
        assert engine.search(man("a"), 2.0) is None
        assert engine.search(woman("b"), 12.0) == Pair("a", "b")
    else:
        assert engine.search(woman("b"), 2.0) is None
        assert engine.search(man("a"), 12.0) == Pair("b", "a")
    pair_up(engine, man("a"), woman("d"), 13.0)
    # b and c move on, so only a's side can still block.
    for t, (other, partner) in enumerate([("e", "b"), ("f", "b"), ("e", "c"), ("f", "c")]):
        pair_up(engine, man(other), woman(partner), 14.0 + t)
    # a's last two distinct partners are d and b; c dropped out.
    assert engine.search(man("a"), 18.0) is None
    assert engine.search(woman("b"), 19.0) is None
    engine.cancel("b")
    assert engine.search(woman("c"), 19.0) == Pair("a", "c")


def test_recency_expires_after_recent_seconds() -> None:
    engine = MatchingEngine(recent_partners=10, recent_seconds=60.0, rematch_after=1000.0)
    pair_up(engine, man("a"), woman("b"), 0.0)
    assert engine.search(man("a"), 59.0) is None
    assert engine.search(woman("b"), 59.5) is None
    engine.cancel("b")
    assert engine.search(woman("b"), 60.0) == Pair("a", "b")


def test_poll_pairs_users_whose_recency_expires_while_waiting() -> None:
    engine = MatchingEngine(recent_partners=10, recent_seconds=10.0, rematch_after=30.0)
    pair_up(engine, man("a"), woman("b"), 0.0)
    assert engine.search(man("a"), 1.0) is None
    assert engine.search(woman("b"), 2.0) is None
    assert engine.next_poll_at() == 10.0
    assert engine.poll(9.99) == []
    assert engine.poll(10.0) == [Pair("a", "b")]
    assert engine.next_poll_at() is None
    assert len(engine) == 0


def test_recent_partner_waiting_longer_than_rematch_after_is_matched_on_arrival() -> None:
    engine = MatchingEngine(recent_partners=10, recent_seconds=600.0, rematch_after=30.0)
    pair_up(engine, man("a"), woman("b"), 0.0)
    assert engine.search(man("a"), 1.0) is None
    assert engine.search(woman("b"), 30.9) is None
    engine.cancel("b")
    assert engine.search(woman("b"), 31.0) == Pair("a", "b")


@pytest.mark.parametrize("first_back", ["a", "b"])
def test_poll_rematches_when_either_one_has_waited_rematch_after(first_back: str) -> None:
    engine = MatchingEngine(recent_partners=10, recent_seconds=600.0, rematch_after=30.0)
    seekers = {"a": man("a"), "b": woman("b")}
    pair_up(engine, seekers["a"], seekers["b"], 0.0)
    second_back = "b" if first_back == "a" else "a"
    assert engine.search(seekers[first_back], 5.0) is None
    assert engine.search(seekers[second_back], 20.0) is None
    assert engine.next_poll_at() == 35.0
    assert engine.poll(34.0) == []
    assert engine.poll(36.0) == [Pair(first_back, second_back)]
    assert len(engine) == 0
    assert engine.next_poll_at() is None


def test_poll_gives_the_rematching_user_its_longest_waiting_candidate() -> None:
    engine = MatchingEngine(recent_partners=10, recent_seconds=600.0, rematch_after=30.0)
    pair_up(engine, man("a"), woman("b"), 0.0)
    pair_up(engine, man("a2"), woman("c"), 0.0)
    pair_up(engine, man("a"), woman("c2"), 0.0)
    assert engine.search(man("a"), 1.0) is None
    assert engine.search(woman("c2"), 2.0) is None
    assert engine.search(woman("b"), 3.0) is None
    assert engine.poll(31.0) == [Pair("a", "c2")]
    assert engine.is_waiting("b")


def test_poll_pair_names_the_longer_waiting_one_first() -> None:
    engine = MatchingEngine(recent_partners=10, recent_seconds=10.0, rematch_after=100.0)
    pair_up(engine, woman("b", want="any"), man("s"), 0.0)
    pair_up(engine, man("p"), woman("b", want="any"), 1.0)
    assert engine.search(man("p"), 2.0) is None
    assert engine.search(woman("b", want="any"), 3.0) is None
    assert engine.search(man("s"), 4.0) is None
    # b and s unblock at 10, p and b at 11: b, seeking at 12, takes p, who has waited longer.
    assert engine.next_poll_at() == 10.0
    assert engine.poll(12.0) == [Pair("p", "b")]
    assert engine.is_waiting("s")


@pytest.mark.parametrize("forgotten", ["x", "y"])
def test_poll_still_skips_candidates_that_either_side_remembers(forgotten: str) -> None:
    engine = MatchingEngine(recent_partners=2, recent_seconds=10.0, rematch_after=100.0)
    x = woman("x", want="any")
    pair_up(engine, x, man("z"), 0.0)
    pair_up(engine, x, man("y"), 1.0)
    # Now only one of x and y remembers the other (until 11); x and z remember each other until 10.
    engine.forget(forgotten)
    assert engine.search(x, 2.0) is None
    assert engine.search(man("y"), 3.0) is None
    assert engine.search(man("z"), 4.0) is None
    assert engine.next_poll_at() == 10.0
    assert engine.poll(10.5) == [Pair("x", "z")]
    assert engine.is_waiting("y")


def test_poll_prefers_an_older_candidate_who_has_waited_rematch_after() -> None:
    engine = MatchingEngine(recent_partners=10, recent_seconds=20.0, rematch_after=5.0)
    x = woman("x", want="any")
    pair_up(engine, x, man("z"), 0.0)
    pair_up(engine, x, man("y"), 16.0)
    assert engine.search(man("y"), 17.0) is None
    assert engine.search(x, 18.0) is None
    assert engine.search(man("z"), 19.0) is None
    # x and z unblock at 20 by age; y and x at 22 because y has waited 5 s. When x seeks, both are fine.
    assert engine.poll(22.5) == [Pair("y", "x")]
    assert engine.is_waiting("z")


def test_poll_finds_several_pairs_in_time_order() -> None:
    engine = MatchingEngine(recent_partners=10, recent_seconds=600.0, rematch_after=30.0)
    pair_up(engine, man("a"), woman("b"), 0.0)
    pair_up(engine, man("c", "FR"), woman("d", "FR"), 0.0)
    only_fr = frozenset({"FR"})
    only_de = frozenset({"DE"})
    assert engine.search(man("c", "FR", countries=only_fr), 2.0) is None
    assert engine.search(man("a", countries=only_de), 1.0) is None
    assert engine.search(woman("b", countries=only_de), 3.0) is None
    assert engine.search(woman("d", "FR", countries=only_fr), 4.0) is None
    assert engine.next_poll_at() == 31.0
    assert engine.poll(100.0) == [Pair("a", "b"), Pair("c", "d")]


def test_nothing_to_poll_after_one_side_leaves() -> None:
    engine = MatchingEngine()
    assert engine.next_poll_at() is None
    pair_up(engine, man("a"), woman("b"), 0.0)
    engine.search(man("a"), 1.0)
    engine.search(woman("b"), 2.0)
    assert engine.next_poll_at() == 31.0
    engine.cancel("b")
    assert engine.next_poll_at() is None
    assert engine.poll(100.0) == []
    # A re-search makes the old pending pair stale and schedules a fresh one.
    engine.search(woman("b"), 101.0)
    assert engine.next_poll_at() is None
    engine.search(man("a"), 102.0)
    engine.search(woman("b"), 103.0)
    engine.search(man("a"), 104.0)
    assert engine.next_poll_at() == 133.0


def test_stale_events_are_dropped_as_they_pile_up() -> None:
    engine = MatchingEngine(recent_partners=10, recent_seconds=600.0, rematch_after=30.0)
    pair_up(engine, man("a"), woman("b"), 0.0)
    # Each re-search schedules a new event and leaves the one before stale.
    for i in range(200):
        engine.search(man("a"), 1.0 + i)
        engine.search(woman("b"), 1.0 + i)
    assert len(engine._events) <= 128
    assert engine.next_poll_at() == 230.0
    assert engine.poll(230.0) == [Pair("a", "b")]
    assert engine.next_poll_at() is None


def test_nothing_to_poll_when_recency_never_ends() -> None:
    engine = MatchingEngine(recent_seconds=float("inf"), rematch_after=float("inf"))
    pair_up(engine, man("a"), woman("b"), 0.0)
    engine.search(man("a"), 1.0)
    engine.search(woman("b"), 2.0)
    assert engine.next_poll_at() is None
    assert engine.poll(1e12) == []
    assert len(engine) == 2


def test_forget_cancels_and_drops_own_history() -> None:
    engine = MatchingEngine(recent_partners=1, recent_seconds=600.0, rematch_after=1000.0)
    pair_up(engine, man("a"), woman("b"), 0.0)
    pair_up(engine, man("c"), woman("b"), 1.0)
    # b's last partner is c, but a still remembers b.
    assert engine.search(man("a"), 2.0) is None
    assert engine.search(woman("b"), 3.0) is None
    engine.cancel("b")
    engine.forget("a")
    assert not engine.is_waiting("a")
    assert engine.search(woman("b"), 4.0) is None
    assert engine.search(man("a"), 5.0) == Pair("b", "a")


def test_forget_a_waiting_user() -> None:
    engine = MatchingEngine()
    engine.search(man("a"), 0.0)
    engine.forget("a")
    engine.forget("never-seen")
    assert len(engine) == 0
    assert engine.search(woman("b"), 1.0) is None


def test_empty_containers_are_dropped() -> None:
    engine = MatchingEngine()
    for i, countries in enumerate([frozenset(), frozenset({"DE", "FR"}), frozenset({"IT"})]):
        engine.search(man(f"m{i}", "AT", countries=countries), float(i))
    for i in range(3):
        engine.cancel(f"m{i}")
    tables = engine._index
    assert all(not table for wants in tables.values() for table in wants.values())


# Random interleavings against a brute-force reference


def test_a_blocked_pair_is_never_matched_again() -> None:
    engine = MatchingEngine(rematch_after=30.0)
    pair_up(engine, woman("a"), man("b"), 0.0)
    engine.block("a", "b")
    assert engine.is_blocked("b", "a")
    assert engine.search(woman("a"), 1.0) is None
    assert engine.search(man("b"), 1.0) is None
    assert engine.next_poll_at() is None  # recency would have lifted; the block does not
    assert engine.poll(10_000.0) == []
    assert engine.search(man("b"), 10_000.0) is None
    assert engine.search(man("c"), 10_000.0) == Pair("a", "c")


def test_a_block_lasts_until_either_is_forgotten() -> None:
    engine = MatchingEngine()
    engine.block("a", "b")
    engine.block("a", "c")
    assert [engine.has_blocks(user) for user in "abcd"] == [True, True, True, False]
    engine.forget("b")
    assert [engine.has_blocks(user) for user in "abc"] == [True, False, True]
    engine.forget("a")
    assert not any(engine.has_blocks(user) for user in "abc") and engine._blocked == {}


def test_a_block_drops_the_event_that_would_have_paired_them() -> None:
    engine = MatchingEngine(rematch_after=30.0)
    pair_up(engine, woman("a"), man("b"), 0.0)
    assert engine.search(woman("a"), 1.0) is None
    assert engine.search(man("b"), 1.0) is None
    assert engine.next_poll_at() == 31.0
    engine.block("b", "a")
    assert engine.next_poll_at() is None
    assert engine.poll(100.0) == []


def test_forget_drops_blocks() -> None:
    engine = MatchingEngine()
    engine.block("a", "b")
    engine.block("a", "c")
    engine.block("a", "a")
    engine.forget("a")
    assert not engine.is_blocked("b", "a") and not engine.is_blocked("a", "c")
    assert engine._blocked == {}


# Retracted pairs


def test_a_retracted_pair_is_matched_again_at_once() -> None:
    engine = MatchingEngine(recent_partners=10, recent_seconds=600.0, rematch_after=30.0)
    pair_up(engine, man("a"), woman("b"), 0.0)
    engine.retract(Pair("a", "b"))
    assert engine._history == {}
    assert engine.search(man("a"), 1.0) is None
    assert engine.search(woman("b"), 1.0) == Pair("a", "b")  # not kept apart by recency


def test_retract_leaves_the_other_partners() -> None:
    engine = MatchingEngine(recent_partners=10, recent_seconds=600.0, rematch_after=30.0)
    pair_up(engine, man("a"), woman("c"), 0.0)
    pair_up(engine, man("d"), woman("b"), 1.0)
    pair_up(engine, man("a"), woman("b"), 2.0)
    engine.retract(Pair("a", "b"))
    assert engine._history == {"a": {"c": 600.0}, "b": {"d": 601.0}, "c": {"a": 600.0}, "d": {"b": 601.0}}
    assert engine.search(man("a"), 3.0) is None
    assert engine.search(woman("c"), 3.0) is None  # still a's recent partner
    assert engine.search(woman("b"), 3.0) == Pair("a", "b")


def test_retract_only_undoes_a_pairing_that_is_still_the_latest() -> None:
    engine = MatchingEngine(recent_partners=10, recent_seconds=600.0, rematch_after=30.0)
    pair_up(engine, man("a"), woman("b"), 0.0)
    pair_up(engine, man("a"), woman("c"), 1.0)  # a met c since; b met nobody
    engine.retract(Pair("a", "b"))
    assert engine._history == {"a": {"b": 600.0, "c": 601.0}, "c": {"a": 601.0}}
    assert engine.search(woman("b"), 2.0) is None
    assert engine.search(man("a"), 2.0) is None  # a's side still keeps them apart


def test_partners_pushed_out_by_a_retracted_pairing_stay_out() -> None:
    engine = MatchingEngine(recent_partners=1, recent_seconds=600.0, rematch_after=30.0)
    pair_up(engine, man("a"), woman("c"), 0.0)
    pair_up(engine, man("a"), woman("b"), 1.0)
    engine.retract(Pair("b", "a"))
    assert engine._history == {"c": {"a": 600.0}}


def test_retract_of_unknown_users_or_of_no_pairing_changes_nothing() -> None:
    engine = MatchingEngine()
    engine.retract(Pair("x", "y"))
    pair_up(engine, man("a"), woman("b"), 0.0)
    pair_up(engine, man("c"), woman("d"), 0.0)
    engine.retract(Pair("a", "d"))
    engine.retract(Pair("a", "x"))
    assert engine._history == {"a": {"b": 600.0}, "b": {"a": 600.0}, "c": {"d": 600.0}, "d": {"c": 600.0}}


def test_retract_while_one_waits_again_empties_the_history_its_entry_holds() -> None:
    engine = MatchingEngine(recent_partners=10, recent_seconds=600.0, rematch_after=30.0)
    pair_up(engine, man("a"), woman("b"), 0.0)
    assert engine.search(man("a"), 1.0) is None
    held = engine._entries["a"].history
    assert held is engine._history["a"]
    engine.retract(Pair("a", "b"))
    assert held == {} and "a" not in engine._history
    assert engine.search(woman("b"), 2.0) == Pair("a", "b")
    assert engine._history["a"] == {"b": 602.0} and held == {}  # a new dict, as for a first match


def test_retract_while_both_wait_again_lets_poll_pair_them_at_once() -> None:
    engine = MatchingEngine(recent_partners=10, recent_seconds=600.0, rematch_after=30.0)
    pair_up(engine, man("a"), woman("b"), 0.0)
    assert engine.search(man("a"), 1.0) is None
    assert engine.search(woman("b"), 2.0) is None
    assert engine.next_poll_at() == 31.0
    engine.retract(Pair("a", "b"))
    due = engine.next_poll_at()
    assert due is not None and due <= 2.0
    assert engine.poll(2.0) == [Pair("a", "b")]
    assert engine.next_poll_at() is None


class Reference:
    """A slow, obviously correct model of who may be matched with whom."""

    def __init__(self, recent_partners: int, recent_seconds: float, rematch_after: float) -> None:
        self.recent_partners = recent_partners
        self.recent_seconds = recent_seconds
        self.rematch_after = rematch_after
        self.matches: dict[str, list[tuple[str, float]]] = {}
        self.blocked: set[frozenset[str]] = set()

    def record(self, a: str, b: str, now: float) -> None:
        self.matches.setdefault(a, []).append((b, now))
        self.matches.setdefault(b, []).append((a, now))

    def forget(self, sid: str) -> None:
        self.matches.pop(sid, None)
        self.blocked = {pair for pair in self.blocked if sid not in pair}

    def retract(self, a: str, b: str) -> None:
        """Each one whose latest match is the other keeps only its other recent partners, as last matched."""
        for me, other in ((a, b), (b, a)):
            records = self.matches.get(me)
            if records and records[-1][0] == other:
                latest = self.latest(me)
                del latest[other]
                self.matches[me] = list(reversed(latest.items()))

    def latest(self, me: str) -> dict[str, float]:
        """The last `recent_partners` distinct partners of `me`, the latest first, with when they last met."""
        latest: dict[str, float] = {}
        for partner, t in reversed(self.matches.get(me, [])):
            if partner not in latest:
                if len(latest) == self.recent_partners:
                    break
                latest[partner] = t
        return latest

    def is_recent(self, me: str, other: str, now: float) -> bool:
        latest = self.latest(me)
        return other in latest and now < latest[other] + self.recent_seconds

    def compatible(self, a: Seeker, a_since: float, b: Seeker, b_since: float, now: float) -> bool:
        if a.session_id == b.session_id:
            return False
        if a.want not in ("any", b.gender) or b.want not in ("any", a.gender):
            return False
        if a.countries and b.country not in a.countries:
            return False
        if b.countries and a.country not in b.countries:
            return False
        if frozenset((a.session_id, b.session_id)) in self.blocked:
            return False
        if now >= a_since + self.rematch_after or now >= b_since + self.rematch_after:
            return True
        return not (
            self.is_recent(a.session_id, b.session_id, now) or self.is_recent(b.session_id, a.session_id, now)
        )


SESSIONS = [f"s{i}" for i in range(6)]
COUNTRIES = ["DE", "FR", "US"]

# Preferences drawn so that most pairs are compatible and recency is what keeps them apart.
profiles = st.builds(
    Seeker,
    session_id=st.just(""),
    gender=st.sampled_from(["m", "f", "f", "u"]),
    country=st.sampled_from([None, "DE", "DE", "FR", "US"]),
    want=st.sampled_from(["any", "any", "m", "f"]),
    countries=st.one_of(
        st.just(frozenset[str]()), st.frozensets(st.sampled_from(COUNTRIES), min_size=1, max_size=2)
    ),
)


class EngineMachine(RuleBasedStateMachine):
    """Random searches, cancels, forgets, retracts and clock advances, each checked against the reference."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.order = 0
        # session id -> (seeker, enqueue time, enqueue order)
        self.waiting: dict[str, tuple[Seeker, float, int]] = {}
        self.chatting: dict[str, str] = {}
        self.profiles: dict[str, Seeker] = {}

    @initialize(
        config=st.sampled_from(
            [(2, 50.0, 30.0), (3, 20.0, 30.0), (1, 30.0, 30.0), (10, 600.0, 30.0), (2, 10.0, 45.0)]
        )
    )
    def configure(self, config: tuple[int, float, float]) -> None:
        self.engine = MatchingEngine(*config)
        self.ref = Reference(*config)

    def end_chat(self, sid: str) -> None:
        other = self.chatting.pop(sid, None)
        if other is not None:
            del self.chatting[other]

    def accept(self, pair: Pair) -> None:
        """Check a pair the engine made at `now` and apply it to the model."""
        assert pair.waiting != pair.arriving
        for sid in (pair.waiting, pair.arriving):
            assert sid not in self.chatting
        self.ref.record(pair.waiting, pair.arriving, self.now)
        self.chatting[pair.waiting] = pair.arriving
        self.chatting[pair.arriving] = pair.waiting

    @rule(sid=st.sampled_from(SESSIONS), profile=profiles)
    def search_as_someone_else(self, sid: str, profile: Seeker) -> None:
        self.profiles[sid] = replace(profile, session_id=sid)
        self.search(self.profiles[sid])

    @rule(sid=st.sampled_from(SESSIONS))
    def search_again(self, sid: str) -> None:
        self.search(self.profiles.get(sid, Seeker(sid, "f" if sid < "s3" else "m", "DE")))

    @rule(sid=st.sampled_from(SESSIONS))
    def search_once_more(self, sid: str) -> None:
        self.search_again(sid)

    def search(self, seeker: Seeker) -> None:
        sid = seeker.session_id
        self.end_chat(sid)
        self.waiting.pop(sid, None)
        candidates = sorted(
            (order, other_sid)
            for other_sid, (other, since, order) in self.waiting.items()
            if self.ref.compatible(seeker, self.now, other, since, self.now)
        )
        result = self.engine.search(seeker, self.now)
        if candidates:
            # Fairness: the earliest-enqueued compatible waiter, and only a compatible one.
            assert result == Pair(candidates[0][1], sid)
            del self.waiting[result.waiting]
            self.accept(result)
        else:
            assert result is None
            self.waiting[sid] = (seeker, self.now, self.order)
            self.order += 1

    @precondition(lambda self: self.chatting)
    @rule(data=st.data())
    def both_search_again(self, data: st.DataObject) -> None:
        """Two partners hang up and both look for someone new, which recency mostly forbids being each other."""
        first = data.draw(st.sampled_from(sorted(self.chatting)))
        second = self.chatting[first]
        self.search_again(first)
        self.search_again(second)

    @rule(sid=st.sampled_from(SESSIONS))
    def cancel(self, sid: str) -> None:
        assert self.engine.cancel(sid) is (sid in self.waiting)
        self.waiting.pop(sid, None)

    @rule(sid=st.sampled_from(SESSIONS))
    def forget(self, sid: str) -> None:
        self.engine.forget(sid)
        self.waiting.pop(sid, None)
        self.end_chat(sid)
        self.ref.forget(sid)

    @rule(a=st.sampled_from(SESSIONS), b=st.sampled_from(SESSIONS))
    def block(self, a: str, b: str) -> None:
        """One reports the other (mostly a partner, as in the server; any two here)."""
        self.engine.block(a, b)
        if a != b:
            self.ref.blocked.add(frozenset((a, b)))

    @precondition(lambda self: self.chatting)
    @rule(data=st.data())
    def report_partner(self, data: st.DataObject) -> None:
        first = data.draw(st.sampled_from(sorted(self.chatting)))
        self.block(first, self.chatting[first])

    @precondition(lambda self: self.chatting)
    @rule(data=st.data())
    def retract_partners(self, data: st.DataObject) -> None:
        """A pair could not be used (a claim lost): they never met."""
        first = data.draw(st.sampled_from(sorted(self.chatting)))
        self.retract(first, self.chatting[first])

    @rule(a=st.sampled_from(SESSIONS), b=st.sampled_from(SESSIONS))
    def retract(self, a: str, b: str) -> None:
        """Any two, whether or not their pairing is the latest, or they wait again by now."""
        self.engine.retract(Pair(a, b))
        self.ref.retract(a, b)
        if self.chatting.get(a) == b:
            self.end_chat(a)
        self.tick(self.now)  # a node polls when the engine says

    @rule(sid=st.sampled_from(SESSIONS))
    def hang_up(self, sid: str) -> None:
        self.end_chat(sid)

    @rule(dt=st.sampled_from([0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 45.0, 100.0]))
    def advance(self, dt: float) -> None:
        self.tick(self.now + dt)

    @precondition(lambda self: self.engine.next_poll_at() is not None)
    @rule()
    def advance_to_next_poll(self) -> None:
        at = self.engine.next_poll_at()
        assert at is not None
        self.tick(max(self.now, at))

    def tick(self, now: float) -> None:
        due = self.engine.next_poll_at()
        self.now = now
        pairs = self.engine.poll(now)
        # next_poll_at is exact: poll has something to return exactly when it said so.
        assert bool(pairs) == (due is not None and due <= now)
        for pair in pairs:
            assert pair.waiting in self.waiting and pair.arriving in self.waiting
            seeker_w, since_w, order_w = self.waiting[pair.waiting]
            seeker_a, since_a, order_a = self.waiting[pair.arriving]
            assert order_w < order_a
            assert self.ref.compatible(seeker_w, since_w, seeker_a, since_a, now)
            del self.waiting[pair.waiting]
            del self.waiting[pair.arriving]
            self.accept(pair)
        nxt = self.engine.next_poll_at()
        assert nxt is None or nxt > now

    @invariant()
    def queue_matches_the_model(self) -> None:
        assert len(self.engine) == len(self.waiting)
        lengths = self.engine.queue_lengths()
        assert sum(lengths.values()) == len(self.engine)
        for (gender, want), n in lengths.items():
            assert n == sum(s.gender == gender and s.want == want for s, _, _ in self.waiting.values())
        for sid in SESSIONS:
            assert self.engine.is_waiting(sid) is (sid in self.waiting)
            assert not (sid in self.waiting and sid in self.chatting)
            if sid in self.waiting:
                assert self.engine.waiting_seeker(sid) == self.waiting[sid][0]

    @invariant()
    def no_two_waiting_users_are_compatible(self) -> None:
        items = list(self.waiting.values())
        for i, (a, a_since, _) in enumerate(items):
            for b, b_since, _ in items[i + 1 :]:
                assert not self.ref.compatible(a, a_since, b, b_since, self.now), (a, b)


EngineMachine.TestCase.settings = settings(
    derandomize=True, deadline=None, max_examples=300, stateful_step_count=60
)
TestEngineMachine = EngineMachine.TestCase


def test_expire_drops_the_spent_histories_of_users_who_do_not_wait() -> None:
    engine = MatchingEngine(recent_partners=10, recent_seconds=600.0, rematch_after=30.0)
    pair_up(engine, man("a"), woman("b"), 0.0)
    pair_up(engine, man("c"), woman("d"), 100.0)
    assert engine.search(man("a"), 200.0) is None  # a waits again: its history stays as it is
    assert engine.expire(599.0) == 0
    assert engine.expire(600.0) == 1  # b's: a waits
    assert set(engine._history) == {"a", "c", "d"}
    assert engine.expire(700.0) == 2 and set(engine._history) == {"a"}
    assert engine.search(woman("b"), 701.0) == Pair("a", "b")  # long past recent: they may meet
