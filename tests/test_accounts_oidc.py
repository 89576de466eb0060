"""vchat.accounts.oidc: the pure checks with ID tokens made here, and whole logins against a real OpenID Connect
provider (panva's oidc-provider, tests/oidc_server, run with node) driven the way a browser would."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import re
import secrets
import shutil
import subprocess
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import jwt
import pytest
import pytest_twisted
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import succeed
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall, deferLater
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.resource import Resource
from twisted.web.server import Request, Site
from zope.interface.verify import verifyObject

from vchat.accounts.flow import Logins
from vchat.accounts.oidc import (
    Discovery,
    OidcProvider,
    UnknownKeyError,
    authorization_url,
    check_claims,
    check_discovery,
    profile_from_claims,
    read_answer,
    read_tokens,
    token_request,
    verify_signature,
    with_userinfo,
)
from vchat.accounts.provider import ILoginProvider, ProviderError, ProviderProfile
from vchat.store.memory import MemoryStore
from vchat.store.redis_testing import free_port

SERVER_DIR = Path(__file__).parent / "oidc_server"
CLIENT_ID = "vchat-test"
CLIENT_SECRET = "client-secret-of-the-tests"
ES256_CLIENT_ID = "vchat-test-es256"
REDIRECT_URI = "http://127.0.0.1:9/auth/oidc/callback"
ACCOUNTS = {
    "alice": {
        "email": "alice@example.org",
        "email_verified": True,
        "gender": "female",
        "birthdate": "1990-04-02",
        "address": {"country": "fr"},
    },
    "bob": {
        "email": "bob@example.org",
        "email_verified": False,
        "gender": "other",
        "birthdate": "1990-13-45",
        "address": {"country": "France"},
    },
}
TIMEOUT = 0.5
"""The providers' timeout in these tests: a silent provider fails the login this soon."""

ISSUER = "https://id.example.org"
NONCE = "nonce-of-this-login"
NOW = 1_800_000_000.0
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_jwk(key: Any, kid: str) -> dict[str, Any]:
    """The public JWK of a private `key`, named `kid`."""
    public = key.public_key()
    algorithm = (
        jwt.algorithms.RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else jwt.algorithms.ECAlgorithm
    )
    return {**algorithm.to_jwk(public, as_dict=True), "kid": kid, "use": "sig"}


JWKS = {"keys": [public_jwk(RSA_KEY, "rsa"), public_jwk(EC_KEY, "ec")]}


def make_id_token(key: Any = RSA_KEY, alg: str = "RS256", kid: str | None = "rsa", **claims: Any) -> str:
    """An ID token of `ISSUER` for `CLIENT_ID` and `NONCE`, issued at `NOW`; `claims` set (None: removed)."""
    payload = {"iss": ISSUER, "aud": CLIENT_ID, "sub": "user-1", "nonce": NONCE, "iat": NOW, "exp": NOW + 300}
    payload.update(claims)
    headers = {} if kid is None else {"kid": kid}
    return jwt.encode(
        {k: v for k, v in payload.items() if v is not None}, key, algorithm=alg, headers=headers
    )


def tampered(token: str, **claims: Any) -> str:
    """`token` with `claims` changed in its payload, its signature kept."""
    header, payload, signature = token.split(".")
    changed = {**json.loads(base64.urlsafe_b64decode(payload + "==")), **claims}
    encoded = base64.urlsafe_b64encode(json.dumps(changed).encode()).rstrip(b"=").decode()
    return f"{header}.{encoded}.{signature}"


def checked(token: str, algorithms: tuple[str, ...] = ("RS256", "ES256"), now: float = NOW) -> dict[str, Any]:
    """`token`'s claims, checked as the provider checks them."""
    claims = verify_signature(token, JWKS, algorithms)
    check_claims(claims, ISSUER, CLIENT_ID, NONCE, now)
    return claims


# The pure part: discovery, requests, answers, ID tokens, profiles


