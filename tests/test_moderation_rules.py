"""Automatic moderation: the built-in rules, rules found as Twisted plugins and configured from `--config`, and
the rules at work on scripted bad actors in memory, storing figures and a chat abuser's own messages only."""

from __future__ import annotations

import importlib
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from twisted.logger import capturedLogs, formatEvent
from twisted.plugin import IPlugin
from twisted.python.usage import UsageError
from zope.interface import implementer
from zope.interface.verify import verifyObject

from vchat.moderation.rules import (
    BUILT_IN_RULES,
    BanAction,
    FlagAction,
    IModerationRule,
    Links,
    Patterns,
    QuickLeaves,
    RepeatedMessage,
    Reports,
    configure_rules,
    find_rules,
    load_rules,
)
from vchat.moderation.signals import Signals
from vchat.store.memory import MemoryStore
from vchat.store.records import Ban, Flag
from vchat.tap import Options
from vchat.testing import MemoryClient, MemoryServer, fired, hello_message

LINK = "https://spam.example/buy-now"
PARTNER_TEXT = "my phone number is 555-0199"


# --- the built-in rules, judged directly -------------------------------------------------------------------


def test_built_in_rules_provide_the_interface() -> None:
    for rule in BUILT_IN_RULES:
        assert verifyObject(IModerationRule, rule) and IPlugin.providedBy(rule)
        assert verifyObject(IModerationRule, rule.configure({}))


def quick_leaver(matches: int, seconds: float) -> Signals:
    signals = Signals()
    for _ in range(matches):
        signals.match_started()
        signals.match_ended(seconds, partner_left=True)
    return signals


def test_quick_leaves() -> None:
    rule = QuickLeaves()
    assert rule.judge(quick_leaver(9, 1.0), 0.0) is None  # too few matches to tell
    assert rule.judge(quick_leaver(10, 5.0), 0.0) is None  # they stayed longer than `within`
    action = rule.judge(quick_leaver(10, 1.0), 0.0)
    assert action == FlagAction(
        {"matches": 10, "partner_left_quickly": 10, "within_s": 3.0, "average_match_s": 1.0}
    )
    signals = quick_leaver(10, 1.0)
    signals.chat("hi")
    assert rule.judge(signals, 0.0) is None  # not a match event
    banning = rule.configure({"action": "ban", "ban-seconds": 600, "within": 6})
    assert banning.judge(quick_leaver(10, 5.0), 0.0) == BanAction(
        600.0,
        "other",
        "partners leave at once",
        {"matches": 10, "partner_left_quickly": 10, "within_s": 6.0, "average_match_s": 5.0},
    )


def test_quick_leaves_share() -> None:
    signals = quick_leaver(7, 1.0)
    for _ in range(3):
        signals.match_ended(120.0, partner_left=True)
    assert QuickLeaves().judge(signals, 0.0) is None  # 70 % < 80 %
    assert QuickLeaves(share=0.7).judge(signals, 0.0) is not None


def test_repeated_message_links_and_patterns() -> None:
    signals = Signals()
    for _ in range(9):
        signals.chat(LINK)
    assert RepeatedMessage().judge(signals, 0.0) is None and Links().judge(signals, 0.0) is None
    signals.chat(LINK)
    assert RepeatedMessage().judge(signals, 0.0) == BanAction(
        3600.0, "chat_abuse", "the same message again and again", {"repeats": 10, "messages": 10}
    )
    assert Links().judge(signals, 0.0) == FlagAction({"links": 10, "messages": 10})
    assert Patterns().judge(signals, 0.0) is None  # no patterns by default
    rule = Patterns().configure({"patterns": ["(?i)forbidden", "buy-now"], "action": "ban"})
    assert rule.judge(signals, 0.0) == BanAction(
        3600.0, "chat_abuse", "a forbidden message", {"pattern": 1, "messages": 10}
    )


def test_reports_per_match() -> None:
    signals = Signals()
    for _ in range(10):
        signals.match_started()
    signals.reported()
    signals.reported()
    assert Reports().judge(signals, 0.0) is None  # fewer than 3
    signals.reported()
    assert Reports().judge(signals, 0.0) == FlagAction({"reports": 3, "matches": 10})
    assert Reports(per_match=0.5).judge(signals, 0.0) is None


