"""`report` end to end in memory: checked, stored with who and what, deduplicated, kept apart from matching, the
size rule that lets only a report be large, and a moderator's resolution; in both codecs."""

from __future__ import annotations

import base64
import struct
from typing import Any

import pytest

from vchat.protocol.accounts import AccountView
from vchat.protocol.codec import encode_msgpack, starts_as_report
from vchat.protocol.errors import ErrorCode, ProtocolError
from vchat.protocol.messages import Report, parse_message
from vchat.protocol.snapshot import MAX_SNAPSHOT_BYTES, decode_snapshot
from vchat.protocol.switchboard import REPORT_WINDOW
from vchat.protocol.websocket import ConnectionLimits
from vchat.store.interface import AlreadyResolved
from vchat.store.memory import MemoryStore
from vchat.store.records import Report as StoredReport
from vchat.testing import OFFERED, MemoryClient, MemoryServer, fired

CODECS = ["json", "msgpack"]
JPEG = b"\xff\xd8\xff\xe0" + b"jpeg-marker" * 10
PNG = b"\x89PNG\r\n\x1a\n" + b"png-marker" * 10


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def memory(store: MemoryStore) -> MemoryServer:
    server = MemoryServer(store=store)
    server.clock.advance(1_000_000.0)
    return server


def pair(
    server: MemoryServer, codec: str = "json", other: str = "json"
) -> tuple[MemoryClient, MemoryClient, str]:
    """A reporter (codec `codec`, device "dev-A") matched with a reported user (`other`, device "dev-B",
    from 198.51.100.7, with client facts); (reporter, reported, match id)."""
    reporter = server.connect(OFFERED[codec], address="192.0.2.1")
    reporter.hello(gender="f", client={"device_id": "dev-A"})
    reported = server.connect(OFFERED[other], address="198.51.100.7")
    reported.hello(gender="m", client={"device_id": "dev-B", "os": "Android", "browser": "Firefox 133"})
    for client in (reporter, reported):
        client.send({"type": "search"})
        client.expect("searching")
    match_id = reporter.expect("matched")["match_id"]
    reported.expect("matched")
    return reporter, reported, match_id


def snapshot_field(codec: str, image: bytes) -> Any:
    """The snapshot as the client sends it: base64 in JSON, `bin` in msgpack."""
    return image if codec == "msgpack" else base64.b64encode(image).decode("ascii")


def report(client: MemoryClient, match_id: str, **fields: Any) -> dict[str, Any]:
    """Send a report (type first, as the size rule wants) and return the reply."""
    client.send({"type": "report", "match_id": match_id, "reason": "harassment", **fields})
    replies = client.received()
    assert len(replies) == 1, replies
    return replies[0]


def reports(store: MemoryStore) -> list[StoredReport]:
    found: list[StoredReport] = fired(store.list_reports("open", 100))
    return found


# --- what is stored -----------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(("image", "content_type"), [(JPEG, "image/jpeg"), (PNG, "image/png")])
def test_a_report_is_stored_with_who_and_what(
    memory: MemoryServer, store: MemoryStore, codec: str, image: bytes, content_type: str
) -> None:
    reporter, reported, match_id = pair(memory, codec)
    reply = report(reporter, match_id, id=5, comment="insults", snapshot=snapshot_field(codec, image))
    assert reply["type"] == "reported" and reply["re"] == 5 and reply["report_id"]
    [stored] = reports(store)
    assert stored.id == reply["report_id"]
    assert stored.reporter_device_id == "dev-A"
    assert stored.reported_device_id == "dev-B"
    assert stored.reporter_user_id != stored.reported_user_id
    assert stored.reported_ip == "198.51.100.7"
    assert stored.reported_client == {"device_id": "dev-B", "os": "Android", "browser": "Firefox 133"}
    assert stored.reason == "harassment" and stored.comment == "insults"
    assert stored.created_at == memory.clock.seconds()
    snapshot = fired(store.report_snapshot(stored.id))
    assert snapshot.content_type == content_type and snapshot.data == image
    assert reported.received() == []  # the reported user is not told


