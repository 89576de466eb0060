"""The STUN service over real UDP and TCP sockets on loopback, on ports the OS picks.

Clients are plain blocking sockets run in a thread (the reactor serves meanwhile). Traffic only ever goes
to 127.0.0.0/8 and ::1. test_stun_aioice.py has an independent implementation check our bytes.
"""

from __future__ import annotations

import random
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread

from vchat.stun.config import StunConfig
from vchat.stun.message import (
    CHANGE_IP,
    CHANGE_PORT,
    Attr,
    Message,
    MessageClass,
    parse_message,
    verify_fingerprint,
)
from vchat.stun.responder import Responder
from vchat.stun.service import StunListening, StunService
from vchat.stun.tcp import StunStreamFactory
from vchat.stun.testing import UdpClient, family_works, request, start_stun
from vchat.stun.udp import StunDatagramProtocol

T = TypeVar("T")
Address = tuple[str, int]


HAVE_IPV6 = family_works("::1")
LOOPBACKS = [
    "127.0.0.1",
    pytest.param("::1", marks=pytest.mark.skipif(not HAVE_IPV6, reason="this machine has no IPv6 loopback")),
]


async def start(config: StunConfig) -> tuple[StunService, StunListening]:
    """A started STUN service on the global reactor, and where it listens."""
    return await start_stun(reactor, config)


@pytest_twisted.async_yield_fixture()
async def loopback_v4() -> AsyncIterator[tuple[StunService, StunListening]]:
    """A STUN service on 127.0.0.1 (UDP and TCP) with a small rate limit."""
    service, listening = await start(
        StunConfig(
            udp_port=0, interfaces=("127.0.0.1",), tcp_endpoint="tcp:0:interface=127.0.0.1", rate=50, burst=50
        )
    )
    yield service, listening
    await service.stopService()


@pytest.mark.parametrize("host", LOOPBACKS)
@pytest_twisted.ensureDeferred
async def test_udp_bare_and_fingerprinted_requests(host: str) -> None:
    service, listening = await start(StunConfig(udp_port=0, interfaces=(host,)))
    client = UdpClient(host)
    try:
        [server] = listening.udp
        assert server[0] == host
        chrome, firefox = request(), request(fingerprint=True)
        replies = await deferToThread(client.exchange, server, chrome, firefox, chrome, replies=3)
        assert len(replies) == 3
        for (payload, source), sent in zip(replies, (chrome, firefox, chrome), strict=True):
            assert source == server
            message = parse_message(payload)
            assert message.transaction_id == sent[8:20]
            assert message.message_class == MessageClass.SUCCESS
            assert message.xor_mapped_address() == client.address
            assert verify_fingerprint(payload)
        assert replies[0][0] == replies[2][0]  # a retransmission gets the same answer
    finally:
        client.close()
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_udp_errors_drops_and_rfc3489(loopback_v4: tuple[StunService, StunListening]) -> None:
    _, listening = loopback_v4
    [server] = listening.udp
    client = UdpClient("127.0.0.1")
    try:
        unknown = request((0x7777, b"x"), (0x8077, b"y"), (0x7778, b""), fingerprint=True)
        [(payload, _)] = await deferToThread(client.exchange, server, unknown)
        error = parse_message(payload)
        assert error.error_code() == (420, "Unknown Attribute")
        assert error.unknown_attributes() == [0x7777, 0x7778]

        bad_fingerprint = bytearray(request(fingerprint=True))
        bad_fingerprint[-1] ^= 0xFF
        classic = b"\x00\x01\x00\x00" + b"\x07" * 16
        [(payload, _)] = await deferToThread(client.exchange, server, bytes(bad_fingerprint), classic)
        message = parse_message(payload)
        assert payload[4:20] == b"\x07" * 16  # the bad one was dropped: this answers the classic request
        assert message.address(Attr.MAPPED_ADDRESS) == client.address

        change = request((Attr.CHANGE_REQUEST, bytes((0, 0, 0, CHANGE_IP | CHANGE_PORT))))
        [(payload, _)] = await deferToThread(client.exchange, server, change)
        assert parse_message(payload).unknown_attributes() == [Attr.CHANGE_REQUEST]
    finally:
        client.close()


