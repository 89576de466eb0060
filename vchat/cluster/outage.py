"""An outage of Redis as a node's loop sees it: since when, logged once when it starts and once when it ends."""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger


class Outage:
    """Tracks whether the latest call to Redis failed, and since when; the start and the end of each outage
    are logged once, however many calls fail in between."""

    def __init__(self, clock: IReactorTime, log: Logger) -> None:
        self._clock = clock
        self._log = log
        self.since: float | None = None  # when the outage began; None: Redis answers

    @property
    def ongoing(self) -> bool:
        """Whether the latest call failed."""
        return self.since is not None

    def failed(self, message: str, **fields: object) -> None:
        """A call failed: the first failure of an outage logs `message` (a warning) with `fields`."""
        if self.since is None:
            self.since = self._clock.seconds()
            self._log.warn(message, **fields)

    def succeeded(self, message: str, **fields: object) -> None:
        """A call succeeded: after an outage, `message` is logged with `fields` and `seconds`, its length."""
        if self.since is not None:
            self._log.info(message, seconds=self._clock.seconds() - self.since, **fields)
            self.since = None
