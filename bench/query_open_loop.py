"""Open-loop query latency: ``dvc766 api`` polled by 200 clients, each at a fixed rate.

    .venv/bin/python bench/query_open_loop.py --database URL [--clients 200] [--rate 5] [--seconds 15]

Unlike wrk (a closed loop: each connection sends its next request when the last answer arrives, so
latency is whatever the throughput makes it), here every client has its own keep-alive connection and a
schedule: request k at start + phase + k / rate (phases spread over the first period). A latency is
measured from the request's *scheduled* time to its whole answer, so a late answer also delays (and
counts against) the requests queued behind it — no coordinated omission. The offered load is
clients × rate requests per second; the report says what was achieved. The client is Python
(uvloop, raw sockets) on the same cores as the service; at these rates it needs a fraction of one.
Same two URLs as bench/query_wrk.py; the database is one kept by ``bench/replay.py --keep``. Each
measured run follows ``--warmup`` seconds of the same polling (default 2, not recorded).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time

from common import READER_KEY, Service, base_parser, mib, percentiles, report
from query_wrk import service_cpu


class Poller(asyncio.Protocol):
    """One client: sends its requests on schedule over one connection, one at a time."""

    def __init__(self, request: bytes, start: float, period: float, end: float, latencies: list, errors: list):
        self.request = request
        self.next_due = start
        self.period = period
        self.end = end
        self.latencies = latencies
        self.errors = errors
        self.buffer = b""
        self.due: float | None = None
        self.done = asyncio.get_running_loop().create_future()
        self.timer = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self._schedule()

    def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        if self.next_due >= self.end:
            self.transport.close()
            return
        delay = self.next_due - time.perf_counter()
        if delay > 0:
            self.timer = loop.call_later(delay, self._send)
        else:
            self._send()  # behind schedule: at once (its latency counts from when it was due)

    def _send(self) -> None:
        self.due = self.next_due
        self.next_due += self.period
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = self.buffer[:head_end]
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(self.buffer) < head_end + 4 + length:
            return
        status = head[9:12]
        self.buffer = self.buffer[head_end + 4 + length:]
        self.latencies.append((time.perf_counter() - self.due) * 1000)
        if status != b"200":
            self.errors.append(status.decode())
        self._schedule()

    def connection_lost(self, exc) -> None:
        if self.timer:
            self.timer.cancel()
        if not self.done.done():
            self.done.set_result(None)


async def poll(host: str, port: int, path: str, clients: int, rate: float, seconds: float) -> dict:
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {READER_KEY}\r\n\r\n").encode()
    loop = asyncio.get_running_loop()
    period = 1.0 / rate
    start = time.perf_counter() + 1.0  # connections first
    end = start + seconds
    latencies: list[float] = []
    errors: list[str] = []
    rng = random.Random(766)
    pollers = []
    for _ in range(clients):
        phase = rng.random() * period
        _, poller = await loop.create_connection(
            lambda phase=phase: Poller(request, start + phase, period, end, latencies, errors), host, port)
        pollers.append(poller)
    await asyncio.gather(*(p.done for p in pollers))
    wall = time.perf_counter() - start
    stats = percentiles(latencies)
    return {"offered_req_per_s": round(clients * rate), "achieved_req_per_s": round(len(latencies) / wall),
            "requests": len(latencies), "errors": len(errors),
            **{k: round(v, 2) for k, v in stats.items() if k != "count"}}


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--database", required=True, help="a database with a province-month (bench/replay.py --keep)")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--rate", type=float, nargs="+", default=[5.0], help="requests per second per client")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--workers", type=int, default=None, help="api processes (DVC766_API_WORKERS)")
    parser.add_argument("--period", default="2026-08")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds of the same polling before each measured run, not recorded (0: none)")
    args = parser.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    env = {"DVC766_API_WORKERS": str(args.workers)} if args.workers else None
    service = Service("api", args.database, env=env).start()
    rows = []
    try:
        targets = {
            "score of H44.03": f"/v1/scores/H44.03?period={args.period}",
            "ranking of the communes": f"/v1/scores?period={args.period}&parent=H44&level=COMMUNE&limit=200",
        }
        for rate in args.rate:
            for name, path in targets.items():
                if args.warmup:  # first answers computed, start-up collections done
                    asyncio.run(poll("127.0.0.1", service.port, path, args.clients, rate, args.warmup))
                load_before = os.getloadavg()[0]
                cpu_before = service_cpu(service.pid)
                result = asyncio.run(poll("127.0.0.1", service.port, path, args.clients, rate, args.seconds))
                cpu = service_cpu(service.pid) - cpu_before
                rows.append({"label": args.label, "query": name, "clients": args.clients, "rate_per_client": rate,
                             "workers": args.workers or "default", "warmup_s": args.warmup, **result,
                             "service_cpu_us_per_req": round(cpu / max(result["requests"], 1) * 1e6, 1),
                             "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2)})
    finally:
        peak = service.stop()
    for row in rows:
        row["service_peak_rss_mib"] = mib(peak)
    report(f"query_open_loop{'-' + args.label if args.label else ''}", rows, title="Open-loop query latency")


if __name__ == "__main__":
    main()
