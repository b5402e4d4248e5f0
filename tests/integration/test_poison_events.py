"""One odd event never stops the pipeline: times outside the window the rules compute with are refused
at intake (HTTP, the portal's payloads, Kafka) with a reason, and other dossiers' events after them count."""

from __future__ import annotations

import dataclasses

import orjson
import pytest

from services.indicators.engine import IndicatorEngine
from services.indicators.kafka import KafkaApplier
from services.indicators.replay import check
from shared.db.raw import driver_connection
from shared.kafka import ensure_topics
from tests.conftest import ADMIN_KEY, SOURCE_KEY, auth, drain
from tests.support.events import event, vn
from tests.support.kafka import (
    as_messages,
    end_offsets,
    kafka_settings,
    live_counters,
    make_stream,
    produce,
    reference_counters,
    wait_caught_up,
)
from tests.support.portal import Story, Supplement, snapshot_call

# Each a status-2 event of dossier "ODD" with one time outside the window.
BAD_TIMES = [
    {"occurred_at": "0001-01-01T00:00:00+14:00"},
    {"occurred_at": "9999-12-31T23:59:59-12:00"},
    {"occurred_at": "9999-12-31T23:59:59+07:00"},
    {"due_at": "9999-12-31T23:59:59-12:00"},
    {"due_at": "0001-01-01T00:00:00+14:00"},
    {"step": {"name": "Thụ lý", "due_at": "9999-12-31T23:59:59Z"}},
]
# Inside the window but outside the years the calendar once held (2015-2040): counted like any other.
FAR_DOSSIERS = [
    event("OLD-1", 2, vn(2012, 3, 1), unit="H44.03", due_at=vn(2012, 3, 8)),
    event("OLD-1", 9, vn(2012, 3, 6), unit="H44.03"),
    event("FAR-1", 2, vn(2045, 3, 1), unit="H44.03", due_at=vn(2045, 3, 8)),
    event("FAR-1", 5, vn(2045, 3, 2), unit="H44.03"),
    event("FAR-1", 4, vn(2046, 1, 2), unit="H44.03", due_at=vn(2046, 1, 20)),  # answered the next year
    event("LATE-1", 2, vn(2026, 8, 3), unit="H44.03", due_at=vn(2026, 8, 10)),
    event("LATE-1", 5, vn(2026, 8, 4), unit="H44.03"),
    event("LATE-1", 4, vn(2041, 1, 2), unit="H44.03"),  # a supplement answered in 2041
]


def _bad_events() -> list[dict]:
    return [dict(event("ODD", 2, vn(2026, 8, 3), unit="H44.03", due_at=vn(2026, 8, 10)), **bad) for bad in BAD_TIMES]


async def _fetch(runtime, sql, *args):
    async with runtime.engine.connect() as conn:
        return await (await driver_connection(conn)).fetch(sql, *args)


async def test_http_refuses_each_time_outside_the_window_and_counts_what_follows(app_client):
    runtime = app_client.app.state.runtime
    bad = _bad_events()
    response = await app_client.post("/v1/events", json=bad, headers=auth(ADMIN_KEY))
    assert response.status_code == 422, response.text
    results = response.json()["results"]
    assert [r["reason"] for r in results] == ["out_of_range_time"] * len(bad)
    assert [r["field"] for r in results] == ["occurred_at"] * 3 + ["due_at"] * 2 + ["step.due_at"]
    # One bad event in a batch costs only itself.
    mixed = await app_client.post("/v1/events", json=[bad[0], *FAR_DOSSIERS[:2]], headers=auth(ADMIN_KEY))
    assert mixed.status_code == 200 and mixed.json()["accepted"] == 2 and mixed.json()["rejected"] == 1
    stream = make_stream(12, prefix="H")
    later = await app_client.post("/v1/events", json=[*stream, *FAR_DOSSIERS[2:]], headers=auth(ADMIN_KEY))
    assert later.status_code == 200 and later.json()["rejected"] == 0
    await drain(runtime)
    accepted = [*FAR_DOSSIERS, *stream]
    assert await live_counters(runtime) == reference_counters(runtime, accepted, "admin")
    live = await live_counters(runtime)
    assert live[("H44.03", "*", "2012-03", "received")] == 1 and live[("H44.03", "*", "2045-03", "received")] == 1
    letters = await _fetch(runtime, "SELECT reason, transport FROM dead_letters")
    assert [(r["reason"], r["transport"]) for r in letters] == [("out_of_range_time", "http")] * (len(bad) + 1)
    assert (await _fetch(runtime, "SELECT count(*) AS n FROM events WHERE dossier_code = 'ODD'"))[0]["n"] == 0
    assert await check(runtime, IndicatorEngine(runtime.calendar, runtime.settings.policy)) == []


