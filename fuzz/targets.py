"""Fuzz targets: one check per parser that reads what clients send, each a plain function of bytes.

A check returns quietly when the parser accepts or refuses its input the way its contract says, and raises
(AssertionError, or whatever the parser let escape) when it does not: that is a finding. The atheris
harnesses next to this file and tests/test_fuzz.py call the same functions, so this module imports neither
atheris nor Hypothesis. It is loaded by file path (`import targets` from the harnesses, whose directory is
on `sys.path`; `importlib` from the tests), not installed with vchat.

- `check_signaling_frame`: a WebSocket frame through each codec's `decode`, then `request_id`,
  `message_type` and `parse_message`. Only `ProtocolError` may come out, and what the server would send
  back (the relayed `signal`, `chat` and `typing`, `pong`, `error`) must encode with both codecs and decode
  to the same map: a JSON client and a msgpack client may be matched with each other. Bytes (msgpack `bin`)
  come out of decoding only as a `report`'s `snapshot`, and a parsed `report`'s snapshot is a JPEG or PNG of
  at most 256 KiB. `starts_as_report` never changes its mind as more of a frame arrives.
- `check_stun_message`: `vchat.stun.message.parse_message` accepts exactly the well-framed messages (checked
  against a reference walk written here), refuses the rest with `StunError` only, and `encode_message` gives
  back the same bytes but for the padding (which it writes as zeros).
- `check_responder_input`: the first `RESPONDER_PREFIX` bytes choose the SOFTWARE, the source and local
  addresses (IPv4, IPv6, IPv4-mapped IPv6, link-local IPv6 with a scope) and an optional RFC 5780 address
  pair; the rest is the datagram. `Responder.respond` never raises, answers the same bytes every time,
  keeps its size bounds, and what it answers parses and carries the request's transaction id.
- `check_cluster_message`: `vchat.cluster.wire.decode_message` (what a node reads from another through Redis)
  accepts exactly the inputs a reference check written here accepts (one msgpack map of at most
  `MAX_MESSAGE_BYTES` with a non-empty string `type`, holding only maps with string keys, lists, strings, bytes,
  64-bit integers, finite floats, booleans and None, at most `MAX_DEPTH` deep), refuses the rest with
  `WireError` only, and what it accepts encodes again and decodes to the same values of the same types.
- `check_login_cookie`: the bytes, decoded as UTF-8 with errors replaced, through
  `vchat.accounts.cookie.read_cookie` with `COOKIE_KEY` at `COOKIE_NOW`. It never raises, names an account
  exactly when a reference reading written here does (the signature under that key, then a JSON object whose
  `a` is an account id and whose `e` is an integer after now), and a cookie it accepts is refused at its
  expiry, under another key, and with any one byte changed or left out.
- `check_birth_date`: the first byte picks the provider (`PROVIDERS`), the rest is the text, decoded as UTF-8
  with errors replaced. `vchat.accounts.age.birth_date` raises only ValueError and accepts exactly what a
  reference written here accepts, with the same result; an accepted date is a real date or None, one with a
  year written back in the provider's full format parses to the same, and `is_minor` turns at the 18th
  birthday a reference computes with `datetime` (1 March for 29 February in a common year).
"""

from __future__ import annotations

import base64
import calendar
import contextlib
import hashlib
import hmac
import ipaddress
import json
import re
import zlib
from collections.abc import Callable, Iterator
from datetime import MAXYEAR, date, timedelta
from pathlib import Path
from typing import Any, get_args

import msgpack

from vchat.accounts.age import ADULT_AGE, birth_date, is_minor
from vchat.accounts.cookie import MAX_COOKIE_CHARS, issue_cookie, read_cookie
from vchat.addresses import unmap_ipv4
from vchat.cluster import wire
from vchat.cluster.wire import MAX_DEPTH, MAX_MESSAGE_BYTES, MessageTooLarge, WireError
from vchat.protocol.codec import CODECS, MSGPACK, REPORT_HEAD_BYTES, Codec, starts_as_report
from vchat.protocol.errors import ErrorCode, ProtocolError
from vchat.protocol.messages import (
    CLIENT_TYPES,
    Chat,
    ClientMessage,
    Hello,
    Ping,
    Report,
    Signal,
    Typing,
    message_type,
    parse_message,
    request_id,
)
from vchat.protocol.snapshot import MAX_SNAPSHOT_BYTES
from vchat.stun import message as stun
from vchat.stun.message import (
    CHANGE_IP,
    CHANGE_PORT,
    FINGERPRINT_XOR,
    MAGIC_COOKIE_BYTES,
    Attr,
    Message,
    MessageClass,
    Method,
    StunError,
    decode_address,
    decode_xor_address,
    encode_address,
    encode_message,
    encode_xor_address,
    verify_fingerprint,
)
from vchat.stun.responder import (
    ERROR_OVERHEAD,
    MAX_ATTRIBUTES,
    MAX_REQUEST_BYTES,
    MAX_SUCCESS_BYTES,
    Address,
    AddressPair,
    Responder,
)
from vchat.stun.testing import RFC5769_SAMPLES, binding_request

ROOT = Path(__file__).resolve().parent.parent
_MESSAGE_CLASSES = get_args(ClientMessage)

# --- signaling messages ---------------------------------------------------------------------------------