def discovery_document(**changes: Any) -> dict[str, Any]:
    """A good discovery document of `ISSUER`, with `changes` (None: removed)."""
    document = {
        "issuer": ISSUER,
        "authorization_endpoint": f"{ISSUER}/authorize?tenant=7",
        "token_endpoint": f"{ISSUER}/token",
        "jwks_uri": f"{ISSUER}/jwks",
        "userinfo_endpoint": f"{ISSUER}/userinfo",
        "response_types_supported": ["code", "id_token"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256", "HS256", "none"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
    }
    document.update(changes)
    return {k: v for k, v in document.items() if v is not None}


def test_discovery_document_read() -> None:
    """The endpoints, the public-key algorithms only, HTTP Basic client auth when offered."""
    assert check_discovery(discovery_document(), ISSUER) == Discovery(
        authorization_endpoint=f"{ISSUER}/authorize?tenant=7",
        token_endpoint=f"{ISSUER}/token",
        jwks_uri=f"{ISSUER}/jwks",
        userinfo_endpoint=f"{ISSUER}/userinfo",
        algorithms=("RS256", "ES256"),
        client_secret_post=False,
    )
    minimal = check_discovery(
        discovery_document(
            userinfo_endpoint=None,
            id_token_signing_alg_values_supported=None,
            token_endpoint_auth_methods_supported=["client_secret_post"],
        ),
        ISSUER,
    )
    assert (minimal.userinfo_endpoint, minimal.algorithms, minimal.client_secret_post) == (
        None,
        ("RS256",),
        True,
    )
    loopback = "http://127.0.0.1:8080"
    local = discovery_document(issuer=loopback, token_endpoint=f"{loopback}/token")
    assert check_discovery(local, loopback).token_endpoint == f"{loopback}/token"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"issuer": "https://evil.example.org"}, "another issuer"),
        ({"issuer": ISSUER + "/"}, "another issuer"),
        ({"token_endpoint": None}, "token endpoint"),
        ({"jwks_uri": "http://id.example.org/jwks"}, "key set URL"),
        ({"authorization_endpoint": 7}, "authorization endpoint"),
        ({"response_types_supported": ["id_token"]}, "authorization code"),
        ({"id_token_signing_alg_values_supported": ["HS256", "none"]}, "no algorithm"),
        ({"id_token_signing_alg_values_supported": "RS256"}, "malformed"),
        ({"token_endpoint_auth_methods_supported": ["private_key_jwt"]}, "no client secret"),
    ],
)
def test_discovery_document_refused(changes: dict[str, Any], message: str) -> None:
    """Another issuer's document, a missing or insecure endpoint, no usable algorithm or client auth."""
    with pytest.raises(ProviderError, match=message):
        check_discovery(discovery_document(**changes), ISSUER)


def test_discovery_document_not_an_object() -> None:
    """A JSON list is no discovery document."""
    with pytest.raises(ProviderError, match="malformed"):
        check_discovery([], ISSUER)


def test_authorization_url() -> None:
    """The endpoint's own query kept, the code flow's parameters added, PKCE with S256."""
    discovery = check_discovery(discovery_document(), ISSUER)
    url = authorization_url(discovery, CLIENT_ID, REDIRECT_URI, "st", "no", "challenge")
    parts = urlsplit(url)
    assert url.startswith(f"{ISSUER}/authorize?")
    assert parse_qs(parts.query) == {
        "tenant": ["7"],
        "response_type": ["code"],
        "client_id": [CLIENT_ID],
        "redirect_uri": [REDIRECT_URI],
        "scope": ["openid email profile"],
        "state": ["st"],
        "nonce": ["no"],
        "code_challenge": ["challenge"],
        "code_challenge_method": ["S256"],
    }


def test_token_request_basic_and_post() -> None:
    """HTTP Basic with each part form-encoded; the secret in the body only where Basic is not offered."""
    basic = check_discovery(discovery_document(), ISSUER)
    headers, body = token_request(basic, "id:1", "s e/c", "the-code", REDIRECT_URI, "verifier")
    assert base64.b64decode(headers["Authorization"].removeprefix("Basic ")) == b"id%3A1:s%20e%2Fc"
    assert parse_qs(body.decode()) == {
        "grant_type": ["authorization_code"],
        "code": ["the-code"],
        "redirect_uri": [REDIRECT_URI],
        "code_verifier": ["verifier"],
    }
    post = check_discovery(
        discovery_document(token_endpoint_auth_methods_supported=["client_secret_post"]), ISSUER
    )
    headers, body = token_request(post, "id:1", "s e/c", "the-code", REDIRECT_URI, "verifier")
    assert "Authorization" not in headers
    assert parse_qs(body.decode())["client_secret"] == ["s e/c"]


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (
            400,
            b'{"error": "invalid_grant", "error_description": "code abc123 was used"}',
            "refused the x: invalid_grant$",
        ),
        (200, b'{"error": "Something <b>odd</b>"}', "refused the x$"),
        (503, b"<html>down</html>", "HTTP 503"),
        (200, b"{not json", "malformed"),
        (200, b"[1, 2]", "malformed"),
    ],
)
def test_answer_refused(status: int, body: bytes, message: str) -> None:
    """An OAuth error names its code alone (never its description), then the status, then the JSON."""
    with pytest.raises(ProviderError, match=message):
        read_answer(status, body, "x")


