"""STUN over UDP: one thin DatagramProtocol per bound address; the responder decides, this only moves bytes."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime, IUDPTransport
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from vchat.stun.counters import StunCounters
from vchat.stun.limiter import SourceLimiter
from vchat.stun.responder import Address, Reply, Responder

SendTo = Callable[[bytes, Address], object]

# Room for bursts: the kernel caps these at net.core.rmem_max / wmem_max.
SOCKET_BUFFER_BYTES = 4 * 1024 * 1024


class StunDatagramProtocol(DatagramProtocol):
    """Answers the STUN requests that reach one local address and port.

    `senders` is shared by every listener of a service, keyed by local address: RFC 5780's CHANGE-REQUEST
    makes a reply leave from another listener's socket. `counters` counts the requests answered and dropped.
    """

    _log = Logger()
    transport: IUDPTransport

    def __init__(
        self,
        responder: Responder,
        clock: IReactorTime,
        limiter: SourceLimiter | None = None,
        senders: dict[Address, SendTo] | None = None,
        counters: StunCounters | None = None,
    ) -> None:
        self._respond: Callable[[bytes, Address, Address], Reply | None] = responder.respond
        self._seconds = clock.seconds
        self._limiter = limiter
        self._senders: dict[Address, SendTo] = {} if senders is None else senders
        self._sendto: SendTo | None = None
        self.counters = StunCounters() if counters is None else counters
        self.local: Address = ("", 0)

    def set_responder(self, responder: Responder) -> None:
        """Answer with `responder` from now on (the service knows RFC 5780 ports only once all are bound)."""
        self._respond = responder.respond

    def startProtocol(self) -> None:
        host = self.transport.getHost()
        self.local = (host.host, host.port)
        handle = getattr(self.transport, "getHandle", None)
        sock = handle() if handle is not None else None
        if isinstance(sock, socket.socket):
            for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)
            # The socket's own sendto: Port.write re-validates the address on every call, and the source
            # address here always came from this very socket.
            self._sendto = sock.sendto
        else:
            self._sendto = self.transport.write
        self._senders[self.local] = self.send

    def stopProtocol(self) -> None:
        if self._senders.get(self.local) == self.send:
            del self._senders[self.local]

    def datagramReceived(self, datagram: bytes, addr: Address) -> None:
        try:
            limiter = self._limiter
            if limiter is not None and not limiter.allow(addr[0], self._seconds()):
                self.counters.dropped += 1
                return
            local = self.local
            reply = self._respond(datagram, addr, local)
            if reply is None:
                self.counters.dropped += 1
                return
            if reply[1] is local:
                self._sendto(reply[0], addr)  # type: ignore[misc]
                self.counters.answered += 1
                return
            send = self._senders.get(reply[1])
            if send is not None:
                send(reply[0], addr)
                self.counters.answered += 1
        except OSError:
            pass  # sending failed: a full buffer, an unreachable peer. It's UDP: the client retransmits.
        except Exception:
            self._log.failure("STUN datagram from {source} on {local} failed", source=addr, local=self.local)

    def send(self, payload: bytes, addr: Address) -> None:
        """Send `payload` to `addr` from this listener; a full buffer or unreachable peer drops it (it's UDP)."""
        sendto = self._sendto
        if sendto is None:
            return
        with contextlib.suppress(OSError):
            sendto(payload, addr)
