"""Login through any OpenID Connect provider (Google, Apple, an operator's own): the authorization code flow
with PKCE, the ID token checked against the provider's published keys (OpenID Connect Core 1.0, 3.1.3.7).

The pure part (the discovery document, the token request and answer, the ID token's signature and claims, the
profile) is plain functions; `OidcProvider` only adds HTTP through vchat.accounts.http's client, each request
bounded by a timeout.
"""

from __future__ import annotations

import base64
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any, cast
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import jwt
from twisted.internet.defer import Deferred
from zope.interface import implementer

from vchat.accounts.age import birth_date
from vchat.accounts.http import (
    AnswerTooLarge,
    IHttpReactor,
    JsonClient,
    ProviderTimedOut,
    ProviderUnreachable,
)
from vchat.accounts.provider import DEFAULT_TIMEOUT, ILoginProvider, ProviderError, ProviderProfile
from vchat.reactors import installed_reactor

SCOPE = "openid email profile"
LEEWAY = 60
"""Seconds of clock difference with the provider tolerated on an ID token's exp, iat and nbf."""
MAX_ANSWER_BYTES = 1 << 20
"""The longest answer read from a provider: discovery, keys, tokens and profiles are a few kilobytes."""
SIGNING_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
"""The ID token signatures accepted, if the provider lists them: public-key ones only (never "none", nor
HMAC with the client secret)."""

_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}
_ERROR_CODE = re.compile(r"[a-z_]{1,40}", re.ASCII)
_COUNTRY = re.compile(r"[A-Za-z]{2}", re.ASCII)
_GENDERS = {"male": "m", "female": "f"}


class UnknownKeyError(ProviderError):
    """The ID token names a key that the provider's key set lacks: the keys may have been rotated."""


@dataclass(frozen=True, slots=True)
class Discovery:
    """What vchat uses of a provider's discovery document, checked."""

    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str | None
    algorithms: tuple[str, ...]
    """ID token signature algorithms the provider uses and vchat accepts."""
    client_secret_post: bool
    """Send the client secret in the token request's body (the provider takes no HTTP Basic auth)."""


def discovery_url(issuer: str) -> str:
    """Where `issuer` publishes its discovery document (OpenID Connect Discovery 1.0, 4)."""
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def _secure_url(value: object, what: str) -> str:
    """`value` if it is an https URL, or http to a loopback address (a provider on the same machine)."""
    if isinstance(value, str):
        parts = urlsplit(value)
        if parts.scheme == "https" and parts.hostname:
            return value
        if parts.scheme == "http" and parts.hostname:
            if parts.hostname == "localhost":
                return value
            try:
                if ip_address(parts.hostname).is_loopback:
                    return value
            except ValueError:
                pass
    raise ProviderError(f"the provider's {what} is not an https URL")


def _strings(value: object, default: Sequence[str]) -> Sequence[str]:
    """A discovery list of strings, `default` when absent."""
    if value is None:
        return default
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ProviderError("the provider's discovery document is malformed")
    return value


def check_discovery(document: object, issuer: str) -> Discovery:
    """The parts of a discovery `document` vchat uses; ProviderError if it is not `issuer`'s or unusable."""
    if not isinstance(document, dict):
        raise ProviderError("the provider's discovery document is malformed")
    if document.get("issuer") != issuer:
        raise ProviderError("the provider's discovery document names another issuer")
    _secure_url(issuer, "issuer")
    if "code" not in _strings(document.get("response_types_supported"), ["code"]):
        raise ProviderError("the provider does not support the authorization code flow")
    listed = _strings(document.get("id_token_signing_alg_values_supported"), ["RS256"])
    algorithms = tuple(name for name in listed if name in SIGNING_ALGORITHMS)
    if not algorithms:
        raise ProviderError("the provider signs ID tokens with no algorithm vchat accepts")
    methods = _strings(document.get("token_endpoint_auth_methods_supported"), ["client_secret_basic"])
    if "client_secret_basic" not in methods and "client_secret_post" not in methods:
        raise ProviderError("the provider takes no client secret")
    userinfo = document.get("userinfo_endpoint")
    return Discovery(
        authorization_endpoint=_secure_url(document.get("authorization_endpoint"), "authorization endpoint"),
        token_endpoint=_secure_url(document.get("token_endpoint"), "token endpoint"),
        jwks_uri=_secure_url(document.get("jwks_uri"), "key set URL"),
        userinfo_endpoint=None if userinfo is None else _secure_url(userinfo, "userinfo endpoint"),
        algorithms=algorithms,
        client_secret_post="client_secret_basic" not in methods,
    )


