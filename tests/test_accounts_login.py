"""Logging in through the server's /auth routes, end to end: a real `twistd vchat` service tree with Facebook
login pointed at a fake Facebook (tests/provider_servers.py), a test HTTP client as the browser, and the
account in the store."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest_twisted
import treq
from provider_servers import FakeFacebook, FakeVk, listen
from twisted.internet import reactor
from twisted.logger import capturedLogs, formatEvent

from vchat.accounts.cookie import COOKIE_NAME
from vchat.accounts.flow import STATE_COOKIE
from vchat.store.account_records import ProviderIdentity
from vchat.store.account_testing import a_report_by
from vchat.testing import RunningServer, SignalingClient, admin_request, connect, hello_message, start_server

APP_ID, APP_SECRET = "4242", "facebook-app-secret-for-tests"
ANN = {
    "id": "10001",
    "email": "Ann@Example.org",
    "gender": "female",
    "birthday": "04/02/1990",
    "location": {"location": {"country_code": "de"}, "id": "1"},
}
ANN_ON_VK = {"id": 2107, "sex": 1, "bdate": "4.2.1990"}
"""Ann on VK, whose token answer carries the same (confirmed) e-mail address as Facebook's verified one."""


class Browser:
    """Follows nothing by itself; keeps the cookies the site sets, as a browser does for one site."""

    def __init__(self, site: str) -> None:
        self.site = site
        self.cookies: dict[str, str] = {}

    async def get(self, url: str, **headers: str) -> tuple[int, str | None]:
        return await self.request("GET", url, **headers)

    async def request(self, method: str, url: str, **headers: str) -> tuple[int, str | None]:
        """(status, Location) of a request to `url`; the site's cookies sent and kept."""
        sent = {name.replace("_", "-"): [value] for name, value in headers.items()}
        if url.startswith(self.site) and self.cookies:
            sent["Cookie"] = ["; ".join(f"{name}={value}" for name, value in self.cookies.items())]
        response = await treq.request(method, url, headers=sent, allow_redirects=False, persistent=False)
        await response.content()
        for header in response.headers.getRawHeaders(b"Set-Cookie", []):
            for name, morsel in SimpleCookie(header.decode()).items():
                if morsel["max-age"] == "0":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
                assert morsel["httponly"] and morsel["samesite"].lower() == "lax"
        location = response.headers.getRawHeaders(b"Location")
        return response.code, None if location is None else location[0].decode()


@pytest_twisted.async_yield_fixture()
async def site() -> AsyncIterator[tuple[RunningServer, FakeFacebook, str]]:
    facebook = FakeFacebook(APP_ID, APP_SECRET, user=dict(ANN))
    provider = listen(reactor, facebook)
    vk = listen(reactor, FakeVk(APP_ID, APP_SECRET, user=dict(ANN_ON_VK), email="ann@example.org"))
    server = await start_server(
        reactor,
        *("--facebook-app-id", APP_ID, "--facebook-app-secret", APP_SECRET),
        *("--facebook-dialog-url", f"{provider.url}/dialog/oauth"),
        *("--facebook-graph-url", f"{provider.url}/v19.0"),
        *("--vk-app-id", APP_ID, "--vk-app-secret", APP_SECRET),
        *("--vk-oauth-url", vk.url, "--vk-api-url", f"{vk.url}/method"),
    )
    base = "http" + server.url.removeprefix("ws").removesuffix("/ws")
    try:
        yield server, facebook, base
    finally:
        await server.stop()
        await provider.stop()
        await vk.stop()


async def log_in(browser: Browser, base: str, provider: str = "facebook") -> str | None:
    """The whole trip: start, the provider's dialog, back to the callback; where the site sends the browser."""
    status, dialog = await browser.get(f"{base}/auth/{provider}/start")
    assert status == 302 and dialog is not None and STATE_COOKIE in browser.cookies
    status, back = await browser.get(dialog)  # the fake provider's dialog consents at once
    assert status == 302 and back is not None and back.startswith(f"{base}/auth/{provider}/callback?")
    status, landing = await browser.get(back)
    assert status == 302
    return landing


