"""The reference web client end to end: `twistd vchat` (and coturn), a cuttable TCP proxy per browser, and two
headless Chromiums with fake cameras, driven by Playwright, in a network namespace that has only loopback.

Run by tests/test_web_client_e2e.py as

    unshare --net --pid --fork --kill-child --mount-proc PYTHON tests/e2e/web_scenario.py \
        --scenario direct|relay --artifacts DIR

It refuses to run where the network has any interface but loopback (ICE would then use, and send media to, the
machine's own addresses). It prints one JSON object on its last line of stdout: `ok`, the steps it passed with
their times, and on failure the step that failed, why, and each page's status, states seen, console and
WebSocket message types; screenshots and the server's and coturn's logs go to DIR.

What it shares with bench/web_latency.py (the namespace, starting twistd, launching Chromium) is in harness.py.

Scenarios:
- `direct`: ICE with vchat's STUN responder only: match, video both ways, chat, the screenshot, a WebSocket
  reset under one page (resumed, same match, the call goes on), Next (the partner sees "partner left" and
  searches by itself; both are matched again after --rematch-after), Report (stored with a JPEG snapshot, read
  back through the admin API).
- `relay`: `--ice-relay-only` through a real coturn: match, video both ways, chat, and the selected candidate
  pair is a relay one on both sides, with no other kind of candidate told to either partner.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import socket
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import (
    SERVER_START_S,
    Ports,
    ScenarioFailed,
    Service,
    enter,
    http_get,
    isolate_loopback,
    launch_chromium,
    new_page,
    start_process,
    stun_answers,
    wait_until,
)
from harness import start_vchat as start_twistd_vchat
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, WebSocket, sync_playwright
from playwright.sync_api import Error as PlaywrightError

CONNECT_S = 20.0
"""How long a match may take to reach `connected`, from Start (or from a rematch)."""
STATE_S = 10.0
"""How long the page may take to show a state that follows at once from what just happened."""
VIDEO_S = 10.0
"""How long after `connected` the remote video may take to show its first frames."""
REMATCH_AFTER_S = 4
"""Small, so that the two browsers, alone on the server, meet again after Next; but longer than the 2 s the
page shows "partner left" for, so that both pages show `searching` before they meet again."""
TURN_SECRET = "e2e-turn-secret-" + secrets.token_hex(8)
ADMIN_TOKEN = "e2e-admin-token-" + secrets.token_hex(8)

VIDEO_JS = """
(selector) => {
  const v = document.querySelector(selector);
  if (!v) return null;
  return { width: v.videoWidth, height: v.videoHeight, time: v.currentTime, paused: v.paused,
           ready: v.readyState, stream: !!v.srcObject };
}
"""

CANDIDATES_JS = """
async () => {
  const pc = window.vchat && window.vchat.pc();
  if (!pc) return { error: "window.vchat.pc() returned no RTCPeerConnection" };
  const reports = new Map();
  (await pc.getStats()).forEach((report) => reports.set(report.id, report));
  let pair = null;
  for (const report of reports.values()) {
    if (report.type === "transport" && report.selectedCandidatePairId) pair = reports.get(report.selectedCandidatePairId);
  }
  if (!pair) {
    for (const report of reports.values()) {
      if (report.type === "candidate-pair" && report.nominated && report.state === "succeeded") pair = report;
    }
  }
  const describe = (candidate) => candidate && { type: candidate.candidateType, protocol: candidate.protocol,
                                                 relayProtocol: candidate.relayProtocol || null };
  const kinds = (type) => [...reports.values()].filter((r) => r.type === type).map((r) => r.candidateType);
  const configuration = pc.getConfiguration();
  return {
    iceServers: configuration.iceServers.map((server) => server.urls),
    iceTransportPolicy: configuration.iceTransportPolicy,
    connectionState: pc.connectionState,
    selected: pair ? { state: pair.state, local: describe(reports.get(pair.localCandidateId)),
                       remote: describe(reports.get(pair.remoteCandidateId)) } : null,
    localTypes: kinds("local-candidate"),
    remoteTypes: kinds("remote-candidate"),
  };
}
"""


# --- processes: vchat and coturn ----------------------------------------------------------------------------


def start_coturn(ports: Ports, workdir: Path, artifacts: Path, keep: Callable[[Service], None]) -> Service:
    """coturn on loopback with the TURN REST API secret; loopback peers allowed, as everything here is."""
    turnserver = shutil.which("turnserver")
    if turnserver is None:
        raise ScenarioFailed("coturn's turnserver is not installed: scripts/test installs it")
    command = [
        turnserver, "-n", "--listening-ip=127.0.0.1", f"--listening-port={ports.turn}", "--relay-ip=127.0.0.1",
        "--min-port=50000", "--max-port=50100", "--use-auth-secret", f"--static-auth-secret={TURN_SECRET}",
        "--realm=vchat.test", "--no-tls", "--no-dtls", "--no-cli", "--allow-loopback-peers",
        "--log-file=stdout", "--simple-log", f"--pidfile={workdir / 'turnserver.pid'}",
    ]  # fmt: skip
    service = start_process("coturn", command, artifacts / "turnserver.log", workdir, keep)
    wait_until("STUN answer from coturn", lambda: stun_answers(ports.turn), service, SERVER_START_S)
    return service


def start_vchat(
    ports: Ports, workdir: Path, artifacts: Path, relay: bool, keep: Callable[[Service], None]
) -> Service:
    """`twistd -n vchat` on loopback: WebSocket and web client, admin API, STUN; TURN through coturn if `relay`."""
    options = ["--rematch-after", str(REMATCH_AFTER_S)]
    if relay:
        options += ["--ice-relay-only", "--turn-url", f"turn:127.0.0.1:{ports.turn}?transport=udp"]
        options += ["--turn-secret", TURN_SECRET]
    env = {**os.environ, "VCHAT_ADMIN_TOKEN": ADMIN_TOKEN}
    return start_twistd_vchat(ports, workdir, artifacts / "vchat.log", keep, options, env=env)


# --- the proxy that drops connections -----------------------------------------------------------------------


class _Side(asyncio.Protocol):
    """One side of a proxied connection: what it receives goes to the other side."""

    def __init__(self, proxy: CuttableProxy) -> None:
        self.proxy = proxy
        self.transport: asyncio.Transport | None = None
        self.other: _Side | None = None
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.proxy.sides.add(self)

    def data_received(self, data: bytes) -> None:
        if self.other is not None and self.other.transport is not None:
            self.other.transport.write(data)
        else:
            self.pending.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.proxy.sides.discard(self)
        if self.other is not None and self.other.transport is not None:
            self.other.transport.close()

    def reset(self) -> None:
        """Close with RST (SO_LINGER 0): no FIN, so no close frame and no orderly end."""
        if self.transport is None or self.transport.is_closing():
            return
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()


class _Downstream(_Side):
    """The browser's side: opens the connection to the server, then pipes."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.transport is not None
        self.transport.pause_reading()
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        try:
            _, upstream = await loop.create_connection(
                lambda: _Side(self.proxy), "127.0.0.1", self.proxy.target
            )
        except OSError:
            self.transport.close()
            return
        if self.transport.is_closing():  # the browser went away meanwhile
            assert upstream.transport is not None
            upstream.transport.close()
            return
        upstream.other, self.other = self, upstream
        for data in self.pending:
            assert upstream.transport is not None
            upstream.transport.write(data)
        self.pending = []
        self.transport.resume_reading()


