"""Logins through the reference web page (vchat/web/) end to end, in headless Chromium, against a real OpenID
Connect provider (panva's oidc-provider, tests/oidc_server, run with node).

Each test runs tests/e2e/account_scenario.py in a fresh network namespace that has only loopback, as
test_web_client_e2e.py runs its calls (the same runner): the script starts the provider, `twistd vchat` with
logins through it, and the browser, which goes through the provider's own login and consent forms. Screenshots
of the account dialog (desktop and 390 px wide), and the server's and the provider's logs, are kept in
`$VCHAT_ARTIFACTS/web-account/SCENARIO` (default `artifacts/`, not committed).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_web_client_e2e import ROOT, Script, check, run_scenario

OIDC_SERVER = ROOT / "tests" / "oidc_server"
ACCOUNT = Script(ROOT / "tests" / "e2e" / "account_scenario.py", "web-account", ("chromium", "node"))


@pytest.fixture(autouse=True)
def provider_installed() -> None:
    """The provider's packages are there (scripts/test runs `npm ci` in tests/oidc_server)."""
    if not (OIDC_SERVER / "node_modules").is_dir():
        pytest.fail(f"{OIDC_SERVER}/node_modules is missing: run scripts/test, which runs `npm ci` there")


def test_an_account_through_the_page_from_login_to_deletion(tmp_path: Path) -> None:
    """Log in through the provider's forms; the account dialog shows the account and saves settings; the
    account's gender matches the user with one who wants women; the export; log out and in again as the same
    account; deletion while matched ends the match, and a new login is refused with the page's notice."""
    result = run_scenario("account", tmp_path, ACCOUNT)
    check(result)
    assert result["login"]["forms"] == ["login", "consent"], result["login"]
    assert result["login_again"]["account_id"] == result["login"]["account_id"], result["login_again"]
    assert result["session"]["gender"] == "f", result["session"]
    assert result["deleted"]["purge_at"], result["deleted"]
    assert {Path(path).name for path in result["screenshots"]} >= {
        "account-dialog-desktop-A.png",
        "account-dialog-390px-A.png",
    }, result["screenshots"]


def test_require_login_refuses_an_anonymous_page_until_it_logs_in(tmp_path: Path) -> None:
    """With --require-login: `login-required` and the login button while anonymous; connected once logged in."""
    result = run_scenario("login-required", tmp_path, ACCOUNT)
    check(result)
