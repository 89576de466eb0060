"""The moderator page in a real headless Chromium (Debian's `chromium`, driven by Playwright): a wrong token
and the right one, a report's snapshot arriving from a client, a ban from it that closes the reported session,
lifting the ban, a flag dismissed, and the offline banner while the admin endpoint is gone.

The server runs in the test's reactor. Playwright's blocking calls run in a worker thread, which hands work to
the reactor (clients, checks of what they received) with `blockingCallFromThread` and waits for its result, so
the two sides take turns in one linear script.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import socket
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest
import pytest_twisted
from playwright.sync_api import ConsoleMessage, Page, Route, expect, sync_playwright
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import blockingCallFromThread, deferToThread

from vchat.admin.service import AdminService
from vchat.store.records import NewFlag
from vchat.testing import Message, RunningServer, SignalingClient, start_server

_T = TypeVar("_T")

SNAPSHOT = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDABALDA4MChAODQ4SERATGCgaGBYWGDEjJR0oOjM9PDkzODdASFxOQERXRTc4UG1RV19iZ2hn"
    "Pk1xeXBkeFxlZ2P/2wBDARESEhgVGC8aGi9jQjhCY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2NjY2Nj"
    "Y2P/wAARCAAMABADASIAAhEBAxEB/8QAFQABAQAAAAAAAAAAAAAAAAAABAb/xAAVEAEBAAAAAAAAAAAAAAAAAAAAA//EABQBAQAAAAAA"
    "AAAAAAAAAAAAAAX/xAAXEQADAQAAAAAAAAAAAAAAAAAABEEF/9oADAMBAAIRAxEAPwCZoLQqgtCGdBR+n//Z"
)
"""A real 16x12 JPEG (a red-to-blue gradient a canvas drew in Chromium, as the web client makes its
snapshots), so that the page has to decode it to show it."""

COMMENT = '<img src=x data-injected="1"> he was rude'
"""A comment that would be an image, were the page to treat report text as markup."""

WAIT_MS = 10_000
"""A generous bound on what the page should show within a refresh or two (it polls every 3 seconds)."""

SEVEN_DAYS = 7 * 86400

BLOB_URL = re.compile(r"^blob:")
"""What a snapshot's src must be: a blob: URL of the bytes fetched with the token."""


def chromium() -> str:
    """Debian's chromium; the test fails (not skips) without it: CI installs it through scripts/test."""
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("chromium is not installed: run scripts/test, which installs Debian's chromium")
    return path


def on_reactor(work: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run the coroutine `work()` in the reactor's thread; wait here, in the browser's thread, for what it
    returns."""
    result: _T = blockingCallFromThread(reactor, lambda: Deferred.fromCoroutine(work()))
    return result


@contextmanager
def page_in_chromium(executable: str, width: int, height: int) -> Iterator[tuple[Page, list[str]]]:
    """A page of `width` x `height` CSS pixels in a fresh headless Chromium, and a list that collects the
    page's script errors and Content-Security-Policy violations as they happen."""
    problems: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            problems.append(message.text)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox"] if os.geteuid() == 0 else []
        )
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(WAIT_MS)  # for actions; and for assertions, a Playwright-wide setting:
            expect.set_options(timeout=WAIT_MS)
            page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
            page.on("console", console)
            yield page, problems
        finally:
            browser.close()


def stored_tokens(page: Page) -> list[int]:
    """How many items sessionStorage and localStorage hold."""
    counts: list[int] = page.evaluate("[sessionStorage.length, localStorage.length]")
    return counts


def sign_in(page: Page, token: str) -> None:
    """Paste `token` and press Sign in."""
    page.get_by_test_id("token-input").fill(token)
    page.get_by_test_id("login").click()


# --- what the reactor's side does ---------------------------------------------------------------------------


async def report_from_a_match(server: RunningServer) -> tuple[SignalingClient, SignalingClient, str, str]:
    """Two clients matched, and the woman's report of the man with a snapshot, stored:
    (her client, his client, his session id, the match id)."""
    her, him, matched, _ = await server.matched_pair()
    her.send(
        {
            "type": "report",
            "id": 1,
            "match_id": matched["match_id"],
            "reason": "nudity",
            "comment": COMMENT,
            "snapshot": base64.b64encode(SNAPSHOT).decode("ascii"),
        }
    )
    report_id = (await her.expect("reported"))["report_id"]
    report = await (await server.store()).get_report(report_id)
    assert report is not None and report.has_snapshot
    return her, him, report.reported_user_id, matched["match_id"]


async def flag_someone(server: RunningServer) -> str:
    """An automatic rule's flag of someone offline; its id."""
    flag = NewFlag(
        user_id="u-flagged",
        device_id="dev-flagged",
        rule="many-reports",
        summary={"reports": 5, "window": "1h"},
        created_at=reactor.seconds(),
    )
    return (await (await server.store()).add_flag(flag)).id


