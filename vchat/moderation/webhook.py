"""The moderation webhook: POSTs each new report and each automatic flag, signed, to an external moderation
service, and applies the verdict its reply may carry (docs/webhook.md).

Nothing here ever waits on the webhook: `submit_report` and `submit_flag` queue the item and return at once;
one item is in flight at a time, every attempt is bounded by a timeout, failures are retried with backoff on
the injected clock, and the queue is bounded (the oldest waiting item is dropped when it is full).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, DeferredList, succeed
from twisted.internet.error import TimeoutError
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IResponse

from vchat.failurelog import ThrottledFailureLog
from vchat.httpbody import BodyTooLarge, read_body
from vchat.moderation.webhook_message import (
    MAX_VERDICT_BYTES,
    Subject,
    Verdict,
    VerdictError,
    flag_payload,
    flag_subject,
    headers_for,
    parse_verdict,
    report_payload,
    report_subject,
    retryable,
)
from vchat.moderation.webhook_queue import Delivery, DeliveryQueue, backoff
from vchat.store.interface import AlreadyResolved
from vchat.store.records import BanSource, Category, Flag, Report, Snapshot

OnVerdict = Callable[[Subject, Verdict], "Deferred[Any] | None"]


class IWebhookClient(Protocol):
    """How the webhook makes HTTP requests: `TreqClient` for real, or a test double."""

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Deferred[IResponse]:
        """POST `body` with `headers` to `url`, without following redirects; fires with the response, whose
        body has not been read yet. Cancelling the Deferred abandons the request."""

    def close(self) -> Deferred[None]:
        """Close idle connections; fires when they are closed."""


class TreqClient:
    """`IWebhookClient` over treq, with its own pool of persistent connections."""

    def __init__(self, reactor: Any, http: Any = None) -> None:
        """`reactor` provides TCP (and TLS for https) and time; `http` is a treq `HTTPClient` (or something
        with its `post`, such as `treq.testing.StubTreq`) to use instead of one built on `reactor`."""
        self._pool: Any = None
        if http is None:
            from treq.client import HTTPClient
            from twisted.web.client import Agent, HTTPConnectionPool

            self._pool = HTTPConnectionPool(reactor, persistent=True)
            self._pool.maxPersistentPerHost = 1
            http = HTTPClient(Agent(reactor, pool=self._pool))
        self._http = http
        self._reactor = reactor

    def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Deferred[IResponse]:
        """POST with treq: no redirects, the body left unread."""
        posting: Deferred[IResponse] = self._http.post(
            url,
            data=body,
            headers={name: [value] for name, value in headers.items()},
            allow_redirects=False,
            unbuffered=True,
            reactor=self._reactor,
        )
        return posting

    def close(self) -> Deferred[None]:
        """Close the pool's idle connections."""
        if self._pool is None:
            return succeed(None)
        closing: Deferred[None] = self._pool.closeCachedConnections()
        return closing


class _Rejected(Exception):
    """The webhook answered with a status that is not tried again."""


class _Retryable(Exception):
    """The webhook answered with a status that is tried again."""


