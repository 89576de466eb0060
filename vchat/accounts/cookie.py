"""Signed cookies: the login cookie (which account a browser is logged in as, until when), and the values
`sign` and `verify` give any other short-lived cookie (the state of a login under way), signed with a server
secret.

Its value is `<payload>.<signature>`, both base64url without padding: the payload is the JSON
`{"a": account id, "e": expiry (whole seconds since the epoch)}`, the signature its HMAC-SHA256 under the
secret. Nothing else is in it (no name, no e-mail, no provider token). Reading a cookie checks the signature
in constant time, then the expiry against the `now` given: a cookie that was tampered with, has expired, or
is not one, gives None, never an error.

Pure Python: no Twisted, no clock.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
from typing import Any

COOKIE_NAME = "vchat_login"
MAX_COOKIE_CHARS = 512
"""The longest cookie value read; longer ones are not ours."""

_ACCOUNT_ID = re.compile(r"[!-~]{1,128}")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, payload.encode("ascii"), hashlib.sha256).digest())


def sign(key: bytes, data: dict[str, Any], now: float, ttl: float) -> str:
    """`data` with its expiry (`e`, `ttl` seconds from `now`), as `<payload>.<signature>`; ValueError for a
    short key, a time that is not one, or a value too long to read back."""
    if len(key) < 16:
        raise ValueError("the cookie key is at least 16 bytes")
    if not (math.isfinite(now) and math.isfinite(ttl) and ttl > 0):
        raise ValueError("now and a positive ttl are finite numbers of seconds")
    payload = _b64(json.dumps({**data, "e": int(now + ttl)}, separators=(",", ":")).encode())
    value = f"{payload}.{_signature(key, payload)}"
    if len(value) > MAX_COOKIE_CHARS:
        raise ValueError("the cookie would be too long to read back: is now + ttl a real time?")
    return value


def verify(key: bytes, value: object, now: float) -> dict[str, Any] | None:
    """The data of a value `sign` made with `key`, if it has not expired at `now`; else None."""
    if (
        not isinstance(value, str)
        or len(value) > MAX_COOKIE_CHARS
        or not value.isascii()  # HMAC and compare_digest take ASCII only
        or value.count(".") != 1
    ):
        return None
    payload, signature = value.split(".")
    if not hmac.compare_digest(_signature(key, payload), signature):
        return None
    try:
        data = json.loads(_unb64(payload))
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    expiry = data.get("e")
    if isinstance(expiry, bool) or not isinstance(expiry, int) or not expiry > now:  # a NaN `now` too
        return None
    return data


def issue_cookie(key: bytes, account_id: str, now: float, ttl: float) -> str:
    """The login cookie's value for `account_id`, valid for `ttl` seconds from `now`."""
    if not _ACCOUNT_ID.fullmatch(account_id):
        raise ValueError("an account id is 1 to 128 printable ASCII characters, no spaces")
    return sign(key, {"a": account_id}, now, ttl)


def read_cookie(key: bytes, value: object, now: float) -> str | None:
    """The account a login cookie's value names, if `key` signed it and it has not expired at `now`; else
    None."""
    data = verify(key, value, now)
    account_id = None if data is None else data.get("a")
    if not isinstance(account_id, str) or not _ACCOUNT_ID.fullmatch(account_id):
        return None
    return account_id
