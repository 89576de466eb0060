"""Logins through the reference web page end to end: `twistd vchat` with an OpenID Connect provider (a real
one: panva's oidc-provider, tests/oidc_server, run with node) and headless Chromium driven by Playwright through
the provider's own login and consent forms, in a network namespace that has only loopback.

Run by tests/test_web_account_e2e.py as

    unshare --net --pid --fork --kill-child --mount-proc PYTHON tests/e2e/account_scenario.py \
        --scenario account|login-required --artifacts DIR

It drives the page's account UI by the hooks of its contract (the `data-testid`s of the header's account area,
the account dialog and the login notice) and checks what the server did through the page's own `fetch` of
/api/me and the admin API. It prints one JSON object on its last line of stdout, as web_scenario.py does (the
shared parts are in harness.py); screenshots and the server's and the provider's logs go to DIR.

Scenarios:
- `account`: an anonymous page logs in through the provider's forms; its account dialog shows the account, its
  settings are saved (and applied) and read back; the account's gender matches it with a page that wants women
  (the admin API shows the session's account and gender); the data export; log out, and in again as the same
  account; deletion while matched (the partner sees "partner left", the admin API shows it deleted with a purge
  time, and a new login through the provider is refused with the page's notice); screenshots of the dialog on
  a desktop and a phone-wide page.
- `login-required`: with --require-login an anonymous page is refused (status `login-required`, no reconnects,
  the login button shown); once logged in it connects.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from harness import (
    SERVER_START_S,
    Peer,
    Ports,
    Run,
    ScenarioFailed,
    Service,
    answers_http,
    free_port,
    http_get,
    launch_chromium,
    main,
    new_page,
    start_process,
    start_vchat,
    wait_until,
)
from playwright.sync_api import Browser, Page, Response, Route, sync_playwright
from playwright.sync_api import Error as PlaywrightError

STATE_S = 10.0
"""How long the page may take to show what follows at once from what just happened."""
LOGIN_S = 15.0
"""How long one page load of a login (to the provider, through its forms, back to vchat) may take."""
CONNECT_S = 20.0
"""How long a match may take to reach `connected`, from Start (or from a rematch)."""
ROOT = Path(__file__).resolve().parent.parent.parent
OIDC_SERVER = ROOT / "tests" / "oidc_server"
ADMIN_TOKEN = "e2e-admin-token-" + secrets.token_hex(8)
CLIENT_ID = "vchat-e2e"
CLIENT_SECRET = "e2e-client-secret-" + secrets.token_hex(8)
LABEL = "Example"
LOGIN = "alice"
CLAIMS: dict[str, Any] = {
    "email": "alice@example.org",
    "email_verified": True,
    "gender": "female",
    "birthdate": "1990-04-02",
    "address": {"country": "DE"},
}
SETTINGS: dict[str, Any] = {
    "lang": "en",
    "translate": True,
    "translate_to": "es",
    "want": "any",
    "countries": [],
}
"""What the account dialog saves (after trying the interface in German), and /api/me then shows."""

FETCH_JS = """
async ([method, path]) => {
  const response = await fetch(path, { method, credentials: "same-origin" });
  return { status: response.status, body: await response.text() };
}
"""


# --- the servers --------------------------------------------------------------------------------------------


class Servers:
    """vchat and the OpenID Connect provider of one run, on loopback."""

    def __init__(self, run: Run, require_login: bool) -> None:
        self.ports = Ports()
        self.oidc_port = free_port(socket.SOCK_STREAM)
        self.vchat = f"http://127.0.0.1:{self.ports.ws}"
        self.issuer = f"http://127.0.0.1:{self.oidc_port}"
        with run.step("start the OpenID Connect provider"):
            self.provider = self._start_provider(run)
        with run.step("start twistd vchat with logins through it"):
            options = [
                "--oidc-issuer", self.issuer, "--oidc-client-id", CLIENT_ID,
                "--oidc-client-secret", CLIENT_SECRET, "--oidc-label", LABEL, "--rematch-after", "1",
            ]  # fmt: skip
            if require_login:
                options.append("--require-login")
            env = {**os.environ, "VCHAT_ADMIN_TOKEN": ADMIN_TOKEN}
            start_vchat(self.ports, run.workdir, run.artifacts / "vchat.log", run.keep, options, env=env)

    def _start_provider(self, run: Run) -> Service:
        """oidc-provider with vchat's client (its redirect URI as vchat builds it from the Host it is reached
        at) and the one user."""
        if not (OIDC_SERVER / "node_modules").is_dir():
            raise ScenarioFailed(f"{OIDC_SERVER}/node_modules is missing: scripts/test runs `npm ci` there")
        client = {
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uris": [f"{self.vchat}/auth/oidc/callback"],
        }
        env = {
            **os.environ,
            "OIDC_CLIENTS": json.dumps([client]),
            "OIDC_ACCOUNTS": json.dumps({LOGIN: CLAIMS}),
        }
        command = ["node", str(OIDC_SERVER / "server.mjs"), str(self.oidc_port)]
        service = start_process(
            "oidc-provider", command, run.artifacts / "oidc-provider.log", run.workdir, run.keep, env
        )
        discovery = f"{self.issuer}/.well-known/openid-configuration"
        wait_until("discovery document", lambda: answers_http(discovery), service, SERVER_START_S)
        return service

    def admin(self, path: str) -> dict[str, Any]:
        """GET `path` of the admin API, which must answer 200 with JSON."""
        status, _, body = http_get(f"http://127.0.0.1:{self.ports.admin}{path}", ADMIN_TOKEN)
        if status != 200:
            raise ScenarioFailed(f"admin API: GET {path} answered {status}: {body[:300]!r}")
        answer: dict[str, Any] = json.loads(body)
        return answer


# --- the page's account UI ----------------------------------------------------------------------------------


def open_page(browser: Browser, name: str, run: Run) -> Peer:
    """A page in a fresh browser context (its own cookies), recorded."""
    peer = Peer(name, new_page(browser))
    peer.watch(STATE_S)
    run.peers.append(peer)
    return peer


def wait_attribute(
    page: Page, testid: str, attribute: str, values: list[str], timeout: float, why: str
) -> str:
    """Wait until `testid`'s `attribute` is one of `values`; which it is."""
    script = """([testid, attribute, values]) => {
      const value = document.querySelector(`[data-testid="${testid}"]`)?.getAttribute(attribute);
      return values.includes(value) ? value : null;
    }"""
    try:
        handle = page.wait_for_function(
            script, arg=[testid, attribute, values], timeout=timeout * 1000, polling=100
        )
    except PlaywrightError as error:
        try:
            seen = page.evaluate(
                "([t, a]) => document.querySelector(`[data-testid=\"${t}\"]`)?.getAttribute(a) ?? '(no element)'",
                [testid, attribute],
            )
        except PlaywrightError:
            seen = "(unreadable)"
        raise ScenarioFailed(
            f"{why}: [data-testid={testid}] {attribute} is {seen!r}, not one of {values}, after {timeout:.0f}s"
        ) from error
    value: str = handle.json_value()
    return value