# --- finding and configuring ---------------------------------------------------------------------------------


def test_the_built_in_rules_are_found_as_plugins() -> None:
    found = find_rules()
    assert {"quick-leaves", "repeated-message", "links", "patterns", "reports"} <= set(found)
    assert [rule.name for rule in load_rules({})] == sorted(found)


def test_configuration() -> None:
    found = {rule.name: rule for rule in BUILT_IN_RULES}
    rules = configure_rules(
        found, {"quick-leaves": {"min_matches": 20, "share": 0.9}, "patterns": {"enabled": False}}
    )
    assert "patterns" not in [rule.name for rule in rules]
    assert QuickLeaves(min_matches=20, share=0.9) in rules
    assert found["quick-leaves"] == QuickLeaves()  # the plugin's own object is left as it was


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ({"nope": {}}, r"\[rules.nope\]: no such rule"),
        ({"links": {"count": 0}}, r"\[rules.links\] count: invalid value 0"),
        ({"links": {"cuont": 3}}, r"\[rules.links\] unknown option 'cuont'"),
        ({"links": {"enabled": "yes"}}, r"\[rules.links\] enabled: expected true or false"),
        ({"links": 3}, "rules.links must be a table"),
        ({"quick-leaves": {"share": 1.5}}, r"share: invalid value 1.5"),
        ({"quick-leaves": {"within": float("nan")}}, r"within: invalid value"),
        ({"quick-leaves": {"action": "kick"}}, r'action: invalid value .* \(expected "flag" or "ban"\)'),
        ({"repeated-message": {"category": "rude"}}, r"category: invalid value 'rude'"),
        ({"patterns": {"patterns": ["("]}}, r"patterns: .*not a regular expression"),
        ({"patterns": {"patterns": "x"}}, r"patterns: .*expected a list"),
        ({"reports": {"min-reports": True}}, r"min-reports: invalid value True"),
    ],
)
def test_bad_configuration(tables: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        configure_rules({rule.name: rule for rule in BUILT_IN_RULES}, tables)


def test_rules_in_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "vchat.toml"
    config.write_text(
        textwrap.dedent(
            """
            ws = "tcp:8081"

            [rules.quick-leaves]
            min-matches = 20
            action = "ban"

            [rules.links]
            enabled = false
            """
        )
    )
    options = Options()
    options.parseOptions(["--config", str(config)])
    assert options["ws"] == "tcp:8081"
    assert QuickLeaves(min_matches=20, action="ban") in options.rules
    assert "links" not in [rule.name for rule in options.rules]


def test_default_options_run_every_rule_found() -> None:
    options = Options()
    options.parseOptions([])
    assert [rule.name for rule in options.rules] == sorted(find_rules())


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[rules.quick-leaves]\nshare = 2\n", r"\[rules.quick-leaves\] share: invalid value 2"),
        ("[rules.mystery]\n", r"\[rules.mystery\]: no such rule"),
        ("rules = 3\n", r"rules must be a table"),
    ],
)
def test_bad_rules_in_the_config_file(tmp_path: Path, toml: str, message: str) -> None:
    config = tmp_path / "vchat.toml"
    config.write_text(toml)
    with pytest.raises(UsageError, match=message):
        Options().parseOptions(["--config", str(config)])


THIRD_PARTY_RULE = '''
from twisted.plugin import IPlugin
from zope.interface import implementer

from vchat.moderation.rules import FlagAction, IModerationRule


@implementer(IPlugin, IModerationRule)
class Word:
    """Flags a user who writes a word."""

    name = "word"

    def __init__(self, word="boo"):
        self.word = word

    def configure(self, options):
        return Word(**options)

    def judge(self, signals, now):
        if signals.event == "chat" and self.word in signals.last_text:
            return FlagAction({"messages": signals.chats})
        return None


word = Word()
'''