class CuttableProxy:
    """A TCP proxy on loopback in front of one port, in a thread of its own. `cut()` resets every connection
    through it at once, both ways, as when a phone loses its network: the server sees the WebSocket end
    without a close frame, the browser sees its socket fail."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.sides: set[_Side] = set()
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), name=f"proxy-{target}", daemon=True)
        self.thread.start()
        if not ready.wait(5):
            raise ScenarioFailed("the TCP proxy did not start")

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            self.loop.create_server(lambda: _Downstream(self), "127.0.0.1", 0)
        )
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()
        server.close()
        for side in list(self.sides):
            side.reset()
        self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.close()

    def cut(self) -> int:
        """Reset every open connection; how many connections (browser to server) there were."""

        async def cut_all() -> int:
            sides = list(self.sides)
            for side in sides:
                side.reset()
            return len([side for side in sides if isinstance(side, _Downstream)])

        return asyncio.run_coroutine_threadsafe(cut_all(), self.loop).result(5)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


# --- the browsers ---------------------------------------------------------------------------------------------


@dataclass
class Peer:
    """One browser and its page, with what the test saw of it."""

    name: str
    browser: Browser
    page: Page
    proxy: CuttableProxy
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    frames: list[str] = field(default_factory=list)
    welcomes: list[dict[str, Any]] = field(default_factory=list)
    matches: list[str] = field(default_factory=list)

    # -- what the page shows

    def state(self) -> str | None:
        try:
            value: str | None = self.page.get_by_test_id("status").get_attribute("data-state", timeout=2000)
            return value
        except PlaywrightError as error:
            return f"(unreadable: {error.message.splitlines()[0]})"

    def states(self) -> list[dict[str, Any]]:
        try:
            log: list[dict[str, Any]] = self.page.evaluate("window.__e2e ? window.__e2e.states : []")
            return log
        except PlaywrightError:
            return []

    def mark(self) -> int:
        """A place in the state log: `wait_seen` looks only at what comes after it."""
        return len(self.states())

    def describe(self) -> str:
        seen = " -> ".join(entry["state"] or "?" for entry in self.states()[-12:])
        return f"{self.name}: status {self.state()!r} (last states: {seen or 'none'})"

    def wait_state(self, state: str, timeout: float, why: str) -> None:
        """Wait until the status is `state` now."""
        try:
            self.page.wait_for_function(
                "(s) => document.querySelector('[data-testid=\"status\"]')?.getAttribute('data-state') === s",
                arg=state,
                timeout=timeout * 1000,
                polling=100,
            )
        except PlaywrightError as error:
            raise ScenarioFailed(
                f"{why}: {self.name} did not show `{state}` within {timeout:.0f}s; {self.describe()}"
            ) from error

    def wait_seen(self, states: list[str], since: int, timeout: float, why: str) -> None:
        """Wait until the status has shown each of `states`, in this order, after `since`."""
        try:
            self.page.wait_for_function(
                """([wanted, since]) => {
                  let i = 0;
                  for (const entry of window.__e2e.states.slice(since)) if (entry.state === wanted[i]) i += 1;
                  return i >= wanted.length;
                }""",
                arg=[states, since],
                timeout=timeout * 1000,
                polling=100,
            )
        except PlaywrightError as error:
            seen = [entry["state"] for entry in self.states()[since:]]
            raise ScenarioFailed(
                f"{why}: {self.name} did not show {' then '.join(states)} within {timeout:.0f}s "
                f"(states since: {seen}); {self.describe()}"
            ) from error

    def video(self, testid: str = "remote-video") -> dict[str, Any] | None:
        value: dict[str, Any] | None = self.page.evaluate(VIDEO_JS, f'[data-testid="{testid}"]')
        return value

    def wait_video_plays(self, why: str, timeout: float = VIDEO_S) -> dict[str, Any]:
        """Wait until the remote video has a size and its time advances."""
        selector = '[data-testid="remote-video"]'
        try:
            self.page.wait_for_function(
                "(sel) => { const v = document.querySelector(sel); return !!v && v.videoWidth > 0 && v.currentTime > 0; }",
                arg=selector,
                timeout=timeout * 1000,
                polling=100,
            )
            first = self.video()
            assert first is not None
            self.page.wait_for_function(
                "([sel, t]) => document.querySelector(sel).currentTime > t + 0.2",
                arg=[selector, first["time"]],
                timeout=5000,
                polling=100,
            )
        except PlaywrightError as error:
            raise ScenarioFailed(
                f"{why}: {self.name}'s remote video did not play within {timeout:.0f}s "
                f"(video: {self.video()}); {self.describe()}"
            ) from error
        video = self.video()
        assert video is not None
        return video

    def chat_log_has(self, text: str, timeout: float, why: str) -> None:
        try:
            self.page.wait_for_function(
                "(text) => (document.querySelector('[data-testid=\"chat-log\"]')?.textContent || '').includes(text)",
                arg=text,
                timeout=timeout * 1000,
                polling=100,
            )
        except PlaywrightError as error:
            log = self.page.get_by_test_id("chat-log").text_content() or ""
            raise ScenarioFailed(
                f"{why}: {text!r} did not appear in {self.name}'s chat log within {timeout:.0f}s "
                f"(chat log: {log[-300:]!r}); {self.describe()}"
            ) from error

    def say(self, text: str) -> None:
        box = self.page.get_by_test_id("chat-input")
        box.fill(text)
        box.press("Enter")

    def report(self) -> dict[str, Any]:
        """Everything about this page a failure message needs."""
        return {
            "state": self.state(),
            "states": [
                f"{entry['t']}ms {entry['state']}: {entry['text'][:80]}" for entry in self.states()[-30:]
            ],
            "console": self.console[-40:],
            "page_errors": self.errors,
            "ws_messages": self.frames[-60:],
            "session_ids": [welcome.get("session_id") for welcome in self.welcomes],
            "match_ids": self.matches,
        }

    # -- what it sends and receives (types and ids only: no SDP, no chat text)

    def on_websocket(self, socket_: WebSocket) -> None:
        self.frames.append(f"open {socket_.url}")
        socket_.on("framesent", lambda payload: self._frame("->", payload))
        socket_.on("framereceived", lambda payload: self._frame("<-", payload))
        socket_.on("close", lambda _: self.frames.append("closed"))

    def _frame(self, direction: str, payload: str | bytes) -> None:
        try:
            message = json.loads(payload)
        except (ValueError, TypeError):
            self.frames.append(f"{direction} (not JSON)")
            return
        if not isinstance(message, dict):
            return
        kind = str(message.get("type"))
        detail = ""
        if kind == "welcome" and direction == "<-":
            welcome = {
                key: message.get(key) for key in ("session_id", "resumed", "match", "ice_transport_policy")
            }
            welcome["ice_servers"] = [
                {key: (value if key == "urls" else "(hidden)") for key, value in server.items()}
                for server in message.get("ice_servers") or []
                if isinstance(server, dict)
            ]
            self.welcomes.append(welcome)
            detail = f" resumed={message.get('resumed')} match={(message.get('match') or {}).get('match_id')}"
        elif kind == "matched":
            self.matches.append(str(message.get("match_id")))
            detail = f" {message.get('match_id')} role={message.get('role')}"
        elif kind == "signal":
            payload_ = message.get("payload") or {}
            detail = f" {payload_.get('type') or ('candidate' if 'candidate' in payload_ else '?')}"
        elif kind in ("error", "partner_left"):
            detail = f" {message.get('code') or message.get('reason')}"
        elif kind == "hello":
            detail = " resume" if message.get("resume") else ""
        elif kind == "ping" or kind == "pong":
            return
        self.frames.append(f"{time.monotonic():.1f} {direction} {kind}{detail}")


def open_peer(playwright: Playwright, name: str, proxy: CuttableProxy, stack: ExitStack) -> Peer:
    """A fresh headless Chromium with a fake camera, its page loaded through `proxy`, age confirmed."""
    browser = launch_chromium(playwright, stack)
    page = new_page(browser)
    peer = Peer(name, browser, page, proxy)
    page.on("console", lambda message: _console(peer, message))
    page.on("pageerror", lambda error: peer.errors.append(str(error)))
    page.on("websocket", peer.on_websocket)
    page.on("response", lambda response: _failed_response(peer, response.status, response.url))
    page.set_default_timeout(STATE_S * 1000)
    enter(page, f"http://127.0.0.1:{proxy.port}/")
    return peer


def _failed_response(peer: Peer, status: int, url: str) -> None:
    if status >= 400:
        peer.console.append(f"{time.monotonic():.1f} HTTP {status}: {url}")


def _console(peer: Peer, message: ConsoleMessage) -> None:
    where = message.location.get("url", "")
    peer.console.append(
        f"{time.monotonic():.1f} {message.type}: {message.text[:500]}" + (f" ({where})" if where else "")
    )


# --- the scenarios ------------------------------------------------------------------------------------------


class Run:
    """One scenario's record: steps passed, timings, facts gathered, and where artifacts went."""

    def __init__(self, scenario: str, artifacts: Path) -> None:
        self.scenario = scenario
        self.artifacts = artifacts
        self.started = time.monotonic()
        self.result: dict[str, Any] = {
            "ok": False,
            "scenario": scenario,
            "artifacts": str(artifacts),
            "steps": [],
            "screenshots": [],
        }
        self.peers: list[Peer] = []
        self.services: list[Service] = []

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        began = time.monotonic()
        self.result["current_step"] = name
        yield
        self.result["steps"].append({"step": name, "seconds": round(time.monotonic() - began, 2)})

    def screenshot(self, label: str) -> None:
        for peer in self.peers:
            path = self.artifacts / f"{self.scenario}-{label}-{peer.name}.png"
            try:
                peer.page.screenshot(path=str(path), timeout=5000)
                self.result["screenshots"].append(str(path))
            except PlaywrightError as error:
                self.result.setdefault("screenshot_errors", []).append(f"{path.name}: {error.message[:200]}")