def test_a_report_without_snapshot_or_comment(memory: MemoryServer, store: MemoryStore) -> None:
    reporter, _, match_id = pair(memory, "msgpack")
    assert report(reporter, match_id)["type"] == "reported"
    [stored] = reports(store)
    assert stored.comment is None and not stored.has_snapshot


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(
    "fields",
    [{"reason": "rude"}, {"reason": ["spam"]}, {"comment": "x" * 501}, {"comment": 3}, {"snapshot": 12}],
)
def test_a_bad_reason_or_comment_is_a_bad_message(
    memory: MemoryServer, store: MemoryStore, codec: str, fields: dict[str, Any]
) -> None:
    reporter, _, match_id = pair(memory, codec)
    reply = report(reporter, match_id, id=1, **fields)
    assert reply["type"] == "error" and reply["code"] == "bad_message" and reply["re"] == 1
    assert reports(store) == []


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(
    "image",
    [b"GIF89a" + b"x" * 20, b"\xff\xd8", JPEG + b"x" * MAX_SNAPSHOT_BYTES, "not base64!", "/9j/4A"],
)
def test_a_bad_snapshot_is_refused(
    memory: MemoryServer, store: MemoryStore, codec: str, image: bytes | str
) -> None:
    reporter, _, match_id = pair(memory, codec)
    value = image if isinstance(image, str) else snapshot_field(codec, image)
    reply = report(reporter, match_id, snapshot=value)
    assert reply["type"] == "error" and reply["code"] == "bad_snapshot"
    assert reports(store) == []


def test_a_base64_snapshot_in_msgpack(memory: MemoryServer, store: MemoryStore) -> None:
    reporter, _, match_id = pair(memory, "msgpack")
    assert report(reporter, match_id, snapshot=base64.b64encode(PNG).decode())["type"] == "reported"
    assert fired(store.report_snapshot(reports(store)[0].id)).data == PNG


def test_bytes_elsewhere_in_msgpack_are_still_refused(memory: MemoryServer) -> None:
    reporter, _, match_id = pair(memory, "msgpack")
    for message in (
        {"type": "report", "match_id": match_id, "reason": "spam", "comment": b"x"},
        {"type": "chat", "match_id": match_id, "text": "hi", "snapshot": JPEG},
    ):
        reporter.send(message)
        assert reporter.expect("error")["code"] == "bad_message"


# --- which match ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["leaver", "left"])
def test_the_previous_match_may_be_reported_for_60_seconds(memory: MemoryServer, who: str) -> None:
    leaver, left, match_id = pair(memory)
    leaver.send({"type": "next"})
    leaver.received(), left.received()
    memory.advance(REPORT_WINDOW - 1)
    reporter = leaver if who == "leaver" else left
    assert report(reporter, match_id)["type"] == "reported"


@pytest.mark.parametrize("codec", CODECS)
def test_the_previous_match_is_no_match_after_60_seconds(
    memory: MemoryServer, store: MemoryStore, codec: str
) -> None:
    reporter, _, match_id = pair(memory, codec)
    reporter.send({"type": "stop"})
    reporter.expect("idle")
    memory.advance(REPORT_WINDOW)
    reply = report(reporter, match_id, id="r")
    assert reply["type"] == "error" and reply["code"] == "no_match" and reply["re"] == "r"
    assert reports(store) == []


def test_only_the_last_match_may_be_reported(memory: MemoryServer) -> None:
    first, second, first_match = pair(memory)
    first.send({"type": "stop"})
    second.send({"type": "stop"})
    first.received(), second.received()
    third = memory.client(hello=True, gender="m")
    first.send({"type": "search"})
    third.send({"type": "search"})
    first.received(), third.received()
    first.send({"type": "stop"})
    assert first.received() == [{"type": "idle"}]
    assert report(first, first_match)["code"] == "no_match"


def test_a_foreign_match_is_no_match(memory: MemoryServer, store: MemoryStore) -> None:
    reporter, _, _ = pair(memory)
    _, _, other_match = pair(memory)
    assert report(reporter, other_match)["code"] == "no_match"
    assert report(reporter, "never-was")["code"] == "no_match"
    assert reports(store) == []


@pytest.mark.parametrize("codec", CODECS)
def test_a_second_report_gets_the_first_id(memory: MemoryServer, store: MemoryStore, codec: str) -> None:
    reporter, _, match_id = pair(memory, codec)
    first = report(reporter, match_id, snapshot=snapshot_field(codec, JPEG))
    reporter.send({"type": "next"})
    reporter.received()
    second = report(reporter, match_id, id=2, reason="spam")
    assert second == {"type": "reported", "report_id": first["report_id"], "re": 2}
    [stored] = reports(store)
    assert stored.reason == "harassment"


