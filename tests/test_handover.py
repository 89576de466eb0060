"""vchat.protocol.handover: a session's state as one node hands it to another is read back as it was sent;
anything else is refused with ValueError."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vchat.protocol.handover import HandedMatch, HandedPrevious, HandedSession, decode_handed
from vchat.protocol.messages import Search
from vchat.protocol.partner import RemotePartner
from vchat.protocol.session import Identity

PARTNER = RemotePartner(
    "partner-session", "node-b", "m", "DE", "de", "dev-B", "198.51.100.7", {"os": "Android"}, "account-b"
)
MATCH = HandedMatch("match-1", True, 1_700_000_000.0, PARTNER, False)
PREVIOUS = HandedPrevious(
    "match-0",
    Identity("account-c", "dev-C", "203.0.113.9", {"browser": "Firefox 133"}),
    1_699_999_000.5,
    "sess-c",
)
SESSION = HandedSession(
    "handed-session", "f", "AT", "en", "dev-A", {"device": "phone"}, 1_699_990_000.0,
    Search("m", frozenset({"DE", "AT"})), MATCH, PREVIOUS,
)  # fmt: skip


@pytest.mark.parametrize(
    "session",
    [
        SESSION,  # a logged-in partner now, and another one reportable from the match before
        replace(SESSION, filters=None, previous=None),
        replace(SESSION, blocked=("reported-1", "reported-2")),
        replace(
            SESSION,
            match=replace(MATCH, partner=replace(PARTNER, user_id=None, country=None), partner_away=True),
        ),
        replace(
            SESSION,
            match=None,
            previous=replace(PREVIOUS, partner=replace(PREVIOUS.partner, user_id="sess-c")),
        ),
    ],
)
def test_what_is_handed_is_read_back_as_it_was(session: HandedSession) -> None:
    assert decode_handed(session.encode()) == session


def test_a_previous_match_from_a_node_that_sends_no_user_id_names_the_session() -> None:
    """A node of the version before accounts sent the previous partner's user id (then its session's) alone."""
    encoded = SESSION.encode()
    del encoded["previous"]["partner"]["user_id"]
    previous = decode_handed(encoded).previous
    assert previous is not None
    assert (previous.partner.user_id, previous.partner_session) == ("sess-c", "sess-c")


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


@given(JSONISH)
def test_anything_else_is_refused_with_value_error(raw: Any) -> None:
    with contextlib.suppress(ValueError):
        decode_handed(raw)


FIELDS = st.sampled_from(
    [
        ("session_id",), ("gender",), ("client",), ("started_at",), ("filters",), ("filters", "want"),
        ("filters", "countries"), ("match",), ("match", "offers"), ("match", "partner"), ("match", "partner", "node_id"),
        ("match", "partner", "user_id"), ("previous",), ("previous", "partner"), ("previous", "partner", "session_id"),
        ("previous", "partner", "user_id"), ("previous", "ended_at"), ("blocked",),
    ]
)  # fmt: skip


@given(FIELDS, JSONISH)
def test_a_handed_session_with_one_field_changed_is_read_or_refused_with_value_error(
    path: tuple[str, ...], value: Any
) -> None:
    encoded = SESSION.encode()
    place = encoded
    for name in path[:-1]:
        place = place[name]
    place[path[-1]] = value
    with contextlib.suppress(ValueError):
        decode_handed(encoded)
