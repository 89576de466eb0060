"""Privacy as promised: chat and SDP are relayed, never logged or kept; nobody records who talked to whom. In
memory, and over real sockets against the real store with reports and bans around the chats, searching the
logs and every file in the data directory."""

from __future__ import annotations

import sqlite3
from base64 import b64encode
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.logger import LogEvent, capturedLogs, formatEvent, globalLogPublisher

from vchat.matching import MatchingEngine, Seeker
from vchat.store.records import Snapshot
from vchat.testing import MemoryServer, RunningServer, SignalingClient, start_server

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


# --- over real sockets, against the real store -----------------------------------------------------------


def _mark(kind: str) -> str:
    """A marker no run could produce by chance."""
    return f"{kind}-{uuid4().hex}"


def _jpeg(marker: str) -> bytes:
    """A tiny JPEG (by its magic bytes) with `marker` inside."""
    return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + marker.encode() + b"\xff\xd9"


@dataclass
class Person:
    """A client over loopback and its session id."""

    client: SignalingClient
    session_id: str


@dataclass
class Run:
    """What the run sent and who met whom, to search the logs and the data directory for afterwards."""

    lines: list[tuple[str, str, str]] = field(
        default_factory=list
    )  # chat: (sender's session id, marker, text)
    sdp_marks: list[str] = field(default_factory=list)
    match_ids: list[str] = field(default_factory=list)
    pairs: list[tuple[str, str]] = field(default_factory=list)  # session ids of users who were matched

    async def meet(
        self, server: RunningServer, codecs: tuple[str, str], devices: tuple[str, str]
    ) -> tuple[Person, Person, str]:
        """Two users (a woman, a man) who search and are matched: (the offerer, the answerer, the match id)."""
        people = []
        for codec, device, gender in zip(codecs, devices, "fm", strict=True):
            client = await server.client(codec)
            welcome = await client.hello(gender=gender, client={"device_id": device, "os": "Android"})
            people.append(Person(client, welcome["session_id"]))
        for person in people:
            person.client.send({"type": "search"})
            await person.client.expect("searching")
        matched = [await person.client.expect("matched") for person in people]
        match_id = matched[0]["match_id"]
        assert matched[1]["match_id"] == match_id
        self.match_ids.append(match_id)
        self.pairs.append((people[0].session_id, people[1].session_id))
        offerer, answerer = people if matched[0]["role"] == "offer" else people[::-1]
        return offerer, answerer, match_id

    async def chat(self, sender: Person, receiver: Person, match_id: str, text: str | None = None) -> None:
        """`sender` says a line with a new marker (or `text`, whose marker is its last word); `receiver` gets
        it."""
        mark = _mark("chat")
        text = f"hi, {mark}" if text is None else text
        self.lines.append((sender.session_id, text.rsplit(maxsplit=1)[-1], text))
        sender.client.send({"type": "chat", "match_id": match_id, "text": text})
        assert await receiver.client.expect("chat") == {"type": "chat", "match_id": match_id, "text": text}

    def said(self, person: Person) -> list[str]:
        """The lines `person` said."""
        return [text for sender, _, text in self.lines if sender == person.session_id]

    async def talk(self, offerer: Person, answerer: Person, match_id: str) -> None:
        """The two negotiate WebRTC with SDP and candidates carrying markers, type, and chat both ways."""
        for sender, receiver, payload in (
            (offerer, answerer, {"type": "offer", "sdp": self._sdp()}),
            (answerer, offerer, {"type": "answer", "sdp": self._sdp()}),
            (offerer, answerer, self._candidate()),
            (answerer, offerer, self._candidate()),
        ):
            sender.client.send({"type": "signal", "match_id": match_id, "payload": payload})
            assert (await receiver.client.expect("signal"))["payload"] == payload
        for sender, receiver in ((offerer, answerer), (answerer, offerer)):
            sender.client.send({"type": "typing", "match_id": match_id})
            await receiver.client.expect("typing")
            await self.chat(sender, receiver, match_id)
            await self.chat(sender, receiver, match_id)

    def _sdp(self) -> str:
        mark = _mark("sdp")
        self.sdp_marks.append(mark)
        return f"v=0\r\no=- 4611731400430051336 2 IN IP4 198.51.100.77\r\ns=-\r\na=ice-ufrag:{mark}\r\n"

    def _candidate(self) -> dict[str, Any]:
        mark = _mark("ice")
        self.sdp_marks.append(mark)
        candidate = f"candidate:842163049 1 udp 1677729535 203.0.113.7 46154 typ srflx ufrag {mark}"
        return {"candidate": candidate, "sdpMid": "0", "sdpMLineIndex": 0}


