"""Shared fixtures: a real vchat server on a loopback port chosen by the OS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_twisted
from hypothesis import settings
from twisted.application.service import IService

from vchat.protocol.codec import JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL
from vchat.tap import Options, makeService
from vchat.testing import SignalingClient, connect

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("ci")


@dataclass
class RunningServer:
    """A started vchat service tree and the URL of its WebSocket endpoint."""

    service: IService
    url: str

    async def client(
        self,
        codec: str = "json",
        hello: bool = False,
        headers: dict[str, str] | None = None,
        **fields: object,
    ) -> SignalingClient:
        """Connect a client with `codec` ("json", "msgpack" or "none"); optionally say hello."""
        from twisted.internet import reactor

        offered = {"json": [JSON_SUBPROTOCOL], "msgpack": [MSGPACK_SUBPROTOCOL], "none": []}[codec]
        client = await connect(reactor, self.url, offered, headers)
        if hello:
            client.send({"type": "hello", "age_confirmed": True, "gender": "u", **fields})
            await client.expect("welcome")
        return client


async def start_server(*args: str) -> RunningServer:
    """Start `twistd vchat`'s service tree in this reactor, listening on an ephemeral loopback port."""
    from twisted.internet import reactor

    options = Options()
    options.parseOptions(["--ws", "tcp:0:interface=127.0.0.1", "--stun-udp", "0", *args])
    service = makeService(options, reactor)
    service.startService()
    port = await service.getServiceNamed("signaling").whenListening()
    return RunningServer(service, f"ws://127.0.0.1:{port.getHost().port}/ws")


@pytest_twisted.async_yield_fixture()
async def server() -> AsyncIterator[RunningServer]:
    """A running server with default settings, but a one-second resume grace window."""
    running = await start_server("--resume-grace", "1")
    yield running
    await running.service.stopService()


@pytest.fixture
def vchat_server(server: RunningServer) -> str:
    """The ws:// URL of a running server."""
    return server.url
