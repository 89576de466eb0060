"""Web origins: the normal form and the allowlist check, and `--allowed-origin` at the handshake over loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import LogEvent, capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.python.usage import UsageError

from vchat.bot.behaviour import BotSettings
from vchat.bot.fleet import BotFleet, LoadRun
from vchat.origins import origin_allowed, web_origin
from vchat.tap import Options, makeService
from vchat.testing import RunningServer, start_server

SITE = "https://chat.example.org"

# --- the normal form ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("https://chat.example.org", SITE),
        ("HTTPS://Chat.Example.ORG", SITE),
        ("https://chat.example.org:443", SITE),
        ("  https://chat.example.org  ", SITE),
        ("http://LOCALHOST:80", "http://localhost"),
        ("http://localhost:8080", "http://localhost:8080"),
        ("https://chat.example.org:80", "https://chat.example.org:80"),
        ("http://192.0.2.1:8080", "http://192.0.2.1:8080"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("http://[::1]:80", "http://[::1]"),
        ("https://[2001:DB8:0:0::1]", "https://[2001:db8::1]"),
        ("https://xn--bcher-kva.example", "https://xn--bcher-kva.example"),
    ],
)
def test_origins_are_normalised(raw: str, normal: str) -> None:
    assert web_origin(raw) == normal


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "null",
        "chat.example.org",
        "ftp://chat.example.org",
        "file://",
        "https://",
        "https://chat.example.org/",
        "https://chat.example.org/path",
        "https://chat.example.org?query",
        "https://chat.example.org#part",
        "https://user@chat.example.org",
        "https://chat.example.org:",
        "https://chat.example.org:0",
        "https://chat.example.org:65536",
        "https://chat.example.org:+80",
        "https://chat.example.org:\uff18\uff10",  # full-width digits
        "https://chat.example.org:80:80",
        "http://::1",
        "http://[::1",
        "http://[]",
        "http://[not-v6]:80",
        "http://[::1]x",
        "http://chat example.org",
        "https://bücher.example",
        None,
        8080,
    ],
)
def test_what_is_not_an_origin_is_refused(raw: object) -> None:
    with pytest.raises(ValueError):
        web_origin(raw)


def test_an_empty_allowlist_allows_any_origin_and_none() -> None:
    for origin in (SITE, "https://evil.example", "null", "", None):
        assert origin_allowed(origin, frozenset())


def test_an_allowlist_allows_exactly_its_origins() -> None:
    allowed = frozenset({SITE, "http://localhost:8080"})
    for origin in (SITE, "https://CHAT.example.org:443", "http://localhost:8080"):
        assert origin_allowed(origin, allowed)
    for origin in (
        "http://chat.example.org",  # another scheme
        "https://chat.example.org:8443",  # another port
        "http://localhost",
        "https://example.org",
        "https://chat.example.org.evil.example",
        "null",
        "https://chat.example.org/",
        "",
        None,
    ):
        assert not origin_allowed(origin, allowed), origin


# --- at the handshake, over loopback -----------------------------------------------------------------------


class _StatusLine(Protocol):
    """Reads the first line of an HTTP response, then hangs up."""

    def __init__(self) -> None:
        self.received = b""
        self.line: Deferred[str] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if b"\r\n" in self.received and not self.line.called:
            self.line.callback(self.received.partition(b"\r\n")[0].decode("latin-1"))
            self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.line.called:
            self.line.callback(self.received.decode("latin-1"))


async def handshake_status(url: str, origin: str | None) -> str:
    """The status line of the response to a WebSocket upgrade request at `url`, with `Origin: origin` if given."""
    parsed = urlparse(url)
    assert parsed.hostname is not None and parsed.port is not None
    reader = _StatusLine()
    await connectProtocol(TCP4ClientEndpoint(reactor, parsed.hostname, parsed.port, timeout=5), reader)
    head = [
        f"GET {parsed.path} HTTP/1.1",
        f"Host: {parsed.netloc}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        *([f"Origin: {origin}"] if origin is not None else []),
    ]
    assert reader.transport is not None
    reader.transport.write("".join(line + "\r\n" for line in head).encode() + b"\r\n")
    reader.line.addTimeout(5, reactor)
    return await reader.line


@pytest_twisted.async_yield_fixture()
async def guarded() -> AsyncIterator[RunningServer]:
    """A server that lets in only pages of `SITE`, and two connections from one address."""
    running = await start_server(reactor, "--allowed-origin", SITE, "--max-connections-per-ip", "2")
    yield running
    await running.stop()


@pytest_twisted.ensureDeferred
async def test_an_allowed_origin_is_let_in(guarded: RunningServer) -> None:
    assert (await handshake_status(guarded.url, SITE)).startswith("HTTP/1.1 101 ")
    client = await guarded.client(origin="https://CHAT.example.org:443")  # the same origin, written otherwise
    assert (await client.hello())["type"] == "welcome"


@pytest.mark.parametrize(
    "origin",
    [
        None,  # no Origin at all
        "https://evil.example",
        "https://chat.example.org:8443",  # only the port differs
        "http://chat.example.org",  # only the scheme differs
        "null",  # a sandboxed page or a file
        "https://chat.example.org/chat",  # not an origin
        "ftp://chat.example.org",
    ],
)
@pytest_twisted.ensureDeferred
async def test_other_origins_are_refused_with_403(guarded: RunningServer, origin: str | None) -> None:
    assert (await handshake_status(guarded.url, origin)).startswith("HTTP/1.1 403 ")
    with pytest.raises(ConnectionError, match="403"):
        await guarded.client(origin=origin)


@pytest_twisted.ensureDeferred
async def test_an_origin_autobahn_cannot_parse_is_refused_with_400(guarded: RunningServer) -> None:
    assert (await handshake_status(guarded.url, "https://[chat.example.org")).startswith("HTTP/1.1 400 ")


@pytest_twisted.ensureDeferred
async def test_refused_handshakes_take_no_place_of_the_per_address_cap(guarded: RunningServer) -> None:
    for _ in range(5):
        assert (await handshake_status(guarded.url, "https://evil.example")).startswith("HTTP/1.1 403 ")
    for _ in range(2):
        assert (await (await guarded.client(origin=SITE)).hello())["type"] == "welcome"
    assert (await handshake_status(guarded.url, SITE)).startswith("HTTP/1.1 429 ")  # the cap still holds
    assert (await handshake_status(guarded.url, "https://evil.example")).startswith("HTTP/1.1 403 ")


@pytest_twisted.ensureDeferred
async def test_by_default_any_origin_and_none_are_let_in(server: RunningServer) -> None:
    for origin in (None, SITE, "https://evil.example", "null"):
        assert (await handshake_status(server.url, origin)).startswith("HTTP/1.1 101 ")
    assert (await (await server.client(origin="https://evil.example")).hello())["type"] == "welcome"


def _origin_warnings(events: list[LogEvent]) -> list[str]:
    texts = [formatEvent(event) for event in events]
    return [text for text in texts if "--allowed-origin" in text]


@pytest_twisted.ensureDeferred
async def test_starting_without_an_allowlist_warns_once() -> None:
    with capturedLogs() as events:
        running = await start_server(reactor)
        await running.stop()
    assert len(_origin_warnings(events)) == 1
    with capturedLogs() as events:
        running = await start_server(reactor, "--allowed-origin", SITE)
        await running.stop()
    assert _origin_warnings(events) == []


@pytest.mark.parametrize(("origin", "connected"), [(SITE, 2), (None, 0)])
@pytest_twisted.ensureDeferred
async def test_the_bot_sends_its_origin(guarded: RunningServer, origin: str | None, connected: int) -> None:
    fleet = BotFleet(
        reactor,
        guarded.url,
        settings=BotSettings(dwell_min=0.2, dwell_max=0.4, ping_interval=0.2, search_timeout=1.0),
        seed=1,
        origin=origin,
    )
    report = await LoadRun(fleet, clients=2, duration=1.0).run()
    assert report["connected"] == connected
    assert report["errors"] == 0


def test_the_option_is_normalised_and_reaches_the_factory(tmp_path: Path) -> None:
    options = Options()
    options.parseOptions(
        ["--allowed-origin", "HTTPS://Chat.Example.org:443", "--allowed-origin", "http://[::1]:8080"]
    )
    assert options["allowed-origin"] == [SITE, "http://[::1]:8080"]
    factory = makeService(options, reactor).getServiceNamed("signaling").factory
    assert factory.allowed_origins == frozenset({SITE, "http://[::1]:8080"})
    config = tmp_path / "vchat.toml"
    config.write_text('allowed_origin = ["https://chat.example.org:8443"]\n')
    from_file = Options()
    from_file.parseOptions(["--config", str(config)])
    assert from_file["allowed-origin"] == ["https://chat.example.org:8443"]
    with pytest.raises(UsageError, match="--allowed-origin"):
        Options().parseOptions(["--allowed-origin", "https://chat.example.org/"])