def check_signaling_frame(data: bytes) -> None:
    """Decode `data` with each codec and check everything the server does with the result."""
    for codec in CODECS.values():
        check_frame(codec, data)


def check_frame(codec: Codec, data: bytes) -> None:
    """One frame through one codec: only `ProtocolError` may come out of decoding and validation."""
    _check_report_head(codec, data)
    try:
        raw = codec.decode(data)
    except ProtocolError as error:
        _check_error(error, None)
        return
    assert type(raw) is dict, f"{codec.subprotocol} decoded {type(raw).__name__}, not a map"
    if type(raw.get("snapshot")) is bytes:
        assert codec is MSGPACK and raw.get("type") == "report", "bytes outside a msgpack report's snapshot"
        assert all(type(value) is not bytes for key, value in raw.items() if key != "snapshot")
    check_raw_message(raw)


def _check_report_head(codec: Codec, data: bytes) -> None:
    """`starts_as_report` decides by the first REPORT_HEAD_BYTES bytes at most, and never changes its mind."""
    decided: bool | None = None
    for end in range(min(len(data), REPORT_HEAD_BYTES + 1) + 1):
        verdict = starts_as_report(data[:end], codec.binary)
        if decided is not None:
            assert verdict is decided, f"starts_as_report changed its mind at byte {end}"
        decided = verdict
    assert decided is not None or len(data) < REPORT_HEAD_BYTES


def check_raw_message(raw: dict[str, Any]) -> None:
    """A decoded map through `request_id`, `message_type` and `parse_message`, each on its own."""
    try:
        rid = request_id(raw)
    except ProtocolError as error:
        _check_error(error, None)
        rid = None
    else:
        assert rid is None or type(rid) in (str, int), f"request id {rid!r}"
        _check_sendable({"type": "pong", "re": rid})
    try:
        kind = message_type(raw)
    except ProtocolError as error:
        _check_error(error, rid)
        kind = None
    else:
        assert type(kind) is str
    try:
        message = parse_message(raw)
    except ProtocolError as error:
        _check_error(error, rid)
        return
    assert isinstance(message, _MESSAGE_CLASSES), f"parse_message returned {message!r}"
    assert kind == message.TYPE
    if isinstance(message, Report) and message.snapshot is not None:
        image = message.snapshot.data
        assert 0 < len(image) <= MAX_SNAPSHOT_BYTES
        assert image.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")), "a snapshot that is no image"
    for relayed in _sent_for(message):
        _check_sendable(relayed)


def _sent_for(message: ClientMessage) -> Iterator[dict[str, Any]]:
    """What the server sends to someone because of `message` (as `SignalingProtocol.handle_*` builds it)."""
    if isinstance(message, Signal):
        yield {"type": "signal", "match_id": message.match_id, "payload": message.payload}
    elif isinstance(message, Chat):
        yield {"type": "chat", "match_id": message.match_id, "text": message.text}
    elif isinstance(message, Typing):
        yield {"type": "typing", "match_id": message.match_id}
    elif isinstance(message, Hello):
        # The partner's profile in `matched` (the country comes from GeoIP, not from the client).
        yield {
            "type": "matched",
            "partner": {"country": None, "gender": message.gender, "lang": message.lang},
        }
    elif isinstance(message, Ping):
        yield {"type": "pong"}


def _check_error(error: ProtocolError, rid: object) -> None:
    """The refusal is well-formed and its `error` message can be sent with either codec."""
    assert isinstance(error.code, ErrorCode), f"error code {error.code!r}"
    assert isinstance(error.message, str)
    reply: dict[str, Any] = {"type": "error", "code": error.code.value, "message": error.message}
    if rid is not None:
        reply["re"] = rid
    _check_sendable(reply)


def _check_sendable(message: dict[str, Any]) -> None:
    """`message` encodes with both codecs, and a client reading it with either gets the same map back."""
    for codec in CODECS.values():
        frame = codec.encode(message)
        assert codec.decode(frame) == message, f"{codec.subprotocol} does not carry {message!r} unchanged"


# --- STUN messages --------------------------------------------------------------------------------------


def check_stun_message(data: bytes) -> None:
    """`parse_message` agrees with a reference walk, raises only StunError, and re-encodes faithfully."""
    expected = reference_stun_framing(data)
    try:
        message = stun.parse_message(data)
    except StunError:
        assert expected is None, "parse_message refused a well-framed message"
        verify_fingerprint(data)  # must not raise either
        return
    assert expected is not None, "parse_message accepted a badly framed message"
    attributes, padding = expected
    assert list(message.attributes) == attributes
    assert stun.message_type(message.method, message.message_class) == int.from_bytes(data[:2], "big")
    assert message.cookie == int.from_bytes(data[4:8], "big")
    assert message.transaction_id == data[8:20]
    # encode_message writes the same header and attributes; only padding (zeros here) may differ.
    for fill in (b"\x00", b" "):
        encoded = encode_message(message, padding=fill)
        assert len(encoded) == len(data) and encoded[:20] == data[:20]
        assert stun.parse_message(encoded) == message
        differ = {i for i in range(20, len(data)) if encoded[i] != data[i]}
        assert differ <= padding, f"encode_message changed bytes {sorted(differ - padding)} outside padding"
    assert (encode_message(message) == data) == all(data[i] == 0 for i in padding)
    assert verify_fingerprint(data) == _reference_fingerprint(data, attributes)
    _check_attribute_decoders(message)


