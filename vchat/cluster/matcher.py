"""The matcher (docs/cluster.md, "Matching"): the one node at a time that pairs users across nodes, by running
the single-node matching engine over a mirror of the shared queue.

Every node runs a `Matcher`; the one that holds the queue's lease (`SharedQueue.acquire_lease`) works, the
others only try to take the lease every third of its TTL. The holder renews the lease at least that often,
and every `interval` (or soon after a `nudge`) it reads the queue (`SharedQueue.waiting`) and brings its
engine in step with it: users no longer waiting are cancelled, and users it does not know yet (or whose entry
changed) search, the longest-waiting first, so that the engine's first-come order is the queue's. The pairs
the engine gives, and those `poll` gives once `rematch_after` lifts a recent-partner block, are claimed one
by one (`SharedQueue.claim`): a claim that succeeds took both users out of the queue, and `on_pair(offer,
answer)` tells the wiring, the offer being the user who has waited longer; a claim that fails found one of
them gone (withdrawn, matched locally by its node): the engine forgets it paired them (`retract`), since they
never met, and the next reading puts the other back in the engine.

The lease only spares work: every pair is a claim, so two nodes that both believe they hold it cannot match
a user twice. A matcher that loses its lease, or cannot reach Redis (no answer within the lease's TTL, a lost
connection, an error), drops its mirror and the lease (it cannot know it still holds it), logs the outage
once and its end once, and tries again every third of the TTL. Every timer callback is fenced: a failure is
logged and the loop goes on.

Privacy: the matcher writes nothing to Redis but the lease; it keeps the pairs it made only in its engine's
recent-partner history, in memory, as a single node does, and never logs a pair. That history, and the
blocked pairs, belong to this process: a node that takes the lease over starts without the history (recent
partners may then meet again sooner), and the wiring must `block` a reported pair on every node's matcher.

Known limits: a user's `rematch_after` counts from when this matcher first read its entry, not from when it
started waiting; and a claim that fails takes the two users out of each other's recent partners, but not back
the partners that pairing pushed out of their last `recent_partners` (those may meet again sooner).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from typing import TypeVar

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from vchat.cluster.entries import QueueEntry, check_id
from vchat.cluster.outage import Outage
from vchat.cluster.queue import SharedQueue
from vchat.matching.engine import MatchingEngine, Pair

DEFAULT_LEASE_TTL = 3.0
"""Seconds the matcher's lease lasts unless renewed (it is renewed every third of that)."""
DEFAULT_INTERVAL = 0.1
"""Seconds between readings of the shared queue while the matcher holds the lease."""
EXPIRE_EVERY = 60.0
"""Seconds between sweeps of the engine's recent partners that no longer keep anyone apart."""

PairHandler = Callable[[QueueEntry, QueueEntry], object]
"""What is told of each pair claimed: the user who has waited longer (who makes the offer), then the other. It
returns False (or a Deferred that fires with False) if it could not pass the pair on: both are put back."""

_T = TypeVar("_T")


class _Unavailable(Exception):
    """A call to Redis failed, or was not answered in time."""


