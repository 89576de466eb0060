"""The moderation webhook: signing, payloads, verdicts and the bounded queue (pure); delivery with retries,
backoff and timeouts on a driven clock (treq's StubTreq); and end to end against real local HTTP servers:
the signature checked, the verdict applied, a dead webhook slowing nothing."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st
from treq.testing import StubTreq
from twisted.internet import reactor, threads
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock, deferLater
from twisted.logger import LogEvent, formatEvent, globalLogPublisher
from twisted.python import usage
from twisted.web.iweb import IResponse
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from vchat.moderation.webhook import ModerationWebhook, TreqClient, apply_verdict
from vchat.moderation.webhook_config import WEBHOOK_SETTINGS, check_webhook_options, webhook_service
from vchat.moderation.webhook_message import (
    MAX_VERDICT_BYTES,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Subject,
    Verdict,
    VerdictError,
    flag_payload,
    parse_verdict,
    report_payload,
    retryable,
    sign,
    verify,
)
from vchat.moderation.webhook_queue import Delivery, DeliveryQueue, backoff
from vchat.options import SettingsOptions
from vchat.store.interface import AlreadyResolved
from vchat.store.memory import MemoryStore
from vchat.store.records import Flag, Report
from vchat.store.testing import a_flag, a_report, jpeg
from vchat.testing import MemoryServer, RunningServer, fired, result_of

SECRET = "s3cret-shared-with-the-webhook"
URL = "http://moderation.test/hook"
NOW = 1_700_000_000.0


def report(marker: bytes = b"face", **changes: Any) -> tuple[Report, Any]:
    image = jpeg(marker)
    return Report.of(a_report(**changes), id=f"r-{marker.decode()}", has_snapshot=True), image


def flag(**changes: Any) -> Flag:
    return Flag.of(a_flag(**changes), id="f-1")


# --- signing ----------------------------------------------------------------------------------------------


def test_the_signature_is_the_hmac_of_timestamp_dot_body() -> None:
    body = b'{"kind":"report"}'
    expected = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign(SECRET, 1_700_000_000, body) == f"sha256={expected}"
    assert sign(SECRET.encode(), 1_700_000_000, body) == f"sha256={expected}"


def test_verify_accepts_only_a_fresh_timestamp_and_the_exact_body_and_secret() -> None:
    body = b'{"kind":"flag"}'
    signature = sign(SECRET, 1000, body)
    assert verify(SECRET, "1000", signature, body, now=1000.0)
    assert verify(SECRET, "1000", signature, body, now=1299.0)
    assert not verify(SECRET, "1000", signature, body, now=1301.0)  # a replay, later
    assert not verify(SECRET, "1000", signature, body, now=699.0)  # from the future
    assert not verify("another secret", "1000", signature, body, now=1000.0)
    assert not verify(SECRET, "1000", signature, body + b" ", now=1000.0)
    assert not verify(SECRET, "1001", signature, body, now=1000.0)  # the timestamp is signed too
    assert not verify(SECRET, "1000", signature.upper(), body, now=1000.0)
    for bad in ("", "-5", "1e3", "\uff11\uff10\uff10\uff10", " 1000"):
        assert not verify(SECRET, bad, signature, body, now=1000.0)
    assert not verify(SECRET, "1000", "sha256=é", body, now=1000.0)


# --- payloads ---------------------------------------------------------------------------------------------


def test_a_report_payload_holds_what_the_issue_lists_and_nothing_else() -> None:
    stored, image = report(b"marker", comment="they said COMMENT-TEXT", reported_client={"browser": "FACTS"})
    body = report_payload(stored, image)
    assert body == report_payload(stored, image)  # deterministic
    assert body.isascii()
    payload = json.loads(body)
    assert payload == {
        "kind": "report",
        "report_id": "r-marker",
        "reason": "spam",
        "time": 1000.0,
        "reported": {"user_id": "u-1", "device_id": "d-1", "ip": "203.0.113.7"},
        "reporter": {"user_id": "u-2", "device_id": "d-2"},
        "snapshot": base64.b64encode(image.data).decode(),
        "snapshot_type": "image/jpeg",
    }
    assert b"COMMENT-TEXT" not in body and b"FACTS" not in body  # no comment, no client facts


def test_a_report_without_snapshot_and_a_flag() -> None:
    stored, _ = report()
    assert json.loads(report_payload(stored, None))["snapshot"] is None
    assert json.loads(flag_payload(flag())) == {
        "kind": "flag",
        "flag_id": "f-1",
        "reason": "many-reports",
        "summary": {"reports": 5, "window": "1h"},
        "time": 1000.0,
        "reported": {"user_id": "u-1", "device_id": "d-1"},
        "snapshot": None,
        "snapshot_type": None,
    }


# --- verdicts ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "verdict"),
    [
        (b"", None),
        (b"  \r\n", None),
        (b'{"action": "none"}', Verdict("none")),
        (b'{"action": "none", "duration_s": -1, "x": 1}', Verdict("none")),
        (b'{"action": "ban", "duration_s": 3600, "reason": "nudity"}', Verdict("ban", 3600.0, "nudity")),
        (b'{"action": "ban", "duration_s": 0.5}', Verdict("ban", 0.5)),
        (b'{"action": "ban", "duration_s": null}', Verdict("ban", None)),
        (
            b'{"action": "ban", "duration_s": 60, "category": "nudity", "model": "v2"}',
            Verdict("ban", 60.0, None, "nudity"),
        ),
    ],
)
def test_verdicts_understood(body: bytes, verdict: Verdict | None) -> None:
    assert parse_verdict(body) == verdict


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"<html>OK</html>", "not JSON"),
        (b'{"action": "ban"', "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b'["ban"]', "not a JSON object"),
        (b'{"action": "BAN", "duration_s": 60}', '"action"'),
        (b'{"action": "kick"}', '"action"'),
        (b"{}", '"action"'),
        (b'{"action": "ban"}', "duration_s"),
        (b'{"action": "ban", "duration_s": 0}', "positive"),
        (b'{"action": "ban", "duration_s": -60}', "positive"),
        (b'{"action": "ban", "duration_s": "60"}', "positive"),
        (b'{"action": "ban", "duration_s": true}', "positive"),
        (b'{"action": "ban", "duration_s": NaN}', "not JSON"),
        (b'{"action": "ban", "duration_s": Infinity}', "not JSON"),
        (b'{"action": "ban", "duration_s": 1e999}', "positive"),
        (b'{"action": "ban", "duration_s": 60, "reason": ""}', '"reason"'),
        (b'{"action": "ban", "duration_s": 60, "reason": 7}', '"reason"'),
        (b'{"action": "ban", "duration_s": 60, "reason": "' + b"x" * 501 + b'"}', '"reason"'),
        (b'{"action": "ban", "duration_s": 60, "category": "rude"}', '"category"'),
        (b'{"action": "none", "pad": "' + b"x" * MAX_VERDICT_BYTES + b'"}', "longer"),
        (b"[" * 60_000, "not JSON"),  # nested too deep for the parser
    ],
)
def test_replies_not_understood_say_why(body: bytes, why: str) -> None:
    with pytest.raises(VerdictError, match=why):
        parse_verdict(body)


@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_parse_verdict_never_fails_otherwise(body: bytes) -> None:
    with contextlib.suppress(VerdictError):
        parse_verdict(body)


@pytest.mark.parametrize(
    ("status", "again"),
    [(code, True) for code in (408, 429, 500, 503, 599)]
    + [(code, False) for code in (400, 401, 404, 413, 301, 302)],
)
def test_which_statuses_are_retried(status: int, again: bool) -> None:
    assert retryable(status) is again


# --- the queue and backoff --------------------------------------------------------------------------------


def item(name: str, size: int = 10) -> Delivery:
    return Delivery(Subject("report", name), b"x" * size)


def test_a_full_queue_drops_its_oldest_items() -> None:
    queue = DeliveryQueue(max_items=3, max_bytes=1000)
    for name in "abcde":
        queue.push(item(name))
    assert (len(queue), queue.dropped, queue.bytes) == (3, 2, 30)
    assert [queue.pop().subject.id for _ in range(3)] == ["c", "d", "e"]  # type: ignore[union-attr]
    assert queue.pop() is None and queue.bytes == 0


def test_the_queue_is_bounded_in_bytes_too() -> None:
    queue = DeliveryQueue(max_items=100, max_bytes=100)
    assert queue.push(item("a", 40)) == 0
    assert queue.push(item("b", 40)) == 0
    assert queue.push(item("c", 40)) == 1  # a goes
    assert queue.push(item("huge", 101)) == 1  # never fits: itself
    assert [queue.pop().subject.id for _ in range(2)] == ["b", "c"]  # type: ignore[union-attr]
    assert queue.dropped == 2


@given(
    st.integers(1, 5),
    st.integers(1, 200),
    st.lists(st.one_of(st.integers(0, 120), st.none()), max_size=60),
)
def test_queue_invariants(max_items: int, max_bytes: int, steps: list[int | None]) -> None:
    queue = DeliveryQueue(max_items, max_bytes)
    pushed = popped = 0
    newest: str | None = None
    for index, step in enumerate(steps):
        if step is None:
            popped += queue.pop() is not None
        else:
            pushed += 1
            queue.push(item(str(index), step))
            if step <= max_bytes:
                newest = str(index)
        assert len(queue) <= max_items and queue.bytes <= max_bytes
        assert pushed == popped + len(queue) + queue.dropped
    rest = [queue.pop() for _ in range(len(queue))]
    if rest:
        assert rest[-1].subject.id == newest  # type: ignore[union-attr]  # the newest is never the one dropped


def test_backoff_doubles_up_to_its_bound() -> None:
    assert [backoff(n) for n in range(1, 10)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert backoff(10_000, 0.5, 30) == 30
    with pytest.raises(ValueError):
        backoff(0)


def test_the_pure_parts_load_no_twisted() -> None:
    script = (
        "import sys, vchat.moderation.webhook_message, vchat.moderation.webhook_queue; print(*sys.modules)"
    )
    loaded = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True).stdout
    assert not [name for name in loaded.split() if name.startswith(("twisted", "zope", "treq", "autobahn"))]


# --- delivery on a driven clock ---------------------------------------------------------------------------


class Hook(Resource):
    """A scripted webhook for StubTreq: answers each POST with the next of `replies` (status, body), or
    never answers for `None`; records each request's body and headers."""

    isLeaf = True

    def __init__(self, *replies: tuple[int, bytes] | None) -> None:
        super().__init__()
        self.replies = list(replies)
        self.requests: list[tuple[bytes, dict[str, str]]] = []
        self.hanging: list[Request] = []

    def render_POST(self, request: Request) -> bytes | int:
        body = request.content.read()
        headers = {k.decode(): v[-1].decode() for k, v in request.requestHeaders.getAllRawHeaders()}
        self.requests.append((body, headers))
        reply = self.replies.pop(0) if self.replies else (204, b"")
        if reply is None:
            self.hanging.append(request)
            return NOT_DONE_YET
        request.setResponseCode(reply[0])
        return reply[1]


