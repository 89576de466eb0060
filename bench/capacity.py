"""Capacity benchmark: vchat's memory per connection and relay throughput/latency, against a bare echo server.

Run from the repository root with the project's Python:

    .venv/bin/python bench/capacity.py [--counts 1000,10000] [--relay-conns 200] [--moderation both]
        [--rounds 3] [--no-latency] [--json FILE]

It measures, in one run, on 127.0.0.1 only:

(a) peak RSS per idle vchat connection that sent `hello` and got `welcome` (VmHWM of `twistd -n vchat` after
    connecting, minus its VmRSS before, divided by the count), for each of --counts;
(b) the same for a bare Autobahn echo server (inline below) with as many connections that each sent one
    small message and got its echo;
(c) relay throughput: pairs matched by vchat exchanging `chat` messages in a closed loop (each connection
    keeps --window messages in flight, cycling through 32 different lines) versus the echo server's
    messages/s for as many connections;
(d) p50/p99 latency of relayed chats (and of echoes) sent open-loop at half vchat's throughput.

vchat is measured with automatic moderation on (no config file: every rule found, at its defaults), off (a
config file whose `[rules.NAME]` tables disable every rule), or, by default, both: (a) and (c)/(d) alternate the
two (on, off, then off, on, ...; --rounds repeats (c)/(d)), and the report gives best, median and worst of each
and the on / off throughput ratio (the budget: at least 0.90). The relay is all `chat`, the only relayed message
the rules look at; the lines hold no link and none repeats within the 20 the rules compare, so every rule judges
every message and none acts.

Load comes from separate worker processes (this same script with --worker) speaking WebSocket over raw
sockets with pre-built frames, so that the clients cost far less CPU than the server they measure. The
server and the workers share the machine's cores: the figures are for that shared machine, and the ratios
(vchat / echo) are what the targets are about. Every phase has a deadline, and every process is stopped at
the end. For (c) and (d) vchat runs with its per-connection rate limit raised out of the way
(--message-rate/--message-burst): the point is the relay path's ceiling, not the limiter's policy.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from _wsload import (
    HOST,
    Client,
    Load,
    add_worker_options,
    chat_frames,
    parse_command_line,
    worker_setup,
    ws_frame,
)

from vchat.bot.stats import percentile
from vchat.moderation.rules import BUILT_IN_RULES, find_rules
from vchat.rlimit import raise_open_files_limit

ROOT = Path(__file__).resolve().parent.parent
Args = argparse.Namespace

ECHO_SERVER = """
import resource, sys
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from twisted.internet import reactor

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Echo(WebSocketServerProtocol):
    def onConnect(self, request):
        return request.protocols[0] if request.protocols else None

    def onMessage(self, payload, isBinary):
        self.sendMessage(payload, isBinary)