def reference_stun_framing(data: bytes) -> tuple[list[tuple[int, bytes]], set[int]] | None:
    """RFC 8489's framing, written out independently: (attributes, offsets of padding bytes) or None."""
    size = len(data)
    if size < 20 or size % 4 or data[0] & 0xC0 or int.from_bytes(data[2:4], "big") != size - 20:
        return None
    attributes = []
    padding: set[int] = set()
    position = 20
    while position < size:
        if size - position < 4:
            return None
        kind = int.from_bytes(data[position : position + 2], "big")
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        end = position + 4 + length
        following = end + (-length % 4)
        if following > size:
            return None
        attributes.append((kind, data[position + 4 : end]))
        padding.update(range(end, following))
        position = following
    return attributes, padding


def _reference_fingerprint(data: bytes, attributes: list[tuple[int, bytes]]) -> bool:
    if not attributes or attributes[-1][0] != Attr.FINGERPRINT or len(attributes[-1][1]) != 4:
        return False
    return zlib.crc32(data[:-8]) ^ FINGERPRINT_XOR == int.from_bytes(data[-4:], "big")


def _check_attribute_decoders(message: Message) -> None:
    """Every attribute decoder raises only StunError, and addresses survive encoding again."""
    for kind, value in message.attributes:
        _check_address_round_trip(value, None)
        _check_address_round_trip(value, message.transaction_id)
        message.text(kind)
    for accessor in (message.xor_mapped_address, message.error_code):
        with contextlib.suppress(StunError):
            accessor()
    unknown = message.unknown_attributes()
    assert all(0 <= kind <= 0xFFFF for kind in unknown)


def _check_address_round_trip(value: bytes, transaction_id: bytes | None) -> None:
    try:
        if transaction_id is None:
            host, port = decode_address(value)
        else:
            host, port = decode_xor_address(value, transaction_id)
    except StunError:
        return
    family, size = value[1], len(value)
    assert (family, size) in ((stun.FAMILY_IPV4, 8), (stun.FAMILY_IPV6, 20)), (
        f"decoded {(host, port)} from a {size}-byte address value of family {family}"
    )
    if transaction_id is None:
        again = decode_address(encode_address(host, port))
    else:
        again = decode_xor_address(encode_xor_address(host, port, transaction_id), transaction_id)
    assert again[1] == port and _same_ip(again[0], host), f"{(host, port)} came back as {again}"


