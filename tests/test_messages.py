"""Client message validation: typed messages out, and nothing but ProtocolError for anything else."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vchat.protocol.errors import CloseCode, ErrorCode, ProtocolError
from vchat.protocol.messages import (
    CLIENT_TYPES,
    Chat,
    Hello,
    Search,
    Signal,
    parse_message,
    request_id,
)

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=10,
)
fields = st.sampled_from(
    ["type", "id", "age_confirmed", "gender", "lang", "client", "resume", "want", "countries", "match_id",
     "payload", "text"]
)  # fmt: skip
raw_messages = st.dictionaries(fields, values, max_size=6) | st.builds(
    lambda kind, rest: {**rest, "type": kind},
    st.sampled_from(sorted(CLIENT_TYPES)),
    st.dictionaries(fields, values),
)


@given(raw_messages)
def test_any_map_parses_or_raises_protocol_error(raw: dict) -> None:
    try:
        request_id(raw)
        parse_message(raw)
    except ProtocolError as e:
        assert e.code in ErrorCode and e.message


def test_valid_messages() -> None:
    hello = parse_message({"type": "hello", "age_confirmed": True, "gender": "f", "lang": "pt-BR"})
    assert hello == Hello("f", "pt-BR", {}, None)
    assert parse_message({"type": "search", "countries": ["de", "AT"]}) == Search(
        "any", frozenset({"DE", "AT"})
    )
    assert parse_message({"type": "signal", "match_id": "m", "payload": None}) == Signal("m", None)
    assert parse_message({"type": "chat", "match_id": "m", "text": "x" * 1000}) == Chat("m", "x" * 1000)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ({"type": "hello", "gender": "m"}, ErrorCode.AGE_REQUIRED),
        ({"type": "hello", "age_confirmed": True, "gender": "x"}, ErrorCode.BAD_MESSAGE),
        ({"type": "hello", "age_confirmed": True, "gender": ["m"]}, ErrorCode.BAD_MESSAGE),
        ({"type": "hello", "age_confirmed": True, "gender": {"m": 1}}, ErrorCode.BAD_MESSAGE),
        (
            {"type": "hello", "age_confirmed": True, "gender": "m", "lang": "english please"},
            ErrorCode.BAD_MESSAGE,
        ),
        (
            {"type": "hello", "age_confirmed": True, "gender": "m", "client": {"os": ["x"]}},
            ErrorCode.BAD_MESSAGE,
        ),
        (
            {"type": "hello", "age_confirmed": True, "gender": "m", "client": {"k" * 200: 1}},
            ErrorCode.BAD_MESSAGE,
        ),
        ({"type": "search", "countries": ["DE"] * 65}, ErrorCode.BAD_MESSAGE),
        ({"type": "search", "want": ["f"]}, ErrorCode.BAD_MESSAGE),
        ({"type": "search", "want": {"f": 1}}, ErrorCode.BAD_MESSAGE),
        ({"type": "chat", "match_id": "m", "text": "   "}, ErrorCode.BAD_MESSAGE),
        ({"type": "chat", "match_id": "m", "text": "x" * 1001}, ErrorCode.TOO_LONG),
        ({"type": "Hello"}, ErrorCode.UNKNOWN_TYPE),
    ],
)
def test_invalid_messages(raw: dict, code: ErrorCode) -> None:
    with pytest.raises(ProtocolError) as raised:
        parse_message(raw)
    assert raised.value.code is code
    assert (raised.value.close is CloseCode.AGE_REQUIRED) == (code is ErrorCode.AGE_REQUIRED)


@pytest.mark.parametrize("rid", [True, 1.5, [1], "x" * 65])
def test_bad_request_ids(rid: object) -> None:
    with pytest.raises(ProtocolError):
        request_id({"type": "ping", "id": rid})


@pytest.mark.parametrize("device_id", ["a", "Zx_9-" * 12 + "abcd", None])
def test_hello_takes_a_device_id(device_id: str | None) -> None:
    raw = {"type": "hello", "age_confirmed": True, "gender": "u", "client": {"device_id": device_id}}
    hello = Hello.parse(raw)
    assert hello.device_id == device_id
    assert Hello.parse({"type": "hello", "age_confirmed": True, "gender": "u"}).device_id is None


@pytest.mark.parametrize("device_id", ["", "x" * 65, "has space", "dot.dot", "ü", 7, True, ["a"]])
def test_a_bad_device_id_is_a_bad_message(device_id: object) -> None:
    raw = {"type": "hello", "age_confirmed": True, "gender": "u", "client": {"device_id": device_id}}
    with pytest.raises(ProtocolError) as raised:
        Hello.parse(raw)
    assert raised.value.code is ErrorCode.BAD_MESSAGE and raised.value.close is None