factory = WebSocketServerFactory(reactor=reactor)
factory.protocol = Echo
reactor.listenTCP(int(sys.argv[1]), factory, backlog=1024, interface="127.0.0.1")
reactor.run()
"""


SPIN = """
import sys, time
start = time.process_time()
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    pass
print(time.process_time() - start)
"""


def available_cores(seconds: float = 1.0) -> float:
    """CPU cores this run can really use now: one busy loop per core, CPU time got over wall time."""
    spinners = [
        subprocess.Popen([sys.executable, "-c", SPIN, str(seconds)], stdout=subprocess.PIPE)
        for _ in range(os.cpu_count() or 1)
    ]
    return sum(float(spinner.communicate(timeout=seconds + 30)[0]) for spinner in spinners) / seconds


# --- the load-generating worker (runs in its own process, with its own reactor) -------------------------


def worker_main(args: Args) -> NoReturn:
    """Open `--count` connections, report READY, then obey RELAY / LATENCY / QUIT lines on stdin."""
    worker_setup()
    from twisted.internet import reactor

    vchat = args.server == "vchat"
    hello = ws_frame(
        json.dumps({"type": "hello", "age_confirmed": True, "gender": "u"}).encode()
        if vchat
        else b'{"type":"echo","text":"hello"}'
    )
    search = ws_frame(json.dumps({"type": "search", "want": "any"}).encode())
    chat_prefix = b'{"type":"chat"'

    class State(Load):
        """The worker's shared counters and phase (setup, relay, latency, drain)."""

        def __init__(self) -> None:
            super().__init__(args.count, args.concurrency)
            self.samples: list[float] = []
            self.sampling = False
            self.sent = 0

        def connect(self, n: int) -> None:
            self.dial(args.port, Conn)

    state = State()

    class Conn(Client):
        """One raw WebSocket client connection: vchat's (hello, then search for a relay) or the echo server's."""

        def __init__(self) -> None:
            super().__init__(state, args.port, hello)

        def message(self, payload: bytes) -> None:
            phase = state.phase
            if phase == "relay":
                if not vchat or payload.startswith(chat_prefix):
                    state.received += 1
                    self.relay_on()
                else:
                    state.errors += 1
                return
            if phase == "latency":
                if not vchat or payload.startswith(chat_prefix):
                    text = payload[payload.rfind(b'"text":"') + 8 : -2]  # both servers put text last
                    if text.isdigit():
                        state.received += 1
                        if state.sampling:
                            state.samples.append((time.monotonic_ns() - int(text)) / 1e6)
                else:
                    state.errors += 1
                return
            if phase != "setup" or self.is_ready:
                return
            if not vchat:
                self.become_ready()
                return
            kind = json.loads(payload).get("type")
            if kind == "welcome":
                if args.mode == "idle":
                    self.become_ready()
                else:
                    self.transport.write(search)
            elif kind == "matched":
                self.match_id = json.loads(payload)["match_id"]
                self.become_ready()

        def become_ready(self) -> None:
            self.relay_frames = chat_frames(self.match_id or "x" * 12)
            super().become_ready()

    def chat_prefix_for(conn: Conn) -> bytes:
        return b'{"type":"chat","match_id":' + json.dumps(conn.match_id or "x" * 12).encode() + b',"text":"'

    def relay(warmup: float, measure: float) -> None:
        state.start_relay(args.window)
        marks: dict[str, tuple[float, int, int]] = {}

        def mark(name: str) -> None:
            marks[name] = (time.monotonic(), state.received, state.errors)
            if name == "end":
                state.phase = "drain"
                (t0, r0, e0), (t1, r1, e1) = marks["start"], marks["end"]
                state.emit(
                    "RESULT " + json.dumps({"received": r1 - r0, "seconds": t1 - t0, "errors": e1 - e0})
                )

        reactor.callLater(warmup, mark, "start")
        reactor.callLater(warmup + measure, mark, "end")

    def latency(rate: float, warmup: float, measure: float) -> None:
        state.phase = "latency"
        state.sampling = False
        state.samples = []
        started = time.monotonic()
        budget = [0.0, started]
        frames = [(conn, chat_prefix_for(conn)) for conn in state.conns]
        index = [0]

        def tick() -> None:
            now = time.monotonic()
            budget[0] += rate * (now - budget[1])
            budget[1] = now
            due = int(budget[0])
            budget[0] -= due
            for _ in range(due):
                conn, prefix = frames[index[0] % len(frames)]
                index[0] += 1
                conn.transport.write(ws_frame(prefix + str(time.monotonic_ns()).encode() + b'"}'))
            state.sent += due
            if now - started < warmup + measure:
                reactor.callLater(0.002, tick)
            else:
                state.sampling = False
                reactor.callLater(0.5, finish)

        def begin_sampling() -> None:
            state.sampling = True
            state.sent = 0
            state.received = 0

        def finish() -> None:
            state.phase = "drain"
            result = {"samples": state.samples, "sent": state.sent, "received": state.received}
            state.emit("RESULT " + json.dumps(result))

        reactor.callLater(warmup, begin_sampling)
        tick()

    state.run(args.deadline, {"RELAY": relay, "LATENCY": latency})


# --- the orchestrator --------------------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port that is free right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB."""
    values = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


@dataclass
class Server:
    """A server subprocess on a loopback port."""

    kind: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def pinned(cpus: set[int] | None) -> Callable[[], None] | None:
    """A preexec_fn that keeps a child process on `cpus` (None: wherever the kernel likes)."""
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def cpu_split(pin: bool) -> tuple[set[int] | None, set[int] | None]:
    """(server CPUs, load generator CPUs): the first CPU for the server, the rest for the load, when pinning."""
    available = sorted(os.sched_getaffinity(0))
    if not pin or len(available) < 2:
        return None, None
    return {available[0]}, set(available[1:])