class Refusing:
    """An `IWebhookClient` whose every connection is refused, counting attempts."""

    def __init__(self) -> None:
        self.attempts = 0
        self.closed = False

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Deferred[IResponse]:
        self.attempts += 1
        return fail(ConnectionRefusedError())

    def close(self) -> Deferred[None]:
        self.closed = True
        return succeed(None)


class Rig:
    """A webhook service on a driven clock, talking to `hook` through StubTreq, recording verdicts."""

    def __init__(self, hook: Hook | Refusing, on_verdict: Callable[..., Any] | None = None, **options: Any):
        self.clock = Clock()
        self.clock.advance(NOW)
        self.hook = hook
        self.stub = StubTreq(hook) if isinstance(hook, Hook) else None
        client = TreqClient(self.clock, self.stub) if self.stub is not None else hook
        self.verdicts: list[tuple[Subject, Verdict]] = []
        self.service = ModerationWebhook(
            URL,
            SECRET,
            self.clock,
            client,  # type: ignore[arg-type]
            on_verdict or (lambda subject, verdict: self.verdicts.append((subject, verdict))),
            **options,
        )
        self.service.startService()

    def flush(self) -> None:
        if self.stub is not None:
            self.stub.flush()

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.flush()

    @property
    def requests(self) -> list[tuple[bytes, dict[str, str]]]:
        assert isinstance(self.hook, Hook)
        return self.hook.requests

    def stop(self) -> None:
        fired(self.service.stopService())
        assert self.clock.getDelayedCalls() == []


