"""The in-memory matching engine: a queue of waiting users, paired by mutual preferences and wait time."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from heapq import heapify, heappop, heappush
from itertools import count
from typing import Literal

Gender = Literal["m", "f", "u"]
Want = Literal["any", "m", "f"]

GENDERS: tuple[str, ...] = ("m", "f", "u")
WANTS: tuple[str, ...] = ("any", "m", "f")

_INF = float("inf")
_NEVER = float("-inf")


@dataclass(frozen=True, slots=True)
class Seeker:
    """One user's search request: who they are and whom they accept."""

    session_id: str
    gender: str
    country: str | None
    want: str = "any"
    countries: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Pair:
    """Two users matched with each other; `waiting` had been in the queue longer."""

    waiting: str
    arriving: str


_set_waiting = Pair.__dict__["waiting"].__set__
_set_arriving = Pair.__dict__["arriving"].__set__


def _new_pair(waiting: str, arriving: str) -> Pair:
    """Pair(waiting, arriving) without the frozen dataclass __init__, which costs a tenth of a whole match."""
    pair = object.__new__(Pair)
    _set_waiting(pair, waiting)
    _set_arriving(pair, arriving)
    return pair


# A FIFO of waiting entries in enqueue order. OrderedDict keeps first-item access O(1) however many
# items were deleted before it, which a plain dict does not; entries hash by identity, so no values.
_Fifo = OrderedDict["_Entry", None]


class _Partition:
    """Waiting users sharing (gender, want, accepted-country key): all of them, and by their own country."""

    __slots__ = ("by_country", "fifo")

    def __init__(self) -> None:
        self.fifo: _Fifo = OrderedDict()
        self.by_country: dict[str, _Fifo] = {}


# The (gender, want) tables of the index: accepted-country key (None for "no filter") -> partition.
_Table = dict["str | None", _Partition]


class _Entry:
    """One waiting user."""

    __slots__ = ("countries", "country", "cross_at", "history", "homes", "seeker", "seq", "session_id")

    def __init__(
        self,
        seeker: Seeker,
        seq: int,
        cross_at: float,
        history: dict[str, float] | None,
        homes: tuple[tuple[_Table, str | None, _Partition], ...],
    ) -> None:
        self.seeker = seeker
        self.session_id = seeker.session_id
        self.country = seeker.country
        self.countries = seeker.countries
        self.seq = seq
        # Once `now >= cross_at` this user has waited rematch_after and recent partners no longer block it.
        self.cross_at = cross_at
        # This user's recent partners (session id -> time the pairing stops being recent); it cannot change
        # while the user waits, since only a match changes it and a match ends the wait.
        self.history = history
        self.homes = homes


