"""The admin service, named "admin": the admin API and the moderator page on a private endpoint."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib.resources import files

from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory
from twisted.web.http import Request
from twisted.web.server import Site

from vchat.admin.token import AdminToken, BearerToken, TokenError
from vchat.jsonapi import Call, JsonApi, LimitedRequest, Reply, Route, Router
from vchat.listener import EndpointService

PAGE_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
"""The moderator page's files (in vchat/admin/page/), served without a token: they hold no data."""


def page_routes() -> list[Route]:
    """Routes serving the moderator page's static files, read once from the package."""
    page = files("vchat.admin") / "page"
    return [
        Route(
            "GET",
            path,
            _StaticFile(Reply((page / name).read_bytes(), content_type, cache="no-cache")),
            public=True,
        )
        for path, (name, content_type) in PAGE_FILES.items()
    ]


class _StaticFile:
    """A route handler answering with one file's bytes."""

    def __init__(self, reply: Reply) -> None:
        self._reply = reply

    def __call__(self, call: Call) -> Reply:
        call.reject_query()
        return self._reply


class AdminSite(Site):
    """The admin site: request bodies are bounded, and only requests that change something are logged."""

    requestFactory = LimitedRequest
    displayTracebacks = False
    _log = Logger()

    def log(self, request: Request) -> None:
        if request.method not in (b"GET", b"HEAD"):
            self._log.info(
                "admin {method} {path}: {code}",
                method=request.method.decode("latin-1"),
                path=request.path.decode("latin-1"),
                code=request.code,
            )


class AdminService(EndpointService):
    """Serves `routes` and the moderator page on `endpoint`; every route not public needs the admin token.

    The token comes from `token_source` when the service starts (it may create the token file); a token that
    cannot be had is reported and `on_failure` runs, as for a port that cannot be listened on.
    """

    _log = Logger()

    def __init__(
        self,
        endpoint: IStreamServerEndpoint,
        routes: Sequence[Route],
        token_source: Callable[[], AdminToken],
        on_failure: Callable[[], object],
    ) -> None:
        self._bearer = BearerToken()
        self._token_source = token_source
        # Wrapped, so that the open connections (keep-alive ones too) are known and closed when it stops.
        self._connections = WrappingFactory(
            AdminSite(JsonApi(Router([*routes, *page_routes()]), self._bearer.guard))
        )
        super().__init__("admin", endpoint, self._connections, on_failure)

    def closing(self) -> None:
        for connection in list(self._connections.protocols):
            connection.transport.loseConnection()

    def startService(self) -> None:
        try:
            token = self._token_source()
        except TokenError as e:
            self._log.error("the admin API cannot start: {error}", error=str(e))
            self._on_failure()
            return
        self._bearer.set(token.value)
        if token.path is not None:
            self._log.info("admin API token in {path}", path=str(token.path))
        else:
            self._log.info("admin API token from the {source}", source=token.source)
        super().startService()