@pytest_twisted.ensureDeferred
async def test_malformed_datagrams_are_dropped_and_the_listener_lives(
    loopback_v4: tuple[StunService, StunListening],
) -> None:
    _, listening = loopback_v4
    [server] = listening.udp
    client = UdpClient("127.0.0.1")
    chance = random.Random(5389)
    junk = [
        b"",
        b"\x00",
        bytes(19),
        b"\x00\x01\x00\x04\x21\x12\xa4\x42" + bytes(12),  # truncated
        b"\x00\x01\x00\x02\x21\x12\xa4\x42" + bytes(14),  # not a multiple of 4
        b"\x01\x01\x00\x00\x21\x12\xa4\x42" + bytes(12),  # a response
        b"\x00\x11\x00\x00\x21\x12\xa4\x42" + bytes(12),  # an indication
        b"\x00\x01\x00\x08\x21\x12\xa4\x42" + bytes(12) + b"\x00\x06\x00\x40abcd",  # attribute overruns
        bytes(3000),
        *(chance.randbytes(chance.randrange(1, 200)) for _ in range(30)),
    ]
    try:
        last = request()
        replies = await deferToThread(client.exchange, server, *junk, last, replies=1)
        assert [parse_message(payload).transaction_id for payload, _ in replies] == [last[8:20]]
    finally:
        client.close()


@pytest_twisted.ensureDeferred
async def test_rate_limit_drops_floods() -> None:
    service, listening = await start(StunConfig(udp_port=0, interfaces=("127.0.0.1",), rate=1, burst=3))
    [server] = listening.udp
    client = UdpClient("127.0.0.1")
    try:
        replies = await deferToThread(
            client.exchange, server, *(request() for _ in range(10)), replies=10, timeout=0.3
        )
        assert len(replies) == 3
    finally:
        client.close()
        await service.stopService()


def crowd_exchange(server: Address, clients: int, each: int) -> int:
    """`clients` sockets on 127.0.0.1 each send `each` requests at once; how many replies come back."""
    crowd = [UdpClient("127.0.0.1") for _ in range(clients)]
    try:
        for client in crowd:
            for _ in range(each):
                client.sock.sendto(request(), server)
        return sum(len(client.receive(each, timeout=2.0)) for client in crowd)
    finally:
        for client in crowd:
            client.close()


@pytest_twisted.ensureDeferred
async def test_a_crowd_behind_one_address_is_answered_with_the_defaults() -> None:
    # Fifty clients behind one address once lost a fifth of their requests to a 20/s limit.
    service, listening = await start(StunConfig(udp_port=0, interfaces=("127.0.0.1",)))
    try:
        [server] = listening.udp
        assert await deferToThread(crowd_exchange, server, 200, 2) == 400
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_replies_leave_from_the_address_they_were_sent_to() -> None:
    service, listening = await start(StunConfig(udp_port=0, interfaces=("127.0.0.1", "127.0.0.3")))
    client = UdpClient("127.0.0.1")
    try:
        assert sorted(host for host, _ in listening.udp) == ["127.0.0.1", "127.0.0.3"]
        assert len({port for _, port in listening.udp}) == 1  # one port for every address
        for server in listening.udp:
            [(payload, source)] = await deferToThread(client.exchange, server, request())
            assert source == server
            assert parse_message(payload).xor_mapped_address() == client.address
    finally:
        client.close()
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_dual_stack_wildcard_answers_ipv4_with_ipv4() -> None:
    if not HAVE_IPV6 or Path("/proc/sys/net/ipv6/bindv6only").read_text().strip() != "0":
        pytest.skip("no IPv6, or '::' sockets are IPv6-only on this machine")
    service, listening = await start(StunConfig(udp_port=0, interfaces=("::",)))
    client = UdpClient("127.0.0.1")
    try:
        [(_, port)] = listening.udp
        replies = await deferToThread(client.exchange, ("127.0.0.1", port), request(), timeout=1.0)
        [(payload, _)] = replies
        value = parse_message(payload).get(Attr.XOR_MAPPED_ADDRESS)
        assert value is not None and value[1] == 1  # family IPv4, not ::ffff:
        assert parse_message(payload).xor_mapped_address() == client.address
    finally:
        client.close()
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_default_listens_on_each_host_address() -> None:
    service, listening = await start(StunConfig(udp_port=0))
    client = UdpClient("127.0.0.1")
    try:
        hosts = [host for host, _ in listening.udp]
        assert "127.0.0.1" in hosts and "0.0.0.0" not in hosts and "::" not in hosts
        server = next(address for address in listening.udp if address[0] == "127.0.0.1")
        [(_, source)] = await deferToThread(client.exchange, server, request())
        assert source == server
    finally:
        client.close()
        await service.stopService()


