"""The signaling WebSocket endpoint: every message, error and close code, in memory on a driven clock; and end
to end over real loopback sockets, what memory cannot show."""

from __future__ import annotations

from ipaddress import ip_network

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock, deferLater
from twisted.logger import capturedLogs
from zope.interface import implementer
from zope.interface.verify import verifyObject

from vchat.geo import ICountryLookup
from vchat.ice import IcePolicy
from vchat.matching import MatchingEngine
from vchat.protocol.accounts import AccountView, IAccountLookup
from vchat.protocol.bans import BanNotice, IBanCheck
from vchat.protocol.codec import JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL, encode_json, encode_msgpack
from vchat.protocol.session import IPeer
from vchat.protocol.switchboard import Switchboard
from vchat.protocol.websocket import ConnectionLimits, SignalingFactory
from vchat.store.interface import StoreError
from vchat.testing import OFFERED, MemoryClient, MemoryServer, RunningServer, hello_message, start_server

HELLO = hello_message(gender="m", lang="en-US", client={"os": "Linux"})
PAYLOAD = {
    "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n",
    "type": "offer",
    "n": [1, 2.5, None, True, {"x": -3}],
}


@pytest.fixture
def memory() -> MemoryServer:
    """The signaling endpoint with default limits, in memory."""
    return MemoryServer()


def close_code(client: MemoryClient) -> int | None:
    """The code `client` was closed with; fails if it is still open."""
    assert client.closed is not None, "the connection is still open"
    return client.closed[1]


def assert_refused(client: MemoryClient, code: str, rid: object = None) -> None:
    """The next message is an `error` with `code`, carrying `rid` back as `re` if it is not None."""
    error = client.expect("error")
    assert error["code"] == code and error["message"]
    assert error.get("re") == rid and ("re" in error) == (rid is not None)


def explode(*args: object) -> None:
    """A switchboard method with a bug."""
    raise RuntimeError("a bug in the switchboard")


# --- hello and welcome ---------------------------------------------------------------------------------


def test_hello_gets_welcome(memory: MemoryServer) -> None:
    client = memory.client()
    client.send({**HELLO, "id": 7})
    welcome = client.expect("welcome")
    assert set(welcome) == {
        "type", "session_id", "country", "ice_servers", "ice_transport_policy", "resume_token", "online",
        "resumed", "match", "account",
    }  # fmt: skip
    assert welcome["country"] is None and welcome["account"] is None
    assert welcome["ice_transport_policy"] == "all"
    assert welcome["ice_servers"] == []
    assert welcome["online"] == 1
    assert welcome["resumed"] is False and welcome["match"] is None
    assert len(welcome["resume_token"]) >= 32


def test_welcome_carries_turn_credentials() -> None:
    policy = IcePolicy(turn_urls=("turn:turn.example:3478",), turn_secret="s", relay_only=True)
    welcome = MemoryServer(ice=policy).client().hello()
    turn = welcome["ice_servers"][-1]
    assert turn["urls"] == ["turn:turn.example:3478"]
    assert turn["username"].endswith(":" + welcome["session_id"]) and turn["credential"]
    assert welcome["ice_transport_policy"] == "relay"


def test_the_signaling_protocol_provides_ipeer(memory: MemoryServer) -> None:
    verifyObject(IPeer, memory.client().peer)


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        ([JSON_SUBPROTOCOL], JSON_SUBPROTOCOL),
        ([MSGPACK_SUBPROTOCOL], MSGPACK_SUBPROTOCOL),
        ([], None),
        (["chat.superchat"], None),
    ],
)
def test_subprotocols(memory: MemoryServer, offered: list[str], chosen: str | None) -> None:
    client = memory.connect(offered)
    assert client.protocol.websocket_protocol_in_use == chosen
    client.hello()


def test_wrong_path_is_refused(memory: MemoryServer) -> None:
    with pytest.raises(ConnectionError):
        memory.connect([JSON_SUBPROTOCOL], path="/other")


