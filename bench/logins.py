"""What a login costs a WebSocket session: `hello` to `welcome` for logged-in users (the login cookie checked
and the account read from the store at each connection) against anonymous ones, on one `twistd -n vchat`.

    .venv/bin/python bench/logins.py [--accounts 2000] [--concurrency 50] [--seconds 10] [--store sqlite|redis]

It makes the accounts in the store first (through the store's own `log_in`, and their login cookies with the
store's key), starts vchat on loopback with a login provider configured (never called: a cookie is checked
without it), then for each kind of user runs a closed loop of `--concurrency` clients in a worker process, each
connecting, saying `hello`, waiting for `welcome` and closing, over and over: sessions a second, and the server's
CPU per session. With `--store redis` the store is a redis-server started here (a cluster node's store). The
server is pinned to the first CPU and the worker to the others (`--no-pin` lets them float). Writes its figures
as JSON with `--json`.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, NoReturn

from _wsload import HOST, JSON_SUBPROTOCOL, ws_frame
from capacity import Server, cpu_seconds, cpu_split, pinned, start_server, write_json

from vchat.store.redis_testing import running_redis

HELLO = json.dumps({"type": "hello", "age_confirmed": True, "gender": "u"}).encode()


# --- making the accounts (a subprocess with its own reactor) -----------------------------------------------


def make_accounts(store_url: str, data_dir: str, count: int, cookies: Path) -> None:
    """Log `count` users in through the store (as a provider's login would) and write their login cookies,
    one a line, to `cookies`."""
    from twisted.internet.defer import ensureDeferred
    from twisted.internet.task import react

    from vchat.accounts.cookie import issue_cookie
    from vchat.accounts.flow import COOKIE_KEY
    from vchat.store.account_records import Login, ProviderIdentity

    async def run(reactor: Any) -> None:
        if store_url:
            from vchat.store.redis import RedisStore

            store: Any = await RedisStore.open(reactor, store_url)
        else:
            from vchat.store.sqlite import SQLiteStore

            Path(data_dir).mkdir(exist_ok=True)
            store = await SQLiteStore.open(reactor, data_dir)
        try:
            key = await store.secret(COOKIE_KEY)
            now = time.time()
            values = []
            for n in range(count):
                login = Login(ProviderIdentity("facebook", str(10_000 + n)), None, "f", "DE", now)
                account = await store.log_in(login)
                values.append(issue_cookie(key, account.account_id, now, 86400.0))
            cookies.write_text("\n".join(values) + "\n")
        finally:
            await store.close()

    react(lambda reactor: ensureDeferred(run(reactor)))


# --- the worker: a closed loop of connections ---------------------------------------------------------------


def worker_main(port: int, concurrency: int, seconds: float, warmup: float, cookies: list[str]) -> NoReturn:
    """Run the loop for `warmup` then `seconds` seconds; print `DONE sessions failures` for the measured part."""
    from twisted.internet import reactor
    from twisted.internet.protocol import ClientFactory, Protocol

    counts = {"done": 0, "failed": 0}
    measuring = {"on": False}
    upgrade = (
        f"GET /ws HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Protocol: {JSON_SUBPROTOCOL}\r\n"
    )
    hello, close = ws_frame(HELLO), ws_frame(b"\x03\xe8", opcode=8)

    class Session(Protocol):
        def connectionMade(self) -> None:
            cookie = f"Cookie: vchat_login={random.choice(cookies)}\r\n" if cookies else ""
            self.buffer = b""
            self.upgraded = self.welcomed = False
            self.transport.write((upgrade + cookie + "\r\n").encode())  # hello once it is accepted (RFC 6455)

        def dataReceived(self, data: bytes) -> None:
            self.buffer += data
            if not self.upgraded:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                if not self.buffer.startswith(b"HTTP/1.1 101"):
                    self.fail()
                    return
                self.upgraded, self.buffer = True, self.buffer[end + 4 :]
                self.transport.write(hello)
            if not self.welcomed and b'"welcome"' in self.buffer:
                self.welcomed = True
                expected = b'"account": {' if cookies else b'"account": null'
                if expected not in self.buffer.replace(b'"account":{', b'"account": {').replace(
                    b'"account":null', b'"account": null'
                ):
                    self.fail()
                    return
                if measuring["on"]:
                    counts["done"] += 1
                self.transport.write(close)
                self.transport.loseConnection()

        def fail(self) -> None:
            if measuring["on"]:
                counts["failed"] += 1
            self.welcomed = True
            self.transport.abortConnection()

        def connectionLost(self, reason: Any) -> None:
            if not self.welcomed and measuring["on"]:
                counts["failed"] += 1
            start()

    factory = ClientFactory.forProtocol(Session)
    running = {"on": True}

    def start() -> None:
        if running["on"]:
            reactor.connectTCP(HOST, port, factory, timeout=10)

    def begin() -> None:
        measuring["on"] = True
        print("MEASURING", flush=True)

    def end() -> None:
        measuring["on"] = running["on"] = False
        print(f"DONE {counts['done']} {counts['failed']}", flush=True)
        reactor.callLater(0.5, reactor.stop)

    for _ in range(concurrency):
        start()
    reactor.callLater(warmup, begin)
    reactor.callLater(warmup + seconds, end)
    reactor.run()
    sys.exit(0)


# --- the orchestrator ------------------------------------------------------------------------------------------


def run_kind(
    server: Server, cookies: Path | None, args: argparse.Namespace, cpus: set[int] | None
) -> dict[str, Any]:
    """One closed loop against the server: sessions a second and server CPU per session."""
    command = [
        sys.executable, __file__, "--worker", "--port", str(server.port), "--concurrency", str(args.concurrency),
        "--seconds", str(args.seconds), "--warmup", str(args.warmup),
        *(["--cookies", str(cookies)] if cookies else []),
    ]  # fmt: skip
    worker = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, preexec_fn=pinned(cpus))
    assert worker.stdout is not None
    line = worker.stdout.readline()
    if line.strip() != "MEASURING":
        worker.kill()
        sys.exit(f"the worker did not start measuring: {line!r}")
    pid = server.process.pid
    cpu_before, wall_before = cpu_seconds(pid), time.monotonic()
    line = worker.stdout.readline()
    cpu, wall = cpu_seconds(pid) - cpu_before, time.monotonic() - wall_before
    worker.wait(timeout=30)
    _, done, failed = line.split()
    sessions = int(done)
    return {
        "sessions": sessions,
        "failed": int(failed),
        "sessions_per_s": round(sessions / wall, 1),
        "server_cpu": round(cpu / wall, 2),
        "cpu_us_per_session": round(cpu / sessions * 1e6, 1) if sessions else None,
    }


def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    server_cpus, worker_cpus = cpu_split(args.pin)
    with ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="vchat-bench-logins-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        extra = ["--stun-udp", "0", "--admin", "none", "--facebook-app-id", "1", "--facebook-app-secret", "x"]
        store_url = ""
        if args.store == "redis":
            store_url = stack.enter_context(running_redis(workdir / "redis")).url
            extra += ["--redis", store_url]
        cookies = workdir / "cookies"
        subprocess.run(
            [sys.executable, __file__, "--make-accounts", str(args.accounts), "--cookies", str(cookies),
             "--data-dir", str(workdir / "vchat-data"), "--store-url", store_url],
            check=True,
        )  # fmt: skip
        server = start_server("vchat", workdir, extra, server_cpus)
        stack.callback(server.stop)
        results: dict[str, Any] = {
            "date": time.strftime("%Y-%m-%d"),
            "store": args.store,
            "accounts": args.accounts,
            "concurrency": args.concurrency,
            "seconds": args.seconds,
            "pinned": args.pin,
        }
        for round_ in range(args.rounds):
            for kind, file in (("anonymous", None), ("logged_in", cookies)):
                results.setdefault(kind, []).append(run_kind(server, file, args, worker_cpus))
                print(f"round {round_ + 1} {kind}: {results[kind][-1]}", flush=True)
        return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add = parser.add_argument
    add(
        "--accounts",
        type=int,
        default=2000,
        help="accounts made, whose cookies the logged-in clients pick from",
    )
    add("--concurrency", type=int, default=50, help="clients connecting at once")
    add("--seconds", type=float, default=10.0, help="seconds measured for each kind of user")
    add("--warmup", type=float, default=2.0, help="seconds before each measurement")
    add("--rounds", type=int, default=2, help="runs of each kind, alternated")
    add("--store", choices=["sqlite", "redis"], default="sqlite")
    add("--pin", action=argparse.BooleanOptionalAction, default=True, help="pin server and worker to CPUs")
    add("--json", help="write the figures here")
    add("--worker", action="store_true", help=argparse.SUPPRESS)
    add("--port", type=int, help=argparse.SUPPRESS)
    add("--cookies", help=argparse.SUPPRESS)
    add("--make-accounts", type=int, help=argparse.SUPPRESS)
    add("--data-dir", help=argparse.SUPPRESS)
    add("--store-url", default="", help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.make_accounts is not None:
        make_accounts(args.store_url, args.data_dir, args.make_accounts, Path(args.cookies))
        return
    if args.worker:
        cookies = Path(args.cookies).read_text().split() if args.cookies else []
        worker_main(args.port, args.concurrency, args.seconds, args.warmup, cookies)
    results = orchestrate(args)
    write_json(args.json, results)
    for kind in ("anonymous", "logged_in"):
        runs = results[kind]
        print(
            f"{kind}: sessions/s {[run['sessions_per_s'] for run in runs]}, "
            f"server CPU µs/session {[run['cpu_us_per_session'] for run in runs]}, "
            f"failed {sum(run['failed'] for run in runs)}"
        )


if __name__ == "__main__":
    main()