def account_area(peer: Peer, state: str, why: str) -> None:
    """The header's account area shows `state`."""
    wait_attribute(peer.page, "account", "data-state", [state], STATE_S, why)


def wait_status(peer: Peer, states: list[str], why: str, timeout: float = STATE_S) -> str:
    """The status line shows one of `states`; which."""
    try:
        return wait_attribute(peer.page, "status", "data-state", states, timeout, why)
    except ScenarioFailed as error:
        raise ScenarioFailed(f"{error}; {peer.describe()}") from None


def visible(page: Page, testid: str, why: str) -> None:
    """`testid` is (or becomes) visible."""
    try:
        page.get_by_test_id(testid).wait_for(state="visible", timeout=STATE_S * 1000)
    except PlaywrightError as error:
        raise ScenarioFailed(f"{why}: [data-testid={testid}] is not visible within {STATE_S:.0f}s") from error


def hidden(page: Page, testid: str, why: str) -> None:
    """`testid` is (or becomes) hidden, or is not there."""
    try:
        page.get_by_test_id(testid).wait_for(state="hidden", timeout=STATE_S * 1000)
    except PlaywrightError as error:
        raise ScenarioFailed(
            f"{why}: [data-testid={testid}] is still visible after {STATE_S:.0f}s"
        ) from error


