"""Reading an HTTP response's body with a cap on its size, for vchat's HTTP clients (the login providers, the
moderation webhook): nothing an outside server sends is read into memory without a bound, and a body that is
too long, or no longer wanted, has its connection dropped rather than drained."""

from __future__ import annotations

from typing import cast

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IResponse


class BodyTooLarge(Exception):
    """A response body was longer than the limit it was read with."""


class _CappedBody(Protocol):
    """Collects a response body up to `limit` bytes; drops the connection beyond it or when cancelled."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._chunks: list[bytes] = []
        self._size = 0
        self.done: Deferred[bytes] = Deferred(lambda _: self._abort())

    def _abort(self) -> None:
        producer = cast(IPushProducer | None, self.transport)  # a response body's transport is a producer
        if producer is not None:
            producer.stopProducing()

    def dataReceived(self, data: bytes) -> None:
        if self.done.called:
            return
        self._size += len(data)
        if self._size > self._limit:
            self._abort()
            self.done.errback(BodyTooLarge())
            return
        self._chunks.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.done.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self._chunks))
        else:
            self.done.errback(reason)


def read_body(response: IResponse, limit: int) -> Deferred[bytes]:
    """The body of `response`; `BodyTooLarge` if it is longer than `limit` bytes. Going beyond the limit, or
    cancelling the Deferred, drops the connection."""
    if response.length == 0:
        return succeed(b"")
    reader = _CappedBody(limit)
    response.deliverBody(reader)
    return reader.done
