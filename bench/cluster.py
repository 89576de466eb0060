"""Cluster benchmark: what `--redis` costs, for one node and for N nodes sharing one Redis.

Run from the repository root with the project's Python:

    .venv/bin/python bench/cluster.py --procs N [--duration S] [--json FILE]

It measures, in one run, on 127.0.0.1 only, three configurations, each started afresh:

  A  one `twistd -n vchat` without Redis (the reference);
  B  one `twistd -n vchat --redis URL` (every partner on the same node, but every search still goes through the
     shared queue in Redis);
  C  --procs `twistd -n vchat --redis URL --node-id nI` sharing one redis-server.

and in each of them two workloads, one after the other on the same processes:

  churn  --churn-conns clients that never stop meeting: on `matched` the one with role `offer` sends `next`, its
         partner gets `partner_left` and sends `next` too; the figure is matches/s (`matched` messages / 2);
  relay  --relay-conns clients matched in pairs exchange `chat` in a closed loop, each keeping --window messages
         in flight (as bench/capacity.py does); the figure is relayed messages/s.

Where the clients go, so that about half of the pairs cross nodes in C: clients come in pairs-to-be. Every other
pair is a man who wants a woman and a woman who wants a man, the man on one of the first half of the nodes and
the woman on one of the others (so with 2 or more nodes no man has a compatible partner on his own node, and each
of those matches crosses nodes); the other pairs are two users of gender `u` who want `any`, both on the same
node, who meet on their node (vchat prefers a local partner). In A and B the same clients all go to the one
node. The share of matches, and of relayed messages, that really crossed nodes is measured: the clients report
every `match_id` they got and the node they are on. Half of the pairs is not half of the traffic: a local pair
meets again and relays faster than a crossing one, so C also runs both workloads with every pair across nodes
(`churn-cross`, `relay-cross`); from the two relay runs the report derives the cost of a local and of a crossing
message, and so of a relay where half of the messages cross.

For each workload: the server's CPU (every vchat process, plus redis-server, from /proc/PID/stat) over the
measured seconds, per match and per relayed message in microseconds, Redis's share of it, and Redis's commands
(INFO commandstats deltas, less the benchmark's own INFO and AUTH): requests (what vchat sends: EVAL/EVALSHA of
its Lua scripts, PUBLISH on the node bus, PING) and the commands those scripts run inside Redis, per match and per
relayed message. A relayed message costs one PUBLISH when the partners are on different nodes and nothing when
they are on the same one.

The issue's targets: (1) B's relay throughput at least 90 % of A's; (2) with C at 2 nodes, CPU per relayed
message (vchat and Redis together) at most 1.5 times A's: judged on the mixed run if about half of its messages
crossed, and on the derived half-and-half figure. The report also names txredisapi's reply parser (hiredis, or
its pure-Python one), which the nodes started from this interpreter use too.

Load comes from worker processes (this script with --worker) speaking WebSocket over raw sockets with pre-built
frames, as bench/capacity.py's do (both build on bench/_wsload.py). With --pin (the default) and at least
--procs + 2 CPUs, each node, redis-server and the load generators get CPUs of their own; with fewer, nothing is
pinned and everything shares every CPU, which the report says. vchat runs with its per-connection rate limit
raised out of the way (--message-rate/--message-burst), automatic moderation at its defaults (or off with
--moderation off), no STUN and no admin API. Every phase has a deadline, and every process started is stopped by
its PID at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from _wsload import Client, Load, add_worker_options, chat_frames, parse_command_line, worker_setup, ws_frame
from capacity import (
    Server,
    Worker,
    available_cores,
    cpu_seconds,
    moderation_options,
    pinned,
    start_server,
    stop_workers,
    wait_for,
    write_json,
)

from vchat.rlimit import raise_open_files_limit
from vchat.store.redis_testing import RedisServer, start_redis

Args = argparse.Namespace
BENCH_COMMANDS = frozenset({"info", "auth"})  # this script's own, over its INFO connections
SCRIPT_COMMANDS = frozenset({"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"})
# What a client can send and a Lua script never does in vchat (its scripts call data commands only); every
# other command counted ran inside a script.
REQUEST_COMMANDS = SCRIPT_COMMANDS | {
    "publish",
    "ping",
    "subscribe",
    "unsubscribe",
    "psubscribe",
    "punsubscribe",
    "select",
    "script",
    "client",
    "hello",
    "quit",
}
WORKLOADS = ("churn", "relay", "churn-cross", "relay-cross")
TARGET_RELAY_RATIO = 0.90
TARGET_CPU_RATIO = 1.5


def client_plan(index: int, nodes: int, mix: str = "half") -> tuple[int, str, str]:
    """(node, gender, want) of client `index` (see the module's docstring). Mix `half`: pairs-to-be alternate
    between a man wanting a woman with a woman wanting a man, on different nodes, and two `u` wanting `any` on
    one node; mix `cross`: every pair is of the first kind."""
    pair, side = divmod(index, 2)
    slot = pair if mix == "cross" else pair // 2
    if mix == "cross" or pair % 2 == 0:
        if nodes == 1:
            return 0, ("m", "f")[side], ("f", "m")[side]
        men = nodes // 2
        if side == 0:
            return slot % men, "m", "f"
        return men + slot % (nodes - men), "f", "m"
    return slot % nodes, "u", "any"


# --- the load-generating worker (runs in its own process, with its own reactor) -------------------------


def worker_main(args: Args) -> NoReturn:
    """Open `--count` connections (clients `--first`..), report READY, then obey CHURN / RELAY / QUIT lines."""
    worker_setup()
    from twisted.internet import reactor

    ports = [int(port) for port in args.ports.split(",")]
    next_frame = ws_frame(b'{"type":"next"}')
    chat_prefix = b'{"type":"chat"'

    class State(Load):
        """The worker's counters and phase (setup, churn, relay, drain)."""

        def __init__(self) -> None:
            super().__init__(args.count, args.concurrency)
            self.counting = False
            self.matched = 0
            self.match_ids: list[tuple[str, int]] = []

        def connect(self, n: int) -> None:
            index = args.first + n
            node = client_plan(index, len(ports), args.mix)[0]
            self.dial(ports[node], lambda: Conn(index))

    state = State()

    class Conn(Client):
        """One raw WebSocket client: its node, gender and the gender it wants come from `client_plan`."""

        def __init__(self, index: int) -> None:
            node, gender, want = client_plan(index, len(ports), args.mix)
            hello = ws_frame(json.dumps({"type": "hello", "age_confirmed": True, "gender": gender}).encode())
            super().__init__(state, ports[node], hello)
            self.node = node
            self.search = ws_frame(json.dumps({"type": "search", "want": want}).encode())
            self.searching_since: float | None = None
            self.received = 0

        def message(self, payload: bytes) -> None:
            phase = state.phase
            if phase == "relay":
                if payload.startswith(chat_prefix):
                    state.received += 1
                    if state.counting:
                        self.received += 1
                    self.relay_on()
                else:
                    state.error(str(json.loads(payload).get("code", "unexpected message")))
                return
            if phase == "drain":
                return
            message = json.loads(payload)
            kind = message.get("type")
            if phase == "churn":
                if kind == "matched":
                    self.searching_since = None
                    if state.counting:
                        state.matched += 1
                        state.match_ids.append((message["match_id"], self.node))
                    if message["role"] == "offer":
                        self.next()
                elif kind == "partner_left":
                    self.next()
                elif kind == "error":
                    state.error(str(message.get("code")))
                return
            if self.is_ready:
                return
            if kind == "welcome":
                if args.mode == "churn":
                    self.become_ready()
                else:
                    self.transport.write(self.search)
            elif kind == "matched":
                self.match_id = message["match_id"]
                self.become_ready()

        def next(self) -> None:
            self.searching_since = time.monotonic()
            self.transport.write(next_frame)

        def become_ready(self) -> None:
            if self.match_id:
                self.relay_frames = chat_frames(self.match_id)
            super().become_ready()

    def measured(warmup: float, measure: float, result: Any) -> None:
        """Count from `warmup` seconds on for `measure` seconds; then stop and report `result()`."""
        marks: dict[str, float] = {}

        def start() -> None:
            state.counting = True
            state.matched = state.received = state.errors = 0
            state.error_codes.clear()
            state.match_ids = []
            marks["start"] = time.monotonic()

        def end() -> None:
            seconds = time.monotonic() - marks["start"]
            state.counting = False
            state.phase = "drain"
            state.emit("RESULT " + json.dumps({"seconds": seconds, **result()}))

        reactor.callLater(warmup, start)
        reactor.callLater(warmup + measure, end)

    def churn(warmup: float, measure: float) -> None:
        state.phase = "churn"
        conns: list[Conn] = state.conns
        for conn in conns:
            conn.searching_since = time.monotonic()
            conn.transport.write(conn.search)

        def result() -> dict[str, Any]:
            now = time.monotonic()
            waits = [now - c.searching_since for c in conns if c.searching_since is not None]
            return {
                "matched": state.matched,
                "errors": state.errors,
                "error_codes": dict(state.error_codes),
                "match_ids": state.match_ids,
                "searching_at_end": len(waits),
                "longest_wait_s": max(waits, default=0.0),
            }

        measured(warmup, measure, result)

    def relay(warmup: float, measure: float) -> None:
        state.start_relay(args.window)
        conns: list[Conn] = state.conns

        def result() -> dict[str, Any]:
            return {
                "received": state.received,
                "errors": state.errors,
                "error_codes": dict(state.error_codes),
                "match_ids": [(c.match_id, c.node) for c in conns],
                "received_by_match": [(c.match_id, c.received) for c in conns],
            }

        measured(warmup, measure, result)

    state.run(args.deadline, {"CHURN": churn, "RELAY": relay})


# --- the orchestrator --------------------------------------------------------------------------------------


@dataclass
class Placement:
    """Which CPUs each kind of process may use (None: any)."""

    nodes: list[set[int] | None]
    redis: set[int] | None
    load: set[int] | None
    note: str


def placement(procs: int, pin: bool) -> Placement:
    """A CPU of its own for each node and for redis-server, the rest for the load, when there are enough."""
    available = sorted(os.sched_getaffinity(0))
    if pin and len(available) >= procs + 2:
        return Placement(
            [{cpu} for cpu in available[:procs]],
            {available[procs]},
            set(available[procs + 1 :]),
            f"pinned: node i on CPU {available[0]}+i, redis-server on CPU {available[procs]}, load generators"
            f" on CPUs {available[procs + 1]}-{available[-1]}",
        )
    why = "--no-pin" if not pin else f"{len(available)} CPUs < --procs + 2"
    return Placement(
        [None] * procs,
        None,
        None,
        f"not pinned ({why}): every vchat process, redis-server and the load generators share all"
        f" {len(available)} CPUs",
    )


def redis_stats(redis: RedisServer) -> dict[str, dict[str, int]]:
    """Redis's INFO commandstats: {command: {calls, usec}}."""
    reply = redis.command("INFO", "commandstats")
    assert isinstance(reply, bytes)
    stats = {}
    for line in reply.decode().splitlines():
        if line.startswith("cmdstat_"):
            name, _, rest = line[len("cmdstat_") :].partition(":")
            fields = dict(item.split("=", 1) for item in rest.split(","))
            stats[name] = {"calls": int(fields["calls"]), "usec": int(fields["usec"])}
    return stats


@dataclass
class Snapshot:
    """Counters read at one moment: wall clock, CPU seconds of each vchat process, redis-server and workers."""

    at: float
    nodes: list[float]
    redis: float
    load: float
    commands: dict[str, dict[str, int]]


def snapshot(nodes: list[Server], redis: RedisServer | None, workers: list[Worker]) -> Snapshot:
    """Read the counters now."""
    commands = redis_stats(redis) if redis is not None else {}
    redis_cpu = cpu_seconds(redis.process.pid) if redis is not None and redis.process is not None else 0.0
    return Snapshot(
        time.monotonic(),
        [cpu_seconds(node.process.pid) for node in nodes],
        redis_cpu,
        sum(cpu_seconds(worker.process.pid) for worker in workers),
        commands,
    )


def usage(before: Snapshot, after: Snapshot) -> dict[str, Any]:
    """CPU used and Redis commands run between two snapshots."""
    nodes = [b - a for a, b in zip(before.nodes, after.nodes, strict=True)]
    redis = after.redis - before.redis
    calls = {
        name: after.commands[name]["calls"] - before.commands.get(name, {"calls": 0})["calls"]
        for name in after.commands
        if name not in BENCH_COMMANDS
    }
    calls = {name: n for name, n in sorted(calls.items(), key=lambda item: -item[1]) if n}
    requests = sum(n for name, n in calls.items() if name in REQUEST_COMMANDS)
    return {
        "seconds": after.at - before.at,
        "node_cpu_s": nodes,
        "redis_cpu_s": redis,
        "server_cpu_s": sum(nodes) + redis,
        "load_cpu_s": after.load - before.load,
        "redis_calls": calls,
        "redis_requests": requests,
        "redis_script_commands": sum(calls.values()) - requests,
    }


def start_workers(
    mode: str, mix: str, total: int, ports: list[int], args: Args, cpus: set[int] | None
) -> list[Worker]:
    """Spread clients 0..`total`-1 over --workers worker processes."""
    count = min(args.workers, total // 2)
    shares = [total // count] * count
    shares[-1] += total - sum(shares)
    workers, first = [], 0
    for share in shares:
        command = [
            sys.executable, __file__, "--worker", "--mode", mode, "--mix", mix,
            "--ports", ",".join(map(str, ports)), "--first", str(first), "--count", str(share),
            "--window", str(args.window), "--concurrency", str(args.concurrency),
            "--deadline", str(args.phase_timeout * 4),
        ]  # fmt: skip
        first += share
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, preexec_fn=pinned(cpus)
        )
        workers.append(Worker(process))
    return workers


def cross_share(match_ids: list[tuple[str, int]]) -> dict[str, Any]:
    """Of the matches whose two sides were both seen, how many had them on different nodes."""
    sides: dict[str, list[int]] = {}
    for match_id, node in match_ids:
        sides.setdefault(match_id, []).append(node)
    both = [nodes for nodes in sides.values() if len(nodes) == 2]
    cross = sum(1 for a, b in both if a != b)
    return {
        "matches_seen_twice": len(both),
        "cross_node": cross,
        "share": cross / len(both) if both else None,
    }


def cross_messages(results: list[dict[str, Any]]) -> int:
    """Chats received in the window by clients whose partner was on another node."""
    nodes: dict[str, set[int]] = {}
    for r in results:
        for match_id, node in r["match_ids"]:
            nodes.setdefault(match_id, set()).add(node)
    return sum(n for r in results for match_id, n in r["received_by_match"] if len(nodes[match_id]) > 1)


def measure(
    workload: str,
    nodes: list[Server],
    redis: RedisServer | None,
    args: Args,
    where: Placement,
) -> dict[str, Any]:
    """One workload (`churn` or `relay`, with `-cross` for every pair across nodes) against running nodes:
    counts, CPU and Redis commands in the measured window."""
    mode, _, mix = workload.partition("-")
    total = args.churn_conns if mode == "churn" else args.relay_conns
    workers = start_workers(mode, mix or "half", total, [node.port for node in nodes], args, where.load)
    try:
        began = time.monotonic()
        wait_for(workers, "READY", args.phase_timeout)
        setup_s = time.monotonic() - began
        for worker in workers:
            worker.send(f"{mode.upper()} {args.warmup} {args.duration}")
        time.sleep(args.warmup)
        before = snapshot(nodes, redis, workers)
        time.sleep(args.duration)
        after = snapshot(nodes, redis, workers)
        results = [json.loads(line[7:]) for line in wait_for(workers, "RESULT", args.duration + 30)]
    finally:
        stop_workers(workers)
    used = usage(before, after)
    seconds = sum(r["seconds"] for r in results) / len(results)
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r["error_codes"])
    outcome: dict[str, Any] = {
        "connections": total,
        "setup_s": round(setup_s, 2),
        "seconds": round(seconds, 3),
        "errors": sum(r["errors"] for r in results),
        "error_codes": dict(errors),
        "cross": cross_share([tuple(pair) for r in results for pair in r["match_ids"]]),
        **used,
    }
    if mode == "churn":
        count = sum(r["matched"] for r in results) / 2
        outcome["matches"] = count
        outcome["searching_at_end"] = sum(r["searching_at_end"] for r in results)
        outcome["longest_wait_s"] = round(max(r["longest_wait_s"] for r in results), 3)
    else:
        count = sum(r["received"] for r in results)
        outcome["messages"] = count
        outcome["cross_messages"] = cross_messages(results)
        outcome["window"] = args.window
    outcome["per_s"] = count / seconds if seconds else 0.0
    outcome["cpu_us_per"] = used["server_cpu_s"] / count * 1e6 if count else None
    outcome["redis_cpu_us_per"] = used["redis_cpu_s"] / count * 1e6 if count else None
    outcome["redis_cpu_share"] = used["redis_cpu_s"] / used["server_cpu_s"] if used["server_cpu_s"] else None
    outcome["redis_requests_per"] = used["redis_requests"] / count if count else None
    outcome["redis_commands_per"] = sum(used["redis_calls"].values()) / count if count else None
    outcome["redis_calls_per"] = {name: n / count for name, n in used["redis_calls"].items()} if count else {}
    return outcome


def run_configuration(
    name: str,
    procs: int,
    with_redis: bool,
    args: Args,
    workdir: Path,
    where: Placement,
    write: Callable[[str], None],
) -> dict[str, Any]:
    """Start a configuration (redis-server and its nodes), run both workloads on it, stop it all."""
    redis: RedisServer | None = None
    nodes: list[Server] = []
    figures: dict[str, Any] = {"nodes": procs, "redis": with_redis}
    try:
        if with_redis:
            redis = start_redis(workdir / f"redis-{name}")
            assert redis.process is not None
            if where.redis:
                os.sched_setaffinity(redis.process.pid, where.redis)
        for i in range(procs):
            extra = [
                "--message-rate", "1000000", "--message-burst", "1000000",
                "--stun-udp", "0", "--admin", "none", "--data-dir", str(workdir / f"data-{name}-{i}"),
                *moderation_options(args.moderation, workdir),
            ]  # fmt: skip
            if redis is not None:
                extra += ["--redis", redis.url, "--node-id", f"n{i}"]
            nodes.append(start_server("vchat", workdir, extra, cpus=where.nodes[i]))
        figures["logs"] = [str(node.log) for node in nodes]
        time.sleep(1.0)  # let the nodes subscribe, beat and elect a matcher
        before = snapshot(nodes, redis, [])
        time.sleep(2.0)
        idle = usage(before, snapshot(nodes, redis, []))
        figures["idle"] = {
            "server_cpu_per_s": idle["server_cpu_s"] / idle["seconds"],
            "redis_requests_per_s": idle["redis_requests"] / idle["seconds"],
            "redis_calls": idle["redis_calls"],
        }
        for workload in WORKLOADS if procs > 1 else WORKLOADS[:2]:
            write(f"{name}: {workload}, {procs} node(s){' + Redis' if with_redis else ''}...")
            try:
                figures[workload] = result = measure(workload, nodes, redis, args, where)
            except RuntimeError as error:
                tails = {str(node.log): node.log.read_text(errors="replace")[-2000:] for node in nodes}
                figures[workload] = {"failed": str(error), "log_tails": tails}
                write(f"   FAILED: {error}")
                continue
            if workload.startswith("churn"):
                unit, share = "matches/s", result["cross"]["share"]
            else:
                unit = "msg/s"
                share = result["cross_messages"] / result["messages"] if result["messages"] else None
            write(
                f"   {result['per_s']:.0f} {unit}, {result['cpu_us_per']:.1f} µs server CPU each,"
                f" cross-node {'-' if share is None else f'{share:.0%}'}, {result['errors']} errors"
            )
        for node in nodes:
            if node.process.poll() is not None:
                figures.setdefault("exited", []).append(f"{node.log} (status {node.process.returncode})")
    finally:
        for node in nodes:
            node.stop()
        if redis is not None:
            redis.stop()
    return figures


def half_cross_estimate(results: dict[str, Any]) -> dict[str, Any] | None:
    """Server CPU per relayed message if half of the messages crossed nodes, from C's two relay runs: all-cross
    gives a crossing message's cost; the mixed run, less its crossing messages at that cost, a local one's."""
    c = results["configurations"]["C"]
    mixed, cross = c.get("relay", {}), c.get("relay-cross", {})
    if not mixed.get("messages") or not cross.get("messages"):
        return None
    crossing_us = cross["server_cpu_s"] / cross["messages"] * 1e6
    local = mixed["messages"] - mixed["cross_messages"]
    if local <= 0:
        return None
    local_us = (mixed["server_cpu_s"] * 1e6 - mixed["cross_messages"] * crossing_us) / local
    return {"local_us": local_us, "crossing_us": crossing_us, "half_us": (local_us + crossing_us) / 2}


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's two targets, computed from the run."""
    a, b, c = (results["configurations"][k] for k in "ABC")
    lines = []
    ratio = None
    if a.get("relay", {}).get("per_s") and "per_s" in b.get("relay", {}):
        ratio = b["relay"]["per_s"] / a["relay"]["per_s"]
    lines.append(
        {
            "target": f"(1) B's relay throughput >= {TARGET_RELAY_RATIO:.0%} of A's",
            "value": ratio,
            "met": ratio is not None and ratio >= TARGET_RELAY_RATIO,
        }
    )
    assessed = results["procs"] == 2
    why = "not assessed: needs --procs 2"
    base = a.get("relay", {}).get("cpu_us_per")
    mixed = c.get("relay", {})
    ratio = mixed["cpu_us_per"] / base if base and mixed.get("cpu_us_per") else None
    share = mixed["cross_messages"] / mixed["messages"] if mixed.get("messages") else None
    shown = "?" if share is None else f"{share:.0%}"
    near_half = share is not None and 0.35 <= share <= 0.65
    lines.append(
        {
            "target": f"(2) C: server CPU per relayed message <= {TARGET_CPU_RATIO}x A's, as run ({shown} of the"
            " messages crossed nodes)",
            "value": ratio,
            "met": (ratio is not None and ratio <= TARGET_CPU_RATIO) if assessed and near_half else None,
            "why": why if not assessed else f"not assessed: {shown} of the messages crossed, not about half",
        }
    )
    estimate = results.get("half_cross")
    ratio = estimate["half_us"] / base if estimate and base else None
    lines.append(
        {
            "target": f"(2) C: the same with half of the messages crossing nodes (derived from the mixed and"
            f" all-cross runs: {estimate['half_us']:.1f} µs)"
            if estimate
            else "(2) C: the same with half of the messages crossing nodes (derived)",
            "value": ratio,
            "met": (ratio is not None and ratio <= TARGET_CPU_RATIO) if assessed else None,
            "why": why,
        }
    )
    return lines


LABELS = {"A": "A 1 node", "B": "B 1 node + Redis", "C": "C {procs} nodes + Redis"}


def report(results: dict[str, Any]) -> list[str]:
    """The figures as text."""
    out = [
        "",
        f"{results['date_utc']} UTC, {results['cpus']} CPUs, Python {results['python']},"
        f" redis-server {results['redis_version']}, txredisapi's reply parser: {results['redis_parser']};"
        f" cores a busy loop per CPU got before/after: {results['cores_available_before']}"
        f"/{results['cores_available_after']}",
        results["placement"],
        f"churn: {results['churn_conns']} clients; relay: {results['relay_conns']} clients, window"
        f" {results['window']}; {results['warmup']:g} s warm-up, {results['duration']:g} s measured per workload;"
        f" moderation {results['moderation']}",
        "",
        f"{'':30} {'per s':>8} {'cross':>6} {'CPU µs':>7} {'vchat':>6} {'Redis':>6} {'Redis':>7} {'Redis':>6}"
        f" {'req/op':>7} {'cmds/op':>7} {'load':>6} {'errors':>6}",
        f"{'':30} {'':>8} {'':>6} {'per op':>7} {'cores':>6} {'cores':>6} {'µs/op':>7} {'share':>6}"
        f" {'':>7} {'':>7} {'cores':>6}",
    ]
    for workload in WORKLOADS:
        rows = [(k, conf[workload]) for k, conf in results["configurations"].items() if workload in conf]
        if not rows:
            continue
        kind = "matches" if workload.startswith("churn") else "messages"
        mix = (
            "every pair across nodes in C" if workload.endswith("cross") else "half of the pairs across in C"
        )
        out.append(f"{workload}: {kind}/s ({mix})")
        for key, fig in rows:
            label = "  " + LABELS[key].format(procs=results["procs"])
            if "per_s" not in fig:
                out.append(f"{label:30} FAILED: {fig.get('failed')}")
                continue
            if kind == "messages":
                share = fig["cross_messages"] / fig["messages"] if fig["messages"] else None
            else:
                share = fig["cross"]["share"]
            seconds = fig["seconds"]
            out.append(
                f"{label:30} {fig['per_s']:>8.0f} {'-' if share is None else f'{share:.0%}':>6}"
                f" {fig['cpu_us_per'] or 0:>7.1f} {sum(fig['node_cpu_s']) / seconds:>6.2f}"
                f" {fig['redis_cpu_s'] / seconds:>6.2f} {fig['redis_cpu_us_per'] or 0:>7.1f}"
                f" {fig['redis_cpu_share'] or 0:>6.0%} {fig['redis_requests_per'] or 0:>7.2f}"
                f" {fig['redis_commands_per'] or 0:>7.2f} {fig['load_cpu_s'] / seconds:>6.2f} {fig['errors']:>6}"
            )
    out += [
        "  cross: share of the matches (churn) or of the relayed messages (relay) between clients of two nodes;",
        "  req/op: commands vchat sent Redis per match or message; cmds/op: with those its Lua scripts ran;",
        "  load cores: the load generators' CPU",
    ]
    for key in "BC":
        conf = results["configurations"][key]
        for workload in WORKLOADS:
            calls = conf.get(workload, {}).get("redis_calls_per")
            if calls:
                top = ", ".join(f"{name} {n:.2f}" for name, n in list(calls.items())[:8])
                out.append(f"  {key} {workload} per op: {top}")
        if "idle" in conf:
            out.append(
                f"  {key} idle: {conf['idle']['redis_requests_per_s']:.1f} Redis requests/s,"
                f" server CPU {conf['idle']['server_cpu_per_s']:.3f} cores"
            )
    estimate = results.get("half_cross")
    if estimate:
        out.append(
            f"  C relay, derived: a local message {estimate['local_us']:.1f} µs, a crossing one"
            f" {estimate['crossing_us']:.1f} µs; half and half {estimate['half_us']:.1f} µs"
        )
    for key, conf in results["configurations"].items():
        for workload in WORKLOADS:
            fig = conf.get(workload, {})
            if "searching_at_end" in fig:
                out.append(
                    f"  {key} {workload}: {fig['searching_at_end']} clients searching at the end, longest"
                    f" wait {fig['longest_wait_s']} s"
                )
            if fig.get("error_codes"):
                out.append(f"  {key} {workload} errors: {fig['error_codes']}")
        if conf.get("exited"):
            out.append(f"  {key}: a node exited during the run: {conf['exited']}")
    out.append("")
    for line in results["targets"]:
        value = "n/a" if line["value"] is None else f"{line['value']:.2f}"
        verdict = {True: "met", False: "NOT met", None: line.get("why", "not assessed")}[line["met"]]
        out.append(f"target {line['target']}: {value}: {verdict}")
    return out


def orchestrate(args: Args) -> dict[str, Any]:
    """Run A, B and C, one after the other, and gather the figures."""
    raise_open_files_limit()
    where = placement(args.procs, args.pin)
    results: dict[str, Any] = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "procs": args.procs,
        "churn_conns": args.churn_conns,
        "relay_conns": args.relay_conns,
        "window": args.window,
        "warmup": args.warmup,
        "duration": args.duration,
        "moderation": args.moderation,
        "placement": where.note,
        "redis_parser": reply_parser(),
        "configurations": {},
    }
    write = _write
    results["cores_available_before"] = round(available_cores(), 2)
    write(where.note)
    with tempfile.TemporaryDirectory(prefix="vchat-bench-cluster-") as tmp:
        workdir = Path(tmp)
        probe = start_redis(workdir / "redis-version")
        try:
            info = probe.command("INFO", "server")
            assert isinstance(info, bytes)
            results["redis_version"] = info.split(b"redis_version:")[1].split(b"\r")[0].decode()
        finally:
            probe.stop()
        for name, procs, with_redis in (("A", 1, False), ("B", 1, True), ("C", args.procs, True)):
            results["configurations"][name] = run_configuration(
                name, procs, with_redis, args, workdir, where, write
            )
    results["cores_available_after"] = round(available_cores(), 2)
    results["half_cross"] = half_cross_estimate(results)
    results["targets"] = targets(results)
    return results