def test_tokens_read() -> None:
    """The ID token is required; the access token is only taken as a bearer token."""
    assert read_tokens({"id_token": "i", "access_token": "a", "token_type": "Bearer"}) == ("i", "a")
    assert read_tokens({"id_token": "i", "access_token": "a", "token_type": "DPoP"}) == ("i", None)
    with pytest.raises(ProviderError, match="no ID token"):
        read_tokens({"access_token": "a", "token_type": "Bearer"})


def test_id_token_accepted() -> None:
    """RS256 and ES256, by kid or, without one, the only key of its type; audiences with azp; small skew."""
    assert checked(make_id_token())["sub"] == "user-1"
    assert checked(make_id_token(EC_KEY, "ES256", "ec"))["sub"] == "user-1"
    assert checked(make_id_token(EC_KEY, "ES256", None))["sub"] == "user-1"
    assert checked(make_id_token(aud=[CLIENT_ID, "other"], azp=CLIENT_ID))["sub"] == "user-1"
    assert checked(make_id_token(), now=NOW + 300 + 30)["sub"] == "user-1"
    assert checked(make_id_token(iat=NOW + 30))["sub"] == "user-1"


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (make_id_token(iss="https://evil.example.org"), "another issuer"),
        (make_id_token(aud="another-client"), "another client"),
        (make_id_token(aud=[CLIENT_ID, "other"]), "another client"),
        (make_id_token(aud=[CLIENT_ID, "other"], azp="other"), "another client"),
        (make_id_token(exp=NOW - 120), "expired"),
        (make_id_token(exp=None), "no exp"),
        (make_id_token(exp="tomorrow"), "exp is malformed"),
        (make_id_token(iat=NOW + 3600), "not valid yet"),
        (make_id_token(nbf=NOW + 3600), "not valid yet"),
        (make_id_token(nonce="another-nonce"), "nonce"),
        (make_id_token(nonce=None), "nonce"),
        (make_id_token(sub=""), "no user"),
        (jwt.encode({"iss": ISSUER, "aud": CLIENT_ID, "sub": "x"}, None, algorithm="none"), "algorithm"),
        (make_id_token(RSA_KEY, "PS256"), "algorithm"),
        (make_id_token(kid="unknown"), "does not publish"),
        (make_id_token(OTHER_RSA_KEY), "signature is invalid"),
        (make_id_token(EC_KEY, "ES256", "rsa"), "does not publish"),
        (tampered(make_id_token(), sub="admin"), "signature is invalid"),
        ("not.a.token", "malformed"),
    ],
)
def test_id_token_refused(token: str, message: str) -> None:
    """Wrong issuer, audience, times or nonce; alg none or unlisted, an unknown kid, a forged signature."""
    with pytest.raises(ProviderError, match=message):
        checked(token)


def test_unknown_kid_is_told_apart() -> None:
    """An unpublished kid is UnknownKeyError: the provider may have rotated its keys since they were read."""
    with pytest.raises(UnknownKeyError):
        verify_signature(make_id_token(kid="rotated"), JWKS, ["RS256"])
    with pytest.raises(ProviderError, match="which of"):  # two RSA keys and no kid
        verify_signature(
            make_id_token(kid=None), {"keys": [*JWKS["keys"], public_jwk(OTHER_RSA_KEY, "x")]}, ["RS256"]
        )
    with pytest.raises(ProviderError, match="key set is malformed"):
        verify_signature(make_id_token(), {"keys": "none"}, ["RS256"])


