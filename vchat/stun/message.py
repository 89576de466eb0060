"""STUN messages (RFC 8489, compatible with RFC 5389 and RFC 3489): parse and build them, with no I/O.

A message is a 20-byte header (type, length, magic cookie, 96-bit transaction id) followed by
type-length-value attributes padded to 4 bytes. This module turns bytes into `Message` values and back,
and computes the attributes that involve arithmetic: (XOR-)MAPPED-ADDRESS and FINGERPRINT. (A client's
side, with credentials and integrity, is in `vchat.stun.testing`: the responder authenticates nothing.) The responder's hot path does not go through `Message` (see responder.py),
but every byte it writes can be read back with `parse_message`.
"""

from __future__ import annotations

import hmac
import ipaddress
import struct
import zlib
from dataclasses import dataclass, field
from enum import IntEnum

from vchat.addresses import unmap_ipv4

MAGIC_COOKIE = 0x2112A442
MAGIC_COOKIE_BYTES = MAGIC_COOKIE.to_bytes(4, "big")
HEADER_LENGTH = 20
FINGERPRINT_XOR = 0x5354554E

FAMILY_IPV4 = 0x01
FAMILY_IPV6 = 0x02

CHANGE_IP = 0x04
CHANGE_PORT = 0x02

_HEADER = struct.Struct("!HHI")
_ATTRIBUTE_HEADER = struct.Struct("!HH")
_PORT = struct.Struct("!H")
_U32 = struct.Struct("!I")


class MessageClass(IntEnum):
    """The class bits of a message type, already in their place in the 14-bit type field."""

    REQUEST = 0x0000
    INDICATION = 0x0010
    SUCCESS = 0x0100
    ERROR = 0x0110


class Method(IntEnum):
    """STUN methods this package knows by name (only Binding is answered)."""

    BINDING = 0x001


class Attr(IntEnum):
    """Attribute types: below 0x8000 comprehension-required, from 0x8000 comprehension-optional."""

    MAPPED_ADDRESS = 0x0001
    RESPONSE_ADDRESS = 0x0002  # RFC 3489 only
    CHANGE_REQUEST = 0x0003  # RFC 5780 (and RFC 3489)
    SOURCE_ADDRESS = 0x0004  # RFC 3489 only
    CHANGED_ADDRESS = 0x0005  # RFC 3489 only
    USERNAME = 0x0006
    MESSAGE_INTEGRITY = 0x0008
    ERROR_CODE = 0x0009
    UNKNOWN_ATTRIBUTES = 0x000A
    REALM = 0x0014
    NONCE = 0x0015
    MESSAGE_INTEGRITY_SHA256 = 0x001C
    PASSWORD_ALGORITHM = 0x001D
    USERHASH = 0x001E
    XOR_MAPPED_ADDRESS = 0x0020
    PRIORITY = 0x0024  # RFC 8445 (ICE)
    USE_CANDIDATE = 0x0025  # RFC 8445 (ICE)
    PADDING = 0x0026  # RFC 5780
    RESPONSE_PORT = 0x0027  # RFC 5780
    PASSWORD_ALGORITHMS = 0x8002
    ALTERNATE_DOMAIN = 0x8003
    SOFTWARE = 0x8022
    ALTERNATE_SERVER = 0x8023
    CACHE_TIMEOUT = 0x8027  # RFC 5780
    FINGERPRINT = 0x8028
    ICE_CONTROLLED = 0x8029  # RFC 8445 (ICE)
    ICE_CONTROLLING = 0x802A  # RFC 8445 (ICE)
    RESPONSE_ORIGIN = 0x802B  # RFC 5780
    OTHER_ADDRESS = 0x802C  # RFC 5780


class StunError(ValueError):
    """The bytes are not a well-formed STUN message (or attribute value)."""


def is_comprehension_required(attr_type: int) -> bool:
    """Whether an agent that does not know `attr_type` must reject the message (RFC 8489 section 14)."""
    return attr_type < 0x8000


def message_type(method: int, message_class: int) -> int:
    """The 14-bit message type field for `method` and `message_class` (class bits interleaved)."""
    if not 0 <= method <= 0xFFF:
        raise ValueError(f"method {method:#x} does not fit in 12 bits")
    return (method & 0x000F) | ((method & 0x0070) << 1) | ((method & 0x0F80) << 2) | (message_class & 0x0110)


def split_message_type(value: int) -> tuple[int, MessageClass]:
    """The (method, class) a 14-bit message type field holds."""
    method = (value & 0x000F) | ((value & 0x00E0) >> 1) | ((value & 0x3E00) >> 2)
    return method, MessageClass(value & 0x0110)