@pytest.fixture
def logged() -> Iterator[list[LogEvent]]:
    events: list[LogEvent] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def texts(events: list[LogEvent]) -> str:
    return "\n".join(formatEvent(event) + repr(event) for event in events)


def test_a_report_is_posted_signed_and_its_ban_verdict_applied() -> None:
    rig = Rig(Hook((200, b'{"action": "ban", "duration_s": 3600, "reason": "nudity"}')))
    stored, image = report()
    assert rig.service.submit_report(stored, image) is None
    rig.flush()
    [(body, headers)] = rig.requests
    assert body == report_payload(stored, image)
    assert headers["Content-Type"] == "application/json"
    assert headers[TIMESTAMP_HEADER] == str(int(NOW))
    assert verify(SECRET, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER], body, NOW)
    assert rig.verdicts == [(Subject("report", stored.id), Verdict("ban", 3600.0, "nudity"))]
    service = rig.service
    assert (service.submitted, service.delivered, service.failed, service.dropped, service.queued) == (
        1,
        1,
        0,
        0,
        0,
    )
    rig.stop()


def test_a_flag_is_posted_and_none_or_no_verdict_changes_nothing() -> None:
    rig = Rig(Hook((200, b'{"action": "none"}'), (204, b"")))
    rig.service.submit_flag(flag())
    rig.service.submit_flag(flag())
    rig.flush()
    assert [json.loads(body)["flag_id"] for body, _ in rig.requests] == ["f-1", "f-1"]
    assert rig.verdicts == [] and rig.service.delivered == 2 and rig.service.ignored == 0
    rig.stop()