@pytest.mark.parametrize("first", [{"type": "search", "want": "any"}, {"type": "ping"}, {"type": "nonsense"}])
def test_hello_required_first(memory: MemoryServer, first: dict) -> None:
    client = memory.client()
    client.send({**first, "id": "x1"})
    assert_refused(client, "hello_required", "x1")
    assert close_code(client) == 4001


@pytest.mark.parametrize("age", [None, False, "true", 1])
def test_age_required(memory: MemoryServer, age: object) -> None:
    client = memory.client()
    client.send({**HELLO, "age_confirmed": age} if age is not None else {"type": "hello", "gender": "m"})
    assert_refused(client, "age_required")
    assert close_code(client) == 4002


def test_hello_timeout_closes_with_4001() -> None:
    memory = MemoryServer(ConnectionLimits(hello_timeout=3))
    client = memory.client()
    memory.advance(2.9)
    assert client.received() == [] and client.closed is None
    memory.advance(0.1)
    assert_refused(client, "hello_required")
    assert close_code(client) == 4001


def test_hello_in_time_stops_the_hello_timeout() -> None:
    memory = MemoryServer(ConnectionLimits(hello_timeout=3))
    client = memory.client()
    memory.advance(2.9)
    client.hello()
    memory.advance(60)
    assert client.received() == [] and client.closed is None


def test_second_hello_is_bad(memory: MemoryServer) -> None:
    client = memory.client(hello=True)
    client.send({**HELLO, "id": 2})
    assert_refused(client, "bad_message", 2)
    client.send({"type": "ping", "id": 3})
    assert client.expect("pong")["re"] == 3


def test_ping_pong(memory: MemoryServer) -> None:
    client = memory.client(hello=True)
    client.send({"type": "ping", "id": "abc"})
    assert client.expect("pong") == {"type": "pong", "online": 1, "re": "abc"}
    other = memory.client(hello=True)
    client.send({"type": "ping"})
    assert client.expect("pong") == {"type": "pong", "online": 2}
    other.close()
    client.send({"type": "ping"})
    assert client.expect("pong")["online"] == 1


# --- matching and relaying -----------------------------------------------------------------------------


@pytest.mark.parametrize(("first", "second"), [("json", "json"), ("msgpack", "msgpack"), ("json", "msgpack")])
def test_match_and_relay(memory: MemoryServer, first: str, second: str) -> None:
    a, b, matched_a, matched_b = memory.matched_pair(first, second)
    assert matched_a["match_id"] == matched_b["match_id"]
    assert (matched_a["role"], matched_b["role"]) == ("offer", "answer")
    assert matched_a["partner"] == {"country": None, "gender": "m", "lang": None}
    assert matched_b["partner"] == {"country": None, "gender": "f", "lang": None}
    match_id = matched_a["match_id"]
    a.send({"type": "signal", "match_id": match_id, "payload": PAYLOAD})
    assert b.received() == [{"type": "signal", "match_id": match_id, "payload": PAYLOAD}]
    b.send({"type": "chat", "match_id": match_id, "text": "привет 👋"})
    assert a.received() == [{"type": "chat", "match_id": match_id, "text": "привет 👋"}]
    a.send({"type": "typing", "match_id": match_id})
    assert b.received() == [{"type": "typing", "match_id": match_id}]
    assert a.received() == []


def test_next_requeues_and_tells_partner(memory: MemoryServer) -> None:
    a, b, matched, _ = memory.matched_pair()
    match_id = matched["match_id"]
    a.send({"type": "next", "id": 1})
    assert b.received() == [{"type": "partner_left", "match_id": match_id, "reason": "next"}]
    assert a.received() == [{"type": "searching", "online": 2}]
    # the old match is gone: relaying into it is a no_match error
    b.send({"type": "chat", "match_id": match_id, "text": "still there?", "id": "c"})
    assert_refused(b, "no_match", "c")
    # the partner just left is a recent partner: searching again does not pair them
    b.send({"type": "search", "want": "any"})
    assert b.received() == [{"type": "searching", "online": 2}] and a.received() == []
    # a third user gets matched with the one waiting longest
    c = memory.client(hello=True)
    c.send({"type": "search"})
    c.expect("searching")
    assert c.expect("matched")["role"] == "answer"
    assert a.expect("matched")["role"] == "offer"