@dataclass(frozen=True)
class Message:
    """A decoded STUN message: attributes keep their wire order and raw (unpadded) values.

    `cookie` is the magic cookie field; a message from an RFC 3489 agent has something else there, and
    its 128-bit transaction id is `cookie` followed by `transaction_id`.
    """

    method: int
    message_class: MessageClass
    transaction_id: bytes
    attributes: tuple[tuple[int, bytes], ...] = field(default=())
    cookie: int = MAGIC_COOKIE

    @property
    def classic(self) -> bool:
        """Whether this message lacks the magic cookie (an RFC 3489 agent sent it)."""
        return self.cookie != MAGIC_COOKIE

    def get(self, attr_type: int) -> bytes | None:
        """The value of the first attribute of `attr_type`, or None."""
        for kind, value in self.attributes:
            if kind == attr_type:
                return value
        return None

    def types(self) -> list[int]:
        """The attribute types, in wire order."""
        return [kind for kind, _ in self.attributes]

    def xor_mapped_address(self) -> tuple[str, int] | None:
        """The decoded XOR-MAPPED-ADDRESS, or None."""
        value = self.get(Attr.XOR_MAPPED_ADDRESS)
        return None if value is None else decode_xor_address(value, self.transaction_id)

    def address(self, attr_type: int) -> tuple[str, int] | None:
        """The decoded plain address attribute `attr_type` (MAPPED-ADDRESS, OTHER-ADDRESS, ...), or None."""
        value = self.get(attr_type)
        return None if value is None else decode_address(value)

    def error_code(self) -> tuple[int, str] | None:
        """The decoded ERROR-CODE (code, reason), or None."""
        value = self.get(Attr.ERROR_CODE)
        return None if value is None else decode_error_code(value)

    def unknown_attributes(self) -> list[int]:
        """The attribute types listed in UNKNOWN-ATTRIBUTES (empty if absent)."""
        value = self.get(Attr.UNKNOWN_ATTRIBUTES)
        return [] if value is None else decode_unknown_attributes(value)

    def text(self, attr_type: int) -> str | None:
        """The UTF-8 value of a text attribute (SOFTWARE, USERNAME, REALM, ...), or None."""
        value = self.get(attr_type)
        return None if value is None else value.decode("utf-8", "replace")


def parse_message(data: bytes) -> Message:
    """Decode one STUN message that fills `data` exactly; raises StunError for anything malformed."""
    size = len(data)
    if size < HEADER_LENGTH:
        raise StunError(f"{size} bytes is shorter than a STUN header")
    kind, length, cookie = _HEADER.unpack_from(data)
    if kind & 0xC000:
        raise StunError("the first two bits of a STUN message are zero")
    if length != size - HEADER_LENGTH:
        raise StunError(f"header says {length} bytes of attributes, {size - HEADER_LENGTH} follow")
    if length & 3:
        raise StunError("message length is not a multiple of 4")
    method, message_class = split_message_type(kind)
    attributes = tuple(
        (attr_type, bytes(data[start:end])) for attr_type, _, start, end in walk_attributes(data)
    )
    return Message(method, message_class, bytes(data[8:20]), attributes, cookie)


def walk_attributes(data: bytes) -> list[tuple[int, int, int, int]]:
    """(type, attribute offset, value start, value end) of each attribute; raises StunError."""
    size = len(data)
    found = []
    position = HEADER_LENGTH
    while position < size:
        if position + 4 > size:
            raise StunError("truncated attribute header")
        attr_type, length = _ATTRIBUTE_HEADER.unpack_from(data, position)
        start = position + 4
        end = start + length
        padded = start + ((length + 3) & ~3)
        if padded > size:
            raise StunError(f"attribute {attr_type:#06x} runs past the end of the message")
        found.append((attr_type, position, start, end))
        position = padded
    return found


def encode_message(
    message: Message,
    *,
    integrity_key: bytes | None = None,
    integrity_sha256_key: bytes | None = None,
    fingerprint: bool = False,
    padding: bytes = b"\x00",
) -> bytes:
    """Encode `message`, then append MESSAGE-INTEGRITY, MESSAGE-INTEGRITY-SHA256 and FINGERPRINT as asked.

    `padding` is the byte that fills attributes to 4 bytes (any value is allowed; RFC 5769's samples use
    spaces).
    """
    if len(message.transaction_id) != 12:
        raise ValueError("a transaction id is 12 bytes")
    if len(padding) != 1:
        raise ValueError("padding is one byte")
    body = bytearray()
    for attr_type, value in message.attributes:
        body += encode_attribute(attr_type, value, padding)
    head = _PORT.pack(message_type(message.method, message.message_class))
    tail = _U32.pack(message.cookie) + message.transaction_id

    def header(extra: int) -> bytes:
        return head + _PORT.pack(len(body) + extra) + tail

    if integrity_key is not None:
        mac = hmac.digest(integrity_key, header(24) + body, "sha1")
        body += encode_attribute(Attr.MESSAGE_INTEGRITY, mac)
    if integrity_sha256_key is not None:
        mac = hmac.digest(integrity_sha256_key, header(36) + body, "sha256")
        body += encode_attribute(Attr.MESSAGE_INTEGRITY_SHA256, mac)
    if fingerprint:
        crc = compute_fingerprint(header(8) + body)
        body += encode_attribute(Attr.FINGERPRINT, _U32.pack(crc))
    return header(0) + bytes(body)


