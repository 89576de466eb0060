"""What the durable store holds, as plain checked values: bans, reports, moderation flags and snapshots.

Pure Python: no Twisted, no clock. Every value checks itself when built (`ValueError` says what is wrong), so
a store only ever holds what these classes allow. Times are seconds since the epoch, passed in.
"""

from __future__ import annotations

import ipaddress
import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

from vchat.protocol.messages import (
    MAX_CHAT_CHARS,
    MAX_CLIENT_FACTS,
    MAX_FACT_CHARS,
    ClientFact,
    ReportReason,
)

Category = ReportReason
"""Why a user was reported, and why a ban was given: the report reasons."""
TargetKind = Literal["user_id", "ip", "device_id"]
BanSource = Literal["moderator", "rule", "webhook"]
ReportStatus = Literal["open", "dismissed", "banned"]
FlagStatus = Literal["open", "resolved"]
ContentType = Literal["image/jpeg", "image/png"]
SummaryValue = str | int | float | bool

CATEGORIES: tuple[Category, ...] = get_args(Category)
TARGET_KINDS: tuple[TargetKind, ...] = get_args(TargetKind)
BAN_SOURCES: tuple[BanSource, ...] = get_args(BanSource)
REPORT_STATUSES: tuple[ReportStatus, ...] = get_args(ReportStatus)
FLAG_STATUSES: tuple[FlagStatus, ...] = get_args(FlagStatus)
CONTENT_TYPES: tuple[ContentType, ...] = get_args(ContentType)

MAX_SNAPSHOT_BYTES = 256 * 1024
MAX_COMMENT_CHARS = 500
MAX_REASON_CHARS = 500
MAX_BAN_MESSAGES = 20
MAX_IDENTITY_CHARS = 128
MAX_RULE_CHARS = 64
MAX_SUMMARY_ENTRIES = 16
MAX_SUMMARY_CHARS = 128

_MAGIC: dict[ContentType, bytes] = {"image/jpeg": b"\xff\xd8\xff", "image/png": b"\x89PNG\r\n\x1a\n"}
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_MAPPED_BASE = int(_MAPPED.network_address)
_ALL_ONES = (1 << 128) - 1

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def new_id() -> str:
    """A fresh random record id: 22 URL-safe characters."""
    return secrets.token_urlsafe(16)


def ban_network(value: str) -> Network:
    """An IP ban's network from an address or a CIDR network (host bits ignored), IPv4-mapped IPv6 as IPv4."""
    if not isinstance(value, str):
        raise ValueError("an IP ban needs an address or a network such as 203.0.113.0/24")
    network = ipaddress.ip_network(value.strip(), strict=False)
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


def plain_address(value: str) -> Address:
    """A client's address, IPv4-mapped IPv6 as IPv4; `ValueError` if it is not an address."""
    if not isinstance(value, str):
        raise ValueError("expected an IP address")
    address = ipaddress.ip_address(value.strip())
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def address_key(address: Address) -> bytes:
    """`address` as 16 big-endian bytes, IPv4 as IPv4-mapped IPv6: one ordering for both families."""
    number = int(address) + (_MAPPED_BASE if address.version == 4 else 0)
    return number.to_bytes(16, "big")


def network_bounds(network: Network) -> tuple[bytes, bytes]:
    """The first and last address of `network` as keys (see `address_key`)."""
    return address_key(network.network_address), address_key(network.broadcast_address)


def containing_lows(address: Address) -> tuple[bytes, ...]:
    """The first addresses (as keys) of every network that can contain `address`, one per prefix length.

    A store finds the bans on networks holding `address` by looking these up exactly (an index seek each)
    and checking that the network's last address is not below the address's key.
    """
    number = int.from_bytes(address_key(address), "big")
    # An IPv4 address lies only in IPv4 networks: prefixes 96-128 of its mapped form.
    shortest = 96 if address.version == 4 else 0
    lows = dict.fromkeys(
        (number & (_ALL_ONES ^ ((1 << (128 - prefix)) - 1))).to_bytes(16, "big")
        for prefix in range(shortest, 129)
    )
    return tuple(lows)


def _fields_of(value: object, kind: type) -> dict[str, Any]:
    return {f.name: getattr(value, f.name) for f in fields(kind)}


