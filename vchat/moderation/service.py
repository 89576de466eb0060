"""The moderation service: issues and lifts bans, keeps the active ones in memory for `hello`, and enforces a
new ban at once on every live session it bars.

This is the documented Python API for bans, reports and flags (docs/moderation.md): `ban`, `ban_user`, `lift`,
`check`, `resolve_report` and `resolve_flag`; it also stores the reports clients send (`file_report`, asked by the switchboard), and runs
the automatic moderation rules on each session's behaviour signals (told by the switchboard, as its
`IBehaviourObserver`), flagging or banning as they decide.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, FirstError, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vchat.failurelog import ThrottledFailureLog
from vchat.moderation.banlist import BanList, bars
from vchat.moderation.rules import BanAction, FlagAction, IModerationRule
from vchat.moderation.signals import Signals
from vchat.moderation.webhook import ModerationWebhook
from vchat.outcome import Outcome
from vchat.protocol.bans import BanNotice, IBanCheck
from vchat.protocol.behaviour import IBehaviourObserver
from vchat.protocol.reports import Filing, IReportSink
from vchat.protocol.session import Session, SessionState
from vchat.protocol.switchboard import Switchboard
from vchat.store.interface import IStore
from vchat.store.records import (
    Ban,
    BanSource,
    BanTarget,
    Category,
    Flag,
    NewBan,
    NewFlag,
    NewReport,
    Report,
    Snapshot,
    TargetKind,
)
from vchat.store.service import StoreService

Resolution = Literal["ban", "dismiss"]
_UNKNOWN_ADDRESS = "::"  # a session always has its client's address; this stands in should one not


FLAG_BAN_REASON = "banned by automatic moderation"
"""What a user banned for a flag is told when the decision gives no reason."""


def _check_ban_terms(
    category: Category, reason: str | None, duration_s: float | None, source: BanSource, now: float
) -> None:
    """Raise ValueError if a ban with these terms could not be stored (checked before anything changes)."""
    NewBan(
        target=BanTarget("user_id", "-"),  # a stand-in: the target comes from the record decided on
        category=category,
        reason=reason if reason is not None else "-",
        source=source,
        created_at=now,
        ends_at=None if duration_s is None else now + duration_s,
    )


def _notice(ban: Ban) -> BanNotice:
    return BanNotice(ban.reason, ban.ends_at)


class _Watched:
    """A live session and its behaviour signals, with the rules that have acted on it already."""

    __slots__ = ("acted", "session", "signals")

    def __init__(self, session: Session) -> None:
        self.session = session
        self.signals = Signals()
        self.acted: set[str] = set()


@implementer(IBanCheck, IReportSink, IBehaviourObserver)
class ModerationService(Service):
    """Bans: issued and lifted through the store, checked at `hello` against an index of the active ones.

    At start it waits for the store and loads every active ban. Until they are loaded, `hello` is served as if
    nobody were banned (a fresh store loads at once; a large one should not keep everyone out); once loaded,
    the sessions let in meanwhile that a ban bars are closed. Timed bans end on the clock: `check` drops those
    that have ended, and the store deletes their snapshots at their end.

    It watches every live session's behaviour (it becomes the switchboard's observer) and runs `rules` after
    each event; a rule acts at most once per session, and a rule that raises is logged (within a budget) and
    skipped.
    """

    _log = Logger()

    def __init__(
        self,
        store: StoreService,
        switchboard: Switchboard,
        clock: IReactorTime,
        on_failure: Callable[[], object] = lambda: None,
        rules: Sequence[IModerationRule] = (),
    ) -> None:
        self.setName("moderation")
        self._rules = tuple(rules)
        self._watched: dict[str, _Watched] = {}
        self._failures = ThrottledFailureLog(clock)
        switchboard.observer = self
        self._store = store
        self._switchboard = switchboard
        self._clock = clock
        self._on_failure = on_failure
        self._bans = BanList()
        self._loaded: Outcome[None] = Outcome()
        self.webhook: ModerationWebhook | None = (
            None  # set by the tap: it needs this service for its verdicts
        )
        self._started = False
        # Tells the other nodes of a cluster of each ban issued and lifted here; None on a single node.
        self.announce: Callable[[dict[str, Any]], object] | None = None
        # Automatic moderation actions taken (a flag stored, a ban issued) by kind, for metrics.
        self.actions: dict[str, int] = {"flag": 0, "ban": 0}

    @property
    def active(self) -> int:
        """How many bans the index holds (some may have ended since the last `check`)."""
        return len(self._bans)

    def whenLoaded(self) -> Deferred[None]:
        """Fires once the active bans are loaded, or fails as loading them failed."""
        return self._loaded.observe()

    def startService(self) -> None:
        super().startService()
        if self._started:
            return
        self._started = True
        # A store that cannot open is reported (and the process stopped) by the store service.
        self._store.whenOpen().addCallbacks(self._load, self._loaded.fire)

    def _load(self, store: IStore) -> None:
        store.active_bans(self._clock.seconds()).addCallbacks(self._loaded_bans, self._load_failed)

    def _loaded_bans(self, bans: list[Ban]) -> None:
        self._index(bans)
        self._log.info("{count} active bans loaded", count=len(bans))
        self._loaded.fire(None)

    def _index(self, bans: list[Ban]) -> None:
        """Index `bans` and close the sessions they bar."""
        for ban in bans:
            self._bans.add(ban)
        now = self._clock.seconds()

        def notice_for(session: Session) -> BanNotice | None:
            ban = self._bans.match(now, session.user_id, session.address, session.device_id)
            return None if ban is None else _notice(ban)

        try:
            self._switchboard.close_banned(notice_for)
        except Exception:
            self._log.failure("closing the sessions that loaded bans bar")

    def reload_bans(self) -> Deferred[None]:
        """Load the active bans again and enforce them (in a cluster, after Redis was away: the other nodes'
        announcements of that time were lost)."""
        loading = self._store.whenOpen().addCallback(lambda store: store.active_bans(self._clock.seconds()))
        return loading.addCallback(self._index)

    def _load_failed(self, failure: Failure) -> None:
        self._log.failure("cannot load the active bans", failure)
        self._on_failure()
        self._loaded.fire(failure)

    # --- the Python API -------------------------------------------------------------------------------

    def ban(
        self,
        target_kind: TargetKind,
        value: str,
        reason: str,
        category: Category,
        duration_s: float | None,
        snapshot: Snapshot | None = None,
        source: BanSource = "moderator",
        messages: Sequence[str] = (),
    ) -> Deferred[Ban]:
        """Ban a `user_id` (a live session's id until accounts exist), an `ip` (an address or a CIDR network,
        IPv4 or IPv6) or a `device_id` for `duration_s` seconds from now (None: for good).

        The ban is stored (with `snapshot`, kept until it ends), checked at every `hello` from then on, and
        enforced at once: every live session it bars gets `banned` and is closed with 4004. `messages` (the
        offender's own last chat lines, at most 20) are kept only with a `chat_abuse` ban. Fires with the
        stored ban; fails with ValueError for a bad target, reason, category, source, duration or messages.
        """
        now = self._clock.seconds()
        try:
            new = NewBan(
                target=BanTarget(target_kind, value),
                category=category,
                reason=reason,
                source=source,
                created_at=now,
                ends_at=None if duration_s is None else now + duration_s,
                messages=tuple(messages),
            )
        except (ValueError, TypeError):
            return fail()
        adding = self._store.whenOpen().addCallback(lambda store: store.add_ban(new, snapshot))
        return adding.addCallback(self._enforce)

    def ban_user(
        self,
        user_id: str,
        device_id: str | None,
        reason: str,
        category: Category,
        duration_s: float | None,
        source: BanSource = "moderator",
        messages: Sequence[str] = (),
    ) -> Deferred[None]:
        """Ban a user by both identities: its `user_id` (with `messages`, as `ban` keeps them) and, when the
        client sent one, its `device_id`. Fires when both bans are in force; fails as the first failure did."""
        bans = [self.ban("user_id", user_id, reason, category, duration_s, source=source, messages=messages)]
        if device_id is not None:
            bans.append(self.ban("device_id", device_id, reason, category, duration_s, source=source))
        together: Deferred[Any] = DeferredList(bans, fireOnOneErrback=True, consumeErrors=True)

        def unwrap(failure: Failure) -> Failure:
            return failure.value.subFailure if isinstance(failure.value, FirstError) else failure

        return together.addCallbacks(lambda _: None, unwrap)

    def _enforce(self, ban: Ban) -> Ban:
        if self.announce is not None:
            self._announce({"type": "ban", "ban_id": ban.id})
        return self._apply(ban)

    def _apply(self, ban: Ban) -> Ban:
        if not ban.active_at(self._clock.seconds()):
            return ban
        self._bans.add(ban)
        notice = _notice(ban)
        try:
            self._switchboard.close_banned(
                lambda session: (
                    notice if bars(ban, session.user_id, session.address, session.device_id) else None
                )
            )
        except Exception:
            self._log.failure("closing the sessions a new ban bars")  # the ban holds from the next hello
        return ban

    def lift(self, ban_id: str) -> Deferred[Ban | None]:
        """End the ban with this id now (its snapshot is deleted); fires with the ban as stored, or None if no
        ban has this id. A lifted user may come back at once."""
        lifting = self._store.whenOpen().addCallback(
            lambda store: store.end_ban(ban_id, self._clock.seconds())
        )
        return lifting.addCallback(self._lifted, ban_id)

    def _lifted(self, ban: Ban | None, ban_id: str) -> Ban | None:
        self._bans.remove(ban_id)
        if self.announce is not None:
            self._announce({"type": "lift", "ban_id": ban_id})
        return ban

    def _announce(self, message: dict[str, Any]) -> None:
        assert self.announce is not None
        try:
            self.announce(message)
        except Exception:
            self._failures.failure("announcing a ban to the other nodes")

    def announced_ban(self, ban_id: str) -> Deferred[None]:
        """Another node issued ban `ban_id`: read it from the shared store and enforce it here too."""
        if ban_id in self._bans:
            return succeed(None)
        reading = self._store.whenOpen().addCallback(lambda store: store.get_ban(ban_id))
        return reading.addCallback(self._apply_announced)

    def _apply_announced(self, ban: Ban | None) -> None:
        if ban is not None:
            self._apply(ban)

    def announced_lift(self, ban_id: str) -> None:
        """Another node lifted ban `ban_id`: it no longer bars anyone here."""
        self._bans.remove(ban_id)

    def check(self, user_id: str | None, ip: str | None, device_id: str | None) -> BanNotice | None:
        """The notice for a client with these identities if an active ban bars it (the longest-lasting one);
        answers from memory, at once. Used at `hello`."""
        now = self._clock.seconds()
        self._bans.expire(now)
        ban = self._bans.match(now, user_id, ip, device_id)
        return None if ban is None else _notice(ban)

    # --- reports --------------------------------------------------------------------------------------

    def file_report(self, filing: Filing) -> Deferred[str]:
        """Store a user's report (the switchboard checked it); fires with the new report's id. The reported
        user's signals count it."""
        reporter, reported = filing.reporter, filing.reported
        watched = self._watched.get(reported.user_id)
        if watched is not None:
            self._observe(watched.session, Signals.reported)
        image = filing.snapshot
        try:
            new = NewReport(
                reporter_user_id=reporter.user_id,
                reporter_device_id=reporter.device_id,
                reported_user_id=reported.user_id,
                reported_device_id=reported.device_id,
                reported_ip=reported.address or _UNKNOWN_ADDRESS,
                reported_client=reported.client,
                reason=filing.reason,
                comment=filing.comment,
                created_at=filing.created_at,
            )
            snapshot = None if image is None else Snapshot(image.content_type, image.data)
        except (ValueError, TypeError):
            return fail()
        adding = self._store.whenOpen().addCallback(lambda store: store.add_report(new, snapshot))
        return adding.addCallback(self._filed, snapshot)

    def _filed(self, report: Report, snapshot: Snapshot | None) -> str:
        """A report is stored: hand it to the webhook, if there is one; the reporter hears its id either way."""
        if self.webhook is not None:
            try:
                self.webhook.submit_report(report, snapshot)
            except Exception:
                self._failures.failure("submitting a report to the moderation webhook")
        return report.id

    def resolve_report(
        self,
        report_id: str,
        action: Resolution,
        duration_s: float | None = None,
        reason: str | None = None,
        source: BanSource = "moderator",
    ) -> Deferred[Report | None]:
        """Decide an open report: "dismiss" deletes its snapshot; "ban" bans the reported `user_id` (with the
        report's snapshot, category = the report's reason) and, if the client sent one, its `device_id`, for
        `duration_s` seconds (None: for good), closing the reported session at once.

        Fires with the report as resolved, or None if no report has this id; fails with
        `vchat.store.interface.AlreadyResolved` if it was resolved before, and with ValueError for a bad
        action, duration, reason or source (nothing is changed then).
        """
        if action == "dismiss":
            return self._store.whenOpen().addCallback(
                lambda store: store.resolve_report(report_id, self._clock.seconds(), None)
            )
        if action != "ban":
            return fail(ValueError(f"action must be 'ban' or 'dismiss', not {action!r}"))
        now = self._clock.seconds()
        try:
            _check_ban_terms("other", reason, duration_s, source, now)
        except (ValueError, TypeError):
            return fail()
        return self._store.whenOpen().addCallback(
            lambda store: Deferred.fromCoroutine(
                self._ban_reported(store, report_id, now, duration_s, reason, source)
            )
        )

    async def _ban_reported(
        self,
        store: IStore,
        report_id: str,
        now: float,
        duration_s: float | None,
        reason: str | None,
        source: BanSource,
    ) -> Report | None:
        report = await store.get_report(report_id)
        if report is None:
            return None

        # A chat-abuse ban carries the reported user's own last messages, while its session is live.
        watched = self._watched.get(report.reported_user_id) if report.reason == "chat_abuse" else None
        messages = tuple(watched.signals.recent) if watched is not None else ()

        def ban_of(kind: TargetKind, value: str) -> NewBan:
            return NewBan(
                target=BanTarget(kind, value),
                category=report.reason,
                reason=reason if reason is not None else f"reported for {report.reason.replace('_', ' ')}",
                source=source,
                created_at=now,
                ends_at=None if duration_s is None else now + duration_s,
                messages=messages if kind == "user_id" else (),
            )

        resolved = await store.resolve_report(report_id, now, ban_of("user_id", report.reported_user_id))
        if resolved is None or resolved.ban_id is None:  # pragma: no cover - the report was just read
            return resolved
        user_ban = await store.get_ban(resolved.ban_id)
        if user_ban is not None:
            self._enforce(user_ban)
        if report.reported_device_id is not None:
            self._enforce(await store.add_ban(ban_of("device_id", report.reported_device_id), None))
        return resolved

    # --- flags ------------------------------------------------------------------------------------------

    def resolve_flag(
        self,
        flag_id: str,
        action: Resolution = "dismiss",
        duration_s: float | None = None,
        reason: str | None = None,
        category: Category = "other",
        source: BanSource = "moderator",
    ) -> Deferred[Flag | None]:
        """Decide an open flag of an automatic rule: "dismiss" only marks it resolved; "ban" also bans the flagged
        `user_id` and, if the client sent one, its `device_id` (as `ban_user`) for `duration_s` seconds (None:
        for good), closing the flagged session at once.

        Fires with the flag as resolved, or None if no flag has this id; fails with
        `vchat.store.interface.AlreadyResolved` if it was resolved before, and with ValueError for a bad action,
        duration, reason, category or source (nothing is changed then).
        """
        now = self._clock.seconds()
        try:
            if action not in ("ban", "dismiss"):
                raise ValueError(f"action must be 'ban' or 'dismiss', not {action!r}")
            if action == "ban":
                _check_ban_terms(category, reason, duration_s, source, now)
        except (ValueError, TypeError):
            return fail()
        return self._store.whenOpen().addCallback(
            lambda store: Deferred.fromCoroutine(
                self._resolve_flag(store, flag_id, now, action, duration_s, reason, category, source)
            )
        )

    async def _resolve_flag(
        self,
        store: IStore,
        flag_id: str,
        now: float,
        action: Resolution,
        duration_s: float | None,
        reason: str | None,
        category: Category,
        source: BanSource,
    ) -> Flag | None:
        flag = await store.resolve_flag(flag_id, now)  # first, so that two decisions cannot both ban
        if flag is not None and action == "ban":
            why = reason if reason is not None else FLAG_BAN_REASON
            await self.ban_user(flag.user_id, flag.device_id, why, category, duration_s, source=source)
        return flag

    # --- automatic moderation: IBehaviourObserver -----------------------------------------------------------

    def match_started(self, session: Session) -> None:
        """Count a match of `session`, and run the rules."""
        self._observe(session, Signals.match_started)

    def match_ended(self, session: Session, seconds: float, partner_left: bool) -> None:
        """Count how long a match of `session` lasted and who ended it, and run the rules."""
        self._observe(session, Signals.match_ended, seconds, partner_left)

    def chat_sent(self, session: Session, text: str) -> None:
        """Note a chat message `session` sent (its text stays in memory), and run the rules."""
        self._observe(session, Signals.chat, text)

    def session_ended(self, session: Session) -> None:
        """Forget `session`'s signals and messages."""
        self._watched.pop(session.session_id, None)

    def _observe(self, session: Session, record: Callable[..., None], *args: object) -> None:
        try:
            watched = self._watched.get(session.session_id)
            if watched is None:
                if session.state is SessionState.CLOSED:
                    return
                watched = self._watched[session.session_id] = _Watched(session)
            record(watched.signals, *args)
            if self._rules:
                self._judge(watched)
        except Exception:
            self._failures.failure("watching a session's behaviour")

    def _judge(self, watched: _Watched) -> None:
        now = self._clock.seconds()
        decided: list[tuple[str, FlagAction | BanAction]] = []
        for rule in self._rules:
            if rule.name in watched.acted:
                continue
            try:
                action = rule.judge(watched.signals, now)
            except Exception:
                self._failures.failure(f"moderation rule {rule.name!r}")
                continue
            if action is not None:
                watched.acted.add(rule.name)
                decided.append((rule.name, action))
        banned = False
        for name, action in decided:  # every flag, and the first ban
            if isinstance(action, BanAction):
                if not banned:
                    banned = True
                    # The offender's messages as they are now; the ban itself waits for the switchboard to
                    # finish what it is doing (a ban ends sessions, which must not happen in its midst).
                    messages = tuple(watched.signals.recent) if action.category == "chat_abuse" else ()
                    self._clock.callLater(0, self._rule_ban, watched.session, name, action, messages)
            else:
                self._rule_flag(watched, name, action, now)

    def _rule_flag(self, watched: _Watched, rule: str, action: FlagAction, now: float) -> None:
        session = watched.session
        try:
            new = NewFlag(
                user_id=session.user_id,
                device_id=session.device_id,
                rule=rule,
                summary=action.summary,
                created_at=now,
            )
        except (ValueError, TypeError):
            self._failures.failure(f"the flag of moderation rule {rule!r}")
            return
        self._log.info("rule {rule} flagged session {session_id}", rule=rule, session_id=session.session_id)
        self.actions["flag"] += 1
        adding = self._store.whenOpen().addCallback(lambda store: store.add_flag(new))
        adding.addCallback(self._flagged)
        adding.addErrback(self._action_failed, f"storing a flag of rule {rule!r}")

    def _rule_ban(self, session: Session, rule: str, action: BanAction, messages: tuple[str, ...]) -> None:
        try:
            self._log.info(
                "rule {rule} bans session {session_id} for {duration_s} s",
                rule=rule,
                session_id=session.session_id,
                duration_s=action.duration_s,
            )
            self.actions["ban"] += 1
            self.ban_user(
                session.user_id,
                session.device_id,
                action.reason,
                action.category,
                action.duration_s,
                source="rule",
                messages=messages,
            ).addErrback(self._action_failed, f"the ban of rule {rule!r}")
        except Exception:
            self._failures.failure(f"the ban of moderation rule {rule!r}")

    def _flagged(self, flag: Flag) -> None:
        if self.webhook is not None:
            try:
                self.webhook.submit_flag(flag)
            except Exception:
                self._failures.failure("submitting a flag to the moderation webhook")

    def _action_failed(self, failure: Failure, what: str) -> None:
        self._log.failure("{what} failed", failure, what=what)