def authorization_url(
    discovery: Discovery, client_id: str, redirect_uri: str, state: str, nonce: str, code_challenge: str
) -> str:
    """The provider's login page for this request, with PKCE's S256 challenge."""
    parts = urlsplit(discovery.authorization_endpoint)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("scope", SCOPE),
        ("state", state),
        ("nonce", nonce),
        ("code_challenge", code_challenge),
        ("code_challenge_method", "S256"),
    ]
    return urlunsplit(parts._replace(query=urlencode(query)))


def token_request(
    discovery: Discovery, client_id: str, client_secret: str, code: str, redirect_uri: str, code_verifier: str
) -> tuple[dict[str, str], bytes]:
    """The headers and form body that exchange `code` at the token endpoint, the client authenticated with
    HTTP Basic (client_secret_basic) or, where that is all the provider takes, in the body."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": code_verifier,
    }
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    if discovery.client_secret_post:
        form |= {"client_id": client_id, "client_secret": client_secret}
    else:  # RFC 6749, 2.3.1: each part form-encoded before Base64
        pair = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"
        headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    return headers, urlencode(form).encode()


def read_answer(status: int, body: bytes, what: str) -> dict[str, Any]:
    """The JSON object a provider answered to the request for `what`; ProviderError, with the OAuth error
    code if it gave one, for a refusal, an HTTP error or anything but a JSON object."""
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: JSON nested too deep
        answer = None
    if isinstance(answer, dict) and isinstance(answer.get("error"), str):
        code = answer["error"]
        raise ProviderError(
            f"the provider refused the {what}" + (f": {code}" if _ERROR_CODE.fullmatch(code) else "")
        )
    if status != 200:
        raise ProviderError(f"the provider answered the {what} with HTTP {status}")
    if not isinstance(answer, dict):
        raise ProviderError(f"the provider's {what} answer is malformed")
    return answer


def read_tokens(answer: Mapping[str, Any]) -> tuple[str, str | None]:
    """The ID token and, for the userinfo endpoint, the access token of a token endpoint's `answer`."""
    id_token = answer.get("id_token")
    if not isinstance(id_token, str):
        raise ProviderError("the provider gave no ID token")
    access_token = answer.get("access_token")
    bearer = isinstance(answer.get("token_type"), str) and answer["token_type"].lower() == "bearer"
    return id_token, access_token if isinstance(access_token, str) and bearer else None


def _signing_key(jwks: object, kid: object, algorithm: str) -> Any:
    """The public key of `jwks` that signed with `algorithm` under `kid` (the only one of its type if no
    kid); UnknownKeyError if there is none, ProviderError if the key set is malformed."""
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(keys, list):
        raise ProviderError("the provider's key set is malformed")
    candidates = [
        key
        for key in keys
        if isinstance(key, dict)
        and key.get("kty") == _KEY_TYPES[algorithm[:2]]
        and key.get("use", "sig") == "sig"
        and key.get("alg", algorithm) == algorithm
        and (kid is None or key.get("kid") == kid)
    ]
    if not candidates:
        raise UnknownKeyError("the ID token is signed with a key the provider does not publish")
    if len(candidates) > 1:
        raise ProviderError("the ID token does not say which of the provider's keys signed it")
    try:
        return jwt.PyJWK(candidates[0], algorithm=algorithm).key
    except jwt.PyJWTError as error:
        raise ProviderError("the provider's key set is malformed") from error


