"""What the end-to-end scripts share: a network namespace with only loopback, `twistd -n vchat` and other
processes started and stopped, headless Chromium with a fake camera, and the reference page's status log.

Used by tests/e2e/web_scenario.py (the web client's calls), tests/e2e/account_scenario.py (its logins) and
bench/web_latency.py (what a user waits for). All run themselves inside `unshare --net --pid --fork --kill-child
--mount-proc` (see `namespace_command`), so that ICE finds no address but 127.0.0.1 and killing `unshare` kills all
they started. The scenarios also share what they record of a page (`Peer`), their steps (`Run`), and their
command line and JSON result (`main`).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, WebSocket
from playwright.sync_api import Error as PlaywrightError

CHROMIUM_ARGS = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
]
SERVER_START_S = 20.0
"""How long a server may take to answer after it is started."""

STATE_LOG_SCRIPT = """
(() => {
  const log = [];
  window.__e2e = { states: log };
  const watch = () => {
    const el = document.querySelector('[data-testid="status"]');
    if (!el) return;
    const record = () => {
      const entry = { state: el.getAttribute("data-state"), text: (el.textContent || "").trim(),
                      t: Math.round(performance.now()) };
      const last = log[log.length - 1];
      if (!last || last.state !== entry.state || last.text !== entry.text) log.push(entry);
    };
    record();
    new MutationObserver(record).observe(el, { attributes: true, attributeFilter: ["data-state"],
                                               childList: true, characterData: true, subtree: true });
  };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", watch);
  else watch();
})();
"""
"""Keeps every (state, text) the status line shows, so that brief states (`reconnecting`, `partner-left`) are
seen however fast they pass."""


class ScenarioFailed(Exception):
    """A check of the scenario (or a step of a benchmark) failed; the message says what was expected and what
    was seen."""


# --- the network namespace ----------------------------------------------------------------------------------

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def namespace_command() -> list[str]:
    """`unshare` into new network and process-id namespaces (as root, or as a user mapped to root): put the
    command to run after it."""
    unshare = shutil.which("unshare")
    if unshare is None:
        raise ScenarioFailed("util-linux's unshare is not installed")
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    return [unshare, *user, "--net", "--pid", "--fork", "--kill-child", "--mount-proc"]


def isolate_loopback() -> None:
    """Bring up `lo` (down in a fresh namespace), and refuse to go on where there is any other interface."""
    others = [name for _, name in socket.if_nameindex() if name != "lo"]
    if others:
        raise ScenarioFailed(
            f"refusing to run outside a network namespace with only loopback (interfaces: {others}): "
            "run it under `unshare --net`"
        )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        request = struct.pack("16sh22x", b"lo", 0)
        flags = struct.unpack("16sh22x", fcntl.ioctl(probe, SIOCGIFFLAGS, request))[1]
        if not flags & IFF_UP:
            fcntl.ioctl(probe, SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", flags | IFF_UP))


def free_port(kind: int) -> int:
    """A loopback port free now (the namespace is ours alone, so it stays free)."""
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def stun_answers(port: int) -> bool:
    """Whether a STUN Binding request to 127.0.0.1:`port` (UDP) gets a Binding success response."""
    transaction = secrets.token_bytes(12)
    request = struct.pack("!HHI", 0x0001, 0, 0x2112A442) + transaction
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(0.3)
        client.sendto(request, ("127.0.0.1", port))
        try:
            reply = client.recv(2048)
        except OSError:
            return False
    return reply[:2] == b"\x01\x01" and reply[8:20] == transaction


# --- processes ----------------------------------------------------------------------------------------------


@dataclass
class Service:
    """A process the script started, with its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError as error:
            return f"(no log: {error})"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start_process(
    name: str,
    command: list[str],
    log: Path,
    cwd: Path,
    keep: Callable[[Service], None],
    env: dict[str, str] | None = None,
) -> Service:
    """Start `command` with its output to `log`; `keep` is given the service at once, to stop it later."""
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, cwd=cwd, env=env)
    service = Service(name, process, log)
    keep(service)
    return service


def wait_until(what: str, ready: Callable[[], bool], service: Service, timeout: float) -> None:
    """Poll `ready` until it holds; fail with `service`'s log if it exits or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while not ready():
        if not service.alive():
            raise ScenarioFailed(
                f"{service.name} exited ({service.process.returncode}) before {what}:\n{service.tail()}"
            )
        if time.monotonic() > deadline:
            raise ScenarioFailed(f"{service.name}: no {what} within {timeout:.0f}s:\n{service.tail()}")
        time.sleep(0.1)


def http_get(url: str, token: str | None = None, timeout: float = 5.0) -> tuple[int, str, bytes]:
    """GET `url`: (status, content type, body); errors with a status are answers too."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Type", ""), error.read()


def answers_http(url: str) -> bool:
    """Whether `url` answers 200 within a second."""
    try:
        return http_get(url, timeout=1.0)[0] == 200
    except OSError:
        return False


