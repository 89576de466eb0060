"""Load-test bots: one `Bot` per simulated visitor, a `BotFleet` to run thousands of them on one reactor."""

from __future__ import annotations

import enum
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

import msgpack
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.util import parse_url
from twisted.internet import defer
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IDelayedCall,
    IReactorTCP,
    IReactorTime,
    IStreamClientEndpoint,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from vchat.bot import behaviour, fakesdp
from vchat.bot.behaviour import BotSettings
from vchat.bot.stats import BotStats, build_report, format_progress

JSON_SUBPROTOCOL = "vchat.v1.json"
MSGPACK_SUBPROTOCOL = "vchat.v1.msgpack"

_json_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class WireCodec:
    """How a bot turns messages into WebSocket frames and back."""

    name: str
    subprotocol: str
    binary: bool
    encode: Callable[[dict[str, Any]], bytes]
    decode: Callable[[bytes], Any]


CODECS = {
    "json": WireCodec(
        "json", JSON_SUBPROTOCOL, False, lambda m: _json_encoder.encode(m).encode("utf-8"), json.loads
    ),
    "msgpack": WireCodec(
        "msgpack",
        MSGPACK_SUBPROTOCOL,
        True,
        lambda m: msgpack.packb(m, use_bin_type=True),
        lambda data: msgpack.unpackb(data, raw=False),
    ),
}


class BotState(enum.Enum):
    """Where one bot is in its life: the server's session states plus the connection's."""

    WAITING = "waiting"  # not started yet, or backing off before reconnecting
    CONNECTING = "connecting"  # TCP and WebSocket opening handshake
    GREETING = "greeting"  # hello sent, no welcome yet
    IDLE = "idle"
    SEARCHING = "searching"
    MATCHED = "matched"
    STOPPED = "stopped"


_ONLINE = frozenset({BotState.IDLE, BotState.SEARCHING, BotState.MATCHED})


class Link(Protocol):
    """What a bot needs from its connection: send a message, close cleanly, or drop it."""

    def send(self, message: dict[str, Any]) -> None:
        """Send one message."""

    def close(self) -> None:
        """Close cleanly (a WebSocket close frame), or drop the connection if it is not open yet."""


class BotHost(Protocol):
    """What a bot needs from its fleet: a clock, randomness, settings, counters and a way to connect."""

    clock: IReactorTime
    rng: random.Random
    settings: BotSettings
    stats: BotStats

    def connect(self, bot: Bot) -> defer.Deferred[Any]:
        """Open a connection for `bot`: fires with its `Link` once connected; `bot.on_open` follows."""


