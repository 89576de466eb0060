"""Automatic moderation rules: the `IModerationRule` interface, what a rule may decide, the built-in rules,
and how the rules are found (Twisted plugins) and configured (the `[rules.NAME]` tables of `--config`).

A rule is plain Python, with time passed in: it reads a session's `Signals` and answers with an action or None.
docs/moderation.md ("Automatic moderation") documents each built-in rule and its thresholds.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from twisted.plugin import IPlugin, getPlugins
from zope.interface import Attribute, Interface, implementer

from vchat.moderation.signals import Signals
from vchat.store.records import CATEGORIES, Category, SummaryValue


@dataclass(frozen=True)
class FlagAction:
    """Flag the user for review: a flag record with this summary of figures (numbers, never text)."""

    summary: Mapping[str, SummaryValue] = field(default_factory=dict)


@dataclass(frozen=True)
class BanAction:
    """Ban the user (its session id and device id) for `duration_s` seconds; a `chat_abuse` ban carries the
    user's own last chat messages."""

    duration_s: float
    category: Category
    reason: str
    summary: Mapping[str, SummaryValue] = field(default_factory=dict)


Action = FlagAction | BanAction


class IModerationRule(Interface):
    """A rule that turns a session's behaviour signals into a moderation action.

    Rules are found as Twisted plugins: a module in a `twisted/plugins/` directory on the Python path holding
    objects that provide both `twisted.plugin.IPlugin` and this interface. The object found is the rule with its
    default thresholds; `configure` makes the one the server uses, with the options of the `[rules.NAME]` table
    in the `--config` file. A rule should be cheap: `judge` runs after every event of every session (a match
    starting or ending, a chat message, a report), so it should look at `signals.event` first and return at
    once when the event cannot concern it. A rule that raises is logged and skipped.
    """

    name: str = Attribute("The rule's name: its `[rules.NAME]` table in the config file and a flag's `rule`.")

    def configure(options: Mapping[str, Any]) -> IModerationRule:
        """This rule with the thresholds in `options` (its config table, without `enabled`), leaving the
        object found as a plugin as it was; raise ValueError naming the option for an unknown key or bad value.
        """

    def judge(signals: Signals, now: float) -> FlagAction | BanAction | None:
        """What to do about the session with these signals now, if anything."""


# --- reading a rule's options --------------------------------------------------------------------------------


def positive_number(value: Any) -> float:
    """A finite number above zero."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("expected a number")
    if not math.isfinite(value) or value <= 0:
        raise ValueError("expected a number above 0")
    return float(value)


def share(value: Any) -> float:
    """A fraction above 0, at most 1."""
    number = positive_number(value)
    if number > 1:
        raise ValueError("expected a share above 0, at most 1")
    return number


def count(value: Any) -> int:
    """A whole number, at least 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("expected a whole number, at least 1")
    return value


def action_kind(value: Any) -> str:
    """ "flag" or "ban"."""
    if value not in ("flag", "ban"):
        raise ValueError('expected "flag" or "ban"')
    return str(value)


def category(value: Any) -> str:
    """A ban category."""
    if value not in CATEGORIES:
        raise ValueError(f"expected one of {', '.join(CATEGORIES)}")
    return str(value)


def patterns(value: Any) -> tuple[re.Pattern[str], ...]:
    """A list of regular expressions (Python syntax)."""
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise ValueError("expected a list of regular expressions")
    try:
        return tuple(re.compile(item) for item in value)
    except re.error as e:
        raise ValueError(f"not a regular expression: {e}") from None


def configured(rule: Any, options: Mapping[str, Any], kinds: Mapping[str, Callable[[Any], Any]]) -> Any:
    """A copy of the dataclass `rule` with `options` (TOML keys, `-` or `_`) read by `kinds`."""
    changes: dict[str, Any] = {}
    for key, raw in options.items():
        attribute = key.replace("-", "_")
        if attribute not in kinds:
            raise ValueError(f"unknown option {key!r} (known: {', '.join(sorted(kinds)).replace('_', '-')})")
        try:
            changes[attribute] = kinds[attribute](raw)
        except ValueError as e:
            raise ValueError(f"{key}: invalid value {raw!r} ({e})") from None
    return dataclasses.replace(rule, **changes)


