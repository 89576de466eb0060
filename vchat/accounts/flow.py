"""A login from start to end (docs/accounts.md): the state kept in a signed cookie between the start and the
provider's return, the checks on the way back, and the account that comes of it.

The start makes a random `state` (against cross-site request forgery), a `nonce` (for an OpenID Connect ID
token) and a PKCE verifier, and signs them, with the provider's name and a ten-minute expiry, into a cookie
only /auth reads: so any node of a cluster can finish a login another started, and nothing is kept in memory.
The end checks that the provider's `state` is the cookie's, lets the provider exchange the code, refuses a user
under 18 and a deleted account, and records the login in the store (which links providers by verified e-mail,
kept only as a keyed hash), giving the login cookie's value.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from vchat.accounts.age import is_minor
from vchat.accounts.cookie import COOKIE_NAME, issue_cookie, read_cookie, sign, verify
from vchat.accounts.email import email_hash
from vchat.accounts.provider import ILoginProvider, ProviderError
from vchat.protocol.accounts import AccountView, IAccountLookup
from vchat.store.account_records import Account, Login, ProviderIdentity
from vchat.store.interface import IStore

STATE_COOKIE = "vchat_auth"
STATE_TTL = 600.0
"""Seconds a login may take at the provider."""
COOKIE_KEY = "login-cookie"
EMAIL_KEY = "email-hash"


class LoginRefused(Exception):
    """The login did not happen; `code` says why, for the page (`docs/accounts.md`), the message for the log."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class StartedLogin:
    """Where to send the browser, and the state cookie to set on the way."""

    url: str
    state_cookie: str


def code_challenge(verifier: str) -> str:
    """PKCE's S256 challenge of `verifier` (RFC 7636)."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


def account_view(account: Account) -> AccountView:
    """What signaling uses of `account` (and `welcome` shows its user)."""
    return AccountView(
        account.account_id,
        account.gender,
        tuple(sorted({identity.provider for identity in account.identities})),
        account.settings.as_json(),
    )


@implementer(IAccountLookup)
class Logins:
    """Starts and finishes logins through the configured providers, and reads login cookies."""

    cookie_name = COOKIE_NAME

    def __init__(
        self,
        store: Callable[[], Deferred[IStore]],
        providers: Mapping[str, ILoginProvider],
        clock: IReactorTime,
        login_ttl: float,
    ) -> None:
        """`store` gives the open store (`StoreService.whenOpen`); `login_ttl` is how long a login cookie is
        good for."""
        self.providers = dict(providers)
        self.login_ttl = login_ttl
        self._store = store
        self._clock = clock
        self._keys: dict[str, bytes] = {}

    async def _key(self, name: str) -> bytes:
        key = self._keys.get(name)
        if key is None:
            store = await self._store()
            key = self._keys[name] = await store.secret(name)
        return key

    async def start(self, name: str, redirect_uri: str) -> StartedLogin:
        """Begin a login through provider `name`, which is to come back to `redirect_uri`."""
        provider = self._provider(name)
        state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
        verifier = secrets.token_urlsafe(48)  # 64 characters: RFC 7636 wants 43 to 128
        now = self._clock.seconds()
        cookie = sign(
            await self._key(COOKIE_KEY), {"p": name, "s": state, "n": nonce, "v": verifier}, now, STATE_TTL
        )
        try:
            url = await provider.authorize_url(redirect_uri, state, nonce, code_challenge(verifier))
        except ProviderError as e:
            raise LoginRefused("provider", f"{name}: {e}") from None
        return StartedLogin(url, cookie)

    async def finish(
        self, name: str, redirect_uri: str, query: Mapping[str, str], state_cookie: str | None
    ) -> tuple[Account, str]:
        """End a login the provider sent back with `query`: the account, and the login cookie's value.
        LoginRefused, saying why, if it cannot be."""
        provider = self._provider(name)
        now = self._clock.seconds()
        started = verify(await self._key(COOKIE_KEY), state_cookie, now)
        state = query.get("state")
        if (
            started is None
            or started.get("p") != name
            or not isinstance(state, str)
            or not isinstance(started.get("s"), str)
            or not hmac.compare_digest(started["s"].encode(), state.encode("utf-8", "replace"))
        ):
            raise LoginRefused("state", "the login's state is missing, expired or not this browser's")
        if "error" in query or "code" not in query:
            raise LoginRefused("cancelled", f"{name} sent no code: the user cancelled, or it refused")
        try:
            profile = await provider.finish(query["code"], redirect_uri, str(started["v"]), str(started["n"]))
        except ProviderError as e:
            raise LoginRefused("provider", f"{name}: {e}") from None
        today = datetime.fromtimestamp(now, UTC).date()
        if is_minor(profile.birth_date, today):
            raise LoginRefused("under_18", "the provider's birth date says the user is under 18")
        hashed = None if profile.email is None else email_hash(await self._key(EMAIL_KEY), profile.email)
        store = await self._store()
        identity = ProviderIdentity(name, profile.subject)  # type: ignore[arg-type]
        account = await store.log_in(Login(identity, hashed, profile.gender, profile.country, now))
        if account.deleted:
            raise LoginRefused("deleted", "the account was deleted at its user's request")
        return account, issue_cookie(await self._key(COOKIE_KEY), account.account_id, now, self.login_ttl)

    async def account(self, cookie: str | None) -> Account | None:
        """The account a login cookie's value names, if it is valid and the account not deleted."""
        if cookie is None:
            return None
        account_id = read_cookie(await self._key(COOKIE_KEY), cookie, self._clock.seconds())
        if account_id is None:
            return None
        store = await self._store()
        account = await store.get_account(account_id)
        return None if account is None or account.deleted else account

    def account_of(self, cookie: str | None) -> Deferred[AccountView | None]:
        """`IAccountLookup`: the account as signaling uses it."""
        return Deferred.fromCoroutine(self._view(cookie))

    async def _view(self, cookie: str | None) -> AccountView | None:
        account = await self.account(cookie)
        return None if account is None else account_view(account)

    def _provider(self, name: str) -> ILoginProvider:
        provider = self.providers.get(name)
        if provider is None:
            raise LoginRefused("provider", f"no login provider {name!r} is configured")
        return provider