def encode_attribute(attr_type: int, value: bytes, padding: bytes = b"\x00") -> bytes:
    """One attribute: type, length, value, padding to 4 bytes."""
    if len(value) > 0xFFFF:
        raise ValueError("an attribute value is at most 65535 bytes")
    return _ATTRIBUTE_HEADER.pack(attr_type, len(value)) + value + padding * (-len(value) % 4)


def compute_fingerprint(data: bytes) -> int:
    """The FINGERPRINT value for a message whose bytes before the FINGERPRINT attribute are `data`."""
    return zlib.crc32(data) ^ FINGERPRINT_XOR


def verify_fingerprint(data: bytes) -> bool:
    """Whether `data` ends with a FINGERPRINT attribute holding the right value."""
    try:
        attributes = walk_attributes(data)
    except StunError:
        return False
    if not attributes:
        return False
    attr_type, offset, start, end = attributes[-1]
    if attr_type != Attr.FINGERPRINT or end - start != 4 or end != len(data):
        return False
    stored: int = _U32.unpack_from(data, start)[0]
    return compute_fingerprint(data[:offset]) == stored


def _pack_ip(host: str) -> tuple[int, bytes]:
    try:
        ip = ipaddress.ip_address(unmap_ipv4(host).split("%", 1)[0])
    except ValueError as e:
        raise ValueError(f"{host!r} is not an IP address") from e
    return (FAMILY_IPV4 if ip.version == 4 else FAMILY_IPV6), ip.packed


def encode_address(host: str, port: int) -> bytes:
    """The value of MAPPED-ADDRESS (or OTHER-ADDRESS, RESPONSE-ORIGIN, ...) for `host`, `port`."""
    family, packed = _pack_ip(host)
    return bytes((0, family)) + _PORT.pack(port) + packed


def decode_address(value: bytes) -> tuple[str, int]:
    """The (host, port) in a MAPPED-ADDRESS-style value; raises StunError."""
    if len(value) < 4:
        raise StunError("address attribute is too short")
    family = value[1]
    port = _PORT.unpack_from(value, 2)[0]
    if family == FAMILY_IPV4 and len(value) == 8:
        return str(ipaddress.IPv4Address(bytes(value[4:8]))), port
    if family == FAMILY_IPV6 and len(value) == 20:
        return str(ipaddress.IPv6Address(bytes(value[4:20]))), port
    raise StunError(f"bad address family {family} or length {len(value)}")


def _xor_key(transaction_id: bytes) -> bytes:
    return MAGIC_COOKIE_BYTES + transaction_id


def encode_xor_address(host: str, port: int, transaction_id: bytes) -> bytes:
    """The value of XOR-MAPPED-ADDRESS for `host`, `port` in the message with `transaction_id`."""
    family, packed = _pack_ip(host)
    key = _xor_key(transaction_id)
    masked = bytes(a ^ b for a, b in zip(packed, key, strict=False))
    return bytes((0, family)) + _PORT.pack(port ^ (MAGIC_COOKIE >> 16)) + masked


def decode_xor_address(value: bytes, transaction_id: bytes) -> tuple[str, int]:
    """The (host, port) in an XOR-MAPPED-ADDRESS value; raises StunError."""
    key = _xor_key(transaction_id)
    if not 4 <= len(value) <= 4 + len(key):
        raise StunError(f"bad XOR address length {len(value)}")
    plain = bytes(value[:2]) + _PORT.pack(_PORT.unpack_from(value, 2)[0] ^ (MAGIC_COOKIE >> 16))
    plain += bytes(a ^ b for a, b in zip(value[4:], key, strict=False))
    return decode_address(plain)


def encode_error_code(code: int, reason: str) -> bytes:
    """The value of ERROR-CODE: class and number of `code` (300..699) and a UTF-8 reason phrase."""
    if not 300 <= code <= 699:
        raise ValueError("an error code is 300..699")
    return bytes((0, 0, code // 100, code % 100)) + reason.encode("utf-8")


def decode_error_code(value: bytes) -> tuple[int, str]:
    """The (code, reason) in an ERROR-CODE value; raises StunError."""
    if len(value) < 4:
        raise StunError("ERROR-CODE is too short")
    return (value[2] & 0x07) * 100 + value[3], bytes(value[4:]).decode("utf-8", "replace")


def encode_unknown_attributes(types: list[int], classic: bool = False) -> bytes:
    """The value of UNKNOWN-ATTRIBUTES; for an RFC 3489 agent an odd list repeats its last type to fill 4 bytes."""
    listed = list(types)
    if classic and len(listed) % 2:
        listed.append(listed[-1])
    return b"".join(_PORT.pack(kind) for kind in listed)


def decode_unknown_attributes(value: bytes) -> list[int]:
    """The attribute types in an UNKNOWN-ATTRIBUTES value."""
    return [_PORT.unpack_from(value, offset)[0] for offset in range(0, len(value) - 1, 2)]