@pytest.mark.parametrize(
    ("claims", "profile"),
    [
        (
            {
                "sub": "s1",
                "email": "a@example.org",
                "email_verified": True,
                "gender": "female",
                "birthdate": "1990-04-02",
                "address": {"country": "de"},
            },
            ProviderProfile("s1", "a@example.org", "f", "DE", (1990, 4, 2)),
        ),
        (
            {
                "sub": "s2",
                "email": "b@example.org",
                "email_verified": "true",
                "gender": "male",
                "birthdate": "1985",
            },
            ProviderProfile("s2", "b@example.org", "m", None, (1985, 12, 31)),
        ),
        (
            {"sub": "s3", "email": "c@example.org", "gender": "diverse", "birthdate": "0000-04-02"},
            ProviderProfile("s3"),
        ),
        (
            {"sub": "s4", "email": "d@example.org", "email_verified": False, "birthdate": "02/04/1990"},
            ProviderProfile("s4"),
        ),
        (
            {"sub": "s5", "email_verified": True, "birthdate": 1990, "address": {"country": "DEU"}},
            ProviderProfile("s5"),
        ),
        ({"sub": "s6", "gender": ["male"], "address": "Berlin, DE"}, ProviderProfile("s6")),
    ],
)
def test_profile_from_claims(claims: dict[str, Any], profile: ProviderProfile) -> None:
    """A verified e-mail only; gender, birth date and a two-letter country when well formed, else None."""
    assert profile_from_claims(claims) == profile


def test_profile_needs_a_subject() -> None:
    """No sub, no user."""
    with pytest.raises(ProviderError, match="no user"):
        profile_from_claims({"email": "a@example.org", "email_verified": True})


def test_userinfo_of_the_same_user_only() -> None:
    """The userinfo endpoint's claims complete the ID token's, if they are of the same subject."""
    merged = with_userinfo({"sub": "s1", "iss": ISSUER}, {"sub": "s1", "email": "a@example.org"})
    assert merged == {"sub": "s1", "iss": ISSUER, "email": "a@example.org"}
    with pytest.raises(ProviderError, match="another user"):
        with_userinfo({"sub": "s1"}, {"sub": "s2", "email": "a@example.org"})


# Whole logins against the real provider


@dataclass(frozen=True)
class OidcServer:
    """The oidc-provider of the tests: its issuer URL."""

    issuer: str


def _discovered(url: str) -> bool:
    """Whether `url` answers with a discovery document (blocking: set-up only)."""
    try:
        with urllib.request.urlopen(url, timeout=1) as answer:
            return "issuer" in json.load(answer)
    except OSError:
        return False


@pytest.fixture(scope="module")
def oidc_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OidcServer]:
    """tests/oidc_server running on a free loopback port, with the clients and accounts of these tests."""
    assert shutil.which("node"), "node is not installed: run scripts/test, which installs Debian's nodejs"
    assert (SERVER_DIR / "node_modules").is_dir(), (
        "run `npm ci --prefix tests/oidc_server` (scripts/test does)"
    )
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    clients = [
        {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "redirect_uris": [REDIRECT_URI]},
        {
            "client_id": ES256_CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uris": [REDIRECT_URI],
            "id_token_signed_response_alg": "ES256",
        },
    ]
    log = tmp_path_factory.mktemp("oidc") / "server.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            ["node", str(SERVER_DIR / "server.mjs"), str(port)],
            env={**os.environ, "OIDC_CLIENTS": json.dumps(clients), "OIDC_ACCOUNTS": json.dumps(ACCOUNTS)},
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 15
        while not _discovered(f"{issuer}/.well-known/openid-configuration"):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield OidcServer(issuer)
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def provider_of(issuer: str, client_id: str = CLIENT_ID, client_secret: str = CLIENT_SECRET) -> OidcProvider:
    """An OidcProvider of `issuer` on the test reactor, with the tests' short timeout."""
    return OidcProvider(issuer, client_id, client_secret, label="Test", timeout=TIMEOUT, reactor=reactor)


@dataclass(frozen=True)
class Login:
    """What the browser brought back to the redirect URI, and what vchat kept for the login's end."""

    code: str
    verifier: str
    nonce: str


