"""A bot's WebSocket connection: a thin Autobahn client protocol that decodes frames for its bot and encodes replies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, cast

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.util import parse_url
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IAddress,
    IReactorTCP,
    IReactorTime,
    IStreamClientEndpoint,
    ITCPTransport,
)
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from vchat.protocol.codec import JSON, MSGPACK, Codec
from vchat.protocol.errors import CloseCode, ProtocolError

#: The codecs by the names `vchat-bot --codec` takes and the report shows.
CODECS_BY_NAME: dict[str, Codec] = {"json": JSON, "msgpack": MSGPACK}


class IClientReactor(IReactorTCP, IReactorTime):
    """What bot connections need: outgoing TCP connections and timers."""


class Link(Protocol):
    """What a bot needs from its connection: send a message, or close."""

    def send(self, message: dict[str, Any]) -> None:
        """Send one message."""

    def close(self) -> None:
        """Close cleanly (a WebSocket close frame), or drop the connection if it is not open yet."""


class Peer(Protocol):
    """What a connection tells the bot it carries."""

    def on_open(self, link: Link) -> None:
        """The WebSocket is open."""

    def on_message(self, message: dict[str, Any]) -> None:
        """A message arrived."""

    def on_bad_frame(self) -> None:
        """A frame arrived that the codec cannot decode."""

    def on_lost(self, link: Link, code: int | None) -> None:
        """The connection is gone, with this close code if any."""


class BotProtocol(WebSocketClientProtocol):
    """One bot's WebSocket connection: decodes frames for the bot and encodes what it sends."""

    _log = Logger()
    factory: BotClientFactory

    def __init__(self, bot: Peer) -> None:
        super().__init__()
        self.bot = bot

    def connectionMade(self) -> None:
        self.factory.connections.add(self)
        super().connectionMade()

    def onOpen(self) -> None:
        try:
            self.bot.on_open(self)
        except Exception:
            self._log.failure("bot on_open")

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        try:
            try:
                message = self.factory.codec.decode(payload)
            except ProtocolError:
                self.bot.on_bad_frame()
            else:
                self.bot.on_message(message)
        except Exception:
            self._log.failure("bot on_message")

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        try:
            self.bot.on_lost(self, code)
        except Exception:
            self._log.failure("bot on_lost")

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        try:
            super().connectionLost(reason)  # calls onClose
        finally:
            self.factory.connection_lost(self)

    def send(self, message: dict[str, Any]) -> None:
        """Encode and send one message if the WebSocket is open."""
        if self.state == self.STATE_OPEN:
            codec = self.factory.codec
            self.sendMessage(codec.encode(message), isBinary=codec.binary)

    def close(self) -> None:
        """Send a close frame if open; otherwise drop the connection."""
        if self.state == self.STATE_OPEN:
            self.sendClose(code=CloseCode.NORMAL.value)  # Autobahn wants exactly an int
        elif self.state != self.STATE_CLOSED and self.transport is not None:
            cast(ITCPTransport, self.transport).abortConnection()


class BotClientFactory(WebSocketClientFactory):
    """What every connection of a fleet shares (URL, `Origin`, codec, timeouts, endpoint), and the connections open
    now."""

    protocol = BotProtocol  # type: ignore[assignment]  # Autobahn's factory typing predates protocols

    def __init__(
        self,
        reactor: IClientReactor,
        url: str,
        codec: Codec,
        *,
        connect_timeout: float,
        on_lost: Callable[[], None],
        origin: str | None = None,
    ) -> None:
        super().__init__(
            url=url, origin=origin, protocols=[codec.subprotocol], useragent="vchat-bot", reactor=reactor
        )
        self.setProtocolOptions(
            openHandshakeTimeout=connect_timeout,
            closeHandshakeTimeout=5,
            serverConnectionDropTimeout=5,
            autoPingInterval=0,
        )
        self.codec = codec
        self.connections: set[BotProtocol] = set()
        self._on_lost = on_lost
        self._endpoint = _endpoint(reactor, url, connect_timeout)

    def connect(self, bot: Peer) -> Deferred[Link]:
        """Open a connection for `bot`: fires with it once TCP is up; `bot.on_open` follows the handshake."""
        protocol = BotProtocol(bot)
        protocol.factory = self
        connecting = self._endpoint.connect(_Handoff(protocol))
        return connecting.addCallback(lambda _: protocol)

    def connection_lost(self, protocol: BotProtocol) -> None:
        """A connection's TCP is gone; the bot has heard."""
        self.connections.discard(protocol)
        self._on_lost()


class _Handoff(Factory):
    """Hands one already built protocol to an endpoint."""

    noisy = False

    def __init__(self, protocol: BotProtocol) -> None:
        self._protocol = protocol

    # Twisted types factories for protocols whose `factory` is a Twisted `Factory`; ours is Autobahn's
    def buildProtocol(self, addr: IAddress | None) -> BotProtocol:  # type: ignore[override]
        return self._protocol


def _endpoint(reactor: IClientReactor, url: str, timeout: float) -> IStreamClientEndpoint:
    secure, host, port, _resource, _path, _params = parse_url(url)
    endpoint: IStreamClientEndpoint
    if isIPAddress(host):
        endpoint = TCP4ClientEndpoint(reactor, host, port, timeout=timeout)
    elif isIPv6Address(host):
        endpoint = TCP6ClientEndpoint(reactor, host, port, timeout=timeout)
    else:
        endpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
    if secure:
        from twisted.internet.ssl import optionsForClientTLS  # needs pyOpenSSL: only for wss://

        endpoint = wrapClientTLS(optionsForClientTLS(host), endpoint)
    return endpoint
