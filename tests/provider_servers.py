"""Fake Facebook and VK login servers for the provider tests: twisted.web on a loopback port the OS picks,
serving the documented endpoints with the documented answer shapes (written here from the providers' docs,
not borrowed from vchat). They check what they are sent, as the real ones do, answering a wrong parameter
with the provider's own error; each code they issue works once. Also: a port that refuses connections, one
that accepts and never answers, and the browser's trip through a login dialog.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlencode, urlsplit

import treq
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

FACEBOOK_FIELDS = "id,email,gender,birthday,location{location{country_code}}"
FACEBOOK_SCOPE = {"email", "user_gender", "user_birthday", "user_location"}
VK_FIELDS = {"sex", "bdate", "country"}

Query = dict[str, str]


@dataclass(frozen=True)
class Reply:
    """An endpoint's answer: a status and a JSON body, or a redirect to `location`."""

    status: int = 200
    body: object = None
    location: str | None = None


@dataclass
class Grant:
    """A code the fake issued: for which redirect URI and user, and whether it was used."""

    redirect_uri: str
    user: dict[str, Any]
    used: bool = False


@dataclass
class FakeProvider(ABC):
    """What both fakes share: the app they know, the user who logs in next, codes and tokens they issued, and
    `broken` ("500", "malformed", "huge" or "stalled": half an answer, then nothing) to make every endpoint
    but the browser's dialog answer wrongly. `stalled` holds `notifyFinish()` of each stalled request: it
    fails when the client drops the connection."""

    dialog_path: ClassVar[str]
    app_id: str
    app_secret: str
    user: dict[str, Any] = field(default_factory=dict)
    broken: str | None = None
    grants: dict[str, Grant] = field(default_factory=dict)
    tokens: dict[str, dict[str, Any]] = field(default_factory=dict)
    stalled: list[Deferred[None]] = field(default_factory=list)

    @abstractmethod
    def routes(self) -> dict[str, Callable[[Query], Reply]]:
        """Each path the fake serves, and its handler."""

    def issue(self, query: Query) -> Reply:
        """The user consents: back to `redirect_uri` with a fresh code and the `state`."""
        code = secrets.token_urlsafe(24)
        self.grants[code] = Grant(query["redirect_uri"], dict(self.user))
        return Reply(
            302, location=f"{query['redirect_uri']}?{urlencode({'code': code, 'state': query['state']})}"
        )

    def redeem(self, query: Query) -> Grant | None:
        """The grant of the query's code, used up now; None if it is unknown, used or for another redirect."""
        grant = self.grants.get(query.get("code", ""))
        if grant is None or grant.used or grant.redirect_uri != query.get("redirect_uri"):
            return None
        grant.used = True
        return grant

    def new_token(self, user: dict[str, Any]) -> str:
        token = secrets.token_urlsafe(32)
        self.tokens[token] = user
        return token


@dataclass
class FakeFacebook(FakeProvider):
    """Facebook's login dialog (/dialog/oauth) and Graph API (/v19.0/oauth/access_token, /v19.0/me). `user`
    is /me's whole answer."""

    dialog_path = "/dialog/oauth"

    def routes(self) -> dict[str, Callable[[Query], Reply]]:
        return {"/dialog/oauth": self.dialog, "/v19.0/oauth/access_token": self.token, "/v19.0/me": self.me}

    @staticmethod
    def error(message: str, kind: str, code: int) -> Reply:
        return Reply(400, {"error": {"message": message, "type": kind, "code": code, "fbtrace_id": "AbC"}})

    def dialog(self, query: Query) -> Reply:
        if query.get("client_id") != self.app_id or query.get("response_type") != "code":
            return self.error("Invalid App ID", "OAuthException", 101)
        if set(query.get("scope", "").split(",")) != FACEBOOK_SCOPE or "state" not in query:
            return self.error("Invalid Scopes", "OAuthException", 100)
        return self.issue(query)

    def token(self, query: Query) -> Reply:
        if query.get("client_id") != self.app_id:
            return self.error("Error validating application. Invalid application ID.", "OAuthException", 101)
        if query.get("client_secret") != self.app_secret:
            return self.error("Error validating client secret.", "OAuthException", 1)
        code = query.get("code", "")
        if code in self.grants and self.grants[code].used:
            return self.error("This authorization code has been used.", "OAuthException", 100)
        grant = self.redeem(query)
        if grant is None:
            return self.error("Invalid verification code format.", "OAuthException", 100)
        return Reply(
            body={"access_token": self.new_token(grant.user), "token_type": "bearer", "expires_in": 5183944}
        )

    def me(self, query: Query) -> Reply:
        token = query.get("access_token", "")
        if token not in self.tokens:
            return self.error("Invalid OAuth access token - Cannot parse access token", "OAuthException", 190)
        proof = hmac.new(self.app_secret.encode(), token.encode(), hashlib.sha256).hexdigest()
        if query.get("appsecret_proof") != proof:
            return self.error(
                "Invalid appsecret_proof provided in the API argument", "GraphMethodException", 100
            )
        if query.get("fields") != FACEBOOK_FIELDS:
            return self.error("(#100) Tried accessing nonexisting field", "OAuthException", 100)
        return Reply(body=self.tokens[token])