def _event_text(event: LogEvent) -> str:
    """All a log event says: its formatted line, its fields, and a failure's traceback."""
    text = f"{formatEvent(event)}\n{event!r}"
    failure = event.get("log_failure")
    if failure is not None:
        text += f"\n{failure.getTraceback()}"
    return text


def _files(directory: Path) -> dict[str, bytes]:
    """Every file under `directory`, as bytes, by its path."""
    return {str(path): path.read_bytes() for path in sorted(directory.rglob("*")) if path.is_file()}


def _holding(files: dict[str, bytes], mark: str) -> list[str]:
    return [path for path, data in files.items() if mark.encode() in data]


def _rows(database: Path) -> list[tuple[str, dict[str, str]]]:
    """Every row of every table in the store: (table, {column: value as text})."""
    found: list[tuple[str, dict[str, str]]] = []
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            cursor = db.execute(f'SELECT * FROM "{table}"')  # table names from sqlite_master
            columns = [column[0] for column in cursor.description]
            for row in cursor:
                found.append(
                    (
                        table,
                        {
                            column: value.decode("latin-1") if isinstance(value, bytes) else str(value)
                            for column, value in zip(columns, row, strict=True)
                        },
                    )
                )
    finally:
        db.close()
    return found


@pytest_twisted.ensureDeferred
async def test_nothing_of_chats_signals_or_pairs_is_kept_over_loopback(tmp_path: Path) -> None:
    """Pairs in both codecs chat and negotiate with markers around reports (one dismissed, one banned), a
    live ban and an automatic chat-abuse ban; then the logs and every file in the data directory hold no
    marker, no match id and no record naming two users who met, except what a report and a chat-abuse ban
    keep by design."""
    texts: list[str] = []

    def observe(event: LogEvent) -> None:
        texts.append(_event_text(event))

    run = Run()
    globalLogPublisher.addObserver(observe)
    try:
        server = await start_server(reactor, "--data-dir", str(tmp_path))
        try:
            moderation = server.moderation
            store = await server.store()

            # 1: a report with a snapshot, then `stop`; the report is dismissed, and its snapshot is gone
            a1, b1, match1 = await run.meet(server, ("json", "msgpack"), ("dev-a1", "dev-b1"))
            await run.talk(a1, b1, match1)
            snap1 = _mark("snapshot")
            a1.client.send(
                {
                    "type": "report",
                    "match_id": match1,
                    "reason": "harassment",
                    "snapshot": b64encode(_jpeg(snap1)).decode(),
                }
            )
            report1 = (await a1.client.expect("reported"))["report_id"]
            assert _holding(_files(tmp_path), snap1)  # a sanity check of the search itself
            a1.client.send({"type": "stop"})
            await a1.client.expect("idle")
            assert (await b1.client.expect("partner_left"))["reason"] == "stop"
            dismissed = await moderation.resolve_report(report1, "dismiss")
            assert dismissed is not None and dismissed.status == "dismissed"
            assert _holding(_files(tmp_path), snap1) == []

            # 2: `next`, then a report of that previous match with a snapshot; banned; the ban keeps the
            # snapshot while it lasts, and lifting it deletes it
            a2, b2, match2 = await run.meet(server, ("msgpack", "msgpack"), ("dev-a2", "dev-b2"))
            await run.talk(a2, b2, match2)
            reporter, reported = (a2, b2) if a2.session_id == run.pairs[-1][1] else (b2, a2)
            reporter.client.send({"type": "next"})
            await reporter.client.expect("searching")
            assert (await reported.client.expect("partner_left"))["reason"] == "next"
            reporter.client.send({"type": "stop"})
            await reporter.client.expect("idle")
            snap2 = _mark("snapshot")
            reporter.client.send(
                {"type": "report", "match_id": match2, "reason": "nudity", "snapshot": _jpeg(snap2)}
            )
            report2 = (await reporter.client.expect("reported"))["report_id"]
            banned = await moderation.resolve_report(report2, "ban", 3600.0)
            assert banned is not None and banned.ban_id is not None
            assert (await reported.client.expect("banned"))["reason"] == "reported for nudity"
            assert (await reported.client.wait_closed())[1] == 4004
            assert _holding(_files(tmp_path), snap2)  # kept while the ban lasts
            await moderation.lift(banned.ban_id)
            assert await store.ban_snapshot(banned.ban_id) is None
            assert _holding(_files(tmp_path), snap2) == []

            # 3: a moderator's short live ban with a snapshot; the partner is told the user left, and the
            # snapshot is deleted when the ban ends
            a3, b3, match3 = await run.meet(server, ("json", "json"), ("dev-a3", "dev-b3"))
            await run.talk(a3, b3, match3)
            snap3 = _mark("snapshot")
            short = await moderation.ban(
                "user_id", b3.session_id, "insults", "harassment", 0.2, Snapshot("image/jpeg", _jpeg(snap3))
            )
            assert short.has_snapshot
            await b3.client.expect("banned")
            assert (await b3.client.wait_closed())[1] == 4004
            assert await a3.client.expect("partner_left") == {
                "type": "partner_left",
                "match_id": match3,
                "reason": "disconnect",
            }
            for _ in range(100):  # the store purges it once the ban has ended
                if await store.ban_snapshot(short.id) is None:
                    break
                await deferLater(reactor, 0.05)
            assert await store.ban_snapshot(short.id) is None
            assert _holding(_files(tmp_path), snap3) == []

            # 4: a user sends one link over and over until the repeated-message rule bans them; their own
            # messages go with the ban, their partner's never
            a4, b4, match4 = await run.meet(server, ("msgpack", "json"), ("dev-spam", "dev-b4"))
            await run.talk(a4, b4, match4)
            offender, partner = (a4, b4) if a4.session_id == run.pairs[-1][0] else (b4, a4)
            await run.chat(offender, partner, match4)
            await run.chat(partner, offender, match4)
            spam = f"see http://spam.example/ {_mark('link')}"
            for _ in range(10):
                await run.chat(offender, partner, match4, spam)
            assert (await offender.client.expect("banned"))["reason"]
            assert (await offender.client.wait_closed())[1] == 4004
            assert (await partner.client.expect("partner_left"))["reason"] == "disconnect"
            [abuse_ban] = [
                ban
                for ban in await store.list_bans(True, reactor.seconds(), 100)
                if ban.target.value == offender.session_id
            ]
            assert abuse_ban.category == "chat_abuse" and abuse_ban.source == "rule"
            assert list(abuse_ban.messages) == run.said(offender)  # its own: 2 + 1 + 10 lines

            for person in (a1, b1, reporter, a3, partner):
                person.client.sendClose(1000)
                await person.client.wait_closed()
        finally:
            await server.stop()
    finally:
        globalLogPublisher.removeObserver(observe)

    assert texts, "the server logs notable things"
    files = _files(tmp_path)
    assert files, "the store wrote its file"
    database = tmp_path / "vchat.sqlite3"
    offender_marks = {mark for sender, mark, _ in run.lines if sender == offender.session_id}
    others_marks = {mark for sender, mark, _ in run.lines if sender != offender.session_id}
    assert len(offender_marks) == 4 and len(others_marks) == 4 * 4 - 2 + 1
    secrets = [*others_marks, *run.sdp_marks, *run.match_ids, snap1, snap2, snap3]
    for secret in secrets:
        assert _holding(files, secret) == [], secret
        assert not any(secret in text for text in texts), secret
    for mark in offender_marks:
        assert _holding(files, mark) == [str(database)]  # the chat-abuse ban's messages, nowhere else
        assert not any(mark in text for text in texts), mark

    # No log line and no record names both users of a pair, but a report (who reported whom, by design).
    for first, second in run.pairs:
        assert not any(first in text and second in text for text in texts), (first, second)
    rows = _rows(database)
    for table, row in rows:
        text = "\n".join(row.values())
        for first, second in run.pairs:
            if first in text and second in text:
                assert table == "reports", (table, row)
        for mark in offender_marks:
            if mark in text:
                assert table == "bans" and row["target_value"] == offender.session_id, (table, row)
                assert row["category"] == "chat_abuse" and mark not in text.replace(row["messages"], "")
    reports = [row for table, row in rows if table == "reports"]
    assert {(row["reporter_user_id"], row["reported_user_id"]) for row in reports} == {
        (a1.session_id, b1.session_id),
        (reporter.session_id, reported.session_id),
    }
