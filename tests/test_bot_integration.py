"""The bot against a real vchat server over loopback: in this reactor, and as the `vchat-bot` command."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.utils import getProcessOutputAndValue

from vchat.bot.behaviour import BotSettings
from vchat.bot.fleet import BotFleet, LoadRun
from vchat.bot.visitor import VisitorState

ROOT = Path(__file__).resolve().parent.parent
_FAST = BotSettings(dwell_min=0.4, dwell_max=0.9, ping_interval=0.3, search_timeout=2.0)


def _check_report(report: dict[str, Any], clients: int) -> None:
    assert report["clients"] == clients
    assert report["connected"] == clients
    assert report["matches"] > 0
    assert report["messages_relayed"] > 0
    assert report["messages_relayed_by_type"].get("signal", 0) > 0
    assert report["errors"] == 0, report["error_codes"]
    assert report["drops"] == 0 and report["connect_failures"] == 0
    for key in ("time_to_match_ms", "rtt_ms"):
        summary = report[key]
        assert summary is not None, key
        assert 0 <= summary["p50"] <= summary["p95"] <= summary["p99"] <= summary["max"]
    assert report["close_codes"] == {"1000": clients}


@pytest.mark.parametrize("codec", ["json", "msgpack"])
@pytest_twisted.ensureDeferred
async def test_fleet_in_this_reactor(vchat_server: str, codec: str) -> None:
    from twisted.internet import reactor

    lines: list[str] = []
    fleet = BotFleet(reactor, vchat_server, codec=codec, settings=_FAST, seed=7)
    clients = 6
    report = await LoadRun(fleet, clients=clients, duration=2.5, ramp=0.5, progress=lines.append).run()
    _check_report(report, clients)
    assert report["codec"] == codec
    assert len(lines) >= 2 and "connected=" in lines[-1]
    # stopped cleanly: every bot closed, no connection or timer left behind
    assert fleet.open_transports == 0
    assert all(bot.state is VisitorState.STOPPED and not bot.timer_pending for bot in fleet.bots)
    assert fleet.stats.connected == 0
    assert fleet.stop().called  # stopping again: already done


@pytest_twisted.ensureDeferred
async def test_cli_as_a_subprocess(vchat_server: str, tmp_path: Path) -> None:
    from twisted.internet import reactor

    report_file = tmp_path / "report.json"
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    args = [
        "-m", "vchat.bot",
        "--url", vchat_server,
        "--clients", "4",
        "--duration", "3",
        "--ramp", "0.5",
        "--dwell-min", "0.4",
        "--dwell-max", "0.9",
        "--ping-interval", "0.3",
        "--codec", "msgpack",
        "--seed", "3",
        "--report", str(report_file),
    ]  # fmt: skip
    out, err, code = await getProcessOutputAndValue(
        sys.executable, args, env=env, path=str(ROOT), reactor=reactor
    )
    assert code == 0, err.decode()
    assert b"Traceback" not in err and b"CRITICAL" not in err, err.decode()
    text = out.decode()
    assert text.count("connected=") >= 3  # progress lines, one a second
    assert "time to match:" in text and "rtt:" in text
    report = json.loads(report_file.read_text())
    _check_report(report, 4)
