"""The signaling endpoint's HTTP side: the WebSocket at /ws and, unless turned off, the web client's files at /.

One port serves both, so that the page and its WebSocket share an origin: twisted.web parses each request, and a
request for /ws is handed, with its connection, to the Autobahn protocol (`WebSocketResource`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import cast

from autobahn.twisted.resource import WebSocketResource
from twisted.internet.interfaces import IConsumer
from twisted.web.http import Request
from twisted.web.resource import IResource, Resource
from twisted.web.server import Site

from vchat.jsonapi import LimitedRequest
from vchat.protocol.websocket import WEBSOCKET_PATH, SignalingFactory

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}
"""The types of the files the web client may have; a file of another kind is not served."""

_WEBSOCKET_PATH = WEBSOCKET_PATH.encode()

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self' ws: wss:; "
    "img-src 'self' data: blob:; media-src 'self' blob: mediastream:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'none'"
)
PAGE_HEADERS = (
    ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Permissions-Policy", "camera=(self), microphone=(self), geolocation=()"),
    # Revalidated at every load (a 304 when unchanged), so a new release is never mixed with cached old files.
    ("Cache-Control", "no-cache"),
)


@dataclass(frozen=True)
class StaticFile:
    """One file of the web client, read once: its bytes, type and entity tag."""

    body: bytes
    content_type: str
    etag: bytes


def web_client_files(directory: Traversable | None = None) -> dict[bytes, StaticFile]:
    """The web client's files by URL path (index.html also at /), read from `directory` (default: vchat/web)."""
    directory = directory if directory is not None else files("vchat") / "web"
    found: dict[bytes, StaticFile] = {}
    for entry in sorted(directory.iterdir(), key=lambda entry: entry.name):
        suffix = "." + entry.name.rpartition(".")[2]
        if not entry.is_file() or entry.name.startswith(".") or suffix not in CONTENT_TYPES:
            continue
        body = entry.read_bytes()
        etag = b'"' + hashlib.sha256(body).hexdigest()[:32].encode() + b'"'
        found[b"/" + entry.name.encode()] = StaticFile(body, CONTENT_TYPES[suffix], etag)
    if b"/index.html" in found:
        found[b"/"] = found[b"/index.html"]
    return found


class StaticFiles(Resource):
    """Serves a fixed set of files with their types, security headers and entity tags; a plain 404 otherwise."""

    isLeaf = True

    def __init__(self, served: dict[bytes, StaticFile]) -> None:
        super().__init__()
        self._served = served

    def render_GET(self, request: Request) -> bytes:
        served = self._served.get(request.path)
        if served is None:
            request.setResponseCode(404)
            request.setHeader("Content-Type", "text/plain; charset=utf-8")
            return b"not found\n"
        for name, value in PAGE_HEADERS:
            request.setHeader(name, value)
        request.setHeader("ETag", served.etag)
        if served.etag in (request.getHeader("if-none-match") or "").encode().split(b", "):
            request.setResponseCode(304)
            return b""
        request.setHeader("Content-Type", served.content_type)
        return served.body

    render_HEAD = render_GET

    def render(self, request: Request) -> bytes:
        if request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(405)
            request.setHeader("Allow", "GET, HEAD")
            request.setHeader("Content-Type", "text/plain; charset=utf-8")
            return b"method not allowed\n"
        rendered: bytes = super().render(request)
        return rendered


class _WebSocket(WebSocketResource):
    """Autobahn's resource, which hands the request's connection to the WebSocket protocol; first the HTTP channel
    stops being the connection's producer, so that the protocol can register its own."""

    def render(self, request: Request) -> bytes | int:
        transport = request.channel.transport if request.channel is not None else None
        if transport is not None:
            cast(IConsumer, transport).unregisterProducer()
        rendered: bytes | int = super().render(request)
        return rendered


class _Root(Resource):
    """/ws to the WebSocket; paths under a prefix of `routes` to its resource; every other path to the static
    files."""

    isLeaf = True

    def __init__(self, websocket: IResource, pages: IResource, routes: Mapping[bytes, IResource]) -> None:
        super().__init__()
        self._websocket = websocket
        self._pages = pages
        self._routes = dict(routes)

    def render(self, request: Request) -> bytes | int:
        path = request.path
        chosen = self._websocket if path == _WEBSOCKET_PATH else self._pages
        for prefix, resource in self._routes.items():
            if path.startswith(prefix):
                chosen = resource
        rendered: bytes | int = chosen.render(request)
        return rendered


class SignalingSite(Site):
    """The signaling endpoint's site. It logs no requests: a line per connection would name every visitor."""

    displayTracebacks = False

    def __init__(
        self, factory: SignalingFactory, web: bool = True, routes: Mapping[bytes, IResource] | None = None
    ) -> None:
        """`routes`: more resources, by the path prefix they serve (such as b"/auth/")."""
        pages = StaticFiles(web_client_files() if web else {})
        # timeout: how long an HTTP connection may idle without asking for the WebSocket.
        super().__init__(_Root(_WebSocket(factory), pages, routes or {}), timeout=60)
        self.requestFactory = LimitedRequest  # a route's request body is kept up to a limit (413 beyond)

    def log(self, request: Request) -> None:
        pass
