"""`twistd vchat` options, the TOML file, and the service tree."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.usage import UsageError

from vchat.admin.service import AdminService
from vchat.moderation.webhook import ModerationWebhook
from vchat.protocol.service import SignalingService
from vchat.store.service import StoreService
from vchat.stun.message import Attr, parse_message
from vchat.stun.service import StunService
from vchat.stun.testing import binding_request
from vchat.tap import Options, makeService
from vchat.testing import connect

ROOT = Path(__file__).resolve().parent.parent


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


def test_defaults() -> None:
    options = parse()
    for setting in Options.settings:
        assert options[setting.name] == setting.default
    assert options["ws"] == "tcp:8080"


def test_config_file_and_command_line_precedence(tmp_path: Path) -> None:
    config = tmp_path / "vchat.toml"
    config.write_text('ws = "tcp:9000"\nresume_grace = 3\nmessage-rate = 5\n')
    options = parse("--config", str(config), "--message-rate", "7.5")
    assert options["ws"] == "tcp:9000"
    assert options["resume-grace"] == 3.0
    assert options["message-rate"] == 7.5
    assert options["heartbeat"] == 25.0


def test_ice_options() -> None:
    options = parse(
        "--turn-url", "turn:a.example:3478", "--turn-url", "turns:b.example:5349", "--turn-secret", "s"
    )
    assert options["turn-url"] == ["turn:a.example:3478", "turns:b.example:5349"]
    assert options["ice-relay-only"] is False and options["public-host"] is None
    policy = parse("--ice-relay-only", "--public-host", "chat.example").ice_policy()
    assert policy.relay_only is True and policy.public_host == "chat.example"


def test_ice_options_from_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "vchat.toml"
    config.write_text('turn-url = ["turn:a.example"]\nturn_secret = "s"\nice-relay-only = true\n')
    options = parse("--config", str(config))
    assert options["turn-url"] == ["turn:a.example"] and options["ice-relay-only"] is True
    assert parse("--config", str(config), "--turn-url", "turn:b.example")["turn-url"] == ["turn:b.example"]


def test_example_config_is_valid() -> None:
    options = parse("--config", str(ROOT / "docs" / "vchat.toml"))
    assert options["ws"] == "tcp:8080"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--message-rate", "fast"], "--message-rate"),
        (["--max-message-bytes", "10"], "at least"),
        (["--max-report-bytes", "60000"], "at least --max-message-bytes"),
        (["--heartbeat", "0"], "--heartbeat"),
        (["--ws", "nonsense:1"], "--ws"),
        (["--config", "/nonexistent/vchat.toml"], "cannot read"),
        (["--turn-url", "http://turn.example"], "--turn-url"),
        (["--turn-url", "turn:turn.example"], "needs --turn-secret"),
        (["--turn-ttl", "5"], "at least"),
    ],
)
def test_bad_options_are_usage_errors(args: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse(*args)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ws = [", "not valid TOML"),
        ("colour = 1", "unknown options: colour"),
        ("heartbeat = true", "boolean"),
    ],
)
def test_bad_config_files(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(text)
    with pytest.raises(UsageError, match=message):
        parse("--config", str(config))


def test_service_tree() -> None:
    service = makeService(parse("--ws", "tcp:0:interface=127.0.0.1"), reactor)
    assert [child.name for child in service] == [
        "open-files-limit",
        "store",
        "moderation",
        "signaling",
        "stun",
        "admin",
    ]
    assert isinstance(service.getServiceNamed("store"), StoreService)
    assert isinstance(service.getServiceNamed("signaling"), SignalingService)
    assert isinstance(service.getServiceNamed("stun"), StunService)
    factory = service.getServiceNamed("signaling").factory
    moderation = service.getServiceNamed("moderation")
    assert factory.bans is moderation and factory.reports is moderation
    assert factory.switchboard.observer is moderation  # told what sessions do, for the rules
    assert [rule.name for rule in moderation._rules] == [
        "links",
        "patterns",
        "quick-leaves",
        "repeated-message",
        "reports",
    ]
    assert factory.limits.max_report_bytes == 409600
    assert factory.maxMessagePayloadSize == 409600
    assert isinstance(service.getServiceNamed("admin"), AdminService)
    bare = makeService(
        parse("--ws", "tcp:0:interface=127.0.0.1", "--stun-udp", "0", "--admin", "none"), reactor
    )
    assert [child.name for child in bare] == ["open-files-limit", "store", "moderation", "signaling"]


def test_the_example_config_file_parses() -> None:
    options = parse("--config", str(ROOT / "docs" / "vchat.toml"))
    assert options["ws"] == "tcp:8080" and options["moderation-webhook"] is None
    assert {rule.name for rule in options.rules} >= {"quick-leaves", "repeated-message", "links", "reports"}


def test_the_webhook_joins_the_service_tree_after_moderation() -> None:
    service = makeService(
        parse("--moderation-webhook", "https://moderation.example/vchat", "--moderation-secret", "s"), reactor
    )
    names = [child.name for child in service]
    assert names.index("moderation") + 1 == names.index("moderation-webhook")
    webhook = service.getServiceNamed("moderation-webhook")
    assert isinstance(webhook, ModerationWebhook)
    assert service.getServiceNamed("moderation").webhook is webhook
    assert "moderation-webhook" not in [child.name for child in makeService(parse(), reactor)]


@pytest_twisted.ensureDeferred
async def test_listen_failure_is_reported(tmp_path: Path) -> None:
    first = makeService(parse("--ws", "tcp:0:interface=127.0.0.1", "--data-dir", str(tmp_path)), reactor)
    first.startService()
    port = await first.getServiceNamed("signaling").whenListening()
    failures: list[bool] = []
    factory = first.getServiceNamed("signaling").factory
    endpoint = serverFromString(reactor, f"tcp:{port.getHost().port}:interface=127.0.0.1")
    second = SignalingService(endpoint, factory, on_failure=lambda: failures.append(True))
    second.startService()
    with pytest.raises(CannotListenError):
        await second.whenListening()
    assert failures == [True]
    await second.stopService()
    await first.stopService()


def twistd(*args: str) -> list[str]:
    """Arguments that run `twistd` with this interpreter and this checkout's plugin."""
    return ["-c", "from twisted.scripts.twistd import run; run()", *args]


