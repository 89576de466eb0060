"""The STUN service: owns the UDP listeners (one per local address) and the optional TCP listener."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python.failure import Failure

from vchat.listener import EndpointService, stop_listening
from vchat.reactors import IStunReactor
from vchat.stun.config import StunConfig
from vchat.stun.counters import StunCounters
from vchat.stun.host_addresses import host_addresses
from vchat.stun.limiter import SourceLimiter
from vchat.stun.responder import MAX_REQUEST_BYTES, Address, AddressPair, Responder
from vchat.stun.tcp import StunStreamFactory
from vchat.stun.udp import SendTo, StunDatagramProtocol

_WILDCARDS = ("0.0.0.0", "::")


@dataclass
class StunListening:
    """Where the STUN service listens: every UDP (address, port), and the TCP port if any."""

    udp: list[Address] = field(default_factory=list)
    tcp: IListeningPort | None = None


class UdpStunService(Service):
    """Binds each local address separately, so that every reply leaves from where its request arrived.

    Started again after a stop, it binds the ports it had, even those the OS chose (port 0): clients were told them.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: IStunReactor,
        config: StunConfig,
        limiter: SourceLimiter | None,
        on_failure: Callable[[], object],
        counters: StunCounters,
    ) -> None:
        self.setName("stun-udp")
        self._reactor = reactor
        self._config = config
        self._limiter = limiter
        self._counters = counters
        self._on_failure = on_failure
        self._ports: list[IListeningPort] = []
        self._senders: dict[Address, SendTo] = {}
        self.addresses: list[Address] = []
        self.failure: Failure | None = None
        self._bound: dict[str, int] = {}  # the ports of the first start, by role ("primary", "alternate")

    def startService(self) -> None:
        super().startService()
        self.failure = None
        config = self._config
        explicit = config.interfaces is not None
        interfaces = list(config.interfaces) if config.interfaces is not None else (host_addresses() or [])
        fallback = not interfaces
        if fallback:
            self._log.warn("cannot list this host's addresses; STUN listens on the wildcard address")
            interfaces = ["::", "0.0.0.0"]  # the second only where '::' is not there (no IPv6)
            explicit = False
        if any(a in _WILDCARDS for a in interfaces):
            self._log.warn(
                "STUN on a wildcard address: on a multi-homed host replies may leave from another one"
            )
        primary = config.primary_address()
        port = config.udp_port or 0
        alternate_port = config.alternate[1] if config.alternate else 0
        plan: list[tuple[str, str]] = [(a, "primary") for a in interfaces]
        if config.alternate is not None and primary is not None:
            plan += [
                (primary, "alternate"),
                (config.alternate[0], "primary"),
                (config.alternate[0], "alternate"),
            ]
        chosen = {"primary": port, "alternate": alternate_port, **self._bound}
        protocols: list[StunDatagramProtocol] = []
        responder = Responder(config.software)
        for address, which in dict.fromkeys(plan):
            if fallback and address == "0.0.0.0" and self._ports:
                continue  # '::' is dual-stack
            protocol = StunDatagramProtocol(
                responder, self._reactor, self._limiter, self._senders, self._counters
            )
            try:
                listening = self._reactor.listenUDP(
                    chosen[which], protocol, interface=address, maxPacketSize=MAX_REQUEST_BYTES + 4
                )
            except CannotListenError:
                failure = Failure()
                if explicit or which != "primary":
                    self._fail(failure)
                    return
                self._log.warn(
                    "STUN cannot listen on {address}: {error}", address=address, error=failure.value
                )
                continue
            self._ports.append(listening)
            protocols.append(protocol)
            chosen[which] = chosen[which] or protocol.local[1]
            self.addresses.append(protocol.local)
        if not self._ports:
            self._fail(Failure(CannotListenError(None, port, "no address to listen on")))
            return
        self._bound = chosen
        if config.alternate is not None and primary is not None:
            pair = AddressPair((primary, chosen["primary"]), (config.alternate[0], chosen["alternate"]))
            responder = Responder(config.software, pair)
            for protocol in protocols:
                protocol.set_responder(responder)
        self._log.info("STUN over UDP on {addresses}", addresses=", ".join(_show(a) for a in self.addresses))

    def _fail(self, failure: Failure) -> None:
        self.failure = failure
        self._log.failure("cannot listen for STUN over UDP", failure)
        self._stop_ports()
        self._on_failure()

    def _stop_ports(self) -> Deferred[Any]:
        ports, self._ports = self._ports, []
        self.addresses = []
        return gatherResults([stop_listening(port) for port in ports], consumeErrors=True)

    def stopService(self) -> Deferred[Any]:
        super().stopService()
        return self._stop_ports()


class TcpStunService(EndpointService):
    """Listens for STUN over TCP on a Twisted endpoint; on stop, closes the port and every connection."""

    def __init__(
        self,
        reactor: IStunReactor,
        config: StunConfig,
        limiter: SourceLimiter | None,
        on_failure: Callable[[], object],
        counters: StunCounters,
    ) -> None:
        assert config.tcp_endpoint is not None
        self._stream_factory = StunStreamFactory(
            Responder(config.software), reactor, limiter, config.tcp_idle_timeout, counters
        )
        endpoint = serverFromString(reactor, config.tcp_endpoint)
        super().__init__("stun-tcp", endpoint, self._stream_factory, on_failure)

    def closing(self) -> None:
        for connection in list(self._stream_factory.connections):
            connection.transport.loseConnection()


class StunService(MultiService):
    """The STUN responder, named "stun": a UDP child ("stun-udp") and a TCP child ("stun-tcp") as configured.

    Stopped, it closes every port and TCP connection; started again, it listens where it did (UDP on the
    very ports, TCP on its endpoint). `on_failure` runs when a listener cannot listen (twistd passes a
    `StartupGuard`'s `failed`); `counters` counts the requests both children answer and drop.
    """

    def __init__(
        self, reactor: IStunReactor, config: StunConfig, on_failure: Callable[[], object] | None = None
    ) -> None:
        super().__init__()
        self.setName("stun")
        self.config = config
        self.counters = StunCounters()  # shared by both children, and kept across a stop and restart
        failed = on_failure if on_failure is not None else _ignore
        limiter = SourceLimiter(config.rate, config.burst, reactor.seconds()) if config.rate > 0 else None
        if config.udp_port is not None:
            UdpStunService(reactor, config, limiter, failed, self.counters).setServiceParent(self)
        if config.tcp_endpoint is not None:
            TcpStunService(reactor, config, limiter, failed, self.counters).setServiceParent(self)

    def whenListening(self) -> Deferred[StunListening]:
        """Fires once every listener listens, with where; fails if one cannot."""
        return Deferred.fromCoroutine(self._listening())

    async def _listening(self) -> StunListening:
        listening = StunListening()
        for child in self:
            if isinstance(child, UdpStunService):
                if child.failure is not None:
                    child.failure.raiseException()
                listening.udp = list(child.addresses)
            elif isinstance(child, TcpStunService):
                listening.tcp = await child.whenListening()
        return listening


def _show(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _ignore() -> None:
    pass
