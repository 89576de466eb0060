"""The admin API over real HTTP on loopback: auth, every route with good and bad input, and its effects on live
sessions (bans and kicks at once)."""

from __future__ import annotations

import base64
import socket
from typing import Any

import pytest
import pytest_twisted
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor

from vchat.store.account_testing import a_login
from vchat.store.records import Flag
from vchat.store.testing import a_flag
from vchat.testing import AdminResponse, RunningServer, SignalingClient, admin_request, start_server

JPEG = b"\xff\xd8\xff\xe0" + b"admin-api-snapshot" * 8


async def call(
    server: RunningServer, method: str, path: str, json_body: object = None, **more: Any
) -> AdminResponse:
    return await admin_request(server, method, path, json_body, **more)


def assert_error(response: AdminResponse, status: int, code: str) -> None:
    """A JSON error with `status` and `code`, and a message for a person."""
    assert response.status == status, response.body
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert b"Traceback" not in response.body


async def pair(server: RunningServer) -> tuple[SignalingClient, SignalingClient, str, str, str]:
    """A woman (device "dev-A") matched with a man: (her, him, her id, his id, match id)."""
    her, him = await server.client(), await server.client()
    her_id = (await her.hello(gender="f", client={"device_id": "dev-A"}))["session_id"]
    his_id = (await him.hello(gender="m"))["session_id"]
    for client in (her, him):
        client.send({"type": "search"})
        await client.expect("searching")
    match_id = (await her.expect("matched"))["match_id"]
    await him.expect("matched")
    return her, him, her_id, his_id, match_id


async def reported(server: RunningServer) -> tuple[SignalingClient, SignalingClient, str, str]:
    """He reports her with a snapshot: (her, him, her id, the report id)."""
    her, him, her_id, _, match_id = await pair(server)
    him.send(
        {
            "type": "report",
            "id": 1,
            "match_id": match_id,
            "reason": "nudity",
            "comment": "on camera",
            "snapshot": base64.b64encode(JPEG).decode(),
        }
    )
    report_id = (await him.expect("reported"))["report_id"]
    return her, him, her_id, report_id


# --- auth ------------------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_healthz_needs_no_token(server: RunningServer) -> None:
    response = await call(server, "GET", "/healthz", token=None)
    assert (response.status, response.json()) == (200, {"status": "ok"})


@pytest.mark.parametrize("token", [None, "wrong-token-0123456789", ""])
@pytest_twisted.ensureDeferred
async def test_a_missing_or_wrong_token_gets_401(server: RunningServer, token: str | None) -> None:
    for path in ("/api/stats", "/metrics", "/api/reports", "/api/services"):
        response = await call(server, "GET", path, token=token)
        assert_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"].startswith("Bearer")
    basic = await call(server, "GET", "/api/stats", token=None, headers={"Authorization": "Basic eDp5"})
    assert_error(basic, 401, "unauthorized")


@pytest_twisted.ensureDeferred
async def test_the_token_from_the_option_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    token = "option-token-0123456789"
    running = await start_server(reactor, "--admin-token", token)
    try:
        assert (await call(running, "GET", "/api/stats", token=token)).status == 200
        assert_error(await call(running, "GET", "/api/stats", token=token + "x"), 401, "unauthorized")
    finally:
        await running.stop()
    monkeypatch.setenv("VCHAT_ADMIN_TOKEN", "environment-token-0123")
    running = await start_server(reactor)
    try:
        assert (await call(running, "GET", "/api/stats", token="environment-token-0123")).status == 200
    finally:
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_admin_none_turns_it_off() -> None:
    running = await start_server(reactor, "--admin", "none")
    try:
        assert running.admin_url is None
        assert "admin" not in running.service.namedServices
    finally:
        await running.stop()


