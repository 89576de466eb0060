"""`vchat-bot`: run a fleet of simulated visitors against a vchat server and report what they saw."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from twisted.internet import defer
from twisted.internet.interfaces import IReactorCore
from twisted.internet.task import react
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)

from vchat.bot.behaviour import BotSettings
from vchat.bot.fleet import BotFleet, LoadRun
from vchat.bot.stats import format_summary
from vchat.bot.websocket import CODECS_BY_NAME, IClientReactor
from vchat.rlimit import raise_open_files_limit


class IRunReactor(IClientReactor, IReactorCore):
    """What a run of `vchat-bot` needs: the bots' connections and timers, and shutdown triggers."""


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, not {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _non_negative(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"may not be negative, not {text}")
    return value


def _probability(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line of `vchat-bot`."""
    parser = argparse.ArgumentParser(
        prog="vchat-bot",
        description="Load-test a vchat server with simulated visitors speaking the real wire protocol.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--url", default="ws://127.0.0.1:8080/ws", help="signaling WebSocket URL (ws:// or wss://)")
    add("--clients", type=_positive(int), default=10, help="number of bots")
    add("--duration", type=_positive(float), default=30.0, help="seconds to run, ramp included")
    add("--origin", help="Origin header to send, for a server with --allowed-origin (scheme://host[:port])")
    add("--codec", choices=sorted(CODECS_BY_NAME), default="json", help="wire codec (WebSocket subprotocol)")
    add("--ramp", type=_non_negative, default=0.0, help="seconds over which bots connect, evenly spread")
    add("--report", metavar="FILE", help="write the JSON report here")
    add("--seed", type=int, help="seed for the bots' random choices")
    add("--dwell-min", type=_non_negative, default=2.0, help="shortest stay with a partner before next (s)")
    add("--dwell-max", type=_non_negative, default=6.0, help="longest stay with a partner before next (s)")
    add("--ping-interval", type=_positive(float), default=2.0, help="seconds between application pings")
    add("--search-timeout", type=_positive(float), default=10.0, help="give up a search after this long")
    add("--gender-filter-rate", type=_probability, default=0.15, help="share of searches wanting one gender")
    add("--country-filter-rate", type=_probability, default=0.05, help="share of searches naming countries")
    add("--quiet", action="store_true", help="no progress lines, only the summary")
    return parser


def settings_from(args: argparse.Namespace) -> BotSettings:
    """Bot settings from parsed arguments."""
    return BotSettings(
        dwell_min=args.dwell_min,
        dwell_max=args.dwell_max,
        ping_interval=args.ping_interval,
        search_timeout=args.search_timeout,
        gender_filter_rate=args.gender_filter_rate,
        country_filter_rate=args.country_filter_rate,
    )


def _line_writer(stream: TextIO) -> Callable[[str], None]:
    def write(line: str) -> None:
        stream.write(line + "\n")
        stream.flush()

    return write


async def run(reactor: IRunReactor, args: argparse.Namespace, out: Callable[[str], None]) -> dict[str, Any]:
    """Run the fleet that `args` describe on `reactor`; Ctrl-C ends it early but still reports."""
    fleet = BotFleet(
        reactor, args.url, codec=args.codec, settings=settings_from(args), seed=args.seed, origin=args.origin
    )
    load = LoadRun(
        fleet,
        clients=args.clients,
        duration=args.duration,
        ramp=args.ramp,
        progress=None if args.quiet else out,
    )
    finished: defer.Deferred[None] = defer.Deferred()

    def on_shutdown() -> defer.Deferred[None]:
        load.finish()
        return finished

    trigger = reactor.addSystemEventTrigger("before", "shutdown", on_shutdown)
    try:
        out(
            f"vchat-bot: {args.clients} bots -> {args.url} ({args.codec}),"
            f" ramp {load.ramp:g}s, duration {args.duration:g}s"
        )
        report = await load.run()
        for line in format_summary(report):
            out(line)
        if args.report:
            with open(args.report, "w", encoding="utf-8") as file:
                json.dump(report, file, indent=2)
                file.write("\n")
            out(f"report written to {args.report}")
        return report
    finally:
        finished.callback(None)
        with contextlib.suppress(ValueError, KeyError):  # already running, as after Ctrl-C
            reactor.removeSystemEventTrigger(trigger)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of `vchat-bot` and `python -m vchat.bot`."""
    args = build_parser().parse_args(argv)
    try:
        settings_from(args)
    except ValueError as e:
        build_parser().error(str(e))
    limit = raise_open_files_limit()
    if args.clients + 64 > limit:
        sys.stderr.write(f"vchat-bot: warning: {args.clients} bots but only {limit} open files allowed\n")
    levels = LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)
    # Autobahn warns once per connection that a busy server closed too slowly: the report counts those (1006)
    levels.setLogLevelForNamespace("autobahn", LogLevel.error)
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr), [levels])], redirectStandardIO=False
    )
    out = _line_writer(sys.stdout)

    async def _main(reactor: IRunReactor) -> None:
        await run(reactor, args, out)

    react(lambda reactor: defer.ensureDeferred(_main(reactor)))
