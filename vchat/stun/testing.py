"""STUN test helpers: RFC 5769's sample messages, a client's side of the codec (requests, credentials,
integrity checks) which the responder itself never needs, and a blocking UDP client for loopback tests."""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import stringprep
import unicodedata

from vchat.reactors import IStunReactor
from vchat.stun.config import StunConfig
from vchat.stun.message import (
    HEADER_LENGTH,
    Attr,
    Message,
    MessageClass,
    Method,
    StunError,
    encode_message,
    walk_attributes,
)
from vchat.stun.service import StunListening, StunService

# RFC 5769 section 2.1: sample request (short-term credential, padding with spaces).
SAMPLE_REQUEST = bytes.fromhex(
    "000100582112a442b7e7a701bc34d686fa87dfae"
    "802200105354554e207465737420636c69656e74"
    "002400046e0001ff"
    "80290008932ff9b151263b36"
    "000600096576746a3a68367659202020"
    "000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2"
    "80280004e57a3bcf"
)
# Section 2.2: sample IPv4 response.
SAMPLE_IPV4_RESPONSE = bytes.fromhex(
    "0101003c2112a442b7e7a701bc34d686fa87dfae"
    "8022000b7465737420766563746f7220"
    "002000080001a147e112a643"
    "000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7"
    "80280004c07d4c96"
)
# Section 2.3: sample IPv6 response.
SAMPLE_IPV6_RESPONSE = bytes.fromhex(
    "010100482112a442b7e7a701bc34d686fa87dfae"
    "8022000b7465737420766563746f7220"
    "002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d9"
    "00080014a382954e4be67bf11784c97c8292c275bfe3ed41"
    "80280004c8fb0b4c"
)
# Section 2.4: sample request with a long-term credential (padding with zeros, no FINGERPRINT).
SAMPLE_LONG_TERM_REQUEST = bytes.fromhex(
    "000100602112a44278ad3433c6ad72c029da412e"
    "00060012e3839ee38388e383aae38383e382afe382b90000"
    "0015001c662f2f3439396b39353464364f4c33346f4c39465354767936347341"
    "0014000b6578616d706c652e6f726700"
    "00080014f67024656dd64a3e02b8e0712e85c9a28ca89666"
)
PASSWORD = "VOkJxbRl1RmTxUk/WvJxBt"
TRANSACTION_ID = bytes.fromhex("b7e7a701bc34d686fa87dfae")
RFC5769_SAMPLES = {
    "request": SAMPLE_REQUEST,
    "ipv4-response": SAMPLE_IPV4_RESPONSE,
    "ipv6-response": SAMPLE_IPV6_RESPONSE,
    "long-term-request": SAMPLE_LONG_TERM_REQUEST,
}


def binding_request(
    transaction_id: bytes, attributes: tuple[tuple[int, bytes], ...] = (), fingerprint: bool = False
) -> bytes:
    """A Binding request (what a client sends), with optional attributes and FINGERPRINT."""
    return encode_message(
        Message(Method.BINDING, MessageClass.REQUEST, transaction_id, attributes), fingerprint=fingerprint
    )


def verify_message_integrity(data: bytes, key: bytes) -> bool:
    """Whether the MESSAGE-INTEGRITY (HMAC-SHA1) in `data` is right for `key`."""
    return _verify_integrity(data, key, Attr.MESSAGE_INTEGRITY, "sha1")


def verify_message_integrity_sha256(data: bytes, key: bytes) -> bool:
    """Whether the MESSAGE-INTEGRITY-SHA256 in `data` (possibly truncated to 16..32 bytes) is right for `key`."""
    return _verify_integrity(data, key, Attr.MESSAGE_INTEGRITY_SHA256, "sha256")


