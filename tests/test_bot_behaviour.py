"""The bots' random choices: personas, search filters, dwell times and backoff."""

from __future__ import annotations

import random

import pytest

from vchat.bot.behaviour import GENDERS, BotSettings, reconnect_delay, search_fields


def test_behaviour_choices() -> None:
    rng = random.Random(1)
    settings = BotSettings()
    wants = [search_fields(rng, settings)["want"] for _ in range(1000)]
    assert 0.75 < wants.count("any") / len(wants) < 0.95
    assert set(wants) == {"any", "m", "f"}
    delays = [reconnect_delay(rng, settings, attempt) for attempt in range(1, 20)]
    assert delays[0] <= settings.reconnect_base and max(delays) <= settings.reconnect_cap
    assert GENDERS == ("m", "f", "u")
    with pytest.raises(ValueError):
        BotSettings(dwell_min=3, dwell_max=1)


def test_backoff_doubles_up_to_the_cap_and_stays_there() -> None:
    rng = random.Random(3)
    settings = BotSettings(reconnect_base=0.5, reconnect_cap=15.0)
    for attempt, ceiling in ((1, 0.5), (2, 1.0), (5, 8.0), (6, 15.0), (10_000, 15.0)):
        delay = reconnect_delay(rng, settings, attempt)
        assert ceiling / 2 <= delay <= ceiling
