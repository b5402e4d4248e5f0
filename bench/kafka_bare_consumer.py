"""Physical limit of the Kafka path: a bare aiokafka consumer reading the same topic (no processing).

    .venv/bin/python bench/kafka_bare_consumer.py --events 20000 [--simulated]

Starts the in-memory Tansu broker that bench/kafka_throughput.py uses (tests.support.kafka), produces
the events (by default the same generated stream kafka_throughput.py produces; ``--simulated``: the
simulated province's first N events), then times one AIOKafkaConsumer (getmany, no auto-commit)
reading them all from the beginning. kafka_throughput.py's events/s are reported against this.
"""

from __future__ import annotations

import asyncio
import time

import orjson

from common import ROOT, base_parser, report, simulated_events  # noqa: F401  (ROOT puts the repo on sys.path)
from tests.support.kafka import TansuBroker, as_messages, create_topic, make_stream, produce


async def consume_all(bootstrap: str, topic: str, expected: int, timeout: float) -> tuple[int, float]:
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest", group_id=None, max_partition_fetch_bytes=8 << 20,
                                fetch_max_bytes=64 << 20)
    await consumer.start()
    count = 0
    started = time.perf_counter()
    try:
        while count < expected and time.perf_counter() - started < timeout:
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for records in batches.values():
                count += len(records)
    finally:
        await consumer.stop()
    return count, time.perf_counter() - started


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--simulated", action="store_true", help="the simulated province's events instead")
    parser.add_argument("--timeout", type=float, default=120)
    args = parser.parse_args()
    if args.simulated:
        events = [orjson.loads(line) for line in simulated_events(1.0, limit=args.events)]
    else:
        events = make_stream(args.events // 4, prefix="B")
    messages = as_messages(events)
    broker = TansuBroker().start()
    try:
        topic = "bare-consumer"
        asyncio.run(create_topic(broker.bootstrap, topic, args.partitions))
        asyncio.run(produce(broker.bootstrap, topic, messages))
        count, seconds = asyncio.run(consume_all(broker.bootstrap, topic, len(messages), args.timeout))
    finally:
        broker.stop()
    report(f"kafka_bare_consumer{'-' + args.label if args.label else ''}",
           [{"label": args.label, "messages": count, "partitions": args.partitions, "seconds": round(seconds, 3),
             "messages_per_s": round(count / seconds)}],
           title="Bare aiokafka consumer (the physical limit for Kafka -> counters)")


if __name__ == "__main__":
    main()
