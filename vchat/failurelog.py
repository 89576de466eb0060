"""Logging of unexpected failures that a client might trigger at will, within a budget."""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from vchat.ratelimit import TokenBucket


class ThrottledFailureLog:
    """Logs failures with their tracebacks, `burst` at once and `rate` per second on average; counts the rest.

    A bug that one client can trigger with every message it sends would otherwise let that client write
    tracebacks into the log at its message rate.
    """

    _log = Logger()

    def __init__(self, clock: IReactorTime, rate: float = 1 / 60, burst: int = 10) -> None:
        self._clock = clock
        self._budget = TokenBucket(rate, burst, clock.seconds())
        self.suppressed = 0

    def failure(self, what: str, failure: Failure | None = None) -> None:
        """Log `failure` (default: the exception being handled, from an `except` block), as `what` failed."""
        if not self._budget.take(self._clock.seconds()):
            self.suppressed += 1
            return
        suppressed, self.suppressed = self.suppressed, 0
        self._log.failure(
            "{what} ({suppressed} similar failures not logged before this one)",
            failure or Failure(),
            what=what,
            suppressed=suppressed,
        )
