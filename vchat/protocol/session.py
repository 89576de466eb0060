"""A user's session and a match between two sessions: plain state, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from twisted.internet.interfaces import IDelayedCall
from zope.interface import Interface

from vchat.protocol.messages import Search


class IPeer(Interface):
    """The connection a session currently speaks through."""

    def send(message: dict[str, Any]) -> None:
        """Deliver one server message to the client."""

    def close(code: int, reason: str) -> None:
        """Close the connection with a WebSocket close code."""


class SessionState(Enum):
    """Where a session is in its life; see `Session.enter` for the allowed moves."""

    IDLE = "idle"
    SEARCHING = "searching"
    MATCHED = "matched"
    AWAY = "away"  # connection lost abnormally; kept for the resume grace window
    CLOSED = "closed"


_MOVES: dict[SessionState, frozenset[SessionState]] = {
    SessionState.IDLE: frozenset({SessionState.SEARCHING, SessionState.AWAY, SessionState.CLOSED}),
    SessionState.SEARCHING: frozenset(
        {SessionState.IDLE, SessionState.MATCHED, SessionState.AWAY, SessionState.CLOSED}
    ),
    SessionState.MATCHED: frozenset(
        {SessionState.IDLE, SessionState.SEARCHING, SessionState.AWAY, SessionState.CLOSED}
    ),
    SessionState.AWAY: frozenset({SessionState.IDLE, SessionState.MATCHED, SessionState.CLOSED}),
    SessionState.CLOSED: frozenset(),
}


@dataclass(eq=False, slots=True)
class Session:
    """One user from `hello` until the session ends (it may outlive a connection)."""

    session_id: str
    gender: str
    country: str | None
    lang: str | None
    resume_token: str
    peer: IPeer | None
    state: SessionState = SessionState.IDLE
    filters: Search | None = None
    match: Match | None = None
    away_timer: IDelayedCall | None = None
    address: str | None = None  # the current connection's client address, for IP bans; never sent
    device_id: str | None = None  # `hello.client.device_id`, for device bans

    def enter(self, state: SessionState) -> None:
        """Move to `state`, refusing moves the life cycle does not allow."""
        if state is not self.state and state not in _MOVES[self.state]:
            raise RuntimeError(f"session cannot go from {self.state.value} to {state.value}")
        self.state = state

    def profile(self) -> dict[str, str | None]:
        """What a partner is told about this user."""
        return {"country": self.country, "gender": self.gender, "lang": self.lang}


@dataclass(eq=False, slots=True)
class Match:
    """Two sessions talking to each other; exists only while the match lasts."""

    match_id: str
    offer: Session
    answer: Session

    @property
    def sessions(self) -> tuple[Session, Session]:
        """Both sides, offerer first."""
        return (self.offer, self.answer)

    def partner_of(self, session: Session) -> Session:
        """The other side of the match."""
        return self.answer if session is self.offer else self.offer

    def role_of(self, session: Session) -> str:
        """ "offer" or "answer": who starts the WebRTC negotiation."""
        return "offer" if session is self.offer else "answer"

    def describe_for(self, session: Session) -> dict[str, Any]:
        """The match as `session` sees it (in `matched` and a resumed `welcome`)."""
        return {
            "match_id": self.match_id,
            "role": self.role_of(session),
            "partner": self.partner_of(session).profile(),
        }