class Bot:
    """One simulated visitor: says hello, searches, signals, chats, pings, presses next, reconnects."""

    _log = Logger()

    __slots__ = (
        "_abandoning",
        "_attempt",
        "_host",
        "_link",
        "_match_id",
        "_match_started",
        "_partner_away",
        "_pending",
        "_ping_at",
        "_ping_id",
        "_ping_timer",
        "_resume_token",
        "_role",
        "_script",
        "_search_started",
        "_timer",
        "_welcomed",
        "hello",
        "state",
    )

    def __init__(self, host: BotHost, hello: dict[str, Any]) -> None:
        self._host = host
        self.hello = hello
        self.state = BotState.WAITING
        self._link: Link | None = None
        self._pending: defer.Deferred[Any] | None = None
        self._timer: IDelayedCall | None = None
        self._ping_timer: IDelayedCall | None = None
        self._ping_id = 0
        self._ping_at = 0.0
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

    # --- life cycle -----------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect for the first time."""
        if self.state is BotState.WAITING:
            self._connect()

    def stop(self) -> None:
        """Stop for good: cancel every timer and close the connection with a close frame."""
        if self.state is BotState.STOPPED:
            return
        self._enter(BotState.STOPPED)
        self._cancel_timers()
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()
        link = self._link
        if link is not None:
            link.close()

    def active_timers(self) -> int:
        """How many of this bot's timers are pending (none once stopped)."""
        return len([t for t in (self._timer, self._ping_timer) if t is not None and t.active()])

    def _connect(self) -> None:
        self._timer = None
        self._enter(BotState.CONNECTING)
        pending = self._host.connect(self)
        self._pending = pending
        pending.addCallbacks(self._connected, self._connect_failed)

    def _connected(self, link: Link) -> None:
        self._pending = None
        self._link = link  # before the handshake, so that a failed one reaches on_lost

    def _connect_failed(self, failure: Failure) -> None:
        self._pending = None
        if self.state is BotState.STOPPED:
            return
        self._host.stats.connect_failures += 1
        self._log.debug("connect failed: {error}", error=failure.getErrorMessage())
        self._back_off()

    def _back_off(self) -> None:
        self._attempt += 1
        host = self._host
        self._enter(BotState.WAITING)
        delay = behaviour.reconnect_delay(host.rng, host.settings, self._attempt)
        self._timer = host.clock.callLater(delay, self._fenced, self._connect)

    def on_open(self, link: Link) -> None:
        """The WebSocket is open: say hello (resuming the last session, if there was one)."""
        self._link = link
        if self.state is BotState.STOPPED:
            link.close()
            return
        self._host.stats.connects += 1
        self._enter(BotState.GREETING)
        hello = dict(self.hello, type="hello")
        if self._resume_token is not None:
            hello["resume"] = self._resume_token
        self._send(hello)

    def on_lost(self, link: Link, code: int | None) -> None:
        """The connection is gone: back off and reconnect, unless stopping."""
        if link is not self._link:
            return
        self._link = None
        stats = self._host.stats
        if code is not None:
            stats.close_codes[code] += 1
        if self.state is BotState.STOPPED:
            return
        self._cancel_timers()
        if self.state in _ONLINE:
            stats.drops += 1
        else:
            stats.connect_failures += 1
        self._match_id = None
        self._search_started = None
        self._back_off()

    def _cancel_timers(self) -> None:
        for timer in (self._timer, self._ping_timer):
            if timer is not None and timer.active():
                timer.cancel()
        self._timer = self._ping_timer = None

    def _fenced(self, action: Callable[[], None]) -> None:
        try:
            action()
        except Exception:
            self._log.failure("bot timer")

    def _enter(self, state: BotState) -> None:
        old = self.state
        if old is state:
            return
        stats = self._host.stats
        if old in _ONLINE:
            stats.connected -= 1
        if state in _ONLINE:
            stats.connected += 1
        if old is BotState.SEARCHING:
            stats.searching -= 1
        elif old is BotState.MATCHED:
            stats.matched -= 1
        if state is BotState.SEARCHING:
            stats.searching += 1
        elif state is BotState.MATCHED:
            stats.matched += 1
        self.state = state

    def _send(self, message: dict[str, Any]) -> None:
        link = self._link
        if link is not None:
            self._host.stats.messages_sent += 1
            link.send(message)

    def _later(self, delay: float, action: Callable[[], None]) -> None:
        timer = self._timer
        if timer is not None and timer.active():
            timer.cancel()
        self._timer = self._host.clock.callLater(max(0.0, delay), self._fenced, action)

    # --- incoming -------------------------------------------------------------------------------------

    def on_message(self, message: Any) -> None:
        """Handle one decoded message from the server."""
        stats = self._host.stats
        kind = message.get("type") if isinstance(message, dict) else None
        stats.record_received(kind if isinstance(kind, str) else "")
        if self.state is BotState.STOPPED or not isinstance(kind, str):
            return
        handler = _HANDLERS.get(kind)
        if handler is not None:
            handler(self, message)

    def _on_welcome(self, message: dict[str, Any]) -> None:
        stats = self._host.stats
        self._resume_token = message.get("resume_token")
        if not self._welcomed:
            self._welcomed = True
            stats.ever_connected += 1
        elif self._attempt:
            stats.reconnects += 1
        self._attempt = 0
        self._schedule_ping()
        match = message.get("match") if message.get("resumed") else None
        if isinstance(match, dict) and isinstance(match.get("match_id"), str):
            self._begin_match(match["match_id"], match.get("role"), fresh=False)
        else:
            self._enter(BotState.IDLE)
            self._search()

    def _on_searching(self, message: dict[str, Any]) -> None:
        pass  # the state changed when the search or next was sent

    def _on_idle(self, message: dict[str, Any]) -> None:
        if not self._abandoning:
            return
        self._abandoning = False
        self._enter(BotState.IDLE)
        self._later(self._host.rng.uniform(0.05, 0.3), self._search)

    def _on_matched(self, message: dict[str, Any]) -> None:
        match_id = message.get("match_id")
        if not isinstance(match_id, str):
            return
        stats = self._host.stats
        stats.matches += 1
        role = message.get("role")
        if role == "offer":
            stats.matches_as_offerer += 1
        if self._abandoning:
            return  # our stop is on its way: the server will end this match and send idle
        if self._search_started is not None:
            stats.time_to_match_ms.add((self._host.clock.seconds() - self._search_started) * 1000.0)
            self._search_started = None
        self._begin_match(match_id, role, fresh=True)

    def _on_signal(self, message: dict[str, Any]) -> None:
        payload = message.get("payload")
        if (
            self.state is BotState.MATCHED
            and message.get("match_id") == self._match_id
            and self._role == "answer"
            and isinstance(payload, dict)
            and payload.get("type") == "offer"
            and isinstance(payload.get("sdp"), str)
        ):
            rng = self._host.rng
            answer = fakesdp.make_answer(rng, payload["sdp"])
            self._signal({"type": "answer", "sdp": answer})
            for candidate in fakesdp.make_candidates(rng, answer, self._host.settings.candidates):
                self._signal(candidate)

    def _on_partner_left(self, message: dict[str, Any]) -> None:
        reason = message.get("reason")
        self._host.stats.partner_left[reason if isinstance(reason, str) else "?"] += 1
        if self.state is not BotState.MATCHED or message.get("match_id") != self._match_id:
            return  # a match we already left with next
        self._match_id = None
        self._enter(BotState.IDLE)
        self._later(self._host.rng.uniform(0.05, 0.3), self._search)

    def _on_partner_reconnecting(self, message: dict[str, Any]) -> None:
        if message.get("match_id") == self._match_id:
            self._partner_away = True

    def _on_partner_resumed(self, message: dict[str, Any]) -> None:
        if message.get("match_id") == self._match_id:
            self._partner_away = False

    def _on_pong(self, message: dict[str, Any]) -> None:
        if self._ping_id and message.get("re") == self._ping_id:
            self._host.stats.rtt_ms.add((self._host.clock.seconds() - self._ping_at) * 1000.0)
            self._ping_id = -self._ping_id  # answered; a late duplicate won't count twice

    def _on_error(self, message: dict[str, Any]) -> None:
        code = message.get("code")
        self._host.stats.record_error(code if isinstance(code, str) else "?")

    # --- outgoing -------------------------------------------------------------------------------------

    def _search(self) -> None:
        if self.state is not BotState.IDLE or self._link is None:
            return
        host = self._host
        self._send(dict(behaviour.search_fields(host.rng, host.settings), type="search"))
        self._searching()

    def _searching(self) -> None:
        self._enter(BotState.SEARCHING)
        self._match_id = None
        self._search_started = self._host.clock.seconds()
        self._later(self._host.settings.search_timeout, self._abandon_search)

    def _abandon_search(self) -> None:
        """Waited too long (filters nobody meets): stop, and search afresh once idle."""
        if self.state is not BotState.SEARCHING:
            return
        self._host.stats.abandoned_searches += 1
        self._abandoning = True
        self._search_started = None
        self._timer = None
        self._send({"type": "stop"})

    def _begin_match(self, match_id: str, role: Any, fresh: bool) -> None:
        host = self._host
        self._enter(BotState.MATCHED)
        self._match_id = match_id
        self._role = role if isinstance(role, str) else None
        self._partner_away = False
        now = host.clock.seconds()
        dwell = behaviour.dwell_time(host.rng, host.settings)
        self._match_started = now
        self._script = behaviour.chat_script(host.rng, host.settings, dwell)
        self._script.append((dwell, ""))  # the empty line is the cue for next
        self._schedule_step()
        if fresh and self._role == "offer":
            offer = fakesdp.make_offer(host.rng)
            self._signal({"type": "offer", "sdp": offer})
            for candidate in fakesdp.make_candidates(host.rng, offer, host.settings.candidates):
                self._signal(candidate)

    def _schedule_step(self) -> None:
        at = self._script[0][0]
        self._later(self._match_started + at - self._host.clock.seconds(), self._step)

    def _step(self) -> None:
        if self.state is not BotState.MATCHED or not self._script:
            return
        _, text = self._script.pop(0)
        if text:
            if not self._partner_away:
                self._send({"type": "typing", "match_id": self._match_id})
                self._send({"type": "chat", "match_id": self._match_id, "text": text})
            self._schedule_step()
        else:
            self._send({"type": "next"})
            self._searching()

    def _signal(self, payload: dict[str, Any]) -> None:
        if not self._partner_away:
            self._send({"type": "signal", "match_id": self._match_id, "payload": payload})

    def _schedule_ping(self) -> None:
        delay = behaviour.ping_delay(self._host.rng, self._host.settings)
        self._ping_timer = self._host.clock.callLater(delay, self._fenced, self._ping)

    def _ping(self) -> None:
        self._ping_timer = None
        if self._link is None or self.state is BotState.STOPPED:
            return
        self._ping_id = abs(self._ping_id) + 1
        self._ping_at = self._host.clock.seconds()
        self._send({"type": "ping", "id": self._ping_id})
        self._schedule_ping()


