"""What a bot says and when: its persona, search filters, dwell times and backoff. Pure, no I/O."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

GENDERS = ("m", "f", "u")
LANGUAGES = ("en", "en-US", "en-GB", "de-DE", "fr-FR", "es-ES", "pt-BR", "it", "nl", "pl", "tr", "ru", "ja")
COUNTRIES = ("US", "GB", "DE", "FR", "ES", "BR", "IT", "NL", "PL", "TR", "IN", "JP")
CLIENTS = (
    {"browser": "Chrome 131", "os": "Windows 10"},
    {"browser": "Chrome 131", "os": "Android 14"},
    {"browser": "Firefox 133", "os": "Ubuntu"},
    {"browser": "Safari 18", "os": "macOS 15"},
    {"browser": "Safari 18", "os": "iOS 18"},
    {"browser": "Edge 131", "os": "Windows 11"},
)
CHAT_LINES = (
    "hi",
    "hey there",
    "hello from the bot farm",
    "where are you from?",
    "how's it going?",
    "nice to meet you",
    "can you hear me?",
    "your video froze for a sec",
    "lol",
    "ok bye, next!",
)


@dataclass(frozen=True, slots=True)
class BotSettings:
    """How bots behave; every time is in seconds."""

    dwell_min: float = 2.0
    dwell_max: float = 6.0
    ping_interval: float = 2.0
    search_timeout: float = 10.0
    gender_filter_rate: float = 0.15
    country_filter_rate: float = 0.05
    candidates: int = 3
    chat_lines_max: int = 2
    reconnect_base: float = 0.5
    reconnect_cap: float = 15.0

    def __post_init__(self) -> None:
        if not 0 <= self.dwell_min <= self.dwell_max:
            raise ValueError("need 0 <= dwell_min <= dwell_max")
        if self.ping_interval <= 0 or self.search_timeout <= 0:
            raise ValueError("ping_interval and search_timeout must be positive")
        for rate in (self.gender_filter_rate, self.country_filter_rate):
            if not 0 <= rate <= 1:
                raise ValueError("filter rates are probabilities between 0 and 1")
        if self.candidates < 0 or self.chat_lines_max < 0:
            raise ValueError("candidates and chat_lines_max may not be negative")
        if not 0 < self.reconnect_base <= self.reconnect_cap:
            raise ValueError("need 0 < reconnect_base <= reconnect_cap")


def hello_fields(rng: random.Random) -> dict[str, Any]:
    """The fields of a `hello` for a new visitor: a random gender, language and browser."""
    return {
        "age_confirmed": True,
        "gender": rng.choice(GENDERS),
        "lang": rng.choice(LANGUAGES),
        "client": dict(rng.choice(CLIENTS), name="vchat-bot"),
    }


def search_fields(rng: random.Random, settings: BotSettings) -> dict[str, Any]:
    """The fields of a `search`: mostly anyone, sometimes one gender or a few countries."""
    fields: dict[str, Any] = {"want": "any"}
    if rng.random() < settings.gender_filter_rate:
        fields["want"] = rng.choice(("m", "f"))
    if rng.random() < settings.country_filter_rate:
        fields["countries"] = rng.sample(COUNTRIES, rng.randint(1, 3))
    return fields


def dwell_time(rng: random.Random, settings: BotSettings) -> float:
    """How long to stay with a partner before pressing `next`."""
    return rng.uniform(settings.dwell_min, settings.dwell_max)


def chat_script(rng: random.Random, settings: BotSettings, dwell: float) -> list[tuple[float, str]]:
    """The chat lines to send during a match, as (seconds after the match, text), all before `dwell`."""
    count = rng.randint(1, settings.chat_lines_max) if settings.chat_lines_max else 0
    times = sorted(rng.uniform(0.0, dwell * 0.8) for _ in range(count))
    return [(at, rng.choice(CHAT_LINES)) for at in times]


def ping_delay(rng: random.Random, settings: BotSettings) -> float:
    """The time to the next application `ping`, jittered so bots don't ping in lockstep."""
    return settings.ping_interval * rng.uniform(0.8, 1.2)


def reconnect_delay(rng: random.Random, settings: BotSettings, attempt: int) -> float:
    """Exponential backoff with jitter before reconnect attempt number `attempt` (1 is the first)."""
    base, cap = settings.reconnect_base, settings.reconnect_cap
    # doubling past the cap changes nothing, and doubling without end overflows a float
    doublings = min(max(attempt - 1, 0), math.ceil(math.log2(cap / base)))
    ceiling = min(cap, base * 2.0**doublings)
    return ceiling / 2 + rng.uniform(0, ceiling / 2)