@dataclass
class Ports:
    """The loopback ports of one run."""

    ws: int = field(default_factory=lambda: free_port(socket.SOCK_STREAM))
    admin: int = field(default_factory=lambda: free_port(socket.SOCK_STREAM))
    stun: int = field(default_factory=lambda: free_port(socket.SOCK_DGRAM))
    turn: int = field(default_factory=lambda: free_port(socket.SOCK_DGRAM))


def start_vchat(
    ports: Ports,
    workdir: Path,
    log: Path,
    keep: Callable[[Service], None],
    options: Sequence[str] = (),
    admin: bool = True,
    env: dict[str, str] | None = None,
) -> Service:
    """`twistd -n vchat` on loopback: WebSocket and web client on `ports.ws`, STUN on `ports.stun` (the ICE
    server it tells clients about, as 127.0.0.1), the admin API on `ports.admin` unless not `admin`, data in
    `workdir`, then `options`. Returns once the web client, the STUN responder (and the admin API) answer."""
    twistd = Path(sys.executable).with_name("twistd")
    command = [
        str(twistd), "-n", "--pidfile=", "vchat",
        "--ws", f"tcp:{ports.ws}:interface=127.0.0.1",
        "--admin", f"tcp:{ports.admin}:interface=127.0.0.1" if admin else "none",
        "--data-dir", str(workdir / "vchat-data"),
        "--stun-udp", str(ports.stun), "--stun-interface", "127.0.0.1", "--public-host", "127.0.0.1",
        *options,
    ]  # fmt: skip
    service = start_process("vchat", command, log, workdir, keep, env)
    if admin:
        healthz = f"http://127.0.0.1:{ports.admin}/healthz"
        wait_until("answer on the admin endpoint", lambda: answers_http(healthz), service, SERVER_START_S)
    page = f"http://127.0.0.1:{ports.ws}/"
    wait_until("web client at /", lambda: answers_http(page), service, SERVER_START_S)
    wait_until("STUN answer", lambda: stun_answers(ports.stun), service, SERVER_START_S)
    return service


# --- the browsers ---------------------------------------------------------------------------------------------


def launch_chromium(playwright: Playwright, stack: ExitStack, extra_args: Sequence[str] = ()) -> Browser:
    """A fresh headless Debian Chromium (its own process tree) with a fake camera and microphone, closed when
    `stack` closes."""
    executable = shutil.which("chromium")
    if executable is None:
        raise ScenarioFailed("chromium is not installed: scripts/test installs Debian's chromium")
    args = [*CHROMIUM_ARGS, *extra_args]
    if os.geteuid() == 0:
        args.append("--no-sandbox")
    browser = playwright.chromium.launch(executable_path=executable, args=args)
    stack.callback(browser.close)
    return browser


def new_page(browser: Browser, init_scripts: Sequence[str] = (STATE_LOG_SCRIPT,)) -> Page:
    """A page of `browser` with `init_scripts` run before each document's own (the status log by default)."""
    page = browser.new_page(viewport={"width": 1000, "height": 760})
    for script in init_scripts:
        page.add_init_script(script)
    return page


def enter(page: Page, url: str) -> None:
    """Load the reference client at `url` and confirm the age gate: the page connects and says hello."""
    page.goto(url)
    page.get_by_test_id("age-confirm").click()


# --- what a scenario records of a page ------------------------------------------------------------------------


@dataclass
class Peer:
    """One page of a scenario and what the test saw of it: the status line's states, the console, uncaught
    errors, and the WebSocket messages (types and ids only: no SDP, no chat text)."""

    name: str
    page: Page
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    frames: list[str] = field(default_factory=list)
    welcomes: list[dict[str, Any]] = field(default_factory=list)
    hellos: list[dict[str, Any]] = field(default_factory=list)
    matches: list[str] = field(default_factory=list)

    def watch(self, timeout: float) -> None:
        """Record the page's console, errors, failed responses and WebSocket messages; `timeout` seconds is
        its default for each Playwright call."""
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("websocket", self.on_websocket)
        self.page.on("response", lambda response: self._failed_response(response.status, response.url))
        self.page.set_default_timeout(timeout * 1000)

    # -- what the page shows

    def state(self) -> str | None:
        """The status line's `data-state` now."""
        try:
            value: str | None = self.page.get_by_test_id("status").get_attribute("data-state", timeout=2000)
            return value
        except PlaywrightError as error:
            return f"(unreadable: {error.message.splitlines()[0]})"

    def states(self) -> list[dict[str, Any]]:
        """Every state the status line showed (STATE_LOG_SCRIPT's log of this document)."""
        try:
            log: list[dict[str, Any]] = self.page.evaluate("window.__e2e ? window.__e2e.states : []")
            return log
        except PlaywrightError:
            return []

    def mark(self) -> int:
        """A place in the state log: `wait_seen` looks only at what comes after it."""
        return len(self.states())

    def describe(self) -> str:
        """The status now and the last states, for a failure message."""
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

    # -- what it sends and receives

    def on_websocket(self, socket_: WebSocket) -> None:
        """Record what goes through a WebSocket the page opens."""
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
                key: message.get(key)
                for key in ("session_id", "resumed", "match", "ice_transport_policy", "account")
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
        elif kind == "hello" and direction == "->":
            self.hellos.append({key: message.get(key) for key in ("gender", "resume") if key in message})
            detail = " resume" if message.get("resume") else ""
        elif kind == "ping" or kind == "pong":
            return
        self.frames.append(f"{time.monotonic():.1f} {direction} {kind}{detail}")

    def _failed_response(self, status: int, url: str) -> None:
        if status >= 400:
            self.console.append(f"{time.monotonic():.1f} HTTP {status}: {url}")

    def _console(self, message: ConsoleMessage) -> None:
        where = message.location.get("url", "")
        self.console.append(
            f"{time.monotonic():.1f} {message.type}: {message.text[:500]}" + (f" ({where})" if where else "")
        )