def connect_both(run: Run, a: Peer, b: Peer, why: str) -> None:
    """Both pages reach `connected` and play each other's video."""
    a.wait_state("connected", CONNECT_S, why)
    b.wait_state("connected", CONNECT_S, why)
    run.result.setdefault("videos", {})[why] = {
        a.name: a.wait_video_plays(why),
        b.name: b.wait_video_plays(why),
    }


def chat_both_ways(a: Peer, b: Peer, why: str) -> None:
    token = secrets.token_hex(3)
    a.say(f"hello from {a.name} {token}")
    b.chat_log_has(f"hello from {a.name} {token}", STATE_S, why)
    b.say(f"hi {a.name}, {b.name} here {token}")
    a.chat_log_has(f"hi {a.name}, {b.name} here {token}", STATE_S, why)


def start_both(run: Run, a: Peer, b: Peer) -> None:
    """A woman who wants anyone and a man who wants women: they match each other, and only each other."""
    with run.step("choose filters and press Start on both pages"):
        a.page.get_by_test_id("gender").select_option("f")
        a.page.get_by_test_id("want").select_option("any")
        b.page.get_by_test_id("gender").select_option("m")
        b.page.get_by_test_id("want").select_option("f")
        a.page.get_by_test_id("start").click()
        b.page.get_by_test_id("start").click()
    with run.step("matched: connected, remote video plays on both pages"):
        connect_both(run, a, b, "first match")


