"""The STUN responder's settings, shared by `twistd vchat` and `twistd vchat-stun`.

Each `Setting` in `STUN_SETTINGS` checks its own value (its kind); `StunConfig` checks what no single option
can, in one place, when it is built.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from twisted.python import usage

from vchat.options import Setting, integer, ip_address, number, port, port_or_zero, server_endpoint
from vchat.stun.responder import MAX_SOFTWARE_BYTES

DEFAULT_UDP_PORT = 3478
# Per source address (IPv6: per /64). Carrier-grade NAT puts thousands of phones behind one IPv4 address, and
# each call starts with a burst of Binding requests from each browser: docs/stun-turn.md explains the figures.
DEFAULT_RATE = 500.0
DEFAULT_BURST = 2000
DEFAULT_SOFTWARE = "vchat"
_WILDCARDS = ("0.0.0.0", "::")


def alternate_address(value: Any) -> tuple[str, int]:
    """RFC 5780's alternate address: `ADDR:PORT`, or `[ADDR]:PORT` for IPv6."""
    given = str(value).strip()
    if given.startswith("["):
        host, sep, number = given[1:].partition("]:")
    else:
        host, sep, number = given.rpartition(":")
        if ":" in host:
            raise ValueError("write an IPv6 address as [ADDR]:PORT")
    if not sep or not host:
        raise ValueError("not ADDR:PORT")
    address = ip_address(host)
    if address in _WILDCARDS:
        raise ValueError("the alternate address must be a specific address")
    return address, port(number)


def software(value: Any) -> str:
    """The SOFTWARE attribute: short, since it goes into every response."""
    if not isinstance(value, str) or len(value.encode("utf-8")) > MAX_SOFTWARE_BYTES:
        raise ValueError(f"at most {MAX_SOFTWARE_BYTES} bytes, to keep responses small")
    return value


STUN_SETTINGS = (
    Setting("stun-udp", DEFAULT_UDP_PORT, port_or_zero, "UDP port of the STUN responder; 0 disables it"),
    Setting(
        "stun-interface",
        [],
        ip_address,
        "address for STUN over UDP [default: each address of the host]",
        repeatable=True,
    ),
    Setting(
        "stun-tcp",
        None,
        server_endpoint,
        "STUN over TCP (RFC 8489 framing) on this Twisted endpoint, e.g. tcp:3478 [default: off]",
    ),
    Setting(
        "stun-alternate",
        None,
        alternate_address,
        "ADDR:PORT ([ADDR]:PORT for IPv6) of RFC 5780's alternate address, for NAT behaviour discovery; "
        "needs exactly one --stun-interface of the same family [default: off]",
    ),
    Setting(
        "stun-rate",
        DEFAULT_RATE,
        number,
        "STUN requests per second allowed per source address (IPv6: per /64); 0 disables the limit",
        0,
    ),
    Setting("stun-burst", DEFAULT_BURST, integer, "STUN requests a source address may send in a burst", 1),
    Setting(
        "stun-software",
        DEFAULT_SOFTWARE,
        software,
        "SOFTWARE attribute of STUN responses; empty leaves it out",
    ),
)


@dataclass(frozen=True)
class StunConfig:
    """Everything the STUN service needs, as plain values, checked across fields when built (`ValueError`).

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

    def __post_init__(self) -> None:
        if self.interfaces and all(wildcard in self.interfaces for wildcard in _WILDCARDS):
            raise ValueError(
                "--stun-interface: '::' already receives IPv4 (dual-stack); give it without '0.0.0.0'"
            )
        if self.alternate is None:
            return
        if self.udp_port is None:
            raise ValueError("--stun-alternate needs STUN over UDP (--stun-udp is 0)")
        if self.udp_port and self.alternate[1] == self.udp_port:  # 0: the OS picks both (tests)
            raise ValueError("--stun-alternate: the alternate port must differ from --stun-udp")
        primary = self.primary_address()
        if primary is None:
            raise ValueError(
                "--stun-alternate needs exactly one --stun-interface of its address family (besides the "
                "alternate address itself): RFC 5780's primary address"
            )
        if primary in _WILDCARDS:
            raise ValueError("--stun-alternate: the primary --stun-interface must be a specific address")

    def primary_address(self) -> str | None:
        """RFC 5780's primary address: the interface of the alternate's family (None without alternate)."""
        if self.alternate is None or not self.interfaces:
            return None
        family = ipaddress.ip_address(self.alternate[0]).version
        same = [
            a for a in self.interfaces if ipaddress.ip_address(a).version == family and a != self.alternate[0]
        ]
        return same[0] if len(same) == 1 else None


def stun_config(options: Mapping[str, Any]) -> StunConfig:
    """The `StunConfig` of parsed `--stun-*` options; `UsageError` when they do not fit together."""
    try:
        return StunConfig(
            udp_port=options["stun-udp"] or None,
            interfaces=tuple(dict.fromkeys(options["stun-interface"])) or None,
            tcp_endpoint=options["stun-tcp"],
            alternate=options["stun-alternate"],
            rate=options["stun-rate"],
            burst=options["stun-burst"],
            software=options["stun-software"],
        )
    except ValueError as e:
        raise usage.UsageError(str(e)) from e