def test_reports_are_refused_without_a_store() -> None:
    server = MemoryServer()
    reporter, _, match_id = pair(server)
    assert report(reporter, match_id)["code"] == "bad_message"


def test_a_store_failure_is_an_error_and_a_retry_works(memory: MemoryServer, store: MemoryStore) -> None:
    reporter, _, match_id = pair(memory)
    add_report = store.add_report
    store.add_report = lambda *args: (_ for _ in ()).throw(OSError("disk full"))  # type: ignore[method-assign]
    reply = report(reporter, match_id, id=1)
    assert reply["type"] == "error" and reply["code"] == "bad_message" and reply["re"] == 1
    store.add_report = add_report  # type: ignore[method-assign]
    assert report(reporter, match_id)["type"] == "reported"
    assert len(reports(store)) == 1


def test_a_reported_pair_never_meets_again(memory: MemoryServer) -> None:
    reporter, reported, match_id = pair(memory)
    report(reporter, match_id)
    for client in (reporter, reported):
        client.send({"type": "next"})
        client.received()
    memory.advance(600)  # far past --rematch-after and the recent window
    assert reporter.received() == [] and reported.received() == []
    assert memory.switchboard.waiting == 2
    newcomer = memory.client(hello=True, gender="m")
    newcomer.send({"type": "search"})
    assert [m["type"] for m in newcomer.received()] == ["searching", "matched"]


def test_a_logged_in_user_reported_after_the_match_is_its_account_and_never_meets_the_reporter_again(
    memory: MemoryServer, store: MemoryStore
) -> None:
    """A report names a logged-in user by its account (what bans hold on), while the pair kept apart is the
    two sessions: the block holds though the account's id is not the session's."""
    reporter, reported, match_id = pair(memory)
    session = next(s for s in memory.switchboard._sessions.values() if s.device_id == "dev-B")
    session.account = AccountView("account-of-b", "m", ("vk",))  # as its login cookie would give it
    reporter.send({"type": "next"})
    reporter.received()
    reported.expect("partner_left")
    assert report(reporter, match_id)["type"] == "reported"  # the match that just ended
    assert [stored.reported_user_id for stored in reports(store)] == ["account-of-b"]
    reported.send({"type": "search"})
    reported.received()
    memory.advance(600)  # far past --rematch-after and the recent window
    assert reporter.received() == [] and reported.received() == []
    assert memory.switchboard.waiting == 2


def test_an_unreported_pair_meets_again_after_rematch_after(memory: MemoryServer) -> None:
    first, second, _ = pair(memory)
    for client in (first, second):
        client.send({"type": "next"})
        client.received()
    memory.advance(31)
    assert first.expect("matched") and second.expect("matched")


# --- the size rule ------------------------------------------------------------------------------------


def test_a_report_up_to_max_report_bytes_passes(memory: MemoryServer, store: MemoryStore) -> None:
    """A maximum-size snapshot in base64 (JSON) and as bin (msgpack) fits the default limit."""
    image = JPEG + b"\x00" * (MAX_SNAPSHOT_BYTES - len(JPEG))
    for codec in CODECS:
        reporter, _, match_id = pair(memory, codec)
        assert report(reporter, match_id, comment="x" * 500, snapshot=snapshot_field(codec, image))[
            "type"
        ] == ("reported")
    assert len(reports(store)) == 2


@pytest.mark.parametrize("codec", CODECS)
def test_a_report_over_max_report_bytes_closes_1009(codec: str) -> None:
    server = MemoryServer(
        ConnectionLimits(max_message_bytes=1000, max_report_bytes=5000), store=MemoryStore()
    )
    reporter, _, match_id = pair(server, codec)
    padding = "p" * 4000
    assert report(reporter, match_id, comment="ok", padding=padding)["type"] == "reported"
    reporter.send({"type": "report", "match_id": match_id, "reason": "spam", "padding": padding * 2})
    assert reporter.closed is not None and reporter.closed[1] == 1009


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(
    "message",
    [
        {"type": "chat", "match_id": "m", "text": "x" * 2000},
        {"match_id": "m", "type": "report", "reason": "spam", "padding": "x" * 2000},  # type not first
        {"type": "reports", "match_id": "m", "padding": "x" * 2000},
    ],
)
def test_a_large_message_other_than_report_closes_1009(codec: str, message: dict[str, Any]) -> None:
    server = MemoryServer(ConnectionLimits(max_message_bytes=1000, max_report_bytes=5000))
    client = server.client(codec, hello=True)
    client.send(message)
    assert client.closed is not None and client.closed[1] == 1009


