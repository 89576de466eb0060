"""`twistd vchat-stun`: its options, the shared `--stun-*` definitions, and makeService's wiring."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage

from vchat.stun.config import StunConfig, alternate_address
from vchat.stun.service import StunService, TcpStunService, UdpStunService
from vchat.stun.tap import Options, makeService
from vchat.stun.udp import StunDatagramProtocol
from vchat.tap import Options as VchatOptions


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


def test_defaults() -> None:
    config = parse().stun
    assert config == StunConfig()
    assert config.udp_port == 3478 and config.interfaces is None and config.tcp_endpoint is None
    assert (
        config.alternate is None
        and (config.rate, config.burst) == (500.0, 2000)
        and config.software == "vchat"
    )


def test_every_option() -> None:
    config = parse(
        "--stun-udp",
        "3479",
        "--stun-interface",
        "192.0.2.1",
        "--stun-interface",
        "2001:db8::1",
        "--stun-interface",
        "::1",
        "--stun-tcp",
        "tcp:3478",
        "--stun-alternate",
        "192.0.2.2:3480",
        "--stun-rate",
        "5.5",
        "--stun-burst",
        "9",
        "--stun-software",
        "",
    ).stun
    assert config == StunConfig(
        udp_port=3479,
        interfaces=("192.0.2.1", "2001:db8::1", "::1"),
        tcp_endpoint="tcp:3478",
        alternate=("192.0.2.2", 3480),
        rate=5.5,
        burst=9,
        software="",
    )
    assert config.primary_address() == "192.0.2.1"


def test_alternate_with_one_interface_of_its_family() -> None:
    config = parse(
        "--stun-interface", "192.0.2.1", "--stun-interface", "::1", "--stun-alternate", "192.0.2.2:3479"
    )
    assert config.stun.primary_address() == "192.0.2.1"
    config6 = parse("--stun-interface", "2001:db8::1", "--stun-alternate", "[2001:db8::2]:3479").stun
    assert config6.alternate == ("2001:db8::2", 3479) and config6.primary_address() == "2001:db8::1"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--stun-udp", "x"], "--stun-udp: invalid value 'x' (not a port number)"),
        (["--stun-udp", "70000"], "not a port number"),
        (["--stun-interface", "example.org"], "not an IPv4 or IPv6 address"),
        (["--stun-interface", "fe80::1"], "link-local"),
        (["--stun-interface", "0.0.0.0", "--stun-interface", "::"], "dual-stack"),
        (["--stun-tcp", "nonsense:1"], "--stun-tcp: invalid value 'nonsense:1' (not a server endpoint"),
        (["--stun-rate", "-1"], "--stun-rate must be at least 0"),
        (["--stun-rate", "fast"], "invalid value"),
        (["--stun-burst", "0"], "--stun-burst must be at least 1"),
        (["--stun-software", "x" * 33], "at most 32 bytes"),
        (["--stun-alternate", "192.0.2.2:3479"], "exactly one --stun-interface"),
        (["--stun-interface", "192.0.2.1", "--stun-alternate", "192.0.2.2"], "not ADDR:PORT"),
        (
            ["--stun-interface", "192.0.2.1", "--stun-alternate", "192.0.2.2:3478"],
            "must differ from --stun-udp",
        ),
        (["--stun-interface", "2001:db8::1", "--stun-alternate", "2001:db8::2:3479"], "[ADDR]:PORT"),
        (["--stun-interface", "192.0.2.1", "--stun-alternate", "192.0.2.2:0"], "not a port number"),
        (
            ["--stun-udp", "0", "--stun-interface", "192.0.2.1", "--stun-alternate", "192.0.2.2:1"],
            "needs STUN over UDP",
        ),
        (["--stun-udp", "0"], "nothing to serve"),
    ],
)
def test_bad_options_are_explained(args: list[str], message: str) -> None:
    with pytest.raises(usage.UsageError) as raised:
        parse(*args)
    assert message in str(raised.value)


def test_help_shows_defaults() -> None:
    text = " ".join(str(Options()).split())
    for name in (
        "--stun-udp",
        "--stun-interface",
        "--stun-tcp",
        "--stun-alternate",
        "--stun-rate",
        "--stun-burst",
    ):
        assert name in text
    assert "[default: 3478]" in text and "[default: 500.0]" in text and "[default: 2000]" in text


def test_twistd_vchat_shares_the_stun_options() -> None:
    vchat = VchatOptions()
    vchat.parseOptions(["--stun-interface", "127.0.0.1", "--stun-rate", "0"])
    assert vchat.stun.interfaces == ("127.0.0.1",) and vchat.stun.rate == 0
    assert alternate_address("[::2]:9") == ("::2", 9)


def test_toml_values_arrive_typed(tmp_path: Path) -> None:
    config = tmp_path / "stun.toml"
    config.write_text('stun_udp = 0\nstun_tcp = "tcp:3478"\nstun_interface = ["::1", "::1"]\nstun_rate = 2\n')
    assert parse("--config", str(config)).stun == StunConfig(
        udp_port=None, interfaces=("::1",), tcp_endpoint="tcp:3478", rate=2.0
    )
    config.write_text("stun_udp = true\n")
    with pytest.raises(usage.UsageError, match="--stun-udp"):
        parse("--config", str(config))


class UdpMemoryReactor(MemoryReactorClock):
    """MemoryReactorClock, plus listenUDP recording (port, protocol, interface)."""

    def __init__(self) -> None:
        super().__init__()
        self.udp: list[tuple[int, DatagramProtocol, str]] = []

    def listenUDP(
        self, port: int, protocol: DatagramProtocol, interface: str = "", maxPacketSize: int = 8192
    ) -> FakeUdpPort:
        self.udp.append((port, protocol, interface))
        listening = FakeUdpPort(IPv4Address("UDP", interface, port))
        protocol.makeConnection(listening)  # type: ignore[arg-type]
        return listening


class FakeUdpPort:
    """A listening UDP port that goes nowhere."""

    def __init__(self, host: IPv4Address) -> None:
        self.host = host
        self.stopped = False

    def getHost(self) -> IPv4Address:
        return self.host

    def write(self, data: bytes, address: tuple[str, int]) -> None:
        pass

    def stopListening(self) -> None:
        self.stopped = True


def test_make_service_wires_the_listeners() -> None:
    reactor = UdpMemoryReactor()
    service = makeService(
        parse(
            "--stun-udp",
            "3479",
            "--stun-interface",
            "127.0.0.1",
            "--stun-tcp",
            "tcp:3478:interface=127.0.0.1",
        ),
        reactor,
    )
    assert [child.name for child in service] == ["open-files-limit", "stun"]
    service = service.getServiceNamed("stun")
    assert isinstance(service, StunService)
    assert [type(child) for child in service] == [UdpStunService, TcpStunService]
    assert [child.name for child in service] == ["stun-udp", "stun-tcp"]
    assert not reactor.udp and not reactor.tcpServers  # makeService only wires
    service.startService()
    assert [(port, type(protocol), interface) for port, protocol, interface in reactor.udp] == [
        (3479, StunDatagramProtocol, "127.0.0.1")
    ]
    assert [(port, interface) for port, _, _, interface in reactor.tcpServers] == [(3478, "127.0.0.1")]
    service.stopService()


def test_make_service_with_an_alternate_listens_on_four_addresses() -> None:
    reactor = UdpMemoryReactor()
    options = parse(
        "--stun-interface", "192.0.2.1", "--stun-interface", "::1", "--stun-alternate", "192.0.2.2:3479"
    )
    makeService(options, reactor).startService()
    assert [(interface, port) for port, _, interface in reactor.udp] == [
        ("192.0.2.1", 3478),
        ("::1", 3478),
        ("192.0.2.1", 3479),
        ("192.0.2.2", 3478),
        ("192.0.2.2", 3479),
    ]


def test_make_service_without_tcp_or_udp() -> None:
    reactor = UdpMemoryReactor()
    only_tcp = makeService(parse("--stun-udp", "0", "--stun-tcp", "tcp:3478"), reactor)
    assert [child.name for child in only_tcp.getServiceNamed("stun")] == ["stun-tcp"]
    only_udp = makeService(parse(), reactor)
    assert [child.name for child in only_udp.getServiceNamed("stun")] == ["stun-udp"]