def _snapshot(code: str, **changes) -> dict:
    snapshot = Story(code, "1.001", vn(2026, 8, 3), vn(2026, 8, 10),
                     supplements=[Supplement(vn(2026, 8, 4), vn(2026, 8, 5), vn(2026, 8, 10), vn(2026, 8, 12))],
                     ended=(9, vn(2026, 8, 11))).snapshot_at(vn(2026, 8, 31))
    snapshot.update(changes)
    return snapshot


@pytest.mark.parametrize("changes", [{"NgayTiepNhan": "99991231235959"}, {"NgayTiepNhan": "00010101000000"},
                                     {"NgayHenTra": "99991231235959"}, {"NgayKetThucXuLy": "21000101070000"}])
async def test_the_portal_refuses_each_time_outside_the_window_and_counts_what_follows(app_client, changes):
    runtime = app_client.app.state.runtime
    field = next(iter(changes))
    response = await app_client.post("/v1/dvcqg", json=snapshot_call("H44.03", [_snapshot("HS-ODD", **changes),
                                                                              _snapshot("HS-1")]),
                                     headers=auth(SOURCE_KEY))
    assert response.status_code == 200, response.text
    odd, good = response.json()["results"]
    assert (odd["status"], odd["reason"], odd["field"]) == ("rejected", "out_of_range_time", field)
    assert good["status"] == "accepted"
    after = await app_client.post("/v1/dvcqg", json=snapshot_call("H44.03", [_snapshot("HS-2")]),
                                  headers=auth(SOURCE_KEY))
    assert after.json()["error_code"] == 0
    await drain(runtime)
    live = await live_counters(runtime)
    assert live[("H44.03", "*", "2026-08", "received")] == 2  # HS-1 and HS-2, not HS-ODD
    letters = await _fetch(runtime, "SELECT reason, transport FROM dead_letters")
    assert [(r["reason"], r["transport"]) for r in letters] == [("out_of_range_time", "dvcqg")]


@pytest.fixture
async def kafka_rt(clean_db, broker):
    settings = kafka_settings(clean_db.settings, broker.bootstrap, partitions=2)
    await ensure_topics(settings, [settings.kafka_topic, settings.kafka_dead_letter_topic])
    return dataclasses.replace(clean_db, settings=settings)


async def test_kafka_dead_letters_each_time_outside_the_window_and_counts_what_follows(kafka_rt):
    s = kafka_rt.settings
    bad = _bad_events()
    stream = make_stream(16, prefix="K")
    # The odd events first, in the partition of dossier "ODD" and before everything else.
    await produce(s.kafka_bootstrap_servers, s.kafka_topic, [(b"ODD", orjson.dumps(b)) for b in bad])
    await produce(s.kafka_bootstrap_servers, s.kafka_topic, as_messages([*FAR_DOSSIERS, *stream]))
    applier = KafkaApplier(kafka_rt, IndicatorEngine(kafka_rt.calendar, s.policy))
    await applier.start()
    try:
        await wait_caught_up(kafka_rt, s.kafka_group_id, await end_offsets(s.kafka_bootstrap_servers, s.kafka_topic),
                             timeout=30)
    finally:
        await applier.stop()
    assert await live_counters(kafka_rt) == reference_counters(kafka_rt, [*FAR_DOSSIERS, *stream], s.kafka_source)
    letters = await _fetch(kafka_rt, "SELECT reason, transport FROM dead_letters")
    assert [(r["reason"], r["transport"]) for r in letters] == [("out_of_range_time", "kafka")] * len(bad)
    assert await check(kafka_rt, applier.engine) == []