async def log_in(provider: OidcProvider, login: str) -> Login:
    """Log `login` in at the provider as a browser does (see `come_back`), with a PKCE verifier made here."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    url = await provider.authorize_url(REDIRECT_URI, state, nonce, challenge)
    query = await come_back(url, login)
    assert query["state"] == state, query
    return Login(query["code"], verifier, nonce)


async def come_back(url: str, login: str) -> dict[str, str]:
    """Go to the authorization `url` as a browser does and log `login` in through oidc-provider's development
    pages (the login form, any password, then the consent form), cookies carried and redirects followed by
    hand: the query the provider sends the browser back to REDIRECT_URI with."""
    browser = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))
    response = await browser.get(url, allow_redirects=False)
    for _ in range(10):
        if response.code in (302, 303):
            url = urljoin(url, response.headers.getRawHeaders("location")[0])
            if url.startswith(REDIRECT_URI):
                return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}
            response = await browser.get(url, allow_redirects=False)
            continue
        page = await response.text()
        assert response.code == 200, page
        prompt = re.search(r'name="prompt" value="(\w+)"', page)
        assert prompt is not None, page
        form = (
            {"prompt": prompt[1], "login": login, "password": "any"}
            if prompt[1] == "login"
            else {"prompt": prompt[1]}
        )
        response = await browser.post(url, data=form, allow_redirects=False)
    raise AssertionError(f"the login did not come back to {REDIRECT_URI}")


@pytest_twisted.ensureDeferred
async def test_a_whole_login_through_vchats_flow(oidc_server: OidcServer) -> None:
    """vchat's own login flow (its state, nonce and PKCE verifier, which the provider checks: at least 43
    characters) against the real provider: the account, with the provider's gender and country."""
    store = MemoryStore()
    logins = Logins(lambda: succeed(store), {"oidc": provider_of(oidc_server.issuer)}, reactor, 3600)
    started = await logins.start("oidc", REDIRECT_URI)
    query = await come_back(started.url, "alice")
    account, cookie = await logins.finish("oidc", REDIRECT_URI, query, started.state_cookie)
    assert [identity.provider for identity in account.identities] == ["oidc"]
    assert (account.gender, account.country) == ("f", "FR")
    assert (await logins.account(cookie)) == account


@pytest_twisted.ensureDeferred
async def test_login_gives_the_profile(oidc_server: OidcServer) -> None:
    """The whole redirect flow: the profile with the verified e-mail (from userinfo), gender, birth date and
    country; discovery is then cached."""
    provider = provider_of(oidc_server.issuer)
    verifyObject(ILoginProvider, provider)
    assert (provider.name, provider.label) == ("oidc", "Test")
    login = await log_in(provider, "alice")
    profile = await provider.finish(login.code, REDIRECT_URI, login.verifier, login.nonce)
    assert profile == ProviderProfile("alice", "alice@example.org", "f", "FR", (1990, 4, 2))
    assert provider.authorize_url(REDIRECT_URI, "s", "n", "c").called  # no request: discovery is cached


@pytest_twisted.ensureDeferred
async def test_login_with_es256_id_token(oidc_server: OidcServer) -> None:
    """A client whose ID tokens the provider signs with ES256."""
    provider = provider_of(oidc_server.issuer, ES256_CLIENT_ID)
    login = await log_in(provider, "alice")
    profile = await provider.finish(login.code, REDIRECT_URI, login.verifier, login.nonce)
    assert (profile.subject, profile.email) == ("alice", "alice@example.org")


@pytest_twisted.ensureDeferred
async def test_unverified_email_is_not_taken(oidc_server: OidcServer) -> None:
    """email_verified false: no e-mail; an unknown gender, impossible birth date or country name: None."""
    provider = provider_of(oidc_server.issuer)
    login = await log_in(provider, "bob")
    assert await provider.finish(login.code, REDIRECT_URI, login.verifier, login.nonce) == ProviderProfile(
        "bob"
    )


@pytest_twisted.ensureDeferred
async def test_code_used_twice(oidc_server: OidcServer) -> None:
    """The provider refuses a code the second time; the message names neither code nor secret."""
    provider = provider_of(oidc_server.issuer)
    login = await log_in(provider, "alice")
    await provider.finish(login.code, REDIRECT_URI, login.verifier, login.nonce)
    with pytest.raises(ProviderError, match="refused the token request: invalid_grant") as refused:
        await provider.finish(login.code, REDIRECT_URI, login.verifier, login.nonce)
    assert login.code not in str(refused.value) and login.verifier not in str(refused.value)


