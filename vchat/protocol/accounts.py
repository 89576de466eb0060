"""What signaling knows of a logged-in user's account (docs/accounts.md), and how it asks for it: the login
cookie a WebSocket handshake carries is read by the accounts layer (vchat.accounts), through this interface."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface


@dataclass(frozen=True, slots=True)
class AccountView:
    """A logged-in user's account as signaling uses it: its id (the user id bans and reports name), the gender
    its providers gave, the providers linked, and the settings (as `welcome` shows them)."""

    user_id: str
    gender: str | None
    providers: tuple[str, ...]
    settings: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """The account as `welcome` tells its user."""
        return {"user_id": self.user_id, "providers": list(self.providers), "settings": dict(self.settings)}


class IAccountLookup(Interface):
    """Finds the account a login cookie names."""

    cookie_name: str = Attribute(
        "the login cookie's name, which the WebSocket handshake's Cookie header is read for"
    )

    def account_of(cookie: str | None) -> Deferred[AccountView | None]:
        """The account the login cookie's value names, if it is valid and the account usable; else None."""
