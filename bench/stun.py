"""STUN benchmark: Binding requests per second answered over UDP by vchat's responder and by coturn.

Run from the repository root with the project's Python:

    .venv/bin/python bench/stun.py [--seconds 5] [--runs 3] [--sockets 16] [--window 32] [--json FILE]

On 127.0.0.1 only, each server in turn (vchat's responder started with `python -c` from `vchat.stun.tap`,
then coturn's `turnserver --stun-only` if it is installed), --runs times alternately, is loaded for
--seconds by a load generator that keeps --window bare 20-byte Binding requests (what Chrome sends) in
flight on each of --sockets UDP sockets, and counts the responses by transaction id, checking each is a
Binding success whose XOR-MAPPED-ADDRESS port is the socket's own. A request unanswered after
--timeout-ms counts as lost. Reported per run and as medians: requests answered per second, loss, and
the server's CPU time per answered request (from /proc, user + system), which depends much less than
the rate on whatever else the machine is running.

The load generator is a small C program (embedded below, built with `cc -O2` into a temporary
directory) using sendmmsg/recvmmsg, so that it costs far less CPU than the servers it measures; without a
C compiler, --client python runs it as --processes Python processes instead, much heavier. On a 2-core
machine the server is pinned to CPU 0 and the load generator to CPU 1 (--no-pin to leave both to the
scheduler): "one core" each, for both servers. coturn runs with one relay thread (-m 1), like vchat's one
reactor thread. vchat runs with its per-source limiter raised out of the way (every request comes from
127.0.0.1) but still consulted on every request, so its cost is in the figures. Every process is
stopped at the end; nothing is sent anywhere but 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"

VCHAT_SERVER = """
import sys
from twisted.internet import epollreactor

epollreactor.install()
from twisted.internet import reactor
from vchat.stun.tap import Options, makeService

