"""simulate a province's dossier events (seeded): to NDJSON, to a running dvc766 over HTTP, or to Kafka

Examples::

    dvc766 simulate --scale 0.01 --output events.ndjson          # a 1% Phú Thọ, August 2026
    dvc766 simulate --output - | head                            # NDJSON on stdout
    dvc766 simulate --http http://127.0.0.1:8766 --api-key KEY   # POST /v1/events, 1,000 per request
    DVC766_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 dvc766 simulate --kafka
    dvc766 simulate --units-out units.csv --catalog-out catalog.json --limit 0
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import itertools
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import orjson

from services.simulator.generator import SimulationOptions, build_catalogue, simulate
from services.simulator.profile import load_profile, units_csv


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=766, help="random seed (same seed, same stream)")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the province's dossiers (default 1)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="profile CSV or directory of portal reference CSVs (default: the shipped Phú Thọ, "
                             "2026-08)")
    parser.add_argument("--month", default=None, help="month to simulate, e.g. 2026-08 (default: the profile's)")
    parser.add_argument("--horizon", default=None,
                        help="RFC 3339 instant: events after it are not emitted (default: whole lifecycles)")
    parser.add_argument("--duplicates", type=float, default=0.01, help="share of events sent twice (0.01)")
    parser.add_argument("--out-of-order", type=float, default=0.05,
                        help="share of events delivered after a later event of their dossier (0.05)")
    parser.add_argument("--limit", type=int, default=None, help="stop after this many events")
    parser.add_argument("--rate", type=float, default=None, help="events per second (default: as fast as possible)")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--output", "-o", default=None, help="NDJSON file ('-' for stdout)")
    target.add_argument("--http", metavar="URL", default=None, help="base URL of a running dvc766")
    target.add_argument("--kafka", action="store_true",
                        help="produce to DVC766_KAFKA_TOPIC on DVC766_KAFKA_BOOTSTRAP_SERVERS")
    parser.add_argument("--api-key", default=None, help="API key for --http (a source or admin key)")
    parser.add_argument("--batch", type=int, default=1000, help="events per HTTP request (default 1000)")
    parser.add_argument("--concurrency", type=int, default=4, help="HTTP requests in flight (default 4)")
    parser.add_argument("--units-out", type=Path, default=None, help="write the unit tree (CSV) here")
    parser.add_argument("--catalog-out", type=Path, default=None,
                        help="write the procedure catalogue (JSON array, PUT /v1/catalog/procedures) here")


def options_from(args: argparse.Namespace) -> SimulationOptions:
    horizon = dt.datetime.fromisoformat(args.horizon) if args.horizon else None
    if horizon is not None and horizon.tzinfo is None:
        raise SystemExit("--horizon needs a UTC offset")
    return SimulationOptions(
        seed=args.seed,
        scale=args.scale,
        month=args.month,
        horizon=horizon,
        duplicate_rate=args.duplicates,
        out_of_order_rate=args.out_of_order,
    )


def events_from(args: argparse.Namespace) -> Iterator[dict]:
    from shared.calendar import WorkingCalendar
    from shared.settings import get_settings

    calendar = WorkingCalendar.from_settings(get_settings().calendar)
    stream = simulate(load_profile(args.profile), options_from(args), calendar)
    if args.limit is not None:
        stream = itertools.islice(stream, args.limit)
    if args.rate:
        stream = paced(stream, args.rate)
    return stream


def paced(events: Iterable[dict], rate: float) -> Iterator[dict]:
    """Yield at most ``rate`` events per second (steady, measured from the start)."""
    started = time.monotonic()
    for n, event in enumerate(events):
        due = started + n / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield event


def batches(events: Iterable[dict], size: int) -> Iterator[list[dict]]:
    iterator = iter(events)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def write_ndjson(events: Iterable[dict], path: str) -> int:
    count = 0
    out = sys.stdout.buffer if path == "-" else open(path, "wb")
    try:
        for batch in batches(events, 10_000):
            out.write(b"".join(orjson.dumps(e) + b"\n" for e in batch))
            count += len(batch)
    finally:
        if path == "-":
            out.flush()
        else:
            out.close()
    return count


async def post_http(events: Iterable[dict], base_url: str, api_key: str, *, batch_size: int, concurrency: int) -> dict:
    """POST the events in batches; returns the summed answers (accepted / duplicates / rejected)."""
    import httpx

    totals = {"events": 0, "accepted": 0, "duplicates": 0, "rejected": 0, "requests": 0, "failed_requests": 0}
    queue: asyncio.Queue = asyncio.Queue(maxsize=concurrency * 2)
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}

    async def sender(client: httpx.AsyncClient) -> None:
        while (body := await queue.get()) is not None:
            response = await client.post("/v1/events", content=body[1], headers=headers)
            totals["requests"] += 1
            totals["events"] += body[0]
            if response.status_code in (200, 422):
                answer = response.json()
                for key in ("accepted", "duplicates", "rejected"):
                    totals[key] += answer.get(key, 0)
            else:
                totals["failed_requests"] += 1
                print(f"HTTP {response.status_code}: {response.text[:300]}", file=sys.stderr)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=120, limits=limits) as client:
        workers = [asyncio.create_task(sender(client)) for _ in range(concurrency)]
        for batch in batches(events, batch_size):
            await queue.put((len(batch), orjson.dumps(batch)))
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)
    return totals


async def produce_kafka(events: Iterable[dict]) -> dict:
    """Produce one message per event to the configured topic, keyed by dossier_code."""
    from aiokafka import AIOKafkaProducer

    from shared.settings import get_settings

    settings = get_settings()
    if not settings.kafka_bootstrap_servers:
        raise SystemExit("--kafka needs DVC766_KAFKA_BOOTSTRAP_SERVERS")
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        enable_idempotence=settings.kafka_idempotent_producer,
        acks="all",
        linger_ms=20,
        max_batch_size=1 << 20,
    )
    await producer.start()
    count = 0
    try:
        for batch in batches(events, 5000):
            futures = [
                await producer.send(settings.kafka_topic, orjson.dumps(e), key=e["dossier_code"].encode())
                for e in batch
            ]
            await asyncio.gather(*futures)
            count += len(batch)
    finally:
        await producer.stop()
    return {"events": count, "topic": settings.kafka_topic}


def run(args: argparse.Namespace) -> int:
    profile = load_profile(args.profile)
    if args.units_out:
        args.units_out.write_text(units_csv(profile.units), encoding="utf-8")
    if args.catalog_out:
        catalogue = build_catalogue(profile, args.seed)
        # In force from the simulated month's first day: a catalogue loaded later still scores that month.
        valid_from = f"{args.month or profile.month}-01"
        entries = [{**p.catalogue_entry(code), "valid_from": valid_from}
                   for code, cat in catalogue.items() for p in cat.procedures]
        args.catalog_out.write_bytes(orjson.dumps(entries, option=orjson.OPT_INDENT_2))
    if args.limit == 0:
        return 0
    started = time.perf_counter()
    events = events_from(args)
    if args.http:
        if not args.api_key:
            raise SystemExit("--http needs --api-key")
        result = asyncio.run(post_http(events, args.http, args.api_key, batch_size=args.batch,
                                       concurrency=args.concurrency))
    elif args.kafka:
        result = asyncio.run(produce_kafka(events))
    else:
        result = {"events": write_ndjson(events, args.output or "-")}
    result["seconds"] = round(time.perf_counter() - started, 2)
    print(orjson.dumps(result).decode(), file=sys.stderr)
    return 1 if result.get("failed_requests") else 0
