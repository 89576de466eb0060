"""The login routes on the signaling endpoint (same origin as the web page; docs/accounts.md):

    GET  /auth/providers           the enabled providers, for the page's buttons: [{"name", "label"}]
    GET  /auth/{provider}/start    to the provider's login page (302), with the login's state in a cookie
    GET  /auth/{provider}/callback where the provider sends the browser back: logs in, then to / (302), or to
                                   /#login-error=CODE when the login was refused (state, cancelled, provider,
                                   under_18, deleted)
    POST /auth/logout              forgets the login cookie (204); only from this site's own pages

The login cookie is HttpOnly, SameSite=Lax, Secure when the page came over TLS, and expires after the login's
time to live. Nothing a provider sends is logged but why a login was refused.
"""

from __future__ import annotations

import json
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import Request
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from vchat.accounts.cookie import COOKIE_NAME
from vchat.accounts.flow import STATE_COOKIE, STATE_TTL, LoginRefused, Logins

AUTH_PREFIX = b"/auth/"


class AuthRoutes(Resource):
    """/auth/...: see the module."""

    isLeaf = True
    _log = Logger()

    def __init__(self, logins: Logins, public_url: str | None = None) -> None:
        """`public_url` (scheme://host[:port]) is where browsers reach this site, for the providers' redirect
        URIs; None: the scheme and Host of each request."""
        super().__init__()
        self.logins = logins
        self._public_url = public_url.rstrip("/") if public_url else None

    def render(self, request: Request) -> bytes | int:
        parts = request.path[len(AUTH_PREFIX) :].decode("ascii", "replace").split("/")
        method = request.method
        if parts == ["providers"] and method in (b"GET", b"HEAD"):
            providers = [{"name": p.name, "label": p.label} for p in self.logins.providers.values()]
            return _json(request, 200, providers)
        if parts == ["logout"] and method == b"POST":
            return self._logout(request)
        if len(parts) == 2 and parts[1] in ("start", "callback") and method in (b"GET", b"HEAD"):
            work = (
                self._start(request, parts[0]) if parts[1] == "start" else self._callback(request, parts[0])
            )
            self._run(request, work)
            return NOT_DONE_YET
        return _json(request, 404, {"error": {"code": "not_found", "message": "no such login route"}})

    def _redirect_uri(self, request: Request, name: str) -> str:
        base = self._public_url
        if base is None:
            host = (request.getHeader("host") or "localhost").strip()
            base = f"{'https' if request.isSecure() else 'http'}://{host}"
        return f"{base}/auth/{name}/callback"

    async def _start(self, request: Request, name: str) -> None:
        try:
            started = await self.logins.start(name, self._redirect_uri(request, name))
        except LoginRefused as e:
            self._refused(request, e)
            return
        self._cookie(request, STATE_COOKIE, started.state_cookie, STATE_TTL, "/auth/")
        _found(request, started.url)

    async def _callback(self, request: Request, name: str) -> None:
        query = {
            key.decode("utf-8", "replace"): values[0].decode("utf-8", "replace")
            for key, values in (request.args or {}).items()
            if values
        }
        state_cookie = request.getCookie(STATE_COOKIE.encode())
        try:
            account, cookie = await self.logins.finish(
                name,
                self._redirect_uri(request, name),
                query,
                None if state_cookie is None else state_cookie.decode("ascii", "replace"),
            )
        except LoginRefused as e:
            self._cookie(request, STATE_COOKIE, "", 0, "/auth/")
            self._refused(request, e)
            return
        self._cookie(request, STATE_COOKIE, "", 0, "/auth/")
        self._cookie(request, COOKIE_NAME, cookie, self.logins.login_ttl, "/")
        self._log.info(
            "account {account} logged in through {provider}", account=account.account_id, provider=name
        )
        _found(request, "/")

    def _logout(self, request: Request) -> bytes:
        if not same_origin(request):
            return _json(
                request, 403, {"error": {"code": "forbidden", "message": "log out from this site's page"}}
            )
        self._cookie(request, COOKIE_NAME, "", 0, "/")
        request.setResponseCode(204)
        return b""

    def _refused(self, request: Request, refusal: LoginRefused) -> None:
        self._log.info("a login was refused ({code}): {why}", code=refusal.code, why=str(refusal))
        _found(request, f"/#login-error={refusal.code}")

    def _cookie(self, request: Request, name: str, value: str, max_age: float, path: str) -> None:
        request.addCookie(
            name,
            value,
            max_age=str(int(max_age)),
            path=path,
            secure=request.isSecure() or (self._public_url or "").startswith("https:"),
            httpOnly=True,
            sameSite="lax",
        )

    def _run(self, request: Request, work: Coroutine[Any, Any, None]) -> None:
        finished: Deferred[None] = Deferred.fromCoroutine(work)

        def failed(failure: Failure) -> None:
            if failure.check(CancelledError):  # the browser went away
                return
            self._log.failure("a login route failed", failure)
            if not request.finished:
                request.setResponseCode(500)
                request.setHeader("Content-Type", "application/json")
                request.write(b'{"error": {"code": "internal", "message": "the login failed"}}')

        finished.addErrback(failed)
        finished.addBoth(lambda _: None if request.finished or request._disconnected else request.finish())
        request.notifyFinish().addErrback(lambda _: finished.cancel())


def same_origin(request: Request) -> bool:
    """Whether a request came from this site's own pages (its Origin is the site): a change to a login or an
    account is refused from other sites' pages, which a logged-in browser would otherwise send it from."""
    origin, host = request.getHeader("origin"), request.getHeader("host")
    return origin is not None and host is not None and urlsplit(origin).netloc == host


def _found(request: Request, location: str) -> None:
    request.setResponseCode(302)
    request.setHeader("Location", location)
    request.setHeader("Cache-Control", "no-store")


def _json(request: Request, code: int, body: object) -> bytes:
    request.setResponseCode(code)
    request.setHeader("Content-Type", "application/json")
    request.setHeader("Cache-Control", "no-store")
    return json.dumps(body).encode()