def reply_parser() -> str:
    """Which reply parser txredisapi uses, in this process and in the nodes started from it."""
    try:
        import hiredis  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return "pure Python (hiredis not installed)"
    return f"hiredis {hiredis.__version__}"


def _write(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def build_parser() -> argparse.ArgumentParser:
    """Command line of the benchmark (and of its workers)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add = parser.add_argument
    add("--procs", type=int, default=2, help="vchat processes in configuration C (default 2)")
    add("--duration", type=float, default=10.0, help="measured seconds per workload (default 10)")
    add("--warmup", type=float, default=2.0, help="unmeasured seconds before each (default 2)")
    add("--churn-conns", type=int, default=200, help="clients meeting and `next`-ing (default 200)")
    add("--relay-conns", type=int, default=200, help="clients relaying `chat` in pairs (default 200)")
    add("--window", type=int, default=8, help="messages each relaying client keeps in flight (default 8)")
    add("--workers", type=int, default=2, help="load-generating processes (default 2)")
    add("--concurrency", type=int, default=64, help="handshakes in flight per worker (default 64)")
    add("--phase-timeout", type=float, default=60.0, help="seconds a setup phase may take (default 60)")
    add("--moderation", choices=["on", "off"], default="on", help="automatic moderation (default on)")
    add(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="a CPU for each node, one for Redis, the rest for the load, given --procs + 2 CPUs (default on)",
    )
    add("--json", metavar="FILE", help="also write the figures as JSON")
    # worker-only options
    add_worker_options(parser)
    add("--mode", choices=["churn", "relay"], help=argparse.SUPPRESS)
    add("--mix", choices=["half", "cross"], default="half", help=argparse.SUPPRESS)
    add("--ports", help=argparse.SUPPRESS)
    add("--first", type=int, default=0, help=argparse.SUPPRESS)
    return parser


def main() -> None:
    """Run the benchmark, or (with --worker) one of its workers."""
    args = parse_command_line(build_parser(), worker_main)
    if args.procs < 1:
        raise SystemExit("--procs must be at least 1")
    for option in ("churn_conns", "relay_conns"):
        if getattr(args, option) < 4 or getattr(args, option) % 4:
            raise SystemExit(f"--{option.replace('_', '-')} must be a multiple of 4")
    results = orchestrate(args)
    for line in report(results):
        _write(line)
    write_json(args.json, results)


if __name__ == "__main__":
    main()