def test_stop_goes_idle(memory: MemoryServer) -> None:
    a, b, matched, _ = memory.matched_pair()
    b.send({"type": "stop"})
    assert a.received() == [{"type": "partner_left", "match_id": matched["match_id"], "reason": "stop"}]
    assert b.received() == [{"type": "idle"}]
    a.send({"type": "search", "want": "f"})
    a.send({"type": "stop"})
    assert a.received() == [{"type": "searching", "online": 2}, {"type": "idle"}]


def test_in_match_and_no_match(memory: MemoryServer) -> None:
    a, _, _, _ = memory.matched_pair()
    a.send({"type": "search", "want": "any", "id": 1})
    assert_refused(a, "in_match", 1)
    a.send({"type": "signal", "match_id": "nope", "payload": {}, "id": 2})
    assert_refused(a, "no_match", 2)


def test_clean_close_tells_partner_at_once(memory: MemoryServer) -> None:
    a, b, matched, _ = memory.matched_pair()
    a.close()
    assert b.received() == [{"type": "partner_left", "match_id": matched["match_id"], "reason": "disconnect"}]
    assert memory.switchboard.sessions == 1


def test_shutdown_closes_every_connection_with_4000(memory: MemoryServer) -> None:
    a, b, _, _ = memory.matched_pair()
    memory.switchboard.shutdown()
    memory.flush()
    assert close_code(a) == close_code(b) == 4000


def test_misbehaving_client_does_not_affect_others(memory: MemoryServer) -> None:
    a, b, matched, _ = memory.matched_pair()
    rogue = memory.client(hello=True)
    for frame in (
        b"not json",
        b"{}",
        b'{"type":"signal","match_id":"' + matched["match_id"].encode() + b'","payload":1}',
    ):
        rogue.send_frame(frame)
    assert [error["code"] for error in rogue.received()] == ["bad_message", "bad_message", "no_match"]
    a.send({"type": "chat", "match_id": matched["match_id"], "text": "fine"})
    assert [message["text"] for message in b.received()] == ["fine"]


# --- bad input and limits ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"{not json", "bad_message"),
        (b"[1, 2]", "bad_message"),
        (b'{"type": 5}', "bad_message"),
        (b'{"type": "search", "want": "everyone"}', "bad_message"),
        (b'{"type": "search", "countries": ["Germany"]}', "bad_message"),
        (b'{"type": "search", "countries": "DE"}', "bad_message"),
        (b'{"type": "signal", "payload": 1}', "bad_message"),
        (b'{"type": "signal", "match_id": "m"}', "bad_message"),
        (b'{"type": "chat", "match_id": "m", "text": 5}', "bad_message"),
        (b'{"type": "typing"}', "bad_message"),
        (b'{"type": "ping", "id": [1]}', "bad_message"),
        (b'{"type": "ping", "x": NaN}', "bad_message"),
        (b'{"type": "ping", "x": 1e999}', "bad_message"),
        (b'{"type": "ping", "x": 99999999999999999999999}', "bad_message"),
        (b'{"type": "ping", "x": "\\ud800"}', "bad_message"),
        (b"[" * 5000 + b"]" * 5000, "bad_message"),
        (b'{"type": "dance"}', "unknown_type"),
        (b'{"type": "chat", "match_id": "m", "text": "' + b"a" * 1001 + b'"}', "too_long"),
    ],
)
def test_bad_frames_are_errors_not_crashes(memory: MemoryServer, frame: bytes, code: str) -> None:
    client = memory.client(hello=True)
    client.send_frame(frame)
    assert_refused(client, code)
    client.send({"type": "ping", "id": 1})
    assert client.expect("pong")["re"] == 1