@pytest_twisted.ensureDeferred
async def test_a_facebook_login_makes_an_account_and_a_login_cookie(site: Any) -> None:
    server, _, base = site
    browser = Browser(base)
    assert await log_in(browser, base) == "/"
    assert COOKIE_NAME in browser.cookies and STATE_COOKIE not in browser.cookies
    store = await server.store()
    found = await store.get_account(browser_account(browser))
    assert found is not None
    assert found.identities == (ProviderIdentity("facebook", "10001"),)
    assert (found.gender, found.country, found.has_email) == ("f", "DE", True)


def browser_account(browser: Browser) -> str:
    """The account id the browser's login cookie names (its payload is readable; its signature is the point)."""
    payload = browser.cookies[COOKIE_NAME].split(".")[0]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["a"])


@pytest_twisted.ensureDeferred
async def test_a_callback_without_this_browsers_state_is_refused(site: Any) -> None:
    _, _, base = site
    stranger = Browser(base)
    _, dialog = await stranger.get(f"{base}/auth/facebook/start")
    assert dialog is not None
    _, back = await stranger.get(dialog)
    assert back is not None
    victim = Browser(base)  # a forged link: the callback reaches a browser that started no login
    assert await victim.get(back) == (302, "/#login-error=state")
    assert COOKIE_NAME not in victim.cookies
    query = parse_qs(urlsplit(back).query)
    tampered = back.replace(query["state"][0], "x" + query["state"][0][1:])
    assert await stranger.get(tampered) == (302, "/#login-error=state")


@pytest_twisted.ensureDeferred
async def test_a_minor_a_cancelled_login_and_a_replayed_code_are_refused(site: Any) -> None:
    _, facebook, base = site
    facebook.user = {**ANN, "birthday": "01/01/2015"}
    assert await log_in(Browser(base), base) == "/#login-error=under_18"
    facebook.user = dict(ANN)
    browser = Browser(base)
    _, dialog = await browser.get(f"{base}/auth/facebook/start")
    assert dialog is not None
    _, back = await browser.get(dialog)
    assert back is not None
    state = parse_qs(urlsplit(back).query)["state"][0]
    cancelled = f"{base}/auth/facebook/callback?error=access_denied&state={state}"
    assert await browser.get(cancelled) == (302, "/#login-error=cancelled")
    replay = Browser(base)
    _, dialog = await replay.get(f"{base}/auth/facebook/start")
    assert dialog is not None
    _, back = await replay.get(dialog)
    assert back is not None
    saved = dict(replay.cookies)
    assert await replay.get(back) == (302, "/")
    replay.cookies = saved
    assert await replay.get(back) == (302, "/#login-error=provider")  # Facebook refuses a code used twice


@pytest_twisted.ensureDeferred
async def test_providers_are_listed_and_logout_needs_this_sites_page(site: Any) -> None:
    _, _, base = site
    response = await treq.get(f"{base}/auth/providers", persistent=False)
    assert await response.json() == [{"name": "facebook", "label": "Facebook"}, {"name": "vk", "label": "VK"}]
    browser = Browser(base)
    await log_in(browser, base)
    assert await browser.request("POST", f"{base}/auth/logout", Origin="https://evil.example") == (403, None)
    assert COOKIE_NAME in browser.cookies
    assert await browser.request("POST", f"{base}/auth/logout", Origin=base) == (204, None)
    assert COOKIE_NAME not in browser.cookies
    unknown = await treq.get(f"{base}/auth/nobody/start", allow_redirects=False, persistent=False)
    assert unknown.code == 302 and unknown.headers.getRawHeaders(b"Location") == [b"/#login-error=provider"]


@pytest_twisted.ensureDeferred
async def test_no_email_token_or_birth_date_is_kept_or_logged(site: Any) -> None:
    server, facebook, base = site
    with capturedLogs() as events:
        await log_in(Browser(base), base)
        facebook.user = {**ANN, "id": "10002", "birthday": "01/01/2015"}  # a minor: refused, nothing kept
        await log_in(Browser(base), base)
    logged = "\n".join(formatEvent(event) + repr(event) for event in events).lower()
    secrets = ["ann@example.org", "04/02/1990", "1990", "01/01/2015", *facebook.tokens, APP_SECRET]
    for secret in secrets:
        assert secret.lower() not in logged
    for path in Path(server.data_dir).rglob("*"):
        if path.is_file():
            content = path.read_bytes().lower()
            for secret in secrets:
                assert secret.lower().encode() not in content, f"{secret} in {path.name}"