class ModerationWebhook(Service):
    """Delivers reports and flags to the moderation webhook and applies the verdicts it replies with.

    `on_verdict(subject, verdict)` is called with each "ban" verdict (a "none" verdict changes nothing); it may
    return a Deferred, which `stopService` waits for. Counters for metrics: `submitted`, `delivered`,
    `dropped` (the queue was full), `failed` (refused with a 4xx, or every attempt failed), `ignored` (replies
    that were not a verdict vchat understands), and `queued` (waiting now).
    """

    _log = Logger()

    def __init__(
        self,
        url: str,
        secret: str | bytes,
        clock: IReactorTime,
        client: IWebhookClient,
        on_verdict: OnVerdict,
        *,
        timeout_s: float = 10.0,
        queue_size: int = 1000,
        queue_bytes: int = 64 * 1024 * 1024,
        attempts: int = 8,
        first_backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
    ) -> None:
        if not secret:
            raise ValueError("the moderation webhook needs a secret")
        if timeout_s <= 0 or attempts < 1:
            raise ValueError("the webhook's timeout must be positive and it must try at least once")
        self.setName("moderation-webhook")
        self._url = url
        self._secret = secret
        self._clock = clock
        self._client = client
        self._on_verdict = on_verdict
        self._timeout_s = timeout_s
        self._attempts = attempts
        self._first_backoff_s = first_backoff_s
        self._max_backoff_s = max_backoff_s
        self._queue = DeliveryQueue(queue_size, queue_bytes)
        self._failures = ThrottledFailureLog(clock)
        self._current: Delivery | None = None
        self._failed_attempts = 0
        self._sending: Deferred[None] | None = None
        self._pumping = False
        self._retry: IDelayedCall | None = None
        self._applying: set[Deferred[Any]] = set()
        self._failing = False  # the last attempt failed: log again only when it recovers
        self._dropping = False  # items were dropped since the queue last emptied
        self.submitted = 0
        self.delivered = 0
        self.failed = 0
        self.ignored = 0

    @property
    def dropped(self) -> int:
        """Items dropped because the queue was full."""
        return self._queue.dropped

    @property
    def queued(self) -> int:
        """Items waiting (not counting the one being delivered)."""
        return len(self._queue)

    # --- submitting -------------------------------------------------------------------------------------

    def submit_report(self, report: Report, snapshot: Snapshot | None) -> None:
        """Queue a new report (with its snapshot) for delivery; returns at once."""
        self._submit(Delivery(report_subject(report), report_payload(report, snapshot)))

    def submit_flag(self, flag: Flag) -> None:
        """Queue an automatic rule's new flag for delivery; returns at once."""
        self._submit(Delivery(flag_subject(flag), flag_payload(flag)))

    def _submit(self, item: Delivery) -> None:
        self.submitted += 1
        if self._queue.push(item) and not self._dropping:
            self._dropping = True
            self._log.warn(
                "the moderation webhook's queue is full ({items} items, {bytes} bytes): dropping the oldest",
                items=len(self._queue),
                bytes=self._queue.bytes,
            )
        self._next()

    # --- the service ------------------------------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._next()

    def stopService(self) -> Deferred[None]:
        """Cancel the retry timer and the request in flight (its item is kept to be sent again on a restart)
        and close idle connections; fires once the verdicts being applied are done."""
        super().stopService()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._sending is not None:
            self._sending.cancel()
        waits: list[Deferred[Any]] = [*self._applying, self._client.close()]
        done: Deferred[Any] = DeferredList(waits, consumeErrors=True)
        return done.addCallback(lambda _: None)

    # --- delivering -------------------------------------------------------------------------------------

    def _next(self) -> None:
        """Start the next attempt, unless one is under way or waiting, or the service is stopped."""
        if self._pumping:
            return  # an attempt settled at once, inside the loop below, which goes on
        self._pumping = True
        try:
            while self.running and self._sending is None and self._retry is None:
                if self._current is None:
                    self._current = self._queue.pop()
                    self._failed_attempts = 0
                    if self._current is None:
                        self._dropping = False
                        return
                item = self._current
                self._sending = sending = Deferred.fromCoroutine(self._send(item))
                sending.addTimeout(self._timeout_s, self._clock)
                sending.addBoth(self._settled, item)
        finally:
            self._pumping = False

    async def _send(self, item: Delivery) -> None:
        now = int(self._clock.seconds())
        response = await self._client.post(self._url, item.body, headers_for(self._secret, now, item.body))
        try:
            reply = await read_body(response, MAX_VERDICT_BYTES)
        except BodyTooLarge:
            reply = None
        if 200 <= response.code <= 299:
            self._delivered(item, reply)
        elif retryable(response.code):
            raise _Retryable(f"HTTP {response.code}")
        else:
            raise _Rejected(f"HTTP {response.code}")

    def _settled(self, result: Failure | None, item: Delivery) -> None:
        self._sending = None
        if not self.running:
            return  # stopped: the item stays current, to be tried again on a restart
        try:
            if isinstance(result, Failure):
                self._attempt_failed(result, item)
            else:
                self._recovered()
                self._current = None
        except Exception:
            self._failures.failure("handling a moderation webhook delivery")
            self._current = None
        self._next()

    def _attempt_failed(self, failure: Failure, item: Delivery) -> None:
        if failure.check(_Rejected):
            self.failed += 1
            self._current = None
            self._log.warn(
                "the moderation webhook refused a {kind} ({why}): dropped, not tried again",
                kind=item.subject.kind,
                why=failure.getErrorMessage(),
            )
            return
        self._failed_attempts += 1
        if not self._failing:
            self._failing = True
            self._log.warn(
                "the moderation webhook is failing ({why}); retrying with backoff", why=_why(failure)
            )
        if self._failed_attempts >= self._attempts:
            self.failed += 1
            self._current = None
            self._log.warn(
                "a {kind} was not delivered to the moderation webhook after {attempts} attempts: dropped",
                kind=item.subject.kind,
                attempts=self._failed_attempts,
            )
            return
        delay = backoff(self._failed_attempts, self._first_backoff_s, self._max_backoff_s)
        self._retry = self._clock.callLater(delay, self._retry_now)

    def _retry_now(self) -> None:
        self._retry = None
        try:
            self._next()
        except Exception:
            self._failures.failure("retrying a moderation webhook delivery")

    def _recovered(self) -> None:
        if self._failing:
            self._failing = False
            self._log.info("the moderation webhook is delivering again")

    # --- verdicts ---------------------------------------------------------------------------------------

    def _delivered(self, item: Delivery, reply: bytes | None) -> None:
        self.delivered += 1
        subject = item.subject
        if reply is None:
            self._ignore(subject, f"the reply is longer than {MAX_VERDICT_BYTES} bytes")
            return
        try:
            verdict = parse_verdict(reply)
        except VerdictError as e:
            self._ignore(subject, str(e))
            return
        if verdict is None or verdict.action == "none":
            return
        try:
            applying = self._on_verdict(subject, verdict)
        except Exception:
            self._failures.failure("applying a moderation webhook verdict")
            return
        if isinstance(applying, Deferred):
            self._applying.add(applying)
            applying.addErrback(self._verdict_failed)
            applying.addBoth(self._applied, applying)

    def _ignore(self, subject: Subject, why: str) -> None:
        self.ignored += 1
        self._log.warn(
            "ignored the moderation webhook's reply to {kind} {id}: {why}",
            kind=subject.kind,
            id=subject.id,
            why=why,
        )

    def _verdict_failed(self, failure: Failure) -> None:
        self._log.failure("applying a moderation webhook verdict", failure)

    def _applied(self, result: object, applying: Deferred[Any]) -> None:
        self._applying.discard(applying)


