"""Login with VK, as its Authorization Code Flow documents it: the browser goes to oauth.vk.com/authorize,
which comes back with a code; the server exchanges the code for an access token (and the user's id) at
/access_token and reads the user with the API's users.get. No PKCE; the nonce is unused.

VK puts `email` in the token answer only when the user has a confirmed address and granted it, so an address
it gives counts as verified. VK gives a country as its own id and a title, not an ISO code: the country is
left to GeoIP. URLs are built and answers read by pure functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from vchat.accounts import http
from vchat.accounts.provider import ProviderError, ProviderProfile

LABEL = "VK"
USER_FIELDS = "sex,bdate,country"

_SEXES = {1: "f", 2: "m"}


@dataclass(frozen=True, slots=True)
class Token:
    """VK's answer to the code: the access token, the user's id and, if given, the verified e-mail address."""

    access_token: str
    user_id: int
    email: str | None


def authorize_url(oauth_url: str, app_id: str, redirect_uri: str, state: str, api_version: str) -> str:
    """The login page's URL, asking for the e-mail address."""
    return http.login_page_url(
        http.endpoint_url(oauth_url, "authorize"),
        app_id,
        redirect_uri,
        state,
        "email",
        display="page",
        v=api_version,
    )


def token_url(oauth_url: str, app_id: str, app_secret: str, redirect_uri: str, code: str) -> str:
    """The URL that exchanges `code` for an access token."""
    endpoint = http.endpoint_url(oauth_url, "access_token")
    return http.code_exchange_url(endpoint, app_id, app_secret, redirect_uri, code)


def users_url(api_url: str, token: Token, api_version: str) -> str:
    """The users.get URL for the user who logged in: the fields vchat reads, nothing more."""
    query = {
        "user_ids": str(token.user_id),
        "fields": USER_FIELDS,
        "access_token": token.access_token,
        "v": api_version,
    }
    return f"{http.endpoint_url(api_url, 'users.get')}?{urlencode(query)}"


def _error(found: dict[str, Any]) -> str | None:
    """The message of OAuth's `{"error", "error_description"}` or the API's `{"error": {"error_msg"}}`."""
    error = found.get("error")
    if error is None:
        return None
    if isinstance(error, dict):
        return str(error.get("error_msg", ""))
    return str(found.get("error_description") or error)


def _integer(value: object) -> int | None:
    """`value` if it is a JSON integer (not a boolean)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_token(answer: http.Answer) -> Token:
    """The token, user id and e-mail address in /access_token's answer; ProviderError without token or id."""
    found = http.read_json(LABEL, answer, _error)
    access_token = http.read_text(found, "access_token")
    user_id = _integer(found.get("user_id"))
    if access_token is None or user_id is None or user_id <= 0:
        raise ProviderError(f"{LABEL} gave no access token or user id")
    return Token(access_token, user_id, http.read_email(found, "email"))


def read_user(answer: http.Answer, token: Token) -> ProviderProfile:
    """Who logged in, from users.get's answer for `token`'s user; ProviderError if it is not that user. Fields
    that are missing or not as documented are left out."""
    users = http.read_json(LABEL, answer, _error).get("response")
    user = users[0] if isinstance(users, list) and users else None
    if not isinstance(user, dict) or _integer(user.get("id")) != token.user_id:
        raise ProviderError(f"{LABEL} did not give the user who logged in")
    return ProviderProfile(
        subject=str(token.user_id),
        email=token.email,
        gender=_SEXES.get(_integer(user.get("sex")) or 0),
        birth_date=http.read_birth_date(user, "bdate", "vk"),
    )


@dataclass(eq=False)
class VkProvider(http.CodeFlowProvider):
    """`ILoginProvider` for VK ID's OAuth, with an app's id and secret (its "secure key")."""

    oauth_url: str = "https://oauth.vk.com"
    api_url: str = "https://api.vk.com/method"
    api_version: str = "5.131"

    name = "vk"
    label = LABEL

    def _login_page(self, redirect_uri: str, state: str) -> str:
        return authorize_url(self.oauth_url, self.app_id, redirect_uri, state, self.api_version)

    async def _profile(self, code: str, redirect_uri: str) -> ProviderProfile:
        url = token_url(self.oauth_url, self.app_id, self.app_secret, redirect_uri, code)
        token = read_token(await self._client.get(url))
        return read_user(await self._client.get(users_url(self.api_url, token, self.api_version)), token)