@pytest.mark.parametrize(
    "flags, origin",
    [
        (0, (0, 0)),
        (CHANGE_PORT, (0, 1)),
        (CHANGE_IP, (1, 0)),
        (CHANGE_IP | CHANGE_PORT, (1, 1)),
        (None, (0, 0)),
    ],
)
@pytest_twisted.ensureDeferred
async def test_rfc5780_change_request(flags: int | None, origin: tuple[int, int]) -> None:
    service, listening = await start(
        StunConfig(udp_port=0, interfaces=("127.0.0.1",), alternate=("127.0.0.2", 0))
    )
    client = UdpClient("127.0.0.1")
    try:
        ports = sorted({port for _, port in listening.udp})
        primary_port = next(port for host, port in listening.udp if host == "127.0.0.1")
        alternate_port = next(port for port in ports if port != primary_port)
        hosts, port_pair = ("127.0.0.1", "127.0.0.2"), (primary_port, alternate_port)
        assert sorted(listening.udp) == sorted((h, p) for h in hosts for p in port_pair)
        attributes = () if flags is None else ((Attr.CHANGE_REQUEST, bytes((0, 0, 0, flags))),)
        sent = request(*attributes, fingerprint=True)
        [(payload, source)] = await deferToThread(client.exchange, ("127.0.0.1", primary_port), sent)
        expected = (hosts[origin[0]], port_pair[origin[1]])
        assert source == expected
        message = parse_message(payload)
        assert message.xor_mapped_address() == client.address
        assert message.address(Attr.RESPONSE_ORIGIN) == expected
        assert message.address(Attr.OTHER_ADDRESS) == ("127.0.0.2", alternate_port)
        # Asked on the alternate address, OTHER-ADDRESS is the primary.
        [(payload, source)] = await deferToThread(client.exchange, ("127.0.0.2", alternate_port), request())
        assert source == ("127.0.0.2", alternate_port)
        assert parse_message(payload).address(Attr.OTHER_ADDRESS) == ("127.0.0.1", primary_port)
    finally:
        client.close()
        await service.stopService()


def tcp_exchange(server: Address, chunks: list[bytes], replies: int) -> tuple[list[Message], Address, bool]:
    """Send `chunks` over one TCP connection; the replies, our address, and whether the server closed."""
    with socket.create_connection(server, timeout=2.0) as sock:
        for chunk in chunks:
            sock.sendall(chunk)
        buffer = b""
        messages: list[Message] = []
        closed = False
        while len(messages) < replies:
            data = sock.recv(4096)
            if not data:
                closed = True
                break
            buffer += data
            while len(buffer) >= 20 and len(buffer) >= 20 + int.from_bytes(buffer[2:4], "big"):
                size = 20 + int.from_bytes(buffer[2:4], "big")
                messages.append(parse_message(buffer[:size]))
                buffer = buffer[size:]
        if not closed:
            sock.settimeout(0.3)
            try:
                closed = sock.recv(4096) == b""
            except TimeoutError:
                closed = False
        return messages, sock.getsockname()[:2], closed


