"""Login with Facebook, as its manual login flow documents it: the browser goes to the OAuth dialog, which
comes back with a code; the server exchanges the code for an access token at the Graph API's
/oauth/access_token and reads /me with it, proving the app secret with `appsecret_proof`. No PKCE; the nonce
is unused.

The Graph API gives only a confirmed e-mail address (none if the user has none confirmed or declined it), so
an address it gives counts as verified. URLs are built and answers read by pure functions.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from vchat.accounts import http
from vchat.accounts.provider import ProviderError, ProviderProfile

LABEL = "Facebook"
SCOPE = "email,user_gender,user_birthday,user_location"
PROFILE_FIELDS = "id,email,gender,birthday,location{location{country_code}}"

_GENDERS = {"male": "m", "female": "f"}
_COUNTRY = re.compile(r"[A-Za-z]{2}", re.ASCII)


def authorize_url(dialog_url: str, app_id: str, redirect_uri: str, state: str) -> str:
    """The login dialog's URL, asking for the e-mail address, gender, birthday and location."""
    return http.login_page_url(dialog_url, app_id, redirect_uri, state, SCOPE)


def token_url(graph_url: str, app_id: str, app_secret: str, redirect_uri: str, code: str) -> str:
    """The URL that exchanges `code` for an access token."""
    endpoint = http.endpoint_url(graph_url, "oauth/access_token")
    return http.code_exchange_url(endpoint, app_id, app_secret, redirect_uri, code)


def appsecret_proof(app_secret: str, access_token: str) -> str:
    """HMAC-SHA256 of the access token keyed with the app secret, in hex: proves a Graph call is the app's."""
    return hmac.new(app_secret.encode(), access_token.encode(), hashlib.sha256).hexdigest()


def profile_url(graph_url: str, app_secret: str, access_token: str) -> str:
    """The URL of the user's profile: the fields vchat reads, nothing more."""
    query = {
        "fields": PROFILE_FIELDS,
        "access_token": access_token,
        "appsecret_proof": appsecret_proof(app_secret, access_token),
    }
    return f"{http.endpoint_url(graph_url, 'me')}?{urlencode(query)}"


def _error(found: dict[str, Any]) -> str | None:
    """The message of the Graph API's `{"error": {"message", "type", "code"}}`, if it is one."""
    error = found.get("error")
    if error is None:
        return None
    return str(error.get("message", "")) if isinstance(error, dict) else str(error)


def read_token(answer: http.Answer) -> str:
    """The access token in /oauth/access_token's answer; ProviderError if there is none."""
    token = http.read_text(http.read_json(LABEL, answer, _error), "access_token")
    if token is None:
        raise ProviderError(f"{LABEL} gave no access token")
    return token


def read_profile(answer: http.Answer) -> ProviderProfile:
    """Who logged in, from /me's answer; ProviderError if it has no user id. Fields that are missing or not
    as documented are left out."""
    found = http.read_json(LABEL, answer, _error)
    subject = http.read_text(found, "id")
    if subject is None:
        raise ProviderError(f"{LABEL} gave no user id")
    gender = http.read_text(found, "gender")
    return ProviderProfile(
        subject=subject,
        email=http.read_email(found, "email"),
        gender=None if gender is None else _GENDERS.get(gender),
        country=_country(found.get("location")),
        birth_date=http.read_birth_date(found, "birthday", "facebook"),
    )


def _country(location: object) -> str | None:
    """The country code of the user's `location{location{country_code}}`, upper-cased, if it is one."""
    place = location.get("location") if isinstance(location, dict) else None
    code = place.get("country_code") if isinstance(place, dict) else None
    return code.upper() if isinstance(code, str) and _COUNTRY.fullmatch(code) else None


@dataclass(eq=False)
class FacebookProvider(http.CodeFlowProvider):
    """`ILoginProvider` for Facebook Login, with an app's id and secret."""

    dialog_url: str = "https://www.facebook.com/v19.0/dialog/oauth"
    graph_url: str = "https://graph.facebook.com/v19.0"

    name = "facebook"
    label = LABEL

    def _login_page(self, redirect_uri: str, state: str) -> str:
        return authorize_url(self.dialog_url, self.app_id, redirect_uri, state)

    async def _profile(self, code: str, redirect_uri: str) -> ProviderProfile:
        url = token_url(self.graph_url, self.app_id, self.app_secret, redirect_uri, code)
        token = read_token(await self._client.get(url))
        return read_profile(await self._client.get(profile_url(self.graph_url, self.app_secret, token)))
