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


BATCH = "batch"
"""The type of a message that carries, in `messages`, several messages to one channel, in order."""


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
    check_message(message)
    data: bytes = msgpack.packb(message, use_bin_type=True)
    if len(data) > MAX_MESSAGE_BYTES:
        raise MessageTooLarge(f"a message of {len(data)} bytes is over the limit of {MAX_MESSAGE_BYTES}")
    return data


def encode_batch(payloads: list[bytes]) -> list[bytes]:
    """What to publish, in order, for `payloads` (messages `encode_message` gave) to one channel: one `batch`
    holding them all if there are several and it fits in `MAX_MESSAGE_BYTES`, else each on its own."""
    if len(payloads) < 2:
        return payloads
    packer = msgpack.Packer(use_bin_type=True)
    head = packer.pack_map_header(2) + packer.pack("type") + packer.pack(BATCH) + packer.pack("messages")
    head += packer.pack_array_header(len(payloads))
    if len(head) + sum(map(len, payloads)) > MAX_MESSAGE_BYTES:
        return payloads
    return [head + b"".join(payloads)]


def decode_messages(data: bytes) -> list[dict[str, Any]]:
    """The messages `data` holds: one, or the ones of a `batch`, in order; WireError as for `decode_message`,
    and for a batch whose `messages` are not a list of messages other than batches."""
    message = decode_message(data)
    if message["type"] != BATCH:
        return [message]
    messages = message.get("messages")
    if type(messages) is not list or not messages:
        raise WireError("a batch holds a list of messages")
    for item in messages:
        if type(item) is not dict or type(item.get("type")) is not str or item["type"] in ("", BATCH):
            raise WireError("a batch holds messages with a `type`, none of them a batch")
    return messages


def decode_message(data: bytes) -> dict[str, Any]:
    """The message `data` encodes; WireError if it is no message, MessageTooLarge if too large."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise MessageTooLarge(f"a message of {len(data)} bytes is over the limit of {MAX_MESSAGE_BYTES}")
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True, timestamp=0)
    except (ValueError, TypeError, OverflowError, RecursionError, msgpack.UnpackException) as e:
        raise WireError(f"not one msgpack value ({type(e).__name__})") from None
    check_message(value)
    message: dict[str, Any] = value
    return message


def check_message(value: object) -> None:
    """WireError unless `value` can go between nodes as a message (see the module); not its size."""
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
