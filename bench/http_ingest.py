"""HTTP ingest throughput: simulated events POSTed in 1,000-event batches to ``dvc766 ingest``.

    .venv/bin/python bench/http_ingest.py --events 200000 --concurrency 4 [--command serve] [--workers N] [--profile]

Starts the service as a subprocess against a fresh database on 127.0.0.1:5432, posts the first
``--events`` events of the simulated province (JSON arrays prepared before the clock starts), and
reports events/s, request latency percentiles, the service's peak RSS, and the ratio to PostgreSQL's
own COPY of the same number of event rows (measured in the same run, unless --no-copy).
"""

from __future__ import annotations

import asyncio
import os
import time

from common import (
    backend_cpu,
    base_parser,
    fresh_database,
    json_batches,
    mib,
    percentiles,
    post_batches,
    profiled,
    report,
    Service,
    simulated_events,
    table_counts,
)
from copy_baseline import measure_copy
from query_wrk import service_cpu


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="events to post (default 200,000)")
    parser.add_argument("--scale", type=float, default=1.0, help="simulated province scale (default 1)")
    parser.add_argument("--concurrency", type=int, default=4, help="requests in flight (default 4)")
    parser.add_argument("--batch", type=int, default=1000, help="events per request (default 1,000)")
    parser.add_argument("--command", default="ingest", choices=["ingest", "serve"],
                        help="the service to run: ingest alone (default) or serve (ingest + worker + api)")
    parser.add_argument("--workers", type=int, default=None,
                        help="ingest processes (DVC766_INGEST_WORKERS; --profile then samples only the supervisor)")
    parser.add_argument("--timeout", type=float, default=300, help="stop posting after this many seconds")
    parser.add_argument("--no-copy", action="store_true", help="skip the COPY baseline")
    args = parser.parse_args()

    lines = simulated_events(args.scale, limit=args.events)
    bodies = json_batches(lines, args.batch)
    with fresh_database("dvc766_bench_ingest") as url:
        env = {"DVC766_INGEST_WORKERS": str(args.workers)} if args.workers else None
        service = Service(args.command, url, env=env).start()
        try:
            database = url.rsplit("/", 1)[-1].split("?")[0]
            cpu_before, pg_before, client_before = service_cpu(service.pid), backend_cpu(database), time.process_time()
            with profiled(service.pid, f"http_ingest-{args.label or 'run'}", args.profile):
                result = asyncio.run(post_batches(service.base_url, bodies, concurrency=args.concurrency,
                                                  timeout=args.timeout))
            cpu = service_cpu(service.pid) - cpu_before  # with its worker processes
            pg_cpu = backend_cpu(database) - pg_before  # the pool's connections stay open until stop
            client_cpu = time.process_time() - client_before
        finally:
            peak = service.stop()
        stored = asyncio.run(table_counts(url, "events", "dead_letters"))
    copy = None if args.no_copy else measure_copy(lines[: result["events"]])
    rate = result["events"] / result["seconds"]
    lat = percentiles(result["latencies_ms"])
    row = {
        "label": args.label,
        "service": f"dvc766 {args.command}",
        "workers": args.workers or 1,
        "events": result["events"],
        "accepted": result.get("accepted", 0),
        "duplicates": result.get("duplicates", 0),
        "rejected": result.get("rejected", 0),
        "stored": stored["events"],
        "seconds": round(result["seconds"], 2),
        "events_per_s": round(rate),
        "batch_p50_ms": round(lat.get("p50", 0), 1),
        "batch_p99_ms": round(lat.get("p99", 0), 1),
        "service_cpu_us_per_event": round(cpu / result["events"] * 1e6, 1),
        "events_per_service_cpu_s": round(result["events"] / cpu) if cpu else None,
        "postgres_cpu_us_per_event": round(pg_cpu / result["events"] * 1e6, 1),
        "client_cpu_us_per_event": round(client_cpu / result["events"] * 1e6, 1),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "peak_rss_mib": mib(peak),
        "copy_rows_per_s": copy["rows_per_s"] if copy else None,
        "ratio_to_copy": round(rate / copy["rows_per_s"], 3) if copy else None,
        "goal": ">= 20,000 events/s",
    }
    report(f"http_ingest{'-' + args.label if args.label else ''}", [row],
           {"concurrency": args.concurrency, "batch": args.batch, "latency_ms": lat, "copy": copy},
           title="HTTP ingest (1,000-event batches)")


if __name__ == "__main__":
    main()
