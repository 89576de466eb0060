"""`GET /metrics`: the figures in Prometheus's text format, from a registry of our own (never the global one)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from vchat.admin.figures import ClusterFigures, Figures

NAMESPACE = "vchat"

_Family = TypeVar("_Family", CounterMetricFamily, GaugeMetricFamily)


class _FiguresCollector:
    """Turns the figures, read at each scrape, into Prometheus metric families."""

    def __init__(self, figures: Figures) -> None:
        self._figures = figures

    def collect(self) -> Iterator[Metric]:
        stats = self._figures.stats()
        sessions = stats["sessions"]
        yield _gauge("sessions_online", "Sessions with a live connection.", sessions["online"])
        yield _gauge(
            "sessions_kept", "Sessions kept, including those waiting to be resumed.", sessions["kept"]
        )
        yield _gauge("sessions_searching", "Sessions in the matching queue.", sessions["searching"])
        yield _gauge("sessions_matched", "Sessions connected and in a match.", sessions["matched"])
        yield _counter("matches_total", "Matches made.", stats["matches_total"])
        yield _labelled(
            CounterMetricFamily(
                f"{NAMESPACE}_messages_relayed_total",
                "Messages relayed to a partner, by type.",
                labels=["type"],
            ),
            stats["messages_relayed_total"],
        )
        yield _counter("reports_total", "Reports filed by users.", stats["reports_total"])
        yield _gauge("bans_active", "Bans in force (as of the last check).", stats["bans_active"])
        yield _labelled(
            CounterMetricFamily(
                f"{NAMESPACE}_moderation_actions_total",
                "Actions taken by the automatic moderation rules, by kind.",
                labels=["action"],
            ),
            stats["moderation_actions_total"],
        )
        queue = GaugeMetricFamily(
            f"{NAMESPACE}_queue_waiting",
            "Users waiting in the matching queue, by their gender and the gender they want.",
            labels=["gender", "want"],
        )
        for partition in stats["queue_lengths"]:
            queue.add_metric([partition["gender"], partition["want"]], partition["waiting"])
        yield queue
        stun = stats["stun"]
        yield _gauge("stun_up", "1 if the STUN service runs, else 0.", int(stun["running"]))
        yield _counter("stun_requests_answered_total", "STUN requests answered.", stun["answered_total"])
        yield _counter(
            "stun_requests_dropped_total",
            "STUN requests dropped: over the rate limit, or not a request to answer.",
            stun["dropped_total"],
        )
        webhook = stats["webhook"]
        yield _gauge("webhook_queue_length", "Items waiting for the moderation webhook.", webhook["queued"])
        yield _counter(
            "webhook_dropped_total",
            "Items the moderation webhook's full queue dropped.",
            webhook["dropped_total"],
        )
        if stats["cluster"]["enabled"]:  # on a single node, no cluster to alert on
            yield from _cluster_metrics(stats["cluster"])


def _cluster_metrics(cluster: ClusterFigures) -> Iterator[Metric]:
    """The cluster's figures, without a series per node: those are in `/api/stats`."""
    yield _gauge("cluster_nodes", "Living nodes of the cluster, this one included.", len(cluster["nodes"]))
    totals = cluster["totals"]
    yield _labelled(
        GaugeMetricFamily(
            f"{NAMESPACE}_cluster_sessions",
            "Sessions of every living node, by state: online, searching, matched.",
            labels=["state"],
        ),
        {"online": totals["online"], "searching": totals["searching"], "matched": totals["matched"]},
    )
    yield _gauge(
        "cluster_redis_up",
        "1 if this node's heartbeat and node bus reach Redis, else 0.",
        int(cluster["redis_up"]),
    )
    bus = cluster["bus"]
    yield _labelled(
        CounterMetricFamily(
            f"{NAMESPACE}_cluster_bus_messages_total",
            "Messages of this node's end of the node bus, by outcome: sent, received, dropped, malformed.",
            labels=["outcome"],
        ),
        {
            "sent": bus["sent_total"],
            "received": bus["received_total"],
            "dropped": bus["dropped_total"],
            "malformed": bus["malformed_total"],
        },
    )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{NAMESPACE}_{name}", documentation, value=value)


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"{NAMESPACE}_{name}", documentation, value=value)


def _labelled(family: _Family, values: Mapping[str, int]) -> _Family:
    for label, value in values.items():
        family.add_metric([label], value)
    return family


def metrics_registry(figures: Figures) -> CollectorRegistry:
    """A fresh registry holding the server's figures and the process's CPU, memory and files (vchat_process_*)."""
    registry = CollectorRegistry()
    registry.register(_FiguresCollector(figures))
    ProcessCollector(namespace=NAMESPACE, registry=registry)
    return registry


def render_metrics(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The body of a `/metrics` response in Prometheus's text format, and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST
