"""The in-memory matching engine: waiting users in FIFOs, paired by mutual preferences and wait time.

The queue is indexed so that a search only looks at users it is compatible with by preference:

- Waiting users sit in *partitions*, one per (gender, want, accepted-country key), where the key is None for users
  without a country filter and each accepted country for those with one (such a user is in several partitions).
  A partition holds its users in a FIFO of enqueue order, and again in one FIFO per user country.
- A seeker's gender and want name the (gender, want) tables whose users it accepts and who accept it; in each, the
  partitions under None and under the seeker's own country accept its country; in each partition, the whole FIFO
  if the seeker accepts any country, or else the FIFO of each country it accepts.
- Every user in those FIFOs suits the seeker by preference, so only recency can still keep them apart: each FIFO is
  scanned from the front up to its first user that recency does not block, or until it is past the best user found
  so far, and the user waiting longest among them wins. A search costs a few FIFO heads (and the recent partners
  standing at their front), whatever the queue's size.
- A seeker that finds nobody joins the back of its own partitions. Each user its scan skipped for recency alone
  becomes an event at the time that block lifts, and `poll` replays due events as a search by the older of the two.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from heapq import heapify, heappop, heappush
from itertools import count

_GENDERS = ("m", "f", "u")
_WANTS = ("any", "m", "f")

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

# An event: (time, seq, older, younger), two waiting users kept apart only by recency until that time.
_Event = tuple[float, int, "_Entry", "_Entry"]


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
        # This user's recent partners (session id -> time the pairing stops being recent), the engine's own
        # dict; while the user waits only `retract` changes it, since a match ends the wait.
        self.history = history
        self.homes = homes


class MatchingEngine:
    """Pairs waiting users by mutual gender and country preferences, longest wait first, avoiding recent partners.

    A past partner stays "recent" while it is among a user's last `recent_partners` distinct partners and less
    than `recent_seconds` have passed since their latest match; a pair is blocked if either one is recent for
    the other. Once either of two users has waited `rematch_after` seconds or more, recency no longer keeps
    them apart. A pair `block`ed (one reported the other) is never matched again. Time is never read: every
    call that needs it takes `now` (seconds, non-decreasing).
    """

    __slots__ = (
        "_blocked",
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
        # session id -> the sessions it is never to be matched with (a reported pair), both ways.
        self._blocked: dict[str, set[str]] = {}
        self._seq = count()
        # gender -> want -> table. The nine tables always exist; the partitions inside exist only while
        # non-empty, and so do the per-country FIFOs inside a partition.
        self._index: dict[str, dict[str, _Table]] = {g: {w: {} for w in _WANTS} for g in _GENDERS}
        # gender -> want -> the tables holding every user that accepts a seeker of that gender and whom
        # a seeker with that want accepts.
        self._plans: dict[str, dict[str, tuple[_Table, ...]]] = {
            g: {
                w: tuple(
                    self._index[other][other_want]
                    for other in (_GENDERS if w == "any" else (w,))
                    for other_want in ("any", g)
                    if other_want in _WANTS
                )
                for w in _WANTS
            }
            for g in _GENDERS
        }
        # Heap of events, stale once either entry is no longer waiting.
        self._events: list[_Event] = []
        self._event_limit = 64

    def search(self, seeker: Seeker, now: float) -> Pair | None:
        """Match `seeker` with the longest-waiting compatible user, or put it in the queue and return None."""
        if seeker.gender not in _GENDERS or seeker.want not in _WANTS:
            raise ValueError(f"unknown gender {seeker.gender!r} or want {seeker.want!r}")
        sid = seeker.session_id
        entry = self._entries.get(sid)
        if entry is not None:
            self._unlink(entry)
        history = self._history.get(sid)
        skipped: list[_Entry] = []
        partner = self._find(seeker, history, now, None, skipped)
        if partner is None:
            entry = self._link(seeker, history, now)
            if skipped:
                self._schedule(entry, skipped)
            return None
        self._unlink(partner)
        self._remember(partner.session_id, sid, now)
        return Pair(partner.session_id, sid)

    def cancel(self, session_id: str) -> bool:
        """Take a user out of the queue; True if it was waiting."""
        entry = self._entries.get(session_id)
        if entry is None:
            return False
        self._unlink(entry)
        return True

    def retract(self, pair: Pair) -> None:
        """Forget that `pair` was matched (it could not be used): each is taken out of the other's recent
        partners, if that pairing is still its latest; neither is put back in the queue. The partners that
        pairing pushed out of the last `recent_partners` stay out, and an earlier match of the same two is
        forgotten with it. If both wait again by then, `poll` pairs them once recency no longer keeps them
        apart."""
        a, b = pair.waiting, pair.arriving
        histories = self._history
        for me, other in ((a, b), (b, a)):
            history = histories.get(me)
            if history is not None and next(reversed(history), None) == other:  # the latest: see _remember
                del history[other]
                if not history:  # a waiting entry of `me` keeps this dict, empty now
                    del histories[me]
        if a not in self._entries or b not in self._entries:
            return
        events = self._events
        changed = False
        for i, (_, _, older, younger) in enumerate(events):
            if {older.session_id, younger.session_id} == {a, b}:
                events[i] = (self._unblocks_at(older, younger), next(self._seq), older, younger)
                changed = True
        if changed:
            heapify(events)

    def expire(self, now: float) -> int:
        """Drop the recent-partner histories that no longer keep anyone apart at `now` (all their partners are
        past `recent_seconds`) of users who do not wait; how many were dropped. For an engine that is never
        told `forget` (a cluster's matcher, which hears of every node's users but not of their ends)."""
        histories, entries = self._history, self._entries
        # A history's latest partner (its last item) has the latest time: see _remember.
        expired = [
            me
            for me, history in histories.items()
            if me not in entries and history[next(reversed(history))] <= now
        ]
        for me in expired:
            del histories[me]
        return len(expired)

    def forget(self, session_id: str) -> None:
        """Take a user out of the queue and drop its recent-partner history and blocks, for a session closed
        for good."""
        self.cancel(session_id)
        self._history.pop(session_id, None)
        for other in self._blocked.pop(session_id, ()):
            others = self._blocked[other]
            others.discard(session_id)
            if not others:
                del self._blocked[other]

    def block(self, a: str, b: str) -> None:
        """Never match `a` and `b` with each other again, however long they wait (one reported the other);
        the block lasts until either is forgotten."""
        if a == b:
            return
        self._blocked.setdefault(a, set()).add(b)
        self._blocked.setdefault(b, set()).add(a)
        # An event that would have paired them once recency lifted must not fire.
        events = self._events
        pair = {a, b}
        kept = [event for event in events if {event[2].session_id, event[3].session_id} != pair]
        if len(kept) != len(events):
            events[:] = kept
            heapify(events)

    def has_blocks(self, session_id: str) -> bool:
        """Whether a user is kept apart from anyone (it reported someone, or was reported)."""
        return session_id in self._blocked

    def blocked_with(self, session_id: str) -> tuple[str, ...]:
        """The users `session_id` is kept apart from, sorted."""
        return tuple(sorted(self._blocked.get(session_id, ())))

    def is_blocked(self, a: str, b: str) -> bool:
        """Whether `a` and `b` are never to be matched with each other."""
        return b in self._blocked.get(a, ())

    def poll(self, now: float) -> list[Pair]:
        """Match the waiting users that the passing of time has made compatible."""
        events = self._events
        pairs: list[Pair] = []
        while events and events[0][0] <= now:
            event = heappop(events)
            if self._is_stale(event):
                continue
            # The older one searches: it gets the longest-waiting user that is now compatible with it.
            older = event[2]
            partner = self._find(older.seeker, older.history, now, older, [])
            if (
                partner is None
            ):  # pragma: no cover - the pair itself is compatible by now (blocks drop events)
                continue
            self._unlink(older)
            self._unlink(partner)
            if partner.seq < older.seq:
                older, partner = partner, older
            self._remember(older.session_id, partner.session_id, now)
            pairs.append(Pair(older.session_id, partner.session_id))
        return pairs

    def next_poll_at(self) -> float | None:
        """The earliest time at which `poll` will have a pair to return (maybe past, if overdue), or None."""
        events = self._events
        while events:
            if not self._is_stale(events[0]):
                return events[0][0]
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

    def queue_lengths(self) -> dict[tuple[str, str], int]:
        """The number of waiting users by (gender, want), every pair present (zero if none waits); O(waiting)."""
        lengths = {(gender, want): 0 for gender in _GENDERS for want in _WANTS}
        for entry in self._entries.values():
            seeker = entry.seeker
            lengths[seeker.gender, seeker.want] += 1
        return lengths

    def _find(
        self,
        seeker: Seeker,
        history: dict[str, float] | None,
        now: float,
        own: _Entry | None,
        skipped: list[_Entry],
    ) -> _Entry | None:
        """The longest-waiting user compatible with `seeker` at `now`, or None.

        `history` is the seeker's recent partners and `own` its entry if it is waiting (None for a new search).
        The users that recency alone keeps from the seeker are appended to `skipped`.
        """
        sid = seeker.session_id
        countries = seeker.countries
        keys = (None,) if seeker.country is None else (None, seeker.country)
        # A seeker that has itself waited rematch_after ignores recency; a new one has not waited at all.
        check = own is None or now < own.cross_at
        blocked = self._blocked.get(sid)
        best = None
        best_seq = _INF
        for table in self._plans[seeker.gender][seeker.want]:
            for key in keys:
                part = table.get(key)
                if part is None:
                    continue
                # None stands for "any country": the partition's whole FIFO.
                for country in countries or (None,):
                    fifo = part.fifo if country is None else part.by_country.get(country)
                    if fifo is None:
                        continue
                    for entry in fifo:
                        if entry.seq > best_seq:
                            break
                        if entry is own or (blocked is not None and entry.session_id in blocked):
                            continue
                        if (
                            check
                            and now < entry.cross_at
                            and (
                                (history is not None and history.get(entry.session_id, _NEVER) > now)
                                or (entry.history is not None and entry.history.get(sid, _NEVER) > now)
                            )
                        ):
                            skipped.append(entry)
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

    def _schedule(self, entry: _Entry, skipped: list[_Entry]) -> None:
        """Note when each waiting user that only recency keeps from a new entry stops being blocked."""
        events = self._events
        for older in skipped:
            at = self._unblocks_at(older, entry)
            if at != _INF:  # with infinite settings some pairs never unblock
                heappush(events, (at, next(self._seq), older, entry))
        if len(events) > self._event_limit:
            events[:] = [event for event in events if not self._is_stale(event)]
            heapify(events)
            self._event_limit = max(64, 2 * len(events))

    def _unblocks_at(self, older: _Entry, younger: _Entry) -> float:
        """When recency stops keeping two waiting users apart: when the older one has waited rematch_after, or
        when both directions of recency have expired, whichever comes first. While both wait, only `retract`
        changes their histories."""
        mine = _NEVER if younger.history is None else younger.history.get(older.session_id, _NEVER)
        theirs = _NEVER if older.history is None else older.history.get(younger.session_id, _NEVER)
        return min(older.cross_at, max(mine, theirs))

    def _is_stale(self, event: _Event) -> bool:
        """Whether either user of an event has stopped waiting (or waits again, as a new entry)."""
        entries = self._entries
        _, _, older, younger = event
        return entries.get(older.session_id) is not older or entries.get(younger.session_id) is not younger
