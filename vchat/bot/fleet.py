"""A fleet of bots on one reactor, and a timed load-test run of it: each bot carries out one visitor's decisions."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Protocol, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITCPTransport
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from vchat.bot import behaviour
from vchat.bot.behaviour import BotSettings
from vchat.bot.stats import BotStats, build_report, format_progress
from vchat.bot.visitor import Message, Visitor, VisitorState
from vchat.bot.websocket import CODECS_BY_NAME, BotClientFactory, IClientReactor, Link
from vchat.outcome import Outcome


class BotHost(Protocol):
    """What a bot needs from its fleet: a clock, randomness, settings, counters and a way to connect."""

    rng: random.Random
    settings: BotSettings
    stats: BotStats

    @property
    def clock(self) -> IReactorTime:
        """The clock the bot's timers run on."""

    def connect(self, bot: Bot) -> Deferred[Link]:
        """Open a connection for `bot`: fires with its `Link` once connected; `bot.on_open` follows."""


class Bot:
    """One visitor on the network: runs its decisions on the fleet's clock and a connection, across reconnects."""

    _log = Logger()

    __slots__ = ("_host", "_link", "_pending", "_timer", "_timer_due", "visitor")

    def __init__(self, host: BotHost, hello: Message) -> None:
        self._host = host
        self.visitor = Visitor(hello, host.rng, host.settings, host.stats)
        self._link: Link | None = None
        self._pending: Deferred[Link] | None = None
        self._timer: IDelayedCall | None = None
        self._timer_due: float | None = None

    @property
    def state(self) -> VisitorState:
        """Where the visitor is in its life."""
        return self.visitor.state

    @property
    def timer_pending(self) -> bool:
        """Whether the bot waits on a timer (never once stopped)."""
        return self._timer is not None and self._timer.active()

    def start(self) -> None:
        """Connect for the first time."""
        self.visitor.start()
        self._carry_out([])

    def stop(self) -> None:
        """Stop for good: cancel the timer and any connection attempt, and close the connection."""
        if self.visitor.state is VisitorState.STOPPED:
            return
        self.visitor.stop()
        self._carry_out([])
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.cancel()
        if self._link is not None:
            self._link.close()

    # --- what the connection reports (`Peer`) ---------------------------------------------------------

    def on_open(self, link: Link) -> None:
        """The WebSocket is open: let the visitor say hello, or close it if stopped meanwhile."""
        self._link = link
        if self.visitor.state is VisitorState.STOPPED:
            link.close()
        else:
            self._carry_out(self.visitor.opened())

    def on_message(self, message: Message) -> None:
        """Hand one message from the server to the visitor."""
        self._carry_out(self.visitor.on_message(message, self._host.clock.seconds()))

    def on_bad_frame(self) -> None:
        """Count a frame the codec could not decode."""
        self.visitor.on_bad_frame()

    def on_lost(self, link: Link, code: int | None) -> None:
        """The connection is gone: the visitor backs off and reconnects, unless stopped."""
        if link is not self._link:
            return
        self._link = None
        self.visitor.lost(code, self._host.clock.seconds())
        self._carry_out([])

    # --- carrying out ---------------------------------------------------------------------------------

    def _carry_out(self, messages: list[Message]) -> None:
        """Send what the visitor said, connect if it wants to, and set the timer for when it acts next."""
        link = self._link
        if link is not None:
            for message in messages:
                link.send(message)
        if self.visitor.state is VisitorState.CONNECTING and link is None and self._pending is None:
            self._connect()
        self._reschedule()

    def _connect(self) -> None:
        pending = self._pending = self._host.connect(self)
        pending.addCallbacks(self._connected, self._connect_failed)
        pending.addErrback(lambda failure: self._log.failure("bot connecting", failure))

    def _connected(self, link: Link) -> None:
        self._pending = None
        self._link = link  # before the handshake, so that a failed one reaches on_lost

    def _connect_failed(self, failure: Failure) -> None:
        self._pending = None
        if self.visitor.state is not VisitorState.STOPPED:
            self._log.debug("connect failed: {error}", error=failure.getErrorMessage())
        self.visitor.connect_failed(self._host.clock.seconds())
        self._carry_out([])

    def _reschedule(self) -> None:
        due = self.visitor.wake_at
        if due == self._timer_due:
            return
        timer, self._timer, self._timer_due = self._timer, None, due
        if timer is not None and timer.active():
            timer.cancel()
        if due is not None:
            clock = self._host.clock
            self._timer = clock.callLater(max(0.0, due - clock.seconds()), self._wake, due)

    def _wake(self, due: float) -> None:
        self._timer = self._timer_due = None
        try:
            # `due` and not the clock: `now + (due - now)` may round to a hair before `due`
            now = max(self._host.clock.seconds(), due)
            self._carry_out(self.visitor.tick(now))
        except Exception:
            self._log.failure("bot timer")


