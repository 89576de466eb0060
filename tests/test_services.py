"""ServiceControl over a real server on loopback: listing the tree, stopping and starting services while
WebSocket sessions go on, and refusing what it must; the restartable STUN service; the root's stop."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import cast

import pytest
import pytest_twisted
from twisted.application.service import Service
from twisted.internet import reactor
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.threads import deferToThread

from vchat.listener import StartupGuard
from vchat.services import (
    NotStoppable,
    ServiceControl,
    ServiceFailed,
    ServiceInfo,
    ServiceTree,
    UnknownService,
)
from vchat.stun.config import StunConfig
from vchat.stun.testing import UdpClient, request, start_stun
from vchat.testing import RunningServer, start_server

LOOPBACK = "127.0.0.1"


def free_port(kind: socket.SocketKind) -> int:
    """A loopback port the OS says is free now."""
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


async def stun_answers(port: int) -> bool:
    """Whether a Binding request to the loopback UDP `port` is answered within half a second."""
    client = UdpClient(LOOPBACK)
    try:
        replies = await deferToThread(client.exchange, (LOOPBACK, port), request(), timeout=0.5)
    finally:
        client.close()
    return len(replies) == 1


class Server:
    """A running vchat with STUN on a UDP port of its own, and its `ServiceControl`."""

    def __init__(self, running: RunningServer, stun_port: int) -> None:
        self.running = running
        self.stun_port = stun_port
        self.control = ServiceControl(cast(ServiceTree, running.service))

    def info(self, name: str) -> ServiceInfo:
        [info] = [info for info in self.control.services() if info.name == name]
        return info


@pytest_twisted.async_yield_fixture()
async def server() -> AsyncIterator[Server]:
    stun_port = free_port(socket.SOCK_DGRAM)
    running = await start_server(
        reactor, "--admin", "none", "--stun-udp", str(stun_port), "--stun-interface", LOOPBACK
    )
    yield Server(running, stun_port)
    await running.stop()


@pytest_twisted.ensureDeferred
async def test_the_tree_is_listed(server: Server) -> None:
    assert server.control.services() == [
        ServiceInfo("open-files-limit", "built-in", running=True, stoppable=False),
        ServiceInfo("store", "built-in", running=True, stoppable=False),
        ServiceInfo("moderation", "built-in", running=True, stoppable=False),
        ServiceInfo("signaling", "built-in", running=True, stoppable=True),
        ServiceInfo("stun", "built-in", running=True, stoppable=True),
    ]


@pytest_twisted.ensureDeferred
async def test_stun_stops_and_starts_on_its_port_while_sessions_go_on(server: Server) -> None:
    client = await server.running.client(hello=True)
    assert await stun_answers(server.stun_port)

    stopped = await server.control.stop("stun")
    assert stopped == ServiceInfo("stun", "built-in", running=False, stoppable=True)
    assert not await stun_answers(server.stun_port)
    client.send({"type": "ping", "id": 1})
    assert (await client.expect("pong"))["re"] == 1

    started = await server.control.start("stun")
    assert started.running and server.info("stun").running
    assert await stun_answers(server.stun_port)
    client.send({"type": "ping", "id": 2})
    assert (await client.expect("pong"))["re"] == 2
    client.sendClose()
    await client.wait_closed()


@pytest_twisted.ensureDeferred
async def test_stop_and_start_are_idempotent(server: Server) -> None:
    assert (await server.control.start("stun")).running
    assert not (await server.control.stop("stun")).running
    assert not (await server.control.stop("stun")).running
    assert (await server.control.start("stun")).running
    assert (await server.control.start("stun")).running
    assert await stun_answers(server.stun_port)


@pytest.mark.parametrize("name", ["open-files-limit", "store", "moderation"])
@pytest_twisted.ensureDeferred
async def test_the_services_the_process_needs_are_refused(server: Server, name: str) -> None:
    running = [info.name for info in server.control.services() if info.running]
    for switch in (server.control.stop, server.control.start):
        with pytest.raises(NotStoppable, match=f"{name} cannot be stopped or started: "):
            await switch(name)
    assert [info.name for info in server.control.services() if info.running] == running


@pytest_twisted.ensureDeferred
async def test_unknown_names_are_refused(server: Server) -> None:
    for switch in (server.control.stop, server.control.start):
        with pytest.raises(UnknownService, match=r"no service 'turn' \(services: open-files-limit, store, "):
            await switch("turn")


@pytest_twisted.ensureDeferred
async def test_a_start_on_a_taken_port_fails_and_the_process_goes_on(server: Server) -> None:
    await server.control.stop("stun")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind((LOOPBACK, server.stun_port))
        with pytest.raises(ServiceFailed, match=r"stun cannot start: .*Address already in use"):
            await server.control.start("stun")
        assert reactor.running
        assert not server.info("stun").running
    client = await server.running.client(hello=True)  # the process serves on
    assert (await server.control.start("stun")).running
    assert await stun_answers(server.stun_port)
    client.sendClose()
    await client.wait_closed()


@pytest_twisted.ensureDeferred
async def test_signaling_stops_its_sessions_and_listens_again_on_its_port() -> None:
    ws_port = free_port(socket.SOCK_STREAM)
    running = await start_server(reactor, "--admin", "none", "--ws", f"tcp:{ws_port}:interface={LOOPBACK}")
    try:
        control = ServiceControl(cast(ServiceTree, running.service))
        client = await running.client(hello=True)
        assert not (await control.stop("signaling")).running
        _, code, _ = await client.wait_closed()
        assert code == 4000
        with pytest.raises(ConnectionRefusedError):
            await running.client()
        assert (await control.start("signaling")).running
        assert running.url == f"ws://{LOOPBACK}:{ws_port}/ws"
        again = await running.client(hello=True)
        again.sendClose()
        await again.wait_closed()
    finally:
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_stun_keeps_the_ports_the_os_chose_across_a_restart() -> None:
    config = StunConfig(udp_port=0, interfaces=(LOOPBACK,), tcp_endpoint=f"tcp:0:interface={LOOPBACK}")
    service, listening = await start_stun(reactor, config)
    [(_, udp_port)] = listening.udp
    await service.stopService()
    assert not await stun_answers(udp_port)
    service.startService()
    try:
        again = await service.whenListening()
        assert again.udp == listening.udp and again.tcp is not None and again.tcp is not listening.tcp
        assert await stun_answers(udp_port)
    finally:
        await service.stopService()


class Counting(Service):
    """Counts its stops."""

    def __init__(self, name: str) -> None:
        self.setName(name)
        self.stops = 0

    def stopService(self) -> None:
        super().stopService()
        self.stops += 1


@pytest_twisted.ensureDeferred
async def test_the_root_stops_only_the_services_still_running() -> None:
    root = ServiceTree(StartupGuard(reactor))
    first, second = Counting("first"), Counting("second")
    first.setServiceParent(root)
    second.setServiceParent(root)
    root.startService()
    control = ServiceControl(root)
    await control.stop("first")
    await root.stopService()
    assert (first.stops, second.stops) == (1, 1)
    with pytest.raises(ServiceFailed, match="second cannot start: vchat is not running"):
        await control.start("second")