def _act(
    action: str, ban_seconds: float, ban_category: str, reason: str, summary: dict[str, SummaryValue]
) -> FlagAction | BanAction:
    if action == "ban":
        return BanAction(ban_seconds, ban_category, reason, summary)  # type: ignore[arg-type]
    return FlagAction(summary)


_ACTION_KINDS: dict[str, Callable[[Any], Any]] = {
    "action": action_kind,
    "ban_seconds": positive_number,
    "category": category,
}


# --- the built-in rules ---------------------------------------------------------------------------------------


@implementer(IPlugin, IModerationRule)
@dataclass(frozen=True)
class QuickLeaves:
    """Most partners leave within seconds: a bot, or someone showing what nobody wants to see."""

    name: str = "quick-leaves"
    min_matches: int = 10
    share: float = 0.8
    within: float = 3.0
    action: str = "flag"
    ban_seconds: float = 3600.0
    category: str = "other"

    def configure(self, options: Mapping[str, Any]) -> QuickLeaves:
        kinds = {"min_matches": count, "share": share, "within": positive_number, **_ACTION_KINDS}
        return configured(self, options, kinds)  # type: ignore[no-any-return]

    def judge(self, signals: Signals, now: float) -> FlagAction | BanAction | None:
        if signals.event != "match_ended" or signals.window < self.min_matches:
            return None
        quick = signals.left_within(self.within)
        if quick < self.share * signals.window:
            return None
        summary: dict[str, SummaryValue] = {
            "matches": signals.window,
            "partner_left_quickly": quick,
            "within_s": self.within,
            "average_match_s": round(signals.average_match_seconds(), 1),
        }
        return _act(self.action, self.ban_seconds, self.category, "partners leave at once", summary)


@implementer(IPlugin, IModerationRule)
@dataclass(frozen=True)
class RepeatedMessage:
    """The same chat message sent again and again (of the user's last 20)."""

    name: str = "repeated-message"
    times: int = 10
    action: str = "ban"
    ban_seconds: float = 3600.0
    category: str = "chat_abuse"

    def configure(self, options: Mapping[str, Any]) -> RepeatedMessage:
        return configured(self, options, {"times": count, **_ACTION_KINDS})  # type: ignore[no-any-return]

    def judge(self, signals: Signals, now: float) -> FlagAction | BanAction | None:
        if signals.event != "chat" or signals.repeats < self.times:
            return None
        summary: dict[str, SummaryValue] = {"repeats": signals.repeats, "messages": signals.chats}
        return _act(self.action, self.ban_seconds, self.category, "the same message again and again", summary)


@implementer(IPlugin, IModerationRule)
@dataclass(frozen=True)
class Links:
    """Many chat messages holding links."""

    name: str = "links"
    count: int = 10
    action: str = "flag"
    ban_seconds: float = 3600.0
    category: str = "spam"

    def configure(self, options: Mapping[str, Any]) -> Links:
        return configured(self, options, {"count": count, **_ACTION_KINDS})  # type: ignore[no-any-return]

    def judge(self, signals: Signals, now: float) -> FlagAction | BanAction | None:
        if signals.event != "chat" or signals.links < self.count:
            return None
        summary: dict[str, SummaryValue] = {"links": signals.links, "messages": signals.chats}
        return _act(self.action, self.ban_seconds, self.category, "links in the chat", summary)