def verify_signature(id_token: str, jwks: object, algorithms: Sequence[str]) -> dict[str, Any]:
    """The claims of `id_token` once its signature is checked against the key set `jwks`, with an algorithm of
    `algorithms` (never "none"); UnknownKeyError if it names a key `jwks` lacks, ProviderError otherwise."""
    try:
        header = jwt.get_unverified_header(id_token)
    except jwt.PyJWTError as error:
        raise ProviderError("the ID token is malformed") from error
    algorithm = header.get("alg")
    if algorithm not in algorithms or algorithm not in SIGNING_ALGORITHMS:
        raise ProviderError("the ID token is signed with an algorithm vchat does not accept")
    key = _signing_key(jwks, header.get("kid"), algorithm)
    try:
        payload = jwt.PyJWS().decode(id_token, key, algorithms=[algorithm])
        claims = json.loads(payload)
    except (jwt.PyJWTError, ValueError) as error:
        raise ProviderError("the ID token's signature is invalid") from error
    if not isinstance(claims, dict):
        raise ProviderError("the ID token is malformed")
    return claims


def _time(claims: Mapping[str, Any], name: str) -> float | None:
    """The time claim `name` (seconds since the epoch), None if absent."""
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProviderError(f"the ID token's {name} is malformed")
    return float(value)


def check_claims(claims: Mapping[str, Any], issuer: str, client_id: str, nonce: str, now: float) -> None:
    """ProviderError unless the ID token's `claims` are from `issuer`, for `client_id`, unexpired at `now`
    (give or take LEEWAY), for this login's `nonce`, and name a subject."""
    if claims.get("iss") != issuer:
        raise ProviderError("the ID token is from another issuer")
    audience = claims.get("aud")
    audiences = [audience] if isinstance(audience, str) else audience
    if not isinstance(audiences, list) or client_id not in audiences:
        raise ProviderError("the ID token is for another client")
    azp = claims.get("azp")
    if (len(audiences) > 1 or azp is not None) and azp != client_id:
        raise ProviderError("the ID token is for another client")
    expires, issued, not_before = _time(claims, "exp"), _time(claims, "iat"), _time(claims, "nbf")
    if expires is None or issued is None:
        raise ProviderError("the ID token has no exp or iat")
    if now > expires + LEEWAY:
        raise ProviderError("the ID token has expired")
    if issued > now + LEEWAY or (not_before is not None and not_before > now + LEEWAY):
        raise ProviderError("the ID token is not valid yet")
    given = claims.get("nonce")
    if not isinstance(given, str) or not hmac.compare_digest(given.encode(), nonce.encode()):
        raise ProviderError("the ID token is not for this login (nonce)")
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise ProviderError("the ID token names no user")


def with_userinfo(claims: Mapping[str, Any], userinfo: Mapping[str, Any]) -> dict[str, Any]:
    """The ID token's `claims` updated with the userinfo endpoint's, which must be of the same user."""
    if userinfo.get("sub") != claims.get("sub"):
        raise ProviderError("the provider's userinfo is of another user")
    return {**claims, **userinfo}


def profile_from_claims(claims: Mapping[str, Any]) -> ProviderProfile:
    """The profile in an OpenID Connect user's `claims`: the e-mail only if verified; gender, birth date and
    country only if well formed (else None, not a failure)."""
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise ProviderError("the provider named no user")
    email = claims.get("email")
    verified = claims.get("email_verified") in (True, "true")  # Apple and some others send a string
    born = claims.get("birthdate")
    try:
        birth = birth_date("oidc", born) if isinstance(born, str) else None
    except ValueError:
        birth = None
    address = claims.get("address")
    country = address.get("country") if isinstance(address, dict) else None
    gender = claims.get("gender")
    return ProviderProfile(
        subject=subject,
        email=email if verified and isinstance(email, str) and email else None,
        gender=_GENDERS.get(gender) if isinstance(gender, str) else None,
        country=country.upper() if isinstance(country, str) and _COUNTRY.fullmatch(country) else None,
        birth_date=birth,
    )


