"""What nodes send one another through Redis pub/sub (docs/cluster.md, "Messages between nodes"): the
channels, and messages as msgpack maps with a string `type`, checked both ways.

A message holds only values msgpack carries unchanged: maps with string keys, lists, strings, bytes, integers
of 64 bits (signed or not), finite floats, booleans and None, nested at most `MAX_DEPTH` deep, and encodes to
at most `MAX_MESSAGE_BYTES`. Decoding refuses anything else (other msgpack types such as extensions and
timestamps, bytes as map keys, trailing bytes) with `WireError`, so a node acts only on maps it could have
sent.
"""

from __future__ import annotations

import re
from typing import Any

import msgpack

from vchat.protocol.codec import portable

CHANNEL_PREFIX = "vchat:"
"""What every channel of vchat starts with."""
INBOX_PREFIX = CHANNEL_PREFIX + "inbox:"
"""A node's own channel is this and its node id: messages to the sessions it holds."""
BROADCAST_CHANNEL = CHANNEL_PREFIX + "moderation"
"""The channel every node subscribes to: bans and lifts, for every node to apply."""
MAX_MESSAGE_BYTES = 512 * 1024
"""The largest encoded message: room for any client message (a report's snapshot is the largest) and more."""
MAX_DEPTH = 64
"""How deep maps and lists may nest: twice a client message's limit, so one fits inside a node's message."""

_NODE_ID = re.compile(r"[!-~]{1,64}")  # as vchat.cluster.presence takes them


class WireError(ValueError):
    """A message that cannot go between nodes: not a map with a string `type` of portable values."""


class MessageTooLarge(WireError):
    """A message whose encoding is over `MAX_MESSAGE_BYTES`."""


def inbox_channel(node_id: str) -> str:
    """The channel of node `node_id`'s inbox; ValueError unless the id is 1 to 64 printable ASCII characters
    other than space."""
    if type(node_id) is not str or not _NODE_ID.fullmatch(node_id):
        raise ValueError(f"{node_id!r} is not a node id: 1 to 64 printable ASCII characters, no spaces")
    return INBOX_PREFIX + node_id


def encode_message(message: dict[str, Any]) -> bytes:
    """`message` as msgpack; WireError if it is no message (see the module), MessageTooLarge if too large."""
    _check(message)
    data: bytes = msgpack.packb(message, use_bin_type=True)
    if len(data) > MAX_MESSAGE_BYTES:
        raise MessageTooLarge(f"a message of {len(data)} bytes is over the limit of {MAX_MESSAGE_BYTES}")
    return data


def decode_message(data: bytes) -> dict[str, Any]:
    """The message `data` encodes; WireError if it is no message, MessageTooLarge if too large."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise MessageTooLarge(f"a message of {len(data)} bytes is over the limit of {MAX_MESSAGE_BYTES}")
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True, timestamp=0)
    except (ValueError, TypeError, OverflowError, RecursionError, msgpack.UnpackException) as e:
        raise WireError(f"not one msgpack value ({type(e).__name__})") from None
    _check(value)
    message: dict[str, Any] = value
    return message


def _check(value: object) -> None:
    if type(value) is not dict:
        raise WireError(f"a message is a map, not {type(value).__name__}")
    kind = value.get("type")
    if type(kind) is not str or not kind:
        raise WireError("a message needs a `type`: a string, not empty")
    if not portable(value, MAX_DEPTH, allow_bytes=True):
        raise WireError(
            "a message may hold only maps with string keys, lists, strings, bytes, 64-bit integers, finite"
            f" floats, booleans and None, nested at most {MAX_DEPTH} deep"
        )