def test_items_go_one_at_a_time_in_order() -> None:
    rig = Rig(Hook(None, (200, b""), (200, b"")), timeout_s=10.0)
    for marker in (b"a", b"b", b"c"):
        rig.service.submit_report(*report(marker))
    rig.flush()
    assert len(rig.requests) == 1 and rig.service.queued == 2  # the first hangs; the rest wait
    rig.advance(10.0)  # it times out, and is retried after 1 s
    rig.advance(1.0)
    ids = [json.loads(body)["report_id"] for body, _ in rig.requests]
    assert ids == ["r-a", "r-a", "r-b", "r-c"]
    assert rig.service.delivered == 3
    rig.stop()


def test_failures_are_retried_with_backoff_and_signed_afresh() -> None:
    rig = Rig(Hook((503, b"busy"), (500, b""), (429, b""), (408, b""), (200, b"")))
    rig.service.submit_report(*report())
    rig.flush()
    times = [NOW]
    for wait in (1.0, 2.0, 4.0, 8.0):
        rig.advance(wait - 0.001)
        assert len(rig.requests) == len(times)  # not before its time
        rig.advance(0.001)
        times.append(times[-1] + wait)
        assert len(rig.requests) == len(times)
    stamps = [int(headers[TIMESTAMP_HEADER]) for _, headers in rig.requests]
    assert stamps == [int(t) for t in times]
    for body, headers in rig.requests:
        assert verify(SECRET, headers[TIMESTAMP_HEADER], headers[SIGNATURE_HEADER], body, rig.clock.seconds())
    assert (rig.service.delivered, rig.service.failed) == (1, 0)
    rig.stop()


def test_an_item_is_given_up_after_its_attempts_and_the_next_goes() -> None:
    hook = Refusing()
    rig = Rig(hook, attempts=4, max_backoff_s=3.0)
    rig.service.submit_report(*report(b"a"))
    rig.service.submit_report(*report(b"b"))
    assert hook.attempts == 1
    # a is tried 4 times (waits of 1, 2, then 3: the bound), given up, and b tried at once, then after 1 s.
    for wait, attempts in ((1.0, 2), (2.0, 3), (2.999, 3), (0.001, 5), (1.0, 6)):
        rig.advance(wait)
        assert hook.attempts == attempts
    assert (rig.service.failed, rig.service.delivered, rig.service.queued) == (1, 0, 0)
    rig.stop()
    assert hook.closed


@pytest.mark.parametrize("status", [400, 401, 404, 413, 302])
def test_a_refusal_is_not_retried(status: int) -> None:
    rig = Rig(Hook((status, b'{"action": "ban", "duration_s": 60}'), (200, b"")))
    rig.service.submit_report(*report(b"a"))
    rig.service.submit_report(*report(b"b"))
    rig.flush()
    assert [json.loads(body)["report_id"] for body, _ in rig.requests] == ["r-a", "r-b"]
    assert (rig.service.failed, rig.service.delivered, rig.verdicts) == (1, 1, [])
    rig.stop()


