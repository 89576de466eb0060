"""Validation of client messages: raw decoded maps in, typed messages out, `ProtocolError` otherwise.

Each message class names its wire `TYPE` and checks a raw map in `parse`; `ClientMessage` lists them all,
and is the one registry: `parse_message` finds the class by type, and the protocol's dispatch is checked
against the same union by mypy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Self, cast, get_args

from vchat.protocol.errors import CloseCode, ErrorCode, ProtocolError
from vchat.protocol.snapshot import Image, decode_snapshot

GENDERS = frozenset({"m", "f", "u"})
WANTS = frozenset({"any", "m", "f"})
MAX_CHAT_CHARS = 1000
MAX_ID_CHARS = 64
MAX_COUNTRIES = 64
MAX_CLIENT_FACTS = 16
MAX_FACT_CHARS = 128
MAX_LANG_CHARS = 35
MAX_DEVICE_ID_CHARS = 64
_DEVICE_ID = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_DEVICE_ID_CHARS}}}")
_LANG = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8}){0,6}")
_COUNTRY = re.compile(r"[A-Za-z]{2}")

MAX_COMMENT_CHARS = 500
ReportReason = Literal["nudity", "harassment", "spam", "underage", "chat_abuse", "other"]
REPORT_REASONS: frozenset[str] = frozenset(get_args(ReportReason))

RequestId = str | int | None
ClientFact = str | int | float | bool | None


def bad(message: str) -> ProtocolError:
    """A non-fatal `bad_message` error."""
    return ProtocolError(ErrorCode.BAD_MESSAGE, message)


def _string(raw: dict[str, Any], key: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str):
        raise bad(f"{key} must be a string")
    return value


def _one_of(raw: dict[str, Any], key: str, allowed: frozenset[str], default: str | None = None) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str) or value not in allowed:  # a list or map would not even hash
        raise bad(f"{key} must be one of {', '.join(repr(choice) for choice in sorted(allowed))}")
    return value


@dataclass(frozen=True, slots=True)
class Hello:
    """First message: who the user is, and optionally the session it resumes."""

    TYPE: ClassVar[str] = "hello"
    gender: str | None  # None: not said (a logged-in user's account's, else "u")
    lang: str | None
    client: dict[str, ClientFact]
    resume: str | None
    device_id: str | None = None  # `client.device_id`: the random id the client keeps, for device bans

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> Hello:
        """Check a `hello`; a missing age confirmation is fatal."""
        if raw.get("age_confirmed") is not True:
            raise ProtocolError(
                ErrorCode.AGE_REQUIRED, "you must confirm that you are 18 or older", CloseCode.AGE_REQUIRED
            )
        gender = None if raw.get("gender") is None else _one_of(raw, "gender", GENDERS)
        lang = raw.get("lang")
        if lang is not None and not (
            isinstance(lang, str) and len(lang) <= MAX_LANG_CHARS and _LANG.fullmatch(lang)
        ):
            raise bad("lang must be a BCP 47 language tag")
        client = raw.get("client", {})
        if not isinstance(client, dict) or len(client) > MAX_CLIENT_FACTS:
            raise bad(f"client must be a map of at most {MAX_CLIENT_FACTS} facts")
        for key, fact in client.items():
            if len(key) > MAX_FACT_CHARS or isinstance(fact, list | dict):
                raise bad("client facts must be short strings, numbers, booleans or null")
            if isinstance(fact, str) and len(fact) > MAX_FACT_CHARS:
                raise bad(f"client facts must be at most {MAX_FACT_CHARS} characters")
        device_id = client.get("device_id")
        if device_id is not None and not (isinstance(device_id, str) and _DEVICE_ID.fullmatch(device_id)):
            raise bad(
                f"client.device_id must be 1 to {MAX_DEVICE_ID_CHARS} characters of A-Z, a-z, 0-9, _ and -"
            )
        resume = raw.get("resume")
        if resume is not None and not isinstance(resume, str):
            raise bad("resume must be a string")
        return cls(gender, lang, client, resume, device_id)


@dataclass(frozen=True, slots=True)
class Search:
    """Enter the queue with these filters."""

    TYPE: ClassVar[str] = "search"
    want: str
    countries: frozenset[str]

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> Search:
        """Check a `search`."""
        want = _one_of(raw, "want", WANTS, default="any")
        countries = raw.get("countries")
        if countries is None:
            countries = []
        if not isinstance(countries, list) or len(countries) > MAX_COUNTRIES:
            raise bad(f"countries must be a list of at most {MAX_COUNTRIES} ISO 3166 alpha-2 codes")
        for code in countries:
            if not (isinstance(code, str) and _COUNTRY.fullmatch(code)):
                raise bad("countries must hold ISO 3166 alpha-2 codes such as DE")
        return cls(want, frozenset(code.upper() for code in countries))


@dataclass(frozen=True, slots=True)
class Signal:
    """WebRTC signaling for the partner, relayed unchanged."""

    TYPE: ClassVar[str] = "signal"
    match_id: str
    payload: Any

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> Signal:
        """Check a `signal`."""
        if "payload" not in raw:
            raise bad("signal needs a payload")
        return cls(_string(raw, "match_id"), raw["payload"])


@dataclass(frozen=True, slots=True)
class Chat:
    """A text chat line for the partner, relayed and never stored."""

    TYPE: ClassVar[str] = "chat"
    match_id: str
    text: str

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> Chat:
        """Check a `chat`; text over the limit is `too_long`."""
        match_id = _string(raw, "match_id")
        text = _string(raw, "text")
        if not text.strip():
            raise bad("text must not be empty")
        if len(text) > MAX_CHAT_CHARS:
            raise ProtocolError(ErrorCode.TOO_LONG, f"text must be at most {MAX_CHAT_CHARS} characters")
        return cls(match_id, text)


@dataclass(frozen=True, slots=True)
class Typing:
    """The user is typing."""

    TYPE: ClassVar[str] = "typing"
    match_id: str

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> Typing:
        """Check a `typing`."""
        return cls(_string(raw, "match_id"))


class _Bare:
    """A message with nothing but its type."""

    __slots__ = ()

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> Self:
        """Nothing to check but the type."""
        return cls()


@dataclass(frozen=True, slots=True)
class Next(_Bare):
    """End the current match and search again with the last filters."""

    TYPE: ClassVar[str] = "next"


@dataclass(frozen=True, slots=True)
class Stop(_Bare):
    """End the current match and leave the queue."""

    TYPE: ClassVar[str] = "stop"


@dataclass(frozen=True, slots=True)
class Ping(_Bare):
    """Application-level round trip."""

    TYPE: ClassVar[str] = "ping"


@dataclass(frozen=True, slots=True)
class Report:
    """Report the partner of the current or previous match to the moderators."""

    TYPE: ClassVar[str] = "report"
    match_id: str
    reason: ReportReason
    comment: str | None
    snapshot: Image | None

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> Report:
        """Check a `report`: a bad reason or comment is `bad_message`, a bad image `bad_snapshot`."""
        match_id = _string(raw, "match_id")
        reason = cast(ReportReason, _one_of(raw, "reason", REPORT_REASONS))
        comment = raw.get("comment")
        if comment is not None and not (isinstance(comment, str) and len(comment) <= MAX_COMMENT_CHARS):
            raise bad(f"comment must be a string of at most {MAX_COMMENT_CHARS} characters")
        snapshot = raw.get("snapshot")
        return cls(match_id, reason, comment or None, None if snapshot is None else decode_snapshot(snapshot))


ClientMessage = Hello | Search | Signal | Chat | Typing | Next | Stop | Ping | Report
_CLASSES: dict[str, type[ClientMessage]] = {kind.TYPE: kind for kind in get_args(ClientMessage)}
CLIENT_TYPES = frozenset(_CLASSES)


def request_id(raw: dict[str, Any]) -> RequestId:
    """The message's `id`, checked: a string of at most 64 characters or an integer."""
    rid = raw.get("id")
    if rid is None:
        return None
    if isinstance(rid, bool) or not isinstance(rid, str | int):
        raise bad("id must be a string or an integer")
    if isinstance(rid, str) and len(rid) > MAX_ID_CHARS:
        raise bad(f"id must be at most {MAX_ID_CHARS} characters")
    return rid


def message_type(raw: dict[str, Any]) -> str:
    """The message's `type`, which every message must carry as a string."""
    kind = raw.get("type")
    if not isinstance(kind, str):
        raise bad("every message needs a string type")
    return kind


def parse_message(raw: dict[str, Any]) -> ClientMessage:
    """Turn one decoded map into a typed client message."""
    kind = message_type(raw)
    message_class = _CLASSES.get(kind)
    if message_class is None:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {kind[:32]!r}")
    return message_class.parse(raw)