def direct_scenario(run: Run, a: Peer, b: Peer, ports: Ports) -> None:
    """ICE through vchat's STUN: the whole life of a match, a dropped WebSocket, Next, and Report."""
    stun_before = stun_answered(ports)
    start_both(run, a, b)
    with run.step("ICE used vchat's STUN responder, and nothing else"):
        stun = f"stun:127.0.0.1:{ports.stun}"
        stats = {peer.name: peer.page.evaluate(CANDIDATES_JS) for peer in (a, b)}
        run.result["candidates"] = stats
        for name, facts in stats.items():
            if facts.get("iceServers") != [[stun]] or facts.get("iceTransportPolicy") != "all":
                raise ScenarioFailed(
                    f"{name}'s RTCPeerConnection is not configured with only {stun}: {facts}"
                )
        answered = stun_answered(ports) - stun_before
        run.result["stun_requests_answered"] = answered
        if answered < 1:
            raise ScenarioFailed("vchat's STUN responder answered no request while the browsers connected")
    with run.step("chat both ways"):
        chat_both_ways(a, b, "chat in the first match")
    with run.step("screenshot while connected"):
        run.screenshot("connected")

    with run.step("WebSocket of A reset under it: reconnecting, then connected in the same match"):
        match_before = a.matches[-1] if a.matches else None
        welcomes_before = len(a.welcomes)
        mark_a, mark_b = a.mark(), b.mark()
        cut = a.proxy.cut()
        if cut < 1:
            raise ScenarioFailed(f"the proxy had no connection of A's to cut; {a.describe()}")
        a.wait_seen(
            ["reconnecting", "connected"], mark_a, STATE_S + CONNECT_S, "after the WebSocket was reset"
        )
        a.wait_state("connected", CONNECT_S, "after the WebSocket was reset")
        resumed = a.welcomes[welcomes_before:]
        if not resumed or not resumed[-1].get("resumed"):
            raise ScenarioFailed(
                f"A's new connection did not resume its session (welcomes since the reset: {resumed})"
            )
        match_after = (resumed[-1].get("match") or {}).get("match_id")
        if match_after != match_before:
            raise ScenarioFailed(f"the resumed session is in match {match_after!r}, not {match_before!r}")
        left = [
            entry["state"] for entry in b.states()[mark_b:] if entry["state"] in ("partner-left", "searching")
        ]
        if left:
            raise ScenarioFailed(
                f"B left the match while A was reconnecting (B's states: {left}); {b.describe()}"
            )
        run.result["resume"] = {
            "connections_cut": cut,
            "a_states": [entry["state"] for entry in a.states()[mark_a:]],
            "b_states": [entry["state"] for entry in b.states()[mark_b:]],
        }
    with run.step("after the resume: chat both ways, video still plays"):
        chat_both_ways(a, b, "chat after the resume")
        a.wait_video_plays("after the resume")
        b.wait_video_plays("after the resume")
        left = [
            entry["state"] for entry in b.states()[mark_b:] if entry["state"] in ("partner-left", "searching")
        ]
        if left:
            raise ScenarioFailed(f"B left the match after A resumed (B's states: {left}); {b.describe()}")

    with run.step("Next on A: B sees partner left, both search, and meet again after --rematch-after"):
        mark_a, mark_b = a.mark(), b.mark()
        matches_before = len(a.matches)
        a.page.get_by_test_id("next").click()
        b.wait_seen(["partner-left"], mark_b, STATE_S, "after A pressed Next")
        b.wait_seen(
            ["partner-left", "searching"], mark_b, STATE_S, "B searches again by itself after partner left"
        )
        a.wait_seen(["searching"], mark_a, STATE_S, "after A pressed Next")
        told = [i for i, frame in enumerate(b.frames) if frame.endswith("<- partner_left next")]
        after_left = b.frames[told[-1] :] if told else []
        if not any(frame.endswith(("-> search", "-> next")) for frame in after_left):
            raise ScenarioFailed(
                f"B did not send `search` after `partner_left` (messages since: {after_left or b.frames[-20:]})"
            )
        run.result["next"] = {
            "a_states": [entry["state"] for entry in a.states()[mark_a:]],
            "b_states": [entry["state"] for entry in b.states()[mark_b:]],
            "b_partner_left_text": next(
                (entry["text"] for entry in b.states()[mark_b:] if entry["state"] == "partner-left"), None
            ),
        }
    with run.step("rematched: connected, remote video plays on both pages"):
        connect_both(run, a, b, "rematch")
        if len(a.matches) <= matches_before:
            raise ScenarioFailed(f"A is connected but got no new `matched` (matches: {a.matches})")

    with run.step("Report from A: stored with a JPEG snapshot"):
        before = a.welcomes[-1]["session_id"] if a.welcomes else None
        a.page.get_by_test_id("report").click()
        a.page.get_by_test_id("report-reason").select_option("harassment")
        a.page.get_by_test_id("report-send").click()
        run.result["report"] = check_report(
            ports, reporter=before, reported=b.welcomes[-1]["session_id"] if b.welcomes else None
        )