@implementer(ILoginProvider)
class OidcProvider:
    """`ILoginProvider` for the OpenID Connect provider at `issuer`, where vchat is the client `client_id`."""

    name = "oidc"

    def __init__(
        self,
        issuer: str,
        client_id: str,
        client_secret: str,
        label: str = "OpenID Connect",
        timeout: float = DEFAULT_TIMEOUT,
        *,
        reactor: IHttpReactor | None = None,
    ) -> None:
        """`timeout` bounds each HTTP request, from connecting to the answer's last byte; `reactor` (the
        installed one by default) makes the connections and keeps the time."""
        self.label = label
        self._issuer = issuer
        self._client_id = client_id
        self._client_secret = client_secret
        self._timeout = timeout
        self._clock = reactor if reactor is not None else cast(IHttpReactor, installed_reactor())
        self._client = JsonClient(label, timeout, self._clock, MAX_ANSWER_BYTES)
        self._discovery: Discovery | None = None
        self._jwks: dict[str, Any] | None = None

    def authorize_url(self, redirect_uri: str, state: str, nonce: str, code_challenge: str) -> Deferred[str]:
        """See `ILoginProvider.authorize_url`."""
        return Deferred.fromCoroutine(self._authorize_url(redirect_uri, state, nonce, code_challenge))

    def finish(
        self, code: str, redirect_uri: str, code_verifier: str, nonce: str
    ) -> Deferred[ProviderProfile]:
        """See `ILoginProvider.finish`."""
        return Deferred.fromCoroutine(self._finish(code, redirect_uri, code_verifier, nonce))

    async def _authorize_url(self, redirect_uri: str, state: str, nonce: str, code_challenge: str) -> str:
        discovery = await self._discover()
        return authorization_url(discovery, self._client_id, redirect_uri, state, nonce, code_challenge)

    async def _finish(self, code: str, redirect_uri: str, code_verifier: str, nonce: str) -> ProviderProfile:
        discovery = await self._discover()
        headers, body = token_request(
            discovery, self._client_id, self._client_secret, code, redirect_uri, code_verifier
        )
        id_token, access_token = read_tokens(
            await self._json("token request", "POST", discovery.token_endpoint, headers, body)
        )
        claims = await self._verify(id_token, discovery)
        check_claims(claims, self._issuer, self._client_id, nonce, self._clock.seconds())
        if "email" not in claims and discovery.userinfo_endpoint is not None and access_token is not None:
            bearer = {"Authorization": f"Bearer {access_token}"}
            userinfo = await self._json("userinfo request", "GET", discovery.userinfo_endpoint, bearer)
            claims = with_userinfo(claims, userinfo)
        return profile_from_claims(claims)

    async def _discover(self) -> Discovery:
        """The provider's discovery document, fetched once it is good."""
        if self._discovery is None:
            document = await self._json("discovery request", "GET", discovery_url(self._issuer))
            self._discovery = check_discovery(document, self._issuer)
        return self._discovery

    async def _verify(self, id_token: str, discovery: Discovery) -> dict[str, Any]:
        """The claims of `id_token`, its signature checked with the cached key set, fetched (again) when there
        is none or the token names a key it lacks: the provider rotated its keys. Only a key set that
        verified a token is kept."""
        if self._jwks is not None:
            try:
                return verify_signature(id_token, self._jwks, discovery.algorithms)
            except UnknownKeyError:
                self._jwks = None
        jwks = await self._json("key set request", "GET", discovery.jwks_uri)
        claims = verify_signature(id_token, jwks, discovery.algorithms)
        self._jwks = jwks
        return claims

    async def _json(
        self,
        what: str,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> dict[str, Any]:
        """The JSON object answered to one request, within the timeout; ProviderError for any failure."""
        try:
            answer = await self._client.request(method, url, headers, body)
        except ProviderTimedOut:
            raise ProviderError(f"the provider did not answer the {what} in {self._timeout:g} s") from None
        except ProviderUnreachable:
            raise ProviderError(f"the provider could not be reached for the {what}") from None
        except AnswerTooLarge:
            raise ProviderError("the provider's answer is too long") from None
        return read_answer(answer.status, answer.body, what)
