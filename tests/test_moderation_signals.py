"""A session's behaviour signals: counts over a rolling window, and the user's own last messages, bounded."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vchat.moderation.signals import MATCH_WINDOW, RECENT_MESSAGES, Signals


def test_match_figures() -> None:
    signals = Signals()
    signals.match_started()
    assert signals.event == "match_started" and signals.matches_started == 1
    signals.match_ended(1.5, partner_left=True)
    signals.match_ended(60.0, partner_left=False)
    signals.match_ended(2.5, partner_left=True)
    assert signals.event == "match_ended"
    assert signals.matches == 3 and signals.window == 3 and signals.partner_left == 2
    assert signals.left_within(2.0) == 1 and signals.left_within(3.0) == 2
    assert signals.average_match_seconds() == 64.0 / 3


def test_the_match_window_rolls() -> None:
    signals = Signals()
    for _ in range(MATCH_WINDOW):
        signals.match_ended(1.0, partner_left=True)
    for _ in range(MATCH_WINDOW):
        signals.match_ended(100.0, partner_left=False)
    assert signals.matches == 2 * MATCH_WINDOW and signals.window == MATCH_WINDOW
    assert signals.partner_left == 0 and signals.left_within(10.0) == 0
    assert signals.average_match_seconds() == 100.0


def test_repeats_links_and_recent_messages() -> None:
    signals = Signals()
    signals.chat("hi")
    signals.chat("see https://spam.example/x")
    signals.chat("  HI ")
    assert signals.event == "chat" and signals.chats == 3 and signals.links == 1
    assert signals.repeats == 2 and signals.last_text == "  HI "
    assert list(signals.recent) == ["hi", "see https://spam.example/x", "  HI "]


def test_only_the_last_20_messages_are_kept_and_counted() -> None:
    signals = Signals()
    for _ in range(RECENT_MESSAGES):
        signals.chat("same")
    assert signals.repeats == RECENT_MESSAGES
    for n in range(RECENT_MESSAGES - 1):
        signals.chat(f"other {n}")
    signals.chat("same")
    assert signals.repeats == 1
    assert len(signals.recent) == RECENT_MESSAGES and signals.recent[0] == "other 0"


@given(st.lists(st.sampled_from(["a", "A ", "b", "www.x.com", "c"]), max_size=80))
def test_repeats_is_the_count_of_the_last_text_among_the_recent(texts: list[str]) -> None:
    signals = Signals()
    for text in texts:
        signals.chat(text)
        recent = [item.strip().casefold() for item in signals.recent]
        assert signals.repeats == recent.count(text.strip().casefold())
        assert len(signals.recent) <= RECENT_MESSAGES


def test_reports() -> None:
    signals = Signals()
    signals.reported()
    assert signals.event == "reported" and signals.reports == 1