class Matcher(Service):
    """This node's part in cross-node matching: while it holds the lease, pairs the users of the shared queue
    and claims each pair (see the module's docstring)."""

    name = "cluster-matcher"
    _log = Logger()

    def __init__(
        self,
        queue: SharedQueue,
        node_id: str,
        clock: IReactorTime,
        on_pair: PairHandler,
        recent_partners: int = 10,
        recent_seconds: float = 600.0,
        rematch_after: float = 30.0,
        lease_ttl: float = DEFAULT_LEASE_TTL,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        """`recent_partners`, `recent_seconds` and `rematch_after` are the matching engine's (and should be
        the nodes' own engines' too); `on_pair(offer, answer)` is called once for each pair claimed (it may
        return a Deferred; its failures are logged)."""
        if not (isinstance(lease_ttl, int | float) and lease_ttl > 0):
            raise ValueError(f"the lease's TTL is a positive number of seconds, not {lease_ttl!r}")
        if not (isinstance(interval, int | float) and 0 < interval < lease_ttl):
            raise ValueError(
                f"the matcher's interval ({interval!r} s) must be above 0 and below the lease's TTL "
                f"({lease_ttl:g} s)"
            )
        self.node_id = check_id(node_id, "a node id")
        self._queue = queue
        self._clock = clock
        self._on_pair = on_pair
        self._engine = MatchingEngine(recent_partners, recent_seconds, rematch_after)
        self._lease_ttl = float(lease_ttl)
        self._interval = float(interval)
        self._renew_every = self._lease_ttl / 3
        # The entries the engine holds as waiting, by session id: the mirror of the shared queue.
        self._mirror: dict[str, QueueEntry] = {}
        self._holding = False
        self._renewed_at = 0.0
        self._now = float("-inf")
        self._next: IDelayedCall | None = None
        self._ticking: Deferred[None] | None = None
        self._nudged = False
        self._outage = Outage(clock, self._log)
        self._expired_at = clock.seconds()

    @property
    def holds_lease(self) -> bool:
        """Whether this matcher believes it holds the lease (as of its latest tick)."""
        return self._holding

    @property
    def redis_available(self) -> bool:
        """Whether the latest call to Redis succeeded (or none failed yet)."""
        return not self._outage.ongoing

    def nudge(self) -> None:
        """Read the queue soon (a user joined it); many nudges before that reading make one. Nothing for a
        matcher that does not hold the lease."""
        if not (self.running and self._holding):
            return
        if self._ticking is not None:
            self._nudged = True
        elif self._next is not None and self._next.active():
            self._next.cancel()
            self._next = self._clock.callLater(0, self._tick)

    def block(self, a: str, b: str) -> None:
        """Never pair `a` and `b` (one reported the other), until either is forgotten."""
        self._engine.block(a, b)

    def forget(self, session_id: str) -> None:
        """Drop what this matcher keeps of a session closed for good (its recent partners and blocks)."""
        self._engine.forget(session_id)
        self._mirror.pop(session_id, None)

    def startService(self) -> None:
        super().startService()
        self._tick()

    def stopService(self) -> Deferred[None]:
        """Stop the loop, and give the lease up if held (best effort: it expires by itself otherwise)."""
        super().stopService()
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        ticking = self._ticking
        if ticking is not None:
            if self._outage.ongoing:  # it would wait for Redis until its timeout
                ticking.cancel()
            with suppress(Exception):  # it logged its own failure
                await ticking
        holding = self._holding
        self._drop()
        if holding:
            try:
                await self._call(self._queue.release_lease(self.node_id))
            except _Unavailable as e:
                self._log.warn(
                    "node {node} could not give the matcher's lease up (it expires by itself): {error}",
                    node=self.node_id,
                    error=e,
                )

    # The loop

    def _tick(self) -> None:
        """Run one round, then schedule the next (fenced: a failure is logged, the loop goes on)."""
        self._next = None
        self._nudged = False
        started = self._clock.seconds()
        self._ticking = ticking = Deferred.fromCoroutine(self._round())
        ticking.addErrback(self._log_failure)
        ticking.addBoth(self._schedule, started)

    def _log_failure(self, failure: Failure) -> None:
        self._drop()  # the mirror may be out of step: read it afresh
        self._log.failure("the matcher of node {node} failed", failure, node=self.node_id)

    def _schedule(self, _: object, started: float) -> None:
        self._ticking = None
        if not self.running:
            return
        if self._nudged and self._holding:
            delay = 0.0
        else:
            every = self._interval if self._holding else max(self._interval, self._renew_every)
            delay = max(0.0, started + every - self._clock.seconds())
        self._next = self._clock.callLater(delay, self._tick)

    async def _round(self) -> None:
        if not self.running:
            return
        try:
            if not await self._lease():
                return
            waiting = await self._call(self._queue.waiting())
        except _Unavailable as e:
            self._failed(e)
            return
        self._succeeded()
        if self._clock.seconds() - self._expired_at >= EXPIRE_EVERY:
            # The nodes' users end without the matcher hearing of it: their histories go once they are spent.
            self._expired_at = self._clock.seconds()
            self._engine.expire(self._expired_at)
        pairs = self._resync(waiting)
        if pairs:
            await self._claim(pairs)

    async def _lease(self) -> bool:
        """Take or keep the lease as its schedule says; whether this matcher holds it now."""
        now = self._clock.seconds()
        if self._holding and now - self._renewed_at < self._renew_every:
            return True
        if self._holding:
            held = await self._call(self._queue.renew_lease(self.node_id, self._lease_ttl))
            if not held:
                self._log.warn("node {node} lost the matcher's lease", node=self.node_id)
        else:
            held = await self._call(self._queue.acquire_lease(self.node_id, self._lease_ttl))
            if held:
                self._log.info("node {node} is the matcher now", node=self.node_id)
        self._succeeded()
        if held:
            self._holding = True
            self._renewed_at = now
        else:
            self._drop()
        return held

    def _resync(self, waiting: list[QueueEntry]) -> list[tuple[QueueEntry, QueueEntry, Pair]]:
        """Bring the engine in step with the queue's `waiting` entries (longest-waiting first), then poll it;
        the pairs it made, with both users' entries."""
        now = self._now = max(self._now, self._clock.seconds())
        engine = self._engine
        mirror = self._mirror
        current = {entry.session_id: entry for entry in waiting}
        for session_id, entry in list(mirror.items()):
            if current.get(session_id) != entry:  # gone, or queued again with other filters
                del mirror[session_id]
                engine.cancel(session_id)
        pairs: list[Pair] = []
        entries: dict[str, QueueEntry] = {}
        for entry in sorted(waiting, key=lambda entry: entry.since):
            session_id = entry.session_id
            if session_id in mirror or session_id in entries:
                continue
            pair = engine.search(entry.seeker(), now)
            entries[session_id] = entry
            if pair is None:
                mirror[session_id] = entry
            else:
                pairs.append(pair)
        pairs.extend(engine.poll(now))
        found: list[tuple[QueueEntry, QueueEntry, Pair]] = []
        for pair in pairs:
            a = mirror.pop(pair.waiting, None) or entries[pair.waiting]
            b = mirror.pop(pair.arriving, None) or entries[pair.arriving]
            found.append((a, b, pair))
        return found

    async def _claim(self, pairs: list[tuple[QueueEntry, QueueEntry, Pair]]) -> None:
        """Claim each pair (all sent at once), tell `on_pair` of those that were claimed, and retract from the
        engine those that were not."""
        claims = [
            (a, b, pair, self._call(self._queue.claim(a.session_id, b.session_id))) for a, b, pair in pairs
        ]
        lost = 0
        for a, b, pair, claim in claims:
            try:
                claimed = await claim
            except _Unavailable as e:
                # It may have been applied: the queue tells at the next reading (both gone or not).
                self._failed(e)
                continue
            if not claimed:
                lost += 1
                self._engine.retract(pair)  # they never met
                continue
            offer, answer = (a, b) if a.since <= b.since else (b, a)
            told = maybeDeferred(self._on_pair, offer, answer)
            told.addCallback(self._told, pair, offer, answer)
            told.addErrback(
                lambda failure: self._log.failure(
                    "the matcher of node {node} could not pass a pair on", failure, node=self.node_id
                )
            )
        if lost:
            self._log.debug(
                "{count} of the matcher's claims found a user gone", count=lost, node=self.node_id
            )

    def _told(self, passed: object, pair: Pair, offer: QueueEntry, answer: QueueEntry) -> None:
        """`on_pair` answered: False means the pair could not be passed on (Redis away for the bus), so the
        two, who never met, are put back as they were."""
        if passed is not False:
            return
        self._engine.retract(pair)
        self._log.warn("a pair could not be passed on: both users go back to the shared queue")
        for entry in (offer, answer):  # if this fails too, their nodes write them again (refresh)
            self._queue.enqueue(entry).addErrback(lambda failure: None)

    # Redis

    async def _call(self, call: Deferred[_T]) -> _T:
        """The result of a call to Redis; _Unavailable if it fails or takes longer than the lease's TTL."""
        try:
            result: _T = await call.addTimeout(self._lease_ttl, self._clock)
        except Exception as e:
            raise _Unavailable(str(e) or type(e).__name__) from e
        return result

    def _drop(self) -> None:
        """Forget the mirror and the lease, keeping the recent partners and blocks."""
        self._holding = False
        for session_id in self._mirror:
            self._engine.cancel(session_id)
        self._mirror.clear()

    def _failed(self, error: Exception) -> None:
        self._drop()
        self._outage.failed(
            "the matcher of node {node} cannot reach Redis ({error}): no cross-node matching by this node "
            "until it is back",
            node=self.node_id,
            error=str(error),
        )

    def _succeeded(self) -> None:
        self._outage.succeeded(
            "the matcher of node {node} reaches Redis again, after {seconds:.1f} s", node=self.node_id
        )