def _verify_integrity(data: bytes, key: bytes, attr_type: int, digest: str) -> bool:
    try:
        attributes = walk_attributes(data)
    except StunError:
        return False
    for kind, offset, start, end in attributes:
        if kind != attr_type:
            continue
        mac = data[start:end]
        if digest == "sha1" and len(mac) != 20:
            return False
        if digest == "sha256" and (len(mac) < 16 or len(mac) > 32 or len(mac) % 4):
            return False
        # The length field covers the message up to the end of this attribute, as when it was computed.
        covered = end - HEADER_LENGTH
        signed = bytes(data[:2]) + covered.to_bytes(2, "big") + bytes(data[4:offset])
        expected = hmac.digest(key, signed, digest)[: len(mac)]
        return hmac.compare_digest(expected, bytes(mac))
    return False


def saslprep(text: str) -> str:
    """RFC 4013 SASLprep (stringprep) of a password or username; raises ValueError for prohibited text."""
    mapped = "".join(
        " " if stringprep.in_table_c12(char) else char for char in text if not stringprep.in_table_b1(char)
    )
    normal = unicodedata.normalize("NFKC", mapped)
    for char in normal:
        if (
            stringprep.in_table_c12(char)
            or stringprep.in_table_c21_c22(char)
            or stringprep.in_table_c3(char)
            or stringprep.in_table_c4(char)
            or stringprep.in_table_c5(char)
            or stringprep.in_table_c6(char)
            or stringprep.in_table_c7(char)
            or stringprep.in_table_c8(char)
            or stringprep.in_table_c9(char)
            or stringprep.in_table_a1(char)
        ):
            raise ValueError(f"prohibited character {char!r}")
    if any(stringprep.in_table_d1(char) for char in normal):
        if any(stringprep.in_table_d2(char) for char in normal):
            raise ValueError("mixes right-to-left and left-to-right text")
        if not (stringprep.in_table_d1(normal[0]) and stringprep.in_table_d1(normal[-1])):
            raise ValueError("right-to-left text must start and end with a right-to-left character")
    return normal


def short_term_key(password: str) -> bytes:
    """The MESSAGE-INTEGRITY key of a short-term credential (ICE uses the peer's ice-pwd)."""
    return saslprep(password).encode("utf-8")


def long_term_key(username: str, realm: str, password: str, algorithm: str = "md5") -> bytes:
    """The key of a long-term credential: MD5 (or SHA-256) of "username:realm:SASLprep(password)"."""
    text = f"{username}:{realm}:{saslprep(password)}".encode()
    if algorithm == "md5":
        return hashlib.md5(text, usedforsecurity=False).digest()
    if algorithm == "sha256":
        return hashlib.sha256(text).digest()
    raise ValueError(f"unknown password algorithm {algorithm!r}")


def request(*attributes: tuple[int, bytes], fingerprint: bool = False, txid: bytes | None = None) -> bytes:
    """A Binding request with `attributes` and a random (or given) transaction id."""
    return binding_request(txid or os.urandom(12), attributes, fingerprint)


def family_works(host: str) -> bool:
    """Whether this machine can bind `host` (IPv6 may be missing)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((host, 0))
    except OSError:
        return False
    return True


class UdpClient:
    """A blocking UDP socket on loopback; call its methods off the reactor thread (`deferToThread`)."""

    def __init__(self, host: str) -> None:
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(self.family, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.address: tuple[str, int] = self.sock.getsockname()[:2]

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def exchange(
        self, destination: tuple[str, int], *payloads: bytes, replies: int = 1, timeout: float = 2.0
    ) -> list[tuple[bytes, tuple[str, int]]]:
        """Send `payloads` to `destination`; return the first `replies` (bytes, source) received."""
        for payload in payloads:
            self.sock.sendto(payload, destination)
        return self.receive(replies, timeout)

    def receive(self, count: int, timeout: float = 2.0) -> list[tuple[bytes, tuple[str, int]]]:
        """Up to `count` datagrams, waiting at most `timeout` for each."""
        self.sock.settimeout(timeout)
        received = []
        for _ in range(count):
            try:
                data, source = self.sock.recvfrom(4096)
            except TimeoutError:
                break
            received.append((data, source[:2]))
        return received


async def start_stun(reactor: IStunReactor, config: StunConfig) -> tuple[StunService, StunListening]:
    """A started STUN service and where it listens."""
    service = StunService(reactor, config)
    service.startService()
    return service, await service.whenListening()
