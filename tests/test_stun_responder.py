"""The responder's decisions and the per-source limiter, called directly: no sockets, no reactor."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vchat.stun.message import (
    CHANGE_IP,
    CHANGE_PORT,
    Attr,
    Message,
    MessageClass,
    Method,
    encode_attribute,
    encode_message,
    parse_message,
    verify_fingerprint,
)
from vchat.stun.responder import (
    ERROR_OVERHEAD,
    MAX_ATTRIBUTES,
    MAX_REQUEST_BYTES,
    MAX_SUCCESS_BYTES,
    AddressPair,
    Responder,
)
from vchat.stun.testing import SAMPLE_LONG_TERM_REQUEST, SAMPLE_REQUEST, request

CLIENT = ("198.51.100.7", 40000)
CLIENT6 = ("2001:db8::7", 40000)
LOCAL = ("192.0.2.1", 3478)
LOCAL6 = ("2001:db8::1", 3478)
PAIR = AddressPair(("192.0.2.1", 3478), ("192.0.2.2", 3479))


def answer(data: bytes, source=CLIENT, local=LOCAL, responder: Responder | None = None) -> Message:
    """The parsed reply to `data`, checking it leaves from `local`."""
    reply = (responder or Responder()).respond(data, source, local)
    assert reply is not None
    payload, origin = reply
    assert origin == local
    return parse_message(payload)


def test_bare_request_gets_xor_mapped_address_software_and_fingerprint() -> None:
    data = request()
    assert len(data) == 20
    reply = Responder().respond(data, CLIENT, LOCAL)
    assert reply is not None
    payload, origin = reply
    assert origin is LOCAL
    message = parse_message(payload)
    assert (message.method, message.message_class) == (Method.BINDING, MessageClass.SUCCESS)
    assert message.transaction_id == data[8:20]
    assert message.types() == [Attr.XOR_MAPPED_ADDRESS, Attr.SOFTWARE, Attr.FINGERPRINT]
    assert message.xor_mapped_address() == CLIENT
    assert message.text(Attr.SOFTWARE) == "vchat"
    assert verify_fingerprint(payload)
    assert len(payload) == 52


@pytest.mark.parametrize("source", [CLIENT, CLIENT6, ("::ffff:198.51.100.7", 5)])
@pytest.mark.parametrize("fingerprint", [False, True])
def test_mapped_address_of_each_family(source: tuple[str, int], fingerprint: bool) -> None:
    message = answer(request(fingerprint=fingerprint), source=source)
    host = source[0].removeprefix("::ffff:")
    assert message.xor_mapped_address() == (host, source[1])
    assert message.get(Attr.XOR_MAPPED_ADDRESS)[1] == (2 if ":" in host else 1)  # type: ignore[index]


def test_retransmission_gets_the_same_bytes() -> None:
    responder = Responder()
    for data in (request(), request(fingerprint=True), SAMPLE_REQUEST):
        assert responder.respond(data, CLIENT, LOCAL) == responder.respond(data, CLIENT, LOCAL)
    first = responder.respond(request(txid=b"a" * 12), CLIENT, LOCAL)
    assert first != responder.respond(request(txid=b"b" * 12), CLIENT, LOCAL)


def test_rfc5769_sample_requests_get_success() -> None:
    # The sample is an ICE connectivity check: SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME,
    # MESSAGE-INTEGRITY, FINGERPRINT.
    message = answer(SAMPLE_REQUEST)
    assert message.message_class == MessageClass.SUCCESS and message.xor_mapped_address() == CLIENT
    assert answer(SAMPLE_LONG_TERM_REQUEST).message_class == MessageClass.SUCCESS


def test_browser_style_checks_get_success() -> None:
    ice = request(
        (Attr.USERNAME, b"abcd:efgh"),
        (0xC057, b"\x00\x01\x00\x0a"),  # GOOG-NETWORK-INFO: unknown, comprehension-optional
        (Attr.ICE_CONTROLLING, bytes(8)),
        (Attr.USE_CANDIDATE, b""),
        (Attr.PRIORITY, b"\x6e\x00\x01\xff"),
        (Attr.MESSAGE_INTEGRITY, bytes(20)),
        (Attr.MESSAGE_INTEGRITY_SHA256, bytes(32)),
        fingerprint=True,
    )
    message = answer(ice)
    assert message.message_class == MessageClass.SUCCESS
    assert verify_fingerprint(encode_message(message))


def test_unknown_required_attributes_get_420_listing_each_once() -> None:
    data = request(
        (0x7777, b"x"),
        (0x8077, b"ignored"),
        (0x7778, b""),
        (0x7777, b"again"),
        (Attr.PADDING, b""),
        fingerprint=True,
    )
    message = answer(data)
    assert message.message_class == MessageClass.ERROR
    assert message.error_code() == (420, "Unknown Attribute")
    assert message.unknown_attributes() == [0x7777, 0x7778, Attr.PADDING]
    assert message.transaction_id == data[8:20]
    assert verify_fingerprint(encode_message(message))


def test_unknown_optional_attributes_are_ignored() -> None:
    assert answer(request((0x8077, b"x"), (0xFFFF, b"yy"))).message_class == MessageClass.SUCCESS


def test_attributes_after_message_integrity_are_ignored() -> None:
    data = request((Attr.MESSAGE_INTEGRITY, bytes(20)), (0x7777, b"unauthenticated"), fingerprint=True)
    assert answer(data).message_class == MessageClass.SUCCESS


def test_bad_or_misplaced_fingerprint_is_dropped() -> None:
    responder = Responder()
    good = request((Attr.SOFTWARE, b"client"), fingerprint=True)
    bad = bytearray(good)
    bad[-1] ^= 1
    assert responder.respond(bytes(bad), CLIENT, LOCAL) is None
    # FINGERPRINT must be last.
    misplaced = request((Attr.FINGERPRINT, bytes(4)), (Attr.SOFTWARE, b"x"))
    assert responder.respond(misplaced, CLIENT, LOCAL) is None
    assert responder.respond(good, CLIENT, LOCAL) is not None


def test_classic_rfc3489_request_gets_mapped_address() -> None:
    data = b"\x00\x01\x00\x00" + os.urandom(16)
    while data[4:8] == b"\x21\x12\xa4\x42":
        data = b"\x00\x01\x00\x00" + os.urandom(16)
    reply = Responder().respond(data, CLIENT, LOCAL)
    assert reply is not None
    payload = reply[0]
    assert payload[4:20] == data[4:20]  # the whole 128-bit transaction id
    message = parse_message(payload)
    assert message.classic
    assert message.address(Attr.MAPPED_ADDRESS) == CLIENT
    assert Attr.XOR_MAPPED_ADDRESS not in message.types() and Attr.FINGERPRINT not in message.types()
    # An odd UNKNOWN-ATTRIBUTES list is padded by repeating a type, as RFC 3489 wants.
    unknown = b"\x00\x01\x00\x08" + data[4:20] + encode_attribute(0x7777, b"abcd")
    error = parse_message(Responder().respond(unknown, CLIENT, LOCAL)[0])  # type: ignore[index]
    assert error.error_code() == (420, "Unknown Attribute") and error.unknown_attributes() == [0x7777, 0x7777]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes(19),
        b"\xc0\x01\x00\x00" + bytes(16),  # the two top bits set: not STUN
        b"\x01\x01\x00\x00\x21\x12\xa4\x42" + bytes(12),  # a success response
        b"\x00\x11\x00\x00\x21\x12\xa4\x42" + bytes(12),  # a Binding indication
        b"\x00\x03\x00\x00\x21\x12\xa4\x42" + bytes(12),  # an Allocate request: not answered here
        b"\x00\x01\x00\x04\x21\x12\xa4\x42" + bytes(12),  # truncated
        b"\x00\x01\x00\x02\x21\x12\xa4\x42" + bytes(14),  # not a multiple of 4
        b"\x00\x01\x00\x08\x21\x12\xa4\x42" + bytes(12) + b"\x80\x22\x00\x09abcd",  # attribute past the end
        b"\x00\x01\x00\x04\x21\x12\xa4\x42" + bytes(12) + b"\x00\x03\x00\x00",  # CHANGE-REQUEST too short
        b"GET / HTTP/1.1\r\nHost: example\r\n\r\n",
        request(*[(0x8077, b"")] * (MAX_ATTRIBUTES + 1)),
        request((0x8077, bytes(MAX_REQUEST_BYTES))),
    ],
)
def test_anything_else_is_dropped(data: bytes) -> None:
    assert Responder().respond(data, CLIENT, LOCAL) is None


def test_change_request_without_alternate_gets_420() -> None:
    for flags in (0, CHANGE_IP, CHANGE_PORT):
        message = answer(request((Attr.CHANGE_REQUEST, bytes((0, 0, 0, flags)))))
        assert message.error_code() == (420, "Unknown Attribute")
        assert message.unknown_attributes() == [Attr.CHANGE_REQUEST]
    # Nor is there OTHER-ADDRESS.
    assert answer(request()).address(Attr.OTHER_ADDRESS) is None


@pytest.mark.parametrize(
    "local, flags, origin, other",
    [
        (("192.0.2.1", 3478), 0, ("192.0.2.1", 3478), ("192.0.2.2", 3479)),
        (("192.0.2.1", 3478), CHANGE_PORT, ("192.0.2.1", 3479), ("192.0.2.2", 3479)),
        (("192.0.2.1", 3478), CHANGE_IP, ("192.0.2.2", 3478), ("192.0.2.2", 3479)),
        (("192.0.2.1", 3478), CHANGE_IP | CHANGE_PORT, ("192.0.2.2", 3479), ("192.0.2.2", 3479)),
        (("192.0.2.2", 3479), CHANGE_IP | CHANGE_PORT, ("192.0.2.1", 3478), ("192.0.2.1", 3478)),
        (("192.0.2.1", 3479), CHANGE_IP, ("192.0.2.2", 3479), ("192.0.2.2", 3478)),
        (("192.0.2.2", 3478), None, ("192.0.2.2", 3478), ("192.0.2.1", 3479)),
    ],
)
def test_rfc5780_with_an_alternate(
    local: tuple[str, int], flags: int | None, origin: tuple[str, int], other: tuple[str, int]
) -> None:
    responder = Responder(pair=PAIR)
    attributes = () if flags is None else ((Attr.CHANGE_REQUEST, bytes((0, 0, 0, flags))),)
    reply = responder.respond(request(*attributes, fingerprint=True), CLIENT, local)
    assert reply is not None
    payload, sent_from = reply
    assert sent_from == origin
    message = parse_message(payload)
    assert message.xor_mapped_address() == CLIENT
    assert message.address(Attr.RESPONSE_ORIGIN) == origin
    assert message.address(Attr.OTHER_ADDRESS) == other
    assert verify_fingerprint(payload)
    assert len(payload) <= MAX_SUCCESS_BYTES


def test_rfc5780_for_classic_clients_uses_rfc3489_attributes() -> None:
    data = b"\x00\x01\x00\x08" + b"\x01" * 16 + encode_attribute(Attr.CHANGE_REQUEST, b"\x00\x00\x00\x06")
    reply = Responder(pair=PAIR).respond(data, CLIENT, PAIR.primary)
    assert reply is not None and reply[1] == ("192.0.2.2", 3479)
    message = parse_message(reply[0])
    assert message.address(Attr.MAPPED_ADDRESS) == CLIENT
    assert message.address(Attr.SOURCE_ADDRESS) == ("192.0.2.2", 3479)
    assert message.address(Attr.CHANGED_ADDRESS) == ("192.0.2.2", 3479)


def test_off_pair_addresses_do_not_do_rfc5780() -> None:
    responder = Responder(pair=PAIR)
    message = answer(
        request((Attr.CHANGE_REQUEST, bytes(4))), local=LOCAL6, source=CLIENT6, responder=responder
    )
    assert message.error_code() == (420, "Unknown Attribute")
    assert (
        answer(request(), local=LOCAL6, source=CLIENT6, responder=responder).address(Attr.OTHER_ADDRESS)
        is None
    )


def test_software_is_configurable_and_short() -> None:
    assert answer(request(), responder=Responder("")).types() == [Attr.XOR_MAPPED_ADDRESS, Attr.FINGERPRINT]
    assert answer(request(), responder=Responder("x" * 32)).text(Attr.SOFTWARE) == "x" * 32
    with pytest.raises(ValueError):
        Responder("x" * 33)
    with pytest.raises(ValueError):
        AddressPair(("192.0.2.1", 1), ("192.0.2.1", 2))


attribute = st.tuples(
    st.one_of(st.sampled_from([int(a) for a in Attr]), st.integers(0, 0xFFFF)), st.binary(max_size=24)
)


@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    for responder, local in ((Responder(), LOCAL), (Responder(pair=PAIR), PAIR.primary)):
        for source in (CLIENT, CLIENT6):
            reply = responder.respond(data, source, local)
            if reply is not None:
                parse_message(reply[0])


@given(st.lists(attribute, max_size=40), st.booleans(), st.booleans(), st.booleans())
def test_replies_are_small_well_formed_and_deterministic(
    attributes: list[tuple[int, bytes]], fingerprint: bool, paired: bool, six: bool
) -> None:
    responder = Responder(pair=PAIR if paired else None)
    data = request(*attributes, fingerprint=fingerprint, txid=b"\x05" * 12)
    source, local = (CLIENT6, LOCAL6) if six else (CLIENT, PAIR.primary)
    reply = responder.respond(data, source, local)
    if reply is None:
        return
    assert reply == responder.respond(data, source, local)
    payload = reply[0]
    message = parse_message(payload)
    assert message.transaction_id == data[8:20]
    assert verify_fingerprint(payload)
    if message.message_class == MessageClass.SUCCESS:
        assert len(payload) <= MAX_SUCCESS_BYTES
        assert message.xor_mapped_address() == source
    else:
        assert message.message_class == MessageClass.ERROR
        assert len(payload) <= ERROR_OVERHEAD + len(data) // 2
        assert message.unknown_attributes()
