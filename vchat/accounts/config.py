"""The accounts' options (`--facebook-app-id` and their kin) and the login routes they describe."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.python import usage
from twisted.web.resource import IResource

from vchat.accounts.facebook import FacebookProvider
from vchat.accounts.flow import Logins
from vchat.accounts.me import ME_PREFIX, OwnRoutes
from vchat.accounts.oidc import OidcProvider
from vchat.accounts.provider import ILoginProvider
from vchat.accounts.routes import AUTH_PREFIX, AuthRoutes
from vchat.accounts.vk import VkProvider
from vchat.options import Setting, number, text
from vchat.store.interface import IStore


def http_url(value: Any) -> str:
    """An http(s) URL setting."""
    if (
        not isinstance(value, str)
        or urlsplit(value).scheme not in ("http", "https")
        or not urlsplit(value).netloc
    ):
        raise ValueError("expected an http:// or https:// URL")
    return value.rstrip("/")


ACCOUNT_SETTINGS = (
    Setting(
        "require-login",
        False,
        bool,
        "refuse a hello without a login (error login_required, close 4009); needs a login provider",
        flag=True,
    ),
    Setting(
        "deletion-grace",
        2592000.0,
        number,
        "seconds from an account's deletion (inaccessible at once) to its purge (30 days)",
        0,
    ),
    Setting("auth-ttl", 2592000.0, number, "seconds a login lasts (the login cookie's life: 30 days)", 60),
    Setting(
        "public-url",
        None,
        http_url,
        "where browsers reach this site (https://chat.example.org), for the login providers' redirect URIs "
        "[default: each request's scheme and Host]",
    ),
    Setting("facebook-app-id", None, text, "Facebook app id: enables Facebook login [default: off]"),
    Setting("facebook-app-secret", None, text, "Facebook app secret (keep it in --config)"),
    Setting(
        "facebook-dialog-url",
        "https://www.facebook.com/v19.0/dialog/oauth",
        http_url,
        "Facebook's login dialog",
    ),
    Setting("facebook-graph-url", "https://graph.facebook.com/v19.0", http_url, "Facebook's Graph API"),
    Setting("vk-app-id", None, text, "VK app id: enables VK login [default: off]"),
    Setting("vk-app-secret", None, text, "VK app secret (keep it in --config)"),
    Setting("vk-oauth-url", "https://oauth.vk.com", http_url, "VK's OAuth server"),
    Setting("vk-api-url", "https://api.vk.com/method", http_url, "VK's API"),
    Setting(
        "oidc-issuer",
        None,
        http_url,
        "an OpenID Connect provider's issuer (https://accounts.google.com): enables its login [default: off]",
    ),
    Setting("oidc-client-id", None, text, "the OpenID Connect client id"),
    Setting("oidc-client-secret", None, text, "the OpenID Connect client secret (keep it in --config)"),
    Setting("oidc-label", "OpenID Connect", text, "what the OpenID Connect login button says, e.g. Google"),
)

_PAIRS = (
    ("facebook-app-id", "facebook-app-secret"),
    ("vk-app-id", "vk-app-secret"),
    ("oidc-issuer", "oidc-client-id", "oidc-client-secret"),
)


def check_account_options(options: Mapping[str, Any]) -> None:
    """`UsageError` unless each provider's options are given together, and a required login has one."""
    for names in _PAIRS:
        given = [name for name in names if options[name]]
        if given and len(given) != len(names):
            missing = ", ".join(f"--{name}" for name in names if name not in given)
            raise usage.UsageError(f"--{given[0]} needs {missing}")
    if options["require-login"] and not any(options[names[0]] for names in _PAIRS):
        raise usage.UsageError(
            "--require-login needs a login provider (--facebook-app-id, --vk-app-id or --oidc-issuer)"
        )


# Each provider: its name, its class, and the options that give its arguments, in order (the first enables it).
_PROVIDERS: tuple[tuple[str, Any, tuple[str, ...]], ...] = (
    ("facebook", FacebookProvider, ("app-id", "app-secret", "dialog-url", "graph-url")),
    ("vk", VkProvider, ("app-id", "app-secret", "oauth-url", "api-url")),
    ("oidc", OidcProvider, ("issuer", "client-id", "client-secret", "label")),
)


def login_providers(options: Mapping[str, Any], reactor: Any) -> dict[str, ILoginProvider]:
    """The providers the options enable, by name."""
    return {
        name: kind(*(options[f"{name}-{option}"] for option in names), reactor=reactor)
        for name, kind, names in _PROVIDERS
        if options[f"{name}-{names[0]}"]
    }


def account_routes(
    options: Mapping[str, Any],
    reactor: Any,
    store: Callable[[], Deferred[IStore]],
    end_sessions: Callable[[str], object],
) -> tuple[Logins, dict[bytes, IResource]] | None:
    """The logins, and the routes (/auth/..., /api/me...) by path prefix, for the providers the options
    enable; None when none is. `end_sessions(account_id)` ends a deleted account's live sessions."""
    providers = login_providers(options, reactor)
    if not providers:
        return None
    logins = Logins(store, providers, reactor, options["auth-ttl"])
    own = OwnRoutes(logins, store, end_sessions, reactor, options["deletion-grace"])
    return logins, {
        AUTH_PREFIX: AuthRoutes(logins, options["public-url"]),
        ME_PREFIX: own.resource(),
    }
