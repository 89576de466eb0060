"""Options settable both on the command line and in a TOML file, for vchat's twistd plugins."""

from __future__ import annotations

import ipaddress
import math
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from twisted.internet.endpoints import serverFromString
from twisted.python import usage


@dataclass(frozen=True)
class Setting:
    """One option: `--name` on the command line, `name` (or `name_with_underscores`) in the TOML file."""

    name: str
    default: Any
    kind: Callable[[Any], Any]
    help: str
    minimum: float | None = None
    repeatable: bool = False  # a list: the option may be repeated; a TOML array
    flag: bool = False  # a switch: no value on the command line; true or false in TOML

    def coerce(self, raw: Any) -> Any:
        """The checked value (a list for repeatable settings), or `UsageError` naming the option."""
        if raw is None and self.default is None:
            return None
        if self.repeatable:
            items = raw if isinstance(raw, list) else [raw]
            return [self._coerce_one(item) for item in items]
        return self._coerce_one(raw)

    def _coerce_one(self, raw: Any) -> Any:
        try:
            if self.flag:
                if not isinstance(raw, bool):
                    raise ValueError("expected true or false")
                return raw
            if isinstance(raw, bool):
                raise ValueError("expected a number or string, not a boolean")
            value = self.kind(raw)
        except (TypeError, ValueError) as e:
            raise usage.UsageError(f"--{self.name}: invalid value {raw!r} ({e})") from e
        if self.minimum is not None and value < self.minimum:
            raise usage.UsageError(f"--{self.name} must be at least {self.minimum}, not {value}")
        return value


def text(value: Any) -> str:
    """A non-empty string setting."""
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string")
    return value


def port(value: Any) -> int:
    """A port number, 1-65535."""
    number = _integer(value)
    if not 1 <= number <= 65535:
        raise ValueError("not a port number (1-65535)")
    return number


def port_or_zero(value: Any) -> int:
    """A port number, or 0 (off, or "the OS chooses" where the option says so)."""
    return 0 if _integer(value) == 0 else port(value)


def _integer(value: Any) -> int:
    try:
        return integer(value)
    except ValueError:
        raise ValueError("not a port number") from None


def integer(value: Any) -> int:
    """A whole number: from a string of digits, or a TOML integer; a fraction is refused, not truncated."""
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("expected a whole number")
        return int(value)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError("expected a whole number") from None


def number(value: Any) -> float:
    """A finite number (not NaN or infinity, which would slip past any minimum)."""
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise ValueError("expected a number") from None
    if not math.isfinite(result):
        raise ValueError("expected a finite number")
    return result


def ip_address(value: Any) -> str:
    """An IPv4 or IPv6 address in its normal form (not link-local: that needs a scope)."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError("not an IPv4 or IPv6 address") from None
    if address.version == 6 and address.is_link_local:
        raise ValueError("link-local addresses are not supported")
    return str(address)


def server_endpoint(value: Any) -> str:
    """A Twisted server endpoint string, such as tcp:8080:interface=127.0.0.1 or ssl:8443:...."""
    try:
        serverFromString(None, text(value))
    except (ValueError, TypeError, KeyError, OSError) as e:  # OSError: an ssl: key or certificate file
        raise ValueError(f"not a server endpoint: {e}") from None
    return str(value)


def server_endpoint_or_none(value: Any) -> str | None:
    """A server endpoint string, or "none" (the listener is off): None."""
    if isinstance(value, str) and value.strip().lower() == "none":
        return None
    return server_endpoint(value)


def _repeat(setting: Setting) -> Callable[[usage.Options, str], None]:
    def opt(self: usage.Options, value: str) -> None:
        self.setdefault(setting.name, []).append(value)

    opt.__doc__ = f"{setting.help} (repeatable)"
    return opt


class SettingsOptions(usage.Options):
    """`usage.Options` built from `settings`, plus `--config FILE`; the command line wins over the file."""

    settings: ClassVar[tuple[Setting, ...]] = ()
    tables: ClassVar[
        tuple[str, ...]
    ] = ()  # TOML tables the file may hold besides settings: `self.config_tables`
    optParameters: ClassVar[list[list[Any]]] = []
    optFlags: ClassVar[list[list[Any]]] = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.optParameters = [
            ["config", None, None, "TOML file with any of the options below (command line wins)"]
        ]
        cls.optFlags = []
        for s in cls.settings:
            if s.flag:
                cls.optFlags.append([s.name, None, s.help])
            elif s.repeatable:
                setattr(cls, "opt_" + s.name.replace("-", "_"), _repeat(s))
            else:
                shown = "" if s.default is None or "[default:" in s.help else f" [default: {s.default}]"
                cls.optParameters.append([s.name, None, None, s.help + shown])

    def postOptions(self) -> None:
        self.config_tables: dict[str, dict[str, Any]] = {}
        from_file = self._read_config(self["config"]) if self["config"] else {}
        for s in self.settings:
            given = self.get(s.name)
            if s.flag:
                given = True if given else None  # usage.Options sets absent flags to 0
            raw = given if given is not None else from_file.get(s.name, s.default)
            self[s.name] = s.coerce(raw)
        self.check()

    def check(self) -> None:
        """Checks across settings, for subclasses; raise `usage.UsageError`."""

    def _read_config(self, path: str) -> dict[str, Any]:
        try:
            with open(path, "rb") as file:
                table = tomllib.load(file)
        except OSError as e:
            raise usage.UsageError(f"cannot read config file {path}: {e.strerror}") from e
        except tomllib.TOMLDecodeError as e:
            raise usage.UsageError(f"config file {path} is not valid TOML: {e}") from e
        config = {key.replace("_", "-"): value for key, value in table.items()}
        for name in self.tables:
            if name in config:
                value = config.pop(name)
                if not isinstance(value, dict):
                    raise usage.UsageError(f"config file {path}: {name} must be a table ([{name}.NAME])")
                self.config_tables[name] = value
        unknown = sorted(set(config) - {s.name for s in self.settings})
        if unknown:
            raise usage.UsageError(f"config file {path} has unknown options: {', '.join(unknown)}")
        return config