def test_a_reply_that_is_not_a_verdict_is_logged_without_its_content_and_ignored(
    logged: list[LogEvent],
) -> None:
    replies = [
        (200, b"<html>SECRET-REPLY-MARKER</html>"),
        (200, b'{"action": "SECRET-REPLY-MARKER"}'),
        (200, b'{"action": "ban", "duration_s": 60, "reason": "' + b"SECRET-REPLY-MARKER" * 4000 + b'"}'),
    ]
    rig = Rig(Hook(*replies))
    for marker in (b"a", b"b", b"c"):
        rig.service.submit_report(*report(marker))
    rig.flush()
    assert (rig.service.delivered, rig.service.ignored, rig.verdicts) == (3, 3, [])
    text = texts(logged)
    assert "not JSON" in text and '"action"' in text and "longer than" in text
    assert "SECRET-REPLY-MARKER" not in text
    rig.stop()


def test_nothing_of_a_payload_is_logged(logged: list[LogEvent]) -> None:
    rig = Rig(Hook((500, b""), (400, b""), (200, b"not json")))
    stored, image = report(b"IMAGE-MARKER")
    rig.service.submit_report(stored, image)
    rig.service.submit_report(*report(b"b"))
    rig.advance(1.0)
    assert rig.service.delivered == 1 and logged
    text = texts(logged)
    assert "IMAGE-MARKER" not in text and base64.b64encode(image.data).decode()[:40] not in text
    assert "203.0.113.7" not in text and "u-2" not in text
    rig.stop()


def test_an_answer_that_never_comes_times_out_and_is_retried() -> None:
    rig = Rig(Hook(None, (200, b"")), timeout_s=5.0)
    rig.service.submit_flag(flag())
    rig.flush()
    assert len(rig.requests) == 1
    rig.advance(4.9)
    assert len(rig.requests) == 1
    rig.advance(0.1)  # timed out: the request is abandoned, and tried again a second later
    assert len(rig.requests) == 1
    rig.advance(1.0)
    assert len(rig.requests) == 2 and rig.service.delivered == 1
    rig.stop()


def test_a_dead_webhook_keeps_the_queue_bounded_and_submit_immediate() -> None:
    rig = Rig(Hook(*[None] * 100), queue_size=5, timeout_s=10.0)
    for n in range(50):
        assert rig.service.submit_report(*report(str(n).encode())) is None
    rig.flush()
    assert len(rig.requests) == 1  # one in flight, never more
    assert (rig.service.queued, rig.service.dropped, rig.service.submitted) == (5, 44, 50)
    rig.stop()
    # The five newest are kept; the one in flight is kept too, for a restart.
    rig.hook.replies[:] = []
    rig.service.startService()
    rig.flush()
    ids = [json.loads(body)["report_id"] for body, _ in rig.requests[1:]]
    assert ids == ["r-0", "r-45", "r-46", "r-47", "r-48", "r-49"]
    rig.stop()


def test_stopping_cancels_the_request_in_flight_and_the_retry_timer() -> None:
    rig = Rig(Hook(None), timeout_s=30.0)
    rig.service.submit_flag(flag())
    rig.flush()
    assert rig.clock.getDelayedCalls()  # the timeout
    stopping = rig.service.stopService()
    assert result_of(stopping) is None
    assert rig.clock.getDelayedCalls() == []
    rig.service.submit_flag(flag())  # queued while stopped, sent nowhere
    rig.advance(100.0)
    assert len(rig.requests) == 1

    refusing = Refusing()
    rig = Rig(refusing)
    rig.service.submit_flag(flag())
    assert len(rig.clock.getDelayedCalls()) == 1  # the retry
    rig.stop()
    rig.advance(100.0)
    assert refusing.attempts == 1


def test_stopping_waits_for_verdicts_being_applied() -> None:
    applying: Deferred[None] = Deferred()
    rig = Rig(Hook((200, b'{"action": "ban", "duration_s": null}')), on_verdict=lambda s, v: applying)
    rig.service.submit_flag(flag())
    rig.flush()
    stopping = rig.service.stopService()
    assert not stopping.called
    applying.callback(None)
    assert stopping.called


def test_a_verdict_that_fails_to_apply_is_logged_and_delivery_goes_on(logged: list[LogEvent]) -> None:
    calls: list[str] = []

    def on_verdict(subject: Subject, verdict: Verdict) -> Deferred[None]:
        calls.append(subject.id)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return fail(ValueError("bad duration"))

    ban = b'{"action": "ban", "duration_s": 60}'
    rig = Rig(Hook((200, ban), (200, ban), (200, b"")), on_verdict=on_verdict)
    for marker in (b"a", b"b", b"c"):
        rig.service.submit_report(*report(marker))
    rig.flush()
    assert calls == ["r-a", "r-b"] and rig.service.delivered == 3
    assert [e for e in logged if e.get("log_failure") is not None]
    rig.stop()


