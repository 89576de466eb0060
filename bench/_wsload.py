"""The load generators of bench/capacity.py and bench/cluster.py: raw WebSocket clients in worker processes.

A worker is this benchmark script started again with --worker. It opens its connections (at most so many
handshakes in flight), says `READY n` on stdout when all of them are ready (or `FAILED n` when some never were),
then obeys command lines on stdin (`QUIT`, and the benchmark's own, such as `RELAY warmup seconds`) and reports
on stdout. The clients speak WebSocket over raw sockets with pre-built frames, so that they cost far less CPU
than the server they measure: `Client` does the handshake and parses frames, `Load` keeps the counters and the
phase, launches the connections and reads the commands. Each benchmark subclasses both inside its worker.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable
from typing import Any, NoReturn

from twisted.internet.protocol import ClientFactory, Protocol
from twisted.protocols.basic import LineReceiver

from vchat.rlimit import raise_open_files_limit

HOST = "127.0.0.1"
JSON_SUBPROTOCOL = "vchat.v1.json"

# What each relaying connection says, in turn: chat lines of everyday lengths (4 to 62 characters), none the same
# as another (more of them than the 20 recent messages the `repeated-message` rule compares) and none holding a
# link, so that every rule looks at every message and none of them acts: the steady cost of moderation.
RELAY_WORDS = [
    "hi",
    "hello",
    "how",
    "are",
    "you",
    "where",
    "from",
    "nice",
    "to",
    "meet",
    "you",
    "what",
    "music",
    "do",
    "you",
    "like",
    "haha",
    "ok",
    "see",
    "ya",
]
RELAY_TEXTS = [" ".join(RELAY_WORDS[i % 7 : i % 7 + 1 + i % 13]) + f" {i}" for i in range(32)]


def ws_frame(payload: bytes, opcode: int = 1) -> bytes:
    """A client frame: FIN, `opcode`, masked with the all-zero key (valid, and free to apply)."""
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        header = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    return header + b"\0\0\0\0" + payload


@functools.cache
def handshake(port: int) -> bytes:
    """The opening handshake of a client of the server on `port` (the key is the RFC's sample)."""
    return (
        f"GET /ws HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Protocol: {JSON_SUBPROTOCOL}\r\n\r\n"
    ).encode()


def chat_frames(match_id: str) -> list[bytes]:
    """The `chat` frames a relaying client cycles through, one for each of RELAY_TEXTS."""
    return [
        ws_frame(
            json.dumps({"type": "chat", "match_id": match_id, "text": text}, separators=(",", ":")).encode()
        )
        for text in RELAY_TEXTS
    ]


def add_worker_options(parser: argparse.ArgumentParser) -> None:
    """The hidden options of every worker: --worker itself, how many connections, and when to quit anyway."""
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, default=600.0, help=argparse.SUPPRESS)


def parse_command_line(
    parser: argparse.ArgumentParser, worker_main: Callable[[argparse.Namespace], NoReturn]
) -> argparse.Namespace:
    """The benchmark's options; with --worker, this process is that worker instead (and never returns)."""
    args = parser.parse_args()
    if args.worker:
        worker_main(args)
    return args


def worker_setup() -> None:
    """What every worker does first: as many open files as allowed, and only warnings (on stderr) logged."""
    raise_open_files_limit()
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr), [LogLevelFilterPredicate(LogLevel.warn)])],
        redirectStandardIO=False,
    )


