"""EndpointService: listening, waiting for it, failing to, and stopping, on endpoints the test controls."""

from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IProtocolFactory, IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactor, RaisingMemoryReactor
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from zope.interface import implementer
from zope.interface.verify import verifyObject

from vchat.listener import EndpointService, StartupGuard
from vchat.testing import result_of

FACTORY = Factory()


@implementer(IListeningPort)
class FakePort:
    """A listening port that notes in `events` when it is told to stop, and stops when the test says."""

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.stopping: Deferred[None] | None = None

    def startListening(self) -> None:
        """Already listening."""

    def stopListening(self) -> Deferred[None]:
        self.events.append("stop listening")
        self.stopping = Deferred()
        return self.stopping

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 8080)


@implementer(IStreamServerEndpoint)
class ControlledEndpoint:
    """An endpoint that listens, or fails to, when the test fires `listening`; notes whether it was cancelled."""

    def __init__(self) -> None:
        self.factory: IProtocolFactory | None = None
        self.listening: Deferred[IListeningPort] = Deferred(self._cancel)
        self.cancelled = False

    def _cancel(self, listening: Deferred[IListeningPort]) -> None:
        self.cancelled = True

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        self.factory = factory
        return self.listening


class ServiceUnderTest(EndpointService):
    """An `EndpointService` for `FACTORY` that counts its listen failures and notes when `closing` runs."""

    def __init__(self, endpoint: IStreamServerEndpoint, events: list[str] | None = None) -> None:
        super().__init__("test", endpoint, FACTORY, on_failure=self._count_failure)
        self.failures = 0
        self.events = events if events is not None else []

    def _count_failure(self) -> None:
        self.failures += 1

    def closing(self) -> None:
        self.events.append("closing")


def test_the_fakes_provide_their_interfaces() -> None:
    verifyObject(IListeningPort, FakePort([]))
    verifyObject(IStreamServerEndpoint, ControlledEndpoint())


def test_waiters_before_and_after_get_the_port() -> None:
    endpoint = ControlledEndpoint()
    service = ServiceUnderTest(endpoint)
    early = service.whenListening()
    service.startService()
    assert endpoint.factory is FACTORY and service.port is None and not early.called
    port = FakePort([])
    with capturedLogs() as events:
        endpoint.listening.callback(port)
    assert service.port is port
    assert result_of(early) is port and result_of(service.whenListening()) is port
    assert [formatEvent(event) for event in events] == [f"test on {port.getHost()}"]


def test_a_real_endpoint_in_a_memory_reactor() -> None:
    reactor = MemoryReactor()
    service = ServiceUnderTest(TCP4ServerEndpoint(reactor, 8080, interface="127.0.0.1"))
    service.startService()
    assert reactor.tcpServers == [(8080, FACTORY, 50, "127.0.0.1")]
    assert result_of(service.whenListening()) is service.port is not None
    stopped = service.stopService()  # its port's stopListening returns None
    assert result_of(stopped) is None and service.port is None and service.events == ["closing"]


def test_a_failure_to_listen_is_reported() -> None:
    reactor = RaisingMemoryReactor(listenException=CannotListenError("127.0.0.1", 8080, OSError("in use")))
    service = ServiceUnderTest(TCP4ServerEndpoint(reactor, 8080, interface="127.0.0.1"))
    early = service.whenListening()
    with capturedLogs() as events:
        service.startService()
    assert service.failures == 1 and service.port is None
    for waiter in (early, service.whenListening()):
        failure = result_of(waiter)
        assert isinstance(failure, Failure) and failure.check(CannotListenError)
    [event] = events
    assert formatEvent(event) == "test cannot listen" and event["log_failure"].check(CannotListenError)


def test_stopping_closes_then_stops_listening() -> None:
    endpoint, events = ControlledEndpoint(), []
    service = ServiceUnderTest(endpoint, events)
    service.startService()
    port = FakePort(events)
    endpoint.listening.callback(port)
    stopped = service.stopService()
    assert events == ["closing", "stop listening"]
    assert service.port is None and not service.running
    assert not stopped.called and port.stopping is not None
    port.stopping.callback(None)
    assert result_of(stopped) is None


def test_stopping_cancels_a_pending_listen() -> None:
    endpoint = ControlledEndpoint()
    service = ServiceUnderTest(endpoint)
    service.startService()
    stopped = service.stopService()
    assert endpoint.cancelled
    failure = result_of(service.whenListening())
    assert isinstance(failure, Failure) and failure.check(CancelledError)
    assert result_of(stopped) is None and service.events == ["closing"]


def test_stopping_during_a_pending_listen_is_no_failure() -> None:
    service = ServiceUnderTest(ControlledEndpoint())
    service.startService()
    with capturedLogs() as events:
        service.stopService()
    result_of(service.whenListening())
    assert service.failures == 0
    assert [event for event in events if "log_failure" in event] == []


def test_started_again_it_listens_again_and_reports_the_new_port() -> None:
    reactor = MemoryReactor()
    service = ServiceUnderTest(TCP4ServerEndpoint(reactor, 8080, interface="127.0.0.1"))
    service.startService()
    first = result_of(service.whenListening())
    result_of(service.stopService())
    service.startService()
    second = result_of(service.whenListening())
    assert second is service.port and second is not first
    assert len(reactor.tcpServers) == 2 and service.events == ["closing"]


def test_the_guard_stops_the_process_only_while_it_starts() -> None:
    reactor = MemoryReactor()
    reactor.running = True
    guard = StartupGuard(reactor)
    guard.started()
    guard.failed()  # an operator's start: theirs to handle
    assert not reactor.hasStopped
    starting = StartupGuard(reactor)
    starting.failed()
    assert reactor.hasStopped