def test_a_report_head_with_another_type_later_closes_1009() -> None:
    """JSON takes the last of two "type" members: a large message must be a report, not only begin as one."""
    server = MemoryServer(ConnectionLimits(max_message_bytes=1000, max_report_bytes=5000))
    client = server.client("json", hello=True)
    client.send_frame(b'{"type":"report","match_id":"m","text":"' + b"x" * 2000 + b'","type":"chat"}')
    assert client.closed is not None and client.closed[1] == 1009


def masked_frame_head(length: int, binary: bool) -> bytes:
    """The header of one unfragmented client frame of `length` bytes, masked with a zero key."""
    return bytes((0x82 if binary else 0x81, 0x80 | 127)) + struct.pack("!Q", length) + b"\x00" * 4


@pytest.mark.parametrize("binary", [False, True])
def test_a_large_message_is_refused_from_its_first_bytes(binary: bool) -> None:
    """Only the header and the first bytes of a large non-report arrive: the server closes with 1009 at once."""
    server = MemoryServer()
    client = server.client("msgpack" if binary else "json", hello=True)
    head = encode_msgpack({"type": "chat"})[:12] if binary else b'{"type":"chat","text":"xx'
    client.protocol.transport.write(masked_frame_head(300_000, binary) + head)
    server.flush()
    assert client.peer.failedByMe and client.peer.frame_data == []  # nothing of the message is kept
    server.advance(10)  # the client's reply to the close is stuck inside its unfinished frame
    assert client.closed is not None and client.closed[1] == 1009


def test_a_large_report_waits_for_the_rest() -> None:
    server = MemoryServer()
    client = server.client("json", hello=True)
    client.protocol.transport.write(masked_frame_head(300_000, False) + b'{"type":"report","match_id":')
    server.flush()
    assert client.closed is None


@pytest.mark.parametrize(
    ("head", "binary", "verdict"),
    [
        (b"", False, None),
        (b'{"type":"rep', False, None),
        (b'{"type":"report",', False, True),
        (b'{"type":"report"}', False, False),
        (b'{ "type":"report",', False, False),
        (b"", True, None),
        (b"\x85\xa4type\xa6rep", True, None),
        (b"\x85\xa4type\xa6report", True, True),
        (b"\xde\x00\x11\xa4type\xa6report", True, True),
        (b"\xdf\x00\x00\x00\x11\xa4type\xa6report", True, True),
        (b"\xde\x00", True, None),
        (b"\x85\xa4type\xa4chat", True, False),
        (b"\x93", True, False),
    ],
)
def test_starts_as_report(head: bytes, binary: bool, verdict: bool | None) -> None:
    assert starts_as_report(head, binary) is verdict


# --- parsing ---------------------------------------------------------------------------------------------


def test_parse_report() -> None:
    raw = {"type": "report", "match_id": "m", "reason": "underage", "comment": "", "snapshot": PNG}
    message = parse_message(raw)
    assert isinstance(message, Report)
    assert message.comment is None and message.snapshot is not None
    assert message.snapshot.content_type == "image/png" and message.snapshot.data == PNG


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("", ErrorCode.BAD_SNAPSHOT),
        ("/9g=", ErrorCode.BAD_SNAPSHOT),  # the first two bytes of JPEG's magic only
        ("/9j/4A==\n", ErrorCode.BAD_SNAPSHOT),
        ("é", ErrorCode.BAD_SNAPSHOT),
        ("A" * (4 * MAX_SNAPSHOT_BYTES), ErrorCode.BAD_SNAPSHOT),
        (["x"], ErrorCode.BAD_MESSAGE),
    ],
)
def test_decode_snapshot_refusals(value: object, code: ErrorCode) -> None:
    with pytest.raises(ProtocolError) as refused:
        decode_snapshot(value)
    assert refused.value.code is code


def test_decode_snapshot_accepts_strict_base64() -> None:
    assert decode_snapshot("/9j/4A==").content_type == "image/jpeg"
    assert decode_snapshot(base64.b64encode(PNG).decode()).data == PNG


