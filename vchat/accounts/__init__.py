"""Accounts: login through Facebook, VK or an OpenID Connect provider, the login cookie, settings, deletion and
export (docs/accounts.md)."""
