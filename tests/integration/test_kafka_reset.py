"""A Kafka log lost under a running worker (the broker restarted empty): the partitions stop loudly,
nothing is skipped, and the documented recovery applies what the new log holds."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time

import pytest
from prometheus_client import REGISTRY

from services.indicators.engine import IndicatorEngine
from services.indicators.kafka import KafkaApplier
from shared.db.raw import driver_connection
from shared.kafka import ensure_topics
from tests.support.kafka import (
    TansuBroker,
    as_messages,
    end_offsets,
    kafka_settings,
    live_counters,
    make_stream,
    produce,
    reference_counters,
    stored_offsets,
    wait_caught_up,
)


@pytest.fixture
def own_broker():
    """A broker of this test's own: it is restarted (empty) under the worker."""
    broker = TansuBroker().start()
    yield broker
    broker.stop()


def _metric(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _count_events(runtime) -> int:
    async with runtime.engine.connect() as conn:
        return await (await driver_connection(conn)).fetchval("SELECT count(*) FROM events")


@pytest.mark.parametrize("refill", ["shorter", "longer"])
async def test_a_broker_restarted_empty_stops_the_partitions_and_skips_nothing(clean_db, own_broker, caplog, refill):
    """``shorter``: the new log ends before the stored positions. ``longer``: by the time the worker looks,
    the new log is already longer than them; what it holds below them would be skipped without the check
    of the last applied message."""
    s = kafka_settings(clean_db.settings, own_broker.bootstrap, kafka_reset_confirm_seconds=0.5)
    runtime = dataclasses.replace(clean_db, settings=s)
    await ensure_topics(s, [s.kafka_topic, s.kafka_dead_letter_topic])
    before_loss = make_stream(12, prefix="B")
    after_loss = make_stream(1 if refill == "shorter" else 40, prefix="A", seed=11)
    await produce(s.kafka_bootstrap_servers, s.kafka_topic, as_messages(before_loss))
    ends = await end_offsets(s.kafka_bootstrap_servers, s.kafka_topic, expected=len(before_loss))
    engine = IndicatorEngine(runtime.calendar, s.policy)
    resets = sum(_metric("dvc766_kafka_offset_resets_total", topic=s.kafka_topic, partition=str(p)) for p in ends)

    applier = KafkaApplier(runtime, engine)
    await applier.start()
    try:
        await wait_caught_up(runtime, s.kafka_group_id, ends, timeout=60)
        assert await applier.ready() == "ok"

        own_broker.stop()  # in memory: its log is gone
        own_broker.start()
        await ensure_topics(s, [s.kafka_topic, s.kafka_dead_letter_topic])  # as `dvc766 ingest` does at start
        await produce(s.kafka_bootstrap_servers, s.kafka_topic, as_messages(after_loss))
        new_ends = await end_offsets(s.kafka_bootstrap_servers, s.kafka_topic, expected=len(after_loss))
        if refill == "longer":
            assert all(new_ends.get(p, 0) > end for p, end in ends.items()), (ends, new_ends)

        caplog.set_level(logging.ERROR, logger="dvc766.indicators.kafka")
        deadline = time.monotonic() + 90
        while len(applier.halted) < len(ends) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        halted = {tp.partition for tp in applier.halted}
        ready = await applier.ready()
        halted_gauge = {p: _metric("dvc766_kafka_partition_halted", topic=s.kafka_topic, partition=str(p))
                        for p in ends}
        await asyncio.sleep(1.5)  # they stay stopped: nothing of the new log is applied meanwhile
        stored = await stored_offsets(runtime, s.kafka_group_id)
        events = await _count_events(runtime)
    finally:
        await applier.stop()
    assert halted == set(ends), f"stopped {halted} of {set(ends)}"
    assert ready.startswith("halted: ") and "offset reset" in ready, ready
    assert halted_gauge == {p: 1.0 for p in ends}
    after = sum(_metric("dvc766_kafka_offset_resets_total", topic=s.kafka_topic, partition=str(p)) for p in ends)
    assert after == resets + len(ends)
    assert any("offset reset" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    assert {p: stored[p] for p in ends} == ends and events == len(before_loss)

    # Recovery (deploy/README.md, "Kafka log lost"): the stored positions go back to the new log's start;
    # events already applied count once (idempotent on their ids), the new ones are applied.
    async with runtime.engine.begin() as conn:
        await (await driver_connection(conn)).execute(
            "UPDATE kafka_offsets SET next_offset = 0, last_timestamp_ms = NULL WHERE group_id = $1 AND topic = $2",
            s.kafka_group_id, s.kafka_topic)
    applier = KafkaApplier(runtime, engine)
    await applier.start()
    try:
        await wait_caught_up(runtime, s.kafka_group_id, new_ends, timeout=60)
        assert await applier.ready() == "ok"
    finally:
        await applier.stop()
    assert await live_counters(runtime) == reference_counters(runtime, before_loss + after_loss, s.kafka_source)


async def test_with_the_broker_down_ingest_answers_503_within_its_deadline(clean_db, own_broker):
    import httpx

    from services.app import create_app
    from tests.conftest import ADMIN_KEY, auth
    from tests.support.events import event, vn

    s = kafka_settings(clean_db.settings, own_broker.bootstrap, kafka_produce_timeout_seconds=2.0,
                       kafka_request_timeout_ms=10_000)  # without the deadline, the answer took this long
    runtime = dataclasses.replace(clean_db, settings=s)
    app = create_app(("ingest",), runtime=runtime)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            body = [event("D1", 2, vn(2026, 8, 3), due_at=vn(2026, 8, 10))]
            assert (await client.post("/v1/events", json=body, headers=auth(ADMIN_KEY))).json()["accepted"] == 1
            own_broker.stop()
            started = time.monotonic()
            down = await client.post("/v1/events", json=[event("D2", 2, vn(2026, 8, 3), due_at=vn(2026, 8, 10))],
                                     headers=auth(ADMIN_KEY))
            took = time.monotonic() - started
    assert down.status_code == 503 and down.json()["code"] == "kafka_unavailable", down.text
    assert took < 2.0 + 3.0, f"answered after {took:.1f} s"  # the deadline, not the client's 30 s timeout
