"""What the switchboard needs of the other nodes of a cluster (docs/cluster.md). Implemented by
vchat.cluster.node; a single node has none. A partner connected to another node is vchat.protocol.partner's."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import Interface

from vchat.protocol.handover import HandedSession

NodeMessage = dict[str, Any]
"""A message to another node: a map with a string `type` (docs/cluster.md, "Messages between nodes")."""


class INodeLink(Interface):
    """The way to the other nodes."""

    def send(node_id: str, message: NodeMessage) -> bool:
        """Send `message` to node `node_id`; False if it cannot be sent now (Redis away): nothing is kept."""

    def broadcast(message: NodeMessage) -> bool:
        """Send `message` to every node, this one included; False as for `send`."""

    def fetch_session(node_id: str, token: str) -> Deferred[tuple[HandedSession | None, str | None]]:
        """Ask node `node_id` to hand over the session resume token `token` names: fires with its state and
        None, or (None, the session's id) if a ban ended it, or (None, None) if the node has no such session
        or does not answer in time."""
