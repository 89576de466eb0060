"""Several real `twistd -n vchat --redis` processes as one cluster (docs/cluster.md), sharing a real
redis-server: matching and relay across nodes and codecs, no double match under a race, bans everywhere, a
killed node, a Redis restart, and the cluster's figures."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from cluster_processes import Cluster, Node, admin, redis_clients, running_cluster, stats
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults
from twisted.internet.task import deferLater

from vchat.store.redis_testing import free_port
from vchat.testing import OFFERED, Message, SignalingClient, connect, hello_message

pytestmark = pytest.mark.timeout(60)

PAYLOAD = {
    "type": "offer",
    "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n",
    "extra": [1, 2.5, True, None, {"k": "é"}],
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three nodes (n1, n2, n3) for the tests that leave them running; each test starts with no users."""
    # A short resume grace: a session a test's client left without a clean close ends soon, not 15 s later.
    shared = ("--max-connections-per-ip", "500", "--resume-grace", "2")
    with running_cluster(tmp_path_factory.mktemp("cluster"), 3, *shared) as running:
        yield running


@pytest.fixture
def own_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Three nodes of a test's own, to kill one or to stop Redis under them."""
    with running_cluster(tmp_path, 3) as running:
        yield running


async def sleep(seconds: float) -> None:
    """Let `seconds` pass without blocking the reactor."""
    await deferLater(reactor, seconds)