async def banned_and_closed(
    her: SignalingClient, him: SignalingClient
) -> tuple[Message, int | None, Message]:
    """What the banned man was told and his close code, and what his partner was told; then she leaves."""
    banned = await him.expect("banned")
    _, code, _ = await him.wait_closed()
    left = await her.expect("partner_left")
    her.sendClose(1000)
    await her.wait_closed()
    return banned, code, left


# --- the tests ----------------------------------------------------------------------------------------------


def moderate(server: RunningServer, executable: str) -> None:
    """In a browser thread: sign in, see a report arrive with its snapshot, ban from it, lift the ban."""
    assert server.admin_url is not None
    with page_in_chromium(executable, 390, 844) as (page, problems):  # a phone-sized screen
        page.goto(server.admin_url + "/")
        expect(page.get_by_test_id("token-input")).to_be_focused()

        sign_in(page, "not-the-admin-token-0123456789")
        expect(page.get_by_test_id("auth-error")).to_be_visible()
        expect(page.get_by_test_id("auth-error")).to_contain_text("Wrong token")
        expect(page.get_by_test_id("count-online")).to_be_hidden()
        assert stored_tokens(page) == [0, 0]  # a refused token is not kept

        sign_in(page, server.admin_token)
        expect(page.get_by_test_id("auth-error")).to_be_hidden()
        expect(page.get_by_test_id("logout")).to_be_visible()
        expect(page.get_by_test_id("count-online")).to_have_text("0")
        expect(page.get_by_test_id("count-cluster")).to_be_hidden()  # a single node
        expect(page.get_by_test_id("count-bans")).to_have_text("0")
        expect(page.get_by_test_id("report")).to_have_count(0)
        assert stored_tokens(page) == [1, 0]  # this tab's sessionStorage only: "remember" was not ticked

        # once signed in, a client reports her partner and a rule flags someone: a refresh shows them
        her, him, his_id, _ = on_reactor(lambda: report_from_a_match(server))
        flag_id = on_reactor(lambda: flag_someone(server))
        expect(page.get_by_test_id("count-online")).to_have_text("2")
        expect(page.get_by_test_id("count-matched")).to_have_text("2")
        card = page.get_by_test_id("report")
        expect(card).to_have_count(1)
        expect(card).to_contain_text("Nudity")
        expect(card).to_contain_text(his_id)
        expect(card).to_contain_text(COMMENT)  # as text: the markup in it is shown, not made
        expect(page.locator("[data-injected]")).to_have_count(0)
        snapshot = card.get_by_test_id("report-snapshot")
        expect(snapshot).to_have_js_property("naturalWidth", 16)  # fetched with the token, and decoded
        expect(snapshot).to_have_attribute("src", BLOB_URL)
        expect(card).to_be_in_viewport()  # the newest report shows without scrolling, even on a phone

        duration = card.get_by_test_id("ban-duration")
        duration.select_option(label="7 days")
        updated = page.get_by_test_id("updated").text_content()
        expect(page.get_by_test_id("updated")).not_to_have_text(updated or "")  # a refresh went by...
        expect(duration).to_have_value(str(SEVEN_DAYS))  # ...and left the card, and the choice in it, alone
        card.get_by_test_id("ban").click()
        expect(card).to_have_count(0)
        row = page.get_by_test_id("ban-row").filter(has_text=his_id)
        expect(row).to_have_count(1)
        expect(row).to_contain_text("Nudity")  # the category is the report's reason
        expect(row).to_contain_text("moderator")
        expect(row).to_contain_text("in 7 days")
        expect(page.get_by_test_id("count-bans")).to_have_text("1")

        banned, code, left = on_reactor(lambda: banned_and_closed(her, him))
        assert banned["type"] == "banned" and code == 4004
        until = banned["until"]
        assert isinstance(until, int) and abs(until - (reactor.seconds() + SEVEN_DAYS)) < 60
        assert left["reason"] == "disconnect"
        expect(page.get_by_test_id("count-online")).to_have_text("0")

        row.get_by_test_id("lift").click()
        expect(row).to_have_count(0)
        expect(page.get_by_test_id("count-bans")).to_have_text("0")

        flag = page.get_by_test_id("flag")
        expect(flag).to_have_attribute("data-flag-id", flag_id)
        expect(flag).to_contain_text("many-reports")  # the rule, by its name in the config
        expect(flag).to_contain_text("u-flagged")
        expect(flag).to_contain_text("1h")
        flag.get_by_test_id("dismiss").click()
        expect(flag).to_have_count(0)

        page.reload()  # the token stays for this tab
        expect(page.get_by_test_id("count-online")).to_have_text("0")
        page.get_by_test_id("logout").click()
        expect(page.get_by_test_id("token-input")).to_be_visible()
        expect(page.get_by_test_id("count-online")).to_be_hidden()
        assert stored_tokens(page) == [0, 0]
        assert problems == []


