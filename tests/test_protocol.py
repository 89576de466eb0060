"""The wire protocol over real WebSockets on loopback: every message, error and close code."""

from __future__ import annotations

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.task import deferLater

from vchat.protocol.codec import JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL, encode_json, encode_msgpack
from vchat.testing import RunningServer, SignalingClient, connect, start_server

HELLO = {"type": "hello", "age_confirmed": True, "gender": "m", "lang": "en-US", "client": {"os": "Linux"}}


async def matched_pair(
    server: RunningServer, first: str = "json", second: str = "json"
) -> tuple[SignalingClient, SignalingClient, dict, dict]:
    """Two clients said hello and were matched: (offerer, answerer, offer's matched, answer's matched)."""
    a = await server.client(first)
    a.send({**HELLO, "gender": "f"})
    await a.expect("welcome")
    b = await server.client(second)
    b.send(HELLO)
    await b.expect("welcome")
    a.send({"type": "search", "want": "any"})
    await a.expect("searching")
    b.send({"type": "search", "want": "any"})
    await b.expect("searching")
    matched_a, matched_b = await a.expect("matched"), await b.expect("matched")
    return a, b, matched_a, matched_b


async def assert_silent(client: SignalingClient, seconds: float = 0.2) -> None:
    """Nothing arrives for `seconds`."""
    with pytest.raises(DeferredTimeout):
        message = await client.receive(seconds)
        pytest.fail(f"unexpected message {message!r}")


@pytest_twisted.ensureDeferred
async def test_hello_gets_welcome(server: RunningServer) -> None:
    client = await server.client()
    client.send({**HELLO, "id": 7})
    welcome = await client.expect("welcome")
    assert set(welcome) == {
        "type",
        "session_id",
        "country",
        "ice_servers",
        "ice_transport_policy",
        "resume_token",
        "online",
        "resumed",
        "match",
    }
    assert welcome["country"] is None
    assert welcome["ice_transport_policy"] == "all"
    assert welcome["ice_servers"] == []
    assert welcome["online"] == 1
    assert welcome["resumed"] is False and welcome["match"] is None
    assert len(welcome["resume_token"]) >= 32
    client.sendClose()
    await client.wait_closed()


@pytest_twisted.ensureDeferred
async def test_welcome_carries_turn_credentials() -> None:
    server = await start_server(
        reactor, "--turn-url", "turn:turn.example:3478", "--turn-secret", "s", "--ice-relay-only"
    )
    try:
        client = await server.client()
        client.send(HELLO)
        welcome = await client.expect("welcome")
        turn = welcome["ice_servers"][-1]
        assert turn["urls"] == ["turn:turn.example:3478"]
        assert turn["username"].endswith(":" + welcome["session_id"]) and turn["credential"]
        assert welcome["ice_transport_policy"] == "relay"
    finally:
        await server.service.stopService()


@pytest.mark.parametrize("codec", ["json", "msgpack", "none"])
@pytest_twisted.ensureDeferred
async def test_subprotocols(server: RunningServer, codec: str) -> None:
    client = await server.client(codec)
    assert (
        client.websocket_protocol_in_use
        == {"json": JSON_SUBPROTOCOL, "msgpack": MSGPACK_SUBPROTOCOL, "none": None}[codec]
    )
    client.send(HELLO)
    await client.expect("welcome")


@pytest_twisted.ensureDeferred
async def test_unknown_subprotocol_falls_back_to_json(server: RunningServer) -> None:
    client = await connect(reactor, server.url, ["chat.superchat"])
    assert client.websocket_protocol_in_use is None
    client.send(HELLO)
    await client.expect("welcome")


@pytest_twisted.ensureDeferred
async def test_wrong_path_is_refused(server: RunningServer) -> None:
    with pytest.raises(ConnectionError):
        await connect(reactor, server.url.replace("/ws", "/other"), [JSON_SUBPROTOCOL])


@pytest.mark.parametrize("first", [{"type": "search", "want": "any"}, {"type": "ping"}, {"type": "nonsense"}])
@pytest_twisted.ensureDeferred
async def test_hello_required_first(server: RunningServer, first: dict) -> None:
    client = await server.client()
    client.send({**first, "id": "x1"})
    error = await client.expect("error")
    assert error["code"] == "hello_required" and error["re"] == "x1"
    _, code, _ = await client.wait_closed()
    assert code == 4001


