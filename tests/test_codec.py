"""The JSON and msgpack codecs: the same maps both ways, and only ProtocolError on bad input."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vchat.protocol.codec import (
    JSON,
    JSON_SUBPROTOCOL,
    MSGPACK,
    MSGPACK_SUBPROTOCOL,
    choose_codec,
    decode_json,
    decode_msgpack,
    encode_json,
    encode_msgpack,
)
from vchat.protocol.errors import ErrorCode, ProtocolError

portable = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
messages = st.dictionaries(st.text(max_size=8), portable, max_size=5)
NESTED: list = [0]
for _ in range(40):
    NESTED = [NESTED]


@given(messages)
def test_round_trip_both_codecs(message: dict) -> None:
    assert decode_json(encode_json(message)) == message
    assert decode_msgpack(encode_msgpack(message)) == message


@given(messages)
def test_json_and_msgpack_carry_the_same_maps(message: dict) -> None:
    assert decode_msgpack(encode_msgpack(decode_json(encode_json(message)))) == message


@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise_protocol_error(data: bytes) -> None:
    for decode in (decode_json, decode_msgpack):
        try:
            assert isinstance(decode(data), dict)
        except ProtocolError as e:
            assert e.code is ErrorCode.BAD_MESSAGE


@pytest.mark.parametrize(
    "value",
    [b"raw bytes", {1: "int key"}, float("inf"), 2**64, -(2**63) - 1, "\ud800", NESTED],
)
def test_values_one_codec_cannot_carry_are_refused(value: object) -> None:
    import msgpack

    try:
        data = msgpack.packb({"type": "x", "v": value}, use_bin_type=True)
    except (TypeError, ValueError, OverflowError, UnicodeEncodeError):
        return  # msgpack itself cannot carry it either
    with pytest.raises(ProtocolError):
        decode_msgpack(data)


@pytest.mark.parametrize("data", [b"[]", b'"text"', b"3", b"null", b"NaN", b'{"a": Infinity}', b"\xff"])
def test_json_non_maps_and_non_json_are_refused(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_json(data)


def test_choose_codec() -> None:
    assert choose_codec([]) is JSON
    assert choose_codec(["other", MSGPACK_SUBPROTOCOL, JSON_SUBPROTOCOL]) is MSGPACK
    assert choose_codec([JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL]) is JSON
    assert choose_codec(["other"]) is JSON
