"""A visitor's decisions, by calling: events and times in, messages out; no clock, no connection."""

from __future__ import annotations

import random
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from vchat.bot.behaviour import BotSettings
from vchat.bot.fakesdp import make_offer
from vchat.bot.stats import BotStats
from vchat.bot.visitor import Visitor, VisitorState
from vchat.protocol.messages import CLIENT_TYPES

_SETTINGS = BotSettings(
    dwell_min=2.0,
    dwell_max=2.0,
    ping_interval=1.0,
    search_timeout=3.0,
    gender_filter_rate=0,
    country_filter_rate=0,
)
_WELCOME = {"type": "welcome", "session_id": "s1", "resume_token": "tok1", "online": 1, "country": None}


def _visitor(settings: BotSettings = _SETTINGS) -> tuple[Visitor, BotStats]:
    stats = BotStats()
    return Visitor({"age_confirmed": True, "gender": "f"}, random.Random(5), settings, stats), stats


def _online(visitor: Visitor, now: float = 0.0) -> list[dict[str, Any]]:
    """Connect, say hello and get a welcome: returns what the welcome made the visitor send."""
    visitor.start()
    assert visitor.state is VisitorState.CONNECTING and visitor.wake_at is None
    [hello] = visitor.opened()
    assert hello == {"type": "hello", "age_confirmed": True, "gender": "f"}
    assert visitor.state is VisitorState.GREETING
    return visitor.on_message(dict(_WELCOME), now)


def _types(messages: list[dict[str, Any]]) -> list[str]:
    return [m["type"] for m in messages]


def test_welcome_starts_a_search_and_the_pings() -> None:
    visitor, stats = _visitor()
    assert _online(visitor, now=10.0) == [{"type": "search", "want": "any"}]
    assert visitor.state is VisitorState.SEARCHING
    ping_due = visitor.wake_at
    assert ping_due is not None and 10.8 <= ping_due <= 11.2
    assert visitor.tick(ping_due - 0.01) == []
    [ping] = visitor.tick(ping_due)
    assert ping == {"type": "ping", "id": 1}
    assert visitor.on_message({"type": "pong", "re": 1}, ping_due + 0.005) == []
    summary = stats.rtt_ms.summary()
    assert summary is not None and summary["count"] == 1 and abs(summary["p50"] - 5.0) < 1e-6


def test_a_match_runs_its_script_then_next() -> None:
    visitor, stats = _visitor(BotSettings(dwell_min=2.0, dwell_max=2.0, ping_interval=100.0))
    _online(visitor)
    sent = visitor.on_message({"type": "matched", "match_id": "m1", "role": "offer", "partner": {}}, 0.5)
    assert _types(sent) == ["signal"] * 4 and sent[0]["payload"]["type"] == "offer"
    assert stats.time_to_match_ms.summary()["p50"] == 500.0  # type: ignore[index]
    chats = visitor.tick(2.49)
    assert 1 <= _types(chats).count("chat") <= 2 and "next" not in _types(chats)
    assert visitor.tick(2.5) == [{"type": "next"}]
    assert visitor.state is VisitorState.SEARCHING


def test_a_search_nobody_answers_is_stopped_and_started_afresh() -> None:
    visitor, stats = _visitor(BotSettings(search_timeout=3.0, ping_interval=100.0))
    _online(visitor)
    assert visitor.wake_at == 3.0
    assert visitor.tick(3.0) == [{"type": "stop"}]
    assert stats.abandoned_searches == 1
    # the server matched us before our stop arrived: the stop ends that match, the visitor waits for idle
    assert (
        visitor.on_message({"type": "matched", "match_id": "late", "role": "offer", "partner": {}}, 3.1) == []
    )
    assert visitor.on_message({"type": "idle"}, 3.2) == []
    assert visitor.state is VisitorState.IDLE
    assert _types(visitor.tick(3.6)) == ["search"]