@dataclass
class FakeVk(FakeProvider):
    """VK's OAuth (/authorize, /access_token) and API (/method/users.get). `user` is users.get's entry;
    `email`, if any, is what the token answer carries (a confirmed address the user granted)."""

    dialog_path = "/authorize"
    api_version: str = "5.131"
    email: str | None = None

    def routes(self) -> dict[str, Callable[[Query], Reply]]:
        return {
            "/authorize": self.authorize,
            "/access_token": self.token,
            "/method/users.get": self.users_get,
        }

    @staticmethod
    def error(error: str, description: str, status: int = 401) -> Reply:
        return Reply(status, {"error": error, "error_description": description})

    def authorize(self, query: Query) -> Reply:
        if query.get("client_id") != self.app_id:
            return self.error("invalid_client", "client_id is incorrect", 400)
        if query.get("display") != "page" or query.get("response_type") != "code":
            return self.error("invalid_request", "display or response_type is incorrect", 400)
        if "email" not in query.get("scope", "").split(",") or query.get("v") != self.api_version:
            return self.error("invalid_scope", "scope or v is incorrect", 400)
        if "state" not in query:
            return self.error("invalid_request", "state is missing", 400)
        return self.issue(query)

    def token(self, query: Query) -> Reply:
        if query.get("client_id") != self.app_id or query.get("client_secret") != self.app_secret:
            return self.error("invalid_client", "client_secret is incorrect")
        grant = self.redeem(query)
        if grant is None:
            return self.error("invalid_grant", "Code is invalid or expired.")
        body: dict[str, Any] = {
            "access_token": self.new_token(grant.user),
            "expires_in": 86400,
            "user_id": grant.user["id"],
        }
        if self.email is not None:
            body["email"] = self.email
        return Reply(body=body)

    def users_get(self, query: Query) -> Reply:
        def api_error(code: int, message: str) -> Reply:
            return Reply(body={"error": {"error_code": code, "error_msg": message, "request_params": []}})

        user = self.tokens.get(query.get("access_token", ""))
        if user is None:
            return api_error(5, "User authorization failed: invalid access_token (4).")
        if query.get("v") != self.api_version:
            return api_error(8, "Invalid request: v (version) is required")
        if query.get("user_ids") != str(user["id"]) or set(query.get("fields", "").split(",")) != VK_FIELDS:
            return api_error(100, "One of the parameters specified was missing or invalid")
        return Reply(body={"response": [user]})


class _Endpoints(Resource):
    """Serves a fake's routes; GET only, as the providers' documented flows use."""

    isLeaf = True

    def __init__(self, fake: FakeProvider) -> None:
        super().__init__()
        self._fake = fake

    def render_GET(self, request: Request) -> bytes | int:
        path = request.path.decode()
        handler = self._fake.routes().get(path)
        if handler is None:
            request.setResponseCode(404)
            return b"not found"
        broken = None if path == self._fake.dialog_path else self._fake.broken
        if broken == "500":
            request.setResponseCode(500)
            return b"<html><body>Internal Server Error</body></html>"
        request.setHeader(b"Content-Type", b"application/json; charset=UTF-8")
        if broken == "malformed":
            return b'{"access_token": "abc", '
        if broken == "huge":
            return b'{"padding": "' + b"x" * 1_000_000 + b'"}'
        if broken == "stalled":
            request.write(b'{"access_token": ')
            self._fake.stalled.append(request.notifyFinish())
            return NOT_DONE_YET
        query = {key.decode(): values[-1].decode() for key, values in (request.args or {}).items()}
        reply = handler(query)
        request.setResponseCode(reply.status)
        if reply.location is not None:
            request.setHeader(b"Location", reply.location.encode())
            return b""
        return json.dumps(reply.body).encode()


@dataclass
class Running:
    """A listening fake: its base URL and port."""

    url: str
    port: IListeningPort

    async def stop(self) -> None:
        """Close the port."""
        await maybeDeferred(self.port.stopListening)


def _listen(reactor: Any, factory: Factory[Any]) -> Running:
    factory.noisy = False
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    return Running(f"http://127.0.0.1:{port.getHost().port}", port)


class _QuietSite(Site):
    """Logs no request lines: they hold codes and tokens, which the privacy tests look for in the logs."""

    def log(self, request: Request) -> None:
        pass


def listen(reactor: Any, fake: FakeProvider) -> Running:
    """Serve `fake` on a loopback port the OS picks."""
    return _listen(reactor, _QuietSite(_Endpoints(fake)))


def listen_silent(reactor: Any) -> Running:
    """A port that accepts connections and never answers."""
    return _listen(reactor, Factory.forProtocol(Protocol))


async def closed_port(reactor: Any) -> str:
    """The base URL of a loopback port nothing listens on (it was just closed)."""
    running = listen_silent(reactor)
    await running.stop()
    return running.url


async def consent(reactor: Any, authorize_url: str, redirect_uri: str, state: str) -> str:
    """The browser at the login dialog: GET it, check it redirects to `redirect_uri` with `state`, and give
    the code it brings back."""
    response = await treq.get(authorize_url, allow_redirects=False, reactor=reactor, persistent=False)
    await response.content()
    assert response.code == 302, f"the dialog answered {response.code}"
    location: str = response.headers.getRawHeaders(b"Location")[0].decode()
    back = urlsplit(location)
    assert f"{back.scheme}://{back.netloc}{back.path}" == redirect_uri
    query = parse_qs(back.query)
    assert query["state"] == [state]
    code: str = query["code"][0]
    return code