# --- applying verdicts with the moderation service ----------------------------------------------------------


@pytest.fixture
def memory() -> MemoryServer:
    server = MemoryServer(store=MemoryStore())
    server.clock.advance(NOW)
    return server


def stored_report(server: MemoryServer) -> Report:
    assert server.moderation is not None
    store = fired(server.moderation._store.whenOpen())
    report: Report = fired(store.add_report(a_report(created_at=NOW), jpeg(b"x")))
    return report


def test_a_ban_verdict_on_a_report_resolves_it_with_a_ban_from_the_webhook(memory: MemoryServer) -> None:
    assert memory.moderation is not None
    report = stored_report(memory)
    subject = Subject("report", report.id)
    fired(apply_verdict(memory.moderation, subject, Verdict("ban", 3600.0, "nudity")))
    store = fired(memory.moderation._store.whenOpen())
    resolved = fired(store.get_report(report.id))
    assert resolved.status == "banned"
    ban = fired(store.get_ban(resolved.ban_id))
    assert (ban.source, ban.reason, ban.ends_at, ban.target.value) == (
        "webhook",
        "nudity",
        NOW + 3600.0,
        "u-1",
    )
    assert memory.moderation.check(None, None, "d-1") is not None  # the device too
    # A report resolved before the verdict came is left alone.
    assert result_of(apply_verdict(memory.moderation, subject, Verdict("ban", None))) is None


def stored_flag(server: MemoryServer, user_id: str, device_id: str | None) -> Flag:
    assert server.moderation is not None
    store = fired(server.moderation._store.whenOpen())
    flag: Flag = fired(store.add_flag(a_flag(user_id=user_id, device_id=device_id, created_at=NOW)))
    return flag


def test_a_ban_verdict_on_a_flag_resolves_it_banning_the_user_and_device(memory: MemoryServer) -> None:
    assert memory.moderation is not None
    flag = stored_flag(memory, "u-9", "d-9")
    subject = Subject("flag", flag.id)
    fired(apply_verdict(memory.moderation, subject, Verdict("ban", None, None, "spam")))
    notice = memory.moderation.check("u-9", None, None)
    assert notice is not None and notice.until is None and notice.reason == "banned by automatic moderation"
    assert memory.moderation.check(None, None, "d-9") is not None
    store = fired(memory.moderation._store.whenOpen())
    assert fired(store.get_flag(flag.id)).status == "resolved"
    other = stored_flag(memory, "u-8", None)
    fired(apply_verdict(memory.moderation, Subject("flag", other.id), Verdict("ban", 60.0, "go away")))
    assert memory.moderation.check("u-8", None, None) is not None
    assert fired(apply_verdict(memory.moderation, subject, Verdict("none"))) is None
    # A flag resolved before the verdict came, or an unknown one, is left alone.
    assert fired(apply_verdict(memory.moderation, subject, Verdict("ban", 60.0))) is None
    assert fired(apply_verdict(memory.moderation, Subject("flag", "nope"), Verdict("ban", 6.0))) is None


def test_a_verdict_on_an_unknown_or_resolved_report(memory: MemoryServer) -> None:
    assert memory.moderation is not None
    report = stored_report(memory)
    fired(memory.moderation.resolve_report(report.id, "dismiss"))
    subject = Subject("report", report.id)
    assert fired(apply_verdict(memory.moderation, subject, Verdict("ban", 60.0))) is None
    assert fired(apply_verdict(memory.moderation, Subject("report", "nope"), Verdict("ban", 6.0))) is None
    with pytest.raises(AlreadyResolved):
        fired(memory.moderation.resolve_report(report.id, "ban"))  # still dismissed


# --- against real HTTP servers ------------------------------------------------------------------------------


class Receiver(Resource):
    """A webhook receiver as docs/webhook.md describes it: checks the signature, answers with a verdict."""

    isLeaf = True

    def __init__(self, verdict: bytes) -> None:
        super().__init__()
        self.verdict = verdict
        self.received: list[dict[str, Any]] = []
        self.refused = 0

    def render_POST(self, request: Request) -> bytes:
        body = request.content.read()
        timestamp = request.getHeader(TIMESTAMP_HEADER) or ""
        signature = request.getHeader(SIGNATURE_HEADER) or ""
        if not verify(SECRET, timestamp, signature, body, reactor.seconds()):
            self.refused += 1
            request.setResponseCode(401)
            return b""
        self.received.append(json.loads(body))
        request.setHeader("Content-Type", "application/json")
        return self.verdict


