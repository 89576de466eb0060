"""STUN over TCP (or TLS): RFC 8489 framing, where each message's header says how long it is."""

from __future__ import annotations

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress, IReactorTime, ITCPTransport
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from vchat.stun.counters import StunCounters
from vchat.stun.limiter import SourceLimiter
from vchat.stun.responder import MAX_REQUEST_BYTES, Address, Responder


class StunStreamProtocol(Protocol, TimeoutMixin):
    """Answers the STUN requests on one connection; closes it on anything that breaks the framing."""

    _log = Logger()
    factory: StunStreamFactory
    transport: ITCPTransport

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._source: Address = ("", 0)
        self._local: Address = ("", 0)

    def connectionMade(self) -> None:
        peer, host = self.transport.getPeer(), self.transport.getHost()
        if not isinstance(peer, (IPv4Address, IPv6Address)) or not isinstance(
            host, (IPv4Address, IPv6Address)
        ):
            self._log.warn("STUN over TCP needs IP addresses, not {peer}", peer=peer)
            self.transport.loseConnection()
            return
        self._source = (peer.host, peer.port)
        self._local = (host.host, host.port)
        self.factory.connections.add(self)
        self.callLater = self.factory.clock.callLater  # type: ignore[assignment]
        self.setTimeout(self.factory.idle_timeout)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.setTimeout(None)
        self.factory.connections.discard(self)

    def timeoutConnection(self) -> None:
        self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        self.resetTimeout()
        self._buffer += data
        try:
            self._answer()
        except Exception:
            self._log.failure("STUN over TCP from {source} failed", source=self._source)
            self.transport.abortConnection()

    def _answer(self) -> None:
        buffer = self._buffer
        offset = 0
        factory = self.factory
        counters = factory.counters
        while len(buffer) - offset >= 20:
            length = buffer[offset + 2] << 8 | buffer[offset + 3]
            total = 20 + length
            if buffer[offset] & 0xC0 or length & 3 or total > MAX_REQUEST_BYTES:
                # Not STUN, or more than any request we answer: the framing is lost.
                self.transport.loseConnection()
                buffer.clear()
                return
            if len(buffer) - offset < total:
                break
            message = bytes(buffer[offset : offset + total])
            offset += total
            limiter = factory.limiter
            if limiter is not None and not limiter.allow(self._source[0], factory.clock.seconds()):
                counters.dropped += 1
                continue
            reply = factory.responder.respond(message, self._source, self._local)
            if reply is None:
                counters.dropped += 1
            else:
                self.transport.write(reply[0])
                counters.answered += 1
        del buffer[:offset]


class StunStreamFactory(ServerFactory):
    """Shares the responder, the limiter, the clock and the counters among STUN connections, and knows them
    all."""

    def __init__(
        self,
        responder: Responder,
        clock: IReactorTime,
        limiter: SourceLimiter | None = None,
        idle_timeout: float = 30.0,
        counters: StunCounters | None = None,
    ) -> None:
        self.responder = responder
        self.clock = clock
        self.limiter = limiter
        self.idle_timeout = idle_timeout
        self.counters = StunCounters() if counters is None else counters
        self.connections: set[StunStreamProtocol] = set()

    def buildProtocol(self, addr: IAddress | None) -> StunStreamProtocol:  # type: ignore[override]
        protocol = StunStreamProtocol()
        protocol.factory = self
        return protocol
