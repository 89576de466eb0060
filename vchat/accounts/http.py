"""What the login providers share: requesting a provider's JSON answer over treq (no redirects, a size limit, one
timeout for the whole request), reading that answer (pure functions, tested without I/O), and, for Facebook and
VK, the plain authorization code flow around them.

Nothing of an answer is logged, and an error names no secret, code or token: a provider's own error message is
passed on cleaned (token-like words blanked) and truncated.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, ClassVar, cast
from urllib.parse import urlencode

from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IReactorPluggableNameResolver, IReactorTCP, IReactorTime
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from zope.interface import implementer

from vchat.accounts.age import birth_date
from vchat.accounts.email import email_hash
from vchat.accounts.provider import DEFAULT_TIMEOUT, ILoginProvider, ProviderError, ProviderProfile
from vchat.httpbody import BodyTooLarge, read_body
from vchat.reactors import installed_reactor

MAX_ANSWER_BYTES = 64 * 1024
"""The longest answer read from a provider by default: its token and profile answers are a few hundred bytes."""

MAX_MESSAGE_CHARS = 120
"""The most of a provider's error message passed on."""

_TOKEN_LIKE = re.compile(r"[\w\-.~+/=|]{20,}")


class IHttpReactor(IReactorTCP, IReactorPluggableNameResolver, IReactorTime):
    """What a provider's HTTP client needs: TCP and name resolution to connect, time for the timeout."""


class ProviderUnreachable(ProviderError):
    """A request failed before the provider answered: refused, reset, DNS, TLS."""


class ProviderTimedOut(ProviderError):
    """The provider did not answer a request, body included, within the timeout."""


class AnswerTooLarge(ProviderError):
    """The provider's answer was longer than the client reads."""


@dataclass(frozen=True, slots=True)
class Answer:
    """A provider's answer to one request: the HTTP status and the body."""

    status: int
    body: bytes


