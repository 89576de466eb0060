"""The signaling endpoint's HTTP side over real sockets: the web client's files at /, the WebSocket at /ws."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater

from vchat.protocol.codec import JSON_SUBPROTOCOL
from vchat.protocol.site import CONTENT_SECURITY_POLICY, web_client_files
from vchat.testing import RunningServer, start_server

WEB = Path(__file__).resolve().parent.parent / "vchat" / "web"


def http_url(server: RunningServer, path: str) -> str:
    return server.url.replace("ws://", "http://").removesuffix("/ws") + path


def test_the_files_are_read_with_their_types_and_tags(tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<!doctype html><title>x</title>")
    (tmp_path / "app.js").write_text("export {};")
    (tmp_path / ".hidden.js").write_text("secret")
    (tmp_path / "notes.md").write_text("not served")
    (tmp_path / "sub").mkdir()
    files = web_client_files(tmp_path)  # type: ignore[arg-type]
    assert set(files) == {b"/", b"/index.html", b"/app.js"}
    assert files[b"/"] is files[b"/index.html"]
    assert files[b"/app.js"].content_type == "text/javascript; charset=utf-8"
    assert files[b"/index.html"].etag != files[b"/app.js"].etag
    assert (
        web_client_files(tmp_path)[b"/app.js"].etag == files[b"/app.js"].etag
    )  # the same bytes, the same tag


def test_the_shipped_client_is_all_served() -> None:
    files = web_client_files()
    shipped = {b"/" + path.name.encode() for path in WEB.iterdir() if path.is_file()}
    assert b"/index.html" in files and shipped <= set(files)


@pytest_twisted.ensureDeferred
async def test_the_page_is_served_with_its_headers_and_revalidated(server: RunningServer) -> None:
    response = await treq.get(http_url(server, "/"), persistent=False)
    body = await response.content()
    assert response.code == 200 and body == (WEB / "index.html").read_bytes()
    headers = response.headers
    assert headers.getRawHeaders("content-type") == ["text/html; charset=utf-8"]
    assert headers.getRawHeaders("content-security-policy") == [CONTENT_SECURITY_POLICY]
    assert headers.getRawHeaders("x-content-type-options") == ["nosniff"]
    assert headers.getRawHeaders("cache-control") == ["no-cache"]
    [etag] = headers.getRawHeaders("etag")
    again = await treq.get(http_url(server, "/index.html"), headers={"If-None-Match": etag}, persistent=False)
    assert again.code == 304 and await again.content() == b""
    head = await treq.head(http_url(server, "/"), persistent=False)
    assert head.code == 200 and await head.content() == b""


@pytest.mark.parametrize(
    "path", ["/nope.js", "/index.html/x", "/../pyproject.toml", "/%2e%2e/README.md", "/ws/x"]
)
@pytest_twisted.ensureDeferred
async def test_other_paths_are_404(server: RunningServer, path: str) -> None:
    response = await treq.get(http_url(server, path), persistent=False)
    assert response.code == 404 and await response.content() == b"not found\n"


@pytest_twisted.ensureDeferred
async def test_only_reading_methods(server: RunningServer) -> None:
    response = await treq.post(http_url(server, "/"), data=b"x", persistent=False)
    assert response.code == 405


@pytest_twisted.ensureDeferred
async def test_no_web_serves_only_the_websocket() -> None:
    server = await start_server(reactor, "--no-web")
    try:
        response = await treq.get(http_url(server, "/"), persistent=False)
        assert response.code == 404
        client = await server.client(hello=True)
        client.sendClose()
        await client.wait_closed()
    finally:
        await server.stop()


class RawHttp(Protocol):
    """Collects what the server sends."""

    def __init__(self) -> None:
        self.received = b""
        self.waiting: tuple[bytes, Deferred[bytes]] | None = None

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self._check()

    def until(self, marker: bytes) -> Deferred[bytes]:
        done: Deferred[bytes] = Deferred()
        self.waiting = (marker, done)
        self._check()
        return done.addTimeout(5, reactor)

    def _check(self) -> None:
        if self.waiting is not None and self.waiting[0] in self.received:
            marker, done = self.waiting
            self.waiting = None
            head, _, self.received = self.received.partition(marker)
            done.callback(head + marker)


@pytest_twisted.ensureDeferred
async def test_a_connection_that_fetched_the_page_may_then_open_the_websocket(server: RunningServer) -> None:
    port = int(server.url.split(":")[2].split("/")[0])
    raw = RawHttp()
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), raw)
    raw.transport.write(b"GET /index.html HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head = await raw.until(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    length = int(
        next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))[15:]
    )
    while len(raw.received) < length:
        await deferLater(reactor, 0.01)
    raw.received = raw.received[length:]
    key = base64.b64encode(os.urandom(16))
    raw.transport.write(
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: " + JSON_SUBPROTOCOL.encode() + b"\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\n\r\n"
    )
    upgraded = await raw.until(b"\r\n\r\n")
    assert upgraded.startswith(b"HTTP/1.1 101")
    assert len(server.service.getServiceNamed("signaling").factory.connections_per_address) == 1
    raw.transport.loseConnection()
