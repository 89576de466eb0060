"""A report's snapshot as a client sends it: base64 text (either codec) or msgpack `bin`, checked by magic bytes.

Pure Python: the bytes are checked here, at the edge, so that nothing but a JPEG or PNG of at most 256 KiB is
ever handed on.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Literal

from vchat.protocol.errors import ErrorCode, ProtocolError

ImageType = Literal["image/jpeg", "image/png"]
MAX_SNAPSHOT_BYTES = 256 * 1024
# base64 of MAX_SNAPSHOT_BYTES: longer text cannot decode to an image small enough, so it is not decoded.
MAX_SNAPSHOT_TEXT = 4 * ((MAX_SNAPSHOT_BYTES + 2) // 3)
_MAGIC: tuple[tuple[bytes, ImageType], ...] = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
)


@dataclass(frozen=True, slots=True)
class Image:
    """A checked snapshot: a JPEG or PNG of 1 to 256 KiB."""

    content_type: ImageType
    data: bytes = field(repr=False)


def bad_snapshot(message: str) -> ProtocolError:
    """A non-fatal `bad_snapshot` error."""
    return ProtocolError(ErrorCode.BAD_SNAPSHOT, message)


def decode_snapshot(value: object) -> Image:
    """The image in a report's `snapshot`: strict base64 text, or bytes (msgpack `bin`).

    Raises `ProtocolError(bad_message)` for a value of another kind, and `ProtocolError(bad_snapshot)` for
    text that is not base64, or bytes that are not a JPEG or PNG of at most 256 KiB.
    """
    if isinstance(value, str):
        if len(value) > MAX_SNAPSHOT_TEXT:
            raise bad_snapshot(f"the snapshot must be at most {MAX_SNAPSHOT_BYTES} bytes")
        try:
            data = base64.b64decode(value.encode("ascii"), validate=True)
        except (UnicodeEncodeError, binascii.Error) as e:
            raise bad_snapshot("the snapshot must be a JPEG or PNG image in base64") from e
    elif isinstance(value, bytes):
        data = value
    else:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "snapshot must be a base64 string (or msgpack bin)")
    if len(data) > MAX_SNAPSHOT_BYTES:
        raise bad_snapshot(f"the snapshot must be at most {MAX_SNAPSHOT_BYTES} bytes")
    for magic, content_type in _MAGIC:
        if data.startswith(magic):
            return Image(content_type, data)
    raise bad_snapshot("the snapshot must be a JPEG or PNG image")
