"""Validation of client messages: raw decoded maps in, typed messages out, `ProtocolError` otherwise."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vchat.protocol.errors import CloseCode, ErrorCode, ProtocolError

GENDERS = frozenset({"m", "f", "u"})
WANTS = frozenset({"any", "m", "f"})
MAX_CHAT_CHARS = 1000
MAX_ID_CHARS = 64
MAX_COUNTRIES = 64
MAX_CLIENT_FACTS = 16
MAX_FACT_CHARS = 128
_LANG = re.compile(r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{1,8}){0,6}")
_COUNTRY = re.compile(r"[A-Za-z]{2}")

RequestId = str | int | None


@dataclass(frozen=True, slots=True)
class Hello:
    """First message: who the user is, and optionally the session it resumes."""

    gender: str
    lang: str | None
    client: dict[str, str | int | float | bool | None]
    resume: str | None


@dataclass(frozen=True, slots=True)
class Search:
    """Enter the queue with these filters."""

    want: str
    countries: frozenset[str]


@dataclass(frozen=True, slots=True)
class Signal:
    """WebRTC signaling for the partner, relayed unchanged."""

    match_id: str
    payload: Any


@dataclass(frozen=True, slots=True)
class Chat:
    """A text chat line for the partner, relayed and never stored."""

    match_id: str
    text: str


@dataclass(frozen=True, slots=True)
class Typing:
    """The user is typing."""

    match_id: str


@dataclass(frozen=True, slots=True)
class Next:
    """End the current match and search again with the last filters."""


@dataclass(frozen=True, slots=True)
class Stop:
    """End the current match and leave the queue."""


@dataclass(frozen=True, slots=True)
class Ping:
    """Application-level round trip."""


ClientMessage = Hello | Search | Signal | Chat | Typing | Next | Stop | Ping


def bad(message: str) -> ProtocolError:
    """A non-fatal `bad_message` error."""
    return ProtocolError(ErrorCode.BAD_MESSAGE, message)


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


def _string(raw: dict[str, Any], key: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str):
        raise bad(f"{key} must be a string")
    return value


def _match_id(raw: dict[str, Any]) -> str:
    return _string(raw, "match_id")


def parse_hello(raw: dict[str, Any]) -> Hello:
    """Check a `hello`; a missing age confirmation is fatal."""
    if raw.get("age_confirmed") is not True:
        raise ProtocolError(
            ErrorCode.AGE_REQUIRED, "you must confirm that you are 18 or older", CloseCode.AGE_REQUIRED
        )
    gender = raw.get("gender")
    if gender not in GENDERS:
        raise bad('gender must be "m", "f" or "u"')
    lang = raw.get("lang")
    if lang is not None and not (isinstance(lang, str) and len(lang) <= 35 and _LANG.fullmatch(lang)):
        raise bad("lang must be a BCP 47 language tag")
    client = raw.get("client", {})
    if not isinstance(client, dict) or len(client) > MAX_CLIENT_FACTS:
        raise bad(f"client must be a map of at most {MAX_CLIENT_FACTS} facts")
    for key, fact in client.items():
        if len(key) > MAX_FACT_CHARS or isinstance(fact, list | dict):
            raise bad("client facts must be short strings, numbers, booleans or null")
        if isinstance(fact, str) and len(fact) > MAX_FACT_CHARS:
            raise bad(f"client facts must be at most {MAX_FACT_CHARS} characters")
    resume = raw.get("resume")
    if resume is not None and not isinstance(resume, str):
        raise bad("resume must be a string")
    return Hello(gender, lang, client, resume)


def parse_search(raw: dict[str, Any]) -> Search:
    """Check a `search`."""
    want = raw.get("want", "any")
    if want not in WANTS:
        raise bad('want must be "any", "m" or "f"')
    countries = raw.get("countries")
    if countries is None:
        countries = []
    if not isinstance(countries, list) or len(countries) > MAX_COUNTRIES:
        raise bad(f"countries must be a list of at most {MAX_COUNTRIES} ISO 3166 alpha-2 codes")
    for code in countries:
        if not (isinstance(code, str) and _COUNTRY.fullmatch(code)):
            raise bad("countries must hold ISO 3166 alpha-2 codes such as DE")
    return Search(want, frozenset(code.upper() for code in countries))


def parse_signal(raw: dict[str, Any]) -> Signal:
    """Check a `signal`."""
    if "payload" not in raw:
        raise bad("signal needs a payload")
    return Signal(_match_id(raw), raw["payload"])


def parse_chat(raw: dict[str, Any]) -> Chat:
    """Check a `chat`; text over the limit is `too_long`."""
    match_id = _match_id(raw)
    text = _string(raw, "text")
    if not text.strip():
        raise bad("text must not be empty")
    if len(text) > MAX_CHAT_CHARS:
        raise ProtocolError(ErrorCode.TOO_LONG, f"text must be at most {MAX_CHAT_CHARS} characters")
    return Chat(match_id, text)


def parse_typing(raw: dict[str, Any]) -> Typing:
    """Check a `typing`."""
    return Typing(_match_id(raw))


_PARSERS: dict[str, Callable[[dict[str, Any]], ClientMessage]] = {
    "hello": parse_hello,
    "search": parse_search,
    "signal": parse_signal,
    "chat": parse_chat,
    "typing": parse_typing,
    "next": lambda raw: Next(),
    "stop": lambda raw: Stop(),
    "ping": lambda raw: Ping(),
}
CLIENT_TYPES = frozenset(_PARSERS)


def parse_message(raw: dict[str, Any]) -> ClientMessage:
    """Turn one decoded map into a typed client message."""
    kind = message_type(raw)
    parser = _PARSERS.get(kind)
    if parser is None:
        raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {kind[:32]!r}")
    return parser(raw)
