"""Kafka mode against a real Kafka-protocol broker (Tansu): consumption, dead letters, HTTP produce,
fencing of a worker that lost its partition."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from prometheus_client import REGISTRY

from services.app import create_app
from services.indicators import kafka as kafka_module
from services.indicators.engine import IndicatorEngine
from services.indicators.kafka import Fenced, KafkaApplier
from services.indicators.replay import check
from shared.db.raw import driver_connection
from shared.kafka import SOURCE_HEADER, ensure_topics
from tests.conftest import SOURCE_KEY, auth
from tests.support.events import event, vn
from tests.support.kafka import (
    as_messages,
    end_offsets,
    kafka_settings,
    live_counters,
    make_stream,
    produce,
    read_all,
    reference_counters,
    stored_offsets,
    wait_caught_up,
)


@pytest.fixture
async def kafka_rt(clean_db, broker):
    settings = kafka_settings(clean_db.settings, broker.bootstrap)
    await ensure_topics(settings, [settings.kafka_topic, settings.kafka_dead_letter_topic])
    return dataclasses.replace(clean_db, settings=settings)


def _metric(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _apply_all(runtime, applier: KafkaApplier, timeout: float = 60.0) -> None:
    """Run the applier until the offsets stored with the counters reach the topic's end, then stop it."""
    s = runtime.settings
    await applier.start()
    try:
        await wait_caught_up(runtime, s.kafka_group_id, await end_offsets(s.kafka_bootstrap_servers, s.kafka_topic),
                             timeout=timeout)
    finally:
        await applier.stop()


async def _fetch(runtime, sql, *args):
    async with runtime.engine.connect() as conn:
        return await (await driver_connection(conn)).fetch(sql, *args)


async def test_consumes_dedupes_and_dead_letters_poison(kafka_rt):
    s = kafka_rt.settings
    stream = make_stream(40, prefix="K")
    good = as_messages(stream)
    oversized = orjson.dumps(dict(stream[0], event_id="big", pad="x" * (s.max_event_bytes + 10)))
    conflicting = dict(stream[1], status=8)  # a known event_id with a different body
    poison = [
        (b"K000000", b"\x00\xff not json at all"),
        (b"K000000", b'{"event_id": "bad-1", "dossier_code": "K000000"}'),  # missing fields
        (b"K000000", oversized),
        (b"K000000", None),  # a tombstone
        (b"K000001", orjson.dumps(dict(stream[4], event_id="unknown-unit", unit_code="H99"))),
    ]
    # Poison first in K000000's partition: the valid events behind it must still be applied.
    await produce(s.kafka_bootstrap_servers, s.kafka_topic, poison[:4])
    await produce(s.kafka_bootstrap_servers, s.kafka_topic, good)
    await produce(s.kafka_bootstrap_servers, s.kafka_topic, good[:25])  # redelivered / duplicated
    await produce(s.kafka_bootstrap_servers, s.kafka_topic, [poison[4], (b"K000001", orjson.dumps(conflicting))])
    ends = await end_offsets(s.kafka_bootstrap_servers, s.kafka_topic)
    assert sum(ends.values()) == len(good) + 25 + 6

    before = {r: _metric("dvc766_kafka_dead_letters_total", reason=r) for r in ("invalid_json", "conflict")}
    rebalances = _metric("dvc766_kafka_rebalances_total", group=s.kafka_group_id)
    applier = KafkaApplier(kafka_rt, IndicatorEngine(kafka_rt.calendar, s.policy))
    await applier.start()
    try:
        await wait_caught_up(kafka_rt, s.kafka_group_id, ends, timeout=30)
        await asyncio.sleep(0.3)  # a poll round after the last batch refreshes the gauges
        lag = {p: REGISTRY.get_sample_value("dvc766_kafka_consumer_lag", {"topic": s.kafka_topic,
                                                                          "partition": str(p)}) for p in ends}
        applied_at = _metric("dvc766_last_applied_timestamp_seconds")
        stalled = _metric("dvc766_apply_stalled_seconds")
        behind = _metric("dvc766_time_behind_seconds")
    finally:
        await applier.stop()
    assert _metric("dvc766_kafka_dead_letters_total", reason="invalid_json") - before["invalid_json"] == 2
    assert _metric("dvc766_kafka_dead_letters_total", reason="conflict") - before["conflict"] == 1
    assert _metric("dvc766_kafka_rebalances_total", group=s.kafka_group_id) - rebalances == 1
    assert lag == {p: 0.0 for p in ends} and 0 <= time.time() - applied_at < 30
    assert 0 <= stalled < 5 and behind == 0  # caught up and idle: neither stalled nor behind
    assert _metric("dvc766_apply_batch_events_count") >= 1

    assert await live_counters(kafka_rt) == reference_counters(kafka_rt, stream, s.kafka_source)
    events = await _fetch(kafka_rt, "SELECT count(*) AS n, count(DISTINCT source) AS sources FROM events")
    assert (events[0]["n"], events[0]["sources"]) == (len(stream), 1)
    assert await check(kafka_rt, applier.engine) == []

    letters = await _fetch(kafka_rt, "SELECT reason, kafka_topic, kafka_partition, kafka_offset, event_id, transport "
                                     "FROM dead_letters ORDER BY kafka_partition, kafka_offset")
    reasons = sorted(r["reason"] for r in letters)
    assert reasons == sorted(["invalid_json", "missing_field", "too_large", "invalid_json", "unknown_unit", "conflict"])
    assert {r["transport"] for r in letters} == {"kafka"} and {r["kafka_topic"] for r in letters} == {s.kafka_topic}
    first_partition = next(r["kafka_partition"] for r in letters if r["reason"] == "too_large")
    assert [r["kafka_offset"] for r in letters if r["kafka_partition"] == first_partition][:4] == [0, 1, 2, 3]

    dead = await read_all(s.kafka_bootstrap_servers, s.kafka_dead_letter_topic, expected=6)
    assert len(dead) == 6
    headers = [dict(m.headers) for m in dead]
    assert sorted(h["reason"].decode() for h in headers) == reasons
    too_large = next(h for h in headers if h["reason"] == b"too_large")
    assert too_large["partition"] == str(first_partition).encode() and too_large["offset"] == b"2"


