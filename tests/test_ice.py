"""ICE servers in `welcome`, and TURN credentials checked by a real coturn on loopback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vchat.ice import IcePolicy, stun_url, turn_credentials

SECRET = "north-wind-secret"


def test_turn_credentials_follow_the_rest_api_scheme() -> None:
    username, credential = turn_credentials(SECRET, "sess-1", now=1_700_000_000.5, ttl=3600)
    assert username == "1700003600:sess-1"
    expected = hmac.new(SECRET.encode(), username.encode(), hashlib.sha1).digest()
    assert base64.b64decode(credential) == expected


def test_servers_for_a_session() -> None:
    policy = IcePolicy(
        stun_ports=(3478, 3479),
        turn_urls=("turn:t.example:3478",),
        turn_secret=SECRET,
        turn_ttl=60,
    )
    servers = policy.servers("s1", "chat.example", now=100.0)
    assert servers[0] == {"urls": ["stun:chat.example:3478", "stun:chat.example:3479"]}
    assert servers[1]["urls"] == ["turn:t.example:3478"] and servers[1]["username"] == "160:s1"
    assert policy.transport_policy == "all"


def test_public_host_wins_and_ipv6_gets_brackets() -> None:
    assert IcePolicy(stun_ports=(3478,), public_host="vchat.example").servers("s", "10.0.0.1", 0) == [
        {"urls": ["stun:vchat.example:3478"]}
    ]
    assert IcePolicy(stun_ports=(3478,)).servers("s", "::1", 0) == [{"urls": ["stun:[::1]:3478"]}]
    assert IcePolicy().servers("s", "h", 0) == []
    assert IcePolicy(relay_only=True).transport_policy == "relay"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[int]:
    """A real coturn on loopback with `use-auth-secret`; yields its port."""
    turnserver = shutil.which("turnserver")
    assert turnserver, "coturn is not installed: scripts/test installs it"
    port = free_udp_port()
    relay = 50000 + port % 10000
    process = subprocess.Popen(
        [
            turnserver, "-n", "--listening-ip=127.0.0.1", f"--listening-port={port}", "--relay-ip=127.0.0.1",
            f"--min-port={relay}", f"--max-port={relay + 20}", "--use-auth-secret", f"--static-auth-secret={SECRET}",
            "--realm=vchat.test", "--no-tls", "--no-dtls", "--no-cli", "--allow-loopback-peers",
            "--log-file=stdout", "--simple-log", f"--pidfile={tmp_path / 'turn.pid'}",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        time.sleep(0.5)
        assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


def allocate(port: int, username: str, credential: str) -> subprocess.CompletedProcess[bytes]:
    """A TURN Allocate (and a little relayed traffic) with coturn's own test client."""
    client = shutil.which("turnutils_uclient")
    assert client, "coturn's turnutils_uclient is not installed"
    command = [
        client,
        "-y",
        "-n",
        "1",
        "-m",
        "1",
        "-u",
        username,
        "-w",
        credential,
        "-p",
        str(port),
        "127.0.0.1",
    ]
    return subprocess.run(command, capture_output=True, timeout=60, check=False)


def test_coturn_accepts_our_credentials_and_rejects_expired_ones(coturn: int) -> None:
    fresh = allocate(coturn, *turn_credentials(SECRET, "session-a", time.time(), 600))
    assert fresh.returncode == 0, fresh.stdout.decode()[-2000:]
    expired = allocate(coturn, *turn_credentials(SECRET, "session-a", time.time() - 700, 600))
    assert expired.returncode != 0
    assert b"Cannot complete Allocation" in expired.stdout + expired.stderr
    username, _ = turn_credentials(SECRET, "session-a", time.time(), 600)
    forged = allocate(coturn, username, base64.b64encode(b"x" * 20).decode())
    assert forged.returncode != 0


def test_stun_urls_of_servers_run_elsewhere_are_handed_out_too() -> None:
    elsewhere = ("stun:stun.example.org:3478",)
    assert IcePolicy(stun_urls=elsewhere).servers("s", "h", 0) == [{"urls": ["stun:stun.example.org:3478"]}]
    assert IcePolicy(stun_ports=(3478,), stun_urls=elsewhere).servers("s", "h", 0) == [
        {"urls": ["stun:h:3478", "stun:stun.example.org:3478"]}
    ]


@pytest.mark.parametrize("bad", ["", "stun:", "turn:x:3478", "http://x", 3478])
def test_a_stun_url_is_checked(bad: object) -> None:
    with pytest.raises(ValueError):
        stun_url(bad)
    assert stun_url("stuns:x:5349") == "stuns:x:5349"
