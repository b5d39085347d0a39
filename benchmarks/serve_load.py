"""Load test of ``mirec serve``: N concurrent clients on loopback, POST /recommend.

Starts ``mirec serve --model-dir DIR --port 0`` itself (or loads an already running server
with ``--url``), then ``--clients`` keep-alive connections send ``--requests`` requests in
all (stopping at ``--duration`` seconds at the latest), each a realistic ask: a random
user's stored history from the model folder (its last ``--history`` items), ``n`` =
``--n``.

Requests are offered at ``--rate`` per second in all (open loop: request i is due at
i / rate, whether or not the earlier ones were answered), over the connections; a request's
latency runs from its due time, so a server that falls behind is charged for the queue it
causes. ``--rate 0`` is a closed loop instead (each connection sends its next request as
soon as it has an answer): the most requests per second. In a closed loop the mean latency
is clients / throughput (Little's law): 200 clients with a p99 of 100 ms need well over
2,000 requests/s, so the goal is checked in both modes: at an offered 1,000 requests/s
(latency when the server keeps up) and in a closed loop (the most it serves).
It prints, and writes to ``--output`` (JSON):

* throughput: answered requests per second, from the first request to the last answer;
* latency p50 / p95 / p99 (ms, from the due time to the whole answer read);
* errors: non-200 answers, connection errors, time-outs (``--timeout``) and answers without
  ``n`` items (every 50th answer is parsed);
* the client's and the server's CPU use (what the client costs on a small machine), and
  the server's mean micro-batch size (from ``/health``).

The client is a lean HTTP/1.1 keep-alive client on ``asyncio.open_connection``, with the
requests encoded before the clock starts, split over ``--client-processes`` processes. The
goal, on a quiet 2-core machine with amazon-beauty's ComiRec-SA:

    mirec train --dataset amazon-beauty --model comirec-sa --data-dir ../shared/data \\
        --output-dir /tmp/beauty-sa --set max_epochs=1
    python benchmarks/serve_load.py --model-dir /tmp/beauty-sa
    # 200 clients, 20,000 requests offered at 1,000/s: 0 errors, p99 <= 100 ms, all served
    python benchmarks/serve_load.py --model-dir /tmp/beauty-sa --rate 0   # the most req/s
    # the same goal in a closed loop: >= 1,000 requests/s, 0 errors, p99 <= 100 ms
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

GOAL = {"clients": 200, "requests": 20_000, "rate": 1000.0, "errors": 0, "p99_ms": 100.0}
SERVED = 0.98
"""The share of the offered rate that the throughput must reach for the rate to count as
served (20,000 requests at 1,000/s take 20 s plus the last answer's latency)."""
BODIES = 2000
"""Distinct request bodies (random users' histories), encoded before the clock starts."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Load test of mirec serve: POST /recommend.")
    p.add_argument("--model-dir", type=Path, required=True, help="A `mirec train` folder.")
    p.add_argument("--url", help="A running `mirec serve` of that folder (default: start one).")
    p.add_argument("--clients", type=int, default=200, help="Concurrent connections.")
    p.add_argument("--requests", type=int, default=20_000, help="Requests in all.")
    p.add_argument("--rate", type=float, default=1000.0, help="Offered req/s (0: closed loop).")
    p.add_argument("--duration", type=float, default=120.0, help="Stop after this many s.")
    p.add_argument("--warmup", type=int, default=500, help="Untimed requests first.")
    p.add_argument("--n", type=int, default=50, help="Items per answer.")
    p.add_argument("--history", type=int, default=50, help="Last items of a user's history.")
    p.add_argument("--timeout", type=float, default=30.0, help="Per request, seconds.")
    p.add_argument("--client-processes", type=int, default=1, help="Client processes.")
    p.add_argument(
        "--workers", type=int, help="`mirec serve --workers` (default: one per CPU core)."
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", type=Path, default=Path("serve_load.json"))
    args = p.parse_args(argv)
    for name in ("clients", "requests", "client_processes", "n"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.rate < 0 or args.warmup < 0:
        p.error("--rate and --warmup must be >= 0")
    return args


# -- requests ------------------------------------------------------------------------


def request_bodies(checkpoint: Path, n: int, history: int, seed: int) -> list[bytes]:
    """JSON bodies of POST /recommend: random users' stored histories (their last
    ``history`` items, raw ids), read from the model folder."""
    from mirec.models.folder import read_folder_data

    seqs = read_folder_data(checkpoint).sequences
    rng = np.random.default_rng(seed)
    bodies = []
    for row in rng.integers(0, seqs.n_users, size=BODIES):
        items = seqs.sequence(int(row))[-history:]
        ids = [seqs.item_ids[i - 1].item() for i in items]
        bodies.append(json.dumps({"history": ids, "n": n}).encode())
    return bodies


def http_request(host: str, port: int, body: bytes) -> bytes:
    head = (
        f"POST /recommend HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


# -- the client ----------------------------------------------------------------------


@dataclass
class ClientResult:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    connection_errors: int = 0
    timeouts: int = 0
    bad_answers: int = 0
    first_error: str | None = None
    cpu_s: float = 0.0
    wall_s: float = 0.0


class Schedule:
    """The requests of one client process: how many are left, when each is due (at
    ``rate`` per second; with rate 0, at once: a closed loop), and the deadline."""

    def __init__(self, requests: int, rate: float, duration: float) -> None:
        self.requests = requests
        self.rate = rate
        self.start = time.perf_counter()
        self.deadline = self.start + duration
        self.taken = 0

    def next_due(self) -> float | None:
        """The due time of the next request, or None when none is left."""
        now = time.perf_counter()
        if self.taken >= self.requests or now > self.deadline:
            return None
        due = self.start + self.taken / self.rate if self.rate else now
        self.taken += 1
        return due


async def read_answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 answer with a Content-Length: (status, body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    if match is None:
        raise ConnectionError("an answer without Content-Length")
    return status, await reader.readexactly(int(match.group(1)))


async def connection(
    host: str,
    port: int,
    requests: list[bytes],
    schedule: Schedule,
    n: int,
    timeout: float,
    result: ClientResult,
    start: int,
) -> None:
    """One keep-alive connection sending requests while the schedule lasts; it reconnects
    after a connection error."""
    reader = writer = None
    sent = start
    while (due := schedule.next_due()) is not None:
        payload = requests[sent % len(requests)]
        sent += 1
        wait = due - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        try:
            if writer is None:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, port), timeout
                )
            writer.write(payload)
            status, body = await asyncio.wait_for(read_answer(reader), timeout)
        except TimeoutError:
            result.timeouts += 1
            result.first_error = result.first_error or "time-out"
            writer = _close(writer)
            continue
        except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError) as err:
            result.connection_errors += 1
            result.first_error = result.first_error or f"{type(err).__name__}: {err}"
            writer = _close(writer)
            continue
        result.latencies_ms.append((time.perf_counter() - due) * 1000)
        result.statuses[str(status)] = result.statuses.get(str(status), 0) + 1
        if status != 200:
            result.first_error = result.first_error or f"HTTP {status}: {body[:200]!r}"
        elif sent % 50 == 0 and len(json.loads(body)["items"]) != n:
            result.bad_answers += 1
    _close(writer)


def _close(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None:
        writer.close()


async def run_clients(
    url: str, bodies: list[bytes], clients: int, total: int, rate: float, duration: float,
    n: int, timeout: float, seed: int,
) -> ClientResult:  # fmt: skip
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    payloads = [http_request(host, port, body) for body in bodies]
    random.Random(seed).shuffle(payloads)
    result = ClientResult()
    cpu, began = time.process_time(), time.perf_counter()
    schedule = Schedule(total, rate, duration)
    await asyncio.gather(
        *(
            connection(host, port, payloads, schedule, n, timeout, result, i * 7919)
            for i in range(clients)
        )
    )
    result.cpu_s, result.wall_s = time.process_time() - cpu, time.perf_counter() - began
    return result


def client_process(args: tuple) -> dict:
    return asdict(asyncio.run(run_clients(*args)))


def load(
    url: str, bodies: list[bytes], clients: int, total: int, rate: float, duration: float,
    n: int, timeout: float, processes: int, seed: int,
) -> ClientResult:  # fmt: skip
    """``total`` requests at ``rate`` per second over ``clients`` connections, split evenly
    across ``processes`` client processes."""
    shares = [
        (url, bodies, clients // processes + (p < clients % processes),
         total // processes + (p < total % processes), rate / processes, duration, n, timeout,
         seed + p)
        for p in range(processes)
    ]  # fmt: skip
    if processes == 1:
        return ClientResult(**client_process(shares[0]))
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        parts = [ClientResult(**part) for part in pool.map(client_process, shares)]
    merged = ClientResult()
    for part in parts:
        merged.latencies_ms += part.latencies_ms
        for status, count in part.statuses.items():
            merged.statuses[status] = merged.statuses.get(status, 0) + count
        merged.connection_errors += part.connection_errors
        merged.timeouts += part.timeouts
        merged.bad_answers += part.bad_answers
        merged.first_error = merged.first_error or part.first_error
        merged.cpu_s += part.cpu_s
        merged.wall_s = max(merged.wall_s, part.wall_s)
    return merged


# -- the server ----------------------------------------------------------------------


class Server:
    """``mirec serve`` in a subprocess on a free port of 127.0.0.1."""

    def __init__(self, checkpoint: Path, workers: int | None) -> None:
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (open while the server runs)
        command = [sys.executable, "-m", "mirec", "serve", "--model-dir", str(checkpoint),
                   "--port", "0"]  # fmt: skip
        if workers is not None:
            command += ["--workers", str(workers)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.banner = ""
        line = self.process.stdout.readline()  # the URL, or nothing if it failed
        found = re.search(r"http://\S+?:\d+", line)
        if found is None:
            self.process.wait(timeout=30)
            self.log.seek(0)
            sys.exit(f"mirec serve did not start:\n{line}{self.log.read().decode()}")
        self.url = found.group(0)
        self.banner = line.strip()
        deadline = time.monotonic() + 120
        while True:
            try:
                health(self.url)
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    sys.exit(f"{self.url}/health did not answer in 120 s")
                time.sleep(0.2)

    def cpu_s(self) -> float:
        """CPU seconds of the server process and its worker processes so far."""
        pid = self.process.pid
        pids = [pid]
        children = Path(f"/proc/{pid}/task/{pid}/children")
        if children.is_file():
            pids += [int(p) for p in children.read_text().split()]
        ticks = 0
        for one in pids:
            stat = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(stat[11]) + int(stat[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def health(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/health", timeout=5) as answer:
        return json.loads(answer.read())


# -- the run and its report --------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bodies = request_bodies(args.checkpoint, args.n, args.history, args.seed)
    server = None if args.url else Server(args.checkpoint, args.workers)
    url = args.url or server.url
    try:
        if args.warmup:
            load(url, bodies, min(args.clients, 50), args.warmup, 0, args.duration, args.n,
                 args.timeout, 1, args.seed + 1000)  # fmt: skip
        server_cpu = server.cpu_s() if server else None
        result = load(url, bodies, args.clients, args.requests, args.rate, args.duration,
                      args.n, args.timeout, args.client_processes, args.seed)  # fmt: skip
        if server:
            server_cpu = server.cpu_s() - server_cpu
        after = health(url)
    finally:
        if server:
            server.stop()
    banner = server.banner if server else f"{url} (--url)"
    report = summarise(args, result, server_cpu, after, banner)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(as_text(report))
    print(f"results: {args.output}")
    return 0


def summarise(
    args: argparse.Namespace,
    result: ClientResult,
    server_cpu: float | None,
    after: dict,
    server_banner: str,
) -> dict:
    latencies = np.asarray(result.latencies_ms)
    ok = result.statuses.get("200", 0)
    non_200 = sum(count for status, count in result.statuses.items() if status != "200")
    errors = non_200 + result.connection_errors + result.timeouts + result.bad_answers
    # a worker's own counts since it started (the warm-up included): with several workers
    # two /health calls may reach different ones, so no difference of two calls is taken
    passes, batched = after["batched_passes"], after["batched_requests"]
    wall = result.wall_s

    def percentile(q: float) -> float:
        return float(np.percentile(latencies, q)) if len(latencies) else float("nan")

    report = {
        "checkpoint": str(args.checkpoint),
        "clients": args.clients,
        "rate_offered": args.rate or None,
        "requests_sent": len(latencies) + result.connection_errors + result.timeouts,
        "requests_ok": ok,
        "errors": errors,
        "non_200": non_200,
        "statuses": result.statuses,
        "connection_errors": result.connection_errors,
        "timeouts": result.timeouts,
        "bad_answers": result.bad_answers,
        "first_error": result.first_error,
        "wall_s": wall,
        "rps": ok / wall,
        "p50_ms": percentile(50),
        "p95_ms": percentile(95),
        "p99_ms": percentile(99),
        "max_ms": percentile(100),
        "client_cpu_share": result.cpu_s / wall,
        "server_cpu_share": None if server_cpu is None else server_cpu / wall,
        "mean_batch": batched / passes if passes else None,
        "n": args.n,
        "history": args.history,
        "server": server_banner,
        "client_processes": args.client_processes,
        "cpus": os.cpu_count(),
        "load_average_1m_after": os.getloadavg()[0],
        "goal": GOAL,
    }
    # open loop: the offered rate (at least the goal's) is served; closed loop: the goal's
    # rate is reached
    rate = GOAL["rate"] if args.rate == 0 else args.rate
    report["goal_met"] = (
        args.clients >= GOAL["clients"]
        and ok + errors >= GOAL["requests"]
        and rate >= GOAL["rate"]
        and report["rps"] >= (1.0 if args.rate == 0 else SERVED) * rate
        and errors == GOAL["errors"]
        and report["p99_ms"] <= GOAL["p99_ms"]
    )
    return report


def as_text(r: dict) -> str:
    batch = "-" if r["mean_batch"] is None else f"{r['mean_batch']:.1f}"
    server = "-" if r["server_cpu_share"] is None else f"{r['server_cpu_share']:.2f}"
    offered = "closed loop" if r["rate_offered"] is None else f"{r['rate_offered']:.0f}/s offered"
    lines = [
        f"clients      {r['clients']} ({offered})",
        f"requests     {r['requests_sent']} sent, {r['requests_ok']} answered 200",
        f"errors       {r['errors']} (non-200 {r['non_200']}, connection {r['connection_errors']}, "
        f"time-outs {r['timeouts']}, bad answers {r['bad_answers']})",
        f"throughput   {r['rps']:.0f} requests/s ({r['wall_s']:.1f} s)",
        f"latency      p50 {r['p50_ms']:.1f} ms, p95 {r['p95_ms']:.1f} ms, "
        f"p99 {r['p99_ms']:.1f} ms (max {r['max_ms']:.1f})",
        f"cpu          client {r['client_cpu_share']:.2f} cores, server {server} cores "
        f"(of {r['cpus']}); mean micro-batch {batch} (one worker's)",
        f"server       {r['server']}",
        "goal         200 clients, 20,000 requests, >= 1,000/s served, 0 errors, "
        f"p99 <= 100 ms: {'met' if r['goal_met'] else 'NOT met'}",
    ]
    if r["first_error"]:
        lines.append(f"first error  {r['first_error']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