async def test_restart_resumes_from_stored_offsets_without_double_counting(kafka_rt):
    s = kafka_rt.settings
    stream = make_stream(30, prefix="R", seed=3)
    half = len(stream) // 2
    engine = IndicatorEngine(kafka_rt.calendar, s.policy)
    await produce(s.kafka_bootstrap_servers, s.kafka_topic, as_messages(stream[:half]))
    first = KafkaApplier(kafka_rt, engine)
    await _apply_all(kafka_rt, first)
    epochs = {r["partition"]: r["epoch"] for r in await _fetch(kafka_rt, "SELECT partition, epoch FROM kafka_offsets")}

    await produce(s.kafka_bootstrap_servers, s.kafka_topic, as_messages(stream[half:]))
    second = KafkaApplier(kafka_rt, engine)
    await _apply_all(kafka_rt, second)
    assert await live_counters(kafka_rt) == reference_counters(kafka_rt, stream, s.kafka_source)
    rows = await _fetch(kafka_rt, "SELECT partition, epoch, owner FROM kafka_offsets")
    assert all(r["epoch"] == epochs[r["partition"]] + 1 and r["owner"] == second.member for r in rows)


async def test_a_worker_that_lost_its_partition_cannot_write(kafka_rt):
    s = kafka_rt.settings
    engine = IndicatorEngine(kafka_rt.calendar, s.policy)
    tp = TopicPartition(s.kafka_topic, 0)
    stale, fresh = KafkaApplier(kafka_rt, engine, member="stale"), KafkaApplier(kafka_rt, engine, member="fresh")
    stale.owned = await stale._claim([tp])
    fresh.owned = await fresh._claim([tp])  # a rebalance gave the partition to another worker
    assert fresh.owned[tp].epoch == stale.owned[tp].epoch + 1

    body = event("F1", 2, vn(2026, 8, 3), due_at=vn(2026, 8, 10))
    record = ConsumerRecord(s.kafka_topic, 0, 0, 0, 0, b"F1", orjson.dumps(body), None, 0, 0, ())
    with pytest.raises(Fenced):
        await stale._apply_batch({tp: [record]})
    assert (await _fetch(kafka_rt, "SELECT count(*) AS n FROM events"))[0]["n"] == 0
    assert await live_counters(kafka_rt) == {}
    assert await stored_offsets(kafka_rt, s.kafka_group_id) == {0: 0}

    await fresh._apply_batch({tp: [record]})
    assert await stored_offsets(kafka_rt, s.kafka_group_id) == {0: 1}
    assert (await live_counters(kafka_rt))[("H44.03", "*", "2026-08", "received")] == 1
    # Even with the right epoch, a batch that does not start at the stored offset is refused.
    with pytest.raises(Fenced):
        await fresh._apply_batch({tp: [record]})
    assert (await live_counters(kafka_rt))[("H44.03", "*", "2026-08", "received")] == 1