def stun_answered(ports: Ports) -> int:
    """How many STUN requests vchat has answered, from the admin API."""
    status, _, body = http_get(f"http://127.0.0.1:{ports.admin}/api/stats", ADMIN_TOKEN)
    if status != 200:
        raise ScenarioFailed(f"GET /api/stats answered {status}: {body[:300]!r}")
    answered: int = json.loads(body)["stun"]["answered_total"]
    return answered


def check_report(ports: Ports, reporter: str | None, reported: str | None) -> dict[str, Any]:
    """The report arrives in the admin API within a few seconds, with a JPEG snapshot."""
    base = f"http://127.0.0.1:{ports.admin}"
    deadline = time.monotonic() + STATE_S
    items: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        status, _, body = http_get(f"{base}/api/reports", ADMIN_TOKEN)
        if status != 200:
            raise ScenarioFailed(f"GET /api/reports answered {status}: {body[:300]!r}")
        items = json.loads(body)["items"]
        if items:
            break
        time.sleep(0.2)
    if len(items) != 1:
        raise ScenarioFailed(
            f"expected one report within {STATE_S:.0f}s of pressing Report, the admin API has {len(items)}"
        )
    report = items[0]
    facts = {
        "id": report["id"],
        "reason": report["reason"],
        "has_snapshot": report["has_snapshot"],
        "reporter_is_a": report["reporter"]["user_id"] == reporter,
        "reported_is_b": report["reported"]["user_id"] == reported,
    }
    if report["reason"] != "harassment":
        raise ScenarioFailed(f"the report's reason is {report['reason']!r}, not the one chosen: harassment")
    if not (facts["reporter_is_a"] and facts["reported_is_b"]):
        raise ScenarioFailed(
            f"the report is not A's report of B: {report['reporter']}, {report['reported']['user_id']}"
        )
    if not report["has_snapshot"]:
        raise ScenarioFailed(f"the report has no snapshot: {report}")
    status, content_type, image = http_get(f"{base}/api/reports/{report['id']}/snapshot", ADMIN_TOKEN)
    facts.update(snapshot_status=status, snapshot_type=content_type, snapshot_bytes=len(image))
    if status != 200 or content_type != "image/jpeg" or not image.startswith(b"\xff\xd8\xff"):
        raise ScenarioFailed(
            f"the snapshot is not a JPEG: status {status}, type {content_type!r}, starts {image[:8].hex()}"
        )
    return facts