@pytest_twisted.ensureDeferred
async def test_tcp_framing(loopback_v4: tuple[StunService, StunListening]) -> None:
    _, listening = loopback_v4
    assert listening.tcp is not None
    server = ("127.0.0.1", listening.tcp.getHost().port)
    one, two, three = request(), request(fingerprint=True), request((0x7777, b""))
    stream = one + two + three
    chunks = [stream[:7], stream[7:33], stream[33:]]  # split mid-header and mid-message
    messages, address, closed = await deferToThread(tcp_exchange, server, chunks, 3)
    assert [m.transaction_id for m in messages] == [one[8:20], two[8:20], three[8:20]]
    assert messages[0].xor_mapped_address() == address and messages[1].xor_mapped_address() == address
    assert messages[2].unknown_attributes() == [0x7777]
    assert not closed
    # Anything that breaks the framing closes the connection.
    messages, _, closed = await deferToThread(
        tcp_exchange, server, [request() + b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"], 2
    )
    assert len(messages) == 1 and closed


@pytest.mark.skipif(not HAVE_IPV6, reason="this machine has no IPv6 loopback")
@pytest_twisted.ensureDeferred
async def test_tcp_over_ipv6() -> None:
    service, listening = await start(StunConfig(udp_port=None, tcp_endpoint=r"tcp6:0:interface=\:\:1"))
    try:
        assert listening.udp == [] and listening.tcp is not None
        server = ("::1", listening.tcp.getHost().port)
        sent = request(fingerprint=True)
        [message], address, _ = await deferToThread(tcp_exchange, server, [sent], 1)
        assert message.transaction_id == sent[8:20]
        assert message.xor_mapped_address() == address
    finally:
        await service.stopService()


@pytest_twisted.ensureDeferred
async def test_stop_closes_every_listener() -> None:
    service, listening = await start(
        StunConfig(udp_port=0, interfaces=("127.0.0.1",), tcp_endpoint="tcp:0:interface=127.0.0.1")
    )
    [server] = listening.udp
    assert listening.tcp is not None
    tcp_port = listening.tcp.getHost().port
    await service.stopService()
    for port, kind in ((server[1], socket.SOCK_DGRAM), (tcp_port, socket.SOCK_STREAM)):
        with socket.socket(socket.AF_INET, kind) as probe:
            probe.bind(("127.0.0.1", port))  # free again


@pytest_twisted.ensureDeferred
async def test_cannot_listen_calls_on_failure() -> None:
    service, listening = await start(StunConfig(udp_port=0, interfaces=("127.0.0.1",)))
    failed: list[bool] = []
    try:
        [(_, port)] = listening.udp
        clash = StunService(
            reactor, StunConfig(udp_port=port, interfaces=("127.0.0.1",)), lambda: failed.append(True)
        )
        clash.startService()
        assert failed == [True]
        with pytest.raises(Exception, match=r"Couldn't listen|Address already in use"):
            await clash.whenListening()
        await clash.stopService()
    finally:
        await service.stopService()


# The protocols without sockets.


class RaisingResponder(Responder):
    """Raises on one payload, to show the protocol's fence."""

    def respond(self, data: bytes, source: Address, local: Address) -> Any:
        if data == b"boom":
            raise RuntimeError("a bug")
        return super().respond(data, source, local)


class FakeDatagramTransport:
    """Just what StunDatagramProtocol uses of a UDP port."""

    def __init__(self) -> None:
        self.written: list[tuple[bytes, Address]] = []

    def getHost(self) -> Any:
        return IPv4Address("UDP", "192.0.2.1", 3478)

    def write(self, data: bytes, address: Address) -> None:
        self.written.append((data, address))


def test_datagram_protocol_fences_failures() -> None:
    protocol = StunDatagramProtocol(RaisingResponder(), Clock())
    transport = FakeDatagramTransport()
    protocol.makeConnection(transport)  # type: ignore[arg-type]
    protocol.datagramReceived(b"boom", ("198.51.100.1", 5))
    protocol.datagramReceived(request(), ("198.51.100.1", 5))
    [(payload, address)] = transport.written
    assert address == ("198.51.100.1", 5)
    assert parse_message(payload).xor_mapped_address() == ("198.51.100.1", 5)


def test_tcp_connection_times_out_when_idle() -> None:
    clock = Clock()
    factory = StunStreamFactory(Responder(), clock, idle_timeout=30)
    protocol = factory.buildProtocol(IPv4Address("TCP", "198.51.100.1", 5))
    transport = StringTransport(
        hostAddress=IPv4Address("TCP", "192.0.2.1", 3478), peerAddress=IPv4Address("TCP", "198.51.100.1", 5)
    )
    protocol.makeConnection(transport)
    assert factory.connections == {protocol}
    data = request()
    protocol.dataReceived(data[:10])
    clock.advance(29)
    protocol.dataReceived(data[10:])
    assert parse_message(transport.value()).xor_mapped_address() == ("198.51.100.1", 5)
    clock.advance(29)
    assert not transport.disconnecting
    clock.advance(2)
    assert transport.disconnecting
    protocol.connectionLost(None)
    assert not factory.connections


@pytest_twisted.ensureDeferred
async def test_wildcard_when_the_host_addresses_cannot_be_read(monkeypatch: pytest.MonkeyPatch) -> None:
    from vchat.stun import service as service_module

    monkeypatch.setattr(service_module, "host_addresses", lambda: None)
    service, listening = await start(StunConfig(udp_port=0))
    try:
        assert [host for host, _ in listening.udp] == (["::"] if HAVE_IPV6 else ["0.0.0.0"])
    finally:
        await service.stopService()


def test_an_alternate_needs_its_primary_address() -> None:
    with pytest.raises(ValueError, match="alternate"):
        StunConfig(udp_port=0, interfaces=None, alternate=("127.0.0.2", 1))
