"""A bot's connection without sockets: the shared codecs decode for the bot, and its callbacks are fenced."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import capturedLogs

from vchat.bot.websocket import CODECS_BY_NAME, BotClientFactory, BotProtocol, Link
from vchat.protocol.codec import JSON, JSON_SUBPROTOCOL, MSGPACK


class FakePeer:
    """Records what the connection reports."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.bad_frames = 0
        self.lost: list[int | None] = []

    def on_open(self, link: Link) -> None:
        pass

    def on_message(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    def on_bad_frame(self) -> None:
        self.bad_frames += 1

    def on_lost(self, link: Link, code: int | None) -> None:
        self.lost.append(code)


def _connection(
    codec: str = "json", on_lost: Callable[[], None] = lambda: None
) -> tuple[BotProtocol, FakePeer, BotClientFactory]:
    factory = BotClientFactory(
        MemoryReactorClock(), "ws://127.0.0.1:9/ws", CODECS_BY_NAME[codec], connect_timeout=5, on_lost=on_lost
    )
    peer = FakePeer()
    protocol = BotProtocol(peer)
    protocol.factory = factory
    return protocol, peer, factory


def test_the_bot_speaks_the_servers_codecs() -> None:
    assert CODECS_BY_NAME == {"json": JSON, "msgpack": MSGPACK}
    _, _, factory = _connection()
    assert factory.protocols == [JSON_SUBPROTOCOL]


def test_frames_are_decoded_for_the_bot_and_bad_ones_counted() -> None:
    protocol, peer, _ = _connection()
    protocol.onMessage(b'{"type":"pong","re":1}', False)
    for frame in (b"[1]", b'{"type":"pong","re":NaN}', b"\xff"):  # not a map, not JSON, not UTF-8
        protocol.onMessage(frame, False)
    assert peer.messages == [{"type": "pong", "re": 1}] and peer.bad_frames == 3
    protocol, peer, _ = _connection("msgpack")
    protocol.onMessage(msgpack.packb({"type": "idle"}), True)
    protocol.onMessage(msgpack.packb([1]), True)
    assert peer.messages == [{"type": "idle"}] and peer.bad_frames == 1


def test_a_failing_bot_is_logged_and_the_connection_goes_on() -> None:
    protocol, peer, _ = _connection()

    def broken(message: dict[str, Any]) -> None:
        raise RuntimeError("bug")

    peer.on_message = broken  # type: ignore[method-assign]
    with capturedLogs() as events:
        protocol.onMessage(b'{"type":"idle"}', False)
        protocol.onClose(False, 1006, None)
    assert [e["log_failure"].type for e in events if "log_failure" in e] == [RuntimeError]
    assert peer.lost == [1006]


def test_before_the_handshake_nothing_is_sent_and_close_drops_the_connection() -> None:
    lost: list[str] = []
    protocol, peer, factory = _connection(on_lost=lambda: lost.append("lost"))
    transport = StringTransport()
    protocol.makeConnection(transport)
    assert factory.connections == {protocol}
    request = transport.value()
    assert request.startswith(b"GET /ws HTTP/1.1") and JSON_SUBPROTOCOL.encode() in request
    transport.clear()
    protocol.send({"type": "ping"})
    assert transport.value() == b""
    protocol.close()
    assert transport.disconnected  # aborted: there is no WebSocket to close yet
    protocol.connectionLost()
    assert factory.connections == set() and lost == ["lost"] and peer.lost == [1006]
