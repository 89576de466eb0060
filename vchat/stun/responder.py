"""The Binding responder's decision, with no I/O: request bytes and addresses in, response bytes out.

What it answers (RFC 8489, RFC 5389, RFC 3489 and RFC 5780):

- a Binding request with the magic cookie gets XOR-MAPPED-ADDRESS, SOFTWARE and FINGERPRINT; one from an
  RFC 3489 client (no cookie) gets MAPPED-ADDRESS and SOFTWARE, with its 128-bit transaction id echoed;
- unknown comprehension-required attributes get a 420 listing each of them once; unknown
  comprehension-optional ones are ignored, and so are the ICE and authentication attributes (nothing is
  authenticated: anyone may ask for their own address). Attributes after MESSAGE-INTEGRITY other than
  MESSAGE-INTEGRITY-SHA256 and FINGERPRINT are ignored, as RFC 8489 section 14.5 says;
- a FINGERPRINT that is present must be the last attribute and right, else the request is dropped;
- with an RFC 5780 address pair, requests that arrive on one of its four address/port combinations get
  RESPONSE-ORIGIN and OTHER-ADDRESS (SOURCE-ADDRESS and CHANGED-ADDRESS for RFC 3489 clients), and
  CHANGE-REQUEST picks which of the four the reply leaves from; anywhere else CHANGE-REQUEST gets a 420;
- everything else (not a Binding request, bad framing, over `MAX_REQUEST_BYTES` or `MAX_ATTRIBUTES`) is
  dropped: `respond` returns None, and never raises whatever the bytes are.

The answer depends only on the request and the addresses, so a retransmission gets the same bytes.
Responses are small: at most `MAX_SUCCESS_BYTES` for a success, and an error is never longer than
`ERROR_OVERHEAD` plus half its request.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from socket import inet_aton

from vchat.addresses import unmap_ipv4
from vchat.stun.message import (
    CHANGE_IP,
    CHANGE_PORT,
    FINGERPRINT_XOR,
    MAGIC_COOKIE,
    MAGIC_COOKIE_BYTES,
    Attr,
    encode_address,
    encode_attribute,
    encode_error_code,
    encode_unknown_attributes,
    encode_xor_address,
)

Address = tuple[str, int]
Reply = tuple[bytes, Address]

MAX_REQUEST_BYTES = 1280
MAX_ATTRIBUTES = 32
MAX_SOFTWARE_BYTES = 32
# Header 20, XOR-MAPPED-ADDRESS, RESPONSE-ORIGIN and OTHER-ADDRESS 24 each for IPv6, SOFTWARE, FINGERPRINT 8.
MAX_SUCCESS_BYTES = 20 + 3 * 24 + 4 + MAX_SOFTWARE_BYTES + 8
# Header 20, ERROR-CODE 4 + 4 + 20, UNKNOWN-ATTRIBUTES 4 (+ 2 per unknown), SOFTWARE, FINGERPRINT 8.
ERROR_OVERHEAD = 20 + 28 + 4 + 4 + MAX_SOFTWARE_BYTES + 8

# Comprehension-required attributes a request may carry that are understood (and ignored) here.
KNOWN_REQUIRED = frozenset(
    {
        Attr.MAPPED_ADDRESS,
        Attr.USERNAME,
        Attr.MESSAGE_INTEGRITY,
        Attr.ERROR_CODE,
        Attr.UNKNOWN_ATTRIBUTES,
        Attr.REALM,
        Attr.NONCE,
        Attr.MESSAGE_INTEGRITY_SHA256,
        Attr.PASSWORD_ALGORITHM,
        Attr.USERHASH,
        Attr.XOR_MAPPED_ADDRESS,
        Attr.PRIORITY,
        Attr.USE_CANDIDATE,
    }
)

_BINDING_REQUEST = b"\x00\x01"
_BARE_REQUEST = b"\x00\x01\x00\x00" + MAGIC_COOKIE_BYTES
_SUCCESS = b"\x01\x01"
_ERROR = b"\x01\x11"
_FINGERPRINT_HEADER = b"\x80\x28\x00\x04"
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_ATTRIBUTE_HEADER = struct.Struct("!HH")
_XOR_V4 = struct.Struct("!6sHI")  # attribute header and family, xor'd port, xor'd address
_XOR_V4_HEADER = b"\x00\x20\x00\x08\x00\x01"
_FINGERPRINT = struct.Struct("!4sI")
_COOKIE_HIGH = MAGIC_COOKIE >> 16
_CACHE_LIMIT = 8192

_FINGERPRINT_TYPE = int(Attr.FINGERPRINT)
_INTEGRITY_TYPES = frozenset({int(Attr.MESSAGE_INTEGRITY), int(Attr.MESSAGE_INTEGRITY_SHA256)})
_INTEGRITY_SHA256_TYPE = int(Attr.MESSAGE_INTEGRITY_SHA256)
_CHANGE_REQUEST_TYPE = int(Attr.CHANGE_REQUEST)
_KNOWN_REQUIRED = frozenset(int(kind) for kind in KNOWN_REQUIRED)


@dataclass(frozen=True)
class AddressPair:
    """RFC 5780's two addresses: the primary (A1, P1) and the alternate (A2, P2), with A1 != A2, P1 != P2.

    The server listens on all four combinations of {A1, A2} and {P1, P2}.
    """

    primary: Address
    alternate: Address

    def __post_init__(self) -> None:
        if self.primary[0] == self.alternate[0] or self.primary[1] == self.alternate[1]:
            raise ValueError("the alternate address differs from the primary in both address and port")


@dataclass(frozen=True)
class _Paired:
    """What RFC 5780 needs for requests that arrive on one of the pair's four combinations."""

    ip: tuple[str, str]  # (this address, the other address)
    port: tuple[int, int]  # (this port, the other port)

    def origin(self, change: int) -> Address:
        return (self.ip[1 if change & CHANGE_IP else 0], self.port[1 if change & CHANGE_PORT else 0])

    def other(self) -> Address:
        return (self.ip[1], self.port[1])


