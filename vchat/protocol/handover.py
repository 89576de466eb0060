"""A session handed from one node of a cluster to another, when its client resumes on the other node
(docs/cluster.md, "Resume across nodes"): what is passed, as a map of portable values, checked when read.

The state holds what the session needs to go on: who the user is (gender, country, language, device id, client
facts), its filters, its match (the partner's description and node) or its previous match (for a report), and
the sessions a report keeps it apart from. Never its chat, its signals or its report ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vchat.protocol.errors import ProtocolError
from vchat.protocol.messages import ClientFact, Search
from vchat.protocol.partner import RemotePartner, read_client, read_partner, read_texts
from vchat.protocol.session import Identity


@dataclass(frozen=True, slots=True)
class HandedMatch:
    """A handed session's match: its id, whether the session makes the offer, when it started, the partner
    (and the node that holds it), and whether the partner's connection is lost (it may come back)."""

    match_id: str
    offers: bool
    started_at: float
    partner: RemotePartner
    partner_away: bool


@dataclass(frozen=True, slots=True)
class HandedPrevious:
    """A handed session's last ended match, for a report just after it."""

    match_id: str
    partner: Identity
    ended_at: float
    partner_session: str


@dataclass(frozen=True, slots=True)
class HandedSession:
    """What one node passes another of a session whose client resumes there."""

    session_id: str
    gender: str
    country: str | None
    lang: str | None
    device_id: str | None
    client: dict[str, ClientFact]
    started_at: float
    filters: Search | None
    match: HandedMatch | None
    previous: HandedPrevious | None
    blocked: tuple[str, ...] = ()  # the sessions it is kept apart from (it reported them, or they it)

    def encode(self) -> dict[str, Any]:
        """This state as a map of portable values (for the node bus)."""
        match, previous = self.match, self.previous
        return {
            "session_id": self.session_id,
            "gender": self.gender,
            "country": self.country,
            "lang": self.lang,
            "device_id": self.device_id,
            "client": dict(self.client),
            "started_at": self.started_at,
            "filters": None
            if self.filters is None
            else {"want": self.filters.want, "countries": sorted(self.filters.countries)},
            "match": None
            if match is None
            else {
                "match_id": match.match_id,
                "offers": match.offers,
                "started_at": match.started_at,
                "partner": {**match.partner.describe(), "node_id": match.partner.node_id},
                "away": match.partner_away,
            },
            "blocked": list(self.blocked),
            "previous": None
            if previous is None
            else {
                "match_id": previous.match_id,
                "ended_at": previous.ended_at,
                "partner": {
                    "session_id": previous.partner_session,
                    "user_id": previous.partner.user_id,
                    "device_id": previous.partner.device_id,
                    "address": previous.partner.address,
                    "client": dict(previous.partner.client),
                },
            },
        }


def decode_handed(raw: Any) -> HandedSession:
    """The state another node handed over; ValueError, saying why, if it is not one."""
    data = _map(raw, "a handed session")
    text = read_texts(data, "the session")
    if text["session_id"] is None or text["gender"] is None:
        raise ValueError("a handed session has an id and a gender")
    filters = None
    if data.get("filters") is not None:
        raw_filters = _map(data["filters"], "its filters")
        countries = raw_filters.get("countries")
        want = raw_filters.get("want")
        if not isinstance(want, str) or not isinstance(countries, list):
            raise ValueError("its filters have a want and a list of countries")
        try:
            filters = Search.parse({"type": "search", "want": want, "countries": countries})
        except ProtocolError as e:
            raise ValueError(f"its filters: {e}") from None
    match = None
    if data.get("match") is not None:
        raw_match = _map(data["match"], "its match")
        partner = _map(raw_match.get("partner"), "its partner")
        node = partner.get("node_id")
        if not isinstance(node, str):
            raise ValueError("a handed match's partner has a node")
        match = HandedMatch(
            _text(raw_match.get("match_id"), "its match id"),
            _flag(raw_match.get("offers"), "offers"),
            _time(raw_match.get("started_at")),
            read_partner(partner, node),
            _flag(raw_match.get("away"), "away"),
        )
    previous = None
    if data.get("previous") is not None:
        raw_previous = _map(data["previous"], "its previous match")
        partner = _map(raw_previous.get("partner"), "its previous partner")
        fields = read_texts(partner, "its previous partner")
        if fields["session_id"] is None:
            raise ValueError("a previous partner has an id")
        previous = HandedPrevious(
            _text(raw_previous.get("match_id"), "its previous match id"),
            Identity(
                fields["user_id"] or fields["session_id"],
                fields["device_id"],
                fields["address"],
                read_client(partner.get("client")),
            ),
            _time(raw_previous.get("ended_at")),
            fields["session_id"],
        )
    blocked = data.get("blocked") or []
    if not isinstance(blocked, list) or not all(isinstance(other, str) and other for other in blocked):
        raise ValueError("its blocked sessions are a list of ids")
    return HandedSession(
        text["session_id"],
        text["gender"],
        text["country"],
        text["lang"],
        text["device_id"],
        read_client(data.get("client")),
        _time(data.get("started_at")),
        filters,
        match,
        previous,
        tuple(blocked),
    )


def _map(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} is a map")
    return value


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} is text")
    return value


def _flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{what} is true or false")
    return value


def _time(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("a time is a number")
    return float(value)