def test_a_third_party_rule_found_as_a_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "acme_vchat_plugins"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "acme_rules.py").write_text(THIRD_PARTY_RULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins = importlib.import_module("acme_vchat_plugins")

    rules = load_rules({"word": {"word": "grr"}}, plugins)
    assert [rule.name for rule in rules] == ["word"]
    store = MemoryStore()
    memory = MemoryServer(store=store, rules=rules)
    a, b, matched, _ = memory.matched_pair()
    a.send({"type": "chat", "match_id": matched["match_id"], "text": "boo"})
    a.send({"type": "chat", "match_id": matched["match_id"], "text": "grr!"})
    assert [m["text"] for m in b.received()] == ["boo", "grr!"]
    [flag] = fired(store.list_flags("open", 10))
    assert flag.rule == "word" and flag.user_id == session_id(a)
    assert flag.summary == {"messages": 2}


# --- scripted bad actors, in memory --------------------------------------------------------------------------


def flags_of(store: MemoryStore) -> list[Flag]:
    return fired(store.list_flags("open", 100))


def bans_of(store: MemoryStore) -> list[Ban]:
    return fired(store.list_bans(None, 0.0, 100))


def server(**tables: Mapping[str, Any]) -> tuple[MemoryServer, MemoryStore]:
    store = MemoryStore()
    memory = MemoryServer(store=store, rules=load_rules(tables))
    memory.clock.advance(1_000_000.0)
    return memory, store


def session_id(client: MemoryClient) -> str:
    session = client.peer._session
    assert session is not None
    return session.session_id


def test_a_bot_whose_partners_all_leave_within_two_seconds_is_flagged() -> None:
    memory, store = server()
    bot = memory.client(hello=True, gender="m", client={"device_id": "bot-device-0001"})
    bot_id = session_id(bot)
    partners: list[str] = []
    for n in range(10):
        bot.send({"type": "search"})
        bot.expect("searching")
        partner = memory.client(hello=True, gender="f")
        partners.append(session_id(partner))
        partner.send({"type": "search"})
        partner.expect("searching")
        match_id = bot.expect("matched")["match_id"]
        partner.expect("matched")
        memory.advance(1.5)
        assert flags_of(store) == []
        partner.send({"type": "next"} if n % 2 else {"type": "stop"})
        assert bot.expect("partner_left")["match_id"] == match_id
        partner.close()
    [flag] = flags_of(store)
    assert flag.rule == "quick-leaves" and flag.user_id == bot_id and flag.device_id == "bot-device-0001"
    assert flag.summary == {
        "matches": 10,
        "partner_left_quickly": 10,
        "within_s": 3.0,
        "average_match_s": 1.5,
    }
    assert bans_of(store) == []
    assert bot.closed is None  # a flag is for review: the bot goes on until a moderator decides
    bot.send({"type": "search"})
    bot.expect("searching")
    assert_private(store, PARTNER_TEXT, bot_id, partners)


def test_one_who_sends_the_same_link_twenty_times_is_banned_with_his_own_messages_only() -> None:
    memory, store = server(**{"repeated-message": {"times": 20}})
    with capturedLogs() as events:
        spammer, partner, matched, _ = memory.matched_pair()
        spammer_id, partner_id = session_id(spammer), session_id(partner)
        match_id = matched["match_id"]
        spammer.send({"type": "chat", "match_id": match_id, "text": "hello"})
        partner.send({"type": "chat", "match_id": match_id, "text": PARTNER_TEXT})
        for n in range(20):
            assert spammer.closed is None, f"banned after {n} messages"
            spammer.send({"type": "chat", "match_id": match_id, "text": LINK})
    logged = [formatEvent(event) + repr(event) for event in events]
    assert any("rule repeated-message bans session" in text for text in logged)
    for text in logged:
        assert LINK not in text and PARTNER_TEXT not in text and match_id not in text
        assert not (spammer_id in text and partner_id in text)
    banned = {"type": "banned", "reason": "the same message again and again", "until": 1_000_000 + 3600}
    assert spammer.received()[-1] == banned
    assert spammer.closed is not None and spammer.closed[1] == 4004
    assert partner.received()[-1] == {"type": "partner_left", "match_id": match_id, "reason": "disconnect"}

    [ban] = [ban for ban in bans_of(store) if ban.target.kind == "user_id"]
    assert ban.target.value == spammer_id and ban.source == "rule" and ban.category == "chat_abuse"
    assert ban.messages == (LINK,) * 20  # the last 20: "hello" has gone, the partner's text never came
    assert ban.ends_at == 1_000_000 + 3600
    [flag] = flags_of(store)  # ten links: flagged on the way
    assert flag.rule == "links" and flag.summary == {"links": 10, "messages": 11}
    assert_private(store, PARTNER_TEXT, spammer_id, [partner_id])
    # Without a device id to bar, the same person may come back in a fresh session.
    memory.client(hello=True, gender="m")


def test_default_rules_ban_a_repeated_link_at_the_tenth_and_bar_the_device() -> None:
    memory, store = server()
    spammer = memory.client(hello=True, gender="m", client={"device_id": "spam-device-0001"})
    partner = memory.client(hello=True, gender="f")
    for client in (spammer, partner):
        client.send({"type": "search"})
        client.expect("searching")
    match_id = spammer.expect("matched")["match_id"]
    for _ in range(10):
        spammer.send({"type": "chat", "match_id": match_id, "text": LINK})
    assert spammer.closed is not None and spammer.closed[1] == 4004
    bans = bans_of(store)
    assert sorted(ban.target.kind for ban in bans) == ["device_id", "user_id"]
    for ban in bans:
        assert ban.messages == ((LINK,) * 10 if ban.target.kind == "user_id" else ())
    back = memory.client()
    back.send(hello_message(gender="m", client={"device_id": "spam-device-0001"}))
    assert back.expect("banned")["reason"] == "the same message again and again"


@implementer(IModerationRule)
class Broken:
    """A rule with a bug."""

    name = "broken"

    def configure(self, options: Mapping[str, Any]) -> Broken:
        return self

    def judge(self, signals: Signals, now: float) -> None:
        raise ZeroDivisionError("a bug in a rule")


def test_a_rule_that_raises_is_logged_and_skipped() -> None:
    store = MemoryStore()
    memory = MemoryServer(store=store, rules=[Broken(), RepeatedMessage(times=3)])
    with capturedLogs() as events:
        a, b, matched, _ = memory.matched_pair()
        for _ in range(2):
            a.send({"type": "chat", "match_id": matched["match_id"], "text": "again"})
        assert [m["text"] for m in b.received()] == ["again", "again"]
        assert a.closed is None
        a.send({"type": "chat", "match_id": matched["match_id"], "text": "again"})
    assert a.closed is not None and a.closed[1] == 4004  # the other rule still acted
    failures = [event for event in events if "log_failure" in event]
    assert failures and all(event["log_failure"].check(ZeroDivisionError) for event in failures)
    assert "broken" in failures[0]["what"]


def test_a_rule_acts_once_per_session() -> None:
    store = MemoryStore()
    memory = MemoryServer(store=store, rules=[Links(count=1)])
    a, _, matched, _ = memory.matched_pair()
    for _ in range(5):
        a.send({"type": "chat", "match_id": matched["match_id"], "text": LINK})
    assert len(flags_of(store)) == 1


def test_reported_by_many_partners_is_flagged() -> None:
    memory, store = server(reports={"min-reports": 2, "per-match": 0.5})
    bad = memory.client(hello=True, gender="m")
    bad_id = session_id(bad)
    for _ in range(2):
        bad.send({"type": "search"})
        bad.expect("searching")
        partner = memory.client(hello=True, gender="f")
        partner.send({"type": "search"})
        partner.expect("searching")
        match_id = partner.expect("matched")["match_id"]
        bad.expect("matched")
        partner.send({"type": "report", "match_id": match_id, "reason": "harassment"})
        partner.expect("reported")
        partner.close()
        bad.expect("partner_left")
    [flag] = flags_of(store)
    assert flag.rule == "reports" and flag.user_id == bad_id
    assert flag.summary == {"reports": 2, "matches": 2}


def test_a_chat_abuse_report_banned_by_a_moderator_carries_the_offenders_messages() -> None:
    store = MemoryStore()
    memory = MemoryServer(store=store)  # no rules: the messages are kept all the same, in memory
    assert memory.moderation is not None
    a, b, matched, _ = memory.matched_pair()
    offender = session_id(a)
    match_id = matched["match_id"]
    b.send({"type": "chat", "match_id": match_id, "text": PARTNER_TEXT})
    for n in range(25):
        a.send({"type": "chat", "match_id": match_id, "text": f"insult {n}"})
    b.send({"type": "report", "match_id": match_id, "reason": "chat_abuse"})
    report_id = b.received()[-1]["report_id"]
    resolved = fired(memory.moderation.resolve_report(report_id, "ban", 3600.0))
    memory.flush()
    assert resolved is not None and resolved.status == "banned" and a.closed is not None
    [ban] = bans_of(store)
    assert ban.messages == tuple(f"insult {n}" for n in range(5, 25))
    # The report names both users, as every report does; no record holds the partner's text.
    assert_private(store, PARTNER_TEXT, offender, [])


def test_a_report_for_another_reason_bans_without_messages() -> None:
    store = MemoryStore()
    memory = MemoryServer(store=store)
    assert memory.moderation is not None
    a, b, matched, _ = memory.matched_pair()
    a.send({"type": "chat", "match_id": matched["match_id"], "text": "rude"})
    b.send({"type": "report", "match_id": matched["match_id"], "reason": "harassment"})
    report_id = b.received()[-1]["report_id"]
    memory.moderation.resolve_report(report_id, "ban", 3600.0)
    [ban] = bans_of(store)
    assert ban.messages == ()


def test_a_sessions_signals_are_forgotten_when_it_ends() -> None:
    store = MemoryStore()
    memory = MemoryServer(store=store)
    assert memory.moderation is not None
    a, b, matched, _ = memory.matched_pair()
    a.send({"type": "chat", "match_id": matched["match_id"], "text": "hi"})
    assert memory.moderation._watched
    a.close()
    b.close()
    assert not memory.moderation._watched


def assert_private(store: MemoryStore, partner_text: str, offender: str, partners: list[str]) -> None:
    """The store holds no partner's text, and no record names the offender together with a partner."""
    records = [*store._bans.values(), *store._reports.values(), *store._flags.values()]
    for record in records:
        text = repr(record)
        assert partner_text not in text
        assert not (offender in text and any(partner in text for partner in partners))


def test_a_ban_on_a_match_event_waits_for_the_switchboard() -> None:
    memory, store = server(**{"quick-leaves": {"action": "ban", "min-matches": 2}})
    bot = memory.client(hello=True, gender="m")
    for n in range(2):
        bot.send({"type": "search"})
        bot.expect("searching")
        partner = memory.client(hello=True, gender="f")
        partner.send({"type": "search"})
        partner.expect("searching")
        partner.expect("matched")
        bot.expect("matched")
        memory.advance(1.0)
        # The second partner moves on with next: the bot is banned in its midst, and the partner searches on.
        partner.send({"type": "next"} if n else {"type": "stop"})
        partner.expect("searching" if n else "idle")
        if not n:
            partner.close()
            bot.expect("partner_left")
    assert bot.closed is not None and bot.closed[1] == 4004
    assert partner.closed is None and partner.received() == []
    assert memory.switchboard.waiting == 1
    assert [ban.category for ban in bans_of(store)] == ["other"]


@implementer(IModerationRule)
class BanOnMatch:
    """Bans whoever is matched: a rule acting in the midst of matching."""

    name = "ban-on-match"

    def configure(self, options: Mapping[str, Any]) -> BanOnMatch:
        return self

    def judge(self, signals: Signals, now: float) -> BanAction | None:
        return BanAction(60.0, "other", "matched") if signals.event == "match_started" else None


def test_a_ban_while_matching_leaves_the_switchboard_whole() -> None:
    store = MemoryStore()
    memory = MemoryServer(store=store, rules=[BanOnMatch()])
    clients = [memory.client(hello=True, gender=gender) for gender in "fmfm"]
    for client in clients:
        client.send({"type": "search"})
    for client in clients:
        assert client.closed is not None and client.closed[1] == 4004
    assert memory.switchboard.sessions == 0 and memory.switchboard.waiting == 0
    assert len(bans_of(store)) == 4