@pytest_twisted.ensureDeferred
async def test_sign_in_see_a_report_ban_and_lift(server: RunningServer) -> None:
    await deferToThread(moderate, server, chromium())
    store = await server.store()
    assert await store.list_bans(True, reactor.seconds(), 10) == []
    assert await store.list_flags("open", 10) == []


def lose_the_server(server: RunningServer, executable: str) -> None:
    """In a browser thread: sign in, stop the admin endpoint, see the banner, start it again, see it go."""
    assert server.admin_url is not None
    admin = server.service.getServiceNamed("admin")
    assert isinstance(admin, AdminService)
    with page_in_chromium(executable, 1280, 800) as (page, problems):
        page.goto(server.admin_url + "/")
        sign_in(page, server.admin_token)
        expect(page.get_by_test_id("count-online")).to_have_text("0")
        expect(page.get_by_test_id("offline")).to_be_hidden()

        on_reactor(lambda: stop(admin))
        expect(page.get_by_test_id("offline")).to_be_visible()
        expect(page.get_by_test_id("offline")).to_contain_text("unreachable")
        expect(page.get_by_test_id("count-online")).to_have_text("0")  # what was known stays, marked as old

        on_reactor(lambda: start(admin))
        expect(page.get_by_test_id("offline")).to_be_hidden()
        expect(page.get_by_test_id("auth-error")).to_be_hidden()
        assert problems == []


async def stop(admin: AdminService) -> None:
    """Stop the admin endpoint, as an operator or a shutdown does."""
    await admin.stopService()


async def start(admin: AdminService) -> None:
    """Start the admin endpoint again, on the same port."""
    admin.startService()
    await admin.whenListening()


def free_port() -> int:
    """A loopback TCP port free now: the admin endpoint must come back on the same one."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest_twisted.ensureDeferred
async def test_a_lost_server_shows_the_offline_banner_until_it_is_back() -> None:
    executable = chromium()
    server = await start_server(reactor, "--admin", f"tcp:{free_port()}:interface=127.0.0.1")
    try:
        await deferToThread(lose_the_server, server, executable)
    finally:
        await server.stop()


def as_a_cluster(route: Route) -> None:
    """The server's `/api/stats`, as a node of a four-node cluster would answer it."""
    stats = route.fetch().json()
    stats["cluster"] = {
        "enabled": True,
        "node_id": "node-1",
        "redis_up": True,
        "nodes": [{"node_id": f"node-{n}", "online": 256, "searching": 0, "matched": 0} for n in range(4)],
        "totals": {"online": 1024, "searching": 0, "matched": 0},
        "bus": {"sent_total": 0, "received_total": 0, "dropped_total": 0, "malformed_total": 0},
    }
    route.fulfill(json=stats)


def see_the_cluster(server: RunningServer, executable: str) -> None:
    """In a browser thread: sign in to a node of a cluster; see its own online count and the cluster's."""
    assert server.admin_url is not None
    with page_in_chromium(executable, 1280, 800) as (page, problems):
        page.route("**/api/stats", as_a_cluster)
        page.goto(server.admin_url + "/")
        sign_in(page, server.admin_token)
        expect(page.get_by_test_id("count-online")).to_have_text("0")
        expect(page.get_by_test_id("count-cluster")).to_have_text(re.compile(r"^1\D?024 on 4 nodes$"))
        expect(page.locator("#online-label")).to_have_text("Online here")
        assert problems == []


def see_stun(server: RunningServer, executable: str, shown: str) -> None:
    """In a browser thread: sign in; the STUN count shows `shown`."""
    assert server.admin_url is not None
    with page_in_chromium(executable, 1280, 800) as (page, problems):
        page.goto(server.admin_url + "/")
        sign_in(page, server.admin_token)
        expect(page.get_by_test_id("count-stun")).to_have_text(shown)
        assert problems == []


@pytest_twisted.ensureDeferred
async def test_a_process_without_a_stun_responder_shows_it_off_not_down() -> None:
    server = await start_server(reactor)  # --stun-udp 0, no --stun-tcp: no responder
    try:
        await deferToThread(see_stun, server, chromium(), "off")
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_a_node_of_a_cluster_shows_the_cluster_s_online_count(server: RunningServer) -> None:
    # Until twistd runs in cluster mode here, the node's answer is made a cluster node's on its way to the page.
    await deferToThread(see_the_cluster, server, chromium())
