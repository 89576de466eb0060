"""A STUN responder (RFC 8489 Binding, RFC 3489 clients, RFC 5780 NAT behaviour discovery).

`message` is the pure codec, `responder` the pure decision, `limiter` the per-source rate limit, `udp` and
`tcp` the thin Twisted protocols, and `service` the service that owns the listeners.
"""

from __future__ import annotations

from vchat.stun.config import STUN_SETTINGS, StunConfig, stun_config
from vchat.stun.responder import AddressPair, Responder
from vchat.stun.service import StunService, make_stun_service

__all__ = [
    "STUN_SETTINGS",
    "AddressPair",
    "Responder",
    "StunConfig",
    "StunService",
    "make_stun_service",
    "stun_config",
]
