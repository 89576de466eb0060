"""A session of another node of a cluster, as a match with a session of this node needs it (docs/cluster.md):
what its partner is told of it and what a report of it records, how nodes describe it to each other (in
`offer`, `accept` and a handed session's match), and the stand-in `Session` that takes its place here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vchat.protocol.accounts import AccountView
from vchat.protocol.messages import ClientFact
from vchat.protocol.session import Session, SessionState

_TEXT_FIELDS = ("session_id", "gender", "country", "lang", "device_id", "address", "user_id")


@dataclass(frozen=True, slots=True)
class RemotePartner:
    """A session of node `node_id`: its id, what the partner is told of it, and what a report of it records."""

    session_id: str
    node_id: str
    gender: str
    country: str | None
    lang: str | None
    device_id: str | None = None
    address: str | None = None
    client: dict[str, ClientFact] = field(default_factory=dict)
    user_id: str | None = None  # its account's id when it is logged in

    @classmethod
    def of(cls, session: Session, node_id: str) -> RemotePartner:
        """`session`, held by node `node_id`, as another node sees it."""
        return cls(
            session.session_id,
            node_id,
            session.gender,
            session.country,
            session.lang,
            session.device_id,
            session.address,
            dict(session.client),
            session.user_id,
        )

    def describe(self) -> dict[str, Any]:
        """This partner as nodes tell each other of it (its node goes with the message)."""
        return {
            "session_id": self.session_id,
            "gender": self.gender,
            "country": self.country,
            "lang": self.lang,
            "device_id": self.device_id,
            "address": self.address,
            "client": dict(self.client),
            "user_id": self.user_id,
        }

    def stand_in(self) -> Session:
        """A session standing in for this one in a match here: no token, no peer, only what its partner is told
        and what a report of it records (its account known by its id alone)."""
        stand_in = Session(
            self.session_id, self.gender, self.country, self.lang, "", None, SessionState.MATCHED
        )
        stand_in.node, stand_in.device_id, stand_in.address = self.node_id, self.device_id, self.address
        stand_in.client = dict(self.client)
        if self.user_id is not None and self.user_id != self.session_id:
            stand_in.account = AccountView(self.user_id, None, ())
        return stand_in


def read_partner(described: Any, node_id: str) -> RemotePartner:
    """The partner of node `node_id` that `describe` described; ValueError, saying why, if it is not one."""
    if not isinstance(described, dict):
        raise ValueError("a partner is described by a map")
    fields = read_texts(described, "a partner")
    session_id, gender = fields.pop("session_id"), fields.pop("gender")
    if session_id is None or gender is None:
        raise ValueError("a partner has a session id and a gender")
    return RemotePartner(session_id, node_id, gender, client=read_client(described.get("client")), **fields)


def read_texts(data: dict[str, Any], what: str) -> dict[str, str | None]:
    """The text fields a session's description may have (id, gender, country, language, device id, address,
    user id), each None where it is missing; ValueError if one is there but not text."""
    found: dict[str, str | None] = {}
    for name in _TEXT_FIELDS:
        value = data.get(name)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{what}'s {name} is text")
        found[name] = value
    return found


def read_client(value: Any) -> dict[str, ClientFact]:
    """Client facts as nodes pass them: a map of plain values (none: no facts); ValueError otherwise."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(fact, str | int | float | bool) or fact is None for fact in value.values()
    ):
        raise ValueError("client facts are a map of plain values")
    return dict(value)
