"""Test helpers others can import: a server on a loopback port and a real WebSocket client; an in-memory peer;
and the signaling endpoint on a driven clock, with clients connected to it in memory."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import urlparse

import treq
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.application.service import MultiService
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, DeferredQueue, succeed
from twisted.internet.endpoints import TCP4ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IReactorTime, IStreamClientEndpoint
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.test.iosim import FakeTransport, IOPump
from twisted.test.iosim import connect as pump_between
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent
from zope.interface import implementer

from vchat.addresses import Network
from vchat.admin.token import TOKEN_FILE
from vchat.geo import ICountryLookup
from vchat.ice import IcePolicy
from vchat.matching import MatchingEngine
from vchat.moderation.rules import IModerationRule
from vchat.moderation.service import ModerationService
from vchat.protocol.bans import IBanCheck
from vchat.protocol.codec import CODECS, JSON, JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL, Codec
from vchat.protocol.session import IPeer
from vchat.protocol.switchboard import Switchboard
from vchat.protocol.websocket import ClockTimers, ConnectionLimits, SignalingFactory, SignalingProtocol
from vchat.reactors import IServerReactor
from vchat.store.interface import IStore
from vchat.store.service import StoreService
from vchat.tap import Options, makeService

CloseInfo = tuple[bool, int | None, str | None]
Message = dict[str, Any]
_T = TypeVar("_T")

OFFERED: dict[str, list[str]] = {"json": [JSON_SUBPROTOCOL], "msgpack": [MSGPACK_SUBPROTOCOL], "none": []}
"""The subprotocols a test client offers, by codec name ("none" offers none, and gets JSON)."""


def result_of(deferred: Deferred[_T]) -> _T | Failure:
    """What `deferred` has fired with, taking it (a failure counts as handled); AssertionError if not fired yet."""
    results: list[_T | Failure] = []
    deferred.addBoth(results.append)
    if not results:
        raise AssertionError(f"{deferred!r} has not fired")
    return results[0]


def fired(deferred: Deferred[_T]) -> _T:
    """What `deferred` has fired with; a failure is raised. AssertionError if it has not fired yet."""
    result = result_of(deferred)
    if isinstance(result, Failure):
        result.raiseException()
    return result


def hello_message(**fields: object) -> Message:
    """A valid `hello` (age confirmed, gender "u"), with `fields` added or replaced."""
    return {"type": "hello", "age_confirmed": True, "gender": "u", **fields}


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

    async def hello(self, **fields: object) -> dict[str, Any]:
        """Say hello (`hello_message(**fields)`); returns the `welcome`."""
        self.send(hello_message(**fields))
        return await self.expect("welcome")

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
        origin: str | None = None,
    ) -> None:
        super().__init__(url, origin=origin, protocols=subprotocols or [], headers=headers, reactor=clock)
        self.clock = clock


async def connect(
    reactor: IServerReactor,
    url: str,
    subprotocols: list[str] | None = None,
    headers: dict[str, str] | None = None,
    tls: IOpenSSLClientConnectionCreator | None = None,
    origin: str | None = None,
) -> SignalingClient:
    """Open a WebSocket to `url` (ws:// or, with `tls`, wss://host:port/path) offering `subprotocols`, sending
    `origin` as `Origin` if given; returns the open client."""
    parsed = urlparse(url)
    factory = SignalingClientFactory(url, subprotocols, reactor, headers, origin)
    endpoint: IStreamClientEndpoint = TCP4ClientEndpoint(
        reactor, parsed.hostname or "127.0.0.1", parsed.port or 80, timeout=5
    )
    if tls is not None:
        endpoint = wrapClientTLS(tls, endpoint)
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
    """A started vchat service tree and the URL of its WebSocket endpoint.

    `data_dir` is its data directory; `owns_data_dir` says whether `start_server` made it (a temporary one),
    and so whether `stop` removes it."""

    service: MultiService
    url: str
    reactor: IServerReactor
    data_dir: str
    owns_data_dir: bool = True
    admin_url: str | None = None  # http://127.0.0.1:PORT, unless started with --admin none

    @property
    def admin_token(self) -> str:
        """The admin API's token: the one generated into the data directory (see `start_server`)."""
        return (Path(self.data_dir) / TOKEN_FILE).read_text().strip()

    async def stop(self) -> None:
        """Stop the service tree, and remove its data directory if `start_server` made it."""
        await self.service.stopService()
        if self.owns_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    @property
    def moderation(self) -> ModerationService:
        """The service tree's moderation service (bans, reports)."""
        return cast(ModerationService, self.service.getServiceNamed("moderation"))

    def store(self) -> Deferred[IStore]:
        """Fires with the service tree's open store."""
        return cast(StoreService, self.service.getServiceNamed("store")).whenOpen()

    async def client(
        self,
        codec: str = "json",
        hello: bool = False,
        headers: dict[str, str] | None = None,
        origin: str | None = None,
        **fields: object,
    ) -> SignalingClient:
        """Connect a client with `codec` ("json", "msgpack" or "none"), sending `origin` if given; optionally say
        hello with `fields`."""
        client = await connect(self.reactor, self.url, OFFERED[codec], headers, origin=origin)
        if hello:
            client.send(hello_message(**fields))
            await client.expect("welcome")
        return client

    async def matched_pair(
        self, first: str = "json", second: str = "json"
    ) -> tuple[SignalingClient, SignalingClient, Message, Message]:
        """A woman (codec `first`) and a man (`second`) who searched and were matched:
        (offerer, answerer, the offerer's `matched`, the answerer's)."""
        offerer = await self.client(first, hello=True, gender="f")
        answerer = await self.client(second, hello=True, gender="m")
        for client in (offerer, answerer):
            client.send({"type": "search"})
            await client.expect("searching")
        return offerer, answerer, await offerer.expect("matched"), await answerer.expect("matched")


async def start_server(reactor: IServerReactor, *args: str) -> RunningServer:
    """Start `twistd vchat`'s service tree in `reactor`, listening on an ephemeral loopback port.

    `args` are `twistd vchat` options; STUN is off unless they turn it on, and the data directory is a fresh
    temporary one that `RunningServer.stop` removes, unless `args` name one with `--data-dir` (kept at stop).
    """
    temporary = tempfile.mkdtemp(prefix="vchat-test-")
    options = Options()
    try:
        options.parseOptions(
            [
                "--ws",
                "tcp:0:interface=127.0.0.1",
                "--stun-udp",
                "0",
                "--admin",
                "tcp:0:interface=127.0.0.1",
                "--data-dir",
                temporary,
                *args,
            ]
        )
    except BaseException:
        os.rmdir(temporary)
        raise
    data_dir: str = options["data-dir"]
    owned = data_dir == temporary
    if not owned:
        os.rmdir(temporary)  # still empty: the store has not opened it
    service = makeService(options, reactor)
    service.startService()
    port = await service.getServiceNamed("signaling").whenListening()
    url = f"ws://127.0.0.1:{port.getHost().port}/ws"
    admin_url = None
    if options["admin"] is not None:
        admin_port = await service.getServiceNamed("admin").whenListening()
        scheme = "https" if options["admin"].startswith("ssl:") else "http"
        admin_url = f"{scheme}://127.0.0.1:{admin_port.getHost().port}"
    return RunningServer(service, url, reactor, data_dir, owned, admin_url)


_SERVER_ADDRESS = IPv4Address("TCP", "127.0.0.1", 8080)


class MemoryServer:
    """The signaling endpoint and its switchboard on a `MemoryReactorClock`, with clients connected in memory.

    Nothing waits: every client action carries bytes both ways until nothing moves, and `advance` fires the
    timers in turn, carrying bytes after each, so a test sees at once what a client would have had by then.
    """

    def __init__(
        self,
        limits: ConnectionLimits | None = None,
        resume_grace: float = 15.0,
        ice: IcePolicy | None = None,
        countries: ICountryLookup | None = None,
        trusted_proxies: tuple[Network, ...] = (),
        bans: IBanCheck | None = None,
        store: IStore | None = None,
        rules: Sequence[IModerationRule] = (),
    ) -> None:
        """`bans` is asked at every hello; or, with `store` (one whose Deferreds fire at once, such as
        `MemoryStore`), a started `ModerationService` on it is (as `moderation`), which also stores reports
        and runs the automatic moderation `rules`."""
        self.clock = MemoryReactorClock()
        self.switchboard = Switchboard(self.clock, MatchingEngine(), resume_grace, ice)
        self.moderation: ModerationService | None = None
        if store is not None:
            stores = StoreService(lambda: succeed(store), self.clock, on_failure=lambda: None)
            self.moderation = bans = ModerationService(stores, self.switchboard, self.clock, rules=rules)
            stores.startService()
            self.moderation.startService()
        self.factory = SignalingFactory(
            self.switchboard,
            limits or ConnectionLimits(),
            self.clock,
            countries,
            trusted_proxies,
            bans,
            reports=self.moderation,
        )
        self._clients: list[MemoryClient] = []

    def connect(
        self,
        subprotocols: list[str],
        path: str = "/ws",
        address: str = "127.0.0.1",
        headers: dict[str, str] | None = None,
    ) -> MemoryClient:
        """Open a WebSocket at `path` from `address` (the TCP peer the server sees), offering `subprotocols` and
        sending `headers`; `ConnectionError` when the server refuses it."""
        factory = SignalingClientFactory(f"ws://localhost{path}", subprotocols, self.clock, headers)
        factory._batched_timer = ClockTimers(self.clock)
        peer = (IPv6Address if ":" in address else IPv4Address)("TCP", address, 50000)
        server = cast(SignalingProtocol, self.factory.buildProtocol(peer))
        client = cast(SignalingClient, factory.buildProtocol(_SERVER_ADDRESS))
        pump = pump_between(
            server,
            FakeTransport(server, True, _SERVER_ADDRESS, peer),
            client,
            FakeTransport(client, False, peer, _SERVER_ADDRESS),
            greet=False,
            clock=self.clock,
        )
        connection = MemoryClient(self, client, server, pump)
        self._clients.append(connection)
        self.flush()
        opened = result_of(client.opened)
        if isinstance(opened, Failure):
            opened.raiseException()
        return connection

    def client(self, codec: str = "json", hello: bool = False, **fields: object) -> MemoryClient:
        """Connect a client with `codec` ("json", "msgpack" or "none"); optionally say hello with `fields`."""
        client = self.connect(OFFERED[codec])
        if hello:
            client.hello(**fields)
        return client

    def matched_pair(
        self, first: str = "json", second: str = "json"
    ) -> tuple[MemoryClient, MemoryClient, Message, Message]:
        """A woman (codec `first`) and a man (`second`) who searched and were matched:
        (offerer, answerer, the offerer's `matched`, the answerer's)."""
        offerer = self.client(first, hello=True, gender="f")
        answerer = self.client(second, hello=True, gender="m")
        for client in (offerer, answerer):
            client.send({"type": "search"})
            client.expect("searching")
        return offerer, answerer, offerer.expect("matched"), answerer.expect("matched")

    def flush(self) -> None:
        """Run what is due now and carry bytes and closes both ways, until nothing moves."""
        for _ in range(10_000):
            self.clock.advance(0)
            moved = [client._carry() for client in self._clients]  # a list: every connection gets its turn
            self._clients = [client for client in self._clients if not client._finished()]
            if not any(moved):
                return
        raise AssertionError("the connections never went quiet")

    def advance(self, seconds: float) -> None:
        """Let `seconds` pass: each timer fires at its time, and the connections are flushed after each."""
        end = self.clock.seconds() + seconds
        self.flush()
        while True:
            step = min([end, *(call.getTime() for call in self.clock.getDelayedCalls())])
            self.clock.advance(step - self.clock.seconds())
            self.flush()
            if step >= end:
                return


class MemoryClient:
    """A `SignalingClient` connected to a `MemoryServer`: whatever the server sent has already arrived.

    `peer` is the server's side of the connection; `closed` is (wasClean, code, reason) once it has closed.
    """

    def __init__(
        self, server: MemoryServer, protocol: SignalingClient, peer: SignalingProtocol, pump: IOPump
    ) -> None:
        self.protocol = protocol
        self.peer = peer
        self.closed: CloseInfo | None = None
        self._server = server
        self._pump = pump
        self._cut = False
        protocol.closed.addCallback(self._closed_with)

    def _closed_with(self, info: CloseInfo) -> CloseInfo:
        self.closed = info
        return info

    def send(self, message: Message) -> None:
        """Send `message` with the negotiated codec, and let the server act on it."""
        self.protocol.send(message)
        self._server.flush()

    def send_frame(self, data: bytes, binary: bool = False) -> None:
        """Send `data` as one WebSocket message (text unless `binary`), and let the server act on it."""
        self.protocol.sendMessage(data, isBinary=binary)
        self._server.flush()

    def hello(self, **fields: object) -> Message:
        """Say hello (`hello_message(**fields)`); returns the `welcome`."""
        self.send(hello_message(**fields))
        return self.expect("welcome")

    def received(self) -> list[Message]:
        """The messages not looked at yet, oldest first."""
        arrived, self.protocol.inbox.pending = self.protocol.inbox.pending, []
        return arrived

    def expect(self, kind: str) -> Message:
        """The oldest message not looked at yet, which must be of type `kind`."""
        pending = self.protocol.inbox.pending
        if not pending:
            raise AssertionError(f"expected {kind!r}, got nothing")
        message = pending.pop(0)
        if message.get("type") != kind:
            raise AssertionError(f"expected {kind!r}, got {message!r}")
        return message

    def close(self, code: int = 1000) -> None:
        """Close cleanly, with a close frame, and let the server act on it."""
        self.protocol.sendClose(code)
        self._server.flush()

    def drop(self) -> None:
        """End the connection without a close frame, as a phone that loses its network does."""
        self._pump.clientIO.abortConnection()
        self._server.flush()

    def cut(self) -> None:
        """Lose every byte either way from now on, while both ends still think they are connected."""
        self._cut = True

    def _carry(self) -> bool:
        """Move bytes and closes one step; on a cut connection the bytes are lost, and each end learns only of
        its own close. Whether anything moved."""
        if not self._cut:
            return bool(self._pump.pump(advanceClock=False))
        moved = False
        for end in (self._pump.serverIO, self._pump.clientIO):
            end.getOutBuffer()
            if end.disconnecting and not end.disconnected:
                end.disconnected = True
                end.reportDisconnect()
                moved = True
        return moved

    def _finished(self) -> bool:
        return bool(self._pump.serverIO.disconnected and self._pump.clientIO.disconnected)


@dataclass(frozen=True)
class AdminResponse:
    """An admin API answer: status, headers (names lower-case, last value) and body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


_DEFAULT_TOKEN = object()


async def admin_request(
    server: RunningServer,
    method: str,
    path: str,
    json_body: object = None,
    *,
    token: object = _DEFAULT_TOKEN,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    agent: IAgent | None = None,
) -> AdminResponse:
    """Send one request to `server`'s admin API with its token (or `token`: a string, or None for none), a
    JSON body or raw `body` bytes, through `agent` if given (for HTTPS with a test certificate); the whole
    answer."""
    assert server.admin_url is not None, "the server was started with --admin none"
    sent = {"Content-Type": "application/json"} if json_body is not None else {}
    chosen = server.admin_token if token is _DEFAULT_TOKEN else token
    if chosen is not None:
        sent["Authorization"] = f"Bearer {chosen}"
    sent.update(headers or {})
    data = json.dumps(json_body).encode() if json_body is not None else body
    response = await treq.request(
        method,
        server.admin_url + path,
        data=data,
        headers=Headers({name: [value] for name, value in sent.items()}),
        reactor=cast(Any, server.reactor),
        persistent=False,
        agent=agent,
    )
    content: bytes = await response.content()
    received = {
        name.decode().lower(): values[-1].decode() for name, values in response.headers.getAllRawHeaders()
    }
    return AdminResponse(response.code, received, content)


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A key and a self-signed certificate for 127.0.0.1, as PEM files in `directory`: (key, cert)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vchat test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)  # its own trust root
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = directory / "key.pem", directory / "cert.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path
