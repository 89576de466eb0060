"""A small JSON API on twisted.web: routes by method and path, a guard that admits requests, and errors that are
always JSON. The admin API (with a bearer token) and a user's own routes (with the login cookie) use it.

Every answer, error or not, is a JSON body (or the bytes a route gives, such as an image or the metrics text);
no request, however malformed, gets a traceback or an HTML error page.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

MAX_BODY_BYTES = 64 * 1024
"""The largest request body read; a larger one gets 413."""

JSON_TYPE = "application/json"

SECURITY_HEADERS = (
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Content-Security-Policy", "default-src 'self'; img-src 'self' blob:; frame-ancestors 'none'"),
)


class ApiError(Exception):
    """A request the API refuses: becomes `{"error": {"code", "message"}}` with `status`."""

    def __init__(self, status: int, code: str, message: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = tuple(headers)


def bad_request(message: str) -> ApiError:
    """A 400: the request's parameters or body are not what the route takes."""
    return ApiError(400, "bad_request", message)


def not_found(what: str) -> ApiError:
    """A 404 for an unknown id or route."""
    return ApiError(404, "not_found", f"no such {what}")


@dataclass(frozen=True)
class Reply:
    """A route's answer: bytes of a content type, with a status."""

    body: bytes
    content_type: str
    status: int = 200
    cache: str = "no-store"


def json_reply(value: object, status: int = 200) -> Reply:
    """`value` as a JSON answer."""
    return Reply(json.dumps(value, separators=(",", ":")).encode(), JSON_TYPE, status)


def _error_reply(error: ApiError) -> Reply:
    return json_reply({"error": {"code": error.code, "message": error.message}}, error.status)


@dataclass
class Call:
    """One request as a route's handler sees it: path parameters, query, body, and its headers and cookies."""

    params: dict[str, str]
    query: Mapping[bytes, list[bytes]]
    body: bytes
    content_type: str | None
    request: Request | None = None

    def header(self, name: str) -> str | None:
        """A request header's value, or None."""
        value = None if self.request is None else self.request.getHeader(name)
        return None if value is None else value.decode("latin-1") if isinstance(value, bytes) else value

    def cookie(self, name: str) -> str | None:
        """A cookie's value, or None."""
        value = None if self.request is None else self.request.getCookie(name.encode())
        return None if value is None else value.decode("ascii", "replace")

    def json(self, allowed: Sequence[str]) -> dict[str, Any]:
        """The body as a JSON object holding only `allowed` keys; an empty body is `{}`. ApiError otherwise."""
        if not self.body.strip():
            return {}
        if self.content_type is not None and self.content_type.split(";")[0].strip().lower() != JSON_TYPE:
            raise ApiError(415, "unsupported_media_type", f"send the body as {JSON_TYPE}")
        try:
            value = json.loads(self.body, parse_constant=_refuse_constant)
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            raise bad_request(f"the body is not valid JSON: {e}") from None
        if not isinstance(value, dict):
            raise bad_request("the body must be a JSON object")
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            raise bad_request(f"unknown fields: {', '.join(unknown)}; this route takes {', '.join(allowed)}")
        return value

    def query_value(self, name: str, choices: Sequence[str], default: str) -> str:
        """The query parameter `name`, one of `choices` (`default` when absent)."""
        values = self.query.get(name.encode(), [])
        if not values:
            return default
        value = values[-1].decode("utf-8", "replace")
        if len(values) > 1 or value not in choices:
            raise bad_request(f"{name} must be one of {', '.join(choices)}")
        return value

    def query_int(self, name: str, default: int, low: int, high: int) -> int:
        """The whole-number query parameter `name`, from `low` to `high` (`default` when absent)."""
        values = self.query.get(name.encode(), [])
        if not values:
            return default
        text = values[-1].decode("utf-8", "replace")
        if len(values) > 1 or not text.isascii() or not text.isdigit() or len(text) > len(str(high)):
            raise bad_request(f"{name} must be a whole number from {low} to {high}")
        if not low <= int(text) <= high:
            raise bad_request(f"{name} must be a whole number from {low} to {high}")
        return int(text)

    def reject_query(self, allowed: Sequence[str] = ()) -> None:
        """Refuse query parameters other than `allowed`."""
        unknown = sorted(
            key.decode("utf-8", "replace") for key in self.query if key.decode("latin-1") not in allowed
        )
        if unknown:
            raise bad_request(f"unknown query parameters: {', '.join(unknown)}")


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


Answer = Reply | dict[str, Any] | Awaitable[Reply | dict[str, Any]]
Handler = Callable[[Call], Answer]