async def listen(resource: Resource) -> Any:
    return reactor.listenTCP(0, Site(resource), interface="127.0.0.1")  # type: ignore[attr-defined]


async def until(condition: Callable[[], bool]) -> None:
    """Wait for `condition`, turning the reactor (bounded by the test's timeout, not a measured delay)."""
    while not condition():
        await deferLater(reactor, 0.01, lambda: None)


@pytest_twisted.ensureDeferred
async def test_end_to_end_the_signature_is_checked_and_the_verdict_applied(memory: MemoryServer) -> None:
    assert memory.moderation is not None
    receiver = Receiver(b'{"action": "ban", "duration_s": 3600, "reason": "nudity seen"}')
    port = await listen(receiver)
    url = f"http://127.0.0.1:{port.getHost().port}/hook"
    moderation = memory.moderation
    webhook = ModerationWebhook(
        url, SECRET, reactor, TreqClient(reactor), lambda s, v: apply_verdict(moderation, s, v)
    )
    forged = ModerationWebhook(url, "not the secret", reactor, TreqClient(reactor), lambda s, v: None)
    try:
        webhook.startService()
        forged.startService()
        report = stored_report(memory)
        webhook.submit_report(report, jpeg(b"x"))
        forged.submit_flag(flag())
        await until(lambda: webhook.delivered == 1 and forged.failed == 1)
        await until(lambda: moderation.check("u-1", None, None) is not None)
        [payload] = receiver.received
        assert payload["report_id"] == report.id
        assert base64.b64decode(payload["snapshot"]) == jpeg(b"x").data
        assert receiver.refused == 1  # the forged signature was refused, and not retried
        notice = moderation.check("u-1", None, None)
        assert notice is not None and notice.reason == "nudity seen"
    finally:
        await webhook.stopService()
        await forged.stopService()
        await port.stopListening()


