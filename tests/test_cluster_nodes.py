"""Nodes of one cluster in this process (each a whole `twistd vchat` service tree with `--redis`), sharing a real
redis-server: cross-node matches, relay, partner events, bans, reports, fairness and what Redis keeps."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from vchat.cluster.matchmaker import FAIR_WAIT
from vchat.protocol.accounts import AccountView
from vchat.store import redis_testing
from vchat.store.account_testing import a_login
from vchat.store.records import Report
from vchat.store.redis_testing import RedisServer
from vchat.testing import RunningServer, SignalingClient, admin_request, start_server

own_redis = redis_testing.own_redis  # the fixture, by its name


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


@pytest_twisted.async_yield_fixture()
async def nodes(own_redis: RedisServer) -> AsyncIterator[list[RunningServer]]:
    """Three nodes, n1, n2 and n3, of one cluster."""
    started = [await start_server(reactor, "--redis", own_redis.url, "--node-id", f"n{i}") for i in (1, 2, 3)]
    try:
        for _ in range(500):  # the nodes join the cluster as they start: wait until every bus is up
            if all(node.service.getServiceNamed("cluster").bus.connected for node in started):
                break
            await sleep(0.01)
        yield started
    finally:
        for node in started:
            await node.stop()


async def search(client: SignalingClient, **filters: object) -> None:
    client.send({"type": "search", **filters})
    await client.expect("searching")


async def cross_pair(
    first: RunningServer, second: RunningServer, codecs: tuple[str, str] = ("json", "json")
) -> tuple[SignalingClient, SignalingClient, dict[str, Any], dict[str, Any]]:
    """A woman on `first` and a man on `second`, matched: (her, him, her `matched`, his)."""
    her = await first.client(codecs[0], hello=True, gender="f")
    him = await second.client(codecs[1], hello=True, gender="m")
    await search(her, want="m")
    await search(him, want="f")
    return her, him, await her.expect("matched"), await him.expect("matched")


def redis_text(server: RedisServer) -> bytes:
    """Every key and value in Redis (strings, hashes, sets, sorted sets), concatenated, for privacy checks."""
    reads: dict[bytes, tuple[str, ...]] = {
        b"string": ("GET",),
        b"hash": ("HGETALL",),
        b"set": ("SMEMBERS",),
        b"zset": ("ZRANGE", "0", "-1"),
        b"list": ("LRANGE", "0", "-1"),
    }
    dump = b""
    for key in server.command("KEYS", "*"):
        command, *rest = reads[server.command("TYPE", key)]
        value: Any = server.command(command, key, *rest)
        values = value if isinstance(value, list) else [value]
        dump += key + b"\n" + b"\n".join(v for v in values if isinstance(v, bytes)) + b"\n"
    return dump


@pytest.mark.parametrize("codecs", [("json", "msgpack"), ("msgpack", "json")])
@pytest_twisted.ensureDeferred
async def test_users_of_two_nodes_meet_and_talk_both_ways(
    nodes: list[RunningServer], codecs: tuple[str, str]
) -> None:
    her, him, hers, his = await cross_pair(nodes[0], nodes[1], codecs)
    match_id = hers["match_id"]
    assert his["match_id"] == match_id
    assert {hers["role"], his["role"]} == {"offer", "answer"}
    assert hers["partner"]["gender"] == "m" and his["partner"]["gender"] == "f"
    her.send({"type": "signal", "match_id": match_id, "payload": {"sdp": "v=0 offer"}})
    assert (await him.expect("signal"))["payload"] == {"sdp": "v=0 offer"}
    him.send({"type": "signal", "match_id": match_id, "payload": {"candidate": "c"}})
    him.send({"type": "chat", "match_id": match_id, "text": "hello from node 2"})
    him.send({"type": "typing", "match_id": match_id})
    assert (await her.expect("signal"))["payload"] == {"candidate": "c"}
    assert (await her.expect("chat"))["text"] == "hello from node 2"
    await her.expect("typing")
    her.send({"type": "next"})
    assert await him.expect("partner_left") == {
        "type": "partner_left",
        "match_id": match_id,
        "reason": "next",
    }
    await her.expect("searching")


@pytest_twisted.ensureDeferred
async def test_stop_and_a_closed_connection_reach_the_partner_on_the_other_node(
    nodes: list[RunningServer],
) -> None:
    her, him, hers, _ = await cross_pair(nodes[0], nodes[1])
    him.send({"type": "stop"})
    await him.expect("idle")
    assert (await her.expect("partner_left"))["reason"] == "stop"
    other = await nodes[1].client("json", hello=True, gender="m")  # they two are recent partners now
    await search(her, want="m")
    await search(other, want="f")
    again = await her.expect("matched")
    await other.expect("matched")
    her.sendClose(1000)
    assert await other.expect("partner_left") == {
        "type": "partner_left",
        "match_id": again["match_id"],
        "reason": "disconnect",
    }
    assert hers["match_id"] != again["match_id"]


@pytest_twisted.ensureDeferred
async def test_a_lost_connection_and_its_resume_reach_the_partner_on_the_other_node(
    nodes: list[RunningServer],
) -> None:
    her, him, hers, _ = await cross_pair(nodes[0], nodes[1])
    match_id = hers["match_id"]
    her.transport.abortConnection()  # no close frame: the session waits to be resumed
    assert await him.expect("partner_reconnecting") == {"type": "partner_reconnecting", "match_id": match_id}
    him.send({"type": "chat", "match_id": match_id, "text": "are you there?"})
    assert (await him.expect("error"))["code"] == "partner_reconnecting"


@pytest_twisted.ensureDeferred
async def test_resuming_on_the_same_node_tells_the_partner_on_the_other(nodes: list[RunningServer]) -> None:
    her = await nodes[0].client("json")
    welcome = await her.hello(gender="f")
    him = await nodes[1].client("json", hello=True, gender="m")
    await search(her, want="m")
    await search(him, want="f")
    match_id = (await her.expect("matched"))["match_id"]
    await him.expect("matched")
    her.transport.abortConnection()
    await him.expect("partner_reconnecting")
    back = await nodes[0].client("json")
    resumed = await back.hello(gender="f", resume=welcome["resume_token"])
    assert resumed["resumed"] is True and resumed["match"]["match_id"] == match_id
    assert await him.expect("partner_resumed") == {"type": "partner_resumed", "match_id": match_id}
    him.send({"type": "chat", "match_id": match_id, "text": "welcome back"})
    assert (await back.expect("chat"))["text"] == "welcome back"


@pytest_twisted.ensureDeferred
async def test_a_ban_issued_on_one_node_closes_the_user_on_the_other(nodes: list[RunningServer]) -> None:
    her, him, _, _ = await cross_pair(nodes[0], nodes[1])
    await nodes[0].moderation.ban("user_id", await _session_id_of(nodes[1], him), "spam", "spam", 3600.0)
    assert (await him.expect("banned"))["type"] == "banned"
    _, code, _ = await him.wait_closed()
    assert code == 4004
    assert (await her.expect("partner_left"))["reason"] == "disconnect"


async def _session_id_of(node: RunningServer, client: SignalingClient) -> str:
    """The session id of `client`, a client of `node` in a match (from the node's switchboard)."""
    board = node.service.getServiceNamed("signaling").factory.switchboard
    for session in board._sessions.values():
        if session.peer is not None and session.match is not None:
            return str(session.session_id)
    raise AssertionError("no matched session on the node")


@pytest_twisted.ensureDeferred
async def test_users_of_one_node_meet_on_the_local_path_and_redis_keeps_no_pair(
    nodes: list[RunningServer], own_redis: RedisServer
) -> None:
    her = await nodes[0].client("json", hello=True, gender="f")
    him = await nodes[0].client("msgpack", hello=True, gender="m")
    await search(her, want="m")
    await sleep(0.2)  # her entry is in the shared queue
    assert own_redis.command("ZCARD", "vchat:{cluster}:queue") == 1
    await search(him, want="f")
    match_id = (await her.expect("matched"))["match_id"]
    await him.expect("matched")
    her.send({"type": "chat", "match_id": match_id, "text": "a secret line"})
    await him.expect("chat")
    assert own_redis.command("ZCARD", "vchat:{cluster}:queue") == 0
    dump = redis_text(own_redis)
    assert b"a secret line" not in dump and match_id.encode() not in dump


@pytest_twisted.ensureDeferred
async def test_redis_never_holds_a_cross_node_pair_or_chat(
    nodes: list[RunningServer], own_redis: RedisServer
) -> None:
    her, him, hers, _ = await cross_pair(nodes[0], nodes[1])
    her.send({"type": "chat", "match_id": hers["match_id"], "text": "nobody stores this"})
    await him.expect("chat")
    dump = redis_text(own_redis)
    assert b"nobody stores this" not in dump
    assert hers["match_id"].encode() not in dump
    for node in nodes:
        board = node.service.getServiceNamed("signaling").factory.switchboard
        for session_id in board._sessions:
            assert session_id.encode() not in dump


@pytest_twisted.ensureDeferred
async def test_a_report_across_nodes_is_stored_and_the_pair_never_meets_again(
    nodes: list[RunningServer],
) -> None:
    her, him, hers, _ = await cross_pair(nodes[0], nodes[1])
    his_session = await _session_id_of(nodes[1], him)
    assert (await report_and_part(her, him, hers["match_id"], nodes[1])).reported_user_id == his_session


async def report_and_part(
    her: SignalingClient, him: SignalingClient, match_id: str, node: RunningServer
) -> Report:
    """She reports him in `match_id` and leaves; both search again and are not matched with each other. The
    report, as `node`'s store has it."""
    her.send({"type": "report", "match_id": match_id, "reason": "nudity"})
    report_id = (await her.expect("reported"))["report_id"]
    report = await (await node.store()).get_report(report_id)
    assert report is not None
    her.send({"type": "next"})
    await him.expect("partner_left")
    await her.expect("searching")
    await search(him, want="f")
    await sleep(0.5)
    assert her.inbox.pending == [] and him.inbox.pending == []  # waiting, not matched with each other
    return report


def matchers_blocking(nodes: list[RunningServer], session_id: str) -> list[bool]:
    """For each node, whether its matcher keeps `session_id` apart from anyone."""
    return [
        node.service.getServiceNamed("signaling").factory.switchboard.matchmaker.matcher._engine.has_blocks(
            session_id
        )
        for node in nodes
    ]


@pytest_twisted.ensureDeferred
async def test_a_reporters_blocks_leave_every_matcher_when_its_session_ends(
    nodes: list[RunningServer],
) -> None:
    her, him, hers, _ = await cross_pair(nodes[0], nodes[1])
    her_session = await _session_id_of(nodes[0], her)
    her.send({"type": "report", "match_id": hers["match_id"], "reason": "spam"})
    await her.expect("reported")
    for _ in range(100):
        if all(matchers_blocking(nodes, her_session)):
            break
        await sleep(0.02)
    assert matchers_blocking(nodes, her_session) == [True, True, True]
    her.sendClose(1000)  # she leaves for good: nobody needs keeping apart from her
    await him.expect("partner_left")
    for _ in range(100):
        if not any(matchers_blocking(nodes, her_session)):
            break
        await sleep(0.02)
    assert matchers_blocking(nodes, her_session) == [False, False, False]


@pytest_twisted.ensureDeferred
async def test_a_logged_in_user_reported_on_another_node_is_its_account(nodes: list[RunningServer]) -> None:
    """The report of a partner on another node names its account (what bans hold on), and the two sessions
    are kept apart, though the account's id is not the session's."""
    her = await nodes[0].client("json", hello=True, gender="f")
    him = await nodes[1].client("json")
    welcome = await him.hello(gender="m")
    session = nodes[1].service.getServiceNamed("signaling").factory.switchboard.find(welcome["session_id"])
    assert session is not None
    session.account = AccountView("account-of-him", "m", ("vk",))  # as his login cookie would give it
    await search(her, want="m")
    await search(him, want="f")
    hers = await her.expect("matched")
    await him.expect("matched")
    assert (await report_and_part(her, him, hers["match_id"], nodes[0])).reported_user_id == "account-of-him"


@pytest_twisted.ensureDeferred
async def test_any_nodes_admin_api_shows_and_kicks_a_session_of_another(nodes: list[RunningServer]) -> None:
    her, him, hers, _ = await cross_pair(nodes[0], nodes[1])
    his_session = await _session_id_of(nodes[1], him)
    shown = await admin_request(nodes[0], "GET", f"/api/sessions/{his_session}")
    assert shown.status == 200, shown.body
    view = shown.json()
    assert (view["id"], view["node"], view["gender"], view["state"]) == (his_session, "n2", "m", "matched")
    here = await admin_request(nodes[1], "GET", f"/api/sessions/{his_session}")
    assert here.json() == view  # the same view from the node that holds it
    kicked = await admin_request(nodes[2], "POST", f"/api/sessions/{his_session}/kick")
    assert (kicked.status, kicked.json()) == (200, {"kicked": True})
    assert (await him.expect("error"))["code"] == "kicked"
    assert (await him.wait_closed())[1] == 4005
    assert (await her.expect("partner_left"))["match_id"] == hers["match_id"]
    gone = await admin_request(nodes[0], "GET", f"/api/sessions/{his_session}")  # after 2 s of silence
    assert gone.status == 404 and gone.json()["error"]["code"] == "not_found"
    again = await admin_request(nodes[2], "POST", f"/api/sessions/{his_session}/kick")
    assert again.status == 404


@pytest_twisted.ensureDeferred
async def test_online_counts_every_node(nodes: list[RunningServer]) -> None:
    await nodes[0].client("json", hello=True)
    await nodes[1].client("json", hello=True)
    await sleep(2.2)  # a heartbeat of each node after both connected
    third = await nodes[1].client("json")
    assert (await third.hello())["online"] == 3


@pytest_twisted.ensureDeferred
async def test_a_user_waiting_long_on_a_quiet_node_is_not_starved_by_a_busy_one(
    nodes: list[RunningServer],
) -> None:
    quiet = await nodes[0].client("json", hello=True)
    await search(quiet)
    await sleep(FAIR_WAIT + 2.2)  # and two heartbeats (1 s), which tell the other nodes how long it waits
    busy = [await nodes[1].client("json", hello=True) for _ in range(2)]
    for client in busy:
        await search(client)
    matched = await quiet.expect("matched", timeout=3.0)
    assert matched["role"] == "offer"  # the longest-waiting user makes the offer


async def talk(one: SignalingClient, other: SignalingClient, match_id: str) -> None:
    """`chat` goes both ways between two matched clients."""
    one.send({"type": "chat", "match_id": match_id, "text": "ping"})
    assert (await other.expect("chat"))["text"] == "ping"
    other.send({"type": "chat", "match_id": match_id, "text": "pong"})
    assert (await one.expect("chat"))["text"] == "pong"


async def resume_elsewhere(
    client: SignalingClient, welcome: dict[str, Any], node: RunningServer, partner: SignalingClient | None
) -> tuple[SignalingClient, dict[str, Any]]:
    """Lose `client`'s connection without a close frame and resume its session on `node`."""
    client.transport.abortConnection()
    if partner is not None:
        await partner.expect("partner_reconnecting")
    back = await node.client("json")
    resumed = await back.hello(gender="f", resume=welcome["resume_token"])
    assert resumed["resumed"] is True and resumed["session_id"] == welcome["session_id"]
    return back, resumed


@pytest_twisted.ensureDeferred
async def test_a_reporter_resumed_on_the_reported_users_node_is_not_matched_with_him(
    nodes: list[RunningServer],
) -> None:
    """The pair a report keeps apart moves with the reporter's session: the node it resumes on does not match
    the two by itself."""
    her = await nodes[0].client("json")
    welcome = await her.hello(gender="f")
    him = await nodes[1].client("json", hello=True, gender="m")
    await search(her, want="m")
    await search(him, want="f")
    hers = await her.expect("matched")
    await him.expect("matched")
    her.send({"type": "report", "match_id": hers["match_id"], "reason": "spam"})
    await her.expect("reported")
    her.send({"type": "stop"})
    await him.expect("partner_left")
    await her.expect("idle")
    back, _ = await resume_elsewhere(her, welcome, nodes[1], None)  # his node
    await search(back, want="m")
    await search(him, want="f")
    await sleep(0.5)
    assert back.inbox.pending == [] and him.inbox.pending == []  # both waiting, on one node, not matched


@pytest.mark.parametrize(
    "homes",
    [(0, 1, 1), (0, 0, 1), (0, 1, 2)],
    ids=["to-the-partners-node", "away-from-the-partners-node", "to-a-third-node"],
)
@pytest_twisted.ensureDeferred
async def test_a_session_resumes_on_another_node_with_its_match(
    nodes: list[RunningServer], homes: tuple[int, int, int]
) -> None:
    """She starts on one node, he on another (or the same); she resumes on a third (or his)."""
    her = await nodes[homes[0]].client("json")
    welcome = await her.hello(gender="f")
    him = await nodes[homes[1]].client("msgpack", hello=True, gender="m")
    await search(her, want="m")
    await search(him, want="f")
    match_id = (await her.expect("matched"))["match_id"]
    await him.expect("matched")
    back, resumed = await resume_elsewhere(her, welcome, nodes[homes[2]], him)
    assert resumed["match"]["match_id"] == match_id and resumed["match"]["partner"]["gender"] == "m"
    assert await him.expect("partner_resumed") == {"type": "partner_resumed", "match_id": match_id}
    await talk(back, him, match_id)
    back.send({"type": "next"})
    assert (await him.expect("partner_left"))["reason"] == "next"
    again, _ = await resume_elsewhere(
        back, {**welcome, "resume_token": resumed["resume_token"]}, nodes[homes[0]], None
    )
    assert again is not back


@pytest_twisted.ensureDeferred
async def test_an_idle_session_resumes_on_another_node_and_an_unknown_token_starts_afresh(
    nodes: list[RunningServer],
) -> None:
    her = await nodes[0].client("json")
    welcome = await her.hello(gender="f")
    assert welcome["resume_token"].endswith("~n1")
    back, resumed = await resume_elsewhere(her, welcome, nodes[1], None)
    assert resumed["match"] is None and resumed["resume_token"].endswith("~n2")
    stranger = await nodes[2].client("json")
    fresh = await stranger.hello(gender="f", resume="not-a-token~n1")
    assert fresh["resumed"] is False and fresh["session_id"] != welcome["session_id"]
    lost = await nodes[2].client("json")
    gone = await lost.hello(gender="f", resume="x~no-such-node")  # nobody answers: a new session, in time
    assert gone["resumed"] is False
    await talk_alone(back)


async def talk_alone(client: SignalingClient) -> None:
    """The client's session works: a ping gets a pong."""
    client.send({"type": "ping"})
    await client.expect("pong")


@pytest_twisted.ensureDeferred
async def test_an_account_deleted_through_one_node_ends_its_sessions_on_another(
    nodes: list[RunningServer],
) -> None:
    store = await nodes[0].store()
    account = await store.log_in(a_login())
    member = await nodes[1].client("json")
    welcome = await member.hello(gender="f")
    board = nodes[1].service.getServiceNamed("signaling").factory.switchboard
    session = board.find(welcome["session_id"])
    assert session is not None
    session.account = AccountView(account.account_id, "f", ("facebook",))  # as its login cookie would give it
    deleted = await admin_request(nodes[0], "POST", f"/api/accounts/{account.account_id}/delete")
    assert deleted.status == 200
    assert (await member.expect("error"))["code"] == "account_deleted"
    assert (await member.wait_closed())[1] == 4010