async def test_a_failed_batch_takes_the_batch_behind_it_back_too(kafka_rt):
    """Two batches in flight: when one fails, the next (events stored, not committed) rolls back too,
    and both are read again from the stored offsets: every event still counts once."""
    s = kafka_rt.settings.model_copy(update={"kafka_max_batch_records": 20, "kafka_batches_in_flight": 2})
    runtime = dataclasses.replace(kafka_rt, settings=s)
    stream = make_stream(60, prefix="P", seed=5)
    await produce(s.kafka_bootstrap_servers, s.kafka_topic, as_messages(stream))
    engine = IndicatorEngine(kafka_rt.calendar, s.policy)
    apply_dossiers = engine.recompute
    calls = 0

    async def fails_once(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == 2:
            await asyncio.sleep(0.3)  # the next batch is fetched and storing its events meanwhile
            raise ConnectionError("the store went away")
        return await apply_dossiers(*args, **kwargs)

    engine.recompute = fails_once
    abandoned = _metric("dvc766_kafka_abandoned_batches_total")
    applier = KafkaApplier(runtime, engine)
    await _apply_all(runtime, applier)
    assert _metric("dvc766_kafka_abandoned_batches_total") - abandoned >= 1
    assert await live_counters(runtime) == reference_counters(runtime, stream, s.kafka_source)
    assert (await _fetch(runtime, "SELECT count(*) AS n FROM events"))[0]["n"] == len({e["event_id"] for e in stream})


async def test_a_message_in_two_batches_in_flight_counts_once(kafka_rt, monkeypatch):
    """Every message delivered twice in a row, so that many pairs straddle two batches in flight, and
    every other batch slow to store its events: the later batch must not store first (the earlier one
    would then wait in PostgreSQL for the later, which waits for the earlier to commit)."""
    s = kafka_rt.settings.model_copy(update={"kafka_max_batch_records": 15, "kafka_batches_in_flight": 2})
    runtime = dataclasses.replace(kafka_rt, settings=s)
    stream = make_stream(40, prefix="T", seed=11)
    await produce(s.kafka_bootstrap_servers, s.kafka_topic, [m for m in as_messages(stream) for _ in (1, 2)])
    store = kafka_module.store_events
    calls = 0

    async def slow_every_other(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls % 2:
            await asyncio.sleep(0.1)
        return await store(*args, **kwargs)

    monkeypatch.setattr(kafka_module, "store_events", slow_every_other)
    applier = KafkaApplier(runtime, IndicatorEngine(kafka_rt.calendar, s.policy))
    async with asyncio.timeout(60):  # the lock cycle would hang the applier, its stop included
        await _apply_all(runtime, applier, timeout=30)
    assert calls >= 10
    assert await live_counters(runtime) == reference_counters(runtime, stream, s.kafka_source)
    assert (await _fetch(runtime, "SELECT count(*) AS n FROM events"))[0]["n"] == len({e["event_id"] for e in stream})


async def test_http_ingest_in_kafka_mode_produces_before_answering(kafka_rt):
    s = kafka_rt.settings
    app = create_app(("ingest", "api"), runtime=kafka_rt)
    import httpx

    batch = [
        event("H1", 2, vn(2026, 8, 3), due_at=vn(2026, 8, 10), channel=2),
        event("H1", 9, vn(2026, 8, 5)),
        event("H2", 2, vn(2026, 8, 3), unit="H44.07"),  # outside the key's units
        {"event_id": "no-status", "dossier_code": "H3"},
    ]
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            response = await client.post("/v1/events", json=batch, headers=auth(SOURCE_KEY))
            ready = await client.get("/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (2, 2)
    assert [r["status"] for r in body["results"]] == ["accepted", "accepted", "rejected", "rejected"]
    assert body["results"][2]["reason"] == "unit_not_allowed"
    assert ready.json()["checks"]["kafka"] == "ok"

    # Acknowledged means on the topic, keyed by dossier, with the key's source.
    on_topic = await read_all(s.kafka_bootstrap_servers, s.kafka_topic, expected=2)
    assert [m.key for m in on_topic] == [b"H1", b"H1"]
    assert {dict(m.headers)[SOURCE_HEADER] for m in on_topic} == {b"igate-h44-03"}
    letters = await _fetch(kafka_rt, "SELECT reason, transport FROM dead_letters ORDER BY reason")
    assert [(r["reason"], r["transport"]) for r in letters] == [("missing_field", "http"), ("unit_not_allowed", "http")]

    applier = KafkaApplier(kafka_rt, IndicatorEngine(kafka_rt.calendar, s.policy))
    await _apply_all(kafka_rt, applier)
    rows = await _fetch(kafka_rt, "SELECT source, transport FROM events")
    assert {(r["source"], r["transport"]) for r in rows} == {("igate-h44-03", "kafka")}
    assert (await live_counters(kafka_rt))[("H44.03", "*", "2026-08", "completed")] == 1


async def test_ingest_bridges_the_upstream_topic_under_the_configured_source(kafka_rt):
    from services.ingest.kafka import UpstreamBridge
    from shared.kafka import make_producer

    s = kafka_rt.settings.model_copy(update={"kafka_upstream_topic": kafka_rt.settings.kafka_topic + "-upstream",
                                             "kafka_source": "igate-upstream"})
    rt = dataclasses.replace(kafka_rt, settings=s)
    await ensure_topics(s, [s.kafka_upstream_topic])
    stream = make_stream(10, prefix="U")
    # An upstream sender cannot claim someone else's source by setting our header.
    await produce(s.kafka_bootstrap_servers, s.kafka_upstream_topic, as_messages(stream) + [(b"U1", b"{oops")],
                  headers=[(SOURCE_HEADER, b"spoofed")])
    producer = make_producer(s)
    await producer.start()
    bridge = UpstreamBridge(rt, producer)
    await bridge.start()
    try:
        forwarded = await read_all(s.kafka_bootstrap_servers, s.kafka_topic, expected=len(stream) + 1)
    finally:
        await bridge.stop()
        await producer.stop()
    assert len(forwarded) == len(stream) + 1
    assert {dict(m.headers)[SOURCE_HEADER] for m in forwarded} == {b"igate-upstream"}

    applier = KafkaApplier(rt, IndicatorEngine(rt.calendar, s.policy))
    await _apply_all(rt, applier)
    assert await live_counters(rt) == reference_counters(rt, stream, "igate-upstream")
    letters = await _fetch(rt, "SELECT reason, source FROM dead_letters")
    assert [(r["reason"], r["source"]) for r in letters] == [("invalid_json", "igate-upstream")]


async def test_events_queued_on_the_database_path_are_applied_after_a_switch_to_kafka(kafka_rt, clean_db):
    """Accepted without Kafka (queued in the database), then the installation moves to Kafka mode."""
    from services.events.checks import Item
    from services.ingest.intake import intake

    db_mode = clean_db  # the same database, the settings without Kafka
    queued = [event("SW1", 2, vn(2026, 8, 3), due_at=vn(2026, 8, 9)), event("SW1", 4, vn(2026, 8, 4))]
    result = await intake(db_mode, [Item(i, e) for i, e in enumerate(queued)], source="igate", transport="http",
                          allowed_units=None, enqueue=True)
    assert result.accepted == 2
    app = create_app(("indicators",), runtime=kafka_rt)
    async with app.router.lifespan_context(app):
        for _ in range(100):
            if not (await _fetch(kafka_rt, "SELECT 1 FROM pending_events")):
                break
            await asyncio.sleep(0.1)
    rows = await _fetch(kafka_rt, "SELECT status FROM dossiers WHERE dossier_code = 'SW1'")
    assert [r["status"] for r in rows] == [4]
    assert await check(kafka_rt, IndicatorEngine(kafka_rt.calendar, kafka_rt.settings.policy)) == []
