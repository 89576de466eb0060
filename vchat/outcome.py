"""A result that arrives once, for any number of callers to wait on (a service's "listening" or "loaded")."""

from __future__ import annotations

from typing import Generic, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

T = TypeVar("T")


class Outcome(Generic[T]):
    """Fires once with a value or a failure; `observe` gives each caller its own Deferred, before or after."""

    def __init__(self) -> None:
        self._result: T | Failure | None = None
        self._done = False
        self._waiters: list[Deferred[T]] = []

    @property
    def settled(self) -> bool:
        """Whether the outcome is known (a restarted service waits on a fresh one)."""
        return self._done

    def observe(self) -> Deferred[T]:
        """A Deferred that fires with the outcome, at once if it is already known."""
        waiter: Deferred[T] = Deferred()
        if self._done:
            self._deliver(waiter, self._result)
        else:
            self._waiters.append(waiter)
        return waiter

    def fire(self, result: T | Failure) -> None:
        """Settle the outcome and wake every waiter."""
        self._result, self._done = result, True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            self._deliver(waiter, result)

    @staticmethod
    def _deliver(waiter: Deferred[T], result: T | Failure | None) -> None:
        if isinstance(result, Failure):
            waiter.errback(result)
        else:
            waiter.callback(result)  # type: ignore[arg-type]