def _check_text(name: str, value: object, limit: int, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or not value or len(value) > limit:
        raise ValueError(f"{name} must be a string of 1 to {limit} characters")


def _check_time(name: str, value: object, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of seconds")


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, not {value!r}")


def _check_facts(name: str, facts: object, entries: int, chars: int, *, nullable: bool) -> None:
    if not isinstance(facts, Mapping) or len(facts) > entries:
        raise ValueError(f"{name} must be a map of at most {entries} entries")
    for key, value in facts.items():
        if not isinstance(key, str) or len(key) > chars:
            raise ValueError(f"the keys of {name} must be strings of at most {chars} characters")
        if value is None and nullable:
            continue
        if isinstance(value, str):
            if len(value) > chars:
                raise ValueError(f"strings in {name} must be at most {chars} characters")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise ValueError(f"numbers in {name} must be finite")
        elif not isinstance(value, int):  # bool is an int
            raise ValueError(f"values in {name} must be short strings, numbers or booleans")


@dataclass(frozen=True)
class Snapshot:
    """An image of the reported user's video: JPEG or PNG bytes, at most 256 KiB."""

    content_type: ContentType
    data: bytes = field(repr=False)

    def __post_init__(self) -> None:
        _check_choice("a snapshot's content type", self.content_type, CONTENT_TYPES)
        if not isinstance(self.data, bytes) or not 0 < len(self.data) <= MAX_SNAPSHOT_BYTES:
            raise ValueError(f"a snapshot must be 1 to {MAX_SNAPSHOT_BYTES} bytes")
        if not self.data.startswith(_MAGIC[self.content_type]):
            raise ValueError(f"the snapshot's bytes are not {self.content_type}")


@dataclass(frozen=True)
class BanTarget:
    """Whom a ban bars: a user id (a live session's id until accounts exist), a device id, or an IP address
    or network; an IP target's value is kept as its network in CIDR form (`10.0.0.1` is `10.0.0.1/32`)."""

    kind: TargetKind
    value: str

    def __post_init__(self) -> None:
        _check_choice("a ban's target kind", self.kind, TARGET_KINDS)
        if self.kind == "ip":
            object.__setattr__(self, "value", str(ban_network(self.value)))
        else:
            _check_text(f"a ban's {self.kind}", self.value, MAX_IDENTITY_CHARS)

    @property
    def network(self) -> Network:
        """An IP target's network; `ValueError` for other kinds."""
        if self.kind != "ip":
            raise ValueError(f"a {self.kind} ban has no network")
        return ban_network(self.value)

    def matches(self, user_id: str | None, address: Address | None, device_id: str | None) -> bool:
        """Whether this target bars a client with these identities (the reference for stores' lookups)."""
        if self.kind == "user_id":
            return user_id == self.value
        if self.kind == "device_id":
            return device_id == self.value
        network = self.network
        return address is not None and address.version == network.version and address in network


@dataclass(frozen=True, kw_only=True)
class NewBan:
    """A ban to be stored. Messages (the offender's own last chat lines) are only kept for `chat_abuse`."""

    target: BanTarget
    category: Category
    reason: str
    source: BanSource
    created_at: float
    ends_at: float | None  # None: permanent
    messages: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.target, BanTarget):
            raise ValueError("a ban's target must be a BanTarget")
        _check_choice("a ban's category", self.category, CATEGORIES)
        _check_text("a ban's reason", self.reason, MAX_REASON_CHARS)
        _check_choice("a ban's source", self.source, BAN_SOURCES)
        _check_time("a ban's start", self.created_at)
        _check_time("a ban's end", self.ends_at, optional=True)
        if self.ends_at is not None and self.ends_at <= self.created_at:
            raise ValueError("a ban must end after it starts")
        if not isinstance(self.messages, tuple):
            raise ValueError("a ban's messages must be a tuple of strings")
        if self.messages and self.category != "chat_abuse":
            raise ValueError("chat messages are only kept for a ban for chat_abuse")
        if len(self.messages) > MAX_BAN_MESSAGES:
            raise ValueError(f"a ban keeps at most {MAX_BAN_MESSAGES} messages")
        for message in self.messages:
            if not isinstance(message, str) or len(message) > MAX_CHAT_CHARS:
                raise ValueError(f"a ban's messages must be strings of at most {MAX_CHAT_CHARS} characters")


@dataclass(frozen=True, kw_only=True)
class Ban(NewBan):
    """A stored ban. Its record is kept after it ends; its snapshot is not."""

    id: str
    report_id: str | None = None  # the report that led to it
    ended_at: float | None = None  # when it was lifted before its end
    has_snapshot: bool = False

    @classmethod
    def of(
        cls,
        ban: NewBan,
        *,
        id: str,
        report_id: str | None = None,
        ended_at: float | None = None,
        has_snapshot: bool = False,
    ) -> Ban:
        """The stored form of `ban`."""
        return cls(
            **_fields_of(ban, NewBan),
            id=id,
            report_id=report_id,
            ended_at=ended_at,
            has_snapshot=has_snapshot,
        )

    def active_at(self, now: float) -> bool:
        """Whether the ban bars its target at `now`: not lifted, and not past its end (its end is not in it)."""
        return self.ended_at is None and (self.ends_at is None or now < self.ends_at)

    @property
    def snapshot_due(self) -> float | None:
        """When the ban's snapshot must be gone: when it was lifted, or its end; None while permanent."""
        return self.ended_at if self.ended_at is not None else self.ends_at


@dataclass(frozen=True, kw_only=True)
class NewReport:
    """A user's report of another: who reported whom, the reported user's address and client facts, why."""

    reporter_user_id: str
    reporter_device_id: str | None
    reported_user_id: str
    reported_device_id: str | None
    reported_ip: str  # kept in its plain form (IPv4-mapped IPv6 as IPv4)
    reported_client: Mapping[str, ClientFact] = field(default_factory=dict)
    reason: Category
    comment: str | None = None
    created_at: float

    def __post_init__(self) -> None:
        _check_text("the reporter's user_id", self.reporter_user_id, MAX_IDENTITY_CHARS)
        _check_text("the reporter's device_id", self.reporter_device_id, MAX_IDENTITY_CHARS, optional=True)
        _check_text("the reported user_id", self.reported_user_id, MAX_IDENTITY_CHARS)
        _check_text("the reported device_id", self.reported_device_id, MAX_IDENTITY_CHARS, optional=True)
        object.__setattr__(self, "reported_ip", str(plain_address(self.reported_ip)))
        _check_facts("client facts", self.reported_client, MAX_CLIENT_FACTS, MAX_FACT_CHARS, nullable=True)
        object.__setattr__(self, "reported_client", dict(self.reported_client))
        _check_choice("a report's reason", self.reason, CATEGORIES)
        _check_text("a report's comment", self.comment, MAX_COMMENT_CHARS, optional=True)
        _check_time("a report's time", self.created_at)


@dataclass(frozen=True, kw_only=True)
class Report(NewReport):
    """A stored report: open until a moderator dismisses it or bans for it."""

    id: str
    status: ReportStatus = "open"
    resolved_at: float | None = None
    ban_id: str | None = None  # the ban it led to
    has_snapshot: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_choice("a report's status", self.status, REPORT_STATUSES)

    @classmethod
    def of(
        cls,
        report: NewReport,
        *,
        id: str,
        status: ReportStatus = "open",
        resolved_at: float | None = None,
        ban_id: str | None = None,
        has_snapshot: bool = False,
    ) -> Report:
        """The stored form of `report`."""
        return cls(
            **_fields_of(report, NewReport),
            id=id,
            status=status,
            resolved_at=resolved_at,
            ban_id=ban_id,
            has_snapshot=has_snapshot,
        )


@dataclass(frozen=True, kw_only=True)
class NewFlag:
    """A moderation record for review: an automatic rule flagged a user, with a small summary of why."""

    user_id: str
    device_id: str | None = None
    rule: str
    summary: Mapping[str, SummaryValue] = field(default_factory=dict)
    created_at: float

    def __post_init__(self) -> None:
        _check_text("a flag's user_id", self.user_id, MAX_IDENTITY_CHARS)
        _check_text("a flag's device_id", self.device_id, MAX_IDENTITY_CHARS, optional=True)
        _check_text("a flag's rule", self.rule, MAX_RULE_CHARS)
        _check_facts("a flag's summary", self.summary, MAX_SUMMARY_ENTRIES, MAX_SUMMARY_CHARS, nullable=False)
        object.__setattr__(self, "summary", dict(self.summary))
        _check_time("a flag's time", self.created_at)


@dataclass(frozen=True, kw_only=True)
class Flag(NewFlag):
    """A stored flag: open until a moderator resolves it."""

    id: str
    status: FlagStatus = "open"
    resolved_at: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_choice("a flag's status", self.status, FLAG_STATUSES)

    @classmethod
    def of(
        cls, flag: NewFlag, *, id: str, status: FlagStatus = "open", resolved_at: float | None = None
    ) -> Flag:
        """The stored form of `flag`."""
        return cls(**_fields_of(flag, NewFlag), id=id, status=status, resolved_at=resolved_at)