class JsonClient:
    """Requests a provider's answers with treq, one new connection each (logins are rare), without following
    redirects; `timeout` seconds for each request, body included, after which its connection is dropped."""

    def __init__(
        self,
        label: str,
        timeout: float,
        reactor: IHttpReactor | None = None,
        max_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        """`label` names the provider in errors; `reactor` defaults to the installed one, as treq's does;
        `max_bytes` is the longest answer read."""
        self._label = label
        self._timeout = timeout
        self._max_bytes = max_bytes
        self._reactor: IHttpReactor = cast(IHttpReactor, installed_reactor()) if reactor is None else reactor
        pool = HTTPConnectionPool(self._reactor, persistent=False)
        self._http = HTTPClient(Agent(self._reactor, pool=pool))

    async def get(self, url: str) -> Answer:
        """The answer to a GET of `url`; see `request`."""
        return await self.request("GET", url)

    async def request(
        self, method: str, url: str, headers: Mapping[str, str] | None = None, body: bytes | None = None
    ) -> Answer:
        """The answer to one request asking for JSON, with `headers` besides (a form `body` needs its
        Content-Type, HTTP Basic auth its Authorization). `ProviderTimedOut`, `ProviderUnreachable` or
        `AnswerTooLarge` if there is none to read; CancelledError if the caller cancels."""
        requesting = Deferred.fromCoroutine(self._request(method, url, headers or {}, body))
        timer = self._reactor.callLater(self._timeout, requesting.cancel)
        try:
            return await requesting
        except BodyTooLarge:
            raise AnswerTooLarge(f"{self._label} gave an answer too large") from None
        except Exception as error:
            if not timer.active():  # whatever cancelling left (the agent says `ResponseNeverReceived`)
                raise ProviderTimedOut(f"{self._label} did not answer within {self._timeout:g} s") from None
            if isinstance(error, CancelledError):  # the caller gave up
                raise
            why = type(error).__name__  # refused, reset, DNS, TLS: the URL and its secrets stay out
            raise ProviderUnreachable(f"{self._label} could not be reached ({why})") from None
        finally:
            if timer.active():
                timer.cancel()

    async def _request(self, method: str, url: str, headers: Mapping[str, str], body: bytes | None) -> Answer:
        asked = {"Accept": "application/json", **headers}
        response: IResponse = await self._http.request(
            method,
            url,
            headers=Headers({name: [value] for name, value in asked.items()}),
            data=body,
            allow_redirects=False,
            unbuffered=True,
            reactor=cast(Any, self._reactor),  # treq's (private) reactor interface is these same three
        )
        return Answer(response.code, await read_body(response, self._max_bytes))


@implementer(ILoginProvider)
@dataclass(eq=False)
class CodeFlowProvider(ABC):
    """`ILoginProvider` for OAuth 2's authorization code flow as Facebook and VK run it for a web app, with the
    app's id and secret: no PKCE and no ID token, so the verifier and the nonce are unused. A subclass, a
    dataclass too, adds its endpoints (the arguments after the secret), says where its login page is and how
    it reads who logged in with the code."""

    name: ClassVar[str]
    label: ClassVar[str]

    app_id: str
    app_secret: str = field(repr=False)
    _: KW_ONLY
    timeout: float = DEFAULT_TIMEOUT
    """Seconds each request to the provider has, its answer's last byte included."""
    reactor: IHttpReactor | None = field(default=None, repr=False)
    """Makes the connections and keeps the time: the installed reactor by default."""

    def __post_init__(self) -> None:
        self._client = JsonClient(self.label, self.timeout, self.reactor)

    def authorize_url(self, redirect_uri: str, state: str, nonce: str, code_challenge: str) -> Deferred[str]:
        """The login page's URL (`nonce` and `code_challenge` are unused)."""
        return succeed(self._login_page(redirect_uri, state))

    def finish(
        self, code: str, redirect_uri: str, code_verifier: str, nonce: str
    ) -> Deferred[ProviderProfile]:
        """Exchange `code` for a token and read who logged in with it (`code_verifier` and `nonce` are
        unused)."""
        return Deferred.fromCoroutine(self._profile(code, redirect_uri))

    @abstractmethod
    def _login_page(self, redirect_uri: str, state: str) -> str:
        """The login page's URL, which comes back to `redirect_uri` with `state` and a code."""

    @abstractmethod
    async def _profile(self, code: str, redirect_uri: str) -> ProviderProfile:
        """Who logged in: `code` exchanged for a token, and the user read with that."""


def endpoint_url(base: str, path: str) -> str:
    """The URL of `path` under the URL `base`, which may end in a slash or not."""
    return f"{base.rstrip('/')}/{path}"


def login_page_url(page: str, app_id: str, redirect_uri: str, state: str, scope: str, **extra: str) -> str:
    """The URL of a provider's login `page` for the authorization code flow (RFC 6749, 4.1.1), asking for
    `scope`, with the provider's own `extra` parameters."""
    query = {
        "client_id": app_id,
        "redirect_uri": redirect_uri,
        "state": state,
        "response_type": "code",
        "scope": scope,
    }
    return f"{page}?{urlencode(query | extra)}"


def code_exchange_url(endpoint: str, app_id: str, app_secret: str, redirect_uri: str, code: str) -> str:
    """The URL that exchanges `code` for an access token with a GET of `endpoint`, the app's secret in the
    query (as Facebook and VK take it)."""
    query = {"client_id": app_id, "client_secret": app_secret, "redirect_uri": redirect_uri, "code": code}
    return f"{endpoint}?{urlencode(query)}"


def provider_message(text: str) -> str:
    """A provider's error message fit to pass on: printable, token-like words blanked, truncated."""
    cleaned = " ".join("".join(c if c.isprintable() else " " for c in _TOKEN_LIKE.sub("…", text)).split())
    if len(cleaned) > MAX_MESSAGE_CHARS:
        return cleaned[: MAX_MESSAGE_CHARS - 1] + "…"
    return cleaned


def read_json(label: str, answer: Answer, error_of: Callable[[dict[str, Any]], str | None]) -> dict[str, Any]:
    """The JSON object a provider answered with. ProviderError with the provider's message if `error_of`
    finds one in it, and ProviderError if the status is not 200 or the body is not a JSON object."""
    try:
        found = json.loads(answer.body)
    except (ValueError, RecursionError):  # RecursionError: deeply nested arrays
        found = None
    if isinstance(found, dict):
        message = error_of(found)
        if message is not None:
            raise ProviderError(f"{label} refused: {provider_message(message) or 'no reason given'}")
    if answer.status != 200:
        raise ProviderError(f"{label} answered HTTP {answer.status}")
    if not isinstance(found, dict):
        raise ProviderError(f"{label} gave a malformed answer")
    return found


def read_text(found: Mapping[str, Any], key: str) -> str | None:
    """`found[key]` if it is a non-empty string, else None."""
    value = found.get(key)
    return value if isinstance(value, str) and value else None


def read_email(found: Mapping[str, Any], key: str) -> str | None:
    """`found[key]` if it is an e-mail address (as `email_hash` takes one), else None."""
    value = read_text(found, key)
    if value is None:
        return None
    try:
        email_hash(b"", value)  # its check of an address, so the login flow never meets one it refuses
    except ValueError:
        return None
    return value


def read_birth_date(found: Mapping[str, Any], key: str, provider: str) -> tuple[int, int, int] | None:
    """`found[key]` as `provider` writes a birth date (see `birth_date`); None if not one or yearless."""
    value = read_text(found, key)
    if value is None:
        return None
    try:
        return birth_date(provider, value)
    except ValueError:
        return None
