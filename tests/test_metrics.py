"""`/metrics`: the figures in Prometheus's text format, read back with prometheus_client's own parser."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from twisted.internet.defer import succeed
from twisted.internet.task import Clock

from vchat.admin.figures import Figures
from vchat.admin.metrics import metrics_registry, render_metrics
from vchat.matching import MatchingEngine
from vchat.moderation.service import ModerationService
from vchat.protocol.messages import Hello, Search
from vchat.protocol.session import Session
from vchat.protocol.switchboard import Switchboard
from vchat.store.memory import MemoryStore
from vchat.store.service import StoreService
from vchat.testing import RecordingPeer

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


class Server:
    """A switchboard and moderation on a driven clock, and a metrics registry over their figures."""

    def __init__(self) -> None:
        self.engine = MatchingEngine()
        self.board = Switchboard(Clock(), self.engine, resume_grace=15.0)
        stores = StoreService(lambda: succeed(MemoryStore()), Clock(), on_failure=lambda: None)
        moderation = ModerationService(stores, self.board, Clock())
        stores.startService()
        moderation.startService()
        self.registry = metrics_registry(Figures(self.board, self.engine, moderation, lambda: None))

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