def _same_ip(a: str, b: str) -> bool:
    """Whether two host strings name the same address, an IPv4-mapped IPv6 address being its IPv4 one."""

    def plain(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        ip = ipaddress.ip_address(unmap_ipv4(host).split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        return ip

    return plain(a) == plain(b)


# --- STUN responder -------------------------------------------------------------------------------------

SOFTWARES = ("vchat", "", "x" * 32, "é" * 16)  # the default, none, and the longest, ASCII and not
_ADDRESS_BYTES = 18  # 16 bytes of address, 2 of port
RESPONDER_PREFIX = 2 + 4 * _ADDRESS_BYTES
IPV4, IPV6, IPV4_MAPPED, IPV6_SCOPED = range(4)


def responder_input(
    request: bytes,
    *,
    source: int = IPV4,
    local: int = IPV4,
    pair: bool = False,
    local_in_pair: int | None = None,
    software: int = 0,
    addresses: bytes = b"",
) -> bytes:
    """The fuzz input that `check_responder_input` turns into these choices and `request` (for seeds)."""
    flags = source | local << 2 | pair << 4
    if local_in_pair is not None:
        flags |= 1 << 5 | local_in_pair << 6
    filler = bytes(range(1, 4 * _ADDRESS_BYTES + 1))
    return bytes((flags, software)) + (addresses + filler)[: 4 * _ADDRESS_BYTES] + request


def split_responder_input(data: bytes) -> tuple[str, AddressPair | None, Address, Address, bytes]:
    """(software, pair, source, local, request) chosen by the bytes of a fuzz input."""
    head = data[:RESPONDER_PREFIX].ljust(RESPONDER_PREFIX, b"\x00")
    flags, choice = head[0], head[1]
    fields = [head[2 + i * _ADDRESS_BYTES : 2 + (i + 1) * _ADDRESS_BYTES] for i in range(4)]
    source = _address(fields[0], flags & 3)
    local = _address(fields[1], flags >> 2 & 3)
    pair = None
    if flags & 0x10:
        family = IPV6 if flags >> 2 & 1 else IPV4  # both of a pair's addresses have one family
        primary = _address(fields[2], family)
        alternate = _address(fields[3], family)
        if alternate[0] == primary[0]:
            alternate = _address(fields[3][:15] + bytes((fields[3][15] ^ 1,)), family)
            if family == IPV4:
                alternate = _address(fields[3][:3] + bytes((fields[3][3] ^ 1,)), family)
        if alternate[1] == primary[1]:
            alternate = (alternate[0], alternate[1] ^ 1)
        pair = AddressPair(primary, alternate)
        if flags & 0x20:
            (a1, p1), (a2, p2) = primary, alternate
            local = ((a1, p1), (a1, p2), (a2, p1), (a2, p2))[flags >> 6]
    return SOFTWARES[choice % len(SOFTWARES)], pair, source, local, data[RESPONDER_PREFIX:]


def _address(field: bytes, form: int) -> Address:
    port = int.from_bytes(field[16:18], "big")
    if form == IPV4:
        return str(ipaddress.IPv4Address(field[:4])), port
    if form == IPV4_MAPPED:
        return "::ffff:" + str(ipaddress.IPv4Address(field[:4])), port  # as a dual-stack socket reports it
    if form == IPV6_SCOPED:
        return str(ipaddress.IPv6Address(b"\xfe\x80" + bytes(6) + field[8:16])) + "%eth0", port
    return str(ipaddress.IPv6Address(field[:16])), port


def check_responder_input(data: bytes) -> None:
    """Split a fuzz input into addresses and a datagram, and check the responder's answer."""
    check_responder(*split_responder_input(data))


def check_responder(
    software: str, pair: AddressPair | None, source: Address, local: Address, request: bytes
) -> None:
    """`Responder(software, pair).respond(request, source, local)` keeps the module's promises."""
    responder = Responder(software, pair)
    reply = responder.respond(request, source, local)
    assert responder.respond(request, source, local) == reply, "a retransmission got other bytes"
    assert Responder(software, pair).respond(request, source, local) == reply, "another responder differs"
    framed = reference_stun_framing(request)
    if reply is None:
        if (
            framed is not None
            and request[:2] == b"\x00\x01"
            and len(request) <= MAX_REQUEST_BYTES
            and len(framed[0]) <= MAX_ATTRIBUTES
            and not {Attr.FINGERPRINT, Attr.CHANGE_REQUEST} & {kind for kind, _ in framed[0]}
        ):
            raise AssertionError("a well-framed Binding request was dropped")
        return
    assert framed is not None and request[:2] == b"\x00\x01", "answered something that is no Binding request"
    assert len(request) <= MAX_REQUEST_BYTES
    payload, origin = reply
    assert type(payload) is bytes
    message = stun.parse_message(payload)
    assert message.method == Method.BINDING
    assert payload[4:20] == request[4:20], "the reply does not carry the request's transaction id"
    classic = request[4:8] != MAGIC_COOKIE_BYTES
    kinds = message.types()
    if classic:
        assert Attr.FINGERPRINT not in kinds
    else:
        assert kinds[-1] == Attr.FINGERPRINT and verify_fingerprint(payload)
    assert message.text(Attr.SOFTWARE) == (software or None)
    combos = _combinations(pair)
    if message.message_class == MessageClass.ERROR:
        assert len(payload) <= ERROR_OVERHEAD + len(request) // 2, f"{len(payload)}-byte error"
        assert message.error_code() == (420, "Unknown Attribute")
        listed = message.unknown_attributes()
        asked = {kind for kind, _ in framed[0]}
        assert listed and all(kind < 0x8000 and kind in asked for kind in listed), f"420 lists {listed}"
        assert origin == local
        return
    assert message.message_class == MessageClass.SUCCESS
    assert len(payload) <= MAX_SUCCESS_BYTES, f"{len(payload)}-byte success"
    mapped = message.address(Attr.MAPPED_ADDRESS) if classic else message.xor_mapped_address()
    assert mapped is not None and mapped[1] == source[1] and _same_ip(mapped[0], source[0])
    family = message.get(Attr.MAPPED_ADDRESS if classic else Attr.XOR_MAPPED_ADDRESS)[1]  # type: ignore[index]
    assert family == (stun.FAMILY_IPV6 if ":" in unmap_ipv4(source[0]) else stun.FAMILY_IPV4)
    origin_attr, other_attr = (
        (Attr.SOURCE_ADDRESS, Attr.CHANGED_ADDRESS) if classic else (Attr.RESPONSE_ORIGIN, Attr.OTHER_ADDRESS)
    )
    if local in combos:
        assert pair is not None
        (a1, p1), (a2, p2) = pair.primary, pair.alternate
        here_ip, there_ip = (a1, a2) if local[0] == a1 else (a2, a1)
        here_port, there_port = (p1, p2) if local[1] == p1 else (p2, p1)
        change = _change_request(framed[0])
        expected = (
            there_ip if change & CHANGE_IP else here_ip,
            there_port if change & CHANGE_PORT else here_port,
        )
        assert origin == expected, f"CHANGE-REQUEST {change} from {local} answered from {origin}"
        assert message.address(origin_attr) == origin
        assert message.address(other_attr) == (there_ip, there_port)
    else:
        assert origin == local
        assert origin_attr not in kinds and other_attr not in kinds


def _change_request(attributes: list[tuple[int, bytes]]) -> int:
    """The flags of the CHANGE-REQUEST that counts (the last one before any MESSAGE-INTEGRITY), or 0."""
    change = 0
    for kind, value in attributes:
        if kind in (Attr.MESSAGE_INTEGRITY, Attr.MESSAGE_INTEGRITY_SHA256):
            break
        if kind == Attr.CHANGE_REQUEST:
            change = value[3] & (CHANGE_IP | CHANGE_PORT)
    return change


def _combinations(pair: AddressPair | None) -> tuple[Address, ...]:
    if pair is None:
        return ()
    (a1, p1), (a2, p2) = pair.primary, pair.alternate
    return ((a1, p1), (a1, p2), (a2, p1), (a2, p2))


# --- messages between nodes ----------------------------------------------------------------------------


def check_cluster_message(data: bytes) -> None:
    """`decode_message` agrees with a reference check, raises only WireError, and what it accepts goes again."""
    expected = reference_cluster_message(data)
    try:
        message = wire.decode_message(data)
    except WireError:
        assert expected is None, "decode_message refused a valid message"
        return
    assert expected is not None, "decode_message accepted something that is no message"
    assert repr(message) == repr(expected)
    try:
        again = wire.encode_message(message)
    except MessageTooLarge:
        # msgpack may write a float in 5 bytes, which encode_message writes in 9: only such growth may
        # take a message over the limit.
        assert len(data) <= MAX_MESSAGE_BYTES < 2 * len(data)
        return
    decoded = wire.decode_message(again)
    assert repr(decoded) == repr(message), (
        "a message did not come back as it went"
    )  # types too: True is not 1
    assert wire.encode_message(decoded) == again


def reference_cluster_message(data: bytes) -> dict[str, Any] | None:
    """The message `data` holds by the rules of `vchat.cluster.wire`, checked here without recursion; None
    if it holds none."""
    if len(data) > MAX_MESSAGE_BYTES:
        return None
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True, timestamp=0)
    except Exception:
        return None
    if type(value) is not dict or type(value.get("type")) is not str or not value["type"]:
        return None
    pending: list[tuple[Any, int]] = [(value, 1)]  # a value, and how many containers hold it or are it
    while pending:
        item, level = pending.pop()
        kind = type(item)
        if kind is dict or kind is list:
            if level > MAX_DEPTH:
                return None
            if kind is dict:
                if any(type(key) is not str for key in item):
                    return None
                pending.extend((key, level) for key in item)
            pending.extend((child, level + 1) for child in (item.values() if kind is dict else item))
        elif kind is str:
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return None
        elif kind is int:
            if not -(2**63) <= item < 2**64:
                return None
        elif kind is float:
            if item != item or item in (float("inf"), float("-inf")):
                return None
        elif item is not None and kind is not bool and kind is not bytes:
            return None
    message: dict[str, Any] = value
    return message


# The kinds of message docs/cluster.md names, as nodes would send them: for the seeds.
CLUSTER_EXAMPLES: dict[str, dict[str, Any]] = {
    "signal": {"type": "signal", "session": "Nq3xK9", "match_id": "m1", "payload": {"sdp": "v=0\r\n"}},
    "chat": {"type": "chat", "session": "Nq3xK9", "match_id": "m1", "text": "héllo"},
    "typing": {"type": "typing", "session": "Nq3xK9", "match_id": "m1"},
    "partner_left": {"type": "partner_left", "session": "Nq3xK9", "reason": "disconnect"},
    "kick": {"type": "kick", "session": "Nq3xK9", "close_code": 4003},
    "ban": {"type": "ban", "ban_id": "b1", "target": ["ip", "2001:db8::/32"], "ends_at": 1.5e9},
    "handover": {
        "type": "handover",
        "session": "Nq3xK9",
        "filters": {"want": "any", "countries": ["DE", "AT"]},
        "previous": None,
        "snapshot": b"\xff\xd8\xff\xe0",
        "counts": [0, -1, 2**64 - 1, -(2**63), True, False],
    },
}


# --- login cookie ---------------------------------------------------------------------------------------

COOKIE_KEY = b"vchat fuzz: the login cookie key"
OTHER_COOKIE_KEY = b"vchat fuzz: a key that is not it"
COOKIE_NOW = 1_800_000_000.0
_BASE64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def signed_cookie(payload: str, key: bytes = COOKIE_KEY) -> str:
    """`payload` (taken as written, base64url or not) and its signature under `key`: a cookie of any content."""
    signature = hmac.digest(key, payload.encode("ascii"), hashlib.sha256)
    return f"{payload}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode('ascii')}"


def signed_json_cookie(content: bytes, key: bytes = COOKIE_KEY) -> str:
    """A cookie whose payload is `content` (JSON or not) in base64url, signed with `key`."""
    return signed_cookie(base64.urlsafe_b64encode(content).rstrip(b"=").decode("ascii"), key)


def check_login_cookie(data: bytes) -> None:
    """`read_cookie` never raises, agrees with a reference reading, and a cookie it accepts holds only intact."""
    value = data.decode("utf-8", "replace")
    account = read_cookie(COOKIE_KEY, value, COOKIE_NOW)
    expected = reference_login_cookie(value, COOKIE_KEY, COOKIE_NOW)
    assert account == expected, f"read_cookie named {account!r}, the reference {expected!r}"
    if account is None:
        return
    payload = value.split(".")[0]
    expiry = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["e"]
    assert read_cookie(COOKIE_KEY, value, expiry) is None, "a cookie was read at its expiry"
    assert read_cookie(OTHER_COOKIE_KEY, value, COOKIE_NOW) is None, "a cookie was read under another key"
    for at in range(len(data)):
        for changed in (
            data[:at] + bytes((data[at] ^ 0x01,)) + data[at + 1 :],  # another ASCII character
            data[:at] + bytes((data[at] ^ 0x80,)) + data[at + 1 :],  # not UTF-8 any more
            data[:at] + data[at + 1 :],
        ):
            again = read_cookie(COOKIE_KEY, changed.decode("utf-8", "replace"), COOKIE_NOW)
            assert again is None, f"a cookie changed at byte {at} still names {again!r}"


def reference_login_cookie(value: str, key: bytes, now: float) -> str | None:
    """The account `value` names by vchat.accounts.cookie's docstring, read here on its own; None if none."""
    if len(value) > MAX_COOKIE_CHARS or value.count(".") != 1:
        return None
    payload = value.split(".")[0]
    if not set(payload) <= _BASE64URL or signed_cookie(payload, key) != value:
        return None
    try:
        content = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, RecursionError):  # binascii.Error and UnicodeDecodeError are ValueErrors
        return None
    if type(content) is not dict:
        return None
    account, expiry = content.get("a"), content.get("e")
    if type(account) is not str or not 1 <= len(account) <= 128 or not all("!" <= c <= "~" for c in account):
        return None
    if type(expiry) is not int or not expiry > now:
        return None
    return account