# --- resolution --------------------------------------------------------------------------------------------


def stored_report(
    memory: MemoryServer, store: MemoryStore, codec: str
) -> tuple[MemoryClient, MemoryClient, str]:
    reporter, reported, match_id = pair(memory, codec)
    report_id = report(reporter, match_id, snapshot=snapshot_field(codec, JPEG))["report_id"]
    return reporter, reported, report_id


@pytest.mark.parametrize("codec", CODECS)
def test_resolve_report_ban_closes_the_reported_session(
    memory: MemoryServer, store: MemoryStore, codec: str
) -> None:
    reporter, reported, report_id = stored_report(memory, store, codec)
    assert memory.moderation is not None
    resolved = fired(memory.moderation.resolve_report(report_id, "ban", 86400.0))
    memory.flush()
    assert resolved.status == "banned" and resolved.ban_id
    banned = reported.expect("banned")
    assert banned["reason"] == "reported for harassment"
    assert reported.closed is not None and reported.closed[1] == 4004
    assert reporter.expect("partner_left")["reason"] == "disconnect"
    ban = fired(store.get_ban(resolved.ban_id))
    assert ban.target.kind == "user_id" and ban.target.value == resolved.reported_user_id
    assert ban.category == "harassment" and ban.report_id == report_id
    assert fired(store.ban_snapshot(ban.id)).data == JPEG
    assert fired(store.report_snapshot(report_id)) is None
    bans = fired(store.list_bans(True, memory.clock.seconds(), 10))
    assert {(b.target.kind, b.target.value) for b in bans} == {
        ("user_id", resolved.reported_user_id),
        ("device_id", "dev-B"),
    }
    again = memory.connect(["vchat.v1.json"], address="203.0.113.9")
    again.send({"type": "hello", "age_confirmed": True, "gender": "m", "client": {"device_id": "dev-B"}})
    again.expect("banned")


def test_resolve_report_ban_without_a_device_id(memory: MemoryServer, store: MemoryStore) -> None:
    reporter = memory.client(hello=True, gender="f")
    reported = memory.client(hello=True, gender="m")
    for client in (reporter, reported):
        client.send({"type": "search"})
        client.expect("searching")
    match_id = reporter.expect("matched")["match_id"]
    reported.expect("matched")
    report_id = report(reporter, match_id)["report_id"]
    assert memory.moderation is not None
    resolved = fired(
        memory.moderation.resolve_report(report_id, "ban", None, reason="go away", source="rule")
    )
    memory.flush()
    assert reported.expect("banned") == {"type": "banned", "reason": "go away", "until": None}
    bans = fired(store.list_bans(True, memory.clock.seconds(), 10))
    assert [(b.target.kind, b.source) for b in bans] == [("user_id", "rule")]
    assert resolved.status == "banned"


def test_resolve_report_dismiss_deletes_the_snapshot(memory: MemoryServer, store: MemoryStore) -> None:
    _, reported, report_id = stored_report(memory, store, "json")
    assert memory.moderation is not None
    resolved = fired(memory.moderation.resolve_report(report_id, "dismiss"))
    assert resolved.status == "dismissed"
    assert fired(store.report_snapshot(report_id)) is None
    assert fired(store.list_bans(None, memory.clock.seconds(), 10)) == []
    assert reported.closed is None
    with pytest.raises(AlreadyResolved):
        fired(memory.moderation.resolve_report(report_id, "ban", None))


def test_resolve_report_refusals(memory: MemoryServer, store: MemoryStore) -> None:
    _, _, report_id = stored_report(memory, store, "json")
    moderation = memory.moderation
    assert moderation is not None
    assert fired(moderation.resolve_report("no-such-report", "ban", None)) is None
    assert fired(moderation.resolve_report("no-such-report", "dismiss")) is None
    for bad in (
        lambda: moderation.resolve_report(report_id, "warn"),  # type: ignore[arg-type]
        lambda: moderation.resolve_report(report_id, "ban", -1.0),
        lambda: moderation.resolve_report(report_id, "ban", None, reason=""),
        lambda: moderation.resolve_report(report_id, "ban", None, source="admin"),  # type: ignore[arg-type]
    ):
        with pytest.raises(ValueError):
            fired(bad())
    assert reports(store)[0].status == "open"
