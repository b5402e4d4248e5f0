"""Replay time of a province-month: ``dvc766 replay`` over the simulated month's events (~1.1 M).

    .venv/bin/python bench/replay.py [--scale 1.0] [--keep]

Loads the simulated events into the ``events`` table of a fresh database with COPY (not timed), then
times ``dvc766 replay`` (rebuild dossiers and counters from the events) and samples its peak RSS.
``--keep`` leaves the database for bench/query_latency.py (its URL is printed and saved in the JSON).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time

from common import DVC766, ROOT, PeakRSS, base_parser, fresh_database, mib, report, simulated_events, table_counts
from copy_baseline import copy_rows, prepare


def load_events(url: str, scale: float) -> dict:
    lines = simulated_events(scale)
    rows = prepare(lines)
    seconds = asyncio.run(copy_rows(url, rows))
    return {"events": len(rows), "copy_seconds": round(seconds, 2), "copy_rows_per_s": round(len(rows) / seconds)}


def run_replay(url: str, timeout: float) -> dict:
    env = dict(os.environ, DVC766_DATABASE_URL=url, DVC766_UNITS_FILE=str(ROOT / "examples" / "units-h44.csv"),
               DVC766_LOG_LEVEL="WARNING", DVC766_LOG_JSON="false")
    env.pop("DVC766_KAFKA_BOOTSTRAP_SERVERS", None)
    started = time.perf_counter()
    proc = subprocess.Popen([DVC766, "replay"], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    rss = PeakRSS(proc.pid).start()
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    peak = rss.stop()
    return {"seconds": round(time.perf_counter() - started, 2), "exit": proc.returncode, "peak_rss_mib": mib(peak),
            "output": out.decode(errors="replace")[-500:]}


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="simulated province scale (default 1)")
    parser.add_argument("--timeout", type=float, default=900, help="give up on the replay after this (s)")
    parser.add_argument("--keep", action="store_true", help="keep the database (for query_latency.py --database)")
    args = parser.parse_args()
    with fresh_database("dvc766_bench_replay", keep=args.keep) as url:
        loaded = load_events(url, args.scale)
        result = run_replay(url, args.timeout)
        counts = asyncio.run(table_counts(url, "events", "dossiers", "counters"))
    row = {"label": args.label, "events": loaded["events"], "dossiers": counts["dossiers"],
           "counter_rows": counts["counters"], "replay_s": result["seconds"],
           "events_per_s": round(loaded["events"] / result["seconds"]), "peak_rss_mib": result["peak_rss_mib"],
           "copy_rows_per_s": loaded["copy_rows_per_s"],
           "ratio_to_copy": round(loaded["events"] / result["seconds"] / loaded["copy_rows_per_s"], 3),
           "exit": result["exit"], "goal": "<= 60 s, RSS <= 300 MiB"}
    report(f"replay{'-' + args.label if args.label else ''}", [row],
           {"database": url if args.keep else None, "replay_output": result["output"], "load": loaded},
           title="Replay of a province-month")
    if args.keep:
        print(f"database kept: {url}")


if __name__ == "__main__":
    main()