async def connected_as(server: RunningServer, browser: Browser | None, **hello: object) -> SignalingClient:
    """A WebSocket client carrying `browser`'s cookies (none for None), that said hello with `hello`."""
    headers = None
    if browser is not None and browser.cookies:
        headers = {"Cookie": "; ".join(f"{name}={value}" for name, value in browser.cookies.items())}
    client = await connect(reactor, server.url, headers=headers)
    client.send(hello_message(**hello))
    return client


@pytest_twisted.ensureDeferred
async def test_a_logged_in_user_is_its_account_on_every_device_and_a_ban_on_it_holds(site: Any) -> None:
    server, _, base = site
    browser = Browser(base)
    await log_in(browser, base)
    account_id = browser_account(browser)
    client = await connected_as(server, browser, gender=None)  # not said: the account's, from Facebook
    welcome = await client.expect("welcome")
    assert welcome["account"] == {
        "user_id": account_id,
        "providers": ["facebook"],
        "settings": {"lang": None, "translate_to": None, "translate": False, "want": "any", "countries": []},
    }
    board = server.service.getServiceNamed("signaling").factory.switchboard
    session = board.find(welcome["session_id"])
    assert session is not None and session.gender == "f" and session.user_id == account_id
    anonymous = await connected_as(server, None)
    assert (await anonymous.expect("welcome"))["account"] is None
    forged = Browser(base)
    forged.cookies[COOKIE_NAME] = browser.cookies[COOKIE_NAME][:-2] + "xx"
    assert (await (await connected_as(server, forged)).expect("welcome"))["account"] is None
    # A ban on the account ends its session, and holds for a login from another device.
    await server.moderation.ban("user_id", account_id, "insults", "harassment", 3600.0)
    assert (await client.expect("banned"))["type"] == "banned"
    other_device = Browser(base)
    await log_in(other_device, base)
    again = await connected_as(server, other_device, client={"device_id": "another-device"})
    assert (await again.expect("banned"))["type"] == "banned"
    assert (await again.wait_closed())[1] == 4004
    # And through another provider: VK's confirmed e-mail is Facebook's verified one, so it is the same account.
    through_vk = Browser(base)
    assert await log_in(through_vk, base, "vk") == "/"
    assert browser_account(through_vk) == account_id
    linked = await connected_as(server, through_vk, client={"device_id": "a-third-device"})
    assert (await linked.expect("banned"))["type"] == "banned"
    assert (await linked.wait_closed())[1] == 4004


@pytest_twisted.ensureDeferred
async def test_a_server_that_requires_a_login_refuses_an_anonymous_hello() -> None:
    facebook = FakeFacebook(APP_ID, APP_SECRET, user=dict(ANN))
    provider = listen(reactor, facebook)
    server = await start_server(
        reactor,
        "--require-login",
        *("--facebook-app-id", APP_ID, "--facebook-app-secret", APP_SECRET),
        *("--facebook-dialog-url", f"{provider.url}/dialog/oauth"),
        *("--facebook-graph-url", f"{provider.url}/v19.0"),
    )
    try:
        base = "http" + server.url.removeprefix("ws").removesuffix("/ws")
        anonymous = await connected_as(server, None)
        assert (await anonymous.expect("error"))["code"] == "login_required"
        assert (await anonymous.wait_closed())[1] == 4009
        browser = Browser(base)
        await log_in(browser, base)
        member = await connected_as(server, browser)
        assert (await member.expect("welcome"))["account"]["providers"] == ["facebook"]
    finally:
        await server.stop()
        await provider.stop()


