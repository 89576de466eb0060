"""Reports and bans end to end over real loopback sockets, in both codecs, against the real SQLite store:
a report with a snapshot, a report after `next`, a device ban at hello, a live ban, and bans and reports kept
across a restart on the same data directory."""

from __future__ import annotations

import base64
import math
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from vchat.testing import RunningServer, SignalingClient, start_server

CODECS = ["json", "msgpack"]
JPEG = b"\xff\xd8\xff\xe0" + b"loopback-snapshot" * 8


async def pair(
    server: RunningServer, codec: str, other: str | None = None
) -> tuple[SignalingClient, SignalingClient, str, str, str]:
    """A woman (`codec`, device "dev-A") matched with a man (`other`, default `codec`, device "dev-B"):
    (her client, his client, her session id, his session id, the match id)."""
    her = await server.client(codec)
    him = await server.client(other or codec)
    her_id = (await her.hello(gender="f", client={"device_id": "dev-A"}))["session_id"]
    his_id = (await him.hello(gender="m", client={"device_id": "dev-B"}))["session_id"]
    for client in (her, him):
        client.send({"type": "search"})
        await client.expect("searching")
    match_id = (await her.expect("matched"))["match_id"]
    assert (await him.expect("matched"))["match_id"] == match_id
    return her, him, her_id, his_id, match_id


def snapshot_field(codec: str, image: bytes) -> Any:
    """The snapshot as the client sends it: base64 in JSON, `bin` in msgpack."""
    return image if codec == "msgpack" else base64.b64encode(image).decode("ascii")


async def close(*clients: SignalingClient) -> None:
    for client in clients:
        if not client.closed.called:
            client.sendClose(1000)
            await client.wait_closed()


@pytest.mark.parametrize("codec", CODECS)
@pytest_twisted.ensureDeferred
async def test_a_report_with_a_snapshot_is_stored(server: RunningServer, codec: str) -> None:
    her, him, her_id, his_id, match_id = await pair(server, codec)
    her.send(
        {
            "type": "report",
            "id": 7,
            "match_id": match_id,
            "reason": "nudity",
            "snapshot": snapshot_field(codec, JPEG),
        }
    )
    reply = await her.expect("reported")
    assert reply["re"] == 7
    store = await server.store()
    [stored] = await store.list_reports("open", 10)
    assert stored.id == reply["report_id"]
    assert (stored.reporter_user_id, stored.reported_user_id) == (her_id, his_id)
    assert (stored.reporter_device_id, stored.reported_device_id) == ("dev-A", "dev-B")
    assert stored.reason == "nudity" and stored.reported_ip == "127.0.0.1"
    snapshot = await store.report_snapshot(stored.id)
    assert snapshot is not None and snapshot.data == JPEG and snapshot.content_type == "image/jpeg"
    # the reported user is told nothing: the next message they get answers their ping
    him.send({"type": "ping", "id": 2})
    assert await him.expect("pong") == {"type": "pong", "online": 2, "re": 2}
    await close(her, him)


@pytest.mark.parametrize("codec", CODECS)
@pytest_twisted.ensureDeferred
async def test_a_report_after_next(server: RunningServer, codec: str) -> None:
    her, him, _, his_id, match_id = await pair(server, codec, "json" if codec == "msgpack" else "msgpack")
    her.send({"type": "next"})
    assert await her.expect("searching") == {"type": "searching", "online": 2}
    assert await him.expect("partner_left") == {
        "type": "partner_left",
        "match_id": match_id,
        "reason": "next",
    }
    her.send({"type": "stop"})
    await her.expect("idle")
    her.send({"type": "report", "id": "r", "match_id": match_id, "reason": "spam", "comment": "ads"})
    reply = await her.expect("reported")
    assert reply["re"] == "r"
    [stored] = await (await server.store()).list_reports("open", 10)
    assert stored.id == reply["report_id"] and stored.reported_user_id == his_id
    assert stored.comment == "ads" and not stored.has_snapshot
    await close(her, him)


@pytest.mark.parametrize("codec", CODECS)
@pytest_twisted.ensureDeferred
async def test_a_banned_device_is_refused_at_hello(server: RunningServer, codec: str) -> None:
    ban = await server.moderation.ban("device_id", "dev-bad", "insults", "harassment", 3600.0)
    client = await server.client(codec)
    client.send(
        {"type": "hello", "id": 3, "age_confirmed": True, "gender": "m", "client": {"device_id": "dev-bad"}}
    )
    banned = await client.expect("banned")
    assert banned == {"type": "banned", "reason": "insults", "until": math.ceil(ban.ends_at or 0), "re": 3}
    _, code, _ = await client.wait_closed()
    assert code == 4004
    other = await server.client(codec)  # another device is let in
    assert (await other.hello(client={"device_id": "dev-good"}))["type"] == "welcome"
    await close(other)


@pytest.mark.parametrize("codec", CODECS)
@pytest_twisted.ensureDeferred
async def test_a_live_ban_closes_the_session_and_tells_the_partner(server: RunningServer, codec: str) -> None:
    her, him, _, his_id, match_id = await pair(server, codec, "json" if codec == "msgpack" else "msgpack")
    await server.moderation.ban("user_id", his_id, "insults", "harassment", None)
    assert await him.expect("banned") == {"type": "banned", "reason": "insults", "until": None}
    _, code, _ = await him.wait_closed()
    assert code == 4004
    assert await her.expect("partner_left") == {
        "type": "partner_left",
        "match_id": match_id,
        "reason": "disconnect",
    }
    await close(her)


@pytest.mark.parametrize("codec", CODECS)
@pytest_twisted.ensureDeferred
async def test_bans_and_reports_survive_a_restart(tmp_path: Path, codec: str) -> None:
    first = await start_server(reactor, "--data-dir", str(tmp_path / "ignored"), "--data-dir", str(tmp_path))
    try:
        assert first.data_dir == str(tmp_path) and not first.owns_data_dir  # the later --data-dir wins
        her, him, _, his_id, match_id = await pair(first, codec)
        her.send(
            {
                "type": "report",
                "match_id": match_id,
                "reason": "harassment",
                "snapshot": snapshot_field(codec, JPEG),
            }
        )
        report_id = (await her.expect("reported"))["report_id"]
        await first.moderation.ban("device_id", "dev-B", "insults", "harassment", None)
        assert (await him.expect("banned"))["until"] is None
        await close(her)
    finally:
        await first.stop()
    assert (tmp_path / "vchat.sqlite3").is_file()  # stop keeps a directory it did not make
    assert not (tmp_path / "ignored").exists()

    second = await start_server(reactor, "--data-dir", str(tmp_path))
    try:
        await second.moderation.whenLoaded()
        client = await second.client(codec)
        client.send({"type": "hello", "age_confirmed": True, "gender": "m", "client": {"device_id": "dev-B"}})
        assert await client.expect("banned") == {"type": "banned", "reason": "insults", "until": None}
        _, code, _ = await client.wait_closed()
        assert code == 4004
        store = await second.store()
        [stored] = await store.list_reports("open", 10)
        assert stored.id == report_id and stored.reported_user_id == his_id
        snapshot = await store.report_snapshot(report_id)
        assert snapshot is not None and snapshot.data == JPEG
    finally:
        await second.stop()
    assert (tmp_path / "vchat.sqlite3").is_file()