class Silent(Resource):
    """A webhook that accepts requests and never answers."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.waiting: list[Request] = []
        self.gone = 0

    def render_POST(self, request: Request) -> int:
        self.waiting.append(request)
        request.notifyFinish().addErrback(lambda _: setattr(self, "gone", self.gone + 1))
        return NOT_DONE_YET


@pytest_twisted.ensureDeferred
async def test_a_dead_webhook_slows_no_session(server: RunningServer) -> None:
    silent = Silent()
    port = await listen(silent)
    refused_port = reactor.listenTCP(0, Site(Resource()), interface="127.0.0.1")  # type: ignore[attr-defined]
    refused_url = f"http://127.0.0.1:{refused_port.getHost().port}/"
    await refused_port.stopListening()
    hanging = ModerationWebhook(
        f"http://127.0.0.1:{port.getHost().port}/", SECRET, reactor, TreqClient(reactor), lambda s, v: None,
        queue_size=10, timeout_s=600.0,
    )  # fmt: skip
    refused = ModerationWebhook(
        refused_url,
        SECRET,
        reactor,
        TreqClient(reactor),
        lambda s, v: None,
        queue_size=10,
        first_backoff_s=600.0,
    )
    try:
        for webhook in (hanging, refused):
            webhook.startService()
            for n in range(200):
                webhook.submit_report(*report(str(n).encode()))
            assert (webhook.queued, webhook.dropped) == (10, 189)
        # Meanwhile, on the same reactor, two people meet and chat.
        a, b, matched, _ = await server.matched_pair()
        a.send({"type": "chat", "match_id": matched["match_id"], "text": "hi"})
        assert (await b.expect("chat"))["text"] == "hi"
        await until(lambda: len(silent.waiting) == 1)
        assert len(silent.waiting) == 1 and hanging.delivered == 0 and refused.delivered == 0
    finally:
        await hanging.stopService()
        await refused.stopService()
        await until(lambda: silent.gone == 1)  # stopping dropped the hanging request
        await port.stopListening()


# --- options ------------------------------------------------------------------------------------------------


class WebhookOptions(SettingsOptions):
    settings = WEBHOOK_SETTINGS

    def check(self) -> None:
        check_webhook_options(self)


def parsed(*args: str) -> WebhookOptions:
    options = WebhookOptions()
    options.parseOptions(list(args))
    return options


def test_the_webhook_is_off_by_default(memory: MemoryServer) -> None:
    options = parsed()
    assert options["moderation-webhook"] is None
    assert (options["moderation-webhook-timeout"], options["moderation-webhook-queue"]) == (10.0, 1000)
    assert memory.moderation is not None
    assert webhook_service(options, Clock(), memory.moderation) is None


def test_the_webhook_options_make_the_service(memory: MemoryServer, tmp_path: Any) -> None:
    config = tmp_path / "vchat.toml"
    config.write_text('moderation_secret = "from-the-file"\n')
    options = parsed(
        "--config", str(config), "--moderation-webhook", "https://mod.example:8443/v1/hook?x=1",
        "--moderation-webhook-timeout", "2.5", "--moderation-webhook-queue", "7",
    )  # fmt: skip
    assert memory.moderation is not None
    service = webhook_service(options, reactor, memory.moderation)
    assert isinstance(service, ModerationWebhook)
    assert (
        service.name == "moderation-webhook" and service._timeout_s == 2.5 and service._queue.max_items == 7
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--moderation-webhook", "http://h/"], "needs --moderation-secret"),
        (["--moderation-webhook", "ftp://h/", "--moderation-secret", "s"], "http"),
        (["--moderation-webhook", "http:///path", "--moderation-secret", "s"], "host"),
        (["--moderation-webhook", "http://h:99999/", "--moderation-secret", "s"], "URL"),
        (["--moderation-webhook", "http://h/ x", "--moderation-secret", "s"], "URL"),
        (["--moderation-webhook-timeout", "0"], "at least"),
        (["--moderation-webhook-queue", "0"], "at least"),
    ],
)
def test_bad_webhook_options(args: list[str], message: str) -> None:
    with pytest.raises(usage.UsageError, match=message):
        parsed(*args)


# --- the receiver of docs/webhook.md ------------------------------------------------------------------------


def receiver_from_the_docs(secret: bytes) -> dict[str, Any]:
    text = (Path(__file__).resolve().parent.parent / "docs" / "webhook.md").read_text()
    [code] = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    namespace: dict[str, Any] = {"__name__": "receiver"}
    exec(compile(code, "docs/webhook.md", "exec"), namespace)
    namespace["SECRET"] = secret
    return namespace


def test_the_documented_verification_agrees_with_vchat() -> None:
    verified = receiver_from_the_docs(b"k")["verified"]
    body = report_payload(*report())
    now = int(time.time())
    assert verified(b"k", str(now), sign("k", now, body), body)
    assert not verified(b"k", str(now - 301), sign("k", now - 301, body), body)
    assert not verified(b"other", str(now), sign("k", now, body), body)
    assert not verified(b"k", str(now), sign("k", now, body), body[:-1])


@pytest_twisted.ensureDeferred
async def test_the_documented_receiver_bans_through_the_webhook(memory: MemoryServer) -> None:
    """The receiver of docs/webhook.md, run as it is (in a thread: it blocks), decides a real report."""
    assert memory.moderation is not None
    moderation = memory.moderation
    docs = receiver_from_the_docs(SECRET.encode())
    http = docs["HTTPServer"](("127.0.0.1", 0), docs["Receiver"])
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    webhook = ModerationWebhook(
        f"http://127.0.0.1:{http.server_address[1]}/", SECRET, reactor, TreqClient(reactor),
        lambda s, v: apply_verdict(moderation, s, v),
    )  # fmt: skip
    try:
        webhook.startService()
        store = fired(moderation._store.whenOpen())
        nude: Report = fired(store.add_report(a_report(reason="nudity", created_at=NOW), jpeg(b"n")))
        spam: Report = fired(store.add_report(a_report(reported_user_id="u-7", created_at=NOW), None))
        webhook.submit_report(nude, jpeg(b"n"))
        webhook.submit_report(spam, None)
        await until(lambda: webhook.delivered == 2 and moderation.check("u-1", None, None) is not None)
        assert fired(store.get_report(nude.id)).status == "banned"
        assert fired(store.get_report(spam.id)).status == "open"
        assert moderation.check("u-7", None, None) is None
    finally:
        await webhook.stopService()
        await threads.deferToThread(http.shutdown)
        http.server_close()


@pytest.mark.parametrize("setting", WEBHOOK_SETTINGS, ids=lambda setting: setting.name)
def test_every_webhook_option_is_documented(setting: Any) -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "webhook.md").read_text()
    assert f"| `--{setting.name}` |" in text
