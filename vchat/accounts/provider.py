"""What vchat needs of a login provider (Facebook, VK, an OpenID Connect provider): where to send the browser,
and, with the code it brings back, who the user is. Implemented in vchat.accounts.facebook, .vk and .oidc.

A provider's answer is reduced at once to a `ProviderProfile`: the provider's id of the user, the e-mail only if
the provider verified it, gender, country, birth date. The access token is used for the profile and dropped;
nothing of the provider's answer is logged.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

DEFAULT_TIMEOUT = 10.0
"""Seconds a provider has to answer one request."""


class ProviderError(Exception):
    """The provider refused the login or could not be used (down, slow, an answer that makes no sense); the
    message is for the user and the log: it names no secret, token or code."""


@dataclass(frozen=True, slots=True)
class ProviderProfile:
    """Who logged in, as the provider says: its id of the user, the e-mail address if the provider verified it
    (None otherwise: an unverified address is never used), the gender ("m" or "f") and country (ISO 3166
    alpha-2) if it gave them, and the birth date (year, month, day) if it gave one with a year (read to refuse
    a login under 18, never kept)."""

    subject: str
    email: str | None = None
    gender: str | None = None
    country: str | None = None
    birth_date: tuple[int, int, int] | None = None


class ILoginProvider(Interface):
    """One login provider, configured."""

    name: str = Attribute('"facebook", "vk" or "oidc": the name in /auth/{name}/start and in the store')
    label: str = Attribute("what the login button says, e.g. Facebook")

    def authorize_url(redirect_uri: str, state: str, nonce: str, code_challenge: str) -> Deferred[str]:
        """Where to send the browser to log in: the provider's page, which comes back to `redirect_uri` with
        `state` and a code. `code_challenge` is PKCE's S256 challenge (ignored by a provider without PKCE),
        `nonce` goes into an OpenID Connect ID token. Fails with ProviderError if the provider cannot be used
        (an OpenID Connect provider's discovery failed)."""

    def finish(code: str, redirect_uri: str, code_verifier: str, nonce: str) -> Deferred[ProviderProfile]:
        """Exchange the code for a token (with PKCE's verifier where used) and read who logged in; fails with
        ProviderError, saying why, if the provider refuses (a code used twice, expired, or not its own) or
        cannot be reached within the timeout."""