class BotFleet:
    """Many bots sharing one reactor, one WebSocket factory, one random source and one set of counters."""

    _log = Logger()

    def __init__(
        self,
        reactor: IClientReactor,
        url: str,
        *,
        codec: str = "json",
        settings: BotSettings | None = None,
        seed: int | None = None,
        connect_timeout: float = 10.0,
        origin: str | None = None,
    ) -> None:
        """`origin` is sent as every connection's `Origin` header (a server with `--allowed-origin` wants one)."""
        if codec not in CODECS_BY_NAME:
            raise ValueError(f"unknown codec {codec!r}: choose one of {', '.join(CODECS_BY_NAME)}")
        self.clock: IReactorTime = reactor
        self.url = url
        self.codec = codec
        self.settings = settings if settings is not None else BotSettings()
        self.rng = random.Random(seed)
        self.stats = BotStats()
        self.bots: list[Bot] = []
        self._factory = BotClientFactory(
            reactor,
            url,
            CODECS_BY_NAME[codec],
            connect_timeout=connect_timeout,
            on_lost=self._connection_lost,
            origin=origin,
        )
        self._ramp_timer: IDelayedCall | None = None
        self._ramp_start = 0.0
        self._ramp_step = 0.0
        self._to_start = 0
        self._stopping = False
        self._abort_timer: IDelayedCall | None = None
        self._drained: Outcome[None] = Outcome()

    def connect(self, bot: Bot) -> Deferred[Link]:
        """Open a WebSocket for `bot`."""
        return self._factory.connect(bot)

    @property
    def open_transports(self) -> int:
        """TCP connections currently open."""
        return len(self._factory.connections)

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

    def stop(self, timeout: float = 10.0) -> Deferred[None]:
        """Close every bot cleanly; fires once all connections are gone, aborting them after `timeout`."""
        if not self._stopping:
            self._stopping = True
            if self._ramp_timer is not None and self._ramp_timer.active():
                self._ramp_timer.cancel()
            self._ramp_timer = None
            for bot in self.bots:
                bot.stop()
            if self._factory.connections:
                self._abort_timer = self.clock.callLater(timeout, self._abort_stragglers)
            else:
                self._drained.fire(None)
        return self._drained.observe()

    def _connection_lost(self) -> None:
        abort = self._abort_timer
        if abort is not None and not self._factory.connections:  # the last connection of a stopping fleet
            self._abort_timer = None
            if abort.active():
                abort.cancel()
            self._drained.fire(None)

    def _abort_stragglers(self) -> None:
        try:
            for protocol in list(self._factory.connections):
                if protocol.transport is not None:
                    cast(ITCPTransport, protocol.transport).abortConnection()
        except Exception:
            self._log.failure("aborting connections")


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
        self._deadline: Deferred[None] | None = None
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

    def _time_up(self) -> None:
        try:
            self.finish()
        except Exception:
            self._log.failure("ending the run")

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
        self._deadline = Deferred()
        self._deadline_timer = clock.callLater(self.duration, self._time_up)
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
            codec=fleet.codec,
            duration=self.duration,
            ramp=self.ramp,
            elapsed=elapsed,
        )