def start_server(kind: str, workdir: Path, extra: Sequence[str] = (), cpus: set[int] | None = None) -> Server:
    """Start vchat (`twistd -n vchat`) or the bare echo server, and wait until it accepts connections."""
    port = free_port()
    log = workdir / f"{kind}-{port}.log"
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=path)
    if kind == "vchat":
        command = [
            sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "-n", "--pidfile=", "--logfile", str(log),
            "vchat", "--ws", f"tcp:{port}:interface={HOST}:backlog=1024",
            "--data-dir", str(workdir / "vchat-data"),
            "--max-connections-per-ip", "0",  # every load generator connects from 127.0.0.1
            *extra,
        ]  # fmt: skip
    else:
        command = [sys.executable, "-c", ECHO_SERVER, str(port)]
    with open(log, "ab") as log_file:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=pinned(cpus),
        )
    server = Server(kind, port, process, log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{kind} server exited early; see {log}:\n{log.read_text()[-2000:]}")
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            time.sleep(0.3)  # let it settle (and forget that probe) before the baseline is read
            return server
        except OSError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{kind} server did not listen on {port} within 30 s")


@dataclass
class Worker:
    """A load-generating worker process and the lines it has printed."""

    process: subprocess.Popen[bytes]
    buffer: bytes = b""
    lines: list[str] = field(default_factory=list)

    def send(self, line: str) -> None:
        """Write one command line to its stdin."""
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        self.process.stdin.flush()


def start_workers(server: Server, mode: str, total: int, count: int, args: Args) -> list[Worker]:
    """Spread `total` connections over `count` worker processes (even shares, for pairs)."""
    shares = [total // count // 2 * 2] * count
    shares[-1] += total - sum(shares)
    workers = []
    for share in shares:
        command = [
            sys.executable, __file__, "--worker",
            "--server", server.kind, "--port", str(server.port), "--mode", mode, "--count", str(share),
            "--window", str(args.window), "--concurrency", str(args.concurrency),
            "--deadline", str(args.phase_timeout * 4),
        ]  # fmt: skip
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, preexec_fn=pinned(cpu_split(args.pin)[1])
        )
        workers.append(Worker(process))
    return workers


def wait_for(workers: list[Worker], prefix: str, timeout: float) -> list[str]:
    """The first line starting with `prefix` from each worker; raises on FAILED lines, exits or timeout."""
    deadline = time.monotonic() + timeout
    found: dict[int, str] = {}
    while len(found) < len(workers):
        for i, worker in enumerate(workers):
            for line in worker.lines:
                if i not in found and line.startswith(prefix):
                    found[i] = line
                elif line.startswith("FAILED"):
                    raise RuntimeError(f"worker {i}: {line} connections failed")
            worker.lines = [line for line in worker.lines if not line.startswith(prefix)]
        if len(found) == len(workers):
            break
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {prefix} from the workers")
        pipes = {w.process.stdout.fileno(): w for w in workers if w.process.stdout is not None}
        readable, _, _ = select.select(list(pipes), [], [], min(left, 1.0))
        for fd in readable:
            worker = pipes[fd]
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                if worker.process.poll() is not None and workers.index(worker) not in found:
                    raise RuntimeError(f"a worker exited with {worker.process.returncode} before {prefix}")
                continue
            worker.buffer += chunk
            *complete, worker.buffer = worker.buffer.split(b"\n")
            worker.lines += [line.decode() for line in complete]
    return [found[i] for i in range(len(workers))]


def stop_workers(workers: list[Worker]) -> None:
    """Tell every worker to quit, and make sure it did."""
    for worker in workers:
        try:
            worker.send("QUIT")
            assert worker.process.stdin is not None
            worker.process.stdin.close()
        except (BrokenPipeError, OSError):
            pass
    for worker in workers:
        try:
            worker.process.wait(20)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()


def moderation_options(moderation: str, workdir: Path) -> list[str]:
    """vchat's options for moderation `on` (every rule found at its defaults: no config file) or `off` (a config
    file with `enabled = false` in the `[rules.NAME]` table of every rule, built in or found as a plugin)."""
    if moderation == "on":
        return []
    names = {rule.name for rule in BUILT_IN_RULES} | set(find_rules())
    config = workdir / "moderation-off.toml"
    config.write_text("".join(f'[rules."{name}"]\nenabled = false\n\n' for name in sorted(names)), "utf-8")
    return ["--config", str(config)]


def measure_idle(
    kind: str, count: int, args: Args, workdir: Path, extra: Sequence[str] = ()
) -> dict[str, Any]:
    """(a)/(b): server memory per idle connection after `count` clients connected (and said hello)."""
    server = start_server(kind, workdir, extra, cpus=cpu_split(args.pin)[0])
    workers: list[Worker] = []
    try:
        rss_before, _ = memory_kib(server.process.pid)
        began = time.monotonic()
        workers = start_workers(server, "idle", count, args.workers, args)
        wait_for(workers, "READY", args.phase_timeout)
        connect_s = time.monotonic() - began
        time.sleep(1.0)
        rss_after, hwm_after = memory_kib(server.process.pid)
        return {
            "server": kind,
            "connections": count,
            "rss_before_kib": rss_before,
            "rss_after_kib": rss_after,
            "hwm_after_kib": hwm_after,
            "peak_kib_per_conn": (hwm_after - rss_before) / count,
            "rss_kib_per_conn": (rss_after - rss_before) / count,
            "connect_seconds": round(connect_s, 2),
        }
    finally:
        stop_workers(workers)
        server.stop()


def measure_relay(
    kind: str, args: Args, workdir: Path, latency_rate: float | None, extra: Sequence[str] = ()
) -> dict[str, Any]:
    """(c)/(d): closed-loop messages/s, then (unless --no-latency) open-loop latency at `latency_rate` (None:
    half the closed loop's rate)."""
    if kind == "vchat":
        extra = ["--message-rate", "1000000", "--message-burst", "1000000", *extra]
    server = start_server(kind, workdir, extra, cpus=cpu_split(args.pin)[0])
    workers: list[Worker] = []
    try:
        rss_before, _ = memory_kib(server.process.pid)
        count = min(args.workers, args.relay_conns // 2)
        workers = start_workers(server, "relay", args.relay_conns, count, args)
        wait_for(workers, "READY", args.phase_timeout)
        for worker in workers:
            worker.send(f"RELAY {args.warmup} {args.seconds}")
        cpu = server_cpu(server, args)
        results = [json.loads(line[7:]) for line in wait_for(workers, "RESULT", args.seconds + 30)]
        rss_after, _ = memory_kib(server.process.pid)
        seconds = sum(r["seconds"] for r in results) / len(results)
        received = sum(r["received"] for r in results)
        outcome: dict[str, Any] = {
            "server": kind,
            "connections": args.relay_conns,
            "window": args.window,
            "messages": received,
            "seconds": round(seconds, 3),
            "messages_per_s": received / seconds,
            "errors": sum(r["errors"] for r in results),
            "server_cpu": cpu,
            "messages_per_cpu_s": received / seconds / cpu if cpu else None,
            "rss_kib_per_conn_after_relay": (rss_after - rss_before) / args.relay_conns,
            "latency": None,
        }
        if not args.latency:
            return outcome
        rate = latency_rate if latency_rate is not None else outcome["messages_per_s"] / 2
        time.sleep(1.0)  # let the closed loop's messages drain
        for worker in workers:
            worker.send(f"LATENCY {rate / len(workers)} {args.warmup} {args.seconds}")
        latency_cpu = server_cpu(server, args)
        results = [json.loads(line[7:]) for line in wait_for(workers, "RESULT", args.seconds + 30)]
        samples = sorted(s for r in results for s in r["samples"])
        outcome["latency"] = {
            "rate_per_s": rate,
            "sent": sum(r["sent"] for r in results),
            "received": sum(r["received"] for r in results),
            "samples": len(samples),
            "p50_ms": percentile(samples, 50) if samples else None,
            "p99_ms": percentile(samples, 99) if samples else None,
            "max_ms": samples[-1] if samples else None,
            "server_cpu": latency_cpu,
        }
        return outcome
    finally:
        stop_workers(workers)
        server.stop()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cpu(server: Server, args: Args) -> float:
    """Wait out the warmup; then the server's CPU use over the measured seconds (1.0 = one core)."""
    time.sleep(args.warmup)
    before, t0 = cpu_seconds(server.process.pid), time.monotonic()
    time.sleep(args.seconds)
    return (cpu_seconds(server.process.pid) - before) / (time.monotonic() - t0)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _name(label: str) -> str:
    return {"on": "vchat mod on", "off": "vchat mod off", "echo": "bare echo"}[label]


def spread(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Best, median and worst closed-loop rate of repeated relay runs of one server."""
    rates = sorted(run["messages_per_s"] for run in runs)
    return {"runs": len(rates), "best": rates[-1], "median": rates[len(rates) // 2], "worst": rates[0]}


def report_table(results: dict[str, Any], write: Callable[[str], None]) -> None:
    """Print the figures as a table: vchat (with moderation on, off or both) next to the bare server."""
    variants: list[str] = results["moderation"]
    write("")
    write(
        f"machine: {results['cpus']} CPUs shared by server and load generators; cores available before/after"
        f" the run: {results['cores_available_before']}/{results['cores_available_after']}"
    )
    write(
        "vchat with moderation "
        + " and ".join(variants)
        + " (on: every rule at its defaults; off: all disabled)"
    )
    write(
        "(a)/(b) server memory per idle connection (KiB; peak = VmHWM after - VmRSS before; ratio: to echo)"
    )
    columns = [_name(label) for label in variants]
    write(
        f"{'connections':>11} "
        + " ".join(f"{c:>13}" for c in columns)
        + f" {'bare echo':>10} "
        + " ".join(f"{'ratio ' + label:>9}" for label in variants)
    )
    for row in results["idle"]:
        cells = " ".join(f"{row['vchat'][label]['peak_kib_per_conn']:>13.2f}" for label in variants)
        ratios = " ".join(f"{row['peak_ratio'][label]:>9.2f}" for label in variants)
        write(f"{row['connections']:>11} {cells} {row['echo']['peak_kib_per_conn']:>10.2f} {ratios}")
    relay = results["relay"]
    first = relay["runs"][variants[0]][0]
    write("")
    write(
        f"(c) closed-loop throughput, {first['connections']} connections, window {first['window']}, all `chat`;"
        f" {results['rounds']} round(s), in this order: {', '.join(relay['order'])}"
    )
    for label in [*variants, "echo"]:
        for run in relay["runs"][label]:
            write(
                f"    {_name(label):<14} {run['messages_per_s']:>8.0f} msg/s  server CPU {run['server_cpu']:.2f}"
                f"  {run['messages_per_cpu_s'] or 0:>8.0f} msg/CPU-s  errors {run['errors']}"
                f"  RSS {run['rss_kib_per_conn_after_relay']:.1f} KiB/conn"
            )
    for label in [*variants, "echo"]:
        s = relay["spread"][label]
        write(
            f"    {_name(label):<14} best {s['best']:>8.0f}  median {s['median']:>8.0f}  worst {s['worst']:>8.0f}"
            + (f"  best / best echo {relay['throughput_ratio'][label]:.2f}" if label != "echo" else "")
        )
    if "moderation_ratio" in relay:
        paired = ", ".join(f"{r:.3f}" for r in relay["paired_ratios"])
        write(
            f"    moderation on / off: best {relay['moderation_ratio']:.3f}, median"
            f" {relay['moderation_median_ratio']:.3f}; per round {paired}"
        )
    if results["latency"]:
        write("")
        rate = relay["runs"][variants[0]][0]["latency"]["rate_per_s"]
        write(f"(d) open-loop latency at {rate:.0f} msg/s (every server, every run)")
        for label in [*variants, "echo"]:
            for run in relay["runs"][label]:
                lat = run["latency"]
                p50, p99 = lat["p50_ms"], lat["p99_ms"]
                shown = (
                    f"p50 {p50:.2f} ms  p99 {p99:.2f} ms"
                    if p50 is not None and p99 is not None
                    else "no samples"
                )
                write(
                    f"    {_name(label):<14} {shown}  ({lat['samples']} samples, server CPU {lat['server_cpu']:.2f})"
                )
    write("")
    write(
        "targets: idle peak ratio at the largest count <= 1.5; throughput ratio >= 0.70; p99 < 20 ms at half rate;"
        " moderation on >= 0.90 of off"
    )
    for line in results["verdicts"]:
        write("  " + line)


def verdicts(results: dict[str, Any]) -> list[str]:
    """Pass/fail lines against the issues' targets (on the best run of each server)."""
    lines = []
    largest = max(results["idle"], key=lambda row: row["connections"])
    relay = results["relay"]
    for label in results["moderation"]:
        name = f"(moderation {label})"
        peak = largest["peak_ratio"][label]
        ok = peak is not None and peak <= 1.5
        lines.append(
            f"{'PASS' if ok else 'FAIL'} memory {name}: {peak:.2f}x the bare server at {largest['connections']}"
        )
        ratio = relay["throughput_ratio"][label]
        ok = ratio is not None and ratio >= 0.7
        lines.append(f"{'PASS' if ok else 'FAIL'} throughput {name}: {ratio:.2f} of the bare echo server's")
        if results["latency"]:
            p99s = [
                run["latency"]["p99_ms"]
                for run in relay["runs"][label]
                if run["latency"]["p99_ms"] is not None
            ]
            p99 = min(p99s) if p99s else None
            ok = p99 is not None and p99 < 20
            lines.append(f"{'PASS' if ok else 'FAIL'} latency {name}: best p99 {p99} ms at half rate")
    if "moderation_ratio" in relay:
        ratio = relay["moderation_ratio"]
        ok = ratio >= 0.9
        lines.append(
            f"{'PASS' if ok else 'FAIL'} moderation: on / off throughput {ratio:.3f} (best of each; budget >= 0.90)"
        )
    return lines


def orchestrate(args: Args) -> dict[str, Any]:
    """Run every phase and gather the figures; vchat's configurations alternate (on, off, then off, on, ...)."""
    limit = raise_open_files_limit()
    needed = max(args.counts) + 200
    if limit < needed:
        raise SystemExit(f"RLIMIT_NOFILE is {limit}; {needed} are needed for {max(args.counts)} connections")
    write = _writer()
    variants = ["on", "off"] if args.moderation == "both" else [args.moderation]
    results: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "moderation": variants,
        "rounds": args.rounds,
        "latency": args.latency,
        "idle": [],
    }
    results["cores_available_before"] = round(available_cores(), 2)
    write(f"{results['cpus']} CPUs; a busy loop on each got {results['cores_available_before']} cores in all")
    with tempfile.TemporaryDirectory(prefix="vchat-bench-") as tmp:
        workdir = Path(tmp)
        options = {label: moderation_options(label, workdir) for label in variants}

        def alternated(round_: int) -> list[str]:
            return variants if round_ % 2 == 0 else variants[::-1]

        for i, count in enumerate(args.counts):
            row: dict[str, Any] = {"connections": count, "vchat": {}}
            for label in alternated(i):
                write(f"idle: {count} connections to vchat, moderation {label}...")
                row["vchat"][label] = figures = measure_idle("vchat", count, args, workdir, options[label])
                write(
                    f"      {figures['peak_kib_per_conn']:.2f} KiB/connection peak ({figures['connect_seconds']} s)"
                )
            write(f"idle: {count} connections to echo...")
            row["echo"] = figures = measure_idle("echo", count, args, workdir)
            write(
                f"      {figures['peak_kib_per_conn']:.2f} KiB/connection peak ({figures['connect_seconds']} s)"
            )
            echo_peak = row["echo"]["peak_kib_per_conn"]
            row["peak_ratio"] = {
                label: _ratio(row["vchat"][label]["peak_kib_per_conn"], echo_peak) for label in variants
            }
            results["idle"].append(row)
        runs: dict[str, list[dict[str, Any]]] = {label: [] for label in [*variants, "echo"]}
        order: list[str] = []
        rate = args.latency_rate  # None: half the first vchat run's throughput, then the same for every run
        for round_ in range(args.rounds):
            for label in [*alternated(round_), "echo"]:
                write(f"relay: {args.relay_conns} connections to {_name(label)}...")
                if label == "echo":
                    run = measure_relay("echo", args, workdir, rate)
                else:
                    run = measure_relay("vchat", args, workdir, rate, options[label])
                if run["latency"] is not None:
                    rate = run["latency"]["rate_per_s"]
                    shown = f"; latency p99 {run['latency']['p99_ms']} ms at {rate:.0f} msg/s"
                else:
                    shown = ""
                write(f"       {run['messages_per_s']:.0f} msg/s, {run['errors']} errors{shown}")
                runs[label].append(run)
                order.append(label)
        spreads = {label: spread(label_runs) for label, label_runs in runs.items()}
        relay: dict[str, Any] = {
            "runs": runs,
            "order": order,
            "spread": spreads,
            "throughput_ratio": {
                label: _ratio(spreads[label]["best"], spreads["echo"]["best"]) for label in variants
            },
        }
        if len(variants) == 2:
            relay["moderation_ratio"] = spreads["on"]["best"] / spreads["off"]["best"]
            relay["moderation_median_ratio"] = spreads["on"]["median"] / spreads["off"]["median"]
            relay["paired_ratios"] = [
                on["messages_per_s"] / off["messages_per_s"]
                for on, off in zip(runs["on"], runs["off"], strict=True)
            ]
        results["relay"] = relay
    results["cores_available_after"] = round(available_cores(), 2)
    results["verdicts"] = verdicts(results)
    return results


def _writer() -> Callable[[str], None]:
    def write(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    return write


def write_json(path: str | None, figures: dict[str, Any]) -> None:
    """The figures, as indented JSON, into the file at `path` (--json); without one, nothing."""
    if path:
        with open(path, "w", encoding="utf-8") as file:
            json.dump(figures, file, indent=2)
            file.write("\n")


def _counts(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",") if part]
    if not counts or min(counts) < 2:
        raise argparse.ArgumentTypeError("give one or more connection counts of at least 2, comma-separated")
    return counts


def build_parser() -> argparse.ArgumentParser:
    """Command line of the benchmark (and of its workers)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--counts", type=_counts, default=[1000, 10000], help="idle connection counts (default 1000,10000)")
    add("--relay-conns", type=int, default=200, help="connections for throughput/latency (default 200)")
    add("--window", type=int, default=8, help="messages each connection keeps in flight (default 8)")
    add("--seconds", type=float, default=10.0, help="measured seconds per relay phase (default 10)")
    add("--warmup", type=float, default=2.0, help="unmeasured seconds before each relay phase (default 2)")
    add("--latency-rate", type=float, help="open-loop msg/s for (d) (default: half vchat's throughput)")
    add("--workers", type=int, default=2, help="load-generating processes (default 2)")
    add("--concurrency", type=int, default=64, help="handshakes in flight per worker (default 64)")
    add("--phase-timeout", type=float, default=180.0, help="seconds any setup phase may take (default 180)")
    add("--json", metavar="FILE", help="also write the figures as JSON")
    add(
        "--moderation",
        choices=["on", "off", "both"],
        default="both",
        help="vchat with every moderation rule at its defaults (on), with every rule disabled (off), or both,"
        " alternately, with the ratio (default both)",
    )
    add("--rounds", type=int, default=1, help="relay measurements of each server, alternating (default 1)")
    add(
        "--latency",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure open-loop latency after each closed-loop phase (default: on)",
    )
    add(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="server on the first CPU, load generators on the others (default: on, with 2 or more CPUs)",
    )
    # worker-only options
    add_worker_options(parser)
    add("--server", choices=["vchat", "echo"], help=argparse.SUPPRESS)
    add("--port", type=int, help=argparse.SUPPRESS)
    add("--mode", choices=["idle", "relay"], help=argparse.SUPPRESS)
    return parser


def main() -> None:
    """Run the benchmark, or (with --worker) one of its workers."""
    args = parse_command_line(build_parser(), worker_main)
    if args.relay_conns < 2 or args.relay_conns % 2:
        raise SystemExit("--relay-conns must be an even number of at least 2")
    if args.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    results = orchestrate(args)
    report_table(results, _writer())
    write_json(args.json, results)


if __name__ == "__main__":
    main()