def login_cookie_seeds() -> dict[str, bytes]:
    """Cookies that `COOKIE_KEY` signed, good and bad, and near misses: past the signature check only from here."""
    now = COOKIE_NOW
    valid = issue_cookie(COOKIE_KEY, "acct-1", now, 3600)
    longest = "".join(chr(0x21 + i % 94) for i in range(128))
    payloads = {
        "json-array": b'["acct-1",1800003600]',
        "json-string": b'"acct-1"',
        "account-number": b'{"a":1,"e":1800003600}',
        "account-empty": b'{"a":"","e":1800003600}',
        "account-space": b'{"a":"a b","e":1800003600}',
        "account-129": b'{"a":"' + b"x" * 129 + b'","e":1800003600}',
        "account-missing": b'{"e":1800003600}',
        "expiry-text": b'{"a":"acct-1","e":"1800003600"}',
        "expiry-true": b'{"a":"acct-1","e":true}',
        "expiry-float": b'{"a":"acct-1","e":1800003600.0}',
        "expiry-null": b'{"a":"acct-1","e":null}',
        "extra-field": b'{"a":"acct-1","e":1800003600,"n":"Name"}',
        "not-json": b"acct-1",
        "cut-json": b'{"a":"acct-1","e":18000',
        "not-utf8": b'{"a":"\xff","e":1800003600}',
        "deep-json": b"[" * 150 + b"]" * 150,
    }
    seeds = {
        "valid": valid,
        "valid-longest-account": issue_cookie(COOKIE_KEY, longest, now, 86400 * 365),
        "valid-last-second": issue_cookie(COOKIE_KEY, "acct-2", now, 1),
        "expired-now": issue_cookie(COOKIE_KEY, "acct-3", now - 60, 60),
        "other-key": issue_cookie(OTHER_COOKIE_KEY, "acct-1", now, 3600),
        "signed-padded-base64": signed_cookie(valid.split(".")[0] + "="),
        "signed-base64-one-over": signed_cookie("eyJhIjoiYSJ9x"),
        "tampered-payload": "f" + valid[1:],
        "tampered-signature": valid[:-1] + ("A" if valid[-1] != "A" else "B"),
        "truncated": valid[:-5],
        "extra-dot": valid + ".x",
        "no-dot": valid.replace(".", ""),
        "non-ascii": valid[:-1] + "\u00e9",
        "too-long": "A" * (MAX_COOKIE_CHARS - len(valid) + 1) + valid,
    }
    seeds.update((f"signed-{name}", signed_json_cookie(content)) for name, content in payloads.items())
    return {name: value.encode("utf-8") for name, value in seeds.items()}