class Responder:
    """Decides the answer to each datagram a STUN listener receives; pure and deterministic."""

    def __init__(self, software: str = "vchat", pair: AddressPair | None = None) -> None:
        encoded = software.encode("utf-8")
        if len(encoded) > MAX_SOFTWARE_BYTES:
            raise ValueError(f"SOFTWARE is at most {MAX_SOFTWARE_BYTES} bytes, to keep responses small")
        self._software = encode_attribute(Attr.SOFTWARE, encoded) if encoded else b""
        self._paired: dict[Address, _Paired] = {}
        if pair is not None:
            (a1, p1), (a2, p2) = pair.primary, pair.alternate
            for ip, other_ip in ((a1, a2), (a2, a1)):
                for port, other_port in ((p1, p2), (p2, p1)):
                    self._paired[(ip, port)] = _Paired((ip, other_ip), (port, other_port))
        # The bare-request fast path: success header with the length for an IPv4 or IPv6 mapped address.
        self._success4 = _SUCCESS + _U16.pack(12 + len(self._software) + 8) + MAGIC_COOKIE_BYTES
        self._success6 = _SUCCESS + _U16.pack(24 + len(self._software) + 8) + MAGIC_COOKIE_BYTES
        self._success4_crc = zlib.crc32(self._success4)
        self._pack4 = struct.Struct(f"!8s12s{12 + len(self._software)}s4sI").pack
        self._tails: dict[Address, bytes] = {}
        self._bare_fast = not self._paired

    def respond(self, data: bytes, source: Address, local: Address) -> Reply | None:
        """The reply to `data` from `source` received on `local`, and the local address to send it from.

        The address is `local` itself unless CHANGE-REQUEST asked for another one. None: drop it.
        """
        if len(data) == 20 and data[:8] == _BARE_REQUEST and self._bare_fast:
            # What Chrome sends to a STUN server, every 10 s per port: the hot path.
            transaction_id = data[8:20]
            tail = self._tails.get(source)
            if tail is not None:
                crc = zlib.crc32(tail, zlib.crc32(transaction_id, self._success4_crc)) ^ FINGERPRINT_XOR
                return self._pack4(self._success4, transaction_id, tail, _FINGERPRINT_HEADER, crc), local
            return self._respond_bare(transaction_id, source, local)
        size = len(data)
        if size < 20 or size > MAX_REQUEST_BYTES or size & 3:
            return None
        if data[:2] != _BINDING_REQUEST or (data[2] << 8 | data[3]) != size - 20:
            return None
        return self._respond_attributes(data, size, source, local)

    def _respond_bare(self, transaction_id: bytes, source: Address, local: Address) -> Reply:
        """The answer to a bare request the hot path has nothing cached for; caches IPv4 sources."""
        host = unmap_ipv4(source[0])
        if ":" in host:
            mapped = encode_attribute(
                Attr.XOR_MAPPED_ADDRESS, encode_xor_address(host, source[1], transaction_id)
            )
            body = self._success6 + transaction_id + mapped + self._software
            return body + _FINGERPRINT.pack(_FINGERPRINT_HEADER, zlib.crc32(body) ^ FINGERPRINT_XOR), local
        # IPv4's XOR-MAPPED-ADDRESS does not depend on the transaction id: remember it with SOFTWARE.
        address = int.from_bytes(inet_aton(host), "big") ^ MAGIC_COOKIE
        tail = _XOR_V4.pack(_XOR_V4_HEADER, source[1] ^ _COOKIE_HIGH, address) + self._software
        if len(self._tails) >= _CACHE_LIMIT:
            self._tails.clear()
        self._tails[source] = tail
        crc = zlib.crc32(tail, zlib.crc32(transaction_id, self._success4_crc)) ^ FINGERPRINT_XOR
        return self._pack4(self._success4, transaction_id, tail, _FINGERPRINT_HEADER, crc), local

    def _respond_attributes(self, data: bytes, size: int, source: Address, local: Address) -> Reply | None:
        unknown: list[int] = []
        change = -1
        after_integrity = False
        position = 20
        count = 0
        unpack = _ATTRIBUTE_HEADER.unpack_from
        while position < size:
            count += 1
            if count > MAX_ATTRIBUTES:
                return None
            attr_type, length = unpack(data, position)
            start = position + 4
            following = start + ((length + 3) & ~3)
            if following > size:
                return None
            if attr_type == _FINGERPRINT_TYPE:
                if following != size or length != 4:
                    return None
                if zlib.crc32(data[:position]) ^ FINGERPRINT_XOR != _U32.unpack_from(data, start)[0]:
                    return None
            elif after_integrity:
                pass  # RFC 8489 section 14.5: ignored, except these two which we ignore anyway
            elif attr_type in _INTEGRITY_TYPES:
                after_integrity = True
            elif attr_type == _CHANGE_REQUEST_TYPE:
                if length != 4:
                    return None
                change = data[start + 3] & (CHANGE_IP | CHANGE_PORT)
            elif attr_type < 0x8000 and attr_type not in _KNOWN_REQUIRED:
                unknown.append(attr_type)
            position = following
        classic = data[4:8] != MAGIC_COOKIE_BYTES
        paired = self._paired.get(local)
        if change >= 0 and paired is None:
            unknown.append(_CHANGE_REQUEST_TYPE)
        if unknown:
            return self._unknown_attributes(data, unknown, classic), local
        host = unmap_ipv4(source[0])
        port = source[1]
        transaction_id = data[8:20]
        if classic:
            attributes = [encode_attribute(Attr.MAPPED_ADDRESS, encode_address(host, port))]
        else:
            attributes = [
                encode_attribute(Attr.XOR_MAPPED_ADDRESS, encode_xor_address(host, port, transaction_id))
            ]
        origin = local
        if paired is not None:
            if change > 0:
                origin = paired.origin(change)
            origin_attr, other_attr = (
                (Attr.SOURCE_ADDRESS, Attr.CHANGED_ADDRESS)
                if classic
                else (Attr.RESPONSE_ORIGIN, Attr.OTHER_ADDRESS)
            )
            attributes.append(encode_attribute(origin_attr, encode_address(*origin)))
            attributes.append(encode_attribute(other_attr, encode_address(*paired.other())))
        return self._finish(_SUCCESS, data, attributes, classic), origin

    def _unknown_attributes(self, data: bytes, unknown: list[int], classic: bool) -> bytes:
        listed = list(dict.fromkeys(unknown))
        attributes = [
            encode_attribute(Attr.ERROR_CODE, encode_error_code(420, "Unknown Attribute")),
            encode_attribute(Attr.UNKNOWN_ATTRIBUTES, encode_unknown_attributes(listed, classic)),
        ]
        return self._finish(_ERROR, data, attributes, classic)

    def _finish(self, kind: bytes, data: bytes, attributes: list[bytes], classic: bool) -> bytes:
        attributes.append(self._software)
        body = b"".join(attributes)
        if classic:
            # RFC 3489 has no FINGERPRINT; its clients get the cookie field back as part of the id.
            return kind + _U16.pack(len(body)) + data[4:20] + body
        head = kind + _U16.pack(len(body) + 8) + data[4:20] + body
        return head + _FINGERPRINT.pack(_FINGERPRINT_HEADER, zlib.crc32(head) ^ FINGERPRINT_XOR)