@pytest.mark.parametrize(
    ("secret", "verifier", "nonce", "message"),
    [
        ("wrong-secret", None, None, "refused the token request: invalid_client"),
        (None, "a-verifier-that-is-not-the-one-of-this-login-at-all-00000", None, "invalid_grant"),
        (None, None, "another-nonce", "nonce"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_login_refused(
    oidc_server: OidcServer, secret: str | None, verifier: str | None, nonce: str | None, message: str
) -> None:
    """A wrong client secret, a PKCE verifier not of the challenge, an ID token for another nonce."""
    login = await log_in(provider_of(oidc_server.issuer), "alice")
    provider = provider_of(oidc_server.issuer, client_secret=secret or CLIENT_SECRET)
    with pytest.raises(ProviderError, match=message) as refused:
        await provider.finish(login.code, REDIRECT_URI, verifier or login.verifier, nonce or login.nonce)
    assert all(text not in str(refused.value) for text in (login.code, CLIENT_SECRET, "wrong-secret"))


@pytest_twisted.ensureDeferred
async def test_issuer_must_match(oidc_server: OidcServer) -> None:
    """A discovery document naming another issuer (here, without the configured trailing slash), or none."""
    with pytest.raises(ProviderError, match="another issuer"):
        await provider_of(oidc_server.issuer + "/").authorize_url(REDIRECT_URI, "s", "n", "c")
    with pytest.raises(ProviderError, match="HTTP 404"):
        await provider_of(oidc_server.issuer + "/elsewhere").authorize_url(REDIRECT_URI, "s", "n", "c")


# Providers that are down, silent, or serve what the test says


class StubIssuer(Resource):
    """A provider serving `answers` by path, counting requests; `discovery` and `jwks_uri` set for `issuer`."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.answers: dict[bytes, tuple[int, bytes]] = {}
        self.hits: Counter[bytes] = Counter()

    def serve(self, path: bytes, answer: Any, status: int = 200) -> None:
        """Answer `path` with `answer` as JSON (bytes as they are)."""
        self.answers[path] = (status, answer if isinstance(answer, bytes) else json.dumps(answer).encode())

    def render(self, request: Request) -> bytes:
        self.hits[request.path] += 1
        status, body = self.answers.get(request.path, (404, b"{}"))
        request.setResponseCode(status)
        return body


@pytest.fixture
def stub() -> Iterator[tuple[StubIssuer, str]]:
    """A StubIssuer listening on loopback with a good discovery document and key set, and its issuer URL."""
    resource = StubIssuer()
    port = reactor.listenTCP(0, Site(resource), interface="127.0.0.1")  # type: ignore[attr-defined]
    issuer = f"http://127.0.0.1:{port.getHost().port}"
    resource.serve(
        b"/.well-known/openid-configuration",
        {
            "issuer": issuer,
            "authorization_endpoint": f"{issuer}/authorize",
            "token_endpoint": f"{issuer}/token",
            "jwks_uri": f"{issuer}/jwks",
            "id_token_signing_alg_values_supported": ["RS256"],
        },
    )
    resource.serve(b"/jwks", {"keys": [public_jwk(RSA_KEY, "a")]})
    yield resource, issuer
    port.stopListening()


def serve_id_token(resource: StubIssuer, issuer: str, key: Any, kid: str, nonce: str) -> None:
    """Make the stub's token endpoint answer with a fresh ID token for `nonce` signed by `key` as `kid`."""
    now = reactor.seconds()  # type: ignore[attr-defined]
    token = make_id_token(key, "RS256", kid, iss=issuer, nonce=nonce, iat=now, exp=now + 60, sub="s")
    resource.serve(b"/token", {"id_token": token, "access_token": "a", "token_type": "Bearer"})


@pytest_twisted.ensureDeferred
async def test_keys_fetched_again_once_for_an_unknown_kid(stub: tuple[StubIssuer, str]) -> None:
    """The key set is cached; a token signed with a new key has it fetched again, once."""
    resource, issuer = stub
    provider = provider_of(issuer)
    for nonce in ("n1", "n2"):
        serve_id_token(resource, issuer, RSA_KEY, "a", nonce)
        assert (await provider.finish("c", REDIRECT_URI, "v", nonce)).subject == "s"
    assert resource.hits[b"/jwks"] == 1 and resource.hits[b"/.well-known/openid-configuration"] == 1
    resource.serve(b"/jwks", {"keys": [public_jwk(OTHER_RSA_KEY, "b")]})  # rotated
    serve_id_token(resource, issuer, OTHER_RSA_KEY, "b", "n3")
    assert (await provider.finish("c", REDIRECT_URI, "v", "n3")).subject == "s"
    assert resource.hits[b"/jwks"] == 2
    serve_id_token(resource, issuer, RSA_KEY, "a", "n4")  # the old key, no longer published
    with pytest.raises(UnknownKeyError):
        await provider.finish("c", REDIRECT_URI, "v", "n4")
    assert resource.hits[b"/jwks"] == 3


@pytest.mark.parametrize(
    ("path", "answer", "status", "message"),
    [
        (b"/.well-known/openid-configuration", b"{not json", 200, "discovery request answer is malformed"),
        (b"/token", b"<html>oops</html>", 500, "token request with HTTP 500"),
        (b"/token", {"access_token": "a"}, 200, "no ID token"),
        (b"/jwks", b"\x00" * 2_000_000, 200, "too long"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_answers(
    stub: tuple[StubIssuer, str], path: bytes, answer: Any, status: int, message: str
) -> None:
    """Malformed JSON, an HTTP error, a token answer without ID token, an endless key set."""
    resource, issuer = stub
    serve_id_token(resource, issuer, RSA_KEY, "a", "n")
    resource.serve(path, answer, status)
    with pytest.raises(ProviderError, match=message):
        await provider_of(issuer).finish("c", REDIRECT_URI, "v", "n")


class Silent(Protocol):
    """Reads and says nothing, or only `opening`; notes in `closed` when the client hangs up."""

    def __init__(self, opening: bytes, closed: list[bool]) -> None:
        self.opening = opening
        self.closed = closed

    def dataReceived(self, data: bytes) -> None:
        if self.opening and self.transport is not None:
            self.transport.write(self.opening)
            self.opening = b""

    def connectionLost(self, reason: object = None) -> None:
        self.closed.append(True)


@pytest.mark.parametrize(
    "opening", [b"", b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{"]
)
@pytest_twisted.ensureDeferred
async def test_silent_provider_times_out(opening: bytes) -> None:
    """A provider that never answers, or stops in the middle of its answer, fails the login after the
    timeout and is hung up on; the reactor turns all the while."""
    closed: list[bool] = []
    factory = Factory()
    factory.protocol = lambda: Silent(opening, closed)  # type: ignore[assignment]
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")  # type: ignore[attr-defined]
    ticks: list[float] = []
    ticker = LoopingCall(lambda: ticks.append(time.monotonic()))
    ticker.start(0.02)
    started = time.monotonic()
    try:
        with pytest.raises(ProviderError, match=f"did not answer the discovery request in {TIMEOUT:g} s"):
            await provider_of(f"http://127.0.0.1:{port.getHost().port}").authorize_url(
                REDIRECT_URI, "s", "n", "c"
            )
    finally:
        ticker.stop()
        await port.stopListening()
    assert TIMEOUT <= time.monotonic() - started < TIMEOUT + 1
    assert max(later - earlier for earlier, later in itertools.pairwise(ticks)) < 0.2
    for _ in range(50):  # the hang-up reaches the server a few reactor turns later
        if closed:
            break
        await deferLater(reactor, 0.01, lambda: None)
    assert closed == [True]


@pytest_twisted.ensureDeferred
async def test_provider_down() -> None:
    """Nothing listening: the login fails without waiting for the timeout."""
    started = time.monotonic()
    with pytest.raises(ProviderError, match="could not be reached for the discovery request"):
        await provider_of(f"http://127.0.0.1:{free_port()}").authorize_url(REDIRECT_URI, "s", "n", "c")
    assert time.monotonic() - started < 1  # Twisted's HostnameEndpoint waits 0.3 s for the next address
