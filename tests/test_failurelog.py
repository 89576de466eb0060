"""ThrottledFailureLog: tracebacks within a budget; the rest are counted, and the count is logged with the next."""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.task import Clock
from twisted.logger import LogEvent, capturedLogs, formatEvent
from twisted.python.failure import Failure

from vchat.failurelog import ThrottledFailureLog


def fail(log: ThrottledFailureLog, times: int = 1) -> list[LogEvent]:
    """Have `log` report a bug `times` times; the events logged."""
    with capturedLogs() as events:
        for _ in range(times):
            try:
                raise RuntimeError("a bug")
            except RuntimeError:
                log.failure("handling a message")
    return list(events)


def tracebacks(events: Sequence[LogEvent]) -> list[LogEvent]:
    """The events that carry a traceback."""
    return [event for event in events if "log_failure" in event]


def test_a_burst_is_logged_the_rest_counted() -> None:
    log = ThrottledFailureLog(Clock(), rate=1 / 60, burst=3)
    events = tracebacks(fail(log, 5))
    assert len(events) == 3
    assert all(event["log_failure"].check(RuntimeError) for event in events)
    assert "handling a message (0 similar failures not logged before this one)" in formatEvent(events[0])
    assert log.suppressed == 2


def test_the_next_one_logged_tells_how_many_were_not() -> None:
    clock = Clock()
    log = ThrottledFailureLog(clock, rate=1 / 60, burst=1)
    fail(log, 4)
    clock.advance(59)
    assert tracebacks(fail(log)) == [] and log.suppressed == 4
    clock.advance(1)
    [event] = tracebacks(fail(log))
    assert event["what"] == "handling a message" and event["suppressed"] == 4
    assert log.suppressed == 0


def test_the_budget_refills_at_the_rate() -> None:
    clock = Clock()
    log = ThrottledFailureLog(clock, rate=1, burst=2)
    fail(log, 10)
    clock.advance(1000)
    assert len(tracebacks(fail(log, 10))) == 2


def test_a_failure_given_is_logged_outside_an_except_block() -> None:
    log = ThrottledFailureLog(Clock())
    with capturedLogs() as events:
        log.failure("reading an account", Failure(ValueError("the store is away")))
    [event] = tracebacks(list(events))
    assert event["log_failure"].check(ValueError) and "reading an account" in formatEvent(event)