@pytest_twisted.ensureDeferred
async def test_twistd_help_lists_every_option() -> None:
    out, _, code = await getProcessOutputAndValue(
        sys.executable,
        twistd("vchat", "--help"),
        env={"PYTHONPATH": str(ROOT)},
        path=str(ROOT),
        reactor=reactor,
    )
    assert code == 0
    for setting in Options.settings:
        assert f"--{setting.name}{'' if setting.flag else '='}" in out.decode()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_twistd(tmp_path: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, *twistd("-n", "--pidfile=", *args)],
        cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


def stop_twistd(process: subprocess.Popen[bytes]) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    output = process.communicate(timeout=10)[0].decode()
    assert process.returncode in (0, -signal.SIGTERM), output  # newer twistd re-raises the signal
    return output


def stun_binding(port: int) -> tuple[str, int]:
    """Ask the STUN responder on 127.0.0.1:`port` for our mapped address."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        for _ in range(50):
            sock.sendto(binding_request(b"0123456789ab", fingerprint=True), ("127.0.0.1", port))
            try:
                reply = parse_message(sock.recv(2048))
            except TimeoutError:
                continue
            mapped = reply.xor_mapped_address()
            assert mapped is not None and reply.get(Attr.FINGERPRINT) is not None
            assert mapped == ("127.0.0.1", sock.getsockname()[1])
            return mapped
    pytest.fail(f"no STUN answer on port {port}")


@pytest_twisted.ensureDeferred
async def test_twistd_serves_and_stops_cleanly(tmp_path: Path) -> None:
    port, stun_port = free_port(), free_udp_port()
    process = start_twistd(
        tmp_path, "vchat", "--ws", f"tcp:{port}:interface=127.0.0.1", "--admin", "tcp:0:interface=127.0.0.1",
        "--stun-udp", str(stun_port), "--stun-interface", "127.0.0.1",
    )  # fmt: skip
    try:
        for _ in range(100):
            try:
                client = await connect(reactor, f"ws://127.0.0.1:{port}/ws")
                break
            except Exception:
                await deferLater(reactor, 0.1)
        else:
            pytest.fail("twistd vchat did not start listening")
        client.send({"type": "hello", "age_confirmed": True, "gender": "m"})
        welcome = await client.expect("welcome")
        assert welcome["online"] == 1
        assert welcome["ice_servers"] == [{"urls": [f"stun:127.0.0.1:{stun_port}"]}]
        stun_binding(stun_port)
        process.send_signal(signal.SIGTERM)
        _, code, _ = await client.wait_closed()
        assert code == 4000
    finally:
        output = stop_twistd(process)
    assert "signaling on" in output


def test_twistd_vchat_stun_runs_alone(tmp_path: Path) -> None:
    stun_port = free_udp_port()
    process = start_twistd(
        tmp_path, "vchat-stun", "--stun-udp", str(stun_port), "--stun-interface", "127.0.0.1"
    )
    try:
        stun_binding(stun_port)
    finally:
        stop_twistd(process)


@pytest.mark.parametrize("plugin", ["vchat", "vchat-stun"])
def test_twistd_exits_with_1_when_a_service_cannot_start(tmp_path: Path, plugin: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        args = ["--stun-udp", str(port), "--stun-interface", "127.0.0.1"]
        if plugin == "vchat":
            args += ["--ws", "tcp:0:interface=127.0.0.1", "--admin", "none"]
        process = start_twistd(tmp_path, plugin, *args)
        try:
            output = process.communicate(timeout=30)[0].decode()
        except subprocess.TimeoutExpired:
            process.kill()  # it hung instead of exiting: leave nothing running
            output = process.communicate()[0].decode()
            pytest.fail(f"twistd {plugin} did not exit:\n{output}")
    assert process.returncode == 1, output
    assert "cannot listen for STUN over UDP" in output