options = Options()
options.parseOptions(sys.argv[1:])
service = makeService(options, reactor)
service.startService()
reactor.run()
"""

CLIENT_C = r"""
/* Load generator for bench/stun.py: blasts STUN Binding requests over UDP with a window of requests in
 * flight per socket, and counts the responses by transaction id. Built by bench/stun.py with `cc -O2`.
 *
 * usage: stun_client HOST PORT SOCKETS WINDOW SECONDS TIMEOUT_MS
 * prints one JSON line: sent, answered, lost, late, bad, seconds.
 *
 * Transaction id: 4 bytes socket index, 8 bytes sequence number. A request unanswered after TIMEOUT_MS
 * counts as lost and frees its window slot; a response that comes after that counts as late.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define RING 8192
#define BATCH 64

struct slot { uint64_t seq; double sent; int pending; };
struct sock { int fd; uint16_t port; uint64_t next; int outstanding; struct slot ring[RING]; };

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: %s HOST PORT SOCKETS WINDOW SECONDS TIMEOUT_MS\n", argv[0]);
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]), nsock = atoi(argv[3]), window = atoi(argv[4]);
    double seconds = atof(argv[5]), timeout = atof(argv[6]) / 1000.0;
    if (window > RING / 2) window = RING / 2;
    struct sockaddr_in server = {0};
    server.sin_family = AF_INET;
    server.sin_port = htons(port);
    if (inet_pton(AF_INET, host, &server.sin_addr) != 1) { fprintf(stderr, "IPv4 only\n"); return 2; }
    struct sock *socks = calloc(nsock, sizeof *socks);
    struct pollfd *polls = calloc(nsock, sizeof *polls);
    for (int i = 0; i < nsock; i++) {
        int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
        int size = 1 << 20;
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
        if (fd < 0 || connect(fd, (struct sockaddr *)&server, sizeof server) < 0) { perror("socket"); return 1; }
        struct sockaddr_in local; socklen_t len = sizeof local;
        getsockname(fd, (struct sockaddr *)&local, &len);
        socks[i].fd = fd;
        socks[i].port = ntohs(local.sin_port);
        polls[i].fd = fd;
        polls[i].events = POLLIN;
    }
    uint64_t sent = 0, answered = 0, lost = 0, late = 0, bad = 0;
    static unsigned char out[BATCH][20], in[BATCH][256];
    struct mmsghdr outmsg[BATCH], inmsg[BATCH];
    struct iovec outiov[BATCH], iniov[BATCH];
    for (int k = 0; k < BATCH; k++) {
        outiov[k].iov_base = out[k]; outiov[k].iov_len = 20;
        memset(&outmsg[k], 0, sizeof outmsg[k]);
        outmsg[k].msg_hdr.msg_iov = &outiov[k]; outmsg[k].msg_hdr.msg_iovlen = 1;
        iniov[k].iov_base = in[k]; iniov[k].iov_len = sizeof in[k];
        memset(&inmsg[k], 0, sizeof inmsg[k]);
        inmsg[k].msg_hdr.msg_iov = &iniov[k]; inmsg[k].msg_hdr.msg_iovlen = 1;
    }
    double start = now(), stop = start + seconds, drain = stop + 2 * timeout, last_scan = start;
    for (;;) {
        double t = now();
        if (t >= drain) break;
        if (t < stop) {
            for (int i = 0; i < nsock; i++) {
                struct sock *s = &socks[i];
                int n = 0;
                while (s->outstanding + n < window && n < BATCH) {
                    uint64_t seq = s->next + n;
                    struct slot *slot = &s->ring[seq % RING];
                    if (slot->pending) { lost++; slot->pending = 0; s->outstanding--; }
                    unsigned char *m = out[n];
                    m[0] = 0; m[1] = 1; m[2] = 0; m[3] = 0;
                    m[4] = 0x21; m[5] = 0x12; m[6] = 0xa4; m[7] = 0x42;
                    uint32_t idx = i;
                    memcpy(m + 8, &idx, 4);
                    memcpy(m + 12, &seq, 8);
                    n++;
                }
                if (n == 0) continue;
                int done = sendmmsg(s->fd, outmsg, n, 0);
                if (done < 0) done = 0;
                for (int k = 0; k < done; k++) {
                    uint64_t seq = s->next + k;
                    struct slot *slot = &s->ring[seq % RING];
                    slot->seq = seq; slot->sent = t; slot->pending = 1;
                }
                s->next += done;
                s->outstanding += done;
                sent += done;
            }
        }
        int ready = poll(polls, nsock, 1);
        if (ready > 0) {
            for (int i = 0; i < nsock; i++) {
                if (!(polls[i].revents & POLLIN)) continue;
                struct sock *s = &socks[i];
                for (;;) {
                    int got = recvmmsg(s->fd, inmsg, BATCH, MSG_DONTWAIT, NULL);
                    if (got <= 0) break;
                    for (int k = 0; k < got; k++) {
                        unsigned char *m = in[k];
                        unsigned len = inmsg[k].msg_len;
                        uint32_t idx; uint64_t seq;
                        if (len < 32 || m[0] != 1 || m[1] != 1) { bad++; continue; }
                        memcpy(&idx, m + 8, 4);
                        memcpy(&seq, m + 12, 8);
                        /* XOR-MAPPED-ADDRESS first: its port must be this socket's. */
                        unsigned xport = (((unsigned)m[26] << 8) | m[27]) ^ 0x2112;
                        if (idx != (uint32_t)i || m[20] != 0 || m[21] != 0x20 || xport != s->port) { bad++; continue; }
                        struct slot *slot = &s->ring[seq % RING];
                        if (slot->pending && slot->seq == seq) {
                            slot->pending = 0; s->outstanding--; answered++;
                        } else {
                            late++;
                        }
                    }
                    if (got < BATCH) break;
                }
            }
        }
        if (t - last_scan > 0.01) {
            last_scan = t;
            for (int i = 0; i < nsock; i++) {
                struct sock *s = &socks[i];
                uint64_t first = s->next > (uint64_t)window * 4 ? s->next - window * 4 : 0;
                for (uint64_t seq = first; seq < s->next; seq++) {
                    struct slot *slot = &s->ring[seq % RING];
                    if (slot->pending && slot->seq == seq && t - slot->sent > timeout) {
                        slot->pending = 0; s->outstanding--; lost++;
                    }
                }
            }
        }
    }
    for (int i = 0; i < nsock; i++)
        for (int k = 0; k < RING; k++)
            if (socks[i].ring[k].pending) lost++;
    printf("{\"sent\": %llu, \"answered\": %llu, \"lost\": %llu, \"late\": %llu, \"bad\": %llu, \"seconds\": %.3f}\n",
           (unsigned long long)sent, (unsigned long long)answered, (unsigned long long)lost,
           (unsigned long long)late, (unsigned long long)bad, seconds);
    return 0;
}
"""


@dataclass
class Result:
    """What one server did under load."""

    server: str
    sent: int
    answered: int
    lost: int
    late: int
    bad: int
    seconds: float
    server_cpu_seconds: float = 0.0
    load_cpu_seconds: float = 0.0

    @property
    def server_cpu(self) -> float:
        """The server's CPU use while loaded, in percent of one core."""
        return 100.0 * self.server_cpu_seconds / self.seconds

    @property
    def load_cpu(self) -> float:
        """The load generator's CPU use while loading, in percent of one core."""
        return 100.0 * self.load_cpu_seconds / self.seconds

    @property
    def rate(self) -> float:
        """Requests answered per second."""
        return self.answered / self.seconds

    @property
    def cpu_per_request(self) -> float:
        """Server CPU microseconds spent per answered request."""
        return self.server_cpu_seconds / self.answered * 1e6 if self.answered else 0.0

    @property
    def loss(self) -> float:
        """Percentage of requests sent that were never answered."""
        return 100.0 * self.lost / self.sent if self.sent else 0.0


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def wait_answering(port: int, deadline: float) -> None:
    """Return once a Binding request to `port` gets an answer; raise after `deadline`."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.settimeout(0.2)
        while time.monotonic() < deadline:
            probe.sendto(bytes.fromhex("000100002112a442") + os.urandom(12), (HOST, port))
            try:
                probe.recvfrom(2048)
                return
            except OSError:
                continue
    raise RuntimeError(f"nothing answers STUN on {HOST}:{port}")


def pin(cpu: int | None) -> Callable[[], None] | None:
    """A preexec_fn that pins the child process to `cpu` (None: no pinning)."""
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def build_client(directory: Path) -> Path | None:
    """The C load generator, compiled into `directory`; None without a C compiler."""
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        return None
    source = directory / "stun_client.c"
    source.write_text(CLIENT_C)
    binary = directory / "stun_client"
    subprocess.run([compiler, "-O2", "-o", str(binary), str(source)], check=True)
    return binary


def python_worker(args: argparse.Namespace) -> None:
    """One Python load-generator process (--client python): the C program's loop, slower."""
    import selectors

    cookie = bytes.fromhex("000100002112a442")
    sockets = []
    for _ in range(args.sockets):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.connect((HOST, args.port))
        sock.setblocking(False)
        sockets.append(sock)
    selector = selectors.DefaultSelector()
    pending: list[dict[int, float]] = [{} for _ in sockets]
    ports = [sock.getsockname()[1] for sock in sockets]
    for index, sock in enumerate(sockets):
        selector.register(sock, selectors.EVENT_READ, index)
    sent = answered = lost = late = bad = 0
    sequence = 0
    start = time.monotonic()
    stop = start + args.seconds
    drain = stop + 2 * args.timeout_ms / 1000
    last_scan = start
    prefix = args.worker_id.to_bytes(2, "big")
    while True:
        now = time.monotonic()
        if now >= drain:
            break
        if now < stop:
            for index, sock in enumerate(sockets):
                waiting = pending[index]
                while len(waiting) < args.window:
                    sequence += 1
                    try:
                        sock.send(cookie + prefix + index.to_bytes(2, "big") + sequence.to_bytes(8, "big"))
                    except BlockingIOError:
                        break
                    waiting[sequence] = now
                    sent += 1
        for key, _ in selector.select(0.001):
            index = key.data
            sock = sockets[index]
            while True:
                try:
                    data = sock.recv(2048)
                except BlockingIOError:
                    break
                xport = int.from_bytes(data[26:28], "big") ^ 0x2112 if len(data) >= 32 else -1
                if data[:2] != b"\x01\x01" or data[20:22] != b"\x00\x20" or xport != ports[index]:
                    bad += 1
                    continue
                if pending[index].pop(int.from_bytes(data[12:20], "big"), None) is None:
                    late += 1
                else:
                    answered += 1
        if now - last_scan > 0.01:
            last_scan = now
            for waiting in pending:
                for seq in [seq for seq, when in waiting.items() if now - when > args.timeout_ms / 1000]:
                    del waiting[seq]
                    lost += 1
    lost += sum(len(waiting) for waiting in pending)
    print(json.dumps({"sent": sent, "answered": answered, "lost": lost, "late": late, "bad": bad}))


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds used so far by process `pid` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_load(args: argparse.Namespace, port: int, client: Path | None, server_pid: int) -> dict[str, Any]:
    """Load the server on `port` for --seconds; the load generator's summed counts and CPU use."""
    server_before = cpu_seconds(server_pid)
    load_before = os.times()
    if client is not None:
        commands = [
            [
                str(client),
                HOST,
                str(port),
                str(args.sockets),
                str(args.window),
                str(args.seconds),
                str(args.timeout_ms),
            ]
        ]
    else:
        commands = [
            [
                sys.executable,
                __file__,
                "--worker",
                "--worker-id",
                str(n),
                "--port",
                str(port),
                "--sockets",
                str(args.sockets),
                "--window",
                str(args.window),
                "--seconds",
                str(args.seconds),
                "--timeout-ms",
                str(args.timeout_ms),
            ]
            for n in range(args.processes)
        ]
    cpu = None if args.no_pin else 1
    workers = [
        subprocess.Popen(command, stdout=subprocess.PIPE, text=True, preexec_fn=pin(cpu))
        for command in commands
    ]
    totals = {"sent": 0, "answered": 0, "lost": 0, "late": 0, "bad": 0}
    for worker in workers:
        out, _ = worker.communicate(timeout=args.seconds + 30)
        counts = json.loads(out.strip().splitlines()[-1])
        for key in totals:
            totals[key] += int(counts[key])
    load_after = os.times()
    used = (load_after.children_user - load_before.children_user) + (
        load_after.children_system - load_before.children_system
    )
    # CPU is counted until the load generator exits; the last 2 x --timeout-ms only drain replies.
    return {**totals, "server_cpu_seconds": cpu_seconds(server_pid) - server_before, "load_cpu_seconds": used}


