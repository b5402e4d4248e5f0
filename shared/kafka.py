"""Kafka plumbing shared by the services: clients built from settings, topics, readiness, metrics.

Effectively-once never rests on the producer's idempotence (``kafka_idempotent_producer`` is only a
transport nicety, off against brokers without InitProducerId): events are deduplicated on
(source, event_id) by the events table, and consumer offsets are stored in PostgreSQL in the same
transaction as the counters (services/indicators/kafka.py).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from prometheus_client import Counter, Gauge

from shared.settings import Settings

log = logging.getLogger("dvc766.kafka")

# Header carrying the source of an event produced by our own HTTP ingest (the API key's source).
# Only trusted producers write to the canonical topic; raw upstream topics are bridged without it.
SOURCE_HEADER = "dvc766-source"

KAFKA_LAG = Gauge("dvc766_kafka_consumer_lag", "Messages not yet applied, per partition", ["topic", "partition"])
KAFKA_REBALANCES = Counter("dvc766_kafka_rebalances_total", "Partition assignments received", ["group"])
KAFKA_DEAD_LETTERS = Counter("dvc766_kafka_dead_letters_total", "Bad messages sent to the dead letters", ["reason"])
KAFKA_FENCED = Counter("dvc766_kafka_fenced_batches_total", "Batches refused because the partition moved on")
KAFKA_ABANDONED = Counter(
    "dvc766_kafka_abandoned_batches_total",
    "Batches rolled back unapplied because the batch before them failed or a rebalance came between",
)
KAFKA_OFFSET_RESETS = Counter(
    "dvc766_kafka_offset_resets_total",
    "Partitions found with their stored position beyond the log (topic recreated or log lost): stopped, not skipped",
    ["topic", "partition"],
)
KAFKA_HALTED = Gauge("dvc766_kafka_partition_halted", "1 while a partition is stopped by an offset reset",
                     ["topic", "partition"])
KAFKA_PRODUCED = Counter("dvc766_kafka_produced_total", "Events produced to the canonical topic", ["origin"])


def member_name() -> str:
    """A readable, unique name of this consumer (kept as the partition's owner in kafka_offsets)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def _common(settings: Settings) -> dict:
    return {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "request_timeout_ms": settings.kafka_request_timeout_ms,
    }


def make_producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        **_common(settings),
        acks="all",
        enable_idempotence=settings.kafka_idempotent_producer,
        linger_ms=settings.kafka_linger_ms,
        max_request_size=max(1024 * 1024, settings.max_event_bytes * 4),
    )


def make_consumer(settings: Settings, *, group_id: str, client_id: str | None = None,
                  auto_offset_reset: str = "none") -> AIOKafkaConsumer:
    """A consumer that never commits to Kafka. ``auto_offset_reset`` "none" (the indicators worker): a
    position the broker no longer has (the log was lost or truncated) raises, for the worker to stop on
    (services/indicators/kafka.py), instead of jumping elsewhere in the log."""
    return AIOKafkaConsumer(
        **_common(settings),
        group_id=group_id,
        client_id=client_id or "dvc766",
        enable_auto_commit=False,
        auto_offset_reset=auto_offset_reset,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        max_poll_interval_ms=settings.kafka_max_poll_interval_ms,
        rebalance_timeout_ms=settings.kafka_rebalance_timeout_ms,
        max_poll_records=settings.kafka_max_batch_records,
        # Keep the whole batch's bytes reachable in one fetch; oversized messages still arrive
        # (the broker returns at least one) and are dead-lettered by us.
        fetch_max_bytes=64 * 1024 * 1024,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )


async def ensure_topics(settings: Settings, topics: list[str]) -> None:
    """Create missing topics (``kafka_create_topics``); existing ones are left as they are."""
    if not settings.kafka_create_topics:
        return
    admin = AIOKafkaAdminClient(**_common(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [t for t in dict.fromkeys(topics) if t and t not in existing]
        if not wanted:
            return
        try:
            await admin.create_topics(
                [NewTopic(t, num_partitions=settings.kafka_partitions,
                          replication_factor=settings.kafka_replication_factor,
                          topic_configs={"min.insync.replicas": str(settings.kafka_min_insync_replicas)})
                 for t in wanted]
            )
            log.info("kafka topics created", extra={"topics": wanted})
        except TopicAlreadyExistsError:
            pass  # another process won the race
    finally:
        await admin.close()


def client_ready(get_client):
    """A /readyz check: the Kafka client (of a producer or consumer) can fetch the cluster metadata."""

    async def check() -> str:
        client = get_client()
        if client is None:
            return "not started"
        try:
            await asyncio.wait_for(client.fetch_all_metadata(), 5.0)
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            return f"unavailable: {type(exc).__name__}"
        return "ok"

    return check
