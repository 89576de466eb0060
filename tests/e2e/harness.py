"""What the end-to-end scripts share: a network namespace with only loopback, `twistd -n vchat` and other
processes started and stopped, headless Chromium with a fake camera, and the reference page's status log.

Used by tests/e2e/web_scenario.py (the web client's end-to-end test) and bench/web_latency.py (what a user
waits for). Both run themselves inside `unshare --net --pid --fork --kill-child --mount-proc` (see
`namespace_command`), so that ICE finds no address but 127.0.0.1 and killing `unshare` kills all they started.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Browser, Page, Playwright

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
