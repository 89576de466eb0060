"""Bots carrying out their visitors' decisions on a `Clock` and a fake connection; a fleet over loopback."""

from __future__ import annotations

import random
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from vchat.bot.behaviour import BotSettings
from vchat.bot.fakesdp import make_offer, media_sections
from vchat.bot.fleet import Bot, BotFleet
from vchat.bot.stats import BotStats
from vchat.bot.visitor import VisitorState


class FakeLink:
    """Records what the bot sends."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.closed = False

    def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def close(self) -> None:
        self.closed = True

    def types(self) -> list[str]:
        return [m["type"] for m in self.sent]

    def take(self) -> list[dict[str, Any]]:
        sent, self.sent = self.sent, []
        return sent


class FakeHost:
    """A fleet of one: a `Clock`, a seeded random source and hand-fired connection attempts."""

    def __init__(self, settings: BotSettings | None = None) -> None:
        self.clock = Clock()
        self.rng = random.Random(5)
        self.settings = settings or BotSettings(
            dwell_min=2.0, dwell_max=2.0, ping_interval=1.0, gender_filter_rate=0, country_filter_rate=0
        )
        self.stats = BotStats()
        self.attempts: list[defer.Deferred[Any]] = []

    def connect(self, bot: Bot) -> defer.Deferred[Any]:
        attempt: defer.Deferred[Any] = defer.Deferred()
        self.attempts.append(attempt)
        return attempt


def _online(host: FakeHost, resumed: dict[str, Any] | None = None) -> tuple[Bot, FakeLink]:
    """A bot that connected, said hello and got a welcome."""
    bot = Bot(host, {"age_confirmed": True, "gender": "f"})
    bot.start()
    link = FakeLink()
    host.attempts[-1].callback(link)
    bot.on_open(link)
    [hello] = link.take()
    assert hello["type"] == "hello" and hello["age_confirmed"] is True
    bot.on_message(
        {"type": "welcome", "session_id": "s1", "resume_token": "tok1", "online": 1, "country": None}
    )
    return bot, link


def test_hello_then_search() -> None:
    host = FakeHost()
    bot, link = _online(host)
    assert link.take() == [{"type": "search", "want": "any"}]
    assert bot.state is VisitorState.SEARCHING
    assert (host.stats.connected, host.stats.searching, host.stats.ever_connected) == (1, 1, 1)


def test_offerer_sends_offer_and_candidates_then_chats_then_next() -> None:
    host = FakeHost()
    bot, link = _online(host)
    link.take()
    host.clock.advance(0.25)
    bot.on_message({"type": "matched", "match_id": "m1", "role": "offer", "partner": {"gender": "m"}})
    assert host.stats.time_to_match_ms.summary()["p50"] == 250.0  # type: ignore[index]
    sent = link.take()
    assert [m["type"] for m in sent] == ["signal"] * 4
    offer = sent[0]["payload"]
    assert offer["type"] == "offer" and [s.kind for s in media_sections(offer["sdp"])] == ["audio", "video"]
    assert all(m["match_id"] == "m1" for m in sent)
    assert all("candidate" in m["payload"] for m in sent[1:])
    assert (host.stats.matched, host.stats.searching) == (1, 0)
    host.clock.advance(1.99)
    chats = [m for m in link.sent if m["type"] == "chat"]
    assert 1 <= len(chats) <= 2 and all(m["match_id"] == "m1" and m["text"] for m in chats)
    assert link.types().count("typing") == len(chats)
    link.take()
    host.clock.advance(0.02)
    assert link.take() == [{"type": "next"}]
    assert bot.state is VisitorState.SEARCHING
    host.clock.advance(0.1)
    bot.on_message({"type": "matched", "match_id": "m2", "role": "answer", "partner": {}})
    assert host.stats.time_to_match_ms.count == 2
    assert host.stats.matches == 2 and host.stats.matches_as_offerer == 1


def test_answerer_answers_the_offer() -> None:
    host = FakeHost()
    bot, link = _online(host)
    bot.on_message({"type": "matched", "match_id": "m1", "role": "answer", "partner": {}})
    link.take()
    offer = make_offer(random.Random(1))
    bot.on_message({"type": "signal", "match_id": "m1", "payload": {"type": "offer", "sdp": offer}})
    sent = link.take()
    assert sent[0]["payload"]["type"] == "answer" and "a=setup:active" in sent[0]["payload"]["sdp"]
    assert len(sent) == 1 + host.settings.candidates
    # a stale offer (another match) or a candidate gets no answer
    bot.on_message({"type": "signal", "match_id": "old", "payload": {"type": "offer", "sdp": offer}})
    bot.on_message({"type": "signal", "match_id": "m1", "payload": {"candidate": "x", "sdpMid": "0"}})
    assert link.sent == []
    assert host.stats.messages_relayed == 3


def test_partner_left_means_search_again_but_not_for_a_match_already_left() -> None:
    host = FakeHost()
    bot, link = _online(host)
    bot.on_message({"type": "matched", "match_id": "m1", "role": "answer", "partner": {}})
    link.take()
    bot.on_message({"type": "partner_left", "match_id": "m1", "reason": "next"})
    assert bot.state is VisitorState.IDLE
    host.clock.advance(0.5)
    assert link.take() == [{"type": "search", "want": "any"}]
    # we pressed next just as the partner did: its partner_left is for a match we left
    bot.on_message({"type": "matched", "match_id": "m2", "role": "offer", "partner": {}})
    host.clock.advance(2.0)
    assert link.types()[-1] == "next"
    link.take()
    bot.on_message({"type": "partner_left", "match_id": "m2", "reason": "next"})
    host.clock.advance(1.0)
    assert "search" not in link.types()
    assert host.stats.partner_left == {"next": 2}


def test_ping_pong_measures_rtt() -> None:
    host = FakeHost()
    bot, link = _online(host)
    link.take()
    host.clock.advance(1.25)
    [ping] = link.take()
    assert ping["type"] == "ping" and isinstance(ping["id"], int)
    host.clock.advance(0.004)
    bot.on_message({"type": "pong", "re": ping["id"]})
    bot.on_message({"type": "pong", "re": ping["id"]})  # a duplicate doesn't count
    bot.on_message({"type": "pong", "re": 999})
    summary = host.stats.rtt_ms.summary()
    assert summary is not None and summary["count"] == 1 and summary["p50"] == pytest.approx(4.0)


def test_errors_are_counted() -> None:
    host = FakeHost()
    bot, _ = _online(host)
    bot.on_message({"type": "error", "code": "no_match", "message": "gone"})
    bot.on_message({"type": "error", "code": "rate_limited", "message": "slow down"})
    assert (host.stats.errors, host.stats.expected_errors) == (1, 1)
    bot.on_message({"type": "surprise"})
    bot.on_bad_frame()
    assert host.stats.messages_received == 4 and host.stats.error_codes["undecodable"] == 1


def test_search_that_takes_too_long_is_stopped_and_retried() -> None:
    host = FakeHost(BotSettings(search_timeout=3.0, country_filter_rate=1.0))
    bot, link = _online(host)
    [search] = link.take()
    assert search["countries"]
    host.clock.advance(3.0)
    assert [m["type"] for m in link.take() if m["type"] != "ping"] == ["stop"]
    assert host.stats.abandoned_searches == 1
    bot.on_message({"type": "matched", "match_id": "late", "role": "offer", "partner": {}})
    assert [m for m in link.take() if m["type"] != "ping"] == []  # our stop ends this match
    bot.on_message({"type": "idle"})
    host.clock.advance(0.5)
    assert "search" in [m["type"] for m in link.take()]


def test_drop_backs_off_then_resumes() -> None:
    host = FakeHost()
    bot, link = _online(host)
    bot.on_message({"type": "matched", "match_id": "m1", "role": "answer", "partner": {}})
    bot.on_lost(link, 1006)
    assert (host.stats.drops, host.stats.connected, host.stats.matched) == (1, 0, 0)
    assert bot.state is VisitorState.WAITING and bot.timer_pending
    assert len(host.attempts) == 1
    host.clock.advance(host.settings.reconnect_base)
    assert len(host.attempts) == 2
    host.attempts[-1].errback(ConnectionRefusedError())
    assert host.stats.connect_failures == 1
    host.clock.advance(2 * host.settings.reconnect_base)
    new_link = FakeLink()
    host.attempts[-1].callback(new_link)
    bot.on_open(new_link)
    [hello] = new_link.take()
    assert hello["resume"] == "tok1"
    bot.on_message(
        {
            "type": "welcome",
            "resume_token": "tok2",
            "resumed": True,
            "match": {"match_id": "m1", "role": "answer", "partner": {}},
        }
    )
    assert bot.state is VisitorState.MATCHED and host.stats.reconnects == 1
    assert host.stats.ever_connected == 1 and host.stats.close_codes == {1006: 1}


def test_stop_closes_and_leaves_no_timers() -> None:
    host = FakeHost()
    bot, link = _online(host)
    bot.on_message({"type": "matched", "match_id": "m1", "role": "offer", "partner": {}})
    assert bot.timer_pending and len(host.clock.getDelayedCalls()) == 1  # one timer covers pings and chat
    bot.stop()
    assert link.closed and not bot.timer_pending and host.clock.getDelayedCalls() == []
    assert (host.stats.connected, host.stats.matched) == (0, 0)
    bot.on_lost(link, 1000)
    assert host.stats.drops == 0 and host.clock.getDelayedCalls() == []


def test_stop_while_connecting_cancels_the_attempt() -> None:
    host = FakeHost()
    cancelled: list[defer.Deferred[Any]] = []
    host.connect = lambda bot: defer.Deferred(canceller=cancelled.append)  # type: ignore[method-assign]
    bot = Bot(host, {"age_confirmed": True, "gender": "u"})
    bot.start()
    bot.stop()
    assert (
        len(cancelled) == 1
        and bot.state is VisitorState.STOPPED
        and host.stats.connect_failures == 0
        and host.clock.getDelayedCalls() == []
    )


def test_fleet_ramps_up_and_stop_waits_for_every_connection() -> None:
    reactor = MemoryReactorClock()
    fleet = BotFleet(reactor, "ws://127.0.0.1:9/ws", seed=1)
    fleet.start(3, ramp=3.0)
    assert len(fleet.bots) == 1 and len(reactor.tcpClients) == 1
    reactor.advance(1.0)
    assert len(fleet.bots) == 2
    # the first bot's TCP connection comes up; the second's is still on its way
    _host, _port, factory, _timeout, _bind = reactor.tcpClients[0]
    wrapper = factory.buildProtocol(None)
    wrapper.makeConnection(StringTransport())
    assert fleet.open_transports == 1
    first, second = fleet.stop(timeout=5.0), fleet.stop()
    assert not first.called and len(fleet.bots) == 2  # no more bots start
    reactor.advance(5.0)  # stragglers are aborted; their connections end
    wrapper.connectionLost(Failure(ConnectionDone()))
    assert first.called and second.called and fleet.stop().called
    assert fleet.open_transports == 0 and reactor.getDelayedCalls() == []
    assert all(bot.state is VisitorState.STOPPED for bot in fleet.bots)
    assert fleet.stats.close_codes == {1006: 1} and fleet.stats.connect_failures == 0
