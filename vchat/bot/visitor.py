"""One simulated visitor's decisions: what to send on each event and when to act next. Pure: no I/O, time passed in."""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from typing import Any

from vchat.bot import behaviour, fakesdp
from vchat.bot.behaviour import BotSettings
from vchat.bot.stats import BotStats

Message = dict[str, Any]


class VisitorState(enum.Enum):
    """Where a visitor is in its life: the server's session states plus the connection's."""

    WAITING = "waiting"  # not started yet, or backing off before reconnecting
    CONNECTING = "connecting"  # TCP and WebSocket opening handshake
    GREETING = "greeting"  # hello sent, no welcome yet
    IDLE = "idle"
    SEARCHING = "searching"
    MATCHED = "matched"
    STOPPED = "stopped"


_ONLINE = frozenset({VisitorState.IDLE, VisitorState.SEARCHING, VisitorState.MATCHED})


class Visitor:
    """Says hello, searches, signals, chats, pings, presses next and reconnects, as events and `tick` say.

    Event methods return the messages to send now. A visitor in `CONNECTING` wants a connection; `wake_at` is
    when `tick` has work next. The visitor updates the fleet's counters, and nothing else outside itself.
    """

    __slots__ = (
        "_abandoning",
        "_alarm",
        "_attempt",
        "_match_id",
        "_match_started",
        "_outbox",
        "_partner_away",
        "_ping_due",
        "_ping_id",
        "_ping_sent_at",
        "_resume_token",
        "_rng",
        "_role",
        "_script",
        "_search_started",
        "_settings",
        "_stats",
        "_welcomed",
        "hello",
        "state",
    )

    def __init__(self, hello: Message, rng: random.Random, settings: BotSettings, stats: BotStats) -> None:
        self.hello = hello
        self.state = VisitorState.WAITING
        self._rng = rng
        self._settings = settings
        self._stats = stats
        self._outbox: list[Message] = []
        # the one pending step besides pings: (when, what), such as reconnecting or the next chat line
        self._alarm: tuple[float, Callable[[float], None]] | None = None
        self._ping_due: float | None = None
        self._ping_id = 0
        self._ping_sent_at = 0.0
        self._attempt = 0
        self._resume_token: str | None = None
        self._welcomed = False
        self._match_id: str | None = None
        self._role: str | None = None
        self._match_started = 0.0
        self._script: list[tuple[float, str]] = []
        self._search_started: float | None = None
        self._abandoning = False
        self._partner_away = False

    @property
    def wake_at(self) -> float | None:
        """When `tick` has something to do next, or None while there is nothing to wait for."""
        alarm, ping = self._alarm, self._ping_due
        if alarm is None:
            return ping
        return alarm[0] if ping is None else min(alarm[0], ping)

    # --- connection events ----------------------------------------------------------------------------

    def start(self) -> None:
        """Ask for the first connection."""
        if self.state is VisitorState.WAITING:
            self._alarm = None
            self._enter(VisitorState.CONNECTING)

    def stop(self) -> None:
        """Stop for good: nothing more to send or wait for."""
        self._enter(VisitorState.STOPPED)
        self._alarm = self._ping_due = None

    def connect_failed(self, now: float) -> None:
        """The connection attempt failed: back off before the next."""
        if self.state is VisitorState.STOPPED:
            return
        self._stats.connect_failures += 1
        self._back_off(now)

    def opened(self) -> list[Message]:
        """The WebSocket is open: say hello, resuming the last session if there was one."""
        if self.state is VisitorState.STOPPED:
            return []
        self._stats.connects += 1
        self._enter(VisitorState.GREETING)
        hello = dict(self.hello, type="hello")
        if self._resume_token is not None:
            hello["resume"] = self._resume_token
        self._send(hello)
        return self._flush()

    def lost(self, code: int | None, now: float) -> None:
        """The connection is gone, with this close code if any: back off to reconnect, unless stopped."""
        stats = self._stats
        if code is not None:
            stats.close_codes[code] += 1
        if self.state is VisitorState.STOPPED:
            return
        if self.state in _ONLINE:
            stats.drops += 1
        else:
            stats.connect_failures += 1
        self._alarm = self._ping_due = None
        self._match_id = self._search_started = None
        self._abandoning = False  # the `idle` answering our `stop` went with the connection
        self._back_off(now)

    def _back_off(self, now: float) -> None:
        self._attempt += 1
        self._enter(VisitorState.WAITING)
        delay = behaviour.reconnect_delay(self._rng, self._settings, self._attempt)
        self._alarm = (now + delay, self._reconnect)

    def _reconnect(self, now: float) -> None:
        self._enter(VisitorState.CONNECTING)

    # --- time -----------------------------------------------------------------------------------------

    def tick(self, now: float) -> list[Message]:
        """Do everything due by `now`, earliest first: pings, chat lines, next, searches, reconnecting."""
        while True:
            alarm, ping = self._alarm, self._ping_due
            if ping is not None and ping <= now and (alarm is None or ping <= alarm[0]):
                self._ping_due = None
                self._ping(now)
            elif alarm is not None and alarm[0] <= now:
                self._alarm = None
                alarm[1](now)
            else:
                return self._flush()

    # --- incoming -------------------------------------------------------------------------------------

    def on_message(self, message: Message, now: float) -> list[Message]:
        """Handle one message from the server."""
        kind = message.get("type")
        self._stats.record_received(kind if isinstance(kind, str) else "")
        if self.state is not VisitorState.STOPPED and isinstance(kind, str):
            handler = _HANDLERS.get(kind)
            if handler is not None:
                handler(self, message, now)
        return self._flush()

    def on_bad_frame(self) -> None:
        """Count a frame from the server that is not a message."""
        self._stats.record_error("undecodable")

    def _on_welcome(self, message: Message, now: float) -> None:
        stats = self._stats
        self._resume_token = message.get("resume_token")
        if not self._welcomed:
            self._welcomed = True
            stats.ever_connected += 1
        elif self._attempt:
            stats.reconnects += 1
        self._attempt = 0
        self._ping_due = now + behaviour.ping_delay(self._rng, self._settings)
        match = message.get("match") if message.get("resumed") else None
        if isinstance(match, dict) and isinstance(match.get("match_id"), str):
            self._begin_match(match["match_id"], match.get("role"), now, fresh=False)
        else:
            self._enter(VisitorState.IDLE)
            self._search(now)

    def _on_idle(self, message: Message, now: float) -> None:
        if not self._abandoning:
            return
        self._abandoning = False
        self._enter(VisitorState.IDLE)
        self._alarm = (now + self._rng.uniform(0.05, 0.3), self._search)

    def _on_matched(self, message: Message, now: float) -> None:
        match_id = message.get("match_id")
        if not isinstance(match_id, str):
            return
        stats = self._stats
        stats.matches += 1
        role = message.get("role")
        if role == "offer":
            stats.matches_as_offerer += 1
        if self._abandoning:
            return  # our stop is on its way: the server will end this match and send idle
        if self._search_started is not None:
            stats.time_to_match_ms.add((now - self._search_started) * 1000.0)
            self._search_started = None
        self._begin_match(match_id, role, now, fresh=True)

    def _on_signal(self, message: Message, now: float) -> None:
        payload = message.get("payload")
        if (
            self.state is VisitorState.MATCHED
            and message.get("match_id") == self._match_id
            and self._role == "answer"
            and isinstance(payload, dict)
            and payload.get("type") == "offer"
            and isinstance(payload.get("sdp"), str)
        ):
            answer = fakesdp.make_answer(self._rng, payload["sdp"])
            self._signal({"type": "answer", "sdp": answer})
            for candidate in fakesdp.make_candidates(self._rng, answer, self._settings.candidates):
                self._signal(candidate)

    def _on_partner_left(self, message: Message, now: float) -> None:
        reason = message.get("reason")
        self._stats.partner_left[reason if isinstance(reason, str) else "?"] += 1
        if self.state is not VisitorState.MATCHED or message.get("match_id") != self._match_id:
            return  # a match we already left with next
        self._match_id = None
        self._enter(VisitorState.IDLE)
        self._alarm = (now + self._rng.uniform(0.05, 0.3), self._search)

    def _on_partner_reconnecting(self, message: Message, now: float) -> None:
        if message.get("match_id") == self._match_id:
            self._partner_away = True

    def _on_partner_resumed(self, message: Message, now: float) -> None:
        if message.get("match_id") == self._match_id:
            self._partner_away = False

    def _on_pong(self, message: Message, now: float) -> None:
        if self._ping_id and message.get("re") == self._ping_id:
            self._stats.rtt_ms.add((now - self._ping_sent_at) * 1000.0)
            self._ping_id = -self._ping_id  # answered; a late duplicate won't count twice

    def _on_error(self, message: Message, now: float) -> None:
        code = message.get("code")
        self._stats.record_error(code if isinstance(code, str) else "?")

    # --- outgoing -------------------------------------------------------------------------------------

    def _send(self, message: Message) -> None:
        self._stats.messages_sent += 1
        self._outbox.append(message)

    def _flush(self) -> list[Message]:
        sent, self._outbox = self._outbox, []
        return sent

    def _search(self, now: float) -> None:
        if self.state is not VisitorState.IDLE:
            return
        self._send(dict(behaviour.search_fields(self._rng, self._settings), type="search"))
        self._searching(now)

    def _searching(self, now: float) -> None:
        self._enter(VisitorState.SEARCHING)
        self._match_id = None
        self._search_started = now
        self._alarm = (now + self._settings.search_timeout, self._abandon_search)

    def _abandon_search(self, now: float) -> None:
        """Waited too long (filters nobody meets): stop, and search afresh once idle."""
        if self.state is not VisitorState.SEARCHING:
            return
        self._stats.abandoned_searches += 1
        self._abandoning = True
        self._search_started = None
        self._send({"type": "stop"})

    def _begin_match(self, match_id: str, role: Any, now: float, fresh: bool) -> None:
        rng, settings = self._rng, self._settings
        self._enter(VisitorState.MATCHED)
        self._match_id = match_id
        self._role = role if isinstance(role, str) else None
        self._partner_away = False
        dwell = behaviour.dwell_time(rng, settings)
        self._match_started = now
        self._script = behaviour.chat_script(rng, settings, dwell)
        self._script.append((dwell, ""))  # the empty line is the cue for next
        self._schedule_step()
        if fresh and self._role == "offer":
            offer = fakesdp.make_offer(rng)
            self._signal({"type": "offer", "sdp": offer})
            for candidate in fakesdp.make_candidates(rng, offer, settings.candidates):
                self._signal(candidate)

    def _schedule_step(self) -> None:
        self._alarm = (self._match_started + self._script[0][0], self._step)

    def _step(self, now: float) -> None:
        if self.state is not VisitorState.MATCHED or not self._script:
            return
        _, text = self._script.pop(0)
        if text:
            if not self._partner_away:
                self._send({"type": "typing", "match_id": self._match_id})
                self._send({"type": "chat", "match_id": self._match_id, "text": text})
            self._schedule_step()
        else:
            self._send({"type": "next"})
            self._searching(now)

    def _signal(self, payload: Message) -> None:
        if not self._partner_away:
            self._send({"type": "signal", "match_id": self._match_id, "payload": payload})

    def _ping(self, now: float) -> None:
        self._ping_id = abs(self._ping_id) + 1
        self._ping_sent_at = now
        self._send({"type": "ping", "id": self._ping_id})
        self._ping_due = now + behaviour.ping_delay(self._rng, self._settings)

    def _enter(self, state: VisitorState) -> None:
        """Move to `state`, keeping the fleet's gauges of connected, searching and matched visitors."""
        old = self.state
        if old is state:
            return
        stats = self._stats
        if old in _ONLINE:
            stats.connected -= 1
        if state in _ONLINE:
            stats.connected += 1
        if old is VisitorState.SEARCHING:
            stats.searching -= 1
        elif old is VisitorState.MATCHED:
            stats.matched -= 1
        if state is VisitorState.SEARCHING:
            stats.searching += 1
        elif state is VisitorState.MATCHED:
            stats.matched += 1
        self.state = state


# The server's message types (docs/protocol.md) that a visitor acts on; `searching` needs nothing.
_HANDLERS: dict[str, Callable[[Visitor, Message, float], None]] = {
    "welcome": Visitor._on_welcome,
    "idle": Visitor._on_idle,
    "matched": Visitor._on_matched,
    "signal": Visitor._on_signal,
    "partner_left": Visitor._on_partner_left,
    "partner_reconnecting": Visitor._on_partner_reconnecting,
    "partner_resumed": Visitor._on_partner_resumed,
    "pong": Visitor._on_pong,
    "error": Visitor._on_error,
}