@pytest.mark.parametrize("age", [None, False, "true", 1])
@pytest_twisted.ensureDeferred
async def test_age_required(server: RunningServer, age: object) -> None:
    client = await server.client()
    hello = {**HELLO, "age_confirmed": age} if age is not None else {"type": "hello", "gender": "m"}
    client.send(hello)
    assert (await client.expect("error"))["code"] == "age_required"
    _, code, _ = await client.wait_closed()
    assert code == 4002


@pytest_twisted.ensureDeferred
async def test_hello_timeout_closes_with_4001() -> None:
    server = await start_server(reactor, "--hello-timeout", "1")
    try:
        client = await server.client()
        assert (await client.expect("error", timeout=2))["code"] == "hello_required"
        _, code, _ = await client.wait_closed()
        assert code == 4001
    finally:
        await server.service.stopService()


@pytest_twisted.ensureDeferred
async def test_second_hello_is_bad(server: RunningServer) -> None:
    client = await server.client(hello=True)
    client.send({**HELLO, "id": 2})
    error = await client.expect("error")
    assert error["code"] == "bad_message" and error["re"] == 2
    client.send({"type": "ping", "id": 3})
    assert (await client.expect("pong"))["re"] == 3


@pytest_twisted.ensureDeferred
async def test_ping_pong(server: RunningServer) -> None:
    client = await server.client(hello=True)
    client.send({"type": "ping", "id": "abc"})
    assert await client.expect("pong") == {"type": "pong", "re": "abc"}
    client.send({"type": "ping"})
    assert await client.expect("pong") == {"type": "pong"}


@pytest.mark.parametrize(("first", "second"), [("json", "json"), ("msgpack", "msgpack"), ("json", "msgpack")])
@pytest_twisted.ensureDeferred
async def test_match_and_relay(server: RunningServer, first: str, second: str) -> None:
    a, b, matched_a, matched_b = await matched_pair(server, first, second)
    assert matched_a["match_id"] == matched_b["match_id"]
    assert {matched_a["role"], matched_b["role"]} == {"offer", "answer"}
    assert matched_a["partner"] == {"country": None, "gender": "m", "lang": "en-US"}
    assert matched_b["partner"] == {"country": None, "gender": "f", "lang": "en-US"}
    match_id = matched_a["match_id"]
    payload = {
        "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n",
        "type": "offer",
        "n": [1, 2.5, None, True, {"x": -3}],
    }
    a.send({"type": "signal", "match_id": match_id, "payload": payload})
    assert await b.expect("signal") == {"type": "signal", "match_id": match_id, "payload": payload}
    b.send({"type": "chat", "match_id": match_id, "text": "привет 👋"})
    assert await a.expect("chat") == {"type": "chat", "match_id": match_id, "text": "привет 👋"}
    a.send({"type": "typing", "match_id": match_id})
    assert await b.expect("typing") == {"type": "typing", "match_id": match_id}
    await assert_silent(a)


@pytest_twisted.ensureDeferred
async def test_next_requeues_and_tells_partner(server: RunningServer) -> None:
    a, b, matched, _ = await matched_pair(server)
    a.send({"type": "next", "id": 1})
    assert await b.expect("partner_left") == {
        "type": "partner_left",
        "match_id": matched["match_id"],
        "reason": "next",
    }
    assert (await a.expect("searching"))["type"] == "searching"
    # the old match is gone: relaying into it is a no_match error
    b.send({"type": "chat", "match_id": matched["match_id"], "text": "still there?", "id": "c"})
    error = await b.expect("error")
    assert error["code"] == "no_match" and error["re"] == "c"
    # the partner just left is a recent partner: searching again does not pair them
    b.send({"type": "search", "want": "any"})
    await b.expect("searching")
    await assert_silent(a)
    await assert_silent(b)
    # a third user gets matched with the one waiting longest
    c = await server.client(hello=True)
    c.send({"type": "search"})
    await c.expect("searching")
    assert (await c.expect("matched"))["role"] == "answer"
    assert (await a.expect("matched"))["role"] == "offer"


