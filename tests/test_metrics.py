"""`/metrics`: the figures in Prometheus's text format, read back with prometheus_client's own parser; the
cluster's, only in cluster mode, from nodes on a real redis-server."""

from __future__ import annotations

from pathlib import Path

import pytest_twisted
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from test_figures import cluster_node, node_counts, until
from twisted.internet.defer import succeed
from twisted.internet.task import Clock

from vchat.admin.figures import ClusterSources, Figures
from vchat.admin.metrics import metrics_registry, render_metrics
from vchat.cluster.presence import NodeCounts
from vchat.matching import MatchingEngine
from vchat.moderation.service import ModerationService
from vchat.protocol.messages import Hello, Search
from vchat.protocol.session import Session
from vchat.protocol.switchboard import Switchboard
from vchat.store import redis_testing
from vchat.store.memory import MemoryStore
from vchat.store.service import StoreService
from vchat.testing import RecordingPeer

redis_server = redis_testing.redis_server  # the fixtures, by their names
redis_url = redis_testing.redis_url

DOCS = (Path(__file__).resolve().parent.parent / "docs" / "metrics.md").read_text()
ANY = Search("any", frozenset())
FIGURES = {
    "vchat_sessions_online": "gauge",
    "vchat_sessions_kept": "gauge",
    "vchat_sessions_searching": "gauge",
    "vchat_sessions_matched": "gauge",
    "vchat_matches": "counter",
    "vchat_messages_relayed": "counter",
    "vchat_reports": "counter",
    "vchat_bans_active": "gauge",
    "vchat_moderation_actions": "counter",
    "vchat_queue_waiting": "gauge",
    "vchat_stun_up": "gauge",
    "vchat_stun_requests_answered": "counter",
    "vchat_stun_requests_dropped": "counter",
    "vchat_webhook_queue_length": "gauge",
    "vchat_webhook_dropped": "counter",
}
"""Every family of figures, by the name the parser gives it (a counter's without `_total`), and its type."""
PROCESS = {"vchat_process_cpu_seconds", "vchat_process_resident_memory_bytes", "vchat_process_open_fds"}
CLUSTER = {
    "vchat_cluster_nodes": "gauge",
    "vchat_cluster_sessions": "gauge",
    "vchat_cluster_redis_up": "gauge",
    "vchat_cluster_bus_messages": "counter",
}
"""The families only a node in cluster mode has."""


class Server:
    """A switchboard and moderation on a driven clock, and a metrics registry over their figures."""

    def __init__(self) -> None:
        self.engine = MatchingEngine()
        self.board = Switchboard(Clock(), self.engine, resume_grace=15.0)
        stores = StoreService(lambda: succeed(MemoryStore()), Clock(), on_failure=lambda: None)
        moderation = ModerationService(stores, self.board, Clock())
        stores.startService()
        moderation.startService()
        self.moderation = moderation
        self.registry = self.registry_with()

    def registry_with(self, cluster: ClusterSources | None = None) -> CollectorRegistry:
        """A registry of the server's figures: those of a node in cluster mode with `cluster`, or of a single
        node."""
        return metrics_registry(
            Figures(self.board, self.engine, self.moderation, lambda: None, cluster=cluster)
        )

    def join(self, gender: str) -> Session:
        return self.board.open(Hello(gender, None, {}, None), RecordingPeer(), country=None)

    def text(self) -> str:
        body, content_type = render_metrics(self.registry)
        assert content_type == CONTENT_TYPE_LATEST
        return body.decode()

    def samples(self) -> dict[str, list[Sample]]:
        """Each family's samples, as the parser reads them."""
        return {family.name: family.samples for family in text_string_to_metric_families(self.text())}

    def value(self, name: str, **labels: str) -> float:
        """The value of the one sample named `name` with exactly `labels`."""
        [value] = [
            s.value
            for family in self.samples().values()
            for s in family
            if s.name == name and s.labels == labels
        ]
        return value


def test_every_figure_parses_back_with_its_type_and_help() -> None:
    families = {family.name: family for family in text_string_to_metric_families(Server().text())}
    assert {name: families[name].type for name in FIGURES} == FIGURES
    assert set(families) >= PROCESS
    for family in families.values():
        assert family.name.startswith("vchat_")
        assert family.documentation
    assert {s.labels["type"] for s in families["vchat_messages_relayed"].samples} == {
        "signal",
        "chat",
        "typing",
    }
    assert {s.labels["action"] for s in families["vchat_moderation_actions"].samples} == {"flag", "ban"}
    assert len(families["vchat_queue_waiting"].samples) == 9
    assert not [name for name in families if name.startswith("vchat_cluster")]  # a single node: no cluster


