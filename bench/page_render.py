"""Render time of the pages for the Phú Thọ reference tree (165 units, examples/units-h44.csv), served
by ``dvc766 api`` on loopback from a simulated province-month.

    .venv/bin/python bench/page_render.py [--database URL] [--scale 1.0] [--requests 20]

``--database``: a database holding a province's counters (``bench/replay.py --keep`` leaves one); without
it, a fresh one is filled with ``dvc766 simulate``'s province-month at ``--scale`` (COPY + replay, not
timed). The month's score history is recorded day by day first (``record_daily_scores``, timed: what
the indicators side spends per recording). Each page is then fetched ``--requests`` times one after
another, the scores read from the score cards. Latency is the full HTTP request on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time

from common import READER_KEY, Service, base_parser, fresh_database, mib, percentiles, report

PAGES = {
    "unit page, province (H44)": "/ui/units/H44?period={period}",
    "unit page, commune (H44.100)": "/ui/units/H44.100?period={period}",
    "one-page report (H44)": "/ui/units/H44/report?period={period}",
    "public scoreboard (H44)": "/ui/public/H44?period={period}",
    "dossiers that cost points (H44)": "/ui/units/H44/dossiers?period={period}&flag=overdue",
}


async def record_history(url: str, period: str) -> dict:
    """Record each day of the period as the indicators side would (counters as they are now)."""
    from services.indicators.cards import record_daily_scores
    from services.app import build_runtime
    from shared.settings import Settings
    from shared.timeutil import VIETNAM, parse_period

    settings = Settings(database_url=url, log_json=False)
    runtime = await build_runtime(settings, run_migrations=False)
    chosen = parse_period(period)
    seconds = []
    try:
        day = chosen.start
        while day < chosen.end:
            started = time.perf_counter()
            await record_daily_scores(runtime, now=day.astimezone(VIETNAM) + dt.timedelta(hours=21))
            seconds.append(time.perf_counter() - started)
            day += dt.timedelta(days=1)
    finally:
        await runtime.close()
    return {"days": len(seconds), "record_ms_p50": round(1000 * sorted(seconds)[len(seconds) // 2], 1),
            "record_ms_max": round(1000 * max(seconds), 1)}


async def fetch(base_url: str, path: str, requests: int) -> dict:
    import httpx

    latencies = []
    sizes = set()
    async with httpx.AsyncClient(base_url=base_url, timeout=60,
                                 headers={"Authorization": f"Bearer {READER_KEY}"}) as client:
        for _ in range(requests):
            started = time.perf_counter()
            response = await client.get(path)
            latencies.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, (path, response.status_code, response.text[:300])
            sizes.add(len(response.content))
    stats = percentiles(latencies)
    return {"first_ms": round(latencies[0], 1), "p50_ms": round(stats["p50"], 1), "p95_ms": round(stats["p95"], 1),
            "max_ms": round(max(latencies), 1), "kib": round(max(sizes) / 1024, 1)}


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--database", default=None, help="libpq URL of a database with a province's counters")
    parser.add_argument("--scale", type=float, default=1.0, help="province scale when no --database (1.0)")
    parser.add_argument("--requests", type=int, default=20, help="per page")
    parser.add_argument("--period", default="2026-08")
    parser.add_argument("--keep", action="store_true", help="keep the filled database (its URL is printed)")
    args = parser.parse_args()

    rows = []
    with contextlib.ExitStack() as stack:
        url = args.database
        if url is None:
            from replay import load_events, run_replay

            url = stack.enter_context(fresh_database("dvc766_bench_pages", keep=args.keep))
            load_events(url, args.scale)
            run_replay(url, 900)
            history = asyncio.run(record_history(url, args.period))
            if args.keep:
                print(f"kept {url}")
        else:
            history = asyncio.run(record_history(url, args.period))
        service = Service("api", url).start()
        try:
            for name, path in PAGES.items():
                result = asyncio.run(fetch(service.base_url, path.format(period=args.period), args.requests))
                rows.append({"label": args.label, "page": name, **result})
        finally:
            peak = service.stop()
        for row in rows:
            row["api_peak_rss_mib"] = mib(peak)
    report(f"page_render{'-' + args.label if args.label else ''}", rows,
           {"scale": args.scale, "requests": args.requests, "history": history},
           title=f"Page render time, {args.requests} sequential requests per page (ms); history recording: "
                 f"{history}")


if __name__ == "__main__":
    main()