@dataclass(frozen=True)
class Route:
    """`method` on `pattern` (segments, `{name}` for a parameter) answered by `handler`; `public`: its guard
    lets anyone in (the admin API's health check)."""

    method: str
    pattern: str
    handler: Handler
    public: bool = False
    segments: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "segments", tuple(self.pattern.strip("/").split("/")) if self.pattern != "/" else ("",)
        )

    def match(self, segments: Sequence[str]) -> dict[str, str] | None:
        """The path parameters if `segments` fit the pattern, else None."""
        if len(segments) != len(self.segments):
            return None
        params: dict[str, str] = {}
        for mine, theirs in zip(self.segments, segments, strict=True):
            if mine.startswith("{"):
                if not theirs:
                    return None
                params[mine[1:-1]] = theirs
            elif mine != theirs:
                return None
        return params


class Router:
    """Finds the route for a method and path: 404 for no such path, 405 for a path without that method."""

    def __init__(self, routes: Sequence[Route]) -> None:
        self.routes = tuple(routes)

    def find(self, method: str, path: bytes) -> tuple[Route, dict[str, str]]:
        segments = _segments(path)
        allowed: list[str] = []
        for route in self.routes:
            params = route.match(segments)
            if params is None:
                continue
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return route, params
            allowed.append(route.method)
        if allowed:
            raise ApiError(
                405,
                "method_not_allowed",
                f"{method} is not allowed here; use {', '.join(allowed)}",
                [("Allow", ", ".join(allowed))],
            )
        raise not_found("route")


def _segments(path: bytes) -> list[str]:
    try:
        text = path.decode("ascii")
    except UnicodeDecodeError:
        raise not_found("route") from None
    try:
        return (
            [unquote(part, errors="strict") for part in text.strip("/").split("/")] if text != "/" else [""]
        )
    except UnicodeDecodeError:
        raise not_found("route") from None


class LimitedRequest(Request):
    """A request that keeps at most MAX_BODY_BYTES of its body and remembers that there was more."""

    too_large = False

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > MAX_BODY_BYTES:
            self.too_large = True
            length = 0
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        assert self.content is not None
        if self.too_large or self.content.tell() + len(data) > MAX_BODY_BYTES:
            self.too_large = True
            return
        super().handleContentChunk(data)


Guard = Callable[[Request, "Route"], None]
"""Admits a request to a route, or raises ApiError (401, say) to refuse it."""


class JsonApi(Resource):
    """Answers every path through `router`, each request first admitted by `guard`."""

    isLeaf = True
    _log = Logger()

    def __init__(self, router: Router, guard: Guard) -> None:
        super().__init__()
        self._router = router
        self._guard = guard

    def render(self, request: Request) -> int:
        finished = [False]
        request.notifyFinish().addBoth(lambda _: finished.__setitem__(0, True))
        answering = Deferred.fromCoroutine(self._answer(request))
        answering.addErrback(self._failed, request)
        answering.addCallback(self._write, request, finished)
        return NOT_DONE_YET

    async def _answer(self, request: Request) -> Reply:
        method = request.method.decode("latin-1")
        route, params = self._router.find(method, request.path)
        self._guard(request, route)
        if isinstance(request, LimitedRequest) and request.too_large:
            raise ApiError(413, "too_large", f"the body may be at most {MAX_BODY_BYTES} bytes")
        body = b""
        if request.content is not None:
            request.content.seek(0)
            body = request.content.read()
        content_type = request.getHeader(b"content-type")
        call = Call(
            params,
            request.args or {},
            body,
            content_type.decode("latin-1") if content_type else None,
            request,
        )
        result = route.handler(call)
        if inspect.isawaitable(result):
            result = await result
        return result if isinstance(result, Reply) else json_reply(result)

    def _failed(self, failure: Failure, request: Request) -> Reply:
        error = failure.value
        if isinstance(error, ApiError):
            for name, value in error.headers:
                request.setHeader(name, value)
            return _error_reply(error)
        self._log.failure("API {method} {path}", failure, method=request.method, path=request.path)
        return _error_reply(ApiError(500, "internal", "the server failed to answer; see its log"))

    def _write(self, reply: Reply, request: Request, finished: list[bool]) -> None:
        if finished[0]:
            return  # the client went away
        request.setResponseCode(reply.status)
        request.setHeader("Content-Type", reply.content_type)
        request.setHeader("Content-Length", str(len(reply.body)))
        request.setHeader("Cache-Control", reply.cache)
        for name, value in SECURITY_HEADERS:
            request.setHeader(name, value)
        request.write(reply.body)
        request.finish()


def number_field(body: Mapping[str, Any], name: str, minimum: float = 1.0) -> float | None:
    """An optional finite number of at least `minimum` in a JSON body (null or absent: None)."""
    value = body.get(name)
    if value is None:
        return None
    try:
        number = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
    except OverflowError:  # an integer beyond what a float holds
        number = math.nan
    if not math.isfinite(number) or number < minimum:
        raise bad_request(f"{name} must be a number of at least {minimum:g}, or null")
    return number


def text_field(body: Mapping[str, Any], name: str, *, required: bool = False) -> str | None:
    """A string in a JSON body (absent or null: None, unless `required`)."""
    value = body.get(name)
    if value is None:
        if required:
            raise bad_request(f"{name} is required")
        return None
    if not isinstance(value, str):
        raise bad_request(f"{name} must be a string")
    return value
