"""`twistd vchat`: options (command line and TOML file) and the service tree."""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.application.service import IService, MultiService
from twisted.internet.endpoints import serverFromString
from twisted.python import usage

from vchat.matching import MatchingEngine
from vchat.protocol.websocket import ConnectionLimits, SignalingFactory
from vchat.service import SignalingService
from vchat.switchboard import Switchboard


@dataclass(frozen=True)
class Setting:
    """One option, settable on the command line or in the TOML file under the same name."""

    name: str
    default: Any
    kind: Callable[[Any], Any]
    help: str
    minimum: float | None = None


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string")
    return value


SETTINGS = (
    Setting(
        "ws",
        "tcp:8080",
        _text,
        "signaling listen endpoint (Twisted endpoint string); the WebSocket path is /ws",
    ),
    Setting("data-dir", "./vchat-data", _text, "directory for durable state"),
    Setting(
        "max-message-bytes",
        65536,
        int,
        "largest WebSocket message accepted; larger ones close with 1009",
        128,
    ),
    Setting("message-rate", 20.0, float, "messages per second a connection may send on average", 0.1),
    Setting("message-burst", 60, int, "messages a connection may send in a burst", 1),
    Setting(
        "max-bad-messages", 10, int, "bad messages per minute before a connection is closed with 4008", 1
    ),
    Setting(
        "hello-timeout", 10.0, float, "seconds a new connection has to open the WebSocket and send hello", 1
    ),
    Setting("heartbeat", 25.0, float, "seconds between WebSocket pings to each client", 1),
    Setting(
        "heartbeat-timeout", 10.0, float, "seconds to wait for a pong before the connection counts as lost", 1
    ),
    Setting(
        "resume-grace", 15.0, float, "seconds a session lost without a close frame waits to be resumed", 0
    ),
    Setting("recent-partners", 10, int, "how many past partners are not matched again soon", 0),
    Setting("recent-window", 600.0, float, "seconds a past partner is not matched again", 0),
    Setting(
        "rematch-after", 30.0, float, "seconds of waiting after which past partners are acceptable again", 0
    ),
)
_BY_NAME = {setting.name: setting for setting in SETTINGS}


class Options(usage.Options):
    """Options of `twistd vchat`; `--config FILE` supplies the same keys and the command line wins."""

    optParameters = [
        ["config", None, None, "TOML file with any of the options below (command line wins)"],
        *([s.name, None, None, f"{s.help} [default: {s.default}]"] for s in SETTINGS),
    ]

    def postOptions(self) -> None:
        from_file = _read_config(self["config"]) if self["config"] else {}
        for setting in SETTINGS:
            given = self[setting.name]
            raw = given if given is not None else from_file.get(setting.name, setting.default)
            self[setting.name] = _coerce(setting, raw)
        try:
            serverFromString(None, self["ws"])
        except (ValueError, TypeError, KeyError) as e:
            raise usage.UsageError(f"--ws: {self['ws']!r} is not a server endpoint ({e})") from e

    def limits(self) -> ConnectionLimits:
        """The per-connection limits these options describe."""
        return ConnectionLimits(
            max_message_bytes=self["max-message-bytes"],
            message_rate=self["message-rate"],
            message_burst=self["message-burst"],
            max_bad_messages=self["max-bad-messages"],
            hello_timeout=self["hello-timeout"],
            heartbeat_interval=self["heartbeat"],
            heartbeat_timeout=self["heartbeat-timeout"],
        )


def _read_config(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            table = tomllib.load(file)
    except OSError as e:
        raise usage.UsageError(f"cannot read config file {path}: {e.strerror}") from e
    except tomllib.TOMLDecodeError as e:
        raise usage.UsageError(f"config file {path} is not valid TOML: {e}") from e
    config = {key.replace("_", "-"): value for key, value in table.items()}
    unknown = sorted(set(config) - set(_BY_NAME))
    if unknown:
        raise usage.UsageError(f"config file {path} has unknown options: {', '.join(unknown)}")
    return config


def _coerce(setting: Setting, raw: Any) -> Any:
    try:
        if isinstance(raw, bool):
            raise ValueError("expected a number or string, not a boolean")
        value = setting.kind(raw)
    except (TypeError, ValueError) as e:
        raise usage.UsageError(f"--{setting.name}: invalid value {raw!r} ({e})") from e
    if setting.minimum is not None and value < setting.minimum:
        raise usage.UsageError(f"--{setting.name} must be at least {setting.minimum}, not {value}")
    return value


def makeService(options: Options, reactor: Any = None) -> IService:
    """Wire the service tree; everything asynchronous happens when the services start."""
    if reactor is None:
        from twisted.internet import reactor
    engine = MatchingEngine(
        recent_partners=options["recent-partners"],
        recent_seconds=options["recent-window"],
        rematch_after=options["rematch-after"],
    )
    switchboard = Switchboard(reactor, engine, resume_grace=options["resume-grace"])
    factory = SignalingFactory(switchboard, options.limits(), reactor)
    root = MultiService()
    endpoint = serverFromString(reactor, options["ws"])
    SignalingService(endpoint, factory, on_failure=lambda: _stop_running(reactor)).setServiceParent(root)
    return root


def _stop_running(reactor: Any) -> None:
    if reactor.running:
        reactor.stop()
