"""Replay time of a province-month: ``dvc766 replay`` over the simulated month's events (~1.1 M).

    .venv/bin/python bench/replay.py [--scale 1.0] [--keep] [--check] [--profile] [--database URL]

Loads the simulated events into the ``events`` table of a fresh database with COPY (not timed), then
times ``dvc766 replay`` (rebuild dossiers and counters from the events) and samples its peak RSS.
``--keep`` leaves the database for bench/query_latency.py (its URL is printed and saved in the JSON).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time

from common import (DVC766, ROOT, PeakRSS, base_parser, fresh_database, mib, profiled, report, simulated_events,
                    table_counts)
from copy_baseline import copy_rows, prepare


def load_events(url: str, scale: float) -> dict:
    lines = simulated_events(scale)
    rows = prepare(lines)
    seconds = asyncio.run(copy_rows(url, rows))
    return {"events": len(rows), "copy_seconds": round(seconds, 2), "copy_rows_per_s": round(len(rows) / seconds)}


def run_replay(url: str, timeout: float, *, profile: bool = False, name: str = "replay", check: bool = False) -> dict:
    env = dict(os.environ, DVC766_DATABASE_URL=url, DVC766_UNITS_FILE=str(ROOT / "examples" / "units-h44.csv"),
               DVC766_LOG_LEVEL="WARNING", DVC766_LOG_JSON="false")
    env.pop("DVC766_KAFKA_BOOTSTRAP_SERVERS", None)
    started = time.perf_counter()
    proc = subprocess.Popen([DVC766, "replay", *(["--check"] if check else [])], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    rss = PeakRSS(proc.pid).start()
    with profiled(proc.pid, name, profile):
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
    parser.add_argument("--database", help="replay this database's events (kept from an earlier --keep) instead of "
                                           "loading a fresh one")
    parser.add_argument("--check", action="store_true", help="also time `dvc766 replay --check` after the rebuild")
    args = parser.parse_args()
    name = f"replay{'-' + args.label if args.label else ''}"
    database = contextlib.nullcontext(args.database) if args.database else fresh_database(
        "dvc766_bench_replay", keep=args.keep)
    with database as url:
        if args.database:
            n = asyncio.run(table_counts(url, "events"))["events"]
            loaded = {"events": n, "copy_rows_per_s": None}
        else:
            loaded = load_events(url, args.scale)
        result = run_replay(url, args.timeout, profile=args.profile, name=name)
        checked = run_replay(url, args.timeout, name=name + "-check", check=True) if args.check else None
        counts = asyncio.run(table_counts(url, "events", "dossiers", "counters"))
    row = {"label": args.label, "events": loaded["events"], "dossiers": counts["dossiers"],
           "counter_rows": counts["counters"], "replay_s": result["seconds"],
           "events_per_s": round(loaded["events"] / result["seconds"]), "peak_rss_mib": result["peak_rss_mib"],
           "copy_rows_per_s": loaded["copy_rows_per_s"],
           "ratio_to_copy": (round(loaded["events"] / result["seconds"] / loaded["copy_rows_per_s"], 3)
                             if loaded["copy_rows_per_s"] else None),
           "exit": result["exit"], "goal": "<= 60 s, RSS <= 300 MiB"}
    if checked is not None:
        row.update(check_s=checked["seconds"], check_rss_mib=checked["peak_rss_mib"], check_exit=checked["exit"])
    report(name, [row],
           {"database": url if (args.keep or args.database) else None, "replay_output": result["output"],
            "check_output": checked["output"] if checked else None, "load": loaded},
           title="Replay of a province-month")
    if args.keep:
        print(f"database kept: {url}")

if __name__ == "__main__":
    main()