def relay_scenario(run: Run, a: Peer, b: Peer, ports: Ports) -> None:
    """Relay-only ICE through coturn: the call works, and neither side uses or learns anything but relays."""
    start_both(run, a, b)
    with run.step("chat both ways"):
        chat_both_ways(a, b, "chat through relays")
    with run.step("screenshot while connected"):
        run.screenshot("connected")
    with run.step("selected candidate pair is relay on both sides"):
        pairs: dict[str, Any] = {}
        for peer in (a, b):
            stats = peer.page.evaluate(CANDIDATES_JS)
            pairs[peer.name] = stats
            turn = f"turn:127.0.0.1:{ports.turn}?transport=udp"
            if stats.get("iceTransportPolicy") != "relay" or [turn] not in stats.get("iceServers", []):
                raise ScenarioFailed(
                    f"{peer.name}'s RTCPeerConnection is not set to relay through {turn}: {stats}"
                )
            selected = stats.get("selected") or {}
            local = (selected.get("local") or {}).get("type")
            remote = (selected.get("remote") or {}).get("type")
            if (local, remote) != ("relay", "relay"):
                raise ScenarioFailed(
                    f"{peer.name}'s selected candidate pair is not relay on both ends: {stats}"
                )
            others = {kind for kind in stats["localTypes"] + stats["remoteTypes"] if kind != "relay"}
            if others:
                raise ScenarioFailed(
                    f"{peer.name} gathered or was told non-relay candidates ({others}): {stats}"
                )
        run.result["candidates"] = pairs