def fetch(peer: Peer, path: str, method: str = "GET") -> tuple[int, Any]:
    """`path` fetched by the page itself (with its cookies): the status, and the body as JSON (or text)."""
    answer = peer.page.evaluate(FETCH_JS, [method, path])
    try:
        return answer["status"], json.loads(answer["body"])
    except ValueError:
        return answer["status"], answer["body"]


def login_cookie(peer: Peer, servers: Servers) -> bool:
    """Whether the page's browser context holds vchat's login cookie."""
    return any(cookie["name"] == "vchat_login" for cookie in peer.page.context.cookies(servers.vchat))


def log_in(peer: Peer, servers: Servers) -> list[str]:
    """Press "Log in with Example" and go through the provider's forms (the ones it shows: a login form, a
    consent form, or none when its session and the consent given before suffice) back to vchat; the forms
    filled."""
    page = peer.page
    button = page.get_by_test_id("login-oidc")
    visible(page, "login-oidc", "before logging in")
    forms: list[str] = []
    with page.expect_navigation(wait_until="domcontentloaded", timeout=LOGIN_S * 1000):
        button.click()
    for _ in range(3):
        url = urlsplit(page.url)
        if f"{url.scheme}://{url.netloc}" == servers.vchat:
            return forms
        if not (f"{url.scheme}://{url.netloc}" == servers.issuer and url.path.startswith("/interaction/")):
            raise ScenarioFailed(f"the login went to {page.url}, neither the provider's forms nor vchat")
        login = page.locator('input[name="login"]')
        if login.count():
            login.fill(LOGIN)
            page.locator('input[name="password"]').fill("any password will do")
            forms.append("login")
        elif page.locator('input[name="prompt"][value="consent"]').count():
            forms.append("consent")
        else:
            text = (page.text_content("body") or "")[:300]
            raise ScenarioFailed(f"the provider's page {page.url} has no login or consent form: {text!r}")
        with page.expect_navigation(wait_until="domcontentloaded", timeout=LOGIN_S * 1000):
            page.locator('button[type="submit"]').click()
    raise ScenarioFailed(f"still at the provider after {forms}: {page.url}")


def log_in_to_account(peer: Peer, servers: Servers, why: str) -> tuple[str, list[str]]:
    """`log_in`, which must land on vchat's / logged in: the account id (from /api/me), and the forms filled."""
    forms = log_in(peer, servers)
    url = urlsplit(peer.page.url)
    if url.path != "/" or url.fragment:
        raise ScenarioFailed(f"{why}: the login came back to {peer.page.url}, not to /")
    if not login_cookie(peer, servers):
        raise ScenarioFailed(f"{why}: back at {peer.page.url}, without the vchat_login cookie")
    account_area(peer, "logged-in", why)
    visible(peer.page, "account-open", why)
    hidden(peer.page, "login-oidc", why)
    status, me = fetch(peer, "/api/me")
    if status != 200:
        raise ScenarioFailed(f"{why}: GET /api/me answered {status}: {me}")
    if page_account(peer) != me["id"]:
        raise ScenarioFailed(f"{why}: window.vchat.account() is {page_account(peer)!r}, /api/me {me['id']!r}")
    return me["id"], forms


def page_account(peer: Peer) -> str | None:
    """The id of the account `window.vchat.account()` gives (None: none)."""
    account: str | None = peer.page.evaluate("window.vchat.account()?.id ?? null")
    return account


def confirm_age(peer: Peer) -> None:
    """Pass the 18+ gate: the page connects and says hello."""
    peer.page.get_by_test_id("age-confirm").click()


def wait_welcome(peer: Peer, before: int, why: str) -> dict[str, Any]:
    """The first `welcome` the page gets after its first `before`."""
    deadline = time.monotonic() + STATE_S
    while len(peer.welcomes) <= before:
        if time.monotonic() > deadline:
            raise ScenarioFailed(f"{why}: no welcome within {STATE_S:.0f}s; {peer.describe()}")
        peer.page.wait_for_timeout(100)  # Playwright's events are handled while it waits
    return peer.welcomes[before]


