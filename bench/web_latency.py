"""What a user waits for: Start -> partner's video, Next -> next partner's video, in real headless Chromium.

Run from the repository root with the project's Python:

    .venv/bin/python bench/web_latency.py [--browsers 4] [--matches 40] [--hold 1.0] [--timeout 300]
        [--json FILE]

It re-executes itself inside `unshare --net --pid --fork --kill-child --mount-proc` (tests/e2e/harness.py), so that
the browsers see only loopback and killing `unshare` ends everything it started. There it starts `twistd -n vchat`
on 127.0.0.1 (its STUN responder the only ICE server, `--public-host 127.0.0.1`, `--admin none`, `--recent-partners
1`: only the partner just left is kept apart; `--rematch-after` only as a fallback), and --browsers separate
headless Chromium processes with fake cameras and microphones, each on the reference web client at `/`.

Every time is taken in the page, with `performance.now()` (an init script, not the page's own code, records them):

- Start: the click on Start -> the first frame of the first partner's video presented (`requestVideoFrameCallback`
  on the remote video);
- Next (the one who presses it): the click on Next -> the first frame of the next partner's video;
- partner left (the one left behind, whom the page sends searching again by itself): `partner_left` received (the
  partner's video goes away) -> the first frame of its next partner's video.

Along the way it notes, for each wait, when the page asked the server (`next` or `search` sent), when `matched`
came, when the offer and the answer were sent or received, when the video track arrived, when ICE and then the
connection (ICE + DTLS) were up; how long the page's synchronous calls before its message to the server took
(capturing the partner's frame, stopping tracks, closing the RTCPeerConnection); the media pipeline's own
figures at the first frame (getStats()); and, from the wall clock all pages share, how long messages took from
one page through the server to the other. So the report can say where the time goes.

The browsers press Start together, then cycle in rounds: once every matched page plays its partner's video, and
--hold seconds later, one page of every pair (chosen at random) presses Next, all at the same wall-clock instant
(a timer in each page calls the button's click()), so that each presser finds another presser or a partner left
behind waiting, as on a busy server. A round ends when every pair has been replaced and plays video again; it
stops after --matches measured Nexts or at --timeout. With an odd --browsers one page is always left waiting
for the next round, and its wait counts in "partner left".

`--client DIR` gives the pages DIR's version of any web client file it holds (`app.js`, ...) instead of the
server's, to measure a change to vchat/web before making it.

Target: Next -> partner video p95 under 300 ms on loopback.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "e2e"))  # harness.py

from capacity import available_cores  # bench/capacity.py, beside this script
from harness import (
    STATE_LOG_SCRIPT,
    Ports,
    ScenarioFailed,
    Service,
    enter,
    isolate_loopback,
    launch_chromium,
    namespace_command,
    new_page,
    start_vchat,
)
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, Route, sync_playwright

from vchat.bot.stats import percentile

ROOT = Path(__file__).resolve().parent.parent
TARGET_NEXT_P95_MS = 300.0
READY_S = 30.0
"""How long the pages may take to load, open their session and their camera."""
PRESS_AHEAD_MS = 150
"""How far ahead of now the pages are told to press: enough for every page to have its timer set."""
POLL_S = 0.25
"""How often the pages are asked how they stand (the times measured are the pages' own)."""

BENCH_SCRIPT = """
(() => {
  const events = [];
  const log = (kind, fields, t) => {
    const entry = { kind, t: performance.now(), ...fields };
    if (t !== undefined) entry.t = t;
    events.push(entry);
    return entry;
  };
  let lastMatched = null; // the match_id of the last `matched` received
  const framed = new Set(); // matches whose partner's video has presented a frame here
  let pressTag = null;

  window.__bench = Object.freeze({
    take: () => ({ origin: performance.timeOrigin, events: events.splice(0) }),
    status: () => {
      const page = window.vchat;
      const match = page ? page.matchId() : null;
      return { match, framed: match !== null && framed.has(match), state: page ? page.state() : null,
               phase: page ? page.phase() : null, camera: !!(page && page.localStream()),
               rvfc: "requestVideoFrameCallback" in HTMLVideoElement.prototype };
    },
    // Press the button `what` (start, next) at wall-clock time `at` (ms since the epoch).
    pressAt: (what, at, tag) => {
      const button = document.querySelector(`[data-testid="${what}"]`);
      setTimeout(() => {
        if (!button || button.disabled) {
          log("press-refused", { what, tag, late: Date.now() - at });
          return;
        }
        pressTag = { tag, late: Date.now() - at };
        button.click();
        pressTag = null;
      }, Math.max(0, at - Date.now()));
    },
  });

  document.addEventListener("click", (event) => {
    const target = event.target instanceof Element ? event.target.closest("[data-testid]") : null;
    const what = target ? target.dataset.testid : null;
    if (what === "start" || what === "next") log("click", { what, ...(pressTag || { tag: "other" }) }, event.timeStamp);
  }, true);

  // What the page sends and receives over its WebSocket: types and ids only.
  const seen = (dir, data) => {
    let message;
    try { message = JSON.parse(data); } catch { return; }
    if (message === null || typeof message !== "object") return;
    const type = message.type;
    if (!["next", "search", "stop", "matched", "signal", "partner_left", "searching", "welcome", "error"].includes(type)) return;
    const fields = { dir, type };
    if (typeof message.match_id === "string") fields.match = message.match_id;
    if (type === "matched" && dir === "recv") { fields.role = message.role; lastMatched = message.match_id; }
    if (type === "signal") {
      const payload = message.payload || {};
      fields.sig = payload.type || (typeof payload.candidate === "string" ? "candidate" : "?");
    }
    if (type === "partner_left") fields.reason = message.reason;
    if (type === "error") fields.code = message.code;
    log("ws", fields);
  };
  const NativeWebSocket = window.WebSocket;
  window.WebSocket = class extends NativeWebSocket {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (event) => seen("recv", event.data));
    }
    send(data) {
      seen("send", data);
      return super.send(data);
    }
  };

  // Each RTCPeerConnection's way to connected, under the match it was made for (the page makes one per match,
  // as it handles `matched`).
  const NativePeerConnection = window.RTCPeerConnection;
  window.RTCPeerConnection = class extends NativePeerConnection {
    constructor(...args) {
      super(...args);
      const match = lastMatched;
      const note = (what) => log("pc", { what, match });
      note("new");
      let candidates = 0;
      this.addEventListener("icecandidate", (event) => { if (event.candidate && candidates++ === 0) note("first-candidate"); });
      this.addEventListener("icegatheringstatechange", () => note(`gathering-${this.iceGatheringState}`));
      this.addEventListener("iceconnectionstatechange", () => note(`ice-${this.iceConnectionState}`));
      this.addEventListener("connectionstatechange", () => note(`conn-${this.connectionState}`));
      this.addEventListener("track", (event) => note(`track-${event.track.kind}`));
    }
  };

  // What the page does between a click (or `partner_left`) and its message to the server: how long each
  // synchronous call takes.
  const timed = (proto, name, label, counts = () => true) => {
    const original = proto[name];
    proto[name] = function (...args) {
      const begin = performance.now();
      try {
        return original.apply(this, args);
      } finally {
        if (counts(args)) log("cost", { what: label, ms: performance.now() - begin }, begin);
      }
    };
  };
  timed(CanvasRenderingContext2D.prototype, "drawImage", "drawImage", (args) => args[0] instanceof HTMLVideoElement);
  timed(NativePeerConnection.prototype, "close", "pc.close");
  timed(MediaStreamTrack.prototype, "stop", "track.stop");
  timed(HTMLCanvasElement.prototype, "toBlob", "toBlob");
  const source = Object.getOwnPropertyDescriptor(HTMLMediaElement.prototype, "srcObject");
  Object.defineProperty(HTMLMediaElement.prototype, "srcObject", {
    ...source,
    set(value) {
      const begin = performance.now();
      try {
        source.set.call(this, value);
      } finally {
        if (this.dataset.testid === "remote-video") {
          log("cost", { what: value === null ? "srcObject=null" : "srcObject=", ms: performance.now() - begin }, begin);
        }
      }
    },
  });

  // The media pipeline's own figures at the first frame: time per frame from its first packet to decoded
  // (processing), in the jitter buffer, decoding; encoding here; the camera's frame rate.
  const mediaStats = (match) => {
    const pc = window.vchat ? window.vchat.pc() : null;
    if (!pc) return;
    pc.getStats().then((report) => {
      const media = { match };
      report.forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === "video") {
          Object.assign(media, { decoded: s.framesDecoded, processingS: s.totalProcessingDelay, decodeS: s.totalDecodeTime,
                                 jitterS: s.jitterBufferDelay, emitted: s.jitterBufferEmittedCount });
        } else if (s.type === "outbound-rtp" && s.kind === "video") {
          Object.assign(media, { encoded: s.framesEncoded, encodeS: s.totalEncodeTime });
        }
      });
      const camera = window.vchat.localStream()?.getVideoTracks()[0];
      if (camera) media.cameraFps = camera.getSettings().frameRate;
      log("media", media);
    }, () => {});
  };

  // The first frame of each match's video presented, by requestVideoFrameCallback; `playing` and `resize`
  // (videoWidth known) as cross-checks.
  const watchVideo = () => {
    const video = document.querySelector('[data-testid="remote-video"]');
    if (!video) return;
    const current = () => (window.vchat ? window.vchat.matchId() : null);
    if ("requestVideoFrameCallback" in video) {
      let handle = 0;
      const onFrame = (now, meta) => {
        const match = current();
        if (match !== null && video.srcObject !== null && !framed.has(match)) {
          framed.add(match);
          log("frame", { match, callback: now, expected: meta.expectedDisplayTime, width: meta.width,
                         height: meta.height }, meta.presentationTime);
          mediaStats(match);
        }
        handle = video.requestVideoFrameCallback(onFrame);
      };
      const arm = () => {
        video.cancelVideoFrameCallback(handle);
        handle = video.requestVideoFrameCallback(onFrame);
      };
      video.addEventListener("loadstart", arm);
      arm();
    }
    video.addEventListener("playing", () => log("playing", { match: current() }));
    video.addEventListener("resize", () => log("resize", { match: current(), width: video.videoWidth }));
  };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", watchVideo);
  else watchVideo();
})();
"""
"""The page's clock for each step of a wait, kept in `window.__bench` until the benchmark takes it."""

MILESTONES = ("sent", "matched", "offer", "answer", "track", "ice", "connected", "frame")
"""The steps of a wait, in the order they normally come: `next`/`search` sent, `matched` received, the offer
sent (offer side) or received (answer side), the answer received or sent, the video track arrived, ICE
connected, the connection (ICE + DTLS) connected, the first frame presented."""
SDP = ("offer", "answer")
COSTS = ("drawImage", "toBlob", "track.stop", "pc.close", "srcObject=null")
"""Synchronous calls timed in the page between a click (or `partner_left`) and the message to the server."""
KINDS = {"start": "start -> video", "next": "next -> video", "left": "partner left -> video"}


# --- the waits, from one page's log ----------------------------------------------------------------------------


@dataclass
class Wait:
    """One wait of a user: from `kind` (a click on Start or Next, or the partner leaving) at `t0` to video."""

    kind: str
    t0: float
    tag: str
    match: str | None = None
    role: str | None = None
    marks: dict[str, float] = field(default_factory=dict)
    matches: int = 0
    """How many `matched` came during the wait (more than one: a match ended before its video showed)."""
    before_sent: dict[str, float] = field(default_factory=dict)
    """ms spent in each of COSTS before `next` or `search` was sent."""
    media: dict[str, float] = field(default_factory=dict)
    """The media pipeline's figures (MEDIA) at the first frame, in ms per frame."""

    def mark(self, name: str, t: float) -> None:
        self.marks.setdefault(name, round(t - self.t0, 1))

    def record(self) -> dict[str, Any]:
        return {"kind": self.kind, "tag": self.tag, "ms": self.marks.get("frame"), "role": self.role,
                "matches": self.matches, "marks": self.marks,
                "before_sent": {name: round(ms, 2) for name, ms in self.before_sent.items()},
                "media": self.media}  # fmt: skip


def waits(events: list[dict[str, Any]]) -> tuple[list[Wait], Wait | None]:
    """The waits one page's log holds, finished ones first, and the one still open at its end (if any)."""
    done: list[Wait] = []
    open_: Wait | None = None
    framed: dict[str, Wait] = {}
    for event in events:
        kind = event["kind"]
        if kind == "media" and event["match"] in framed:
            framed[event["match"]].media = media_figures(event)
            continue
        if kind == "click":
            if open_ is not None:
                open_.marks["abandoned"] = round(event["t"] - open_.t0, 1)
                done.append(open_)
            open_ = Wait(event["what"], event["t"], str(event.get("tag")))
            continue
        if kind == "ws" and event["dir"] == "recv" and event["type"] == "partner_left":
            if open_ is None:  # a partner left while this page was watching a video: a new wait begins
                open_ = Wait("left", event["t"], "left")
            continue
        if open_ is None:
            continue
        wait = open_
        if kind == "ws":
            if event["dir"] == "send" and event["type"] in ("next", "search"):
                wait.mark("sent", event["t"])
            elif event["dir"] == "recv" and event["type"] == "matched":
                wait.match, wait.role = event.get("match"), event.get("role")
                wait.matches += 1
                # A match before this one ended before its video showed: its steps start again.
                wait.marks = {name: t for name, t in wait.marks.items() if name == "sent"}
                wait.mark("matched", event["t"])
            elif event["type"] == "signal" and event.get("match") == wait.match and event.get("sig") in SDP:
                wait.mark(event["sig"], event["t"])
        elif kind == "cost":
            if "sent" not in wait.marks:
                wait.before_sent[event["what"]] = wait.before_sent.get(event["what"], 0.0) + event["ms"]
        elif event.get("match") is None or event.get("match") != wait.match:
            continue
        elif kind == "pc":
            what = event["what"]
            if what == "ice-connected":
                wait.mark("ice", event["t"])
            elif what == "conn-connected":
                wait.mark("connected", event["t"])
            elif what == "track-video":
                wait.mark("track", event["t"])
            elif what == "gathering-complete":
                wait.mark("gathered", event["t"])
        elif kind == "frame":
            wait.mark("frame", event["t"])
            wait.mark("frame_callback", event["callback"])
            done.append(wait)
            framed[event["match"]] = wait
            open_ = None
        elif kind in ("playing", "resize"):
            wait.mark(kind, event["t"])
    return done, open_


MEDIA = ("processing", "jitter_buffer", "decode", "encode", "camera_fps")
"""From the first frame's getStats(): ms per frame from first packet to decoded, in the jitter buffer, decoding
(received video), encoding (sent video); the camera's frame rate."""


def media_figures(stats: dict[str, Any]) -> dict[str, float]:
    """MEDIA from one `media` event (cumulative seconds and counts, as getStats() gives them)."""
    figures: dict[str, float] = {}
    for name, total, count in (
        ("processing", "processingS", "decoded"),
        ("jitter_buffer", "jitterS", "emitted"),
        ("decode", "decodeS", "decoded"),
        ("encode", "encodeS", "encoded"),
    ):
        if stats.get(total) is not None and stats.get(count):
            figures[name] = round(1000 * stats[total] / stats[count], 1)
    if stats.get("cameraFps") is not None:
        figures["camera_fps"] = stats["cameraFps"]
    return figures


def summary(values: list[float]) -> dict[str, Any]:
    """count, p50, p95, max (ms) of `values`; None where there are none."""
    ordered = sorted(values)
    if not ordered:
        return {"count": 0, "p50": None, "p95": None, "max": None}
    return {
        "count": len(ordered),
        "p50": round(percentile(ordered, 50), 1),
        "p95": round(percentile(ordered, 95), 1),
        "max": round(ordered[-1], 1),
    }


def figures(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per kind of wait: the total and each step (ms from the click or `partner_left`) as count, p50, p95, max;
    waits ended otherwise (pressed again, timed out) are counted apart."""
    result: dict[str, Any] = {}
    for kind in KINDS:
        mine = [
            record for record in records if record["kind"] == kind and record["tag"] in ("measure", "left")
        ]
        finished = [record for record in mine if record["ms"] is not None]
        steps = {}
        for name in (*MILESTONES, "gathered", "playing", "resize"):
            steps[name] = summary([r["marks"][name] for r in finished if name in r["marks"]])
        # From `matched` to the first frame: the cost of one match, whatever the queue.
        steps["matched_to_frame"] = summary(
            [r["ms"] - r["marks"]["matched"] for r in finished if "matched" in r["marks"]]
        )
        costs = {name: summary([r["before_sent"].get(name, 0.0) for r in finished]) for name in COSTS}
        costs["all"] = summary([sum(r["before_sent"].values()) for r in finished])
        media = {name: summary([r["media"][name] for r in finished if name in r["media"]]) for name in MEDIA}
        result[kind] = {
            **summary([record["ms"] for record in finished]),
            "unfinished": len(mine) - len(finished),
            "rematched_before_video": sum(1 for record in finished if record["matches"] > 1),
            "steps": steps,
            "before_sent": costs,
            "media": media,
        }
    return result


def relays(pages: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """What the server and the WebSockets add, from the wall-clock times of all pages (epoch ms, so only good
    to a millisecond or so): a description from one page to its partner, `next` to the partner's
    `partner_left`, and the later of two pages' requests (`next`, `search`) to `matched` on each of them."""
    sent: dict[tuple[str, str], float] = {}
    received: dict[tuple[str, str], list[float]] = {}
    left: dict[str, float] = {}  # match -> when one of its pages sent `next`
    told: dict[str, float] = {}  # match -> when the other page got `partner_left`
    asked: dict[str, list[float]] = {}  # match -> the request of each of its pages that led to it
    for events in pages:
        current: str | None = None
        request: float | None = None
        for event in events:
            if event["kind"] != "ws":
                continue
            kind, direction, match = event["type"], event["dir"], event.get("match")
            if direction == "send" and kind in ("next", "search"):
                request = event["e"]
                if kind == "next" and current is not None:
                    left.setdefault(current, event["e"])
                    current = None
            elif direction == "recv" and kind == "matched" and match is not None:
                current = match
                if request is not None:
                    asked.setdefault(match, []).append(request)
                received.setdefault(("matched", match), []).append(event["e"])
                request = None
            elif kind == "signal" and event.get("sig") in SDP and match is not None:
                if direction == "send":
                    sent.setdefault((event["sig"], match), event["e"])
                else:
                    received.setdefault((event["sig"], match), []).append(event["e"])
            elif direction == "recv" and kind == "partner_left" and match is not None:
                told.setdefault(match, event["e"])
                current = None
    result = {}
    for sig in SDP:
        result[sig] = summary(
            [received[key][0] - at for key, at in sent.items() if key[0] == sig and key in received]
        )
    result["next_to_partner_left"] = summary(
        [told[match] - at for match, at in left.items() if match in told]
    )
    result["request_to_matched"] = summary(
        [
            at - max(requests)
            for match, requests in asked.items()
            if len(requests) == 2
            for at in received[("matched", match)]
        ]
    )
    return result


# --- inside the namespace: the server, the browsers, the rounds --------------------------------------------------


class Client:
    """One browser, its page on the web client, and everything its page logged."""

    def __init__(self, name: str, page: Page) -> None:
        self.name = name
        self.page = page
        self.events: list[dict[str, Any]] = []
        self.errors: list[str] = []
        page.on("pageerror", lambda error: self.errors.append(str(error)[:300]))

    def status(self) -> dict[str, Any]:
        status: dict[str, Any] = self.page.evaluate("window.__bench.status()")
        return status

    def collect(self) -> None:
        """Take what the page logged; `e` is each event's time on the wall clock all pages share (epoch ms)."""
        taken = self.page.evaluate("window.__bench.take()")
        for event in taken["events"]:
            event["e"] = taken["origin"] + event["t"]
        self.events.extend(taken["events"])

    def press_at(self, what: str, at_ms: float, tag: str) -> None:
        self.page.evaluate("([what, at, tag]) => window.__bench.pressAt(what, at, tag)", [what, at_ms, tag])


def progress(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def wait_for(what: str, ready: Callable[[], bool], timeout: float) -> bool:
    """Poll `ready` until it holds (True) or `timeout` passes (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(POLL_S)


def settled(statuses: list[dict[str, Any]], pairs: int, gone: set[str]) -> bool:
    """Whether every possible pair is matched and plays video, none of them a match of `gone`."""
    playing = [s for s in statuses if s["match"] is not None and s["framed"] and s["match"] not in gone]
    return len(playing) == 2 * pairs and not any(s["match"] in gone for s in statuses)


def pairs_of(clients: list[Client], statuses: list[dict[str, Any]]) -> dict[str, list[Client]]:
    """The pages in each match, by match id."""
    found: dict[str, list[Client]] = {}
    for client, status in zip(clients, statuses, strict=True):
        if status["match"] is not None:
            found.setdefault(status["match"], []).append(client)
    return found


def press_together(presses: list[tuple[Client, str, str]]) -> None:
    """Every (client, button, tag) presses at the same wall-clock instant, a little ahead."""
    at = time.time() * 1000 + PRESS_AHEAD_MS
    for client, what, tag in presses:
        client.press_at(what, at, tag)


def cycle(args: argparse.Namespace, clients: list[Client], deadline: float, result: dict[str, Any]) -> None:
    """Start on every page, then rounds of Next until --matches Nexts are measured or `deadline`."""
    rng = random.Random(args.seed)
    pairs = len(clients) // 2
    failures: list[dict[str, Any]] = result["failures"]
    rounds: list[dict[str, Any]] = result["rounds"]

    def statuses() -> list[dict[str, Any]]:
        return [client.status() for client in clients]

    def measured() -> int:
        count = 0
        for client in clients:
            done, _ = waits(client.events)
            count += sum(
                1 for wait in done if wait.kind == "next" and wait.tag == "measure" and "frame" in wait.marks
            )
        return count

    if not wait_for(
        "pages open, cameras on",
        lambda: all(s["phase"] == "open" and s["camera"] for s in statuses()),
        READY_S,
    ):
        raise ScenarioFailed(
            f"the pages did not open their sessions and cameras within {READY_S:.0f}s: {statuses()}"
        )
    if not clients[0].status()["rvfc"]:
        raise ScenarioFailed("this Chromium has no requestVideoFrameCallback")
    progress(f"{len(clients)} pages open; pressing Start on all of them")
    press_together([(client, "start", "measure") for client in clients])
    began = time.monotonic()
    ok = wait_for("first matches play", lambda: settled(statuses(), pairs, set()), args.round_timeout)
    rounds.append({"round": 0, "seconds": round(time.monotonic() - began, 2), "settled": ok})
    if not ok:
        failures.append({"round": 0, "what": "not every pair played video", "pages": statuses()})

    number = 0
    last_partner: dict[str, str] = {}  # page -> the page it was matched with most recently
    while True:
        for client in clients:
            client.collect()
        count = measured()
        if count >= args.matches:
            break
        if time.monotonic() + args.hold + 2.0 > deadline:
            result["stopped"] = f"--timeout: {count} of {args.matches} Nexts measured"
            break
        number += 1
        time.sleep(args.hold)
        now = statuses()
        matches = pairs_of(clients, now)
        for members in matches.values():
            if len(members) == 2:
                last_partner[members[0].name], last_partner[members[1].name] = (
                    members[1].name,
                    members[0].name,
                )
        # A page left waiting is kept from its last partner (--recent-partners): that one does not press.
        kept_apart = {
            last_partner.get(c.name)
            for c, status in zip(clients, now, strict=True)
            if status["match"] is None
        }
        presses: list[tuple[Client, str, str]] = []
        for members in matches.values():
            framed = [now[clients.index(member)]["framed"] for member in members]
            if len(members) == 2 and all(framed):
                free = [member for member in members if member.name not in kept_apart]
                presses.append((rng.choice(free or members), "next", "measure"))
            else:  # a match that never showed video (or a page alone in one): move on from it, unmeasured
                presses.extend((member, "next", "recover") for member in members)
                failures.append({"round": number, "what": "stuck in a match without video", "pages": now})
        if not presses:
            failures.append({"round": number, "what": "no match to leave", "pages": now})
            continue
        press_together(presses)
        began = time.monotonic()
        ok = wait_for(
            "every pair replaced and playing",
            partial(lambda gone: settled(statuses(), pairs, gone), set(matches)),
            min(args.round_timeout, max(0.0, deadline - time.monotonic())),
        )
        took = round(time.monotonic() - began, 2)
        rounds.append({"round": number, "seconds": took, "settled": ok, "presses": len(presses)})
        progress(f"round {number}: {len(presses)} Next, settled in {took:.2f}s{'' if ok else ' (NOT SETTLED)'}; "
                 f"{count} Nexts measured before it")  # fmt: skip
        if not ok and time.monotonic() >= deadline:
            rounds[-1]["cut_by_timeout"] = True
            result["stopped"] = (
                f"--timeout, in round {number}: {count} of {args.matches} Nexts measured before it"
            )
            break
        if not ok:
            failures.append(
                {"round": number, "what": "not every pair played video again", "pages": statuses()}
            )
    for client in clients:
        client.collect()


def inside(args: argparse.Namespace) -> dict[str, Any]:
    """The whole run, in the namespace: what happened, as JSON-ready data."""
    started = time.monotonic()
    deadline = started + args.timeout - 30  # leaves time to stop browsers and the server within --timeout
    result: dict[str, Any] = {
        "ok": False,
        "browsers": args.browsers,
        "matches_wanted": args.matches,
        "hold_s": args.hold,
        "client": str(args.client) if args.client is not None else None,
        "server_options": server_options(args),
        "cpus": os.cpu_count(),
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "failures": [],
        "rounds": [],
    }
    clients: list[Client] = []
    services: list[Service] = []
    with tempfile.TemporaryDirectory(prefix="vchat-web-latency-") as tmp, ExitStack() as stack:
        workdir = Path(tmp)
        try:
            isolate_loopback()
            ports = Ports()

            def keep(service: Service) -> None:
                services.append(service)
                stack.callback(service.stop)

            server = start_vchat(
                ports, workdir, workdir / "vchat.log", keep, server_options(args), admin=False
            )
            cpu_before = cpu_seconds(server.process.pid)
            playwright = stack.enter_context(sync_playwright())
            result["chromium"] = None
            for i in range(args.browsers):
                browser = launch_chromium(playwright, stack)
                result["chromium"] = browser.version
                page = new_page(browser, (STATE_LOG_SCRIPT, BENCH_SCRIPT))
                page.set_default_timeout(READY_S * 1000)
                if args.client is not None:
                    serve_client_from(page, args.client, ports.ws)
                enter(page, f"http://127.0.0.1:{ports.ws}/")
                clients.append(Client(chr(ord("A") + i), page))
            cycle(args, clients, deadline, result)
            result["server_cpu_s"] = round(cpu_seconds(server.process.pid) - cpu_before, 2)
            result["ok"] = True
        except Exception as error:
            result["error"] = (
                f"{type(error).__name__}: {error.message if isinstance(error, PlaywrightError) else error}"
            )
            for service in services:
                result.setdefault("logs", {})[service.name] = service.tail(30)
        finally:
            records: list[dict[str, Any]] = []
            for client in clients:
                with suppress(PlaywrightError):  # the browser may be gone: keep what was collected
                    client.collect()
                done, open_ = waits(client.events)
                records += [{"page": client.name, **wait.record()} for wait in done]
                if open_ is not None:
                    records.append({"page": client.name, **open_.record()})
                if client.errors:
                    result.setdefault("page_errors", {})[client.name] = client.errors
            result["waits"] = records
            result["figures"] = figures(records)
            result["relay"] = relays([client.events for client in clients])
            events = [event for client in clients for event in client.events]
            result["presses_refused"] = sum(1 for event in events if event["kind"] == "press-refused")
            # How late each page's timer pressed, against the instant all were told: how "together" they were.
            result["press_late_ms"] = summary(
                [event["late"] for event in events if event["kind"] == "click" and "late" in event]
            )
            result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def serve_client_from(page: Page, directory: Path, port: int) -> None:
    """Answer `page`'s requests for the web client's files with the files of the same name in `directory`,
    where there is one; the rest goes to the server."""
    types = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}

    def answer(route: Route) -> None:
        name = urlsplit(route.request.url).path.rsplit("/", 1)[-1] or "index.html"
        local = directory / name
        if local.is_file():
            route.fulfill(
                body=local.read_bytes(), content_type=types.get(local.suffix, "application/octet-stream")
            )
        else:
            route.continue_()

    page.route(f"http://127.0.0.1:{port}/*", answer)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) process `pid` has used, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_options(args: argparse.Namespace) -> list[str]:
    """What `twistd vchat` is told besides addresses: how soon past partners may meet again."""
    return ["--recent-partners", str(args.recent_partners), "--rematch-after", str(args.rematch_after)]


# --- outside: run it in the namespace, then report -----------------------------------------------------------------


def outside(args: argparse.Namespace) -> int:
    """Run this script in a fresh network and process-id namespace, bounded by --timeout; report its figures."""
    cores_before = round(available_cores(), 2)
    command = [
        *namespace_command(),
        sys.executable,
        str(Path(__file__).resolve()),
        "--inside",
        *forwarded(args),
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.monotonic()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, start_new_session=True)
    try:
        stdout, _ = process.communicate(timeout=args.timeout + 30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        sys.stderr.write(f"the run went over --timeout {args.timeout:.0f}s and was killed\n")
        return 1
    finally:
        if process.poll() is None:  # interrupted: leave nothing running
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    lines = stdout.decode(errors="replace").strip().splitlines()
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except (IndexError, ValueError):
        sys.stderr.write(f"the run printed no result (exit status {process.returncode})\n")
        return 1
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    result["run_cpu"] = {"cpu_s": round(cpu, 1), "wall_s": round(time.monotonic() - began, 1)}
    result["cores_available"] = [cores_before, round(available_cores(), 2)]
    result["command"] = " ".join([".venv/bin/python", "bench/web_latency.py", *sys.argv[1:]])
    result["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    result["verdicts"] = verdicts(result)
    for line in report(result):
        sys.stdout.write(line + "\n")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump(result, file, indent=1)
            file.write("\n")
    return 0 if result["ok"] else 1


def forwarded(args: argparse.Namespace) -> list[str]:
    """The options the run inside the namespace needs (not --json: only this side writes)."""
    return [
        "--browsers", str(args.browsers), "--matches", str(args.matches), "--hold", str(args.hold),
        "--timeout", str(args.timeout), "--round-timeout", str(args.round_timeout), "--seed", str(args.seed),
        "--recent-partners", str(args.recent_partners), "--rematch-after", str(args.rematch_after),
    ] + (["--client", str(args.client)] if args.client is not None else [])  # fmt: skip


def verdicts(result: dict[str, Any]) -> list[str]:
    """PASS/FAIL lines against the issue's target, and against having measured what was asked."""
    next_ = result["figures"]["next"]
    p95 = next_["p95"]
    ok = p95 is not None and p95 < TARGET_NEXT_P95_MS
    lines = [
        f"{'PASS' if ok else 'FAIL'} next -> partner video p95 {p95} ms (target < {TARGET_NEXT_P95_MS:.0f} ms)"
    ]
    ok = next_["count"] >= result["matches_wanted"]
    lines.append(
        f"{'PASS' if ok else 'FAIL'} measured {next_['count']} Nexts (asked for {result['matches_wanted']})"
    )
    return lines


def pair(row: dict[str, Any]) -> str:
    """A step's p50 / p95, or a dash if it never came."""
    return "-" if row["p50"] is None else f"{row['p50']:.0f} / {row['p95']:.0f}"


def report(result: dict[str, Any]) -> Iterator[str]:
    """The printed summary."""
    yield (
        f"{result['browsers']} headless Chromium {result.get('chromium')} on {result['cpus']} CPUs, "
        f"server {' '.join(result['server_options'])}, hold {result['hold_s']} s; {result['seconds']} s; "
        f"load average {result['load_before'][0]} before, {result['load_after'][0]} after; a busy loop per CPU got "
        f"{result['cores_available'][0]} cores before, {result['cores_available'][1]} after; server CPU "
        f"{result.get('server_cpu_s')} s; the whole run (browsers, server, this script) "
        f"{result['run_cpu']['cpu_s']} CPU-s in {result['run_cpu']['wall_s']} s"
        + (f"; web client files from {result['client']}" if result.get("client") else "")
    )
    if not result["ok"]:
        yield f"ERROR: {result.get('error')}"
        for name, log in result.get("logs", {}).items():
            yield f"--- {name} log (end)\n{log}"
    yield ""
    yield f"{'wait':<24}{'count':>7}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'unfinished':>12}"
    for kind, label in KINDS.items():
        row = result["figures"][kind]

        def shown(value: float | None) -> str:
            return "-" if value is None else f"{value:.0f}"

        yield (
            f"{label:<24}{row['count']:>7}{shown(row['p50']):>9}{shown(row['p95']):>9}{shown(row['max']):>9}"
            f"{row['unfinished']:>12}"
        )
    yield ""
    yield "where the time goes (ms from the click or from `partner_left`, p50 / p95):"
    steps = (*MILESTONES, "gathered")
    yield f"{'':<24}" + "".join(f"{name:>14}" for name in steps)
    for kind, label in KINDS.items():
        row = result["figures"][kind]["steps"]
        cells = "".join(f"{pair(row[name]):>14}" for name in steps)
        yield f"{label:<24}{cells}"
    yield ""
    yield "before the page tells the server (ms in each synchronous call, p50 / p95):"
    yield f"{'':<24}" + "".join(f"{name:>16}" for name in (*COSTS, "all"))
    for kind, label in KINDS.items():
        row = result["figures"][kind]["before_sent"]
        yield f"{label:<24}" + "".join(f"{pair(row[name]):>16}" for name in (*COSTS, "all"))
    yield ""
    yield "the media pipeline at the first frame (ms per frame, p50 / p95; camera frames/s):"
    yield f"{'':<24}" + "".join(f"{name:>16}" for name in MEDIA)
    for kind, label in KINDS.items():
        row = result["figures"][kind]["media"]
        yield f"{label:<24}" + "".join(f"{pair(row[name]):>16}" for name in MEDIA)
    relay = result.get("relay", {})
    if relay:
        yield ""
        yield "through the server (page to page, wall clock, p50 / p95 ms): " + ", ".join(
            f"{name} {pair(row)}" for name, row in relay.items()
        )
    failures = result["failures"]
    yield ""
    if result.get("stopped"):
        yield f"stopped early by {result['stopped']}"
    late = result.get("press_late_ms") or {}
    yield (
        f"presses: {result.get('presses_refused')} refused (button disabled); late against the instant set "
        f"{pair(late) if late else '-'} ms (p50 / p95)"
    )
    yield f"failures: {len(failures)}" + "".join(
        f"\n  round {f['round']}: {f['what']}" for f in failures[:10]
    )
    if result.get("page_errors"):
        yield f"page errors: {result['page_errors']}"
    yield ""
    yield f"target: next -> partner video p95 < {TARGET_NEXT_P95_MS:.0f} ms"
    for line in result["verdicts"]:
        yield "  " + line


def build_parser() -> argparse.ArgumentParser:
    """Command line of the benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    add = parser.add_argument
    add("--browsers", type=int, default=4, help="headless Chromium processes cycling (at least 3; default 4)")
    add("--matches", type=int, default=40, help="Nexts to measure (default 40)")
    add(
        "--hold",
        type=float,
        default=1.0,
        help="seconds each round watches the video before Next (default 1.0)",
    )
    add("--timeout", type=float, default=300.0, help="seconds the whole run may take (default 300)")
    add("--round-timeout", type=float, default=20.0, help="seconds a round may take to play video again")
    add("--seed", type=int, default=1, help="seed of the choice of who presses Next in each pair")
    add("--recent-partners", type=int, default=1, help="server's --recent-partners (default 1)")
    add("--rematch-after", type=float, default=5.0, help="server's --rematch-after, seconds (default 5)")
    add("--json", metavar="FILE", help="also write the figures and every wait as JSON")
    add(
        "--client",
        type=lambda text: Path(text).resolve(),
        metavar="DIR",
        help="give the pages DIR's version of each web client file it has (app.js, call.js, ...) instead of the "
        "server's: to measure a change to vchat/web before making it",
    )
    add("--inside", action="store_true", help=argparse.SUPPRESS)
    return parser


def main() -> int:
    """Run the benchmark (from outside), or its run inside the namespace."""
    args = build_parser().parse_args()
    if args.browsers < 3:
        raise SystemExit("--browsers must be at least 3, so that partners change")
    if args.matches < 1 or args.timeout < 60:
        raise SystemExit("--matches must be at least 1 and --timeout at least 60")
    if args.inside:
        result = inside(args)
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()
        return 0 if result["ok"] else 1
    return outside(args)


if __name__ == "__main__":
    sys.exit(main())