# --- birth dates ----------------------------------------------------------------------------------------

PROVIDERS = ("facebook", "vk", "oidc")
BIRTH_DATE_TODAY = date(2026, 6, 15)

# (separator, the fields in order for each number of parts) as each provider writes a birth date.
_BIRTH_DATE_LAYOUTS: dict[str, tuple[str, dict[int, str]]] = {
    "facebook": ("/", {1: "y", 2: "md", 3: "mdy"}),
    "vk": (".", {2: "dm", 3: "dmy"}),
    "oidc": ("-", {1: "y", 3: "ymd"}),
}


def birth_date_input(provider: str, text: str) -> bytes:
    """The fuzz input that `check_birth_date` turns into `provider` and `text` (for seeds)."""
    return bytes((PROVIDERS.index(provider),)) + text.encode("utf-8")


def split_birth_date_input(data: bytes) -> tuple[str, str]:
    """(provider, text) chosen by the bytes of a fuzz input."""
    if not data:
        return PROVIDERS[0], ""
    return PROVIDERS[data[0] % len(PROVIDERS)], data[1:].decode("utf-8", "replace")


def check_birth_date(data: bytes) -> None:
    """`birth_date` raises only ValueError, agrees with a reference, writes back, and `is_minor` turns at 18."""
    provider, text = split_birth_date_input(data)
    accepted, expected = reference_birth_date(provider, text)
    try:
        born = birth_date(provider, text)
    except ValueError:
        assert not accepted, f"birth_date refused {provider} {text!r}, a date: {expected}"
        return
    assert accepted, f"birth_date accepted {provider} {text!r} as {born}"
    assert born == expected, f"birth_date read {provider} {text!r} as {born}, not {expected}"
    if born is None:
        assert not is_minor(born, BIRTH_DATE_TODAY)
        return
    assert type(born) is tuple and len(born) == 3 and all(type(part) is int for part in born)
    date(*born)  # a real day, or ValueError: a finding here
    written = format_birth_date(provider, born)
    assert birth_date(provider, written) == born, f"{born} written as {written!r} reads otherwise"
    assert is_minor(born, BIRTH_DATE_TODAY) == reference_is_minor(born, BIRTH_DATE_TODAY)
    adult = adult_day(born)
    if adult is not None:
        assert is_minor(born, adult - timedelta(days=1)), f"born {born}: not a minor the day before {adult}"
        assert not is_minor(born, adult), f"born {born}: still a minor on {adult}"


