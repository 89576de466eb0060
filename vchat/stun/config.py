"""The STUN responder's settings, shared by `twistd vchat` and `twistd vchat-stun`.

`STUN_SETTINGS` go into a `vchat.options.SettingsOptions` subclass; `stun_config` turns the parsed values into a
`StunConfig`, checking what no single option can.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from twisted.internet.endpoints import serverFromString
from twisted.python import usage

from vchat.options import Setting, text
from vchat.stun.responder import MAX_SOFTWARE_BYTES

DEFAULT_UDP_PORT = 3478
DEFAULT_RATE = 20.0
DEFAULT_BURST = 40
DEFAULT_SOFTWARE = "vchat"


def _udp_port(raw: Any) -> int:
    return _port("stun-udp", raw, allow_zero=True)


def _interface(raw: Any) -> str:
    return _address("stun-interface", str(raw))


def _software(raw: Any) -> str:
    if not isinstance(raw, str) or len(raw.encode("utf-8")) > MAX_SOFTWARE_BYTES:
        raise ValueError(f"at most {MAX_SOFTWARE_BYTES} bytes, to keep responses small")
    return raw


STUN_SETTINGS = (
    Setting("stun-udp", DEFAULT_UDP_PORT, _udp_port, "UDP port of the STUN responder; 0 disables it"),
    Setting(
        "stun-interface",
        [],
        _interface,
        "address for STUN over UDP [default: each address of the host]",
        repeatable=True,
    ),
    Setting(
        "stun-tcp",
        None,
        text,
        "STUN over TCP (RFC 8489 framing) on this Twisted endpoint, e.g. tcp:3478 [default: off]",
    ),
    Setting(
        "stun-alternate",
        None,
        text,
        "ADDR:PORT ([ADDR]:PORT for IPv6) of RFC 5780's alternate address, for NAT behaviour discovery; "
        "needs exactly one --stun-interface of the same family [default: off]",
    ),
    Setting(
        "stun-rate",
        DEFAULT_RATE,
        float,
        "STUN requests per second allowed per source address (IPv6: per /64); 0 disables the limit",
        0,
    ),
    Setting("stun-burst", DEFAULT_BURST, int, "STUN requests a source address may send in a burst", 1),
    Setting(
        "stun-software",
        DEFAULT_SOFTWARE,
        _software,
        "SOFTWARE attribute of STUN responses; empty leaves it out",
    ),
)


@dataclass(frozen=True)
class StunConfig:
    """Everything the STUN service needs, as plain values.

    `udp_port`: None disables UDP; 0 lets the OS pick a port (tests), used for every interface.
    `interfaces`: None means every address of the host (found when the service starts).
    `alternate`: RFC 5780's (address, port); its primary address is the one interface of its family.
    `rate`: 0 disables the per-source limit.
    """

    udp_port: int | None = DEFAULT_UDP_PORT
    interfaces: tuple[str, ...] | None = None
    tcp_endpoint: str | None = None
    alternate: tuple[str, int] | None = None
    rate: float = DEFAULT_RATE
    burst: int = DEFAULT_BURST
    software: str = DEFAULT_SOFTWARE
    tcp_idle_timeout: float = 30.0

    def primary_address(self) -> str | None:
        """RFC 5780's primary address: the interface of the alternate's family (None without alternate)."""
        if self.alternate is None or not self.interfaces:
            return None
        family = ipaddress.ip_address(self.alternate[0]).version
        same = [
            a for a in self.interfaces if ipaddress.ip_address(a).version == family and a != self.alternate[0]
        ]
        return same[0] if len(same) == 1 else None


def _port(option: str, raw: Any, allow_zero: bool) -> int:
    try:
        if isinstance(raw, bool):
            raise ValueError
        port = int(raw)
    except (TypeError, ValueError) as e:
        raise usage.UsageError(f"--{option}: {raw!r} is not a port number") from e
    if not (0 if allow_zero else 1) <= port <= 65535:
        raise usage.UsageError(f"--{option}: {port} is not a port number (1-65535)")
    return port


def _address(option: str, raw: str) -> str:
    try:
        ip = ipaddress.ip_address(raw)
    except ValueError as e:
        raise usage.UsageError(f"--{option}: {raw!r} is not an IPv4 or IPv6 address") from e
    if ip.version == 6 and ip.is_link_local:
        raise usage.UsageError(f"--{option}: link-local address {raw} is not supported")
    return str(ip)


def _number(option: str, raw: Any, kind: type, minimum: float) -> Any:
    try:
        if isinstance(raw, bool):
            raise ValueError
        value = kind(raw)
    except (TypeError, ValueError) as e:
        raise usage.UsageError(f"--{option}: {raw!r} is not a number") from e
    if value < minimum or value != value:
        raise usage.UsageError(f"--{option} must be at least {minimum}, not {value}")
    return value


def parse_alternate(raw: str) -> tuple[str, int]:
    """`ADDR:PORT` or `[ADDR]:PORT` as (address, port); raises UsageError."""
    text = raw.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
    else:
        host, sep, port = text.rpartition(":")
        if ":" in host:
            raise usage.UsageError(f"--stun-alternate: write an IPv6 address as [ADDR]:PORT, not {raw!r}")
    if not sep or not host:
        raise usage.UsageError(f"--stun-alternate: {raw!r} is not ADDR:PORT")
    return _address("stun-alternate", host), _port("stun-alternate", port, allow_zero=False)


def stun_config(values: Mapping[str, Any]) -> StunConfig:
    """Validate and coerce option values (strings from the command line, or TOML values) into a StunConfig.

    Missing keys and None take their defaults; raises usage.UsageError with a message for people.
    """
    values = {key: value for key, value in values.items() if value is not None}
    udp = _port("stun-udp", values.get("stun-udp", DEFAULT_UDP_PORT), allow_zero=True)
    raw_interfaces = values.get("stun-interface")
    if isinstance(raw_interfaces, str):
        raw_interfaces = [part.strip() for part in raw_interfaces.split(",") if part.strip()]
    interfaces: tuple[str, ...] | None = None
    if raw_interfaces:
        interfaces = tuple(dict.fromkeys(_address("stun-interface", str(a)) for a in raw_interfaces))
        if "0.0.0.0" in interfaces and "::" in interfaces:
            raise usage.UsageError(
                "--stun-interface: '::' already receives IPv4 (dual-stack); give it without '0.0.0.0'"
            )
    tcp = values.get("stun-tcp") or None
    if tcp is not None:
        try:
            serverFromString(None, tcp)
        except (ValueError, TypeError, KeyError) as e:
            raise usage.UsageError(f"--stun-tcp: {tcp!r} is not a server endpoint ({e})") from e
    rate = _number("stun-rate", values.get("stun-rate", DEFAULT_RATE), float, 0)
    burst = _number("stun-burst", values.get("stun-burst", DEFAULT_BURST), int, 1)
    software = values.get("stun-software", DEFAULT_SOFTWARE)
    software = "" if software is None else str(software)
    if len(software.encode("utf-8")) > MAX_SOFTWARE_BYTES:
        raise usage.UsageError(
            f"--stun-software: at most {MAX_SOFTWARE_BYTES} bytes, to keep responses small"
        )
    alternate = None
    raw_alternate = values.get("stun-alternate")
    if raw_alternate:
        alternate = parse_alternate(str(raw_alternate))
        if udp == 0:
            raise usage.UsageError("--stun-alternate needs STUN over UDP (--stun-udp is 0)")
        if alternate[1] == udp:
            raise usage.UsageError("--stun-alternate: the alternate port must differ from --stun-udp")
        if alternate[0] in ("0.0.0.0", "::"):
            raise usage.UsageError("--stun-alternate: the alternate address must be a specific address")
        config = StunConfig(interfaces=interfaces, alternate=alternate)
        if config.primary_address() is None:
            raise usage.UsageError(
                "--stun-alternate needs exactly one --stun-interface of its address family (besides the "
                "alternate address itself): RFC 5780's primary address"
            )
        if config.primary_address() in ("0.0.0.0", "::"):
            raise usage.UsageError(
                "--stun-alternate: the primary --stun-interface must be a specific address"
            )
    return StunConfig(
        udp_port=udp or None,
        interfaces=interfaces,
        tcp_endpoint=tcp,
        alternate=alternate,
        rate=rate,
        burst=burst,
        software=software,
    )