def open_dialog(peer: Peer) -> None:
    """Press "My account"."""
    peer.page.get_by_test_id("account-open").click()
    visible(peer.page, "account-dialog", "after pressing My account")


def close_dialog(peer: Peer) -> None:
    """Close the account dialog."""
    peer.page.get_by_test_id("account-close").click()
    hidden(peer.page, "account-dialog", "after pressing close")


def save_settings(peer: Peer, lang: str, why: str) -> dict[str, Any]:
    """Fill the settings form with `SETTINGS` but `lang`, save, wait for `saved`; the PATCH's answer."""
    page = peer.page
    page.get_by_test_id("settings-lang").select_option(lang)
    page.get_by_test_id("settings-translate").set_checked(SETTINGS["translate"])
    page.get_by_test_id("settings-translate-to").select_option(SETTINGS["translate_to"])
    page.get_by_test_id("settings-want").select_option(SETTINGS["want"])
    page.get_by_test_id("settings-countries").fill(", ".join(SETTINGS["countries"]))
    with page.expect_response(
        lambda response: response.url.endswith("/api/me/settings"), timeout=STATE_S * 1000
    ) as answer:
        page.get_by_test_id("settings-save").click()
    response = answer.value
    if response.status != 200:
        raise ScenarioFailed(
            f"{why}: PATCH /api/me/settings answered {response.status}: {response.text()[:300]}"
        )
    state = wait_attribute(page, "settings-status", "data-state", ["saved", "error"], STATE_S, why)
    if state != "saved":
        text = page.get_by_test_id("settings-status").text_content()
        raise ScenarioFailed(f"{why}: the settings status is {state!r}: {text!r}")
    body: dict[str, Any] = response.json()
    return body


def html_lang(peer: Peer, lang: str, why: str) -> None:
    """The interface is in `lang`."""
    try:
        peer.page.wait_for_function(
            "(lang) => document.documentElement.lang === lang", arg=lang, timeout=STATE_S * 1000, polling=100
        )
    except PlaywrightError as error:
        seen = peer.page.evaluate("document.documentElement.lang")
        raise ScenarioFailed(f"{why}: the interface is in {seen!r}, not {lang!r}") from error


def wait_match(run: Run, a: Peer, b: Peer, since: tuple[int, int], why: str) -> None:
    """Both pages got a new `matched` (the same match) and reach `connected`."""
    for peer in (a, b):
        peer.wait_state("connected", CONNECT_S, why)
    new_a, new_b = a.matches[since[0] :], b.matches[since[1] :]
    if not new_a or not new_b or new_a[-1] != new_b[-1]:
        raise ScenarioFailed(f"{why}: not matched together (A's matches {new_a}, B's {new_b})")
    run.result.setdefault("matches", []).append(new_a[-1])


