"""The moderation service: issues and lifts bans, keeps the active ones in memory for `hello`, and enforces a
new ban at once on every live session it bars.

This is the documented Python API for bans (docs/moderation.md): `ban`, `lift` and `check`.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vchat.moderation.banlist import BanList, bars
from vchat.outcome import Outcome
from vchat.protocol.bans import BanNotice, IBanCheck
from vchat.protocol.session import Session
from vchat.protocol.switchboard import Switchboard
from vchat.store.interface import IStore
from vchat.store.records import Ban, BanSource, BanTarget, Category, NewBan, Snapshot, TargetKind
from vchat.store.service import StoreService


def _notice(ban: Ban) -> BanNotice:
    return BanNotice(ban.reason, ban.ends_at)


@implementer(IBanCheck)
class ModerationService(Service):
    """Bans: issued and lifted through the store, checked at `hello` against an index of the active ones.

    At start it waits for the store and loads every active ban. Until they are loaded, `hello` is served as if
    nobody were banned (a fresh store loads at once; a large one should not keep everyone out); once loaded,
    the sessions let in meanwhile that a ban bars are closed. Timed bans end on the clock: `check` drops those
    that have ended, and the store deletes their snapshots at their end.
    """

    _log = Logger()

    def __init__(
        self,
        store: StoreService,
        switchboard: Switchboard,
        clock: IReactorTime,
        on_failure: Callable[[], object] = lambda: None,
    ) -> None:
        self.setName("moderation")
        self._store = store
        self._switchboard = switchboard
        self._clock = clock
        self._on_failure = on_failure
        self._bans = BanList()
        self._loaded: Outcome[None] = Outcome()
        self._started = False

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
        for ban in bans:
            self._bans.add(ban)
        self._log.info("{count} active bans loaded", count=len(bans))
        now = self._clock.seconds()

        def notice_for(session: Session) -> BanNotice | None:
            ban = self._bans.match(now, session.session_id, session.address, session.device_id)
            return None if ban is None else _notice(ban)

        try:
            self._switchboard.close_banned(notice_for)
        except Exception:
            self._log.failure("closing the sessions let in before the bans were loaded")
        self._loaded.fire(None)

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
    ) -> Deferred[Ban]:
        """Ban a `user_id` (a live session's id until accounts exist), an `ip` (an address or a CIDR network,
        IPv4 or IPv6) or a `device_id` for `duration_s` seconds from now (None: for good).

        The ban is stored (with `snapshot`, kept until it ends), checked at every `hello` from then on, and
        enforced at once: every live session it bars gets `banned` and is closed with 4004. Fires with the
        stored ban; fails with ValueError for a bad target, reason, category, source or duration.
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
            )
        except (ValueError, TypeError):
            return fail()
        adding = self._store.whenOpen().addCallback(lambda store: store.add_ban(new, snapshot))
        return adding.addCallback(self._enforce)

    def _enforce(self, ban: Ban) -> Ban:
        if not ban.active_at(self._clock.seconds()):
            return ban
        self._bans.add(ban)
        notice = _notice(ban)
        try:
            self._switchboard.close_banned(
                lambda session: (
                    notice if bars(ban, session.session_id, session.address, session.device_id) else None
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
        return ban

    def check(self, user_id: str | None, ip: str | None, device_id: str | None) -> BanNotice | None:
        """The notice for a client with these identities if an active ban bars it (the longest-lasting one);
        answers from memory, at once. Used at `hello`."""
        now = self._clock.seconds()
        self._bans.expire(now)
        ban = self._bans.match(now, user_id, ip, device_id)
        return None if ban is None else _notice(ban)