@pytest_twisted.ensureDeferred
async def test_stop_goes_idle(server: RunningServer) -> None:
    a, b, matched, _ = await matched_pair(server)
    b.send({"type": "stop"})
    assert await a.expect("partner_left") == {
        "type": "partner_left",
        "match_id": matched["match_id"],
        "reason": "stop",
    }
    assert await b.expect("idle") == {"type": "idle"}
    a.send({"type": "search", "want": "f"})
    await a.expect("searching")
    a.send({"type": "stop"})
    await a.expect("idle")


@pytest_twisted.ensureDeferred
async def test_in_match_and_no_match(server: RunningServer) -> None:
    a, _, _, _ = await matched_pair(server)
    a.send({"type": "search", "want": "any", "id": 1})
    assert (await a.expect("error"))["code"] == "in_match"
    a.send({"type": "signal", "match_id": "nope", "payload": {}, "id": 2})
    assert (await a.expect("error"))["code"] == "no_match"


@pytest_twisted.ensureDeferred
async def test_clean_close_tells_partner_at_once(server: RunningServer) -> None:
    a, b, matched, _ = await matched_pair(server)
    a.sendClose(1000)
    left = await b.expect("partner_left", timeout=1)
    assert left == {"type": "partner_left", "match_id": matched["match_id"], "reason": "disconnect"}


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
@pytest_twisted.ensureDeferred
async def test_bad_frames_are_errors_not_crashes(server: RunningServer, frame: bytes, code: str) -> None:
    client = await server.client(hello=True)
    client.sendMessage(frame, isBinary=False)
    error = await client.expect("error")
    assert error["code"] == code and error["message"]
    client.send({"type": "ping", "id": 1})
    assert (await client.expect("pong"))["re"] == 1


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
@pytest_twisted.ensureDeferred
async def test_bad_msgpack_frames(server: RunningServer, frame: bytes) -> None:
    client = await server.client("msgpack", hello=True)
    client.sendMessage(frame, isBinary=True)
    assert (await client.expect("error"))["code"] == "bad_message"


@pytest_twisted.ensureDeferred
async def test_request_id_comes_back_on_errors(server: RunningServer) -> None:
    client = await server.client(hello=True)
    client.sendMessage(encode_json({"type": "search", "want": 3, "id": "q"}), isBinary=False)
    assert (await client.expect("error"))["re"] == "q"


@pytest_twisted.ensureDeferred
async def test_too_many_bad_messages_close_4008(server: RunningServer) -> None:
    client = await server.client(hello=True)
    for _ in range(11):
        client.sendMessage(b"garbage", isBinary=False)
    codes = [(await client.expect("error"))["code"] for _ in range(11)]
    assert codes == ["bad_message"] * 11
    _, code, _ = await client.wait_closed()
    assert code == 4008


@pytest_twisted.ensureDeferred
async def test_oversized_frame_closes_1009(server: RunningServer) -> None:
    client = await server.client(hello=True)
    client.send({"type": "chat", "match_id": "m", "text": "x" * 70000})
    _, code, _ = await client.wait_closed()
    assert code == 1009


@pytest_twisted.ensureDeferred
async def test_rate_limit() -> None:
    server = await start_server(
        reactor, "--message-rate", "1", "--message-burst", "3", "--max-bad-messages", "100"
    )
    try:
        client = await server.client(hello=True)
        for i in range(5):
            client.send({"type": "ping", "id": i})
        replies = [await client.receive() for _ in range(5)]
        assert [r["type"] for r in replies] == ["pong", "pong", "error", "error", "error"]
        assert {r.get("code") for r in replies[2:]} == {"rate_limited"}
    finally:
        await server.service.stopService()


@pytest_twisted.ensureDeferred
async def test_relay_while_partner_reconnecting(server: RunningServer) -> None:
    a, b, matched, _ = await matched_pair(server)
    b.transport.abortConnection()
    assert await a.expect("partner_reconnecting") == {
        "type": "partner_reconnecting",
        "match_id": matched["match_id"],
    }
    a.send({"type": "chat", "match_id": matched["match_id"], "text": "hello?"})
    assert (await a.expect("error"))["code"] == "partner_reconnecting"


async def hello_client(server: RunningServer, **fields: object) -> tuple[SignalingClient, dict]:
    client = await server.client()
    client.send({**HELLO, **fields})
    return client, await client.expect("welcome")


