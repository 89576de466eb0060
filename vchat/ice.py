"""The ICE servers each client is told to use: our STUN URLs, and TURN with time-limited credentials."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any


def turn_credentials(secret: str, session_id: str, now: float, ttl: float) -> tuple[str, str]:
    """TURN REST API credentials (coturn's `use-auth-secret`): `<expiry>:<session id>` and its HMAC-SHA1."""
    username = f"{int(now + ttl)}:{session_id}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii")


def turn_url(value: Any) -> str:
    """A TURN server URL (RFC 7065): turn: or turns:."""
    if not isinstance(value, str) or not value.startswith(("turn:", "turns:")):
        raise ValueError("expected a turn: or turns: URL")
    return value


def stun_url(value: Any) -> str:
    """A STUN server URL (RFC 7064): stun: or stuns:."""
    if not isinstance(value, str) or not value.startswith(("stun:", "stuns:")) or len(value) <= len("stun:"):
        raise ValueError("expected a stun: or stuns: URL")
    return value


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


@dataclass(frozen=True, slots=True)
class IcePolicy:
    """What `welcome` tells clients about ICE, built from the operator's options."""

    stun_ports: tuple[int, ...] = ()
    stun_urls: tuple[str, ...] = ()  # STUN servers run elsewhere (another process of the cluster, say)
    public_host: str | None = None
    turn_urls: tuple[str, ...] = ()
    turn_secret: str | None = None
    turn_ttl: float = 86400.0
    relay_only: bool = False

    def servers(self, session_id: str, request_host: str, now: float) -> list[dict[str, Any]]:
        """`RTCIceServer` maps for one session; STUN on the public host, else the host the client reached."""
        host = _url_host(self.public_host or request_host)
        urls = [f"stun:{host}:{port}" for port in self.stun_ports]  # stun: URLs are UDP (RFC 7064)
        urls.extend(self.stun_urls)
        servers: list[dict[str, Any]] = [{"urls": urls}] if urls else []
        if self.turn_urls and self.turn_secret:
            username, credential = turn_credentials(self.turn_secret, session_id, now, self.turn_ttl)
            servers.append({"urls": list(self.turn_urls), "username": username, "credential": credential})
        return servers

    @property
    def transport_policy(self) -> str:
        """`iceTransportPolicy` for `RTCPeerConnection`: "relay" hides users' addresses from partners."""
        return "relay" if self.relay_only else "all"
