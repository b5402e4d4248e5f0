"""Storage per million events: what the live path leaves in PostgreSQL, per table, with dead space.

    .venv/bin/python bench/storage.py [--scale 0.1] [--label NAME] [--table-options "dossiers:fillfactor=70"]
        [--sql "ALTER TABLE dossiers ALTER COLUMN contribution SET COMPRESSION lz4"]

Posts a simulated province-month (``--scale`` of Phú Thọ's August 2026) to a `dvc766 serve` on a fresh
database over HTTP (the database path: each event stored, queued, applied; each dossier row rewritten
per applied event), waits until the queue is empty, then reads every table's total size (heap, TOAST,
indexes) and its live and dead tuples, before and after a plain VACUUM (which makes dead space
reusable without giving it back). Figures are scaled to one million accepted events.
``--table-options`` sets storage parameters on a table before loading, ``--sql`` runs a statement (an
experiment, not a migration). ``--vacuum-every S`` runs a plain VACUUM every S seconds while loading: a
real month arrives over a month, and autovacuum then makes dead versions reusable between a dossier's
events; the simulated month arrives in seconds, so without it every version of a row is still there.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

from common import (Service, base_parser, fresh_database, json_batches, post_batches, report, simulated_events,
                    wait_applied)

# A partition counts under its parent's name (events: one row for all its monthly partitions).
TABLES_SQL = """
SELECT coalesce(p.relname, c.relname) AS table, sum(pg_total_relation_size(c.oid))::bigint AS total_bytes,
       sum(pg_relation_size(c.oid))::bigint AS heap_bytes, sum(pg_indexes_size(c.oid))::bigint AS index_bytes,
       sum(s.n_live_tup)::bigint AS live, sum(s.n_dead_tup)::bigint AS dead
FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid
LEFT JOIN pg_inherits i ON i.inhrelid = c.oid LEFT JOIN pg_class p ON p.oid = i.inhparent
WHERE c.relkind = 'r' GROUP BY 1 ORDER BY 2 DESC
"""


async def sizes(url: str, *, vacuum: bool = False) -> list[dict]:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        if vacuum:
            await conn.execute("VACUUM")
        await conn.execute("ANALYZE")
        await asyncio.sleep(1.0)  # the statistics collector's view catches up
        return [dict(r) for r in await conn.fetch(TABLES_SQL)]
    finally:
        await conn.close()


async def dossier_row_bytes(url: str) -> dict:
    """What a live dossier row is made of: average bytes of the whole row and of its wide columns."""
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        columns = {r[0] for r in await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'dossiers'")}
        wide = [c for c in ("history", "contribution", "attributes") if c in columns]
        parts = ", ".join(f"round(avg(coalesce(pg_column_size({c}), 0)))::int AS {c}" for c in wide)
        row = await conn.fetchrow(f"SELECT round(avg(pg_column_size(d.*)))::int AS row, {parts} FROM dossiers d")
        return {f"dossier_{k}_bytes": v for k, v in dict(row).items()}
    finally:
        await conn.close()


async def execute(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def vacuuming(url: str, every: float):
    """A plain VACUUM of the database every ``every`` seconds meanwhile (0: none), in a thread."""
    if not every:
        yield
        return
    stop = threading.Event()

    def loop() -> None:
        async def once() -> None:
            import asyncpg

            conn = await asyncpg.connect(url)
            try:
                await conn.execute("VACUUM")
            finally:
                await conn.close()

        while not stop.wait(every):
            asyncio.run(once())

    thread = threading.Thread(target=loop, name="vacuum", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def per_million(rows: list[dict], events: int, label: str) -> list[dict]:
    out = []
    for r in rows:
        if r["total_bytes"] < 64 * 1024:
            continue
        out.append({
            "label": label, "table": r["table"], "MB_per_M_events": round(r["total_bytes"] / events, 1),
            "heap_MB": round(r["heap_bytes"] / events, 1), "index_MB": round(r["index_bytes"] / events, 1),
            "dead_share": round(r["dead"] / max(1, r["live"] + r["dead"]), 3), "live_rows": r["live"],
        })
    total = sum(r["total_bytes"] for r in rows)
    out.append({"label": label, "table": "ALL", "MB_per_M_events": round(total / events, 1)})
    return out


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=0.1, help="simulated province scale (default 0.1)")
    parser.add_argument("--table-options", action="append", default=[],
                        help="TABLE:PARAM=VALUE[,PARAM=VALUE] storage parameters set before loading")
    parser.add_argument("--sql", action="append", default=[], help="a statement run before loading")
    parser.add_argument("--vacuum-every", type=float, default=0.0,
                        help="run a plain VACUUM every this many seconds while loading (0: never)")
    args = parser.parse_args()
    lines = simulated_events(args.scale)
    with fresh_database("dvc766_bench_storage") as url:
        for option in args.table_options:
            table, params = option.split(":", 1)
            asyncio.run(execute(url, f"ALTER TABLE {table} SET ({params})"))
        for sql in args.sql:
            asyncio.run(execute(url, sql))
        with Service("serve", url, env={"DVC766_SWEEP_INTERVAL_SECONDS": "3600"}) as service, \
                vacuuming(url, args.vacuum_every):
            started = time.monotonic()
            posted = asyncio.run(post_batches(service.base_url, json_batches(lines), concurrency=2))
            asyncio.run(wait_applied(url, timeout=1800))
            applied_seconds = time.monotonic() - started  # from the first post until the queue is empty
        accepted = posted["accepted"]
        composition = asyncio.run(dossier_row_bytes(url))
        loaded = per_million(asyncio.run(sizes(url)), accepted, f"{args.label or 'run'} loaded")
        vacuumed = per_million(asyncio.run(sizes(url, vacuum=True)), accepted, f"{args.label or 'run'} vacuumed")
    name = f"storage{'-' + args.label if args.label else ''}"
    report(name, loaded + vacuumed, {"events_posted": posted["events"], "accepted": accepted,
                                     "post_seconds": round(posted["seconds"], 1),
                                     "applied_seconds": round(applied_seconds, 1),
                                     "applied_events_per_s": round(accepted / applied_seconds), **composition},
           title="Storage per million accepted events (MB)")


if __name__ == "__main__":
    main()
