"""Privacy as promised: chat and SDP are relayed, never logged or kept; nobody records who talked to whom."""

from __future__ import annotations

from twisted.logger import capturedLogs, formatEvent

from vchat.matching import MatchingEngine, Seeker
from vchat.testing import MemoryServer

SECRET_TEXT = "my phone number is 555-0199"
SECRET_SDP = "v=0\r\no=- 4611731400430051336 2 IN IP4 198.51.100.77\r\ns=-\r\n"


def test_no_chat_sdp_or_pair_in_logs_or_memory() -> None:
    memory = MemoryServer()
    with capturedLogs() as events:
        a, b = memory.client(), memory.client()
        id_a = a.hello(gender="f")["session_id"]
        id_b = b.hello(gender="m")["session_id"]
        for client in (a, b):
            client.send({"type": "search"})
            client.expect("searching")
        match_id = a.expect("matched")["match_id"]
        b.expect("matched")
        a.send({"type": "signal", "match_id": match_id, "payload": {"type": "offer", "sdp": SECRET_SDP}})
        assert b.expect("signal")["payload"]["sdp"] == SECRET_SDP
        b.send({"type": "chat", "match_id": match_id, "text": SECRET_TEXT})
        assert a.expect("chat")["text"] == SECRET_TEXT
        a.send({"type": "chat", "match_id": match_id, "text": "x" * 1001})  # an error path
        a.expect("error")
        a.close()
        b.expect("partner_left")
        b.close()
        assert a.closed is not None and b.closed is not None

    texts = [formatEvent(event) + repr(event) for event in events]
    assert texts, "the server logs notable things"
    for text in texts:
        assert SECRET_TEXT not in text and "198.51.100.77" not in text
        assert not (id_a in text and id_b in text), "a log event names both partners"
        assert match_id not in text

    board = memory.switchboard
    assert board.sessions == 0 and board.online == 0 and board.waiting == 0


def test_engine_forgets_a_closed_sessions_partners() -> None:
    engine = MatchingEngine()
    engine.search(_seeker("a"), now=0)
    pair = engine.search(_seeker("b"), now=1)
    assert pair is not None
    engine.forget("a")
    engine.forget("b")
    # fresh sessions with the same ids (ids are never reused in practice) are not kept apart by old history
    engine.search(_seeker("a"), now=2)
    assert engine.search(_seeker("b"), now=3) is not None


def _seeker(session_id: str) -> Seeker:
    return Seeker(session_id, "u", None)