def test_figures_move_as_sessions_come_match_and_go() -> None:
    server = Server()
    assert server.value("vchat_sessions_online") == 0
    a, b = server.join("f"), server.join("m")
    server.board.search(a, ANY)
    assert server.value("vchat_sessions_online") == server.value("vchat_sessions_kept") == 2
    assert server.value("vchat_sessions_searching") == 1
    assert server.value("vchat_queue_waiting", gender="f", want="any") == 1
    server.board.search(b, ANY)
    assert server.value("vchat_sessions_matched") == 2 and server.value("vchat_sessions_searching") == 0
    assert server.value("vchat_matches_total") == 1
    assert a.match is not None
    server.board.chat(a, a.match.match_id, "hello")
    assert server.value("vchat_messages_relayed_total", type="chat") == 1
    server.board.end(a)
    assert server.value("vchat_sessions_online") == 1 and server.value("vchat_sessions_matched") == 0
    server.board.end(b)
    assert server.value("vchat_sessions_online") == server.value("vchat_sessions_kept") == 0
    assert server.value("vchat_matches_total") == 1


def test_nothing_names_a_session_or_a_pair() -> None:
    server = Server()
    a, b = server.join("f"), server.join("m")
    server.board.search(a, ANY)
    server.board.search(b, ANY)
    assert a.match is not None
    text = server.text()
    for secret in (a.session_id, b.session_id, a.resume_token, b.resume_token, a.match.match_id):
        assert secret not in text
    labels = {key for family in server.samples().values() for s in family for key in s.labels}
    assert labels == {"type", "action", "gender", "want"}


def test_each_registry_is_its_own() -> None:
    first, second = Server(), Server()
    assert first.registry is not REGISTRY and first.registry is not second.registry
    assert not [family for family in REGISTRY.collect() if family.name.startswith("vchat_")]
    second.join("m")
    assert first.value("vchat_sessions_online") == 0 and second.value("vchat_sessions_online") == 1


def test_every_metric_is_documented() -> None:
    names = {s.name for family in Server().samples().values() for s in family}
    assert {name for name in names if f"`{name}`" not in DOCS} == set()


@pytest_twisted.ensureDeferred
async def test_a_node_in_a_cluster_has_the_cluster_s_figures(redis_url: str) -> None:
    server = Server()
    a, b = server.join("f"), server.join("m")
    server.board.search(a, ANY)
    server.board.search(b, ANY)
    async with (
        cluster_node(redis_url, "node-a", node_counts(server.board)) as node,
        cluster_node(redis_url, "node-b", lambda: NodeCounts(5, 1, 4)),
    ):
        server.registry = server.registry_with(node)
        await until(lambda: server.value("vchat_cluster_nodes") == 2)
        families = {family.name: family for family in text_string_to_metric_families(server.text())}
        assert {name: families[name].type for name in CLUSTER} == CLUSTER
        assert server.value("vchat_cluster_redis_up") == 1
        totals = {
            state: server.value("vchat_cluster_sessions", state=state)
            for state in ("online", "searching", "matched")
        }
        assert totals == {"online": 7, "searching": 1, "matched": 6}
        assert server.value("vchat_sessions_online") == 2  # this node's own
        outcomes = {s.labels["outcome"] for s in families["vchat_cluster_bus_messages"].samples}
        assert outcomes == {"sent", "received", "dropped", "malformed"}
        assert node.bus.send("node-b", {"type": "kick", "session": "s"})
        await until(lambda: server.value("vchat_cluster_bus_messages_total", outcome="sent") == 1)
        # No series per node, nor any session, resume token or match.
        assert a.match is not None
        text = server.text()
        for secret in ("node-a", "node-b", a.session_id, b.session_id, a.resume_token, a.match.match_id):
            assert secret not in text
        labels = {key for family in server.samples().values() for s in family for key in s.labels}
        assert labels == {"type", "action", "gender", "want", "state", "outcome"}
        names = {s.name for family in server.samples().values() for s in family}
        assert {name for name in names if f"`{name}`" not in DOCS} == set()
    # Stopped and disconnected: this node alone, without Redis.
    assert server.value("vchat_cluster_redis_up") == 0 and server.value("vchat_cluster_nodes") == 1
    assert server.value("vchat_cluster_sessions", state="online") == 2
