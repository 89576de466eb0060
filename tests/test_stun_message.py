"""The STUN codec: RFC 5769's test vectors, attribute encodings, and parsing arbitrary bytes."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vchat.addresses import unmap_ipv4
from vchat.stun.message import (
    MAGIC_COOKIE,
    Attr,
    Message,
    MessageClass,
    Method,
    StunError,
    compute_fingerprint,
    decode_address,
    decode_unknown_attributes,
    decode_xor_address,
    encode_address,
    encode_attribute,
    encode_error_code,
    encode_message,
    encode_unknown_attributes,
    encode_xor_address,
    is_comprehension_required,
    message_type,
    parse_message,
    split_message_type,
    verify_fingerprint,
)
from vchat.stun.testing import (
    PASSWORD,
    SAMPLE_IPV4_RESPONSE,
    SAMPLE_IPV6_RESPONSE,
    SAMPLE_LONG_TERM_REQUEST,
    SAMPLE_REQUEST,
    TRANSACTION_ID,
    binding_request,
    long_term_key,
    saslprep,
    short_term_key,
    verify_message_integrity,
    verify_message_integrity_sha256,
)


def without(message: Message, *types: int) -> Message:
    """`message` less the attributes of `types` (to have them computed again)."""
    kept = tuple((kind, value) for kind, value in message.attributes if kind not in types)
    return dataclasses.replace(message, attributes=kept)


def test_sample_request_decodes() -> None:
    message = parse_message(SAMPLE_REQUEST)
    assert (message.method, message.message_class) == (Method.BINDING, MessageClass.REQUEST)
    assert message.transaction_id == TRANSACTION_ID and not message.classic
    assert message.text(Attr.SOFTWARE) == "STUN test client"
    assert message.text(Attr.USERNAME) == "evtj:h6vY"
    assert message.get(Attr.PRIORITY) == bytes.fromhex("6e0001ff")
    assert message.get(Attr.ICE_CONTROLLED) == bytes.fromhex("932ff9b151263b36")
    assert message.types() == [
        Attr.SOFTWARE,
        Attr.PRIORITY,
        Attr.ICE_CONTROLLED,
        Attr.USERNAME,
        Attr.MESSAGE_INTEGRITY,
        Attr.FINGERPRINT,
    ]
    assert verify_fingerprint(SAMPLE_REQUEST)
    assert verify_message_integrity(SAMPLE_REQUEST, short_term_key(PASSWORD))
    assert not verify_message_integrity(SAMPLE_REQUEST, short_term_key(PASSWORD[:-1]))


@pytest.mark.parametrize(
    "vector, address",
    [
        (SAMPLE_IPV4_RESPONSE, ("192.0.2.1", 32853)),
        (SAMPLE_IPV6_RESPONSE, ("2001:db8:1234:5678:11:2233:4455:6677", 32853)),
    ],
)
def test_sample_responses_decode(vector: bytes, address: tuple[str, int]) -> None:
    message = parse_message(vector)
    assert (message.method, message.message_class) == (Method.BINDING, MessageClass.SUCCESS)
    assert message.text(Attr.SOFTWARE) == "test vector"
    assert message.xor_mapped_address() == address
    assert verify_fingerprint(vector)
    assert verify_message_integrity(vector, short_term_key(PASSWORD))


@pytest.mark.parametrize("vector", [SAMPLE_REQUEST, SAMPLE_IPV4_RESPONSE, SAMPLE_IPV6_RESPONSE])
def test_samples_encode_exactly(vector: bytes) -> None:
    message = parse_message(vector)
    # As decoded, attributes and all.
    assert encode_message(message, padding=b" ") == vector
    # With MESSAGE-INTEGRITY and FINGERPRINT computed afresh.
    bare = without(message, Attr.MESSAGE_INTEGRITY, Attr.FINGERPRINT)
    assert (
        encode_message(bare, integrity_key=short_term_key(PASSWORD), fingerprint=True, padding=b" ") == vector
    )


def test_sample_responses_address_encodes_exactly() -> None:
    assert encode_attribute(
        Attr.XOR_MAPPED_ADDRESS, encode_xor_address("192.0.2.1", 32853, TRANSACTION_ID)
    ) == bytes.fromhex("002000080001a147e112a643")
    assert encode_xor_address("2001:db8:1234:5678:11:2233:4455:6677", 32853, TRANSACTION_ID) == bytes.fromhex(
        "0002a1470113a9faa5d3f179bc25f4b5bed2b9d9"
    )


def test_long_term_sample_request() -> None:
    message = parse_message(SAMPLE_LONG_TERM_REQUEST)
    username = "\u30de\u30c8\u30ea\u30c3\u30af\u30b9"
    assert message.text(Attr.USERNAME) == username
    assert message.text(Attr.NONCE) == "f//499k954d6OL34oL9FSTvy64sA"
    assert message.text(Attr.REALM) == "example.org"
    # The password is "The<U+00AD>M<U+00AA>tr<U+2168>", which SASLprep turns into "TheMatrIX".
    key = long_term_key(username, "example.org", "The\u00adM\u00aatr\u2168")
    assert key == long_term_key(username, "example.org", "TheMatrIX")
    assert verify_message_integrity(SAMPLE_LONG_TERM_REQUEST, key)
    assert not verify_message_integrity(SAMPLE_LONG_TERM_REQUEST, long_term_key(username, "example.org", "x"))
    assert not verify_fingerprint(SAMPLE_LONG_TERM_REQUEST)
    assert encode_message(message) == SAMPLE_LONG_TERM_REQUEST
    assert (
        encode_message(without(message, Attr.MESSAGE_INTEGRITY), integrity_key=key)
        == SAMPLE_LONG_TERM_REQUEST
    )


def test_message_integrity_sha256_round_trip() -> None:
    message = Message(Method.BINDING, MessageClass.REQUEST, TRANSACTION_ID, ((Attr.USERNAME, b"a:b"),))
    key = short_term_key("secret")
    both = encode_message(message, integrity_key=key, integrity_sha256_key=key, fingerprint=True)
    assert parse_message(both).types() == [
        Attr.USERNAME,
        Attr.MESSAGE_INTEGRITY,
        Attr.MESSAGE_INTEGRITY_SHA256,
        Attr.FINGERPRINT,
    ]
    assert verify_message_integrity(both, key) and verify_message_integrity_sha256(both, key)
    assert not verify_message_integrity_sha256(both, b"other")
    assert verify_fingerprint(both)
    tampered = bytearray(both)
    tampered[25] ^= 1
    assert not verify_message_integrity(bytes(tampered), key)
    assert not verify_message_integrity_sha256(bytes(tampered), key)
    assert not verify_fingerprint(bytes(tampered))


def test_message_type_interleaves_class_bits() -> None:
    assert message_type(Method.BINDING, MessageClass.REQUEST) == 0x0001
    assert message_type(Method.BINDING, MessageClass.INDICATION) == 0x0011
    assert message_type(Method.BINDING, MessageClass.SUCCESS) == 0x0101
    assert message_type(Method.BINDING, MessageClass.ERROR) == 0x0111
    assert message_type(0x003, MessageClass.ERROR) == 0x0113  # Allocate error
    for method in (0x001, 0x00F, 0x070, 0xF80, 0xFFF):
        for message_class in MessageClass:
            assert split_message_type(message_type(method, message_class)) == (method, message_class)


def test_attribute_helpers() -> None:
    assert is_comprehension_required(Attr.USERNAME) and not is_comprehension_required(Attr.SOFTWARE)
    assert decode_address(encode_address("::ffff:198.51.100.7", 9)) == ("198.51.100.7", 9)
    assert decode_address(encode_address("2001:db8::1", 65535)) == ("2001:db8::1", 65535)
    assert decode_xor_address(encode_xor_address("2001:db8::1", 1, TRANSACTION_ID), TRANSACTION_ID) == (
        "2001:db8::1",
        1,
    )
    assert encode_error_code(420, "Unknown Attribute") == b"\x00\x00\x04\x14Unknown Attribute"
    assert encode_unknown_attributes([0x7777]) == b"\x77\x77"
    assert encode_unknown_attributes([0x7777], classic=True) == b"\x77\x77\x77\x77"
    assert decode_unknown_attributes(b"\x00\x03\x00\x27") == [3, 0x27]
    assert unmap_ipv4("::ffff:10.0.0.1") == "10.0.0.1" and unmap_ipv4("::1") == "::1"
    assert saslprep("I\u00adX") == "IX" and saslprep("user") == "user"
    with pytest.raises(ValueError):
        saslprep("a\u0007b")
    with pytest.raises(StunError):
        decode_address(b"\x00\x01\x00")


def test_classic_message_keeps_its_cookie_field() -> None:
    data = bytes.fromhex("00010000") + b"\x01\x02\x03\x04" + bytes(12)
    message = parse_message(data)
    assert message.classic and message.cookie == 0x01020304
    assert encode_message(message) == data


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes(19),
        bytes.fromhex("c0010000") + bytes(16),  # first two bits set
        bytes.fromhex("00010004") + bytes(16),  # length says 4, nothing follows
        bytes.fromhex("00010002") + bytes(18),  # length not a multiple of 4
        bytes.fromhex("000100042112a442") + bytes(12) + b"\x80\x22\x00\x08",  # attribute past the end
    ],
)
def test_malformed_messages_raise_stun_error(data: bytes) -> None:
    with pytest.raises(StunError):
        parse_message(data)
    assert not verify_fingerprint(data)
    assert not verify_message_integrity(data, b"k")


@given(st.binary(max_size=256))
def test_parser_raises_nothing_but_stun_error(data: bytes) -> None:
    try:
        message = parse_message(data)
    except StunError:
        return
    assert encode_message(message) == data or any(len(value) % 4 for _, value in message.attributes)
    verify_fingerprint(data)
    verify_message_integrity(data, b"k")
    verify_message_integrity_sha256(data, b"k")


@given(
    st.binary(min_size=20, max_size=120).map(lambda b: b"\x00\x01" + len(b[20:]).to_bytes(2, "big") + b[4:])
)
def test_well_framed_bytes_never_raise_elsewhere(data: bytes) -> None:
    try:
        message = parse_message(data)
    except StunError:
        return
    for attr_type, _ in message.attributes:
        with contextlib.suppress(StunError):
            message.address(attr_type)
        message.text(attr_type)


attributes = st.lists(
    st.tuples(st.integers(0, 0xFFFF).filter(lambda t: t != Attr.FINGERPRINT), st.binary(max_size=40)),
    max_size=6,
)


@given(
    st.integers(0, 0xFFF),
    st.sampled_from(list(MessageClass)),
    st.binary(min_size=12, max_size=12),
    attributes,
    st.booleans(),
)
def test_encode_then_parse_round_trips(
    method: int, message_class: MessageClass, transaction_id: bytes, attrs: list[tuple[int, bytes]], fp: bool
) -> None:
    message = Message(method, message_class, transaction_id, tuple(attrs))
    data = encode_message(message, fingerprint=fp)
    decoded = parse_message(data)
    assert decoded.attributes[: len(attrs)] == message.attributes
    assert (decoded.method, decoded.message_class, decoded.transaction_id) == (
        method,
        message_class,
        transaction_id,
    )
    assert decoded.cookie == MAGIC_COOKIE
    assert verify_fingerprint(data) == fp


def test_binding_request_helper() -> None:
    data = binding_request(TRANSACTION_ID, fingerprint=True)
    assert len(data) == 28 and verify_fingerprint(data)
    assert compute_fingerprint(data[:20]) != 0
