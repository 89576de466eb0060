"""The messages between nodes (vchat.cluster.node): each type's fields checked, anything else refused."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vchat.cluster.node import check_message

VALID: list[dict[str, Any]] = [
    {"type": "pair", "to": "s1", "since": 1.5, "partner": "s2", "partner_node": "n2", "partner_since": 1.0},
    {"type": "offer", "to": "s2", "since": 1.0, "match_id": "m", "partner": {"session_id": "s1"}},
    {"type": "accept", "to": "s1", "match_id": "m", "partner": {"session_id": "s2"}},
    {"type": "refuse", "to": "s1", "match_id": "m"},
    {"type": "release", "to": "s2", "since": 1},
    {"type": "relay", "to": "s2", "from": "s1", "match_id": "m", "message": {"type": "chat"}},
    {"type": "left", "to": "s2", "match_id": "m", "reason": "next"},
    {"type": "away", "to": "s2", "match_id": "m"},
    {"type": "back", "to": "s2", "match_id": "m"},
    {"type": "block", "a": "s1", "b": "s2"},
    {"type": "forget", "session_id": "s1"},
    {"type": "ban", "ban_id": "b1"},
    {"type": "lift", "ban_id": "b1"},
    {"type": "dead", "dead": "n3"},
    {"type": "account_deleted", "account": "acc-1"},
    {"type": "handover", "token": "t~n2", "request": "r1"},
    {"type": "handed", "request": "r1"},
    {"type": "find_session", "request": "r2", "session_id": "s1", "action": "kick"},
    {"type": "found_session", "request": "r2", "session": {"id": "s1"}},
]


@pytest.mark.parametrize("message", VALID, ids=[message["type"] for message in VALID])
def test_each_message_from_a_node_is_accepted(message: dict[str, Any]) -> None:
    check_message({**message, "node": "n1"})


@pytest.mark.parametrize("message", VALID, ids=[message["type"] for message in VALID])
def test_a_message_without_its_node_or_any_field_is_refused(message: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="names its node"):
        check_message(message)
    for name in message.keys() - {"type"}:
        broken = {key: value for key, value in message.items() if key != name}
        with pytest.raises(ValueError, match=name):
            check_message({**broken, "node": "n1"})


@pytest.mark.parametrize(
    "message",
    [
        {"type": "unheard-of"},
        {"type": "release", "to": "s2", "since": True},  # a bool is no time
        {"type": "release", "to": "s2", "since": "1.0"},
        {"type": "left", "to": "s2", "match_id": "m", "reason": "bored"},
        {"type": "relay", "to": "s2", "from": "s1", "match_id": "m", "message": "chat"},
        {"type": "ban", "ban_id": 7},
        {"type": "find_session", "request": "r2", "session_id": "s1", "action": "ban"},
    ],
)
def test_wrong_types_and_values_are_refused(message: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        check_message({**message, "node": "n1"})


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=5),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@given(
    kind=st.sampled_from([message["type"] for message in VALID] + ["", "other"]),
    fields=st.dictionaries(
        st.sampled_from(
            [
                "node",
                "to",
                "from",
                "since",
                "match_id",
                "partner",
                "partner_node",
                "partner_since",
                "message",
                "reason",
                "a",
                "b",
                "ban_id",
                "dead",
                "request",
                "session_id",
                "action",
                "session",
            ]
        ),
        _VALUES,
    ),
)
def test_any_map_is_accepted_or_refused_with_value_error(kind: str, fields: dict[str, Any]) -> None:
    message = {**fields, "type": kind}
    try:
        check_message(message)
    except ValueError:
        return
    example = next(valid for valid in VALID if valid["type"] == kind)  # only known types pass
    assert message.keys() >= example.keys() | {"node"}
