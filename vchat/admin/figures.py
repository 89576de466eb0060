"""The figures behind `/api/stats` and `/metrics`: read, when asked, from the objects that keep them.

Nothing here names a session or a pair: only counts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict

from prometheus_client import ProcessCollector

from vchat.cluster.presence import NodeCounts, total
from vchat.matching import MatchingEngine
from vchat.moderation.service import ModerationService
from vchat.moderation.webhook import ModerationWebhook
from vchat.protocol.switchboard import Switchboard
from vchat.stun.service import StunService

if TYPE_CHECKING:  # at run time it would import txredisapi, which installs the default reactor
    from vchat.cluster.bus import NodeBus
    from vchat.cluster.presence import NodePresence


class SessionFigures(TypedDict):
    """Sessions now: connected, kept (also those waiting to be resumed), searching, in a match."""

    online: int
    kept: int
    searching: int
    matched: int


class QueueLength(TypedDict):
    """How many users wait in one (gender, want) partition of the matching queue."""

    gender: str
    want: str
    waiting: int


class StunFigures(TypedDict):
    """Whether this process has a STUN service and whether it runs, and the requests it answered and dropped
    since it was made."""

    enabled: bool
    running: bool
    answered_total: int
    dropped_total: int


class WebhookFigures(TypedDict):
    """Whether the moderation webhook is configured, what waits in its queue, and what the full queue dropped."""

    enabled: bool
    queued: int
    dropped_total: int


class ProcessFigures(TypedDict):
    """The process's CPU time, resident memory, open file descriptors and start time (zeros without /proc)."""

    cpu_seconds_total: float
    resident_memory_bytes: int
    open_fds: int
    start_time_seconds: float


class CountFigures(TypedDict):
    """Users connected, waiting for a partner, in a match: of one node, or of the whole cluster."""

    online: int
    searching: int
    matched: int


class NodeFigures(TypedDict):
    """One living node of the cluster and its figures, as of its latest heartbeat (this node's: now)."""

    node_id: str
    online: int
    searching: int
    matched: int


class BusFigures(TypedDict):
    """The messages this node's end of the node bus sent, received, dropped and refused as malformed."""

    sent_total: int
    received_total: int
    dropped_total: int
    malformed_total: int


class ClusterFigures(TypedDict):
    """The cluster this node is part of (`--redis`): its nodes, their totals, and the node bus."""

    enabled: bool
    node_id: str | None
    redis_up: bool
    nodes: list[NodeFigures]
    totals: CountFigures
    bus: BusFigures


class Stats(TypedDict):
    """Every figure: the JSON of `GET /api/stats` (docs/metrics.md)."""

    sessions: SessionFigures
    matches_total: int
    messages_relayed_total: dict[str, int]
    reports_total: int
    bans_active: int
    moderation_actions_total: dict[str, int]
    queue_lengths: list[QueueLength]
    stun: StunFigures
    webhook: WebhookFigures
    process: ProcessFigures
    cluster: ClusterFigures


@dataclass(frozen=True)
class ClusterSources:
    """Where a node in cluster mode reads the cluster's figures: its presence and its end of the node bus."""

    presence: NodePresence
    bus: NodeBus


class Figures:
    """Reads the server's figures from the switchboard, the matching engine, moderation, the webhook, STUN and,
    in cluster mode, the node's presence and bus.

    `stun` returns the STUN service now in place, or None: it may be stopped and started again while the
    server runs (its counters live on the service object). `cluster` is None on a single node.
    """

    def __init__(
        self,
        switchboard: Switchboard,
        engine: MatchingEngine,
        moderation: ModerationService,
        stun: Callable[[], StunService | None],
        webhook: ModerationWebhook | None = None,
        *,
        cluster: ClusterSources | None = None,
    ) -> None:
        self._switchboard = switchboard
        self._engine = engine
        self._moderation = moderation
        self._stun = stun
        self._webhook = webhook
        self._cluster = cluster
        # prometheus_client's own reading of /proc, so that /api/stats and /metrics agree on how it is done.
        self._process = ProcessCollector(registry=None)

    def stats(self) -> Stats:
        """Every figure as it is now."""
        switchboard, counters = self._switchboard, self._switchboard.counters
        sessions: SessionFigures = {
            "online": switchboard.online,
            "kept": switchboard.sessions,
            "searching": switchboard.waiting,
            "matched": switchboard.matched,
        }
        return {
            "sessions": sessions,
            "matches_total": counters.matches,
            "messages_relayed_total": dict(counters.relayed),
            "reports_total": counters.reports,
            "bans_active": self._moderation.active,
            "moderation_actions_total": dict(self._moderation.actions),
            "queue_lengths": [
                {"gender": gender, "want": want, "waiting": waiting}
                for (gender, want), waiting in self._engine.queue_lengths().items()
            ],
            "stun": self._stun_figures(),
            "webhook": self._webhook_figures(),
            "process": self._process_figures(),
            "cluster": self._cluster_figures(
                NodeCounts(sessions["online"], sessions["searching"], sessions["matched"])
            ),
        }

    def _stun_figures(self) -> StunFigures:
        service = self._stun()
        if service is None:
            return {"enabled": False, "running": False, "answered_total": 0, "dropped_total": 0}
        counters = service.counters
        return {
            "enabled": True,
            "running": bool(service.running),
            "answered_total": counters.answered,
            "dropped_total": counters.dropped,
        }

    def _webhook_figures(self) -> WebhookFigures:
        webhook = self._webhook
        if webhook is None:
            return {"enabled": False, "queued": 0, "dropped_total": 0}
        return {"enabled": True, "queued": webhook.queued, "dropped_total": webhook.dropped}

    def _process_figures(self) -> ProcessFigures:
        values = {
            sample.name: sample.value for metric in self._process.collect() for sample in metric.samples
        }
        return {
            "cpu_seconds_total": values.get("process_cpu_seconds_total", 0.0),
            "resident_memory_bytes": int(values.get("process_resident_memory_bytes", 0)),
            "open_fds": int(values.get("process_open_fds", 0)),
            "start_time_seconds": values.get("process_start_time_seconds", 0.0),
        }

    def _cluster_figures(self, own: NodeCounts) -> ClusterFigures:
        """The cluster's figures; on a single node, `own` as the totals and nothing else."""
        cluster = self._cluster
        if cluster is None:
            return {
                "enabled": False,
                "node_id": None,
                "redis_up": False,
                "nodes": [],
                "totals": _count_figures(own),
                "bus": {"sent_total": 0, "received_total": 0, "dropped_total": 0, "malformed_total": 0},
            }
        presence, bus = cluster.presence, cluster.bus
        nodes = presence.nodes()  # read once, so that the totals are the sum of the nodes listed
        counters = bus.counters
        return {
            "enabled": True,
            "node_id": presence.node_id,
            "redis_up": presence.redis_available and bus.connected,
            "nodes": [{"node_id": node, **_count_figures(nodes[node])} for node in sorted(nodes)],
            "totals": _count_figures(total(nodes.values())),
            "bus": {
                "sent_total": counters.sent,
                "received_total": counters.received,
                "dropped_total": counters.dropped,
                "malformed_total": counters.malformed,
            },
        }


def _count_figures(counts: NodeCounts) -> CountFigures:
    return {"online": counts.online, "searching": counts.searching, "matched": counts.matched}