# --- bad requests -------------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_unknown_routes_and_wrong_methods(server: RunningServer) -> None:
    for path in ("/nope", "/api", "/api/reports/x/y/z", "/api/bans/%ff", "/api//resolve"):
        assert_error(await call(server, "GET", path), 404, "not_found")
    wrong = await call(server, "PUT", "/api/bans")
    assert_error(wrong, 405, "method_not_allowed")
    assert set(wrong.headers["allow"].split(", ")) == {"GET", "POST"}
    assert_error(await call(server, "DELETE", "/healthz"), 405, "method_not_allowed")


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b"{not json", {"Content-Type": "application/json"}, 400, "bad_request"),
        (b"[1, 2]", {"Content-Type": "application/json"}, 400, "bad_request"),
        (b'{"user_id": "u", "reason": NaN}', {"Content-Type": "application/json"}, 400, "bad_request"),
        (b'{"user_id": "u", "reason": "r"}', {"Content-Type": "text/plain"}, 415, "unsupported_media_type"),
        (b"\xff\xfe", {"Content-Type": "application/json"}, 400, "bad_request"),
        (b'{"a": "' + b"x" * 70000 + b'"}', {"Content-Type": "application/json"}, 413, "too_large"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_malformed_bodies(
    server: RunningServer, body: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    assert_error(await call(server, "POST", "/api/bans", body=body, headers=headers), status, code)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"reason": "r"},
        {"user_id": "u", "ip": "10.0.0.1", "reason": "r"},
        {"user_id": 7, "reason": "r"},
        {"user_id": "u"},
        {"user_id": "u", "reason": 5},
        {"user_id": "u", "reason": ""},
        {"user_id": "u", "reason": "r", "duration_s": "1h"},
        {"user_id": "u", "reason": "r", "duration_s": 0},
        {"user_id": "u", "reason": "r", "duration_s": True},
        {"user_id": "u", "reason": "r", "duration_s": 1e400},
        {"user_id": "u", "reason": "r", "category": "shoplifting"},
        {"ip": "not-an-address", "reason": "r"},
        {"ip": "10.0.0.0/33", "reason": "r"},
        {"user_id": "u", "reason": "r", "colour": "red"},
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_bans_get_400_and_change_nothing(server: RunningServer, body: dict[str, Any]) -> None:
    assert_error(await call(server, "POST", "/api/bans", body), 400, "bad_request")
    assert (await call(server, "GET", "/api/bans")).json() == {"items": []}


@pytest_twisted.ensureDeferred
async def test_bad_query_parameters(server: RunningServer) -> None:
    for path in (
        "/api/reports?status=maybe",
        "/api/reports?limit=0",
        "/api/reports?limit=1001",
        "/api/reports?limit=ten",
        "/api/bans?status=all",
        "/api/flags?status=open&status=resolved",
        "/api/stats?x=1",
    ):
        assert_error(await call(server, "GET", path), 400, "bad_request")


@pytest_twisted.ensureDeferred
async def test_unknown_ids_get_404(server: RunningServer) -> None:
    for method, path, body in [
        ("GET", "/api/reports/nope", None),
        ("GET", "/api/reports/nope/snapshot", None),
        ("POST", "/api/reports/nope/resolve", {"action": "dismiss"}),
        ("GET", "/api/bans/nope", None),
        ("GET", "/api/bans/nope/snapshot", None),
        ("DELETE", "/api/bans/nope", None),
        ("POST", "/api/flags/nope/resolve", None),
        ("GET", "/api/sessions/nope", None),
        ("POST", "/api/sessions/nope/kick", None),
        ("POST", "/api/services/nope/stop", None),
    ]:
        assert_error(await call(server, method, path, body), 404, "not_found")


# --- reports --------------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_report_arrives_with_its_snapshot_and_a_ban_from_it_closes_the_session(
    server: RunningServer,
) -> None:
    her, him, her_id, report_id = await reported(server)
    listed = (await call(server, "GET", "/api/reports")).json()["items"]
    assert [item["id"] for item in listed] == [report_id]
    report = (await call(server, "GET", f"/api/reports/{report_id}")).json()
    assert report == listed[0]
    assert (report["status"], report["reason"], report["comment"], report["has_snapshot"]) == (
        "open",
        "nudity",
        "on camera",
        True,
    )
    assert report["reported"]["user_id"] == her_id and report["reported"]["device_id"] == "dev-A"
    assert report["reported"]["ip"] == "127.0.0.1"
    image = await call(server, "GET", f"/api/reports/{report_id}/snapshot")
    assert (image.status, image.headers["content-type"], image.body) == (200, "image/jpeg", JPEG)
    assert "no-store" in image.headers["cache-control"]

    resolved = await call(
        server, "POST", f"/api/reports/{report_id}/resolve", {"action": "ban", "duration_s": 3600}
    )
    assert resolved.status == 200 and resolved.json()["status"] == "banned"
    assert (await her.expect("banned"))["until"] is not None
    assert (await her.wait_closed())[1] == 4004
    assert (await him.expect("partner_left"))["reason"] == "disconnect"
    again = await call(server, "POST", f"/api/reports/{report_id}/resolve", {"action": "dismiss"})
    assert_error(again, 409, "already_resolved")
    assert (await call(server, "GET", "/api/reports")).json() == {"items": []}
    done = (await call(server, "GET", "/api/reports?status=resolved")).json()["items"]
    assert [item["id"] for item in done] == [report_id]
    bans = (await call(server, "GET", "/api/bans")).json()["items"]
    assert {ban["target"]["kind"] for ban in bans} == {"user_id", "device_id"}
    user_ban = next(ban for ban in bans if ban["target"]["kind"] == "user_id")
    assert user_ban["report_id"] == report_id and user_ban["has_snapshot"]
    kept = await call(server, "GET", f"/api/bans/{user_ban['id']}/snapshot")
    assert (kept.status, kept.body) == (200, JPEG)


