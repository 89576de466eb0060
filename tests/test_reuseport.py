"""The `reuseport:` endpoint: its string syntax, two listeners on one port in one process, and two `twistd vchat`
processes sharing a port (docs/cluster.md, "Many processes on one machine")."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import pytest_twisted
from test_tap import free_port, twistd
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.plugin import IPlugin
from twisted.python.usage import UsageError
from zope.interface.verify import verifyObject

from vchat.listener import stop_listening
from vchat.reuseport import ReusePortEndpoint, ReusePortParser
from vchat.tap import Options
from vchat.testing import connect

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT here")


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def test_the_parser_is_a_plugin() -> None:
    from twisted.internet.interfaces import IStreamServerEndpointStringParser

    parser = ReusePortParser()
    assert verifyObject(IPlugin, parser) and verifyObject(IStreamServerEndpointStringParser, parser)


@pytest.mark.parametrize(
    ("description", "port", "interface", "backlog"),
    [
        ("reuseport:8080", 8080, "", 50),
        ("reuseport:8080:interface=127.0.0.1", 8080, "127.0.0.1", 50),
        ("reuseport:port=8080:backlog=1024", 8080, "", 1024),
        (r"reuseport:8080:interface=\:\::backlog=7", 8080, "::", 7),
        (r"reuseport:443:interface=2001\:db8\:\:1", 443, "2001:db8::1", 50),
    ],
)
def test_endpoint_strings(description: str, port: int, interface: str, backlog: int) -> None:
    endpoint = serverFromString(reactor, description)
    assert isinstance(endpoint, ReusePortEndpoint)
    assert (endpoint.port, endpoint.interface, endpoint.backlog) == (port, interface, backlog)


@pytest.mark.parametrize(
    ("description", "message"),
    [
        ("reuseport", "needs one port"),
        ("reuseport:80:81", "needs one port"),
        ("reuseport:0", "1-65535"),
        ("reuseport:70000", "1-65535"),
        ("reuseport:http", "whole number"),
        ("reuseport:80:interface=example.org", "IPv4 or IPv6 address"),
        ("reuseport:80:backlog=0", "at least 1"),
        ("reuseport:80:colour=red", "unknown arguments: colour"),
    ],
)
def test_bad_endpoint_strings(description: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        serverFromString(reactor, description)


def test_vchat_options_take_it() -> None:
    options = Options()
    options.parseOptions(["--ws", "reuseport:8080", "--admin", "reuseport:8081:interface=127.0.0.1"])
    assert options["ws"] == "reuseport:8080"
    with pytest.raises(UsageError, match="--ws"):
        Options().parseOptions(["--ws", "reuseport:0"])


@pytest_twisted.ensureDeferred
async def test_two_endpoints_share_a_port_in_one_process() -> None:
    port = free_port()
    factory = Factory.forProtocol(Protocol)
    first = await serverFromString(reactor, f"reuseport:{port}:interface=127.0.0.1").listen(factory)
    try:
        second = await serverFromString(reactor, f"reuseport:{port}:interface=127.0.0.1").listen(factory)
        try:
            assert first.getHost().port == second.getHost().port == port
            with pytest.raises(CannotListenError):  # a socket without SO_REUSEPORT cannot join them
                await serverFromString(reactor, f"tcp:{port}:interface=127.0.0.1").listen(factory)
        finally:
            await stop_listening(second)
    finally:
        await stop_listening(first)


@pytest_twisted.ensureDeferred
async def test_a_port_held_without_reuseport_is_a_clear_error() -> None:
    port = free_port()
    factory = Factory.forProtocol(Protocol)
    plain = await serverFromString(reactor, f"tcp:{port}:interface=127.0.0.1").listen(factory)
    try:
        with pytest.raises(CannotListenError, match="in use"):
            await serverFromString(reactor, f"reuseport:{port}:interface=127.0.0.1").listen(factory)
    finally:
        await stop_listening(plain)


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback here")
@pytest_twisted.ensureDeferred
async def test_ipv6() -> None:
    with socket.socket(socket.AF_INET6) as probe:
        probe.bind(("::1", 0))
        port = probe.getsockname()[1]
    listening = await serverFromString(reactor, rf"reuseport:{port}:interface=\:\:1").listen(
        Factory.forProtocol(Protocol)
    )
    try:
        host = listening.getHost()
        assert (host.type, host.host, host.port) == ("TCP", "::1", port)
        with socket.create_connection(("::1", port), timeout=5):
            pass
    finally:
        await stop_listening(listening)


def start_vchat(tmp_path: Path, name: str, port: int) -> tuple[subprocess.Popen[bytes], Path]:
    """`twistd -n vchat` on reuseport `port` with its own data directory, logging to `name`.log."""
    log = tmp_path / f"{name}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, *twistd("-n", "--pidfile=", "vchat", "--ws", f"reuseport:{port}:interface=127.0.0.1",
                                     "--admin", "none", "--stun-udp", "0", "--data-dir", name)],
            cwd=tmp_path, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
            stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    return process, log


def wait_listening(process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while "signaling on" not in log.read_text():
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"twistd vchat did not start listening:\n{log.read_text()}")
        time.sleep(0.05)


def stop(process: subprocess.Popen[bytes], log: Path) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    process.wait(timeout=10)
    assert process.returncode in (0, -signal.SIGTERM), log.read_text()


@pytest_twisted.ensureDeferred
async def test_two_twistd_processes_share_one_port(tmp_path: Path) -> None:
    port = free_port()
    processes = [start_vchat(tmp_path, name, port) for name in ("one", "two")]
    clients = []
    try:
        for process, log in processes:
            wait_listening(process, log)
        # Each process counts only its own users: with both taking connections, each `online` count up to the
        # smaller process's share appears twice, and 1 (each process's first user) always does.
        onlines = []
        for _ in range(40):
            client = await connect(reactor, f"ws://127.0.0.1:{port}/ws")
            clients.append(client)
            welcome = await client.hello()
            onlines.append(welcome["online"])
        counts = Counter(onlines)
        assert counts[1] == 2, f"one process took every connection: {sorted(onlines)}"
        assert set(counts.values()) <= {1, 2} and len(onlines) == 40
    finally:
        for client in clients:
            client.sendClose()
        await deferLater(reactor, 0.1)
        for process, log in processes:
            stop(process, log)
    for _, log in processes:
        assert f"port={port}" in log.read_text()