@pytest.mark.parametrize(
    "frame",
    [
        b"\xc1",
        b"\x93\x01\x02\x03",
        encode_msgpack({"type": "ping", "x": b"bytes"}),
        encode_msgpack({1: 2}),
        b"\x91" * 3000,
    ],
)
def test_bad_msgpack_frames(memory: MemoryServer, frame: bytes) -> None:
    client = memory.client("msgpack", hello=True)
    client.send_frame(frame, binary=True)
    assert_refused(client, "bad_message")


def test_request_id_comes_back_on_errors(memory: MemoryServer) -> None:
    client = memory.client(hello=True)
    client.send_frame(encode_json({"type": "search", "want": 3, "id": "q"}))
    assert_refused(client, "bad_message", "q")


@pytest.mark.parametrize("codec", ["json", "msgpack"])
@pytest.mark.parametrize("value", [["f"], {"f": True}], ids=["list", "map"])
@pytest.mark.parametrize(("kind", "field"), [("hello", "gender"), ("search", "want")])
def test_a_list_or_map_for_a_choice_is_a_bad_message(
    codec: str, value: object, kind: str, field: str
) -> None:
    memory = MemoryServer(ConnectionLimits(max_bad_messages=2))
    client = memory.client(codec, hello=kind != "hello")
    message = hello_message() if kind == "hello" else {"type": "search"}
    client.send({**message, field: value})
    assert_refused(client, "bad_message")
    for rid in (1, 2):  # the third strike within a minute closes
        client.send({**message, field: value, "id": rid})
        assert_refused(client, "bad_message", rid)
    assert close_code(client) == 4008


