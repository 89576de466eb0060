"""A user's session and a match between two sessions: plain state, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from twisted.internet.interfaces import IDelayedCall
from zope.interface import Interface

from vchat.outcome import Outcome
from vchat.protocol.accounts import AccountView
from vchat.protocol.messages import ClientFact, Search


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
    started_at: float = 0.0  # when the session said hello (a resume keeps it)
    device_id: str | None = None  # `hello.client.device_id`, for device bans
    client: dict[str, ClientFact] = field(
        default_factory=dict
    )  # `hello.client`, kept for reports of this user
    # The last match that ended, for a report sent just after it (memory only: never stored or logged).
    previous: PreviousMatch | None = None
    # match id -> the id of this user's report of it: a second report gets the first one's id. Only the current
    # and the previous match's ids are kept.
    reports: dict[str, Outcome[str]] = field(default_factory=dict)
    # The node holding this session when it is another node's, standing in for a partner there; else None.
    node: str | None = None
    # The account of a logged-in user (from the login cookie of its latest connection); None: anonymous.
    account: AccountView | None = None

    @property
    def user_id(self) -> str:
        """Who the user is, for bans and reports: its account's id when logged in, else the session's id."""
        return self.account.user_id if self.account is not None else self.session_id

    def enter(self, state: SessionState) -> None:
        """Move to `state`, refusing moves the life cycle does not allow."""
        if state is not self.state and state not in _MOVES[self.state]:
            raise RuntimeError(f"session cannot go from {self.state.value} to {state.value}")
        self.state = state

    def profile(self) -> dict[str, str | None]:
        """What a partner is told about this user."""
        return {"country": self.country, "gender": self.gender, "lang": self.lang}

    def identity(self) -> Identity:
        """Who this user is, as a report of them records it."""
        return Identity(self.user_id, self.device_id, self.address, dict(self.client))


@dataclass(frozen=True, slots=True)
class Identity:
    """What a report records of a user: ids (user_id is the session id until accounts), address, client facts."""

    user_id: str
    device_id: str | None
    address: str | None
    client: dict[str, ClientFact]


@dataclass(frozen=True, slots=True)
class PreviousMatch:
    """A session's last ended match: enough to report the partner shortly after it ended (who the partner is,
    and its session, which is kept apart from this one once reported), nothing more."""

    match_id: str
    partner: Identity
    ended_at: float
    partner_session: str


@dataclass(eq=False, slots=True)
class Match:
    """Two sessions talking to each other; exists only while the match lasts."""

    match_id: str
    offer: Session
    answer: Session
    started_at: float = 0.0  # when the two were matched, for how long the match lasted

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
