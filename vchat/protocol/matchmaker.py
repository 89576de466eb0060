"""Who decides matches for the switchboard: the interface, and the single-node matchmaker over the in-memory
engine (the cluster's is vchat.cluster.matchmaker)."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import Attribute, Interface, implementer

from vchat.matching import MatchingEngine, Pair, Seeker

PairStarter = Callable[[Pair], object]
"""What a matchmaker calls with each pair of this node's users it decides: the switchboard starts the match."""


class IMatchmaker(Interface):
    """Decides which waiting users meet. The switchboard tells it who waits and who stops; it tells the
    switchboard each pair it decides, at once or later."""

    engine: MatchingEngine = Attribute("the in-memory engine of this node's waiting users")

    def search(seeker: Seeker, now: float) -> None:
        """`seeker`'s session waits for a partner (again, with these filters; it was told `searching`)."""

    def cancel(session_id: str) -> None:
        """The session stopped waiting (stop, a lost connection, a match made elsewhere); nothing if it was not
        waiting."""

    def forget(session_id: str) -> None:
        """The session ended for good: drop what is kept of it (recent partners, blocks)."""

    def block(a: str, b: str) -> None:
        """Never pair `a` and `b` (one reported the other)."""

    def waiting() -> int:
        """How many of this node's users wait for a partner."""

    def shutdown() -> None:
        """Cancel every timer: the server is stopping."""


@implementer(IMatchmaker)
class LocalMatchmaker:
    """Single-node matching: the engine decides at each search, and polling it when recent-partner blocks lift
    pairs the users that the passing of time made compatible."""

    _log = Logger()

    def __init__(self, engine: MatchingEngine, clock: IReactorTime, start: PairStarter) -> None:
        self.engine = engine
        self._clock = clock
        self._start = start
        self._poll_timer: IDelayedCall | None = None

    def search(self, seeker: Seeker, now: float) -> None:
        pair = self.engine.search(seeker, now)
        if pair is None:
            self._schedule_poll()
        else:
            self._start(pair)

    def cancel(self, session_id: str) -> None:
        self.engine.cancel(session_id)

    def forget(self, session_id: str) -> None:
        self.engine.forget(session_id)

    def block(self, a: str, b: str) -> None:
        self.engine.block(a, b)

    def waiting(self) -> int:
        return len(self.engine)

    def shutdown(self) -> None:
        if self._poll_timer is not None and self._poll_timer.active():
            self._poll_timer.cancel()
        self._poll_timer = None

    def _schedule_poll(self) -> None:
        due = self.engine.next_poll_at()
        if due is None:
            return
        timer = self._poll_timer
        if timer is not None and timer.active():
            if timer.getTime() <= due:
                return
            timer.cancel()
        self._poll_timer = self._clock.callLater(max(0.0, due - self._clock.seconds()), self._poll)

    def _poll(self) -> None:
        self._poll_timer = None
        try:
            for pair in self.engine.poll(self._clock.seconds()):
                self._start(pair)
        except Exception:
            self._log.failure("polling the matching engine")
        self._schedule_poll()
