"""`reuseport:PORT[:interface=ADDR][:backlog=N]`: a TCP server endpoint whose socket has `SO_REUSEPORT`, so that
several processes on one machine listen on the same port and the kernel spreads new connections among them
(docs/cluster.md, "Many processes on one machine")."""

from __future__ import annotations

import socket
from typing import Any, cast

from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorCore,
    IReactorSocket,
    IStreamServerEndpoint,
    IStreamServerEndpointStringParser,
)
from twisted.plugin import IPlugin
from zope.interface import implementer

DEFAULT_BACKLOG = 50  # as Twisted's tcp: endpoint


@implementer(IStreamServerEndpoint)
class ReusePortEndpoint:
    """A TCP server endpoint that binds with `SO_REUSEADDR` and `SO_REUSEPORT` and hands the listening socket to
    the reactor (`IReactorSocket.adoptStreamPort`)."""

    def __init__(
        self, reactor: IReactorCore, port: int, interface: str = "", backlog: int = DEFAULT_BACKLOG
    ) -> None:
        self._reactor = reactor
        self.port = port
        self.interface = interface
        self.backlog = backlog

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        """Listen with `protocolFactory`; a `CannotListenError` saying why if it cannot."""
        try:
            return succeed(self._listen(protocolFactory))
        except Exception:  # as Twisted's endpoints do: a failure of listen() comes in the Deferred
            return fail()

    def _listen(self, factory: IProtocolFactory) -> IListeningPort:
        if not IReactorSocket.providedBy(self._reactor):
            raise CannotListenError(
                self.interface, self.port, TypeError("reuseport: needs a reactor that can adopt sockets")
            )
        option = getattr(socket, "SO_REUSEPORT", None)
        if option is None:
            raise CannotListenError(
                self.interface, self.port, OSError("reuseport: this system has no SO_REUSEPORT")
            )
        family = socket.AF_INET6 if isIPv6Address(self.interface) else socket.AF_INET
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as e:
            raise CannotListenError(self.interface, self.port, e) from e
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, option, 1)
            sock.bind((self.interface, self.port))
            sock.listen(self.backlog)
            sock.setblocking(False)
            # The reactor takes a duplicate of the descriptor; ours is closed below either way.
            # adoptStreamPort is annotated for a ServerFactory; any IProtocolFactory serves, as for listenTCP.
            port: IListeningPort = cast(IReactorSocket, self._reactor).adoptStreamPort(
                sock.fileno(), family, cast(Any, factory)
            )
        except OSError as e:
            # EADDRINUSE here means a socket on this port without SO_REUSEPORT, or one of another user.
            raise CannotListenError(self.interface, self.port, e) from e
        finally:
            sock.close()
        return port

    def __repr__(self) -> str:
        return f"<ReusePortEndpoint port={self.port} interface={self.interface!r} backlog={self.backlog}>"


@implementer(IPlugin, IStreamServerEndpointStringParser)
class ReusePortParser:
    """The `reuseport:` prefix for `serverFromString`: `reuseport:8080`, `reuseport:8080:interface=127.0.0.1`,
    `reuseport:8080:interface=\\:\\::backlog=128`."""

    prefix = "reuseport"

    def parseStreamServer(self, reactor: IReactorCore, *args: object, **kwargs: object) -> ReusePortEndpoint:
        """The endpoint the string's arguments describe; `ValueError` saying what is wrong with them."""
        if len(args) + ("port" in kwargs) != 1:
            raise ValueError("reuseport: needs one port number, as in reuseport:8080")
        raw_port = str(args[0] if args else kwargs.pop("port"))
        interface = str(kwargs.pop("interface", ""))
        raw_backlog = str(kwargs.pop("backlog", DEFAULT_BACKLOG))
        if kwargs:
            raise ValueError(f"reuseport: unknown arguments: {', '.join(sorted(kwargs))}")
        port = _whole(raw_port, "port")
        if not 1 <= port <= 65535:
            # Port 0 would give each process a port of its own: nothing would be shared.
            raise ValueError(f"reuseport: port must be 1-65535, not {raw_port!r}")
        if interface and not (isIPAddress(interface) or isIPv6Address(interface)):
            raise ValueError(
                f"reuseport: interface must be an IPv4 or IPv6 address (IPv6 colons escaped, as "
                f"interface=\\:\\:), not {interface!r}"
            )
        backlog = _whole(raw_backlog, "backlog")
        if backlog < 1:
            raise ValueError(f"reuseport: backlog must be at least 1, not {raw_backlog!r}")
        return ReusePortEndpoint(reactor, port, interface, backlog)


def _whole(raw: str, name: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"reuseport: {name} must be a whole number, not {raw!r}") from None
