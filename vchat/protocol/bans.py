"""The seam between signaling and moderation: what a banned client is told, and who says whether it is banned.

The protocol asks an `IBanCheck` at `hello`; the moderation service (a layer above) implements it, so signaling
needs nothing of moderation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from zope.interface import Interface


@dataclass(frozen=True, slots=True)
class BanNotice:
    """Why a client is barred and until when (seconds since the epoch; None: for good)."""

    reason: str
    until: float | None

    def message(self) -> dict[str, Any]:
        """The `banned` message (`until` in whole seconds, rounded up, or null)."""
        until = None if self.until is None else math.ceil(self.until)
        return {"type": "banned", "reason": self.reason, "until": until}


class IBanCheck(Interface):
    """Answers at once, without waiting for the disk, whether a client is banned."""

    def check(user_id: str | None, ip: str | None, device_id: str | None) -> BanNotice | None:
        """The notice for a client with these identities, or None if no active ban bars it."""