class Load(ABC):
    """A worker's shared counters and phase, its ready clients, and its dealings with the orchestrator.

    A subclass says how to open connection `n` (`connect`, calling `dial`) and adds its own counters."""

    def __init__(self, count: int, concurrency: int) -> None:
        self.count = count
        self.concurrency = concurrency
        self.ready = 0
        self.failed = 0
        self.pending = 0
        self.started = 0
        self.phase = "setup"  # setup, then the benchmark's own phases, then drain
        self.received = 0
        self.errors = 0
        self.error_codes: Counter[str] = Counter()
        self.conns: list[Any] = []
        self.stdio: Any = None

    def emit(self, line: str) -> None:
        """Say `line` to the orchestrator."""
        # StandardIO made stdout non-blocking: write through its transport, which buffers
        self.stdio.write(line.encode() + b"\n")

    def error(self, code: str) -> None:
        """Count an error, and what it was."""
        self.errors += 1
        self.error_codes[code] += 1

    @abstractmethod
    def connect(self, n: int) -> None:
        """Open the `n`th connection (from 0), with `dial`."""

    def dial(self, port: int, build: Callable[[], Client]) -> None:
        """Connect to the server on `port`; `build()` makes the client."""
        from twisted.internet import reactor

        reactor.connectTCP(HOST, port, _Factory(self, build), timeout=30)

    def launch(self) -> None:
        """Start connections while fewer than `concurrency` are in flight, until `count` were started."""
        while self.started < self.count and self.pending < self.concurrency:
            n = self.started
            self.started += 1
            self.pending += 1
            self.connect(n)
        if self.failed and self.ready + self.failed == self.count:
            self.emit(f"FAILED {self.failed}")

    def connection_failed(self) -> None:
        """A connection never got ready: count it and start another."""
        self.failed += 1
        self.pending -= 1
        self.launch()

    def client_ready(self, client: Client) -> None:
        """A connection is ready for the phases: keep it, say READY with the last one, start another."""
        self.conns.append(client)
        self.ready += 1
        self.pending -= 1
        if self.ready == self.count:
            self.emit(f"READY {self.ready}")
        self.launch()

    def start_relay(self, window: int) -> None:
        """Enter the closed loop: every client sends its first `window` chat frames."""
        self.phase = "relay"
        for conn in self.conns:
            conn.transport.write(b"".join(conn.relay_frames[:window]))
            conn.relay_next = window

    def stop(self) -> None:
        """Stop the worker (its reactor)."""
        from twisted.internet import reactor

        self.phase = "drain"
        if reactor.running:
            reactor.stop()

    def run(self, deadline: float, commands: dict[str, Callable[..., None]]) -> NoReturn:
        """Launch the connections and obey the orchestrator: `QUIT`, or a line `NAME number...` that calls
        `commands[NAME](number, ...)`; quit after `deadline` seconds in any case. Never returns."""
        from twisted.internet import reactor
        from twisted.internet.stdio import StandardIO

        reader = _Commands(self, commands)
        StandardIO(reader)
        self.stdio = reader.transport
        reactor.callLater(deadline, self.stop)  # never outlive the orchestrator by much
        self.launch()
        reactor.run()
        os._exit(0)  # skip closing thousands of sockets one by one on the way out


class Client(Protocol, ABC):
    """One raw WebSocket client connection: handshake, `hello_frame` once open, frames parsed and passed to
    `message`, pings and closes answered. A subclass handles the messages and calls `become_ready`."""

    def __init__(self, load: Load, port: int, hello_frame: bytes) -> None:
        self.load = load
        self.port = port
        self.hello_frame = hello_frame
        self.buf = bytearray()
        self.open = False
        self.is_ready = False
        self.match_id = ""
        self.relay_frames: list[bytes] = []
        self.relay_next = 0

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)  # as browsers do; Nagle + delayed ACK would add 40 ms
        self.transport.write(handshake(self.port))

    def connectionLost(self, reason: Any = None) -> None:
        if not self.is_ready:
            self.load.connection_failed()
        elif self.load.phase != "drain":
            self.load.error("connection lost")

    def dataReceived(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if b" 101 " not in buf[: buf.find(b"\r\n")]:
                self.transport.abortConnection()
                return
            del buf[: end + 4]
            self.open = True
            self.transport.write(self.hello_frame)
        pos, size = 0, len(buf)
        while size - pos >= 2:
            n, head = buf[pos + 1] & 0x7F, 2
            if n == 126:
                if size - pos < 4:
                    break
                n, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif n == 127:
                if size - pos < 10:
                    break
                n, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            if size - pos < head + n:
                break
            opcode = buf[pos] & 0x0F
            payload = bytes(buf[pos + head : pos + head + n])
            pos += head + n
            if opcode in (1, 2):
                self.message(payload)
            elif opcode == 9:
                self.transport.write(ws_frame(payload, 0xA))
            elif opcode == 8:
                self.transport.write(ws_frame(payload[:2], 0x8))
                self.transport.loseConnection()
        del buf[:pos]

    @abstractmethod
    def message(self, payload: bytes) -> None:
        """A text or binary message's payload."""

    def relay_on(self) -> None:
        """Keep the closed loop going: send the next of this client's chat frames."""
        frames = self.relay_frames
        self.transport.write(frames[self.relay_next % len(frames)])
        self.relay_next += 1

    def become_ready(self) -> None:
        """This client is ready for the phases (its relay frames, if any, built)."""
        self.is_ready = True
        self.load.client_ready(self)


class _Factory(ClientFactory):
    """Makes one client; a failure to connect counts as a failed connection."""

    noisy = False

    def __init__(self, load: Load, build: Callable[[], Client]) -> None:
        self.load = load
        self.build = build

    def buildProtocol(self, addr: Any) -> Client:
        return self.build()

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        self.load.connection_failed()


class _Commands(LineReceiver):
    """The orchestrator's command lines on stdin; stdin closed means quit."""

    delimiter = b"\n"

    def __init__(self, load: Load, commands: dict[str, Callable[..., None]]) -> None:
        self.load = load
        self.commands = commands

    def lineReceived(self, line: bytes) -> None:
        words = line.decode().split()
        if not words:
            return
        if words[0] == "QUIT":
            self.load.stop()
        elif words[0] in self.commands:
            self.commands[words[0]](*(float(word) for word in words[1:]))

    def connectionLost(self, reason: Any = None) -> None:
        self.load.stop()
