"""The reference web client (vchat/web/) end to end, in two real headless Chromiums with fake cameras.

Each test runs tests/e2e/web_scenario.py in a fresh network namespace that has only loopback (`unshare --net`),
so that ICE finds no other address to use or to send media to: the script starts `twistd vchat` (and for the
relay test a real coturn), a TCP proxy per browser that can reset its connections, and the two browsers, and
prints what happened as JSON. The namespace has its own process ids too (`--pid --fork --kill-child`): killing
`unshare` kills everything the scenario started. Screenshots of both pages while connected, and the server's
and coturn's logs, are kept in `$VCHAT_ARTIFACTS/web-client/SCENARIO` (default `artifacts/`, not committed).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 100
"""A bound on one scenario (it takes about 10 s; each of its waits is bounded on its own, far below this)."""


@dataclass(frozen=True)
class Script:
    """An end-to-end script of tests/e2e (harness.main's command line), the tools it needs, and the folder of
    `$VCHAT_ARTIFACTS` its scenarios' artifacts go to."""

    path: Path
    artifacts: str
    tools: tuple[str, ...]


WEB_CLIENT = Script(ROOT / "tests" / "e2e" / "web_scenario.py", "web-client", ("chromium", "turnserver"))


def artifacts_dir(script: Script, scenario: str) -> Path:
    """Where a scenario's screenshots and logs go: `$VCHAT_ARTIFACTS`, else artifacts/ in the checkout."""
    return Path(os.environ.get("VCHAT_ARTIFACTS") or ROOT / "artifacts") / script.artifacts / scenario


def namespace(script: Script) -> list[str]:
    """`unshare` into new network and process-id namespaces (as root, or as a user mapped to root), once the
    tools `script` needs are there."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.fail("util-linux's unshare is not installed")
    for tool in script.tools:
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: run scripts/test, which installs it")
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    return [unshare, *user, "--net", "--pid", "--fork", "--kill-child", "--mount-proc"]


def run_scenario(scenario: str, scratch: Path, script: Script = WEB_CLIENT) -> dict[str, Any]:
    """Run one scenario of `script` in its namespace, its data files in `scratch`; its JSON result. Killed (by
    its process group) after TIMEOUT_S."""
    artifacts = artifacts_dir(script, scenario)
    command = [
        *namespace(script),
        sys.executable,
        str(script.path),
        "--scenario",
        scenario,
        "--artifacts",
        str(artifacts),
        "--scratch",
        str(scratch),
    ]
    process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(
            f"the {scenario} scenario ran over {TIMEOUT_S}s and was killed; artifacts in {artifacts}\n"
            f"stderr:\n{stderr.decode(errors='replace')[-3000:]}"
        )
    finally:
        if process.poll() is None:  # interrupted, or pytest's own timeout: leave nothing running
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    lines = stdout.decode(errors="replace").strip().splitlines()
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, ValueError):
        pytest.fail(
            f"the {scenario} scenario printed no result (exit status {process.returncode}):\n"
            f"stdout:\n{stdout.decode(errors='replace')[-3000:]}\nstderr:\n{stderr.decode(errors='replace')[-3000:]}"
        )
    print(f"{scenario}: {result.get('seconds')} s; screenshots and logs in {artifacts}")
    for path in result.get("screenshots", []):
        print(f"  {path}")
    return result


def explain(result: dict[str, Any]) -> str:
    """A failed scenario, for a person: the step, why, and what each page and server showed."""
    lines = [
        f"the {result.get('scenario')} scenario failed at: {result.get('failed_step')}",
        str(result.get("error")),
        "passed: " + ", ".join(f"{step['step']} ({step['seconds']} s)" for step in result.get("steps", [])),
        f"screenshots and logs: {result.get('artifacts')}",
    ]
    for name, page in result.get("pages", {}).items():
        lines += [
            f"--- page {name}: status {page['state']!r}",
            "status line, as it changed:",
            *page["states"],
        ]
        lines += ["console:", *page["console"], "uncaught errors:", *page["page_errors"]]
        lines += ["WebSocket messages (type only):", *page["ws_messages"][-40:]]
    for name, log in result.get("logs", {}).items():
        lines += [f"--- {name} log (end)", log]
    return "\n".join(lines)


def check(result: dict[str, Any]) -> None:
    """The scenario passed, and no page had an uncaught script error."""
    assert result["ok"], explain(result)
    for name, page in result["pages"].items():
        assert page["page_errors"] == [], f"page {name} had uncaught script errors: {page['page_errors']}"
    for path in result["screenshots"]:
        assert Path(path).stat().st_size > 0, f"empty screenshot {path}"


def test_a_call_through_vchats_stun_survives_a_drop_then_next_and_report(tmp_path: Path) -> None:
    """Match, video both ways, chat, a WebSocket reset under one page (resumed, same match, the call goes
    on), Next (the partner sees "partner left" and searches by itself; they meet again after
    --rematch-after), and Report (stored with a JPEG snapshot, read back through the admin API)."""
    result = run_scenario("direct", tmp_path)
    check(result)
    assert len(result["screenshots"]) == 2, result["screenshots"]
    for name, video in result["videos"]["first match"].items():
        assert video["width"] > 0 and video["time"] > 0, f"page {name}'s remote video: {video}"
    resumed = result["resume"]["a_states"]
    assert "reconnecting" in resumed and resumed[-1] == "connected", result["resume"]
    assert "partner-left" in result["next"]["b_states"], result["next"]
    assert result["report"]["snapshot_type"] == "image/jpeg", result["report"]


def test_relay_only_calls_go_through_coturn_and_show_no_address(tmp_path: Path) -> None:
    """With --ice-relay-only and a real coturn: the call works, the selected candidate pair is a relay on
    both ends on both sides, and neither page gathers or is told any candidate but a relay."""
    result = run_scenario("relay", tmp_path)
    check(result)
    for name, stats in result["candidates"].items():
        selected = stats["selected"]
        assert (selected["local"]["type"], selected["remote"]["type"]) == ("relay", "relay"), (
            f"{name}: {stats}"
        )
        assert set(stats["localTypes"] + stats["remoteTypes"]) == {"relay"}, f"{name}: {stats}"