def no_personal_data(value: Any, path: str = "") -> list[str]:
    """Where `value` holds an e-mail address, a birth date or a key named so."""
    found: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if any(word in key.lower() for word in ("email", "mail", "birth")):
                found.append(f"{path}.{key}")
            found += no_personal_data(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += no_personal_data(item, f"{path}[{i}]")
    elif isinstance(value, str) and (CLAIMS["email"] in value or CLAIMS["birthdate"] in value):
        found.append(path)
    return found


def fail_deletion(route: Route) -> None:
    """A server that fails `DELETE /api/me` (and answers the rest)."""
    if route.request.method != "DELETE":
        route.continue_()
        return
    body = {"error": {"code": "internal", "message": "refused by the test, on purpose"}}
    route.fulfill(status=500, content_type="application/json", body=json.dumps(body))


def delete_account(peer: Peer) -> Response:
    """Confirm the deletion in the open dialog (ticking the box, and opening the confirmation, if needed); the
    answer to `DELETE /api/me`."""
    page = peer.page
    if not page.get_by_test_id("account-delete-confirm-box").is_visible():
        page.get_by_test_id("account-delete").click()
    page.get_by_test_id("account-delete-understand").check()
    with page.expect_response(
        lambda response: urlsplit(response.url).path == "/api/me" and response.request.method == "DELETE",
        timeout=STATE_S * 1000,
    ) as answer:
        page.get_by_test_id("account-delete-confirm").click()
    return answer.value


# --- the scenarios ------------------------------------------------------------------------------------------


def account_scenario(run: Run) -> None:
    """The whole life of an account through the page: see the module."""
    servers = Servers(run, require_login=False)
    playwright = run.stack.enter_context(sync_playwright())
    browser = launch_chromium(playwright, run.stack)
    a = open_page(browser, "A", run)
    callbacks: list[str] = []
    a.page.on(
        "response",
        lambda response: (
            callbacks.append(f"{response.status} {response.headers.get('location')}")
            if "/auth/oidc/callback" in response.url
            else None
        ),
    )

    with run.step("A opens /: anonymous, with the button Log in with Example"):
        a.page.goto(f"{servers.vchat}/")
        account_area(a, "anonymous", "an anonymous page")
        visible(a.page, "login-oidc", "an anonymous page")
        button = a.page.get_by_test_id("login-oidc")
        text, href = (button.text_content() or "").strip(), button.get_attribute("href")
        if text != f"Log in with {LABEL}" or href != "/auth/oidc/start":
            raise ScenarioFailed(f"the login button says {text!r} and leads to {href!r}")

    with run.step("log in through the provider's login and consent forms: back at / logged in"):
        account_id, forms = log_in_to_account(a, servers, "the first login")
        run.result["login"] = {"account_id": account_id, "forms": forms}
        if forms != ["login", "consent"]:
            raise ScenarioFailed(f"the first login went through {forms}, not the login then consent forms")

    with run.step("My account: the id, the provider, the gender"):
        open_dialog(a)
        shown = {
            testid: (a.page.get_by_test_id(testid).text_content() or "").strip()
            for testid in ("account-id", "account-providers", "account-gender")
        }
        run.result["dialog"] = shown
        if shown["account-id"] != account_id:
            raise ScenarioFailed(f"the dialog shows account {shown['account-id']!r}, /api/me {account_id!r}")
        if LABEL not in shown["account-providers"] and "oidc" not in shown["account-providers"]:
            raise ScenarioFailed(f"the dialog's providers are {shown['account-providers']!r}, not {LABEL}")
        if shown["account-gender"] != "a woman":
            raise ScenarioFailed(f"the dialog says the gender is {shown['account-gender']!r}, not 'a woman'")

    with run.step("screenshots of the dialog, desktop and 390 px wide"):
        run.screenshot("dialog-desktop", [a])
        a.page.set_viewport_size({"width": 390, "height": 844})
        run.screenshot("dialog-390px", [a])
        a.page.set_viewport_size({"width": 1000, "height": 760})

    with run.step("settings: the interface in German, then back; translation to Spanish; saved and applied"):
        save_settings(a, "de", "saving lang de")
        html_lang(a, "de", "saved lang de")
        saved = save_settings(a, SETTINGS["lang"], "saving the settings")
        html_lang(a, SETTINGS["lang"], "saved lang en")
        status, me = fetch(a, "/api/me")
        run.result["settings"] = {"patch": saved, "me": me.get("settings") if status == 200 else me}
        if status != 200 or me["settings"] != SETTINGS:
            raise ScenarioFailed(f"GET /api/me answered {status}: {me}; the settings saved were {SETTINGS}")
        want = a.page.get_by_test_id("want").input_value()
        if want != SETTINGS["want"]:
            raise ScenarioFailed(
                f"the saved want ({SETTINGS['want']}) is not applied: the filter is {want!r}"
            )
        close_dialog(a)

    b = open_page(browser, "B", run)
    with run.step("A (a woman by the account) and B (wants women) confirm age, Start: matched"):
        confirm_age(a)
        gender = a.page.get_by_test_id("gender").input_value()
        if gender != "account":
            raise ScenarioFailed(f"A's gender select is {gender!r}, not 'account' (as the account says)")
        b.page.goto(f"{servers.vchat}/")
        confirm_age(b)
        b.page.get_by_test_id("gender").select_option("m")
        b.page.get_by_test_id("want").select_option("f")
        wait_welcome(a, 0, "A after the age gate")
        wait_welcome(b, 0, "B after the age gate")
        a.page.get_by_test_id("start").click()
        b.page.get_by_test_id("start").click()
        wait_match(run, a, b, (0, 0), "A and B")
        if not a.hellos or "gender" in a.hellos[-1]:
            raise ScenarioFailed(f"A's hello gave a gender: {a.hellos}")
        if (a.welcomes[-1].get("account") or {}).get("user_id") != account_id:
            raise ScenarioFailed(f"A's welcome does not name the account: {a.welcomes[-1].get('account')}")

    with run.step("admin API: A's session is the account's, gender f"):
        session = servers.admin(f"/api/sessions/{a.welcomes[-1]['session_id']}")
        run.result["session"] = {key: session.get(key) for key in ("user_id", "account", "gender", "state")}
        if (session["account"], session["user_id"], session["gender"]) != (account_id, account_id, "f"):
            raise ScenarioFailed(f"A's session in the admin API: {run.result['session']}")

    with run.step(
        "export: Download my data has the account, its provider and settings, no e-mail or birth date"
    ):
        open_dialog(a)
        link = a.page.get_by_test_id("account-export")
        if (link.get_attribute("href"), link.get_attribute("download")) != (
            "/api/me/export",
            "vchat-data.json",
        ):
            raise ScenarioFailed(
                f"the export link: href {link.get_attribute('href')!r}, download {link.get_attribute('download')!r}"
            )
        with a.page.expect_download(timeout=STATE_S * 1000) as download:
            link.click()
        exported = json.loads(Path(download.value.path()).read_text())
        account = exported.get("account") or {}
        run.result["export"] = {key: account.get(key) for key in ("id", "providers", "settings")}
        if (account.get("id"), account.get("providers"), account.get("settings")) != (
            account_id,
            ["oidc"],
            SETTINGS,
        ):
            raise ScenarioFailed(f"the export's account: {run.result['export']}")
        leaks = no_personal_data(exported)
        if leaks:
            raise ScenarioFailed(f"the export holds an e-mail or birth date at {leaks}")

    with run.step("log out: the page reloads anonymous, /api/me is 401"):
        mark_b = b.mark()
        with a.page.expect_navigation(wait_until="domcontentloaded", timeout=STATE_S * 1000):
            a.page.get_by_test_id("account-logout").click()
        account_area(a, "anonymous", "after logging out")
        hidden(a.page, "account-open", "after logging out")
        if page_account(a) is not None:
            raise ScenarioFailed(f"after logging out window.vchat.account() is {page_account(a)!r}")
        status, body = fetch(a, "/api/me")
        if status != 401 or login_cookie(a, servers):
            raise ScenarioFailed(
                f"after logging out GET /api/me answered {status} ({body}); cookie kept: {login_cookie(a, servers)}"
            )
        b.wait_seen(["partner-left"], mark_b, STATE_S, "A logged out while matched")

    with run.step("log in again through the button: the same account"):
        again, forms = log_in_to_account(a, servers, "the second login")
        run.result["login_again"] = {"account_id": again, "forms": forms}
        if again != account_id:
            raise ScenarioFailed(f"the second login is account {again!r}, the first was {account_id!r}")

    with run.step("A and B matched again"):
        matched = (len(a.matches), len(b.matches))
        welcomes = len(a.welcomes)
        confirm_age(a)
        wait_welcome(a, welcomes, "A after the age gate")
        a.page.get_by_test_id("start").click()
        wait_match(run, a, b, matched, "A and B again")

    with run.step("a deletion the server fails shows account-action-status error"):
        open_dialog(a)
        a.page.get_by_test_id("account-delete").click()
        visible(a.page, "account-delete-confirm-box", "after pressing Delete")
        if a.page.get_by_test_id("account-delete-confirm").is_enabled():
            raise ScenarioFailed("the delete confirmation is enabled before the box is ticked")
        a.page.get_by_test_id("account-delete-understand").check()
        a.page.route("**/api/me", fail_deletion)
        try:
            delete_account(a)
            wait_attribute(
                a.page, "account-action-status", "data-state", ["error"], STATE_S, "a failed deletion"
            )
            visible(a.page, "account-action-status", "a failed deletion")
        finally:
            a.page.unroute("**/api/me", fail_deletion)

    with run.step("delete the account while matched: A account-deleted, B partner left"):
        mark_b = b.mark()
        if a.states()[-1]["state"] != "connected" or b.states()[-1]["state"] != "connected":
            raise ScenarioFailed(f"A and B are not in their match any more: {a.describe()}; {b.describe()}")
        answer = delete_account(a)
        if answer.status != 200:
            raise ScenarioFailed(f"DELETE /api/me answered {answer.status}: {answer.text()[:300]}")
        a.wait_state("account-deleted", STATE_S, "after deleting the account")
        account_area(a, "anonymous", "after deleting the account")
        hidden(a.page, "account-dialog", "after deleting the account")
        b.wait_seen(["partner-left"], mark_b, STATE_S, "A's account was deleted while matched")
        status, body = fetch(a, "/api/me")
        if status != 401:
            raise ScenarioFailed(f"after deleting the account GET /api/me answered {status}: {body}")

    with run.step("admin API: the account is deleted, with a purge time"):
        deleted = servers.admin(f"/api/accounts/{account_id}")
        run.result["deleted"] = {key: deleted.get(key) for key in ("id", "deleted_at", "purge_at")}
        if not deleted.get("deleted_at") or not deleted.get("purge_at"):
            raise ScenarioFailed(f"the admin API's account: {run.result['deleted']}")

    with run.step("logging in again is refused: /#login-error=deleted and the notice"):
        callbacks.clear()
        forms = log_in(a, servers)
        run.result["login_refused"] = {"forms": forms, "callback": callbacks[:]}
        if not callbacks or not callbacks[-1].endswith("/#login-error=deleted"):
            raise ScenarioFailed(
                f"the provider's callback answered {callbacks}, not a redirect to /#login-error=deleted"
            )
        wait_attribute(a.page, "notice", "data-login-error", ["deleted"], STATE_S, "the refused login")
        visible(a.page, "notice", "the refused login")
        run.result["login_refused"]["notice"] = (a.page.get_by_test_id("notice").text_content() or "").strip()
        account_area(a, "anonymous", "the refused login")
        if login_cookie(a, servers):
            raise ScenarioFailed("the refused login set the vchat_login cookie")
        try:
            a.page.wait_for_function("() => location.hash === ''", timeout=STATE_S * 1000, polling=100)
        except PlaywrightError as error:
            raise ScenarioFailed(f"the page kept the fragment: {a.page.url}") from error


def login_required_scenario(run: Run) -> None:
    """--require-login: refused while anonymous, connected once logged in."""
    servers = Servers(run, require_login=True)
    playwright = run.stack.enter_context(sync_playwright())
    a = open_page(launch_chromium(playwright, run.stack), "A", run)

    with run.step("an anonymous page confirms age: login-required, the login button, no reconnects"):
        a.page.goto(f"{servers.vchat}/")
        account_area(a, "anonymous", "an anonymous page")
        confirm_age(a)
        a.wait_state("login-required", STATE_S, "an anonymous page with --require-login")
        visible(a.page, "login-oidc", "login-required")
        a.page.wait_for_timeout(1500)
        opened = [frame for frame in a.frames if frame.startswith("open ")]
        if len(opened) != 1 or a.state() != "login-required":
            raise ScenarioFailed(f"after login-required: {len(opened)} WebSocket connections, {a.describe()}")

    with run.step("log in: back at / logged in"):
        account_id, forms = log_in_to_account(a, servers, "the login")
        run.result["login"] = {"account_id": account_id, "forms": forms}

    with run.step("logged in, the page connects"):
        welcomes = len(a.welcomes)
        confirm_age(a)
        welcome = wait_welcome(a, welcomes, "a logged-in page with --require-login")
        if (welcome.get("account") or {}).get("user_id") != account_id:
            raise ScenarioFailed(f"the page's welcome does not name the account: {welcome}")
        wait_status(a, ["idle", "searching"], "a logged-in page with --require-login")


SCENARIOS = {"account": account_scenario, "login-required": login_required_scenario}


if __name__ == "__main__":
    sys.exit(main(__doc__, SCENARIOS))
