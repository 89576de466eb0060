"""The signaling service: the WebSocket listener, which closes every session when it stops."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IStreamServerEndpoint

from vchat.listener import EndpointService
from vchat.protocol.websocket import SignalingFactory


class SignalingService(EndpointService):
    """Listens for signaling WebSockets; on stop, closes every session and the port."""

    def __init__(
        self, endpoint: IStreamServerEndpoint, factory: SignalingFactory, on_failure: Callable[[], object]
    ) -> None:
        super().__init__("signaling", endpoint, factory, on_failure)
        self._switchboard = factory.switchboard

    def closing(self) -> None:
        self._switchboard.shutdown()
