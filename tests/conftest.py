"""Shared fixtures: a real vchat server on a loopback port chosen by the OS."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_twisted
from hypothesis import settings

from vchat.testing import RunningServer, start_server

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("ci")


@pytest_twisted.async_yield_fixture()
async def server() -> AsyncIterator[RunningServer]:
    """A running server with default settings, but a one-second resume grace window."""
    from twisted.internet import reactor

    running = await start_server(reactor, "--resume-grace", "1")
    yield running
    await running.stop()


@pytest.fixture
def vchat_server(server: RunningServer) -> str:
    """The ws:// URL of a running server."""
    return server.url
