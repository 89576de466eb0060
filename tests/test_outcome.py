"""Outcome: one result, any number of waiters, before or after it arrives."""

from __future__ import annotations

from twisted.python.failure import Failure

from vchat.outcome import Outcome


def test_waiters_before_and_after_get_the_value() -> None:
    outcome: Outcome[int] = Outcome()
    early, seen = outcome.observe(), []
    early.addCallback(seen.append)
    assert seen == []
    outcome.fire(7)
    outcome.observe().addCallback(seen.append)
    assert seen == [7, 7]


def test_waiters_get_the_failure() -> None:
    outcome: Outcome[int] = Outcome()
    early, errors = outcome.observe(), []
    early.addErrback(lambda f: errors.append(f.type))
    outcome.fire(Failure(ValueError("no")))
    outcome.observe().addErrback(lambda f: errors.append(f.type))
    assert errors == [ValueError, ValueError]
