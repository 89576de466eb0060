"""Web origins: the `Origin` a browser sends when it opens a WebSocket, normalised, and the allowlist check."""

from __future__ import annotations

import ipaddress
import re

_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST_NAME = re.compile(r"[a-z0-9_.-]+")  # browsers send host names in ASCII (IDNA), without brackets


def web_origin(value: object) -> str:
    """A web origin as browsers send it in `Origin`: scheme://host[:port], lower-case, the default port left out.

    ValueError if `value` is not one (a path, credentials, "null", another scheme).
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a non-empty string")
    scheme, sep, rest = value.strip().partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in _DEFAULT_PORTS or not rest or any(c in rest for c in "/?#@ "):
        raise ValueError("expected an origin such as https://chat.example.org or http://localhost:8080")
    rest = rest.lower()
    if rest.startswith("["):  # an IPv6 literal: [::1]:8080
        inside, bracket, after = rest[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise ValueError("an IPv6 host must be in brackets, such as [::1]:8080")
        host, colon, port_text = _ipv6_host(inside), after[:1], after[1:]
    else:
        host, colon, port_text = rest.partition(":")
        if not _HOST_NAME.fullmatch(host):
            raise ValueError("the origin has no valid host")
    if not colon:
        return f"{scheme}://{host}"
    if not (port_text.isascii() and port_text.isdigit()) or not 1 <= int(port_text) <= 65535:
        raise ValueError("not a port number (1-65535)")
    number = int(port_text)
    return f"{scheme}://{host}" if number == _DEFAULT_PORTS[scheme] else f"{scheme}://{host}:{number}"


def _ipv6_host(inside: str) -> str:
    """The bracketed IPv6 literal of an origin, in its compressed form, as browsers serialise it."""
    try:
        return f"[{ipaddress.IPv6Address(inside).compressed}]"
    except ValueError:
        raise ValueError("not an IPv6 address in brackets") from None


def origin_allowed(origin: str | None, allowed: frozenset[str]) -> bool:
    """Whether a handshake with this `Origin` ("" or None: none sent) may open a WebSocket.

    Any may when `allowed` (normalised by `web_origin`) is empty; otherwise only an exact match of scheme, host and
    port: a missing or malformed origin never.
    """
    if not allowed:
        return True
    try:
        return web_origin(origin) in allowed
    except ValueError:
        return False