@implementer(IPlugin, IModerationRule)
@dataclass(frozen=True)
class Patterns:
    """A chat message matching one of the operator's regular expressions (none by default)."""

    name: str = "patterns"
    patterns: tuple[re.Pattern[str], ...] = ()
    action: str = "flag"
    ban_seconds: float = 3600.0
    category: str = "chat_abuse"

    def configure(self, options: Mapping[str, Any]) -> Patterns:
        return configured(self, options, {"patterns": patterns, **_ACTION_KINDS})  # type: ignore[no-any-return]

    def judge(self, signals: Signals, now: float) -> FlagAction | BanAction | None:
        if signals.event != "chat":
            return None
        for index, pattern in enumerate(self.patterns):
            if pattern.search(signals.last_text):
                # The pattern's number, not its text: a flag holds figures only.
                summary: dict[str, SummaryValue] = {"pattern": index, "messages": signals.chats}
                return _act(self.action, self.ban_seconds, self.category, "a forbidden message", summary)
        return None


@implementer(IPlugin, IModerationRule)
@dataclass(frozen=True)
class Reports:
    """Reported by many of the partners met."""

    name: str = "reports"
    min_reports: int = 3
    per_match: float = 0.3
    action: str = "flag"
    ban_seconds: float = 86400.0
    category: str = "other"

    def configure(self, options: Mapping[str, Any]) -> Reports:
        kinds = {"min_reports": count, "per_match": share, **_ACTION_KINDS}
        return configured(self, options, kinds)  # type: ignore[no-any-return]

    def judge(self, signals: Signals, now: float) -> FlagAction | BanAction | None:
        if signals.event != "reported" or signals.reports < self.min_reports:
            return None
        matches = max(1, signals.matches_started)
        if signals.reports < self.per_match * matches:
            return None
        summary: dict[str, SummaryValue] = {"reports": signals.reports, "matches": signals.matches_started}
        return _act(self.action, self.ban_seconds, self.category, "reported by many partners", summary)


BUILT_IN_RULES: tuple[IModerationRule, ...] = (
    QuickLeaves(),
    RepeatedMessage(),
    Links(),
    Patterns(),
    Reports(),
)


# --- finding and configuring rules ----------------------------------------------------------------------------


def find_rules(package: ModuleType | None = None) -> dict[str, IModerationRule]:
    """The rules found as Twisted plugins in `package` (default: `twisted.plugins`), by name."""
    found: dict[str, IModerationRule] = {}
    for rule in getPlugins(IModerationRule, package):
        found.setdefault(rule.name, rule)  # two rules of one name: the first found wins
    return found


def configure_rules(found: Mapping[str, IModerationRule], tables: Mapping[str, Any]) -> list[IModerationRule]:
    """The rules to run: every rule in `found`, configured with its table in `tables` (`[rules.NAME]`), except
    those whose table says `enabled = false`. ValueError, saying which table and option, for a table naming no
    rule, an option a rule does not know, or a bad value."""
    unknown = sorted(set(tables) - set(found))
    if unknown:
        raise ValueError(f"[rules.{unknown[0]}]: no such rule (known: {', '.join(sorted(found))})")
    rules: list[IModerationRule] = []
    for name in sorted(found):
        table = tables.get(name, {})
        if not isinstance(table, Mapping):
            raise ValueError(f"rules.{name} must be a table")
        options = dict(table)
        enabled = options.pop("enabled", True)
        if not isinstance(enabled, bool):
            raise ValueError(f"[rules.{name}] enabled: expected true or false")
        if not enabled:
            continue
        try:
            rules.append(found[name].configure(options))
        except Exception as e:  # a third-party rule's configure may raise anything
            raise ValueError(f"[rules.{name}] {e}") from None
    return rules


def load_rules(tables: Mapping[str, Any], package: ModuleType | None = None) -> list[IModerationRule]:
    """Find the rules (plugins in `package`) and configure them with `tables`; see `configure_rules`."""
    return configure_rules(find_rules(package), tables)


def rule_names(rules: Iterable[IModerationRule]) -> list[str]:
    """The names of `rules`, for the log."""
    return [rule.name for rule in rules]
