"""A cluster of real `twistd -n vchat` processes sharing one real redis-server, for the tests of
test_cluster_processes.py: started, waited for, and killed by process id.

Starting and stopping block (for fixtures, never inside a running reactor); `admin` and `stats` are asynchronous.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import treq
from twisted.internet.interfaces import IReactorTime
from twisted.web.http_headers import Headers

from vchat.store.redis_testing import RedisServer, free_port, running_redis

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "cluster-test-token-0123456789abc"
"""Every node's `--admin-token` (32 characters)."""
START_TIMEOUT = 20.0
"""Seconds for a node to answer /healthz and to see every other node (2 cores, several imports at once)."""
START_TRIES = 5
"""Starts of a node whose free port another program took first."""


@dataclass
class Node:
    """One `twistd -n vchat` process of the cluster: its id, ports, directory and process."""

    node_id: str
    directory: Path
    ws_port: int
    admin_port: int
    process: subprocess.Popen[bytes] | None = None
    args: tuple[str, ...] = ()
    starts: int = 0
    _logged: int = 0  # the log's size when the process was last started

    @property
    def url(self) -> str:
        """Its WebSocket URL."""
        return f"ws://127.0.0.1:{self.ws_port}/ws"

    @property
    def admin_url(self) -> str:
        """The root of its admin API."""
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def log(self) -> Path:
        """Where its twistd writes (a file, not a pipe nobody reads, which would block it once full)."""
        return self.directory / "twistd.log"

    def start(self, redis_url: str) -> None:
        """Start the process, a node of the cluster at `redis_url`."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        with self.log.open("ab") as log:
            self._logged = log.tell()
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    *("-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", "vchat"),
                    *("--ws", f"tcp:{self.ws_port}:interface=127.0.0.1"),
                    *("--admin", f"tcp:{self.admin_port}:interface=127.0.0.1", "--admin-token", TOKEN),
                    *("--stun-udp", "0", "--data-dir", str(self.directory / "data")),
                    *("--redis", redis_url, "--node-id", self.node_id, *self.args),
                ],
                cwd=self.directory,
                env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def running(self) -> bool:
        """Whether its process was started and has not exited."""
        return self.process is not None and self.process.poll() is None

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send `sig` to the process (SIGKILL by default: no goodbye to the cluster) and reap it."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL if it lingers)."""
        self.kill(signal.SIGTERM)

    def lost_its_port(self) -> bool:
        """Whether the process exited because a port it was given was taken meanwhile (by another program that
        also asked for a free port)."""
        if self.running():
            return False
        with self.log.open("rb") as log:
            log.seek(self._logged)
            return b"cannot listen" in log.read()

    def output(self) -> str:
        """The tail of what it logged, for a failure's message."""
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def get(self, path: str) -> Any:
        """GET `path` with the token, blocking; its JSON, or None if it cannot be reached."""
        request = urllib.request.Request(self.admin_url + path, headers={"Authorization": f"Bearer {TOKEN}"})
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return json.load(response)
        except OSError:
            return None


@dataclass
class Cluster:
    """The cluster's redis-server and its nodes."""

    redis: RedisServer
    nodes: list[Node] = field(default_factory=list)

    def wait_joined(self, timeout: float = START_TIMEOUT) -> None:
        """Block until every node answers /healthz and lists every node in its /api/stats; RuntimeError, with
        the logs of those that did not, after `timeout` s or once one has exited (unless it lost a port, then it
        starts again on others, a few times)."""
        ids = {node.node_id for node in self.nodes}
        deadline = time.monotonic() + timeout
        waiting = list(self.nodes)
        while waiting and time.monotonic() < deadline:
            for node in waiting:
                if node.lost_its_port() and node.starts < START_TRIES:
                    node.ws_port, node.admin_port = free_port(), free_port()
                    node.start(self.redis.url)
            if any(not node.running() for node in waiting):
                break
            waiting = [node for node in waiting if not _joined(node, ids)]
            if waiting:
                time.sleep(0.1)
        if waiting:
            logs = "\n".join(f"--- {node.node_id}:\n{node.output()}" for node in waiting)
            raise RuntimeError(f"nodes did not join the cluster:\n{logs}")


def _joined(node: Node, ids: set[str]) -> bool:
    stats = node.get("/api/stats")
    return (
        node.get("/healthz") == {"status": "ok"}
        and stats is not None
        and stats["cluster"]["redis_up"]
        and {entry["node_id"] for entry in stats["cluster"]["nodes"]} == ids
    )


@contextmanager
def running_cluster(directory: Path, count: int, *args: str) -> Iterator[Cluster]:
    """A redis-server and `count` nodes (n1, n2, ...; each also given `args`) for the block, every node joined;
    then each process that was started is killed by its id, and redis-server stopped."""
    with running_redis(directory / "redis") as redis, ExitStack() as stack:
        cluster = Cluster(redis)
        for number in range(1, count + 1):
            node = Node(f"n{number}", directory / f"n{number}", free_port(), free_port(), args=args)
            stack.callback(node.stop)
            cluster.nodes.append(node)
            node.start(redis.url)
        cluster.wait_joined()
        yield cluster


async def admin(
    reactor: IReactorTime, node: Node, method: str, path: str, body: object = None
) -> tuple[int, Any]:
    """One request to `node`'s admin API with the token and a JSON `body` if given: (status, JSON answer)."""
    headers = {"Authorization": [f"Bearer {TOKEN}"]}
    if body is not None:
        headers["Content-Type"] = ["application/json"]
    response = await treq.request(
        method,
        node.admin_url + path,
        data=None if body is None else json.dumps(body).encode(),
        headers=Headers(headers),
        reactor=cast(Any, reactor),
        persistent=False,
        timeout=5,
    )
    return response.code, json.loads(await response.content())


async def stats(reactor: IReactorTime, node: Node) -> Any:
    """`node`'s /api/stats."""
    code, body = await admin(reactor, node, "GET", "/api/stats")
    assert code == 200, body
    return body


def _local_ports(pid: int) -> set[int]:
    """The local ports of the TCP sockets process `pid` holds (Linux: from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().name
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[9] in inodes:
            ports.add(int(fields[1].split(":")[1], 16))
    return ports


def redis_clients(redis: RedisServer, node: Node) -> list[dict[str, str]]:
    """The connections `node` holds to `redis`, as CLIENT LIST describes them (`id`, `addr`, `cmd`, `sub`...)."""
    assert node.process is not None
    ports = _local_ports(node.process.pid)
    listing = redis.command("CLIENT", "LIST")
    assert isinstance(listing, bytes)
    clients = [dict(field.split("=", 1) for field in line.split()) for line in listing.decode().splitlines()]
    return [client for client in clients if int(client["addr"].rsplit(":", 1)[1]) in ports]