@pytest_twisted.ensureDeferred
async def test_an_account_deleted_on_request_ends_its_sessions_and_refuses_its_logins(site: Any) -> None:
    server, _, base = site
    browser = Browser(base)
    await log_in(browser, base)
    client = await connected_as(server, browser)
    await client.expect("welcome")
    partner = await connected_as(server, None)
    await partner.expect("welcome")
    for searching in (client, partner):
        searching.send({"type": "search"})
        await searching.expect("searching")
    await client.expect("matched")
    await partner.expect("matched")
    response = await admin_request(server, "POST", f"/api/accounts/{browser_account(browser)}/delete")
    assert response.status == 200
    assert (await client.expect("error"))["code"] == "account_deleted"
    assert (await client.wait_closed())[1] == 4010
    assert (await partner.expect("partner_left"))["reason"] == "disconnect"
    assert await log_in(Browser(base), base) == "/#login-error=deleted"
    # The old cookie no longer logs in: the account is gone for signaling.
    assert (await (await connected_as(server, browser)).expect("welcome"))["account"] is None


async def me(
    browser: Browser, base: str, method: str, path: str = "", body: object = None, origin: str | None = None
) -> tuple[int, Any]:
    """A call to the user's own routes with `browser`'s cookies (and `origin` as Origin, if given)."""
    headers = {"Content-Type": ["application/json"]}
    if browser.cookies:
        headers["Cookie"] = ["; ".join(f"{name}={value}" for name, value in browser.cookies.items())]
    if origin is not None:
        headers["Origin"] = [origin]
    response = await treq.request(
        method,
        f"{base}/api/me{path}",
        headers=headers,
        data=None if body is None else json.dumps(body).encode(),
        persistent=False,
    )
    return response.code, await response.json()


@pytest_twisted.ensureDeferred
async def test_a_user_sees_changes_exports_and_deletes_its_own_account(site: Any) -> None:
    server, _, base = site
    assert (await me(Browser(base), base, "GET"))[0] == 401
    browser = Browser(base)
    await log_in(browser, base)
    account_id = browser_account(browser)
    code, mine = await me(browser, base, "GET")
    assert code == 200 and mine["id"] == account_id and mine["providers"] == ["facebook"]
    assert (mine["gender"], mine["country"]) == ("f", "DE") and "email" not in json.dumps(mine)
    assert mine["deletion_grace_s"] == 30 * 86400
    settings = {"lang": "de", "translate_to": "en", "translate": True, "want": "m", "countries": ["at", "DE"]}
    assert (await me(browser, base, "PATCH", "/settings", settings))[0] == 403  # not from the site's page
    code, changed = await me(browser, base, "PATCH", "/settings", settings, origin=base)
    assert code == 200 and changed["settings"] == {**settings, "countries": ["AT", "DE"]}
    code, refused = await me(browser, base, "PATCH", "/settings", {"want": "robots"}, origin=base)
    assert code == 400 and refused["error"]["code"] == "bad_request"
    client = await connected_as(server, browser)
    assert (await client.expect("welcome"))["account"]["settings"]["lang"] == "de"
    # The export: the account, a ban on it, a report it made (without the reported user's data).
    store = await server.store()
    report = await store.add_report(a_report_by(account_id), None)
    await server.moderation.ban("user_id", account_id, "rude", "harassment", 60.0)
    await client.expect("banned")
    code, exported = await me(browser, base, "GET", "/export")
    assert code == 200
    assert exported["account"]["id"] == account_id and exported["account"]["settings"]["translate"] is True
    assert [ban["reason"] for ban in exported["bans"]] == ["rude"]
    assert [made["id"] for made in exported["reports_made"]] == [report.id]
    assert "someone" not in json.dumps(exported) and "203.0.113.9" not in json.dumps(exported)
    # Deletion needs the confirmation, then the account is gone for its user.
    assert (await me(browser, base, "DELETE", body={}, origin=base))[0] == 400
    code, deleted = await me(browser, base, "DELETE", body={"confirm": True}, origin=base)
    assert code == 200 and deleted["deleted"] is True
    assert (await me(browser, base, "GET"))[0] == 401
    assert await log_in(Browser(base), base) == "/#login-error=deleted"