def _why(failure: Failure) -> str:
    """A short account of a failed attempt, for the log (never the payload)."""
    if failure.check(TimeoutError, CancelledError):
        return "no answer in time"
    if failure.check(_Retryable):
        return failure.getErrorMessage()
    return f"{type(failure.value).__name__}: {failure.getErrorMessage()}"


# --- applying verdicts ----------------------------------------------------------------------------------


class IVerdictTarget(Protocol):
    """What applying a verdict needs of `ModerationService`."""

    def resolve_report(
        self,
        report_id: str,
        action: Any,
        duration_s: float | None = None,
        reason: str | None = None,
        source: BanSource = "moderator",
    ) -> Deferred[Report | None]:
        """Decide an open report."""

    def resolve_flag(
        self,
        flag_id: str,
        action: Any = "dismiss",
        duration_s: float | None = None,
        reason: str | None = None,
        category: Category = "other",
        source: BanSource = "moderator",
    ) -> Deferred[Flag | None]:
        """Decide an open flag."""


_log = Logger()


def apply_verdict(moderation: IVerdictTarget, subject: Subject, verdict: Verdict) -> Deferred[None]:
    """Apply a webhook's "ban" verdict with `moderation` (source "webhook"): a report is resolved with a ban
    (`resolve_report`); a flag is resolved with a ban of the flagged user id and device id (`resolve_flag`;
    category from the verdict, "other" by default). A report or flag resolved meanwhile (by a moderator) is
    left as it is."""
    if verdict.action != "ban":
        return succeed(None)
    resolving: Deferred[Any]
    if subject.kind == "report":
        resolving = moderation.resolve_report(
            subject.id, "ban", verdict.duration_s, verdict.reason, source="webhook"
        )
    else:
        resolving = moderation.resolve_flag(
            subject.id,
            "ban",
            verdict.duration_s,
            verdict.reason,
            verdict.category or "other",
            source="webhook",
        )

    def resolved_before(failure: Failure) -> None:
        failure.trap(AlreadyResolved)
        _log.info(
            "{kind} {id} was resolved before the webhook's verdict came", kind=subject.kind, id=subject.id
        )

    return resolving.addCallbacks(lambda _: None, resolved_before)