_HANDLERS: dict[str, Callable[[Bot, dict[str, Any]], None]] = {
    "welcome": Bot._on_welcome,
    "searching": Bot._on_searching,
    "idle": Bot._on_idle,
    "matched": Bot._on_matched,
    "signal": Bot._on_signal,
    "partner_left": Bot._on_partner_left,
    "partner_reconnecting": Bot._on_partner_reconnecting,
    "partner_resumed": Bot._on_partner_resumed,
    "pong": Bot._on_pong,
    "error": Bot._on_error,
}


# --- the network edge ---------------------------------------------------------------------------------


class BotProtocol(WebSocketClientProtocol):
    """One bot's WebSocket connection: decodes frames for the bot and encodes what it sends."""

    _log = Logger()
    factory: _FleetFactory

    def __init__(self, bot: Bot) -> None:
        super().__init__()
        self.bot = bot
        self._close_code: int | None = None

    def onOpen(self) -> None:
        try:
            self.bot.on_open(self)
        except Exception:
            self._log.failure("bot on_open")

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        try:
            message = self.factory.codec.decode(payload)
        except Exception:
            self.factory.fleet.stats.record_error("undecodable")
            return
        try:
            self.bot.on_message(message)
        except Exception:
            self._log.failure("bot on_message")

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self._close_code = code

    def connectionMade(self) -> None:
        self.factory.fleet.transport_opened(self)
        super().connectionMade()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        try:
            super().connectionLost(reason)
            self.bot.on_lost(self, self._close_code)
        except Exception:
            self._log.failure("bot connectionLost")
        finally:
            self.factory.fleet.transport_closed(self)

    def send(self, message: dict[str, Any]) -> None:
        """Encode and send one message if the WebSocket is open."""
        if self.state == self.STATE_OPEN:
            codec = self.factory.codec
            self.sendMessage(codec.encode(message), isBinary=codec.binary)

    def close(self) -> None:
        """Send a close frame if open; otherwise drop the connection."""
        if self.state == self.STATE_OPEN:
            self.sendClose(code=1000)
        elif self.state != self.STATE_CLOSED and self.transport is not None:
            cast(ITCPTransport, self.transport).abortConnection()