@pytest.mark.parametrize("codec", ["json", "msgpack"])
def test_a_bug_in_a_handler_is_a_bad_message_and_a_strike(
    codec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory = MemoryServer(ConnectionLimits(max_bad_messages=2))
    monkeypatch.setattr(memory.switchboard, "search", explode)
    client = memory.client(codec, hello=True)
    for rid in range(3):
        client.send({"type": "search", "id": rid})
        assert_refused(client, "bad_message", rid)
    assert close_code(client) == 4008


@pytest.mark.parametrize("codec", ["json", "msgpack"])
def test_a_bug_a_client_can_trigger_logs_within_a_budget(codec: str, monkeypatch: pytest.MonkeyPatch) -> None:
    memory = MemoryServer(ConnectionLimits(max_bad_messages=1000))
    monkeypatch.setattr(memory.switchboard, "search", explode)
    client = memory.client(codec, hello=True)
    with capturedLogs() as events:
        for _ in range(25):
            client.send({"type": "search"})
    assert [error["code"] for error in client.received()] == ["bad_message"] * 25
    tracebacks = [event["log_failure"] for event in events if "log_failure" in event]
    assert len(tracebacks) == 10  # ThrottledFailureLog's default burst
    assert all(failure.check(RuntimeError) for failure in tracebacks)
    assert memory.factory.failures.suppressed == 15


def test_too_many_bad_messages_close_4008(memory: MemoryServer) -> None:
    client = memory.client(hello=True)
    for _ in range(11):
        client.send_frame(b"garbage")
    assert [error["code"] for error in client.received()] == ["bad_message"] * 11
    assert close_code(client) == 4008


def test_bad_messages_count_within_a_minute(memory: MemoryServer) -> None:
    client = memory.client(hello=True)
    for _ in range(10):
        client.send_frame(b"garbage")
    memory.advance(60)
    for _ in range(10):
        client.send_frame(b"garbage")
    assert client.closed is None
    client.send_frame(b"garbage")
    assert close_code(client) == 4008


def test_oversized_frame_closes_1009(memory: MemoryServer) -> None:
    client = memory.client(hello=True)
    client.send({"type": "chat", "match_id": "m", "text": "x" * 70000})
    assert close_code(client) == 1009


def test_rate_limit() -> None:
    memory = MemoryServer(ConnectionLimits(message_rate=1, message_burst=3, max_bad_messages=100))
    client = memory.client(hello=True)  # the hello is the first of the burst
    for i in range(5):
        client.send({"type": "ping", "id": i})
    replies = client.received()
    assert [reply["type"] for reply in replies] == ["pong", "pong", "error", "error", "error"]
    assert {reply.get("code") for reply in replies[2:]} == {"rate_limited"}
    memory.advance(1)
    client.send({"type": "ping", "id": 5})
    assert client.expect("pong")["re"] == 5


def test_connections_per_address_are_capped_with_429() -> None:
    memory = MemoryServer(ConnectionLimits(max_connections_per_address=3))
    held = [memory.connect(OFFERED["json"], address="198.51.100.7") for _ in range(3)]
    with pytest.raises(ConnectionError, match="429"):
        memory.connect(OFFERED["json"], address="198.51.100.7")
    memory.connect(OFFERED["json"], address="198.51.100.8")  # another address has its own places
    held[0].close()
    memory.connect(OFFERED["json"], address="198.51.100.7")  # closing frees a place at once
    held[1].drop()
    memory.connect(OFFERED["json"], address="198.51.100.7")  # and so does a lost connection


def test_ipv6_connections_are_counted_per_64() -> None:
    memory = MemoryServer(ConnectionLimits(max_connections_per_address=2))
    memory.connect(OFFERED["json"], address="2001:db8:0:1::1")
    memory.connect(OFFERED["json"], address="2001:db8:0:1::2")
    with pytest.raises(ConnectionError, match="429"):
        memory.connect(OFFERED["json"], address="2001:db8:0:1:ffff::3")
    memory.connect(OFFERED["json"], address="2001:db8:0:2::1")


def test_behind_a_trusted_proxy_the_forwarded_client_is_counted() -> None:
    memory = MemoryServer(
        ConnectionLimits(max_connections_per_address=1), trusted_proxies=(ip_network("10.0.0.0/8"),)
    )
    memory.connect(OFFERED["json"], address="10.0.0.2", headers={"X-Forwarded-For": "203.0.113.1"})
    memory.connect(OFFERED["json"], address="10.0.0.2", headers={"X-Forwarded-For": "203.0.113.2"})
    with pytest.raises(ConnectionError, match="429"):
        memory.connect(OFFERED["json"], address="10.0.0.2", headers={"X-Forwarded-For": "203.0.113.1"})
    # Anyone else's X-Forwarded-For is a claim, not an address: the peer itself is counted.
    memory.connect(OFFERED["json"], address="198.51.100.9", headers={"X-Forwarded-For": "203.0.113.3"})
    with pytest.raises(ConnectionError, match="429"):
        memory.connect(OFFERED["json"], address="198.51.100.9", headers={"X-Forwarded-For": "203.0.113.4"})


@implementer(ICountryLookup)
class EveryoneInBrazil:
    """A country database that places every address in Brazil."""

    def country_of(self, address: str) -> str | None:
        return "BR"


@pytest.mark.parametrize(
    ("peer", "header", "country"),
    [
        ("10.0.0.2", "de", "DE"),  # a trusted proxy (Cloudflare) vouches for the country
        ("10.0.0.2", "XX", "BR"),  # it does not know: the database decides
        ("10.0.0.2", None, "BR"),
        ("198.51.100.9", "DE", "BR"),  # anyone else's CF-IPCountry is ignored
    ],
)
def test_cf_ipcountry_only_from_a_trusted_proxy(peer: str, header: str | None, country: str) -> None:
    memory = MemoryServer(countries=EveryoneInBrazil(), trusted_proxies=(ip_network("10.0.0.0/8"),))
    client = memory.connect(
        OFFERED["json"], address=peer, headers={"CF-IPCountry": header} if header else None
    )
    assert client.hello()["country"] == country


# --- lost connections, resume and heartbeat ------------------------------------------------------------


def test_relay_while_partner_reconnecting(memory: MemoryServer) -> None:
    a, b, matched, _ = memory.matched_pair()
    b.drop()
    assert a.received() == [{"type": "partner_reconnecting", "match_id": matched["match_id"]}]
    a.send({"type": "chat", "match_id": matched["match_id"], "text": "hello?"})
    assert_refused(a, "partner_reconnecting")


def test_resume_keeps_session_and_match(memory: MemoryServer) -> None:
    a = memory.client()
    welcome_a = a.hello(gender="f")
    b = memory.client(hello=True)
    for client in (a, b):
        client.send({"type": "search"})
        client.expect("searching")
    matched = a.expect("matched")
    b.expect("matched")
    a.drop()
    assert b.received() == [{"type": "partner_reconnecting", "match_id": matched["match_id"]}]
    a2 = memory.client()
    welcome = a2.hello(resume=welcome_a["resume_token"])
    assert welcome["session_id"] == welcome_a["session_id"]
    assert welcome["resumed"] is True
    assert welcome["match"] == {key: matched[key] for key in ("match_id", "role", "partner")}
    assert welcome["resume_token"] != welcome_a["resume_token"]
    assert b.received() == [{"type": "partner_resumed", "match_id": matched["match_id"]}]
    b.send({"type": "chat", "match_id": matched["match_id"], "text": "welcome back"})
    assert a2.expect("chat")["text"] == "welcome back"
    # the token was single-use: using it again starts a fresh session
    fresh = memory.client().hello(resume=welcome_a["resume_token"])
    assert fresh["resumed"] is False and fresh["session_id"] != welcome_a["session_id"]


def test_resume_replaces_a_half_open_connection(memory: MemoryServer) -> None:
    a = memory.client()
    welcome_a = a.hello()
    a2 = memory.client()
    welcome = a2.hello(resume=welcome_a["resume_token"])
    assert welcome["session_id"] == welcome_a["session_id"] and welcome["resumed"] is True
    assert close_code(a) == 4003
    a2.send({"type": "ping", "id": 1})
    assert a2.expect("pong")["re"] == 1


def test_foreign_token_starts_fresh(memory: MemoryServer) -> None:
    assert memory.client().hello(resume="not-a-token")["resumed"] is False


def test_grace_window_expiry_tells_partner() -> None:
    memory = MemoryServer(resume_grace=5)
    a, b, matched, _ = memory.matched_pair()
    a.drop()
    b.expect("partner_reconnecting")
    memory.advance(4.9)
    assert b.received() == [] and memory.switchboard.sessions == 2
    memory.advance(0.1)
    assert b.received() == [{"type": "partner_left", "match_id": matched["match_id"], "reason": "disconnect"}]
    assert memory.switchboard.sessions == 1


def test_heartbeat_detects_dead_peer() -> None:
    memory = MemoryServer(ConnectionLimits(heartbeat_interval=25, heartbeat_timeout=10))
    a, b, matched, _ = memory.matched_pair()
    a.cut()  # like a phone that changed network: nothing arrives either way, and no close
    memory.advance(34.9)  # the ping went out at 25 s
    assert b.received() == []
    memory.advance(0.1)
    assert b.received() == [{"type": "partner_reconnecting", "match_id": matched["match_id"]}]


def test_heartbeat_keeps_live_connections() -> None:
    memory = MemoryServer(ConnectionLimits(heartbeat_interval=25, heartbeat_timeout=10))
    a, b, _, _ = memory.matched_pair()
    memory.advance(10 * 25)
    assert a.received() == b.received() == [] and a.closed is None and b.closed is None
    assert memory.switchboard.online == 2


def test_autobahn_timers_run_on_the_factory_clock() -> None:
    clock = Clock()
    factory = SignalingFactory(Switchboard(clock, MatchingEngine(), 15.0), ConnectionLimits(), clock)
    fired: list[bool] = []
    factory._batched_timer.call_later(1.0, fired.append, True)
    clock.advance(1.0)
    assert fired


# --- end to end over loopback --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_match_relay_and_loss_over_loopback(server: RunningServer) -> None:
    a, b, matched, _ = await server.matched_pair("json", "msgpack")
    match_id = matched["match_id"]
    a.send({"type": "signal", "match_id": match_id, "payload": PAYLOAD})
    assert await b.expect("signal") == {"type": "signal", "match_id": match_id, "payload": PAYLOAD}
    b.send({"type": "chat", "match_id": match_id, "text": "привет 👋"})
    assert (await a.expect("chat"))["text"] == "привет 👋"
    b.transport.abortConnection()
    assert await a.expect("partner_reconnecting") == {"type": "partner_reconnecting", "match_id": match_id}


@pytest_twisted.ensureDeferred
async def test_a_client_that_does_not_read_is_dropped_not_buffered() -> None:
    server = await start_server(reactor,
        "--message-rate", "10000", "--message-burst", "10000", "--max-backlog-bytes", "65536", "--resume-grace", "5"
    )  # fmt: skip
    try:
        a, b, matched, _ = await server.matched_pair()
        b.transport.pauseProducing()  # b stops reading; the kernel's buffers fill, then the server's
        blob = "x" * 60000
        for _ in range(600):
            a.send({"type": "signal", "match_id": matched["match_id"], "payload": blob})
            if not a.inbox.pending:
                await deferLater(reactor, 0)
            else:
                break
        notice = await a.expect("partner_reconnecting", timeout=10)
        assert notice["match_id"] == matched["match_id"]
    finally:
        await server.stop()


@implementer(IBanCheck)
class BrokenBanCheck:
    """A ban check with a bug."""

    def check(self, user_id: str | None, ip: str | None, device_id: str | None) -> BanNotice | None:
        raise RuntimeError("a bug in the ban check")


def test_a_broken_ban_check_lets_clients_in_and_is_logged() -> None:
    memory = MemoryServer(bans=BrokenBanCheck())
    with capturedLogs() as events:
        for _ in range(3):
            assert memory.client().hello()["type"] == "welcome"
    assert [event["what"] for event in events if event.get("what")] == ["checking bans"] * 3


@implementer(IAccountLookup)
class Accounts:
    """Finds the one account whose cookie is "good"; fails for "broken" (as a store away would)."""

    cookie_name = "vchat_login"

    def account_of(self, cookie: str | None) -> Deferred[AccountView | None]:
        if cookie == "broken":
            return fail(StoreError("the store is away"))
        return succeed(AccountView("acc-1", "m", ("vk",)) if cookie == "good" else None)


@pytest.mark.parametrize(("cookie", "account"), [("good", "acc-1"), ("forged", None), ("broken", None)])
def test_a_login_cookie_gives_the_session_its_account_or_none(cookie: str, account: str | None) -> None:
    memory = MemoryServer()
    memory.factory.accounts = Accounts()
    client = memory.connect(OFFERED["json"], headers={"Cookie": f"theme=dark; vchat_login={cookie}"})
    client.send({**HELLO, "gender": None})
    welcome = client.expect("welcome")
    assert (welcome["account"] or {}).get("user_id") == account
    session = memory.switchboard.find(welcome["session_id"])
    assert session is not None and session.gender == ("m" if account else "u")


def test_a_server_that_requires_a_login_closes_an_anonymous_hello_with_4009() -> None:
    memory = MemoryServer()
    memory.factory.accounts = Accounts()
    memory.factory.require_login = True
    anonymous = memory.connect(OFFERED["json"])
    anonymous.send(HELLO)
    assert anonymous.expect("error")["code"] == "login_required"
    assert anonymous.closed is not None and anonymous.closed[1] == 4009
    member = memory.connect(OFFERED["json"], headers={"Cookie": "vchat_login=good"})
    member.send(HELLO)
    assert member.expect("welcome")["account"]["user_id"] == "acc-1"
