"""Score and ranking query latency under 200 concurrent clients (``dvc766 api`` on loopback).

    .venv/bin/python bench/query_latency.py --database URL [--clients 200] [--seconds 20]

``--database``: a database holding a province's counters (``bench/replay.py --keep`` leaves one);
without it, a fresh one is filled with a simulated province at ``--scale`` (COPY + replay, not timed).
Two phases, each bounded by ``--seconds`` and ``--max-requests``: GET /v1/scores/{unit}?period=2026-08
for random units, then the 150-unit ranking GET /v1/scores?period=2026-08&parent=H44&level=COMMUNE.
The client runs on the same 2 cores, so its own overhead is part of the latencies.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

from common import READER_KEY, Service, base_parser, fresh_database, mib, percentiles, profiled, report

UNITS = [line.split(",")[0] for line in open(__file__.replace("bench/query_latency.py", "examples/units-h44.csv"),
                                              encoding="utf-8").read().splitlines()[1:]]


async def phase(base_url: str, paths, clients: int, seconds: float, max_requests: int) -> dict:
    import httpx

    latencies: list[float] = []
    errors = 0
    first_error: list[str] = []
    deadline = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {READER_KEY}"}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits) as client:
        async def one() -> None:
            nonlocal errors
            while time.monotonic() < deadline and len(latencies) < max_requests:
                started = time.perf_counter()
                try:
                    response = await client.get(paths(), headers=headers)
                except httpx.HTTPError as exc:  # counted, and reported with the first one's text
                    errors += 1
                    first_error.append(repr(exc))
                    continue
                latencies.append((time.perf_counter() - started) * 1000)
                if response.status_code != 200:
                    errors += 1
                    first_error.append(f"{response.status_code} {response.text[:200]}")
        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(clients)))
        wall = time.perf_counter() - started
    return {"requests": len(latencies), "errors": errors, "first_error": (first_error or [None])[0], "req_per_s": round(len(latencies) / wall),
            **{k: round(v, 2) for k, v in percentiles(latencies).items() if k != "count"}}


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--database", default=None, help="libpq URL of a database with a province's counters")
    parser.add_argument("--scale", type=float, default=0.1, help="province scale when no --database (0.1)")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0, help="per phase")
    parser.add_argument("--max-requests", type=int, default=50_000, help="per phase")
    parser.add_argument("--period", default="2026-08")
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:
        url = args.database
        if url is None:
            from replay import load_events, run_replay

            url = stack.enter_context(fresh_database("dvc766_bench_query"))
            load_events(url, args.scale)
            run_replay(url, 900)
        service = Service("api", url).start()
        try:
            rng = random.Random(766)
            with profiled(service.pid, f"query-{args.label or 'run'}", args.profile):
                score = asyncio.run(phase(service.base_url, lambda: f"/v1/scores/{rng.choice(UNITS)}?period={args.period}",
                                          args.clients, args.seconds, args.max_requests))
                ranking = asyncio.run(phase(
                    service.base_url,
                    lambda: f"/v1/scores?period={args.period}&parent=H44&level=COMMUNE&limit=200",
                    args.clients, args.seconds, args.max_requests))
        finally:
            peak = service.stop()
    rows = [{"label": args.label, "query": "score of a unit", **score, "goal": "p99 <= 10 ms"},
            {"label": args.label, "query": "ranking of 148 communes", **ranking, "goal": "p99 <= 50 ms"}]
    for row in rows:
        row["api_peak_rss_mib"] = mib(peak)
    report(f"query_latency{'-' + args.label if args.label else ''}", rows, {"clients": args.clients},
           title=f"Query latency, {args.clients} concurrent clients (ms)")


if __name__ == "__main__":
    main()