async def eventually(check: Callable[[], Any], timeout: float, what: str) -> None:
    """Await `check()` (a coroutine returning a truth value) every 0.1 s until it is true; fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        await sleep(0.1)


async def user(node: Node, codec: str = "json", **fields: object) -> tuple[SignalingClient, Message]:
    """A client of `node` that said hello with `fields`: (client, its welcome)."""
    client = await connect(reactor, node.url, OFFERED[codec])
    client.send(hello_message(**fields))
    return client, await client.expect("welcome")


async def search(client: SignalingClient, **fields: object) -> None:
    """Send `search` with `fields`; the reply must be `searching`."""
    client.send({"type": "search", **fields})
    await client.expect("searching")


async def matched(
    first: SignalingClient, second: SignalingClient, timeout: float = 5.0
) -> tuple[Message, Message]:
    """Both searched: their `matched`, checked to be one match with one offer and one answer."""
    ours, theirs = await first.expect("matched", timeout), await second.expect("matched", timeout)
    assert ours["match_id"] == theirs["match_id"]
    assert {ours["role"], theirs["role"]} == {"offer", "answer"}
    return ours, theirs


async def relays(sender: SignalingClient, receiver: SignalingClient, match_id: str) -> None:
    """What `sender` sends in the match reaches `receiver` unchanged: signal, chat and typing."""
    sent: list[Message] = [
        {"type": "signal", "match_id": match_id, "payload": PAYLOAD},
        {"type": "chat", "match_id": match_id, "text": "hi 👋 from another node"},
        {"type": "typing", "match_id": match_id},
    ]
    for message in sent:
        sender.send(message)
    for message in sent:
        got = await receiver.expect(message["type"])
        assert {key: got.get(key) for key in message} == message


async def close(clients: Iterable[SignalingClient]) -> None:
    """Close every client that is still open, and wait for each to be closed."""
    waiting = []
    for client in clients:
        if not client.closed.called:
            client.sendClose(1000)
        waiting.append(Deferred.fromCoroutine(client.wait_closed(10)))
    await gatherResults(waiting)


async def no_users(cluster: Cluster) -> None:
    """Wait until no node holds a session (a previous test's clients are gone)."""

    async def empty() -> bool:
        for node in cluster.nodes:
            sessions = (await stats(reactor, node))["sessions"]
            if sessions["kept"] or sessions["searching"]:
                return False
        return True

    await eventually(empty, 20, "every node is empty")


@pytest.mark.parametrize(("first", "second"), [("json", "msgpack"), ("msgpack", "json")])
@pytest_twisted.ensureDeferred
async def test_users_of_two_nodes_meet_and_talk_across_codecs(
    cluster: Cluster, first: str, second: str
) -> None:
    await no_users(cluster)
    n1, n2 = cluster.nodes[:2]
    woman, _ = await user(n1, first, gender="f", lang="de-AT")
    man, _ = await user(n2, second, gender="m")
    try:
        await search(woman, want="m")
        await search(man, want="f")
        hers, his = await matched(woman, man)
        assert hers["partner"]["gender"] == "m" and his["partner"] == {
            "gender": "f",
            "lang": "de-AT",
            "country": None,
        }
        match_id = hers["match_id"]
        await relays(woman, man, match_id)
        await relays(man, woman, match_id)
        man.send({"type": "next"})
        await man.expect("searching")
        assert await woman.expect("partner_left") == {
            "type": "partner_left",
            "match_id": match_id,
            "reason": "next",
        }
    finally:
        await close([woman, man])


async def race(nodes: list[Node], people: list[tuple[int, str, str]]) -> None:
    """`people` (node index, gender, want) connect and say hello; all search at once; everyone is matched,
    once, with one compatible partner, and the pairs' chats prove who is whose partner."""
    limit = DeferredSemaphore(40)  # a listening socket's backlog is 50

    async def arrive(number: int) -> tuple[SignalingClient, Message]:
        index, gender, _ = people[number]
        codec = ("json", "msgpack")[number % 2]
        return await limit.run(lambda: Deferred.fromCoroutine(user(nodes[index], codec, gender=gender)))

    arrived = await gatherResults([Deferred.fromCoroutine(arrive(number)) for number in range(len(people))])
    clients = [client for client, _ in arrived]
    try:
        ids = [welcome["session_id"] for _, welcome in arrived]
        for client, (_, _, want) in zip(clients, people, strict=True):
            client.send({"type": "search", "want": want})
        seen: list[list[Message]] = [[] for _ in clients]

        def take() -> int:
            for inbox, client in zip(seen, clients, strict=True):
                inbox.extend(client.inbox.pending)
                client.inbox.pending.clear()
            return sum(1 for inbox in seen for message in inbox if message["type"] == "matched")

        async def all_matched() -> bool:
            return take() >= len(clients)

        await eventually(all_matched, 15, "everyone matched")
        await sleep(1)  # time for a second, wrong, match to show
        take()
        by_match: dict[str, list[int]] = defaultdict(list)
        for number, inbox in enumerate(seen):
            kinds = [message["type"] for message in inbox]
            assert kinds == ["searching", "matched"], (number, inbox)
            by_match[inbox[1]["match_id"]].append(number)
        for match_id, pair in by_match.items():
            assert len(pair) == 2, (match_id, pair)
            one, other = (seen[number][1] for number in pair)
            assert {one["role"], other["role"]} == {"offer", "answer"}
            for me, partner in (pair, pair[::-1]):
                _, gender, want = people[me]
                assert seen[me][1]["partner"]["gender"] == people[partner][1]
                assert want in ("any", people[partner][1]) and people[partner][2] in ("any", gender)
        # Each tells its partner its own session id: the one that arrives names the partner of the match.
        for client, inbox, session_id in zip(clients, seen, ids, strict=True):
            client.send({"type": "chat", "match_id": inbox[1]["match_id"], "text": session_id})
        chats = [await client.expect("chat") for client in clients]
        for number, chat in enumerate(chats):
            pair = by_match[seen[number][1]["match_id"]]
            assert chat["text"] == ids[pair[1] if pair[0] == number else pair[0]], (number, pair)
    finally:
        await close(clients)


@pytest_twisted.ensureDeferred
async def test_a_race_of_searches_matches_nobody_twice(cluster: Cluster) -> None:
    await no_users(cluster)
    # 120 of gender "u" who want anyone, on every node (local and cross-node matches race); 40 women who want
    # men on n1 and n3, 40 men who want women on n2 and n3 (most of those pairs cross nodes).
    people = [(number % 3, "u", "any") for number in range(120)]
    people += [((0, 2)[number % 2], "f", "m") for number in range(40)]
    people += [((1, 2)[number % 2], "m", "f") for number in range(40)]
    order = sorted(range(len(people)), key=lambda number: (number * 7919) % len(people))  # mixed, fixed
    await race(cluster.nodes, [people[number] for number in order])


@pytest_twisted.ensureDeferred
async def test_a_ban_on_one_node_closes_the_user_on_another(cluster: Cluster) -> None:
    await no_users(cluster)
    n1, n2, n3 = cluster.nodes
    banned, welcome = await user(n2, "msgpack", gender="f")
    partner, _ = await user(n3, gender="m")
    device, _ = await user(n3, gender="u", client={"device_id": "cluster-test-device"})
    clients = [banned, partner, device]
    try:
        await search(banned, want="m")
        await search(partner, want="f")
        _, theirs = await matched(banned, partner)
        code, ban = await admin(
            reactor, n1, "POST", "/api/bans", {"user_id": welcome["session_id"], "reason": "test ban"}
        )
        assert code == 201, ban
        assert (await banned.expect("banned", 10))["reason"] == "test ban"
        assert (await banned.wait_closed(10))[1] == 4004
        assert await partner.expect("partner_left", 10) == {
            "type": "partner_left",
            "match_id": theirs["match_id"],
            "reason": "disconnect",
        }
        code, listed = await admin(reactor, n3, "GET", "/api/bans")
        assert code == 200 and ban["id"] in {item["id"] for item in listed["items"]}
        # A device ban through n2 closes the device on n3, and refuses it on n1 from then on.
        code, ban = await admin(
            reactor, n2, "POST", "/api/bans", {"device_id": "cluster-test-device", "reason": "device"}
        )
        assert code == 201, ban
        await device.expect("banned", 10)
        assert (await device.wait_closed(10))[1] == 4004
        again = await connect(reactor, n1.url, OFFERED["json"])
        clients.append(again)
        again.send(hello_message(id=7, client={"device_id": "cluster-test-device"}))
        assert (await again.expect("banned"))["re"] == 7
        assert (await again.wait_closed())[1] == 4004
    finally:
        await close(clients)


@pytest_twisted.ensureDeferred
async def test_the_cluster_counts_every_nodes_users(cluster: Cluster) -> None:
    await no_users(cluster)
    counts = {"n1": 3, "n2": 1, "n3": 2}
    clients = [(await user(node))[0] for node in cluster.nodes for _ in range(counts[node.node_id])]
    try:

        async def counted() -> bool:
            for node in cluster.nodes:
                figures = (await stats(reactor, node))["cluster"]
                nodes = {entry["node_id"]: entry["online"] for entry in figures["nodes"]}
                if nodes != counts or figures["totals"]["online"] != sum(counts.values()):
                    return False
            return True

        await eventually(counted, 5, f"every node counts {counts}")
        await close(clients[:1])
        counts["n1"] -= 1
        await eventually(counted, 5, f"every node counts {counts}")
        # `online` in welcome and searching counts the whole cluster too.
        last, welcome = await user(cluster.nodes[2])
        clients.append(last)
        assert welcome["online"] == sum(counts.values()) + 1
    finally:
        await close(clients)


@pytest_twisted.ensureDeferred
async def test_a_killed_nodes_partners_are_told(own_cluster: Cluster) -> None:
    n1, n2, n3 = own_cluster.nodes
    woman, _ = await user(n1, gender="f")
    man, _ = await user(n2, "msgpack", gender="m")
    clients = [woman, man]
    try:
        await search(woman, want="m")
        await search(man, want="f")
        hers, _ = await matched(woman, man)
        n2.kill()
        assert await woman.expect("partner_left", 10) == {
            "type": "partner_left",
            "match_id": hers["match_id"],
            "reason": "disconnect",
        }

        async def forgotten() -> bool:
            for node in (n1, n3):
                figures = (await stats(reactor, node))["cluster"]
                if {entry["node_id"] for entry in figures["nodes"]} != {"n1", "n3"}:
                    return False
            return True

        await eventually(forgotten, 5, "n2 is no node any more")
        # The cluster goes on: she meets a man of n3.
        other, _ = await user(n3, gender="m")
        clients.append(other)
        await search(woman, want="m")
        await search(other, want="f")
        hers, _ = await matched(woman, other)
        await relays(other, woman, hers["match_id"])
        assert n1.running() and n3.running()
    finally:
        await close(clients)


async def redis_back(cluster: Cluster, timeout: float) -> None:
    """Wait until every node reaches Redis again (heartbeat and bus) and sees every node."""
    ids = {node.node_id for node in cluster.nodes}

    async def back() -> bool:
        for node in cluster.nodes:
            figures = (await stats(reactor, node))["cluster"]
            if not figures["redis_up"] or {entry["node_id"] for entry in figures["nodes"]} != ids:
                return False
        return True

    await eventually(back, timeout, "every node has Redis again")


@pytest_twisted.ensureDeferred
async def test_nodes_serve_their_users_while_redis_is_away(own_cluster: Cluster) -> None:
    n1, n2, n3 = own_cluster.nodes
    clients: list[SignalingClient] = []
    try:
        own_cluster.redis.stop()
        # Two users of one node still meet; a woman of n1 and a man of n2 cannot.
        woman, _ = await user(n1, gender="f")
        man, _ = await user(n2, "msgpack", gender="m")
        first, _ = await user(n2, gender="u")
        second, _ = await user(n2, "msgpack", gender="u")
        clients += [woman, man, first, second]
        await search(woman, want="m")
        await search(man, want="f")
        await search(first)
        await search(second)
        ours, _ = await matched(first, second)
        await relays(first, second, ours["match_id"])
        await relays(second, first, ours["match_id"])
        assert not woman.inbox.pending and not man.inbox.pending
        await close([woman, man])
        assert own_cluster.redis.start()
        # Once the nodes have Redis again (txredisapi backs off up to 10 s), users of two nodes meet again.
        await redis_back(own_cluster, 15)
        third, _ = await user(n3, gender="m")
        fourth, _ = await user(n1, "msgpack", gender="f")
        clients += [third, fourth]
        await search(third, want="f")
        await search(fourth, want="m")
        theirs, _ = await matched(third, fourth)
        await relays(fourth, third, theirs["match_id"])
        await relays(third, fourth, theirs["match_id"])
        assert all(node.running() for node in own_cluster.nodes)
    finally:
        await close(clients)


@pytest_twisted.ensureDeferred
async def test_a_pair_the_matcher_cannot_announce_is_matched_again(own_cluster: Cluster) -> None:
    redis = own_cluster.redis
    holder = redis.command("GET", "vchat:{cluster}:matcher")
    matcher = next(node for node in own_cluster.nodes if node.node_id.encode() == holder)
    first, second = (node for node in own_cluster.nodes if node is not matcher)
    woman, _ = await user(first, gender="f")
    man, _ = await user(second, "msgpack", gender="m")
    try:
        # The matcher's node loses the connection its bus publishes on, not the one it claims pairs on; it
        # comes back by itself within about a second.
        publisher = [
            client
            for client in redis_clients(redis, matcher)
            if client["sub"] == "0" and client["cmd"] in ("auth", "publish")
        ]
        assert len(publisher) == 1, publisher
        redis.command("CLIENT", "KILL", "ID", publisher[0]["id"])
        await search(woman, want="m")
        await search(man, want="f")
        # Their entries come back to the shared queue within REFRESH_INTERVAL (10 s); they never met.
        await matched(woman, man, timeout=15)
    finally:
        await close([woman, man])


@pytest.fixture
def one_port(tmp_path: Path) -> Iterator[tuple[Cluster, str]]:
    """Two nodes sharing one listening port (`reuseport:`), as the processes of one machine do; and its URL."""
    port = free_port()
    shared = ("--ws", f"reuseport:{port}:interface=127.0.0.1", "--max-connections-per-ip", "500")
    with running_cluster(tmp_path, 2, *shared) as running:
        yield running, f"ws://127.0.0.1:{port}/ws"


@pytest_twisted.ensureDeferred
async def test_processes_sharing_one_port_are_one_service_and_resume_across_each_other(
    one_port: tuple[Cluster, str],
) -> None:
    _, url = one_port
    clients: list[SignalingClient] = []
    welcomes: list[Message] = []
    for _ in range(24):
        client = await connect(reactor, url, OFFERED["json"])
        client.send(hello_message(gender="u"))
        welcomes.append(await client.expect("welcome"))
        clients.append(client)
    homes = {welcome["resume_token"].rpartition("~")[2] for welcome in welcomes}
    assert homes == {"n1", "n2"}  # the kernel spread the connections over both processes
    for client in clients:
        await search(client)
    matches: dict[str, list[int]] = defaultdict(list)
    for index, client in enumerate(clients):
        matches[(await client.expect("matched", 10.0))["match_id"]].append(index)
    assert sorted(len(pair) for pair in matches.values()) == [2] * 12
    # Each user of a match drops its connection and resumes on whichever process the kernel picks: the
    # match goes on, across processes or not.
    for match_id, (first, second) in matches.items():
        clients[first].transport.abortConnection()
        await clients[second].expect("partner_reconnecting", 10.0)
        back = await connect(reactor, url, OFFERED["json"])
        back.send(hello_message(gender="u", resume=welcomes[first]["resume_token"]))
        resumed = await back.expect("welcome", 10.0)
        assert resumed["resumed"] is True and resumed["match"]["match_id"] == match_id
        assert (await clients[second].expect("partner_resumed", 10.0))["match_id"] == match_id
        back.send({"type": "chat", "match_id": match_id, "text": "still here"})
        assert (await clients[second].expect("chat", 10.0))["text"] == "still here"
        clients[first] = back
    for client in clients:
        client.sendClose(1000)