# --- a scenario's run -----------------------------------------------------------------------------------------


class Run:
    """One scenario's record: steps passed, timings, facts gathered, and where artifacts went; the processes
    and pages it holds, stopped and closed when `stack` closes."""

    def __init__(self, scenario: str, artifacts: Path, workdir: Path, stack: ExitStack) -> None:
        self.scenario = scenario
        self.artifacts = artifacts
        self.workdir = workdir
        self.stack = stack
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

    def keep(self, service: Service) -> None:
        """Record `service`, and stop it when the run ends (for `start_process`'s `keep`)."""
        self.services.append(service)
        self.stack.callback(service.stop)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """A named step: kept with its time once it passes, named as the failed one if it raises."""
        began = time.monotonic()
        self.result["current_step"] = name
        yield
        self.result["steps"].append({"step": name, "seconds": round(time.monotonic() - began, 2)})

    def screenshot(self, label: str, peers: Sequence[Peer] | None = None) -> None:
        """A screenshot of each of `peers` (default: all) as SCENARIO-LABEL-NAME.png in the artifacts."""
        for peer in self.peers if peers is None else peers:
            path = self.artifacts / f"{self.scenario}-{label}-{peer.name}.png"
            try:
                peer.page.screenshot(path=str(path), timeout=5000)
                self.result["screenshots"].append(str(path))
            except PlaywrightError as error:
                self.result.setdefault("screenshot_errors", []).append(f"{path.name}: {error.message[:200]}")


def describe_error(error: Exception) -> str:
    """A failed check as its message; anything else (a Playwright timeout, a bug in a script) with where in
    the scripts beside this one it happened."""
    if isinstance(error, ScenarioFailed):
        return str(error)
    here = Path(__file__).parent
    ours = [
        frame for frame in traceback.extract_tb(error.__traceback__) if Path(frame.filename).parent == here
    ]
    where = f" (at {Path(ours[-1].filename).name}:{ours[-1].lineno}: {ours[-1].line})" if ours else ""
    message = error.message if isinstance(error, PlaywrightError) else str(error)
    return f"{type(error).__name__}{where}: {message}"


def run_scenario(
    scenario: str, body: Callable[[Run], None], artifacts: Path, scratch: Path
) -> dict[str, Any]:
    """Run `body` in this network namespace, whatever happens, with its data directory and pid files under
    `scratch`; what happened, as JSON-ready data."""
    artifacts.mkdir(parents=True, exist_ok=True)
    for old in artifacts.glob(f"{scenario}-*.png"):
        old.unlink()
    workdir = scratch / f"vchat-e2e-{scenario}-{secrets.token_hex(3)}"
    workdir.mkdir(parents=True)
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        run = Run(scenario, artifacts, workdir, stack)
        try:
            with run.step("network namespace with loopback only"):
                isolate_loopback()
            body(run)
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


def main(description: str | None, scenarios: Mapping[str, Callable[[Run], None]]) -> int:
    """The command line of a scenario script: run the `--scenario` named, print its result as one JSON line
    (and keep it as result.json in the artifacts); 0 if it passed."""
    parser = argparse.ArgumentParser(description=description.splitlines()[0] if description else None)
    parser.add_argument("--scenario", choices=sorted(scenarios), required=True)
    parser.add_argument("--artifacts", type=Path, required=True, help="directory for screenshots and logs")
    parser.add_argument(
        "--scratch",
        type=Path,
        default=Path(os.environ.get("TMPDIR", "/tmp")),
        help="directory for data files",
    )
    arguments = parser.parse_args()
    artifacts = arguments.artifacts.resolve()
    result = run_scenario(
        arguments.scenario, scenarios[arguments.scenario], artifacts, arguments.scratch.resolve()
    )
    (artifacts / "result.json").write_text(json.dumps(result, indent=1))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0 if result["ok"] else 1
