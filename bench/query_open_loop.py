"""Open-loop read latency: a score and a league table from one ``dvc766 api`` process at a fixed rate.

    .venv/bin/python bench/query_open_loop.py [--rate 1000] [--seconds 20] [--before PATH] [--database URL]

Open loop, as wrk2 does it: ``--clients`` keep-alive connections (default 200), each sending its
requests on a fixed schedule (request k at start + phase + k / rate per client, phases spread over the
first period), so the offered load is ``--rate`` requests per second whatever the answers do. A
latency is measured from the request's *scheduled* time to the end of its answer: a late answer also
delays (and counts against) the requests queued behind it on its connection — no coordinated
omission. The client is Python (uvloop, bare sockets, no HTTP library) in this process; its timers
have millisecond resolution, so a request may leave up to ~1 ms after its time, counted in its
latency: the report gives that lateness (``send_late_p99_ms``) and the client's own CPU per request,
to show it is not the bottleneck.

Both reads are of the Phú Thọ tree (165 units, examples/units-h44.csv): the score of H44.03 and the
league table of the 148 communes. Without ``--database`` a fresh database is filled first with a
simulated month (``--scale`` of Phú Thọ's August 2026, posted to ``dvc766 serve`` and applied; the
cards are the same size at any scale). ``--before PATH`` runs the same loads, interleaved, against a
second ``dvc766 api`` started from another checkout (e.g. a ``git worktree`` of the commit before a
change): before and after in one run, on the same database. Each row has the service's CPU time per
request (steadier than wall-clock figures when others share the machine) and the 1-minute load
average; each measured run follows ``--warmup`` seconds of the same load, not recorded.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time

from common import (READER_KEY, Service, base_parser, fresh_database, json_batches, mib, percentiles,
                    post_batches, profiled, report, simulated_events, wait_applied)
from query_wrk import service_cpu

TARGETS = {
    "score of H44.03": "/v1/scores/H44.03?period={period}",
    "league table of the 148 communes": "/v1/scores?period={period}&parent=H44&level=COMMUNE&limit=200",
}


class Poller(asyncio.Protocol):
    """One connection: sends its requests on schedule, one at a time (a late answer delays the next)."""

    def __init__(self, request: bytes, start: float, period: float, end: float, out: dict):
        self.request = request
        self.next_due = start
        self.period = period
        self.end = end
        self.out = out
        self.buffer = b""
        self.due = 0.0
        self.done = asyncio.get_running_loop().create_future()
        self.timer = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._schedule()

    def _schedule(self) -> None:
        if self.next_due >= self.end:
            self.transport.close()
            return
        delay = self.next_due - time.perf_counter()
        if delay > 0:
            self.timer = asyncio.get_running_loop().call_later(delay, self._send)
        else:
            self._send()  # behind schedule: at once (its latency counts from when it was due)

    def _send(self) -> None:
        self.due = self.next_due
        self.next_due += self.period
        self.out["late"].append((time.perf_counter() - self.due) * 1000)
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = self.buffer[:head_end]
        length = 0
        at = head.lower().find(b"\r\ncontent-length:")
        if at >= 0:
            stop = head.find(b"\r\n", at + 2)
            length = int(head[at + 17:stop if stop > 0 else len(head)])
        if len(self.buffer) < head_end + 4 + length:
            return
        self.buffer = self.buffer[head_end + 4 + length:]
        self.out["latencies"].append((time.perf_counter() - self.due) * 1000)
        status = head[9:12]
        if status != b"200":
            self.out["errors"].append(status.decode())
        self._schedule()

    def connection_lost(self, exc) -> None:
        if self.timer:
            self.timer.cancel()
        if not self.done.done():
            self.done.set_result(None)


async def poll(port: int, path: str, clients: int, rate: float, seconds: float) -> dict:
    """``rate`` requests per second in all over ``clients`` connections for ``seconds``."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {READER_KEY}\r\n\r\n".encode()
    loop = asyncio.get_running_loop()
    period = clients / rate  # each connection's interval
    start = time.perf_counter() + 1.0  # connections first
    end = start + seconds
    out: dict = {"latencies": [], "late": [], "errors": []}
    rng = random.Random(766)
    pollers = []
    for _ in range(clients):
        phase = rng.random() * period
        _, poller = await loop.create_connection(
            lambda phase=phase: Poller(request, start + phase, period, end, out), "127.0.0.1", port)
        pollers.append(poller)
    cpu = time.process_time()
    await asyncio.gather(*(p.done for p in pollers))
    cpu = time.process_time() - cpu
    wall = time.perf_counter() - start
    stats = percentiles(out["latencies"], points=(50, 90, 99, 99.9))
    late = percentiles(out["late"], points=(99,))
    n = len(out["latencies"])
    return {"offered_per_s": round(rate), "achieved_per_s": round(n / wall), "requests": n,
            "errors": len(out["errors"]), **{f"{k}_ms": round(v, 2) for k, v in stats.items() if k != "count"},
            "send_late_p99_ms": round(late.get("p99", 0.0), 2), "client_cpu_us_per_req": round(cpu / max(n, 1) * 1e6)}