class _FleetFactory(WebSocketClientFactory):
    """Shared WebSocket settings for every bot connection of a fleet."""

    protocol = BotProtocol  # type: ignore[assignment]  # Autobahn's factory typing predates protocols

    def __init__(self, fleet: BotFleet, url: str, codec: WireCodec, reactor: IReactorTime) -> None:
        super().__init__(url=url, protocols=[codec.subprotocol], useragent="vchat-bot", reactor=reactor)
        self.fleet = fleet
        self.codec = codec


class _Handoff(Factory):
    """Hands one already built protocol to an endpoint."""

    noisy = False

    def __init__(self, protocol: BotProtocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: Any) -> BotProtocol:  # type: ignore[override]
        return self._protocol


def _endpoint(reactor: Any, url: str, timeout: float) -> IStreamClientEndpoint:
    secure, host, port, _resource, _path, _params = parse_url(url)
    endpoint: IStreamClientEndpoint
    if isIPAddress(host):
        endpoint = TCP4ClientEndpoint(reactor, host, port, timeout=timeout)
    elif isIPv6Address(host):
        endpoint = TCP6ClientEndpoint(reactor, host, port, timeout=timeout)
    else:
        endpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
    if secure:
        from twisted.internet.ssl import optionsForClientTLS

        endpoint = wrapClientTLS(optionsForClientTLS(host), endpoint)
    return endpoint


