"""Services that own the lifecycle of vchat's listeners."""

from __future__ import annotations

from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IListeningPort, IReactorCore, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from vchat.protocol.websocket import SignalingFactory
from vchat.resources import raise_open_files_limit


def stop_running(reactor: IReactorCore) -> None:
    """Stop the reactor if it runs: what twistd's services do when they cannot start."""
    if reactor.running:
        reactor.stop()


class SignalingService(Service):
    """Listens for signaling WebSockets; on stop, closes every session and the port.

    `on_failure` runs when the endpoint cannot listen (twistd passes a function that stops the process).
    """

    _log = Logger()

    def __init__(
        self, endpoint: IStreamServerEndpoint, factory: SignalingFactory, on_failure: Callable[[], object]
    ) -> None:
        self.setName("signaling")
        self._endpoint = endpoint
        self._factory = factory
        self._on_failure = on_failure
        self._port: IListeningPort | None = None
        self._failure: Failure | None = None
        self._starting: Deferred[IListeningPort] | None = None
        self._waiters: list[Deferred[IListeningPort]] = []

    def startService(self) -> None:
        super().startService()
        limit = raise_open_files_limit()
        self._log.info("open files limit {limit}", limit=limit)
        self._starting = self._endpoint.listen(self._factory)
        self._starting.addCallbacks(self._listening, self._failed)

    def _listening(self, port: IListeningPort) -> None:
        self._starting = None
        self._port = port
        self._log.info("signaling on {address}", address=port.getHost())
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(port)

    def _failed(self, failure: Failure) -> None:
        self._starting = None
        self._failure = failure
        self._log.failure("cannot listen for signaling", failure)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.errback(failure)
        self._on_failure()

    def whenListening(self) -> Deferred[IListeningPort]:
        """Fires with the listening port once the service listens, or fails as listening failed."""
        waiter: Deferred[IListeningPort] = Deferred()
        if self._port is not None:
            waiter.callback(self._port)
        elif self._failure is not None:
            waiter.errback(self._failure)
        else:
            self._waiters.append(waiter)
        return waiter

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._starting is not None:
            self._starting.cancel()
        self._factory.switchboard.shutdown()
        port, self._port = self._port, None
        if port is None:
            return succeed(None)
        return maybeDeferred(port.stopListening)
