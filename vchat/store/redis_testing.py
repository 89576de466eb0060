"""A real `redis-server` for tests: started on a free loopback port in a directory of its own, with a
password, and stopped by its process id. The fixtures give one server to a whole test session and an
empty database to each test.

Its `command` talks to the server synchronously: for fixtures and set-up, never inside a running reactor.
"""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

import pytest

REDIS_SERVER = "redis-server"
START_TIMEOUT = 10.0
"""Seconds for redis-server to answer PING (it may be loading its append-only file)."""

Reply = bytes | int | list["Reply"] | None


class RedisReplyError(Exception):
    """Redis answered a `RedisServer.command` with an error."""


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (redis-server cannot be told to pick one)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _encode(args: tuple[str | bytes | int, ...]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _read(stream: BinaryIO) -> Reply:
    """One reply of the Redis protocol (RESP2)."""
    line = stream.readline()
    if not line:
        raise ConnectionError("redis-server closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest
    if kind == b"-":
        raise RedisReplyError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        return None if size < 0 else stream.read(size + 2)[:-2]
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [_read(stream) for _ in range(count)]
    raise ConnectionError(f"not a Redis reply: {line!r}")


@dataclass
class RedisServer:
    """A redis-server of the tests: its command line, and its process once started."""

    directory: Path
    port: int
    password: str
    options: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Its `redis://` URL, password and database 0 included."""
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    @property
    def log(self) -> Path:
        """Where redis-server logs."""
        return self.directory / "redis.log"

    def command(self, *args: str | bytes | int) -> Reply:
        """Run one command, logged in, and give its reply (blocking: see the module's docstring)."""
        return _command(self.port, self.password, args)

    def start(self) -> bool:
        """Start redis-server and wait until it answers PING; False (and stopped) if it exits or stays
        silent, e.g. because its port was taken."""
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                *("--bind", "127.0.0.1", "--port", str(self.port), "--requirepass", self.password),
                *("--dir", str(self.directory), "--logfile", str(self.log)),
                *("--save", "", "--appendonly", "no", *self.options),  # later options win
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        if _answers(self.process, self.command):
            return True
        self.stop()
        return False

    def stop(self) -> None:
        """Stop the server (SIGTERM: it writes its append-only file, if it keeps one) and wait for it."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def restart(self) -> None:
        """Stop the server and start it again, on the same port, with the same data directory."""
        self.stop()
        if not self.start():
            raise RuntimeError(f"redis-server did not start again: see {self.log}")


def _command(port: int, password: str | None, args: tuple[str | bytes | int, ...]) -> Reply:
    """Run one command on the server at `port` (logged in with `password`, if any); its reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=5.0) as connection:
        stream = cast(BinaryIO, connection.makefile("rb"))
        login = _encode(("AUTH", password)) if password else b""
        connection.sendall(login + _encode(args))
        if login:
            _read(stream)
        return _read(stream)


def _answers(process: subprocess.Popen[bytes], command: Callable[..., Reply]) -> bool:
    """Whether a server just started answers PING within START_TIMEOUT (False if it exits first)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if command("PING") == b"PONG":
                return True
        except (OSError, RedisReplyError):  # not listening yet, or still loading its data
            pass
        time.sleep(0.01)
    return False


@dataclass
class Sentinel:
    """A Redis Sentinel of the tests watching one master as `service` (it fails over after half a second of
    silence), and its process."""

    directory: Path
    port: int
    process: subprocess.Popen[bytes]

    def command(self, *args: str | bytes | int) -> Reply:
        """Run one command (Sentinels here have no password)."""
        return _command(self.port, None, args)

    def master(self, service: str = "vchat") -> tuple[str, int] | None:
        """Where this Sentinel says the master is."""
        reply = self.command("SENTINEL", "get-master-addr-by-name", service)
        if not isinstance(reply, list) or len(reply) != 2:
            return None
        host, port = reply
        assert isinstance(host, bytes) and isinstance(port, bytes)
        return host.decode(), int(port)

    def stop(self) -> None:
        """Stop the Sentinel and wait for it."""
        self.process.terminate()
        self.process.wait(timeout=10)


@contextmanager
def replicated_redis(directory: Path) -> Iterator[tuple[RedisServer, RedisServer, Sentinel]]:
    """A master, its replica (with the same password) and a Sentinel watching them as service "vchat", for
    the block; the Sentinel already knows the replica (it finds replicas only every 10 s), so it can fail
    over as soon as the master dies."""
    master = start_redis(directory / "master")
    replica = RedisServer(
        directory / "replica",
        free_port(),
        master.password,
        ("--replicaof", "127.0.0.1", str(master.port), "--masterauth", master.password),
    )
    (directory / "replica").mkdir(parents=True)
    (directory / "sentinel").mkdir(parents=True)
    sentinel: Sentinel | None = None
    try:
        if not replica.start():
            raise RuntimeError(f"the replica did not start: see {replica.log}")
        config = directory / "sentinel" / "sentinel.conf"
        port = free_port()
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {directory / 'sentinel'}\nlogfile {directory / 'sentinel' / 'log'}\n"
            f"sentinel monitor vchat 127.0.0.1 {master.port} 1\nsentinel auth-pass vchat {master.password}\n"
            "sentinel down-after-milliseconds vchat 500\nsentinel failover-timeout vchat 2000\n"
        )
        process = subprocess.Popen(
            [REDIS_SERVER, str(config), "--sentinel"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
        sentinel = Sentinel(directory / "sentinel", port, process)
        if not _answers(process, sentinel.command):
            raise RuntimeError(f"the Sentinel did not start: see {directory / 'sentinel' / 'log'}")
        deadline = time.monotonic() + 30
        while not sentinel.command("SENTINEL", "replicas", "vchat"):
            if time.monotonic() > deadline:
                raise RuntimeError("the Sentinel did not find the replica within 30 s")
            time.sleep(0.1)
        # In sync with the master: a write can then be waited for (WAIT), however loaded the machine is.
        while b"master_link_status:up" not in _bytes(replica.command("INFO", "replication")):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the replica did not sync with the master within 30 s: see {replica.log}")
            time.sleep(0.1)
        yield master, replica, sentinel
    finally:
        if sentinel is not None:
            sentinel.stop()
        replica.stop()
        master.stop()


def _bytes(reply: Reply) -> bytes:
    """A reply that should be a bulk string; anything else as nothing."""
    return reply if isinstance(reply, bytes) else b""


def start_redis(directory: Path, *options: str) -> RedisServer:
    """Start redis-server in `directory` on a free port, keeping nothing on disk unless `options`
    (redis-server's own, such as `--appendonly yes`) say so, and wait until it answers."""
    if shutil.which(REDIS_SERVER) is None:
        raise RuntimeError(
            f"{REDIS_SERVER} is not installed: scripts/test installs it (Debian's redis-server)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    password = secrets.token_hex(16)
    for _ in range(5):  # another process may take the free port before redis-server binds it
        server = RedisServer(directory, free_port(), password, options)
        if server.start():
            return server
    tail = server.log.read_text(errors="replace")[-2000:] if server.log.exists() else ""
    raise RuntimeError(f"redis-server did not start in {directory}:\n{tail}")


@contextmanager
def running_redis(directory: Path, *options: str) -> Iterator[RedisServer]:
    """A redis-server (see `start_redis`) for the block, then stopped."""
    server = start_redis(directory, *options)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the test session."""
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of the session's redis-server, emptied for this test."""
    redis_server.command("FLUSHALL")
    return redis_server.url


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, to stop and start."""
    with running_redis(tmp_path / "redis") as server:
        yield server