class BotFleet:
    """Many bots sharing one reactor, one WebSocket factory, one random source and one set of counters."""

    _log = Logger()

    def __init__(
        self,
        reactor: IReactorTCP,
        url: str,
        *,
        codec: str = "json",
        settings: BotSettings | None = None,
        seed: int | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        if codec not in CODECS:
            raise ValueError(f"unknown codec {codec!r}: choose one of {', '.join(CODECS)}")
        self.reactor = reactor
        self.clock: IReactorTime = reactor  # type: ignore[assignment]
        self.url = url
        self.codec = CODECS[codec]
        self.settings = settings if settings is not None else BotSettings()
        self.rng = random.Random(seed)
        self.stats = BotStats()
        self.bots: list[Bot] = []
        self._factory = _FleetFactory(self, url, self.codec, self.clock)
        self._factory.setProtocolOptions(
            openHandshakeTimeout=connect_timeout,
            closeHandshakeTimeout=5,
            serverConnectionDropTimeout=5,
            autoPingInterval=0,
        )
        self._endpoint = _endpoint(reactor, url, connect_timeout)
        self._ramp_timer: IDelayedCall | None = None
        self._ramp_start = 0.0
        self._ramp_step = 0.0
        self._to_start = 0
        self._protocols: set[BotProtocol] = set()
        self._drain_waiters: list[defer.Deferred[None]] = []
        self._stopping = False

    def connect(self, bot: Bot) -> defer.Deferred[Any]:
        """Open a WebSocket for `bot`."""
        protocol = BotProtocol(bot)
        protocol.factory = self._factory
        return self._endpoint.connect(_Handoff(protocol))

    def transport_opened(self, protocol: BotProtocol) -> None:
        """A bot's TCP connection is up."""
        self._protocols.add(protocol)

    def transport_closed(self, protocol: BotProtocol) -> None:
        """A bot's TCP connection is gone."""
        self._protocols.discard(protocol)
        if not self._protocols and self._stopping:
            waiters, self._drain_waiters = self._drain_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    @property
    def open_transports(self) -> int:
        """TCP connections currently open."""
        return len(self._protocols)

    def start(self, clients: int, ramp: float = 0.0) -> None:
        """Start `clients` bots, spread evenly over `ramp` seconds."""
        if clients < 0 or ramp < 0:
            raise ValueError("clients and ramp may not be negative")
        self.stats.clients += clients
        self._to_start = clients
        self._ramp_start = self.clock.seconds()
        self._ramp_step = ramp / clients if clients else 0.0
        self._launch()

    def _launch(self) -> None:
        """Start every bot that is due; one timer covers the whole ramp."""
        self._ramp_timer = None
        try:
            now = self.clock.seconds()
            while self._to_start and not self._stopping:
                due = self._ramp_start + len(self.bots) * self._ramp_step
                if due > now:
                    self._ramp_timer = self.clock.callLater(due - now, self._launch)
                    return
                self._to_start -= 1
                bot = Bot(self, behaviour.hello_fields(self.rng))
                self.bots.append(bot)
                bot.start()
        except Exception:
            self._log.failure("starting bots")

    def stop(self, timeout: float = 10.0) -> defer.Deferred[None]:
        """Close every bot cleanly; fires once all connections are gone, aborting them after `timeout`."""
        self._stopping = True
        if self._ramp_timer is not None and self._ramp_timer.active():
            self._ramp_timer.cancel()
        self._ramp_timer = None
        for bot in self.bots:
            bot.stop()
        if not self._protocols:
            return defer.succeed(None)
        drained: defer.Deferred[None] = defer.Deferred()
        self._drain_waiters.append(drained)
        abort = self.clock.callLater(timeout, self._abort_stragglers)

        def _done(result: None) -> None:
            if abort.active():
                abort.cancel()

        drained.addCallback(_done)
        return drained

    def _abort_stragglers(self) -> None:
        for protocol in list(self._protocols):
            if protocol.transport is not None:
                cast(ITCPTransport, protocol.transport).abortConnection()


class LoadRun:
    """One timed run of a fleet: ramp up, print progress every second, stop at the deadline, report."""

    _log = Logger()

    def __init__(
        self,
        fleet: BotFleet,
        *,
        clients: int,
        duration: float,
        ramp: float = 0.0,
        progress: Callable[[str], None] | None = None,
        progress_interval: float = 1.0,
    ) -> None:
        if duration <= 0:
            raise ValueError("duration must be positive")
        self.fleet = fleet
        self.clients = clients
        self.duration = duration
        self.ramp = min(ramp, duration)
        self._progress = progress
        self._progress_interval = progress_interval
        self._deadline: defer.Deferred[None] | None = None
        self._deadline_timer: IDelayedCall | None = None
        self._started = 0.0
        self._last = fleet.stats.snapshot()
        self._last_at = 0.0

    def finish(self) -> None:
        """End the run now instead of at the deadline (as on Ctrl-C)."""
        if self._deadline_timer is not None and self._deadline_timer.active():
            self._deadline_timer.cancel()
        self._deadline_timer = None
        deadline, self._deadline = self._deadline, None
        if deadline is not None:
            deadline.callback(None)

    def _tick(self) -> None:
        try:
            now = self.fleet.clock.seconds()
            snapshot = self.fleet.stats.snapshot()
            if self._progress is not None:
                line = format_progress(now - self._started, snapshot, self._last, now - self._last_at)
                self._progress(line)
            self._last, self._last_at = snapshot, now
        except Exception:
            self._log.failure("progress line")

    async def run(self) -> dict[str, Any]:
        """Run to the deadline (or `finish`), stop every bot cleanly, and return the report."""
        fleet, clock = self.fleet, self.fleet.clock
        self._started = self._last_at = clock.seconds()
        ticker = LoopingCall(self._tick)
        ticker.clock = clock
        self._deadline = defer.Deferred()
        self._deadline_timer = clock.callLater(self.duration, self.finish)
        fleet.start(self.clients, self.ramp)
        ticker.start(self._progress_interval, now=False)
        try:
            await self._deadline
        finally:
            if ticker.running:
                ticker.stop()
            elapsed = clock.seconds() - self._started
            await fleet.stop()
        return build_report(
            fleet.stats,
            url=fleet.url,
            codec=fleet.codec.name,
            duration=self.duration,
            ramp=self.ramp,
            elapsed=elapsed,
        )
