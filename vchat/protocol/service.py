"""The signaling service: the WebSocket listener (with the web client's files), which closes every session when it
stops."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.web.resource import IResource

from vchat.listener import EndpointService
from vchat.protocol.site import SignalingSite
from vchat.protocol.websocket import SignalingFactory


class SignalingService(EndpointService):
    """Listens for signaling WebSockets at /ws, and serves the web client at / unless `web` is off; on stop,
    closes every session and the port."""

    def __init__(
        self,
        endpoint: IStreamServerEndpoint,
        factory: SignalingFactory,
        on_failure: Callable[[], object],
        web: bool = True,
        routes: Mapping[bytes, IResource] | None = None,
    ) -> None:
        """`routes`: more HTTP resources on the same port, by the path prefix they serve."""
        super().__init__("signaling", endpoint, SignalingSite(factory, web, routes), on_failure)
        self.factory = factory
        self._switchboard = factory.switchboard
        self._allowed_origins = factory.allowed_origins

    def startService(self) -> None:
        if not self._allowed_origins:
            self._log.warn(
                "any web origin may open WebSockets; set --allowed-origin to the site's origin"
                " (such as https://chat.example.org) to refuse other sites' pages"
            )
        super().startService()

    def closing(self) -> None:
        self._switchboard.shutdown()