def reference_birth_date(provider: str, text: str) -> tuple[bool, tuple[int, int, int] | None]:
    """(whether `text` is a birth date as `provider` writes it, the date or None without a year), read here
    without regular expressions or `datetime`."""
    if provider not in _BIRTH_DATE_LAYOUTS:
        return False, None
    separator, layouts = _BIRTH_DATE_LAYOUTS[provider]
    parts = text.split(separator)
    layout = layouts.get(len(parts))
    if layout is None:
        return False, None
    fields: dict[str, int] = {}
    for name, part in zip(layout, parts, strict=True):
        sizes = (4,) if name == "y" else (1, 2) if provider == "vk" else (2,)
        if len(part) not in sizes or not all("0" <= c <= "9" for c in part):
            return False, None
        fields[name] = int(part)
    year = fields.get("y", 0)  # 0000 is a year withheld
    if "m" in fields:
        month, day = fields["m"], fields["d"]
        if not 1 <= month <= 12 or not 1 <= day <= calendar.monthrange(year or 2000, month)[1]:
            return False, None
        return True, (year, month, day) if year else None
    return True, (year, 12, 31) if year else None


def format_birth_date(provider: str, born: tuple[int, int, int]) -> str:
    """`born` in `provider`'s format with a year and a day."""
    year, month, day = born
    if provider == "facebook":
        return f"{month:02d}/{day:02d}/{year:04d}"
    if provider == "vk":
        return f"{day}.{month}.{year:04d}"
    return f"{year:04d}-{month:02d}-{day:02d}"


def adult_day(born: tuple[int, int, int]) -> date | None:
    """The 18th birthday (1 March for 29 February in a common year); None past `datetime`'s last year."""
    year, month, day = born
    if year + ADULT_AGE > MAXYEAR:
        return None
    try:
        return date(year + ADULT_AGE, month, day)
    except ValueError:
        return date(year + ADULT_AGE, 3, 1)


def reference_is_minor(born: tuple[int, int, int] | None, today: date) -> bool:
    """Whether someone born on `born` is under 18 on `today`, by `adult_day`; False for no year."""
    if born is None:
        return False
    adult = adult_day(born)
    return adult is None or today < adult


def birth_date_seeds() -> dict[str, bytes]:
    """Each provider's documented formats, at the edges of the calendar, and near misses."""
    texts = {
        "facebook": {
            "MM-DD-YYYY": "12/31/1990",
            "MM-DD-YYYY-feb29": "02/29/2000",
            "MM-DD-YYYY-feb29-common": "02/29/1900",
            "MM-DD-YYYY-invalid": "02/30/2000",
            "MM-DD": "12/31",
            "MM-DD-feb29": "02/29",
            "YYYY": "1990",
            "year-0000": "0000",
            "one-digit-month": "1/31/1990",
        },
        "vk": {
            "D.M.YYYY": "1.2.1990",
            "DD.MM.YYYY": "31.12.1990",
            "DD.M.YYYY": "01.2.1990",
            "D.M": "5.11",
            "DD.MM-feb29": "29.02",
            "D.M.YYYY-invalid": "31.4.2000",
            "year-only": "1990",
            "year-0000": "1.1.0000",
        },
        "oidc": {
            "YYYY-MM-DD": "1990-12-31",
            "0000-MM-DD": "0000-02-29",
            "YYYY": "1990",
            "YYYY-MM-DD-invalid": "2001-13-01",
            "first-day": "0001-01-01",
            "last-day": "9999-12-31",
            "YYYY-MM": "1990-12",
        },
    }
    return {
        f"{provider}-{name}": birth_date_input(provider, text)
        for provider, examples in texts.items()
        for name, text in examples.items()
    }


# --- registry and seeds ---------------------------------------------------------------------------------

TARGETS: dict[str, Callable[[bytes], None]] = {
    "messages": check_signaling_frame,
    "stun_message": check_stun_message,
    "stun_responder": check_responder_input,
    "cluster_message": check_cluster_message,
    "login_cookie": check_login_cookie,
    "birth_date": check_birth_date,
}


def protocol_examples() -> list[dict[str, Any]]:
    """Every JSON example in docs/protocol.md (as tests/test_docs.py reads them)."""
    text = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, flags=re.S)]


