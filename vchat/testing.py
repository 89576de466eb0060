"""Test helpers others can import: a server on a loopback port, a real WebSocket client, an in-memory peer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlparse

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.application.service import MultiService
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from vchat.protocol.codec import CODECS, JSON, JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL, Codec
from vchat.protocol.session import IPeer
from vchat.tap import Options, makeService

CloseInfo = tuple[bool, int | None, str | None]


class SignalingClient(WebSocketClientProtocol):
    """One client connection that queues what the server sends, for tests to await in order."""

    factory: SignalingClientFactory

    def __init__(self) -> None:
        super().__init__()
        self.codec: Codec = JSON
        self.inbox: DeferredQueue[dict[str, Any]] = DeferredQueue()
        self.opened: Deferred[SignalingClient] = Deferred()
        self.closed: Deferred[CloseInfo] = Deferred()

    def onOpen(self) -> None:
        self.codec = CODECS.get(self.websocket_protocol_in_use or "", JSON)
        self.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.inbox.put(self.codec.decode(payload))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.opened.called:
            self.opened.errback(ConnectionError(f"WebSocket not opened: {reason}"))
        self.closed.callback((wasClean, code, reason))

    def send(self, message: dict[str, Any]) -> None:
        """Encode `message` with the negotiated codec and send it."""
        self.sendMessage(self.codec.encode(message), isBinary=self.codec.binary)

    async def receive(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next message from the server; `twisted.internet.defer.TimeoutError` after `timeout` s."""
        waiting = self.inbox.get()
        waiting.addTimeout(timeout, self.factory.clock)
        return await waiting

    async def expect(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next message, which must be of type `kind`."""
        message = await self.receive(timeout)
        if message.get("type") != kind:
            raise AssertionError(f"expected {kind!r}, got {message!r}")
        return message

    async def wait_closed(self, timeout: float = 5.0) -> CloseInfo:
        """The close (wasClean, code, reason), once the connection has closed."""
        self.closed.addTimeout(timeout, self.factory.clock)
        return await self.closed


class SignalingClientFactory(WebSocketClientFactory):
    """Makes `SignalingClient`s for one URL."""

    protocol = SignalingClient  # type: ignore[assignment]  # Autobahn's factory typing predates protocols

    def __init__(
        self,
        url: str,
        subprotocols: list[str] | None,
        clock: IReactorTime,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(url, protocols=subprotocols or [], headers=headers, reactor=clock)
        self.clock = clock


async def connect(
    reactor: Any, url: str, subprotocols: list[str] | None = None, headers: dict[str, str] | None = None
) -> SignalingClient:
    """Open a WebSocket to `url` (ws://host:port/path) offering `subprotocols`; returns the open client."""
    parsed = urlparse(url)
    factory = SignalingClientFactory(url, subprotocols, reactor, headers)
    endpoint = TCP4ClientEndpoint(reactor, parsed.hostname or "127.0.0.1", parsed.port or 80, timeout=5)
    client = cast(SignalingClient, await endpoint.connect(factory))
    return await client.opened


@implementer(IPeer)
class RecordingPeer:
    """An in-memory `IPeer` that records what the switchboard sends it, for tests without sockets."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.closed_with: tuple[int, str] | None = None

    def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def close(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)

    def types(self) -> list[str]:
        """The types of the messages sent so far."""
        return [message["type"] for message in self.sent]

    def take(self) -> list[dict[str, Any]]:
        """The messages sent since the last `take`."""
        sent, self.sent = self.sent, []
        return sent


@dataclass
class RunningServer:
    """A started vchat service tree and the URL of its WebSocket endpoint."""

    service: MultiService
    url: str
    reactor: Any

    async def client(
        self,
        codec: str = "json",
        hello: bool = False,
        headers: dict[str, str] | None = None,
        **fields: object,
    ) -> SignalingClient:
        """Connect a client with `codec` ("json", "msgpack" or "none"); optionally say hello."""
        offered = {"json": [JSON_SUBPROTOCOL], "msgpack": [MSGPACK_SUBPROTOCOL], "none": []}[codec]
        client = await connect(self.reactor, self.url, offered, headers)
        if hello:
            client.send({"type": "hello", "age_confirmed": True, "gender": "u", **fields})
            await client.expect("welcome")
        return client


async def start_server(reactor: Any, *args: str) -> RunningServer:
    """Start `twistd vchat`'s service tree in `reactor`, listening on an ephemeral loopback port.

    `args` are `twistd vchat` options; STUN is off unless they turn it on.
    """
    options = Options()
    options.parseOptions(["--ws", "tcp:0:interface=127.0.0.1", "--stun-udp", "0", *args])
    service = makeService(options, reactor)
    service.startService()
    port = await service.getServiceNamed("signaling").whenListening()
    return RunningServer(service, f"ws://127.0.0.1:{port.getHost().port}/ws", reactor)