def stop(process: subprocess.Popen[Any]) -> None:
    """Terminate `process` and wait for it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def bench_vchat(args: argparse.Namespace, client: Path | None) -> Result:
    """vchat's STUN responder under load."""
    port = free_udp_port()
    command = [
        sys.executable,
        "-c",
        VCHAT_SERVER,
        "--stun-udp",
        str(port),
        "--stun-interface",
        HOST,
        "--stun-rate",
        "1e9",
        "--stun-burst",
        "1000000000",
    ]
    cpu = None if args.no_pin else 0
    server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, preexec_fn=pin(cpu))
    try:
        wait_answering(port, time.monotonic() + 30)
        counts = run_load(args, port, client, server.pid)
    finally:
        stop(server)
    return Result("vchat", seconds=args.seconds, **counts)


def bench_coturn(args: argparse.Namespace, client: Path | None, scratch: Path) -> Result | None:
    """coturn's STUN answers under the same load; None if coturn is not installed."""
    turnserver = shutil.which("turnserver")
    if turnserver is None:
        return None
    port = free_udp_port()
    command = [
        turnserver,
        "-n",
        "--listening-ip",
        HOST,
        "--listening-port",
        str(port),
        "--stun-only",
        "--no-tls",
        "--no-dtls",
        "--no-cli",
        "-m",
        "1",
        "--log-file",
        str(scratch / "turn.log"),
        "--simple-log",
        "--no-stdout-log",
        "--pidfile",
        str(scratch / "turn.pid"),
        "--userdb",
        str(scratch / "turndb"),
        "--no-rfc5780",
    ]
    cpu = None if args.no_pin else 0
    server = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=pin(cpu)
    )
    try:
        wait_answering(port, time.monotonic() + 30)
        counts = run_load(args, port, client, server.pid)
    finally:
        stop(server)
    return Result("coturn", seconds=args.seconds, **counts)


