"""The two wire codecs: JSON text frames and msgpack binary frames carrying the same maps."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from vchat.protocol.errors import ErrorCode, ProtocolError

JSON_SUBPROTOCOL = "vchat.v1.json"
MSGPACK_SUBPROTOCOL = "vchat.v1.msgpack"

_json_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_json_decoder = json.JSONDecoder(parse_constant=_reject_constant)


def encode_json(message: dict[str, Any]) -> bytes:
    """Encode one message as a compact UTF-8 JSON object."""
    return _json_encoder.encode(message).encode("utf-8")


def decode_json(data: bytes) -> dict[str, Any]:
    """Decode one JSON frame into a map, or raise `ProtocolError(bad_message)`."""
    try:
        value = _json_decoder.decode(data.decode("utf-8"))
    except (ValueError, RecursionError) as e:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "frame is not valid JSON") from e
    return _require_map(value)


def encode_msgpack(message: dict[str, Any]) -> bytes:
    """Encode one message as a msgpack map."""
    packed: bytes = msgpack.packb(message, use_bin_type=True)
    return packed


def decode_msgpack(data: bytes) -> dict[str, Any]:
    """Decode one msgpack frame into a map, or raise `ProtocolError(bad_message)`."""
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as e:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "frame is not a valid msgpack value") from e
    return _require_map(value, snapshot_bin=True)


MAX_DEPTH = 32
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1


def _require_map(value: object, snapshot_bin: bool = False) -> dict[str, Any]:
    """`value` if it is a map both codecs can carry. With `snapshot_bin` (msgpack), a `report`'s `snapshot`
    may be bytes: the one exception, so that an image need not be sent in base64; it is never relayed."""
    if not isinstance(value, dict):
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "a frame must hold one map")
    checked = value
    if snapshot_bin and type(value.get("snapshot")) is bytes and value.get("type") == "report":
        checked = {key: item for key, item in value.items() if key != "snapshot"}
    if not portable(checked):
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE,
            "a frame may hold only maps with string keys, lists, strings, finite numbers,"
            f" 64-bit integers, booleans and null, nested at most {MAX_DEPTH} deep",
        )
    return value


def portable(value: Any, max_depth: int = MAX_DEPTH, allow_bytes: bool = False) -> bool:
    """Whether both codecs carry `value` unchanged (maps with string keys, lists, strings, finite numbers, 64-bit
    integers, booleans, None, nested at most `max_depth` deep), so JSON and msgpack clients can talk; with
    `allow_bytes`, bytes too (msgpack alone: between nodes)."""
    return _portable(value, max_depth, allow_bytes)


def _portable(value: Any, depth_left: int, allow_bytes: bool) -> bool:
    kind = type(value)  # exact types: decoders make no subclasses, and this is the per-message hot path
    if kind is str:
        return value.isascii() or _utf8_encodable(value)
    if kind is dict:
        if depth_left <= 0:
            return False
        depth_left -= 1
        for key, item in value.items():
            if (
                type(key) is not str
                or not _portable(key, depth_left, allow_bytes)
                or not _portable(item, depth_left, allow_bytes)
            ):
                return False
        return True
    if kind is int:
        return bool(_INT_MIN <= value <= _INT_MAX)
    if kind is list:
        if depth_left <= 0:
            return False
        depth_left -= 1
        return all(_portable(item, depth_left, allow_bytes) for item in value)
    if kind is float:
        return math.isfinite(value)
    return value is None or kind is bool or (allow_bytes and kind is bytes)


def _utf8_encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


@dataclass(frozen=True, slots=True)
class Codec:
    """One subprotocol's way of turning messages into frames and back."""

    subprotocol: str
    binary: bool
    encode: Callable[[dict[str, Any]], bytes]
    decode: Callable[[bytes], dict[str, Any]]


JSON = Codec(JSON_SUBPROTOCOL, False, encode_json, decode_json)
MSGPACK = Codec(MSGPACK_SUBPROTOCOL, True, encode_msgpack, decode_msgpack)
CODECS = {JSON.subprotocol: JSON, MSGPACK.subprotocol: MSGPACK}


def choose_codec(offered: list[str]) -> Codec:
    """Pick the first subprotocol the client offered that we speak; JSON when it offered none of ours."""
    for name in offered:
        codec = CODECS.get(name)
        if codec is not None:
            return codec
    return JSON


# A message larger than --max-message-bytes is let in only if it is a `report`, which its first bytes must show
# (docs/protocol.md, "Message size"): a JSON object whose first member is "type":"report", written without
# spaces, or a msgpack map whose first key is "type" with the value "report".
_JSON_REPORT_HEAD = b'{"type":"report",'
_MSGPACK_REPORT_HEAD = b"\xa4type\xa6report"
REPORT_HEAD_BYTES = 5 + len(
    _MSGPACK_REPORT_HEAD
)  # enough for either codec's head (a map32 header is 5 bytes)


def starts_as_report(head: bytes, binary: bool) -> bool | None:
    """Whether a message beginning with `head` is a `report` by its first bytes; None while `head` is too short
    to tell. Cheap enough to run on the first bytes of a large frame before the rest arrives."""
    if binary:
        if not head:
            return None
        first = head[0]
        skip = 1 if 0x80 <= first <= 0x8F else 3 if first == 0xDE else 5 if first == 0xDF else -1
        if skip < 0:
            return False
        expected = _MSGPACK_REPORT_HEAD
    else:
        skip, expected = 0, _JSON_REPORT_HEAD
    if len(head) < skip:
        return None
    seen = head[skip : skip + len(expected)]
    if not expected.startswith(seen):
        return False
    return True if len(seen) == len(expected) else None