class MatchingEngine:
    """Pairs waiting users by mutual gender and country preferences, longest wait first, avoiding recent partners.

    A past partner stays "recent" while it is among a user's last `recent_partners` distinct partners and less
    than `recent_seconds` have passed since their latest match; a pair is blocked if either one is recent for
    the other. Once either of two users has waited `rematch_after` seconds or more, recency no longer keeps
    them apart. Time is never read: every call that needs it takes `now` (seconds, non-decreasing).
    """

    __slots__ = (
        "_entries",
        "_event_limit",
        "_events",
        "_history",
        "_index",
        "_plans",
        "_recent_partners",
        "_recent_seconds",
        "_rematch_after",
        "_seq",
    )

    def __init__(
        self, recent_partners: int = 10, recent_seconds: float = 600.0, rematch_after: float = 30.0
    ) -> None:
        if not (isinstance(recent_partners, int) and recent_partners > 0):
            raise ValueError(f"recent_partners must be a positive integer, not {recent_partners!r}")
        if not recent_seconds > 0:
            raise ValueError(f"recent_seconds must be positive, not {recent_seconds!r}")
        if not rematch_after > 0:
            raise ValueError(f"rematch_after must be positive, not {rematch_after!r}")
        self._recent_partners = recent_partners
        self._recent_seconds = float(recent_seconds)
        self._rematch_after = float(rematch_after)
        self._entries: dict[str, _Entry] = {}
        self._history: dict[str, dict[str, float]] = {}
        self._seq = count()
        # gender -> want -> table. The nine tables always exist; the partitions inside exist only while
        # non-empty, and so do the per-country FIFOs inside a partition.
        self._index: dict[str, dict[str, _Table]] = {g: {w: {} for w in WANTS} for g in GENDERS}
        # gender -> want -> the tables holding every user that can accept a seeker of that gender and whom
        # a seeker with that want accepts.
        self._plans: dict[str, dict[str, tuple[_Table, ...]]] = {
            g: {
                w: tuple(
                    self._index[other][other_want]
                    for other in (GENDERS if w == "any" else (w,))
                    for other_want in ("any", g)
                    if other_want in WANTS
                )
                for w in WANTS
            }
            for g in GENDERS
        }
        # Heap of (time, seq, older, younger): two waiting users kept apart only by recency, and the time at
        # which that stops. Stale once either entry is no longer waiting.
        self._events: list[tuple[float, int, _Entry, _Entry]] = []
        self._event_limit = 64

    def search(self, seeker: Seeker, now: float) -> Pair | None:
        """Match `seeker` with the longest-waiting compatible user, or put it in the queue and return None."""
        # The hot path: what _find, _unlink and _remember do is written out here, and the FIFO scan is
        # written twice, because in CPython the calls and the per-search allocations cost a tenth or more.
        try:
            tables = self._plans[seeker.gender][seeker.want]
        except KeyError:
            raise ValueError(f"unknown gender {seeker.gender!r} or want {seeker.want!r}") from None
        sid = seeker.session_id
        entries = self._entries
        if sid in entries:
            self._unlink(entries[sid])
        country = seeker.country
        countries = seeker.countries
        histories = self._history
        history = histories.get(sid)
        best = None
        best_seq = _INF
        skipped = None
        keys = (None,) if country is None else (None, country)
        for table in tables:
            if not table:
                continue
            for key in keys:
                part = table.get(key)
                if part is None:
                    continue
                if not countries:
                    for entry in part.fifo:
                        if entry.seq > best_seq:
                            break
                        if now < entry.cross_at and (
                            (history is not None and history.get(entry.session_id, _NEVER) > now)
                            or ((other := entry.history) is not None and other.get(sid, _NEVER) > now)
                        ):
                            if skipped is None:
                                skipped = [entry]
                            else:
                                skipped.append(entry)
                            continue
                        best = entry
                        best_seq = entry.seq
                        break
                    continue
                by_country = part.by_country
                for c in countries:
                    fifo = by_country.get(c)
                    if fifo is None:
                        continue
                    # The same scan as above, for each accepted country.
                    for entry in fifo:
                        if entry.seq > best_seq:
                            break
                        if now < entry.cross_at and (
                            (history is not None and history.get(entry.session_id, _NEVER) > now)
                            or ((other := entry.history) is not None and other.get(sid, _NEVER) > now)
                        ):
                            if skipped is None:
                                skipped = [entry]
                            else:
                                skipped.append(entry)
                            continue
                        best = entry
                        best_seq = entry.seq
                        break
        if best is None:
            entry = self._link(seeker, history, now)
            if skipped is not None:
                self._schedule(entry, history, skipped)
            return None

        partner = best.session_id
        del entries[partner]
        partner_country = best.country
        for table, key, part in best.homes:
            fifo = part.fifo
            del fifo[best]
            if not fifo:
                del table[key]
            elif partner_country is not None:
                by_country = part.by_country
                fifo = by_country[partner_country]
                del fifo[best]
                if not fifo:
                    del by_country[partner_country]

        until = now + self._recent_seconds
        if history is None:
            histories[sid] = {partner: until}
        else:
            if partner in history:
                del history[partner]
            history[partner] = until
            if len(history) > self._recent_partners:
                del history[next(iter(history))]
        history = histories.get(partner)
        if history is None:
            histories[partner] = {sid: until}
        else:
            if sid in history:
                del history[sid]
            history[sid] = until
            if len(history) > self._recent_partners:
                del history[next(iter(history))]
        return _new_pair(partner, sid)

    def cancel(self, session_id: str) -> bool:
        """Take a user out of the queue; True if it was waiting."""
        entry = self._entries.get(session_id)
        if entry is None:
            return False
        self._unlink(entry)
        return True

    def forget(self, session_id: str) -> None:
        """Take a user out of the queue and drop its recent-partner history, for a session closed for good."""
        self.cancel(session_id)
        self._history.pop(session_id, None)

    def poll(self, now: float) -> list[Pair]:
        """Match the waiting users that the passing of time has made compatible."""
        events = self._events
        entries = self._entries
        pairs: list[Pair] = []
        while events and events[0][0] <= now:
            _, _, older, younger = heappop(events)
            if entries.get(older.session_id) is not older or entries.get(younger.session_id) is not younger:
                continue
            # The older one searches: it gets the longest-waiting user that is now compatible with it.
            seeker = older.seeker
            partner = self._find(
                self._plans[seeker.gender][seeker.want],
                older.country,
                older.countries,
                older.session_id,
                older.history,
                now,
                older,
            )
            if partner is None:  # pragma: no cover - the pair itself is compatible by now
                continue
            self._unlink(older)
            self._unlink(partner)
            if partner.seq < older.seq:
                older, partner = partner, older
            self._remember(older.session_id, partner.session_id, now)
            pairs.append(_new_pair(older.session_id, partner.session_id))
        return pairs

    def next_poll_at(self) -> float | None:
        """The earliest time at which `poll` will have a pair to return (maybe past, if overdue), or None."""
        events = self._events
        entries = self._entries
        while events:
            at, _, older, younger = events[0]
            if entries.get(older.session_id) is older and entries.get(younger.session_id) is younger:
                return at
            heappop(events)
        return None

    def is_waiting(self, session_id: str) -> bool:
        """Whether a user is in the queue."""
        return session_id in self._entries

    def waiting_seeker(self, session_id: str) -> Seeker | None:
        """The request a waiting user is queued with, or None if it is not waiting."""
        entry = self._entries.get(session_id)
        return None if entry is None else entry.seeker

    def __len__(self) -> int:
        """The number of waiting users."""
        return len(self._entries)

    def _find(
        self,
        tables: tuple[_Table, ...],
        country: str | None,
        countries: frozenset[str],
        sid: str,
        history: dict[str, float] | None,
        now: float,
        seeker: _Entry,
    ) -> _Entry | None:
        """The longest-waiting user compatible with a waiting seeker, or None (search's scan, for poll)."""
        best = None
        best_seq = _INF
        # A seeker that has itself waited rematch_after ignores recency.
        check = now < seeker.cross_at
        keys = (None,) if country is None else (None, country)
        for table in tables:
            if not table:
                continue
            for key in keys:
                part = table.get(key)
                if part is None:
                    continue
                if countries:
                    by_country = part.by_country
                    fifos = [fifo for c in countries if (fifo := by_country.get(c)) is not None]
                else:
                    fifos = [part.fifo]
                for fifo in fifos:
                    for entry in fifo:
                        if entry.seq > best_seq:
                            break
                        if entry is seeker:
                            continue
                        if check and now < entry.cross_at:
                            other = entry.history
                            if (history is not None and history.get(entry.session_id, _NEVER) > now) or (
                                other is not None and other.get(sid, _NEVER) > now
                            ):
                                continue
                        best = entry
                        best_seq = entry.seq
                        break
        return best

    def _link(self, seeker: Seeker, history: dict[str, float] | None, now: float) -> _Entry:
        """Put a seeker at the back of the queue."""
        table = self._index[seeker.gender][seeker.want]
        homes: tuple[tuple[_Table, str | None, _Partition], ...]
        if seeker.countries:
            found = []
            for key in seeker.countries:
                part = table.get(key)
                if part is None:
                    part = table[key] = _Partition()
                found.append((table, key, part))
            homes = tuple(found)
        else:
            part = table.get(None)
            if part is None:
                part = table[None] = _Partition()
            homes = ((table, None, part),)
        entry = _Entry(seeker, next(self._seq), now + self._rematch_after, history, homes)
        country = seeker.country
        for _, _, part in homes:
            part.fifo[entry] = None
            if country is not None:
                by_country = part.by_country
                fifo = by_country.get(country)
                if fifo is None:
                    fifo = by_country[country] = OrderedDict()
                fifo[entry] = None
        self._entries[seeker.session_id] = entry
        return entry

    def _unlink(self, entry: _Entry) -> None:
        """Take an entry out of the queue and every FIFO it is in, dropping containers left empty."""
        del self._entries[entry.session_id]
        country = entry.country
        for table, key, part in entry.homes:
            fifo = part.fifo
            del fifo[entry]
            if not fifo:
                del table[key]
            elif country is not None:
                by_country = part.by_country
                fifo = by_country[country]
                del fifo[entry]
                if not fifo:
                    del by_country[country]

    def _remember(self, a: str, b: str, now: float) -> None:
        """Record two users as each other's latest partner."""
        until = now + self._recent_seconds
        limit = self._recent_partners
        histories = self._history
        for me, other in ((a, b), (b, a)):
            history = histories.get(me)
            if history is None:
                histories[me] = {other: until}
            else:
                history.pop(other, None)
                history[other] = until
                if len(history) > limit:
                    del history[next(iter(history))]

    def _schedule(self, entry: _Entry, history: dict[str, float] | None, skipped: list[_Entry]) -> None:
        """Note when each waiting user that only recency keeps from a new entry stops being blocked."""
        events = self._events
        sid = entry.session_id
        for older in skipped:
            # Both stay waiting, so neither history changes: it unblocks when the older one has waited
            # rematch_after, or when both directions of recency have expired, whichever comes first.
            mine = _NEVER if history is None else history.get(older.session_id, _NEVER)
            theirs = _NEVER if older.history is None else older.history.get(sid, _NEVER)
            at = min(older.cross_at, max(mine, theirs))
            if at != _INF:  # with infinite settings some pairs never unblock
                heappush(events, (at, next(self._seq), older, entry))
        if len(events) > self._event_limit:
            entries = self._entries
            events[:] = [
                event
                for event in events
                if entries.get(event[2].session_id) is event[2]
                and entries.get(event[3].session_id) is event[3]
            ]
            heapify(events)
            self._event_limit = max(64, 2 * len(events))
