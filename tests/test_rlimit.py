"""The open-files limit: the soft limit raised to the hard one, once, when the process starts."""

from __future__ import annotations

import resource

import pytest
from twisted.logger import capturedLogs, formatEvent

from vchat import rlimit
from vchat.rlimit import OpenFilesLimitService, raise_open_files_limit


class FakeResource:
    """The `resource` module's open-files limits, as the test sets them."""

    RLIMIT_NOFILE = resource.RLIMIT_NOFILE

    def __init__(self, soft: int, hard: int, refuse: type[Exception] | None = None) -> None:
        self.limits = (soft, hard)
        self.refuse = refuse
        self.raised = 0

    def getrlimit(self, which: int) -> tuple[int, int]:
        assert which == self.RLIMIT_NOFILE
        return self.limits

    def setrlimit(self, which: int, limits: tuple[int, int]) -> None:
        assert which == self.RLIMIT_NOFILE
        if self.refuse is not None:
            raise self.refuse("not allowed")
        self.limits = limits
        self.raised += 1


def fake_limits(
    monkeypatch: pytest.MonkeyPatch, soft: int, hard: int, refuse: type[Exception] | None = None
) -> FakeResource:
    fake = FakeResource(soft, hard, refuse)
    monkeypatch.setattr(rlimit, "resource", fake)
    return fake


def test_the_soft_limit_is_raised_to_the_hard_one(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_limits(monkeypatch, 1024, 524288)
    assert raise_open_files_limit() == 524288
    assert fake.limits == (524288, 524288)


def test_a_limit_already_at_the_hard_one_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_limits(monkeypatch, 4096, 4096)
    assert raise_open_files_limit() == 4096
    assert fake.raised == 0


@pytest.mark.parametrize("refusal", [ValueError, OSError])
def test_a_refused_raise_keeps_the_soft_limit(
    monkeypatch: pytest.MonkeyPatch, refusal: type[Exception]
) -> None:
    fake_limits(monkeypatch, 1024, 4096, refuse=refusal)
    assert raise_open_files_limit() == 1024


def test_the_real_limit() -> None:
    assert raise_open_files_limit() == resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def test_the_service_raises_the_limit_once_when_started(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_limits(monkeypatch, 1024, 4096)
    service = OpenFilesLimitService()
    assert service.name == "open-files-limit" and service.limit is None and fake.raised == 0
    with capturedLogs() as events:
        service.startService()
    assert service.limit == 4096 and fake.raised == 1
    assert [formatEvent(event) for event in events] == ["open files limit 4096"]
    service.stopService()
    assert fake.raised == 1