@pytest_twisted.ensureDeferred
async def test_dismissing_a_report_deletes_its_snapshot(server: RunningServer) -> None:
    _, _, _, report_id = await reported(server)
    for body in (
        {"action": "warn"},
        {"action": "ban", "duration_s": -5},
        {"action": "ban", "reason": ""},
        {},
    ):
        assert_error(
            await call(server, "POST", f"/api/reports/{report_id}/resolve", body), 400, "bad_request"
        )
    resolved = await call(server, "POST", f"/api/reports/{report_id}/resolve", {"action": "dismiss"})
    assert resolved.json()["status"] == "dismissed" and not resolved.json()["has_snapshot"]
    assert_error(await call(server, "GET", f"/api/reports/{report_id}/snapshot"), 404, "not_found")


# --- bans -------------------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_ban_through_the_api_closes_a_live_session_at_once_and_lifting_lets_it_back(
    server: RunningServer,
) -> None:
    her, him, her_id, _, _ = await pair(server)
    created = await call(
        server, "POST", "/api/bans", {"user_id": her_id, "reason": "insults", "category": "harassment"}
    )
    assert created.status == 201
    ban = created.json()
    assert ban["target"] == {"kind": "user_id", "value": her_id}
    assert (ban["active"], ban["ends_at"], ban["category"], ban["source"]) == (
        True,
        None,
        "harassment",
        "moderator",
    )
    assert await her.expect("banned") == {"type": "banned", "reason": "insults", "until": None}
    assert (await her.wait_closed())[1] == 4004
    assert (await him.expect("partner_left"))["reason"] == "disconnect"
    listed = (await call(server, "GET", "/api/bans?status=active")).json()["items"]
    assert [item["id"] for item in listed] == [ban["id"]]
    assert (await call(server, "GET", f"/api/bans/{ban['id']}")).json() == listed[0]
    lifted = await call(server, "DELETE", f"/api/bans/{ban['id']}")
    assert lifted.status == 200 and not lifted.json()["active"] and lifted.json()["ended_at"] is not None
    assert (await call(server, "GET", "/api/bans")).json() == {"items": []}
    ended = (await call(server, "GET", "/api/bans?status=ended")).json()["items"]
    assert [item["id"] for item in ended] == [ban["id"]]