def test_a_lost_connection_backs_off_and_resumes_the_match() -> None:
    visitor, stats = _visitor()
    _online(visitor)
    visitor.on_message({"type": "matched", "match_id": "m1", "role": "answer", "partner": {}}, 1.0)
    visitor.lost(1006, 1.5)
    assert visitor.state is VisitorState.WAITING and (stats.drops, stats.connected, stats.matched) == (
        1,
        0,
        0,
    )
    assert visitor.wake_at is not None and 1.5 < visitor.wake_at <= 1.5 + _SETTINGS.reconnect_base
    assert visitor.tick(visitor.wake_at) == []
    assert visitor.state is VisitorState.CONNECTING
    visitor.connect_failed(2.0)
    assert stats.connect_failures == 1 and visitor.state is VisitorState.WAITING
    assert visitor.wake_at is not None and visitor.wake_at <= 2.0 + 2 * _SETTINGS.reconnect_base
    visitor.tick(visitor.wake_at)
    [hello] = visitor.opened()
    assert hello["resume"] == "tok1"
    resumed = {
        "type": "welcome",
        "resume_token": "tok2",
        "resumed": True,
        "match": {"match_id": "m1", "role": "answer"},
    }
    assert visitor.on_message(resumed, 3.0) == []
    assert visitor.state is VisitorState.MATCHED and stats.reconnects == 1 and stats.ever_connected == 1
    assert stats.close_codes == {1006: 1}


def test_a_search_given_up_before_a_drop_does_not_outlive_it() -> None:
    visitor, _ = _visitor(BotSettings(search_timeout=3.0, ping_interval=100.0))
    _online(visitor)
    visitor.tick(3.0)  # stop sent; its idle never comes, as the connection drops
    visitor.lost(1006, 3.1)
    assert visitor.wake_at is not None
    visitor.tick(visitor.wake_at)
    visitor.opened()
    assert _types(visitor.on_message(dict(_WELCOME), 4.0)) == ["search"]
    sent = visitor.on_message({"type": "matched", "match_id": "m2", "role": "offer", "partner": {}}, 4.5)
    assert visitor.state is VisitorState.MATCHED and "signal" in _types(sent)


def test_while_the_partner_is_away_nothing_is_sent_to_it() -> None:
    visitor, _ = _visitor(BotSettings(dwell_min=2.0, dwell_max=2.0, ping_interval=100.0))
    _online(visitor)
    visitor.on_message({"type": "matched", "match_id": "m1", "role": "answer", "partner": {}}, 0.0)
    visitor.on_message({"type": "partner_reconnecting", "match_id": "m1"}, 0.1)
    offer = {
        "type": "signal",
        "match_id": "m1",
        "payload": {"type": "offer", "sdp": make_offer(random.Random(1))},
    }
    assert visitor.on_message(offer, 0.2) == []
    assert visitor.tick(1.99) == []  # the chat lines are skipped
    visitor.on_message({"type": "partner_resumed", "match_id": "m1"}, 1.995)
    assert visitor.tick(2.0) == [{"type": "next"}]


def test_a_stopped_visitor_says_nothing_and_waits_for_nothing() -> None:
    visitor, stats = _visitor()
    _online(visitor)
    visitor.stop()
    assert visitor.state is VisitorState.STOPPED and visitor.wake_at is None
    assert stats.connected == 0
    assert visitor.on_message({"type": "matched", "match_id": "m1", "role": "offer"}, 1.0) == []
    assert visitor.tick(100.0) == [] and visitor.opened() == []
    visitor.lost(1000, 2.0)
    visitor.connect_failed(2.0)
    assert visitor.state is VisitorState.STOPPED and visitor.wake_at is None
    assert stats.close_codes == {1000: 1} and stats.drops == 0


def test_bad_frames_and_unknown_messages_are_counted() -> None:
    visitor, stats = _visitor()
    _online(visitor)
    visitor.on_bad_frame()
    assert visitor.on_message({"type": "surprise"}, 1.0) == []
    assert visitor.on_message({"no": "type"}, 1.0) == []
    assert stats.error_codes == {"undecodable": 1} and stats.messages_received == 3


# --- any order of events ------------------------------------------------------------------------------

