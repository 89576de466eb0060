"""The generic listener service: a stream endpoint and a factory, started and stopped with the process or by
an operator; and what a service's failure to start means (`StartupGuard`)."""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IReactorCore, IStreamServerEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from vchat.outcome import Outcome


def stop_listening(port: IListeningPort) -> Deferred[None]:
    """A Deferred that fires when `port` has stopped listening."""
    stopped = port.stopListening()
    return stopped if stopped is not None else succeed(None)


def stop_running(reactor: IReactorCore) -> None:
    """Stop the reactor, or have it stop as soon as it runs: what twistd's services do when they cannot start
    (twistd starts them before its reactor counts as running, and a UDP or TCP port fails at once)."""
    if reactor.running:
        reactor.stop()
    else:
        reactor.callWhenRunning(reactor.stop)


_exit_failed_registered = False


def exit_failed_at_end() -> None:
    """Make the process end with exit status 1: twistd exits with 0 whatever stopped its reactor, and a service
    manager (systemd's `Restart=on-failure`) must see a start that failed as a failure. For twistd only: it
    ends the interpreter with `os._exit` once everything else has run."""
    global _exit_failed_registered
    if not _exit_failed_registered:
        _exit_failed_registered = True
        atexit.register(_exit_failed)


def _exit_failed() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


class StartupGuard:
    """What a service that cannot start means: while the process starts, it stops the process (as twistd's
    services do); once an operator starts services at runtime, it is the operator's to handle, and the process
    keeps running. Its `failed` is the services' `on_failure`."""

    def __init__(self, reactor: IReactorCore, exit_status: bool = False) -> None:
        self._reactor = reactor
        self._exit_status = exit_status  # twistd: a failed start also makes the exit status 1
        self.starting = True

    def started(self) -> None:
        """Start-up is over: an operator is starting a service, and hears of its failure."""
        self.starting = False

    def failed(self) -> None:
        """A service cannot start: stop the process if it is starting."""
        if self.starting:
            if self._exit_status:
                exit_failed_at_end()
            stop_running(self._reactor)


class EndpointService(Service):
    """Listens on a stream endpoint with a factory; on stop, runs `closing` and stops listening. It may be
    started again, and then listens again on the same endpoint.

    `on_failure` runs when the endpoint cannot listen (twistd passes a `StartupGuard`'s `failed`).
    """

    _log = Logger()

    def __init__(
        self,
        name: str,
        endpoint: IStreamServerEndpoint,
        factory: IProtocolFactory,
        on_failure: Callable[[], object],
    ) -> None:
        self.setName(name)
        self._endpoint = endpoint
        self._factory = factory
        self._on_failure = on_failure
        self.port: IListeningPort | None = None
        self._starting: Deferred[IListeningPort] | None = None
        self._listening_outcome: Outcome[IListeningPort] = Outcome()

    def startService(self) -> None:
        super().startService()
        if self._listening_outcome.settled:  # started again: wait for this listening
            self._listening_outcome = Outcome()
        self._starting = self._endpoint.listen(self._factory)
        self._starting.addCallbacks(self._listening, self._failed)

    def _listening(self, port: IListeningPort) -> None:
        self._starting = None
        self.port = port
        self._log.info("{name} on {address}", name=self.name, address=port.getHost())
        self._listening_outcome.fire(port)

    def _failed(self, failure: Failure) -> None:
        self._starting = None
        if failure.check(CancelledError) and not self.running:
            self._listening_outcome.fire(failure)  # stopped before it listened: nothing failed
            return
        self._log.failure("{name} cannot listen", failure, name=self.name)
        self._on_failure()
        self._listening_outcome.fire(failure)

    def whenListening(self) -> Deferred[IListeningPort]:
        """Fires with the listening port once the service listens, or fails as listening failed (since its
        latest start)."""
        return self._listening_outcome.observe()

    def closing(self) -> None:
        """Close what the factory holds open; called when the service stops."""

    def stopService(self) -> Deferred[None]:
        super().stopService()
        if self._starting is not None:
            self._starting.cancel()
        self.closing()
        port, self.port = self.port, None
        return succeed(None) if port is None else stop_listening(port)