@pytest.mark.parametrize(
    ("target", "value", "stored"),
    [
        ("ip", "127.0.0.0/8", "127.0.0.0/8"),
        ("ip", "127.0.0.1", "127.0.0.1/32"),
        ("device_id", "dev-A", "dev-A"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_address_network_and_device_bans(
    server: RunningServer, target: str, value: str, stored: str
) -> None:
    her, him, _, _, _ = await pair(server)
    created = await call(server, "POST", "/api/bans", {target: value, "reason": "spam", "duration_s": 60})
    assert created.status == 201 and created.json()["target"] == {"kind": target, "value": stored}
    assert created.json()["ends_at"] - created.json()["created_at"] == pytest.approx(60)
    assert (await her.wait_closed())[1] == 4004
    if target == "ip":
        assert (await him.wait_closed())[1] == 4004


# --- flags ------------------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_flags_are_listed_and_resolved(server: RunningServer) -> None:
    store = await server.store()
    first: Flag = await store.add_flag(a_flag(user_id="u-1", device_id=None, summary={"links": 20}))
    second: Flag = await store.add_flag(a_flag(user_id="u-2", device_id="d-2", created_at=2000.0))
    listed = (await call(server, "GET", "/api/flags")).json()["items"]
    assert [item["id"] for item in listed] == [first.id, second.id]
    assert listed[0]["summary"] == {"links": 20} and listed[0]["rule"] == "many-reports"
    dismissed = await call(server, "POST", f"/api/flags/{first.id}/resolve")
    assert dismissed.status == 200 and dismissed.json()["status"] == "resolved"
    assert_error(await call(server, "POST", f"/api/flags/{first.id}/resolve"), 409, "already_resolved")
    assert_error(
        await call(server, "POST", f"/api/flags/{second.id}/resolve", {"action": "ban", "category": "x"}),
        400,
        "bad_request",
    )
    banned = await call(
        server,
        "POST",
        f"/api/flags/{second.id}/resolve",
        {"action": "ban", "duration_s": 600, "category": "spam"},
    )
    assert banned.status == 200
    bans = (await call(server, "GET", "/api/bans")).json()["items"]
    assert {(ban["target"]["kind"], ban["target"]["value"], ban["category"]) for ban in bans} == {
        ("user_id", "u-2", "spam"),
        ("device_id", "d-2", "spam"),
    }
    assert (await call(server, "GET", "/api/flags?status=resolved")).json()["items"][0][
        "status"
    ] == "resolved"


# --- sessions -----------------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_session_is_shown_without_its_partner_and_a_kick_closes_it_with_4005(
    server: RunningServer,
) -> None:
    her, him, her_id, his_id, match_id = await pair(server)
    shown = (await call(server, "GET", f"/api/sessions/{her_id}")).json()
    assert shown["id"] == her_id and shown["state"] == "matched" and shown["connected"]
    assert shown["gender"] == "f" and shown["device_id"] == "dev-A" and shown["connected_since"] > 0
    text = str(shown)
    assert his_id not in text and match_id not in text
    kicked = await call(server, "POST", f"/api/sessions/{her_id}/kick")
    assert (kicked.status, kicked.json()) == (200, {"kicked": True})
    error = await her.expect("error")
    assert error["code"] == "kicked"
    assert (await her.wait_closed())[1] == 4005
    assert (await him.expect("partner_left"))["reason"] == "disconnect"
    assert_error(await call(server, "GET", f"/api/sessions/{her_id}"), 404, "not_found")
    assert (await call(server, "GET", f"/api/sessions/{his_id}")).json()["state"] == "idle"


@pytest_twisted.ensureDeferred
async def test_an_account_is_shown_without_any_email_and_deleted_on_request(server: RunningServer) -> None:
    store = await server.store()
    account = await store.log_in(a_login(at=1000.0))
    assert_error(await call(server, "GET", "/api/accounts/no-such-account"), 404, "not_found")
    shown = (await call(server, "GET", f"/api/accounts/{account.account_id}")).json()
    assert shown == {
        "id": account.account_id,
        "providers": [{"provider": "facebook", "subject": "1001"}],
        "gender": "f",
        "country": "DE",
        "has_email": True,
        "settings": {"lang": None, "translate_to": None, "translate": False, "want": "any", "countries": []},
        "created_at": 1000.0,
        "last_login_at": 1000.0,
        "deleted_at": None,
        "purge_at": None,
    }
    deleted = (await call(server, "POST", f"/api/accounts/{account.account_id}/delete")).json()
    assert deleted["deleted_at"] is not None and deleted["purge_at"] == deleted["deleted_at"] + 30 * 86400
    again = (await call(server, "POST", f"/api/accounts/{account.account_id}/delete")).json()
    assert again == deleted  # asked once
    assert_error(await call(server, "POST", "/api/accounts/no-such-account/delete"), 404, "not_found")


# --- figures ------------------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_stats_and_metrics_move_as_sessions_come_and_go(server: RunningServer) -> None:
    def sample(text: str, name: str) -> float:
        for family in text_string_to_metric_families(text):
            for each in family.samples:
                if each.name == name:
                    return float(each.value)
        raise AssertionError(f"{name} not in the metrics")

    before = await call(server, "GET", "/metrics")
    assert before.status == 200 and before.headers["content-type"].startswith("text/plain")
    assert sample(before.body.decode(), "vchat_sessions_online") == 0
    her, him, her_id, his_id, _ = await pair(server)
    during = (await call(server, "GET", "/metrics")).body.decode()
    assert sample(during, "vchat_sessions_online") == 2
    assert sample(during, "vchat_matches_total") == 1
    assert her_id not in during and his_id not in during
    stats = (await call(server, "GET", "/api/stats")).json()
    assert stats["sessions"]["online"] == 2 and stats["sessions"]["matched"] == 2
    for client in (her, him):
        client.sendClose(1000)
        await client.wait_closed()
    after = (await call(server, "GET", "/metrics")).body.decode()
    assert sample(after, "vchat_sessions_online") == 0


# --- services -----------------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_services_are_listed_and_protected_ones_refused(server: RunningServer) -> None:
    items = (await call(server, "GET", "/api/services")).json()["items"]
    by_name = {item["name"]: item for item in items}
    assert {"store", "moderation", "signaling", "admin"} <= set(by_name)
    assert by_name["signaling"] == {
        "name": "signaling",
        "running": True,
        "stoppable": True,
        "kind": "built-in",
    }
    assert not by_name["admin"]["stoppable"]
    for name in ("admin", "store", "moderation"):
        assert_error(await call(server, "POST", f"/api/services/{name}/stop"), 409, "not_stoppable")


@pytest_twisted.ensureDeferred
async def test_stun_stops_and_starts_through_the_api_while_a_session_goes_on() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    running = await start_server(reactor, "--stun-udp", str(port), "--stun-interface", "127.0.0.1")
    try:
        client = await running.client(hello=True)
        stopped = await call(running, "POST", "/api/services/stun/stop")
        assert stopped.json() == {"name": "stun", "running": False, "stoppable": True, "kind": "built-in"}
        assert not (await call(running, "GET", "/api/stats")).json()["stun"]["running"]
        client.send({"type": "ping", "id": 1})
        assert (await client.expect("pong"))["re"] == 1
        started = await call(running, "POST", "/api/services/stun/start")
        assert (
            started.json()["running"] and (await call(running, "GET", "/api/stats")).json()["stun"]["running"]
        )
        assert_error(
            await call(running, "POST", "/api/services/stun/start", {"now": True}), 400, "bad_request"
        )
    finally:
        await running.stop()