_MATCH_IDS = st.sampled_from(("m1", "m2"))
_OFFER = make_offer(random.Random(2))
_SERVER_MESSAGES = st.one_of(
    st.builds(
        lambda match_id, role: {"type": "matched", "match_id": match_id, "role": role, "partner": {}},
        _MATCH_IDS,
        st.sampled_from(("offer", "answer")),
    ),
    st.builds(
        lambda kind, match_id: {"type": kind, "match_id": match_id, "reason": "next"},
        st.sampled_from(("partner_left", "partner_reconnecting", "partner_resumed")),
        _MATCH_IDS,
    ),
    st.builds(
        lambda match_id: {
            "type": "signal",
            "match_id": match_id,
            "payload": {"type": "offer", "sdp": _OFFER},
        },
        _MATCH_IDS,
    ),
    st.builds(lambda re: {"type": "pong", "re": re}, st.integers(0, 3)),
    st.sampled_from(
        (
            {"type": "idle"},
            {"type": "searching"},
            {"type": "error", "code": "no_match"},
            {"type": "error", "code": "rate_limited"},
        )
    ),
)
_CONNECTED = frozenset(
    {VisitorState.GREETING, VisitorState.IDLE, VisitorState.SEARCHING, VisitorState.MATCHED}
)


class VisitorMachine(RuleBasedStateMachine):
    """Any order of connection events, server messages and clock advances keeps a visitor consistent."""

    def __init__(self) -> None:
        super().__init__()
        self.stats = BotStats()
        settings = BotSettings(search_timeout=2.0, gender_filter_rate=0.5, country_filter_rate=0.5)
        self.visitor = Visitor({"age_confirmed": True, "gender": "m"}, random.Random(7), settings, self.stats)
        self.visitor.start()
        self.now = 0.0

    def connected(self) -> bool:
        return self.visitor.state in _CONNECTED

    def check_sent(self, sent: list[dict[str, Any]]) -> None:
        """Only a connected visitor speaks, and only the client messages the server knows."""
        assert not sent or self.connected()
        assert {m["type"] for m in sent} <= CLIENT_TYPES
        assert all(isinstance(m["match_id"], str) for m in sent if m["type"] in ("signal", "chat", "typing"))

    @rule(seconds=st.floats(0, 5))
    def tick(self, seconds: float) -> None:
        self.now += seconds
        self.check_sent(self.visitor.tick(self.now))
        wake_at = self.visitor.wake_at
        assert wake_at is None or wake_at > self.now

    @precondition(lambda self: self.visitor.state is VisitorState.CONNECTING)
    @rule()
    def opened(self) -> None:
        self.check_sent(self.visitor.opened())

    @precondition(lambda self: self.visitor.state is VisitorState.CONNECTING)
    @rule()
    def connect_failed(self) -> None:
        self.visitor.connect_failed(self.now)

    @precondition(lambda self: self.connected() or self.visitor.state is VisitorState.CONNECTING)
    @rule(code=st.sampled_from((None, 1000, 1006, 4000)))
    def lost(self, code: int | None) -> None:
        self.visitor.lost(code, self.now)

    @precondition(lambda self: self.connected())
    @rule(resumed=st.booleans(), match_id=st.none() | _MATCH_IDS)
    def welcome(self, resumed: bool, match_id: str | None) -> None:
        match = {"match_id": match_id, "role": "answer"} if match_id else None
        message = {"type": "welcome", "resume_token": "tok", "resumed": resumed, "match": match}
        self.check_sent(self.visitor.on_message(message, self.now))

    @precondition(lambda self: self.connected())
    @rule(message=_SERVER_MESSAGES)
    def receive(self, message: dict[str, Any]) -> None:
        self.check_sent(self.visitor.on_message(message, self.now))

    @rule()
    def stop(self) -> None:
        self.visitor.stop()
        assert self.visitor.wake_at is None

    @invariant()
    def gauges_follow_the_state(self) -> None:
        state = self.visitor.state
        assert self.stats.connected == (state in _CONNECTED - {VisitorState.GREETING})
        assert self.stats.searching == (state is VisitorState.SEARCHING)
        assert self.stats.matched == (state is VisitorState.MATCHED)

    @invariant()
    def waits_only_when_it_should(self) -> None:
        """Backing off waits on the clock; connecting and stopped wait on nothing the visitor controls."""
        state = self.visitor.state
        if state is VisitorState.WAITING:
            assert self.visitor.wake_at is not None
        if state in (VisitorState.CONNECTING, VisitorState.STOPPED):
            assert self.visitor.wake_at is None


test_any_order_of_events_keeps_the_visitor_consistent = VisitorMachine.TestCase