def seed_inputs() -> dict[str, dict[str, bytes]]:
    """The seed corpus of each target, by file name: protocol.md examples and RFC 5769's vectors."""
    messages = {}
    for number, example in enumerate(protocol_examples()):
        for codec in CODECS.values():
            name = f"protocol-{number:02d}-{example['type']}.{codec.subprotocol.rsplit('.', 1)[1]}"
            messages[name] = codec.encode(example)
    txid = bytes(range(12))
    requests = {
        "bare": binding_request(txid),
        "fingerprint": binding_request(txid, fingerprint=True),
        "change-request": binding_request(txid, ((Attr.CHANGE_REQUEST, bytes((0, 0, 0, 6))),), True),
        "unknown-required": binding_request(txid, ((0x7777, b"x"), (0x8077, b"optional")), True),
        "classic": b"\x00\x01\x00\x00" + bytes(range(16)),
        "rfc5769-request": RFC5769_SAMPLES["request"],
        "rfc5769-long-term-request": RFC5769_SAMPLES["long-term-request"],
    }
    stun_messages = {f"rfc5769-{name}": sample for name, sample in RFC5769_SAMPLES.items()}
    stun_messages.update((f"request-{name}", request) for name, request in requests.items())
    responder = {}
    for name, request in requests.items():
        responder[f"ipv4-{name}"] = responder_input(request)
        responder[f"ipv6-{name}"] = responder_input(request, source=IPV6, local=IPV6, software=1)
    responder["mapped-bare"] = responder_input(requests["bare"], source=IPV4_MAPPED, local=IPV6)
    responder["scoped-bare"] = responder_input(requests["bare"], source=IPV6_SCOPED, local=IPV6_SCOPED)
    for combo in range(4):
        responder[f"pair{combo}-change-request"] = responder_input(
            requests["change-request"], pair=True, local_in_pair=combo, software=2
        )
    responder["pair-elsewhere-classic"] = responder_input(requests["classic"], pair=True, software=3)
    # The responder's answers make seeds for the parser: the address attributes a client reads.
    for name, data in responder.items():
        software, pair, source, local, request = split_responder_input(data)
        answered = Responder(software, pair).respond(request, source, local)
        if answered is not None:
            stun_messages[f"reply-{name}"] = answered[0]
    cluster = {f"{name}.msgpack": wire.encode_message(example) for name, example in CLUSTER_EXAMPLES.items()}
    return {
        "messages": messages,
        "stun_message": stun_messages,
        "stun_responder": responder,
        "cluster_message": cluster,
        "login_cookie": login_cookie_seeds(),
        "birth_date": birth_date_seeds(),
    }


_WORDS = (
    *sorted(CLIENT_TYPES),
    *("type", "id", "re", "age_confirmed", "gender", "lang", "client", "resume", "want", "countries"),
    *("match_id", "payload", "text", "m", "f", "u", "any", "DE", "de-AT"),
)
_JSON_TOKENS = ("true", "false", "null", "{}", "[]", ":", ",", '"\\ud800"', "1e999", "NaN", "-0.0", "1.5")
_NUMBERS = (2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 2**31)


def dictionaries() -> dict[str, list[bytes]]:
    """Tokens for libFuzzer to splice into each target's inputs: field names, values, framing."""
    messages = [json.dumps(word).encode() for word in _WORDS]
    messages += [MSGPACK.encode({word: None})[1:-1] for word in _WORDS]  # the packed string alone
    messages += [token.encode() for token in _JSON_TOKENS] + [str(n).encode() for n in _NUMBERS]
    messages += [msgpack.packb(n) for n in _NUMBERS if -(2**63) <= n < 2**64]
    messages += [b"\xc4\x01x", b"\xd4\x01\x00", b"\xd6\xff\x00\x00\x00\x00"]  # bin, ext, timestamp
    stun_tokens = [MAGIC_COOKIE_BYTES, b"\x00\x01", b"\x01\x01", b"\x01\x11", b"\x00\x01\x00\x08"]
    stun_tokens += [kind.to_bytes(2, "big") for kind in Attr]
    stun_tokens += [b"\x80\x28\x00\x04", b"\x00\x03\x00\x04\x00\x00\x00\x06", b"\x00\x08\x00\x14"]
    messages, stun_tokens = list(dict.fromkeys(messages)), list(dict.fromkeys(stun_tokens))
    words = {word for example in CLUSTER_EXAMPLES.values() for word in _words(example)}
    cluster = [msgpack.packb(word) for word in sorted(words)]
    cluster += [msgpack.packb(n) for n in _NUMBERS if -(2**63) <= n < 2**64]
    cluster += [b"\xc4\x01x", b"\xd4\x01\x00", b"\xd6\xff\x00\x00\x00\x00", b"\xca\x3f\x80\x00\x00"]
    cluster += [b"\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00", b"\xde\x00\x01", b"\xdc\x00\x01", b"\xc2", b"\xc3"]
    return {
        "messages": messages,
        "stun_message": stun_tokens,
        "stun_responder": stun_tokens,
        "cluster_message": list(dict.fromkeys(cluster)),
        "login_cookie": [b".", b"-", b"_", b"=", b"eyJhIjoi", b"IiwiZSI6", b"MTgwMDAwMzYwMH0", b"eyJ", b"fQ"],
        "birth_date": [
            *(bytes((number,)) for number in range(len(PROVIDERS))),
            *(b"/", b".", b"-", b"0000", b"1990", b"2008", b"9999", b"02/29", b"12/31", b"29.2", b"-02-29"),
        ],
    }


def _words(value: Any) -> Iterator[str]:
    """Every string in `value`, keys too."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _words(item)
    elif isinstance(value, list):
        for item in value:
            yield from _words(item)


def regression_inputs() -> Iterator[tuple[str, str, bytes]]:
    """(target, file name, bytes) of each input kept under fuzz/regressions/<target>/."""
    base = Path(__file__).resolve().parent / "regressions"
    for target in sorted(TARGETS):
        folder = base / target
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                if path.is_file():
                    yield target, path.name, path.read_bytes()