def fill(url: str, scale: float) -> int:
    """A simulated month posted to ``dvc766 serve`` on ``url`` and applied; returns the accepted events."""
    with Service("serve", url, env={"DVC766_SWEEP_INTERVAL_SECONDS": "3600"}) as service:
        posted = asyncio.run(post_batches(service.base_url, json_batches(simulated_events(scale)), concurrency=2))
        asyncio.run(wait_applied(url))
    return posted.get("accepted", 0)


def measure(args, url: str) -> list[dict]:
    services = {"after": Service("api", url)}
    if args.before:
        services = {"before": Service("api", url, code=args.before), **services}
    rows = []
    try:
        for service in services.values():
            service.start()
        for round_ in range(args.repeat):
            for name, template in TARGETS.items():
                path = template.format(period=args.period)
                # Interleaved, the order alternating by round: a saturated run leaves load behind it.
                order = list(services.items())
                for label, service in order if round_ % 2 == 0 else order[::-1]:
                    if args.warmup:  # first answers computed, start-up collections done
                        asyncio.run(poll(service.port, path, args.clients, args.rate, args.warmup))
                    load_before = os.getloadavg()[0]
                    cpu_before = service_cpu(service.pid)
                    with profiled(service.pid, f"open-loop-{label}-{name.split()[0]}", args.profile):
                        result = asyncio.run(poll(service.port, path, args.clients, args.rate, args.seconds))
                    cpu = service_cpu(service.pid) - cpu_before
                    rows.append({"label": label, "read": name, "clients": args.clients, **result,
                                 "service_cpu_us_per_req": round(cpu / max(result["requests"], 1) * 1e6),
                                 "load_1m": f"{load_before:.2f}→{os.getloadavg()[0]:.2f}"})
    finally:
        for label, service in services.items():
            peak = service.stop()
            for row in rows:
                if row["label"] == label:
                    row["peak_rss_mib"] = mib(peak)
    return rows


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--database", help="an existing database with a simulated month (default: fill a fresh one)")
    parser.add_argument("--scale", type=float, default=0.05, help="the fresh database's simulated scale")
    parser.add_argument("--keep", action="store_true", help="keep the fresh database (its URL is printed)")
    parser.add_argument("--rate", type=float, default=1000.0, help="requests per second, all connections together")
    parser.add_argument("--clients", type=int, default=200, help="keep-alive connections")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of the same load first, not recorded")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of all the runs (interleaved)")
    parser.add_argument("--before", help="a checkout to measure too, as 'before' (e.g. a git worktree)")
    parser.add_argument("--period", default="2026-08")
    args = parser.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    database = contextlib.nullcontext(args.database) if args.database else fresh_database(
        "dvc766_bench_reads", keep=args.keep)
    with database as url:
        accepted = None if args.database else fill(url, args.scale)
        rows = measure(args, url)
    name = f"query_open_loop{'-' + args.label if args.label else ''}"
    report(name, rows, {"database": url if args.database or args.keep else None, "accepted_events": accepted,
                        "before": args.before}, title=f"Open-loop reads at {args.rate:g} req/s, one api process")
    if args.keep and not args.database:
        print(f"database kept: {url}")


if __name__ == "__main__":
    main()
