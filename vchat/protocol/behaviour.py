"""The seam between signaling and automatic moderation: the switchboard tells an `IBehaviourObserver` what each
session does, and the moderation service (a layer above) implements it, so signaling needs nothing of moderation.

Only a session's own doings are told: that it was matched, how long a match lasted and which side ended it, its
own chat text, and that it ended; never who its partner was.
"""

from __future__ import annotations

from zope.interface import Interface

from vchat.protocol.session import Session


class IBehaviourObserver(Interface):
    """Watches what sessions do; every method returns at once and never raises."""

    def match_started(session: Session) -> None:
        """`session` was matched."""

    def match_ended(session: Session, seconds: float, partner_left: bool) -> None:
        """A match of `session` that lasted `seconds` ended; `partner_left`: the partner ended it."""

    def chat_sent(session: Session, text: str) -> None:
        """`session` sent a chat message with this text (relayed already)."""

    def session_ended(session: Session) -> None:
        """`session` ended for good: forget it."""
