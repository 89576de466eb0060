"""vchat-bot: simulated visitors that load-test a vchat server over its real wire protocol."""

from __future__ import annotations

from vchat.bot.behaviour import BotSettings
from vchat.bot.client import Bot, BotFleet, LoadRun
from vchat.bot.stats import BotStats, build_report

__all__ = ["Bot", "BotFleet", "BotSettings", "BotStats", "LoadRun", "build_report"]
