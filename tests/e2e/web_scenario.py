"""The reference web client end to end: `twistd vchat` (and coturn), a cuttable TCP proxy per browser, and two
headless Chromiums with fake cameras, driven by Playwright, in a network namespace that has only loopback.

Run by tests/test_web_client_e2e.py as

    unshare --net --pid --fork --kill-child --mount-proc PYTHON tests/e2e/web_scenario.py \
        --scenario direct|relay --artifacts DIR

It refuses to run where the network has any interface but loopback (ICE would then use, and send media to, the
machine's own addresses). It prints one JSON object on its last line of stdout: `ok`, the steps it passed with
their times, and on failure the step that failed, why, and each page's status, states seen, console and
WebSocket message types; screenshots and the server's and coturn's logs go to DIR.

What it shares with account_scenario.py and bench/web_latency.py (the namespace, starting twistd, launching
Chromium, what is recorded of a page, the steps and the JSON result) is in harness.py.

Scenarios:
- `direct`: ICE with vchat's STUN responder only: match, video both ways, chat, the screenshot, a WebSocket
  reset under one page (resumed, same match, the call goes on), Next (the partner sees "partner left" and
  searches by itself; both are matched again after --rematch-after), Report (stored with a JPEG snapshot, read
  back through the admin API).
- `relay`: `--ice-relay-only` through a real coturn: match, video both ways, chat, and the selected candidate
  pair is a relay one on both sides, with no other kind of candidate told to either partner.
"""

from __future__ import annotations

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
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import (
    SERVER_START_S,
    Peer,
    Ports,
    Run,
    ScenarioFailed,
    Service,
    enter,
    http_get,
    launch_chromium,
    main,
    new_page,
    start_process,
    stun_answers,
    wait_until,
)
from harness import start_vchat as start_twistd_vchat
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Playwright, sync_playwright

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


@dataclass(kw_only=True)
class CallPeer(Peer):
    """A page in a call, reached through its own cuttable proxy: what harness.Peer records, and its video and
    chat."""

    proxy: CuttableProxy

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


def open_peer(playwright: Playwright, name: str, proxy: CuttableProxy, stack: ExitStack) -> CallPeer:
    """A fresh headless Chromium with a fake camera, its page loaded through `proxy`, age confirmed."""
    browser = launch_chromium(playwright, stack)
    peer = CallPeer(name, new_page(browser), proxy=proxy)
    peer.watch(STATE_S)
    enter(peer.page, f"http://127.0.0.1:{proxy.port}/")
    return peer


# --- the scenarios ------------------------------------------------------------------------------------------


def connect_both(run: Run, a: CallPeer, b: CallPeer, why: str) -> None:
    """Both pages reach `connected` and play each other's video."""
    a.wait_state("connected", CONNECT_S, why)
    b.wait_state("connected", CONNECT_S, why)
    run.result.setdefault("videos", {})[why] = {
        a.name: a.wait_video_plays(why),
        b.name: b.wait_video_plays(why),
    }


def chat_both_ways(a: CallPeer, b: CallPeer, why: str) -> None:
    token = secrets.token_hex(3)
    a.say(f"hello from {a.name} {token}")
    b.chat_log_has(f"hello from {a.name} {token}", STATE_S, why)
    b.say(f"hi {a.name}, {b.name} here {token}")
    a.chat_log_has(f"hi {a.name}, {b.name} here {token}", STATE_S, why)


def start_both(run: Run, a: CallPeer, b: CallPeer) -> None:
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


def direct_scenario(run: Run, a: CallPeer, b: CallPeer, ports: Ports) -> None:
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


def relay_scenario(run: Run, a: CallPeer, b: CallPeer, ports: Ports) -> None:
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


def call_scenario(
    check: Callable[[Run, CallPeer, CallPeer, Ports], None], relay: bool
) -> Callable[[Run], None]:
    """A scenario: vchat (and coturn if `relay`), a proxy per browser, two Chromiums with age confirmed, then
    `check`."""

    def body(run: Run) -> None:
        ports = Ports()
        if relay:
            with run.step("start coturn"):
                start_coturn(ports, run.workdir, run.artifacts, run.keep)
        with run.step("start twistd vchat"):
            start_vchat(ports, run.workdir, run.artifacts, relay, run.keep)
        proxies = [CuttableProxy(ports.ws), CuttableProxy(ports.ws)]
        for proxy in proxies:
            run.stack.callback(proxy.close)
        with run.step("launch two Chromiums and confirm age"):
            playwright = run.stack.enter_context(sync_playwright())
            a, b = (
                open_peer(playwright, name, proxy, run.stack)
                for name, proxy in zip("AB", proxies, strict=True)
            )
            run.peers = [a, b]
        check(run, a, b, ports)

    return body


SCENARIOS = {
    "direct": call_scenario(direct_scenario, relay=False),
    "relay": call_scenario(relay_scenario, relay=True),
}


if __name__ == "__main__":
    sys.exit(main(__doc__, SCENARIOS))
