"""Physical limit: PostgreSQL's own COPY of N event rows into the ``events`` table (same indexes).

    .venv/bin/python bench/copy_baseline.py --events 200000

Rows are the simulated events, prepared before the clock starts (the same columns ingest writes:
the keys and body hashes into ``event_keys``; home_month, source, event_id, dossier_code, status,
occurred_at, body, transport into ``events``, each in its month's partition, created before the clock
starts); one binary COPY per table into a fresh, migrated database on 127.0.0.1:5432. Ingest figures
are reported as a ratio of this.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import time

import orjson

from common import base_parser, fresh_database, report, simulated_events

from shared.db.partitions import ensure_partitions, month_of


def prepare(lines: list[bytes]) -> list[tuple]:
    rows = []
    seen = set()
    homes: dict[str, dt.date] = {}
    for line in lines:
        event = orjson.loads(line)
        if event["event_id"] in seen:  # the store keeps one row per (source, event_id)
            continue
        seen.add(event["event_id"])
        occurred = dt.datetime.fromisoformat(event["occurred_at"])
        home = homes.setdefault(event["dossier_code"], month_of(occurred))
        rows.append((
            home, "bench", event["event_id"], event["dossier_code"], event["status"], occurred, line.decode(),
            "http", hashlib.sha256(line).digest()[:16],
        ))
    return rows


async def copy_rows(url: str, rows: list[tuple]) -> float:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await ensure_partitions(conn, {row[0] for row in rows})
        started = time.perf_counter()
        await conn.copy_records_to_table("event_keys", records=[(r[1], r[2], r[8]) for r in rows],
                                         columns=["source", "event_id", "body_hash"])
        await conn.copy_records_to_table(
            "events", records=[r[:8] for r in rows],
            columns=["home_month", "source", "event_id", "dossier_code", "status", "occurred_at", "body", "transport"],
        )
        return time.perf_counter() - started
    finally:
        await conn.close()


def measure_copy(lines: list[bytes]) -> dict:
    """COPY the events of ``lines`` into a fresh database; rows and events/s."""
    rows = prepare(lines)
    with fresh_database("dvc766_bench_copy") as url:
        seconds = asyncio.run(copy_rows(url, rows))
    return {"rows": len(rows), "seconds": round(seconds, 3), "rows_per_s": round(len(rows) / seconds)}


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="event rows to copy (default 200,000)")
    parser.add_argument("--scale", type=float, default=1.0, help="simulated province scale to take them from")
    args = parser.parse_args()
    lines = simulated_events(args.scale, limit=args.events)
    result = measure_copy(lines)
    report("copy_baseline", [{"what": "COPY events (binary)", **result, "label": args.label}],
           title="PostgreSQL COPY of event rows (the physical limit for ingest)")


if __name__ == "__main__":
    main()
