"""Crash safety of the Kafka path: real `dvc766 indicators` subprocesses killed with SIGKILL at random
points, two workers with rebalances, PostgreSQL connections dropped mid-batch. Final counters must
equal one clean run over the same stream (nothing lost, nothing counted twice)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random

import pytest

from services.indicators.engine import IndicatorEngine
from services.indicators.replay import check
from shared.db.raw import driver_connection
from shared.kafka import ensure_topics
from tests.support.kafka import (
    as_messages,
    end_offsets,
    kafka_env,
    kafka_settings,
    live_counters,
    make_stream,
    produce,
    reference_counters,
    stored_offsets,
    wait_caught_up,
)
from tests.support.processes import DvcProcess

pytestmark = pytest.mark.slow
STREAM_DOSSIERS = 5000  # x 4 events = 20,000 events
POISON = [b"\x00 not json", b'{"event_id": "p-1"}', b'{"event_id": "p-2", "dossier_code": "S000003", '
          b'"unit_code": "H99", "procedure_code": "P", "status": 2, "occurred_at": "2026-08-03T08:00:00+07:00"}']


@pytest.fixture
async def kafka_rt(clean_db, broker):
    # Small batches: many transactions, so the kills land mid-stream and often mid-batch.
    settings = kafka_settings(clean_db.settings, broker.bootstrap, kafka_max_batch_records=500)
    await ensure_topics(settings, [settings.kafka_topic, settings.kafka_dead_letter_topic])
    return dataclasses.replace(clean_db, settings=settings)


def start_worker(runtime, name: str, **env: str) -> DvcProcess:
    """One `dvc766 indicators` process, started."""
    env = {**kafka_env(runtime.settings, runtime.settings.database_url), "DVC766_LOG_LEVEL": "INFO", **env}
    return DvcProcess("indicators", env, name=name).start()


async def _stream(runtime) -> tuple[list[dict], dict[int, int]]:
    s = runtime.settings
    events = make_stream(STREAM_DOSSIERS)
    messages = as_messages(events)
    rng = random.Random(11)
    duplicates = rng.sample(messages, 400)  # redelivered by an at-least-once upstream
    await produce(s.kafka_bootstrap_servers, s.kafka_topic, messages[:10000])
    await produce(s.kafka_bootstrap_servers, s.kafka_topic, [(b"S000003", p) for p in POISON])
    await produce(s.kafka_bootstrap_servers, s.kafka_topic, messages[10000:] + duplicates)
    ends = await end_offsets(s.kafka_bootstrap_servers, s.kafka_topic, expected=len(messages) + 400 + 3)
    assert sum(ends.values()) == len(messages) + 400 + 3
    return events, ends


async def _progress(runtime) -> int:
    return sum((await stored_offsets(runtime, runtime.settings.kafka_group_id)).values())


async def _wait_progress(runtime, at_least: int, workers: list[DvcProcess], timeout: float = 60.0) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        done = await _progress(runtime)
        if done >= at_least:
            return done
        for w in workers:
            assert w.alive(), w.output()[-3000:]
        await asyncio.sleep(0.02)
    raise AssertionError(f"no progress to {at_least} in {timeout}s")


async def _assert_exactly_once(runtime, events: list[dict]) -> None:
    s = runtime.settings
    assert await live_counters(runtime) == reference_counters(runtime, events, s.kafka_source)
    async with runtime.engine.connect() as conn:
        apg = await driver_connection(conn)
        assert await apg.fetchval("SELECT count(*) FROM events") == len(events)
        assert await apg.fetchval("SELECT count(*) FROM dossiers") == STREAM_DOSSIERS
        letters = await apg.fetch("SELECT reason, kafka_partition, kafka_offset FROM dead_letters")
    # Each poison message cost only itself, once, however often its batch was retried.
    assert sorted(r["reason"] for r in letters) == ["invalid_json", "missing_field", "unknown_unit"]
    assert len({(r["kafka_partition"], r["kafka_offset"]) for r in letters}) == 3
    assert await check(runtime, IndicatorEngine(runtime.calendar, s.policy)) == []


async def test_sigkill_at_random_points_then_restart(kafka_rt):
    events, ends = await _stream(kafka_rt)
    total = sum(ends.values())
    rng = random.Random(os.environ.get("DVC766_CRASH_SEED", "766"))
    kill_points = sorted(rng.sample(range(total // 10, total * 9 // 10), 3))
    worker = start_worker(kafka_rt, "w1")
    kills = []
    for point in kill_points:
        reached = await _wait_progress(kafka_rt, point, [worker])
        worker.kill()
        kills.append(reached)
        assert reached < total  # killed while the stream was still being consumed
        worker = start_worker(kafka_rt, "w1")
    await wait_caught_up(kafka_rt, kafka_rt.settings.kafka_group_id, ends, timeout=90, alive=worker.alive)
    assert (await worker.ready()).json()["checks"] == {"database": "ok", "indicators": "ok", "kafka": "ok"}
    assert "kafka applier stopped" in worker.terminate()  # a graceful stop
    assert len(kills) == 3, kills
    await _assert_exactly_once(kafka_rt, events)


async def test_two_workers_rebalance_and_a_kill(kafka_rt):
    events, ends = await _stream(kafka_rt)
    total = sum(ends.values())
    # One worker applies one batch at a time, the other keeps two in flight (the default).
    first = start_worker(kafka_rt, "a", DVC766_KAFKA_BATCHES_IN_FLIGHT="1")
    await _wait_progress(kafka_rt, total // 5, [first])
    second = start_worker(kafka_rt, "b")  # the group rebalances
    await _wait_progress(kafka_rt, total // 2, [first, second])
    owners = None
    async with kafka_rt.engine.connect() as conn:
        apg = await driver_connection(conn)
        owners = {r["owner"] for r in await apg.fetch("SELECT owner FROM kafka_offsets")}
    first.kill()  # mid-stream: its partitions move to the survivor after the session timeout
    await wait_caught_up(kafka_rt, kafka_rt.settings.kafka_group_id, ends, timeout=90, alive=second.alive)
    await second.ready()
    assert "kafka applier stopped" in second.terminate()
    assert owners  # offsets were stored by the group's members
    await _assert_exactly_once(kafka_rt, events)


async def test_database_connections_dropped_mid_batch(kafka_rt):
    events, ends = await _stream(kafka_rt)
    total = sum(ends.values())
    worker = start_worker(kafka_rt, "w")
    dropped = 0
    for fraction in (0.2, 0.45, 0.7):
        await _wait_progress(kafka_rt, int(total * fraction), [worker])
        # Batches are short now: drop the worker's connections a few times at random points so that
        # some drops land inside a batch in flight.
        for _ in range(5):
            await asyncio.sleep(random.random() * 0.05)
            async with kafka_rt.engine.connect() as conn:
                apg = await driver_connection(conn)
                dropped += await apg.fetchval(
                    """SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
                       WHERE datname = current_database() AND pid <> pg_backend_pid()
                         AND application_name = 'dvc766' AND backend_type = 'client backend'""")
            await kafka_rt.engine.dispose()  # our own pooled connections were dropped as well
    await wait_caught_up(kafka_rt, kafka_rt.settings.kafka_group_id, ends, timeout=90, alive=worker.alive)
    await worker.ready()
    log = worker.terminate()
    assert "kafka applier stopped" in log
    assert dropped >= 3 and "applying a kafka batch failed" in log  # some drops hit a batch in flight
    await _assert_exactly_once(kafka_rt, events)


async def test_driver_statements_roll_back_with_the_batch(clean_db):
    """The whole batch is one transaction: raw asyncpg statements roll back with it."""
    with pytest.raises(RuntimeError):
        async with clean_db.engine.begin() as conn:
            apg = await driver_connection(conn)
            await apg.execute("INSERT INTO kafka_offsets (group_id, topic, partition, next_offset) "
                              "VALUES ('g', 't', 0, 5)")
            raise RuntimeError("crash mid-batch")
    async with clean_db.engine.connect() as conn:
        assert await (await driver_connection(conn)).fetchval("SELECT count(*) FROM kafka_offsets") == 0


