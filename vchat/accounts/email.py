"""The keyed hash of an e-mail address: what links two providers' logins of one person, without keeping the
address. Pure Python."""

from __future__ import annotations

import hashlib
import hmac


def email_hash(key: bytes, email: str) -> str:
    """HMAC-SHA256 of the address (trimmed, lower-cased), in hex; ValueError if it is no address."""
    if not isinstance(email, str):
        raise ValueError("not an e-mail address")
    address = email.strip().lower()
    local, at, domain = address.rpartition("@")
    if (
        not (at and local and domain)
        or "@" in local
        or any(c.isspace() for c in address)
        or len(address) > 320
    ):
        raise ValueError("not an e-mail address")
    return hmac.new(key, address.encode("utf-8"), hashlib.sha256).hexdigest()