@pytest_twisted.ensureDeferred
async def test_resume_keeps_session_and_match(server: RunningServer) -> None:
    a, welcome_a = await hello_client(server, gender="f")
    b, _ = await hello_client(server)
    for c in (a, b):
        c.send({"type": "search"})
        await c.expect("searching")
    matched = await a.expect("matched")
    await b.expect("matched")
    a.transport.abortConnection()
    assert (await b.expect("partner_reconnecting"))["match_id"] == matched["match_id"]
    a2, welcome = await hello_client(server, resume=welcome_a["resume_token"])
    assert welcome["session_id"] == welcome_a["session_id"]
    assert welcome["resumed"] is True
    assert welcome["match"] == {
        "match_id": matched["match_id"],
        "role": matched["role"],
        "partner": matched["partner"],
    }
    assert welcome["resume_token"] != welcome_a["resume_token"]
    assert await b.expect("partner_resumed") == {"type": "partner_resumed", "match_id": matched["match_id"]}
    b.send({"type": "chat", "match_id": matched["match_id"], "text": "welcome back"})
    assert (await a2.expect("chat"))["text"] == "welcome back"
    # the token was single-use: using it again starts a fresh session
    _, fresh = await hello_client(server, resume=welcome_a["resume_token"])
    assert fresh["resumed"] is False and fresh["session_id"] != welcome_a["session_id"]


@pytest_twisted.ensureDeferred
async def test_resume_replaces_a_half_open_connection(server: RunningServer) -> None:
    a, welcome_a = await hello_client(server)
    a2, welcome = await hello_client(server, resume=welcome_a["resume_token"])
    assert welcome["session_id"] == welcome_a["session_id"] and welcome["resumed"] is True
    _, code, _ = await a.wait_closed()
    assert code == 4003
    a2.send({"type": "ping", "id": 1})
    assert (await a2.expect("pong"))["re"] == 1


@pytest_twisted.ensureDeferred
async def test_foreign_token_starts_fresh(server: RunningServer) -> None:
    _, welcome = await hello_client(server, resume="not-a-token")
    assert welcome["resumed"] is False


@pytest_twisted.ensureDeferred
async def test_grace_window_expiry_tells_partner(server: RunningServer) -> None:
    a, b, matched, _ = await matched_pair(server)
    a.transport.abortConnection()
    await b.expect("partner_reconnecting")
    left = await b.expect("partner_left", timeout=3)
    assert left == {"type": "partner_left", "match_id": matched["match_id"], "reason": "disconnect"}


@pytest_twisted.ensureDeferred
async def test_heartbeat_detects_dead_peer() -> None:
    server = await start_server(
        reactor, "--heartbeat", "1", "--heartbeat-timeout", "1", "--resume-grace", "5"
    )
    try:
        a, b, matched, _ = await matched_pair(server)
        a.autoPingInterval = 0
        a.transport.pauseProducing()  # a stops reading: no pongs, like a phone that changed network
        assert (await b.expect("partner_reconnecting", timeout=4))["match_id"] == matched["match_id"]
    finally:
        await server.service.stopService()


@pytest_twisted.ensureDeferred
async def test_misbehaving_client_does_not_affect_others(server: RunningServer) -> None:
    a, b, matched, _ = await matched_pair(server)
    rogue = await server.client(hello=True)
    for frame in (
        b"not json",
        b"{}",
        b'{"type":"signal","match_id":"' + matched["match_id"].encode() + b'","payload":1}',
    ):
        rogue.sendMessage(frame, isBinary=False)
    for _ in range(3):
        assert (await rogue.expect("error"))["code"] in {"bad_message", "no_match"}
    a.send({"type": "chat", "match_id": matched["match_id"], "text": "fine"})
    assert (await b.expect("chat"))["text"] == "fine"
    await assert_silent(b)


@pytest_twisted.ensureDeferred
async def test_a_client_that_does_not_read_is_dropped_not_buffered() -> None:
    server = await start_server(reactor,
        "--message-rate", "10000", "--message-burst", "10000", "--max-backlog-bytes", "65536", "--resume-grace", "5"
    )  # fmt: skip
    try:
        a, b, matched, _ = await matched_pair(server)
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
        await server.service.stopService()