def summarize(results: list[Result]) -> dict[str, Any]:
    """Median rate, total loss and median CPU cost per request of one server's runs."""
    rates = sorted(r.rate for r in results)
    costs = sorted(r.cpu_per_request for r in results)
    sent = sum(r.sent for r in results)
    return {
        "rate": rates[len(rates) // 2],
        "loss_percent": 100.0 * sum(r.lost for r in results) / sent if sent else 0.0,
        "cpu_us_per_request": costs[len(costs) // 2],
        "bad": sum(r.bad for r in results),
    }


def main() -> None:
    """Parse arguments, run the servers in turn --runs times, print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="load duration per server and run [5]")
    parser.add_argument(
        "--runs", type=int, default=3, help="alternate runs of each server; medians reported [3]"
    )
    parser.add_argument("--sockets", type=int, default=16, help="UDP sockets per load process [16]")
    parser.add_argument("--window", type=int, default=32, help="requests in flight per socket [32]")
    parser.add_argument("--timeout-ms", type=float, default=500.0, help="after this a request is lost [500]")
    parser.add_argument("--client", choices=("c", "python"), default="c", help="load generator [c]")
    parser.add_argument(
        "--processes", type=int, default=2, help="Python load processes (--client python) [2]"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and load to CPUs 0 and 1")
    parser.add_argument("--skip-coturn", action="store_true", help="measure vchat only")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-id", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.seconds = min(args.seconds, 60.0)
    args.runs = max(1, min(args.runs, 10))
    if args.worker:
        python_worker(args)
        return
    if not args.no_pin and len(os.sched_getaffinity(0)) < 2:
        args.no_pin = True
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="vchat-stun-bench-") as scratch:
        client = build_client(Path(scratch)) if args.client == "c" else None
        if args.client == "c" and client is None:
            print("no C compiler: using the Python load generator", file=sys.stderr)
        for _ in range(args.runs):
            results.append(bench_vchat(args, client))
            coturn = None if args.skip_coturn else bench_coturn(args, client, Path(scratch))
            if coturn is not None:
                results.append(coturn)
    load = "C sendmmsg/recvmmsg" if client is not None else f"{args.processes} Python processes"
    placement = "unpinned" if args.no_pin else "server on CPU 0, load on CPU 1"
    print(
        f"STUN Binding over UDP to {HOST}, {args.runs} x {args.seconds:g} s per server, load generator: {load},"
    )
    print(f"{args.sockets} sockets x {args.window} requests in flight, {placement}")
    row = "{:<8} {:>11} {:>10} {:>10} {:>7} {:>8} {:>5} {:>4} {:>10} {:>9} {:>13}"
    heading = ("server", "answered/s", "sent", "answered", "lost", "loss %", "late", "bad")
    print(row.format(*heading, "server CPU%", "load CPU%", "server µs/req"))
    for r in results:
        print(
            row.format(
                r.server,
                f"{r.rate:,.0f}",
                r.sent,
                r.answered,
                r.lost,
                f"{r.loss:.3f}",
                r.late,
                r.bad,
                f"{r.server_cpu:.0f}",
                f"{r.load_cpu:.0f}",
                f"{r.cpu_per_request:.1f}",
            )
        )
    summary = {
        name: summarize([r for r in results if r.server == name])
        for name in dict.fromkeys(r.server for r in results)
    }
    print("median:")
    for name, figures in summary.items():
        print(
            f"  {name:<7} {figures['rate']:>11,.0f} answered/s, loss {figures['loss_percent']:.3f} %, "
            f"{figures['cpu_us_per_request']:.1f} server CPU µs per request"
        )
    ratio = summary["vchat"]["rate"] / summary["coturn"]["rate"] if "coturn" in summary else None
    if ratio is not None:
        print(f"vchat / coturn answered/s: {ratio:.2f}")
    if args.json:
        payload = {
            "seconds": args.seconds,
            "runs": args.runs,
            "sockets": args.sockets,
            "window": args.window,
            "load": load,
            "pinned": not args.no_pin,
            "results": [
                {**asdict(r), "rate": r.rate, "loss_percent": r.loss, "cpu_us_per_request": r.cpu_per_request}
                for r in results
            ],
            "median": summary,
            "vchat_over_coturn": ratio,
        }
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