SCENARIOS = {"direct": direct_scenario, "relay": relay_scenario}


def describe_error(error: Exception) -> str:
    """A failed check as its message; anything else (a Playwright timeout, a bug here) with where it happened."""
    if isinstance(error, ScenarioFailed):
        return str(error)
    here = [frame for frame in traceback.extract_tb(error.__traceback__) if frame.filename == __file__]
    where = f" (at {Path(__file__).name}:{here[-1].lineno}: {here[-1].line})" if here else ""
    message = error.message if isinstance(error, PlaywrightError) else str(error)
    return f"{type(error).__name__}{where}: {message}"


def run_scenario(scenario: str, artifacts: Path, scratch: Path) -> dict[str, Any]:
    """Run `scenario`, whatever happens, with its data directory and pid files under `scratch`; what happened,
    as JSON-ready data."""
    artifacts.mkdir(parents=True, exist_ok=True)
    for old in artifacts.glob(f"{scenario}-*.png"):
        old.unlink()
    run = Run(scenario, artifacts)
    workdir = scratch / f"vchat-e2e-{scenario}-{secrets.token_hex(3)}"
    workdir.mkdir(parents=True)
    relay = scenario == "relay"
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        try:
            with run.step("network namespace with loopback only"):
                isolate_loopback()
            ports = Ports()

            def keep(service: Service) -> None:
                run.services.append(service)
                stack.callback(service.stop)

            if relay:
                with run.step("start coturn"):
                    start_coturn(ports, workdir, artifacts, keep)
            with run.step("start twistd vchat"):
                start_vchat(ports, workdir, artifacts, relay, keep)
            proxies = [CuttableProxy(ports.ws), CuttableProxy(ports.ws)]
            for proxy in proxies:
                stack.callback(proxy.close)
            with run.step("launch two Chromiums and confirm age"):
                playwright = stack.enter_context(sync_playwright())
                run.peers = [
                    open_peer(playwright, name, proxy, stack)
                    for name, proxy in zip("AB", proxies, strict=True)
                ]
            SCENARIOS[scenario](run, *run.peers, ports)
            run.result["ok"] = True
            run.result.pop("current_step", None)
        except Exception as error:
            run.result["failed_step"] = run.result.pop("current_step", None)
            run.result["error"] = describe_error(error)
            run.screenshot("failed")
            for service in run.services:
                run.result.setdefault("logs", {})[service.name] = service.tail(30)
        finally:
            run.result["pages"] = {peer.name: peer.report() for peer in run.peers}
            for service in run.services:
                run.result.setdefault("exit", {})[service.name] = service.process.poll()
    run.result["seconds"] = round(time.monotonic() - run.started, 1)
    return run.result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), required=True)
    parser.add_argument("--artifacts", type=Path, required=True, help="directory for screenshots and logs")
    parser.add_argument(
        "--scratch",
        type=Path,
        default=Path(os.environ.get("TMPDIR", "/tmp")),
        help="directory for data files",
    )
    arguments = parser.parse_args()
    result = run_scenario(arguments.scenario, arguments.artifacts.resolve(), arguments.scratch.resolve())
    (arguments.artifacts / "result.json").write_text(json.dumps(result, indent=1))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
