"""Messages between nodes: what encodes, what decodes, and that every message comes back as it went."""

from __future__ import annotations

import math
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vchat.cluster.wire import (
    BROADCAST_CHANNEL,
    INBOX_PREFIX,
    MAX_DEPTH,
    MAX_MESSAGE_BYTES,
    MessageTooLarge,
    WireError,
    decode_message,
    decode_messages,
    encode_batch,
    encode_message,
    inbox_channel,
)


def nested(depth: int) -> Any:
    """`depth` containers, maps and lists by turns, around a 0."""
    value: Any = 0
    for level in range(depth):
        value = {"k": value} if level % 2 else [value]
    return value


def test_channels() -> None:
    assert INBOX_PREFIX == "vchat:inbox:" and BROADCAST_CHANNEL == "vchat:moderation"
    assert inbox_channel("Nq3x-_9") == "vchat:inbox:Nq3x-_9"
    assert inbox_channel("host.example:4242/1") == "vchat:inbox:host.example:4242/1"
    for bad in ("", "a b", "x" * 65, "é", "tab\t"):
        with pytest.raises(ValueError, match="not a node id"):
            inbox_channel(bad)


@pytest.mark.parametrize(
    "message",
    [
        {"type": "chat", "session": "s", "text": "héllo ✓"},
        {"type": "signal", "payload": {"sdp": "v=0", "candidates": [None, True, 1.5, -0.0]}},
        {"type": "report", "snapshot": b"\xff\xd8\xff" + bytes(100)},
        {"type": "x", "big": 2**64 - 1, "small": -(2**63), "empty": {}, "none": []},
        {"type": "deep", "value": nested(MAX_DEPTH - 1)},
    ],
)
def test_messages_come_back_as_they_went(message: dict[str, Any]) -> None:
    assert repr(decode_message(encode_message(message))) == repr(message)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ([{"type": "x"}], "a message is a map, not list"),
        ({"text": "no type"}, "needs a `type`"),
        ({"type": 1}, "needs a `type`"),
        ({"type": ""}, "needs a `type`"),
        ({"type": "x", "v": {1, 2}}, "may hold only"),
        ({"type": "x", "v": math.nan}, "may hold only"),
        ({"type": "x", "v": math.inf}, "may hold only"),
        ({"type": "x", "v": 2**64}, "may hold only"),
        ({"type": "x", "v": -(2**63) - 1}, "may hold only"),
        ({"type": "x", 1: "integer key"}, "may hold only"),
        ({"type": "x", b"k": "bytes key"}, "may hold only"),
        ({"type": "x", "v": "\ud800"}, "may hold only"),
        ({"type": "x", "\udfff": 1}, "may hold only"),
        ({"type": "x", "v": nested(MAX_DEPTH)}, "nested at most 64 deep"),
    ],
)
def test_what_is_no_message_is_refused_both_ways(value: Any, problem: str) -> None:
    """Refused by encode_message, and by decode_message where msgpack can write it."""
    with pytest.raises(WireError, match=problem):
        encode_message(value)
    try:
        data = msgpack.packb(value, use_bin_type=True, strict_types=False)
    except (TypeError, ValueError, OverflowError):
        return  # msgpack cannot write it either
    with pytest.raises(WireError):
        decode_message(data)


@pytest.mark.parametrize("value", [(1, 2), bytearray(b"x")], ids=["tuple", "bytearray"])
def test_only_what_comes_back_the_same_is_encoded(value: Any) -> None:
    """msgpack writes a tuple as a list and a bytearray as bytes: they would not come back as they went."""
    with pytest.raises(WireError, match="may hold only"):
        encode_message({"type": "x", "v": value})


def test_the_size_limit() -> None:
    text = "x" * (MAX_MESSAGE_BYTES - 64)
    data = encode_message({"type": "x", "text": text})
    assert len(data) <= MAX_MESSAGE_BYTES and decode_message(data)["text"] == text
    with pytest.raises(MessageTooLarge):
        encode_message({"type": "x", "text": text + "x" * 100})
    with pytest.raises(MessageTooLarge):
        decode_message(msgpack.packb({"type": "x", "text": text + "x" * 100}))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        msgpack.packb({"type": "x"}) + b"\x00",
        msgpack.packb({"type": "x", "at": msgpack.Timestamp(0, 1)}),
        msgpack.packb({"type": "x", "ext": msgpack.ExtType(1, b"")}),
        b"\x81\xa4type\xa1x" + b"\x91" * 2000 + b"\xc0",  # past msgpack's own nesting limit, under a key
        b"\x82\xa4type\xa1x\xa1v\xc4",  # cut short
        b"\x81\xa4type\xa2\xff\xfe",  # not UTF-8
    ],
)
def test_bytes_that_are_no_message_are_refused(data: bytes) -> None:
    with pytest.raises(WireError):
        decode_message(data)


scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.binary(max_size=8)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)
messages = st.builds(
    lambda kind, rest: {"type": kind, **rest},
    st.text(min_size=1, max_size=12),
    st.dictionaries(st.text(max_size=8).filter(lambda key: key != "type"), values, max_size=5),
)


@settings(max_examples=500)
@given(messages)
def test_every_message_comes_back_exactly(message: dict[str, Any]) -> None:
    data = encode_message(message)
    again = decode_message(data)
    assert again == message and repr(again) == repr(message)  # repr: True is not 1, 1.0 is not 1
    assert encode_message(again) == data


_MESSAGES = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.sampled_from(["relay", "left", "ban"]),
            "n": st.integers(-(2**63), 2**63 - 1),
            "text": st.text(max_size=20),
        }
    ),
    min_size=1,
    max_size=20,
)


@given(_MESSAGES)
def test_a_run_of_messages_is_one_batch_that_comes_back_in_order(messages: list[dict[str, Any]]) -> None:
    payloads = encode_batch([encode_message(message) for message in messages])
    assert len(payloads) == 1
    assert [item for payload in payloads for item in decode_messages(payload)] == messages
    if len(messages) > 1:
        assert decode_message(payloads[0])["type"] == "batch"


def test_a_batch_too_large_goes_as_single_messages() -> None:
    big = [encode_message({"type": "x", "text": "y" * (MAX_MESSAGE_BYTES // 2)}) for _ in range(3)]
    assert encode_batch(big) == big


@pytest.mark.parametrize(
    "batch",
    [
        {"type": "batch"},
        {"type": "batch", "messages": []},
        {"type": "batch", "messages": {"type": "x"}},
        {"type": "batch", "messages": [{"type": "x"}, 3]},
        {"type": "batch", "messages": [{"no": "type"}]},
        {"type": "batch", "messages": [{"type": ""}]},
        {"type": "batch", "messages": [{"type": "batch", "messages": [{"type": "x"}]}]},
    ],
)
def test_a_malformed_batch_is_refused_whole(batch: dict[str, Any]) -> None:
    with pytest.raises(WireError):
        decode_messages(msgpack.packb(batch, use_bin_type=True))
