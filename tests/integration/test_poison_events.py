"""One odd event never stops the pipeline: times outside the window the rules compute with are refused
at intake (HTTP, the portal's payloads, Kafka) with a reason, and other dossiers' events after them count."""

from __future__ import annotations

import dataclasses
import datetime as dt

import orjson
import pytest

from services.indicators.engine import IndicatorEngine
from services.indicators.kafka import KafkaApplier
from services.indicators.replay import check, reapply, rebuild
from shared.db.partitions import ensure_partitions, month_of
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


# An optional time outside the window (NgayHenTra, NgayKetThucXuLy) is dropped and flagged instead: see
# test_portal_ingest.py.
@pytest.mark.parametrize("changes", [{"NgayTiepNhan": "99991231235959"}, {"NgayTiepNhan": "00010101000000"}])
async def test_the_portal_refuses_a_receipt_time_outside_the_window_and_counts_what_follows(app_client, changes):
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


# -- a dossier whose apply raises is parked; the rest of the batch commits ---------------------------

POISON = "POISON-1"


def _poison_rules(monkeypatch):
    """A rule that cannot compute one dossier's history once it holds an event marked ``poison`` (a
    stand-in for a bug in the rules)."""
    from services.indicators import engine as engine_module

    derive = engine_module.derive_facts

    def derive_or_raise(code, history, calendar):
        if any(e.attributes.get("poison") for e in history):
            raise ValueError(f"cannot derive {code}")
        return derive(code, history, calendar)

    monkeypatch.setattr(engine_module, "derive_facts", derive_or_raise)
    return lambda: monkeypatch.setattr(engine_module, "derive_facts", derive)


def _metric(name: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name) or 0.0


POISON_RECEIVED = event(POISON, 2, vn(2026, 8, 3), unit="H44.03", due_at=vn(2026, 8, 10))
POISON_EVENT = event(POISON, 4, vn(2026, 8, 4), unit="H44.03", attributes={"poison": True})
POISON_LATER = event(POISON, 9, vn(2026, 8, 6), unit="H44.03")


async def test_a_dossier_whose_apply_raises_is_parked_and_the_others_count(app_client, monkeypatch):
    runtime = app_client.app.state.runtime
    engine = IndicatorEngine(runtime.calendar, runtime.settings.policy)
    unpoison = _poison_rules(monkeypatch)
    first = make_stream(10, prefix="A")
    await app_client.post("/v1/events", json=[POISON_RECEIVED, *first], headers=auth(ADMIN_KEY))
    await drain(runtime)
    assert (await live_counters(runtime))[("H44.03", "*", "2026-08", "received")] >= 1

    parked_before = _metric("dvc766_dossiers_parked_total")
    second = make_stream(10, prefix="B", seed=9)
    # The poison event in the middle of a batch of other dossiers' events.
    await app_client.post("/v1/events", json=[*second[:20], POISON_EVENT, *second[20:]], headers=auth(ADMIN_KEY))
    assert await drain(runtime) == len(second) + 1  # the batch committed
    # The parked dossier is out of the counters (its receipt too); every other dossier counts.
    assert await live_counters(runtime) == reference_counters(runtime, [*first, *second], "admin")
    assert _metric("dvc766_dossiers_parked_total") - parked_before == 1
    listed = await app_client.get("/v1/parked-dossiers", headers=auth(ADMIN_KEY))
    assert listed.status_code == 200
    [item] = listed.json()["items"]
    assert (item["dossier_code"], item["unit_code"], item["events"], item["attempts"]) == (POISON, "H44.03", 2, 1)
    assert item["error"] == f"ValueError: cannot derive {POISON}"
    assert (await app_client.get("/v1/parked-dossiers?unit=H44.07", headers=auth(ADMIN_KEY))).json()["items"] == []
    assert (await _fetch(runtime, "SELECT count(*) AS n FROM dossiers WHERE dossier_code = $1", POISON))[0]["n"] == 0

    # Its next event finds it still failing (attempts 2); another dossier posted after it counts.
    third = make_stream(3, prefix="C", seed=11)
    await app_client.post("/v1/events", json=[POISON_LATER, *third], headers=auth(ADMIN_KEY))
    await drain(runtime)
    assert await live_counters(runtime) == reference_counters(runtime, [*first, *second, *third], "admin")
    [item] = (await app_client.get("/v1/parked-dossiers", headers=auth(ADMIN_KEY))).json()["items"]
    assert (item["events"], item["attempts"]) == (3, 2)

    # replay --check and replay skip it and say so; the counters they give agree with the live ones.
    skipped: dict = {}
    assert await check(runtime, engine, skipped=skipped) == []
    assert list(skipped) == [POISON]
    rebuilt = await rebuild(runtime, engine)
    assert list(rebuilt.parked) == [POISON]
    [item] = (await app_client.get("/v1/parked-dossiers", headers=auth(ADMIN_KEY))).json()["items"]
    assert (item["unit_code"], item["events"], item["attempts"]) == (POISON_RECEIVED["unit_code"], 3, 3)
    assert item["error"] == f"ValueError: cannot derive {POISON}"
    assert await live_counters(runtime) == reference_counters(runtime, [*first, *second, *third], "admin")

    # After the fix, replay --dossier applies it from its whole history and takes it off the list.
    unpoison()
    applied = await reapply(runtime, engine, [POISON])
    assert (applied.dossiers, applied.parked) == (1, {})
    everything = [POISON_RECEIVED, *first, *second, POISON_EVENT, *third, POISON_LATER]
    assert await live_counters(runtime) == reference_counters(runtime, everything, "admin")
    assert (await app_client.get("/v1/parked-dossiers", headers=auth(ADMIN_KEY))).json()["items"] == []
    assert await check(runtime, engine) == []


@pytest.mark.parametrize("column, value, error", [
    (12, "bad \x00 reason", "CharacterNotInRepertoireError"),  # text PostgreSQL cannot hold
    (9, 100_000, "OverflowError"),  # more supplement requests than the column holds
])
async def test_a_row_postgresql_refuses_parks_its_dossier_only(app_client, monkeypatch, column, value, error):
    runtime = app_client.app.state.runtime
    row_of = IndicatorEngine._dossier_row

    def refused_row(self, facts, *args):
        row = row_of(self, facts, *args)
        if facts.dossier_code == POISON:  # the whole batch's write fails once, then each row is written alone
            row = (*row[:column], value, *row[column + 1:])
        return row

    monkeypatch.setattr(IndicatorEngine, "_dossier_row", refused_row)
    stream = make_stream(8, prefix="R")
    await app_client.post("/v1/events", json=[*stream[:10], POISON_RECEIVED, *stream[10:]], headers=auth(ADMIN_KEY))
    assert await drain(runtime) == len(stream) + 1
    assert await live_counters(runtime) == reference_counters(runtime, stream, "admin")
    [item] = (await app_client.get("/v1/parked-dossiers", headers=auth(ADMIN_KEY))).json()["items"]
    assert item["dossier_code"] == POISON and item["error"].startswith(error)
    # A rebuild writes its rows the same way: it completes, skipping (and parking) that dossier only.
    rebuilt = await rebuild(runtime, IndicatorEngine(runtime.calendar, runtime.settings.policy))
    assert list(rebuilt.parked) == [POISON] and rebuilt.parked[POISON][0].startswith(error)
    assert await live_counters(runtime) == reference_counters(runtime, stream, "admin")
    [row] = await _fetch(runtime, "SELECT dossier_code, unit_code, error, events, attempts FROM parked_dossiers")
    assert (row["dossier_code"], row["unit_code"], row["events"], row["attempts"]) == (POISON, "H44.03", 1, 2)
    assert row["error"].startswith(error)


async def _store_as_an_older_version_did(runtime, bodies: list[dict]) -> None:
    """Events accepted before times were checked against the window: stored and queued as they came."""
    async with runtime.engine.begin() as conn:
        apg = await driver_connection(conn)
        for body in bodies:
            occurred = dt.datetime.fromisoformat(body["occurred_at"])
            await ensure_partitions(apg, [month_of(occurred)])
            await apg.execute("""INSERT INTO dossier_owners (dossier_code, unit_code, home_month) VALUES ($1, $2, $3)
                                 ON CONFLICT DO NOTHING""", body["dossier_code"], body["unit_code"], month_of(occurred))
            await apg.execute("INSERT INTO event_keys (source, event_id, body_hash) VALUES ('old', $1, 'h')",
                              body["event_id"])
            seq, month = await apg.fetchrow(
                """INSERT INTO events (home_month, source, event_id, dossier_code, status, occurred_at, body, transport)
                   SELECT home_month, 'old', $1, $2::text, $3, ($4::jsonb->>'occurred_at')::timestamptz, $4::jsonb, 'http'
                   FROM dossier_owners WHERE dossier_code = $2::text
                   RETURNING seq, home_month""",
                body["event_id"], body["dossier_code"], body["status"], orjson.dumps(body).decode())
            await apg.execute("INSERT INTO pending_events (seq, home_month) VALUES ($1, $2)", seq, month)


async def test_a_stored_event_the_rules_cannot_compute_parks_its_dossier_and_replay_reports_it(app_client, tmp_path):
    """An event an older version accepted (a receipt at 9999-12-31T23:59:59Z: Vietnam time overflows) no
    longer stops the queue, and the `dvc766 replay` commands complete and name its dossier."""
    import asyncio
    import os
    import sys

    runtime = app_client.app.state.runtime
    odd = dict(event("ODD-OLD", 2, vn(2026, 8, 3), unit="H44.03"), occurred_at="9999-12-31T23:59:59Z")
    await _store_as_an_older_version_did(runtime, [odd])
    stream = make_stream(6, prefix="Q")
    await app_client.post("/v1/events", json=stream, headers=auth(ADMIN_KEY))
    assert await drain(runtime) == len(stream) + 1
    assert await live_counters(runtime) == reference_counters(runtime, stream, "admin")
    [item] = (await app_client.get("/v1/parked-dossiers", headers=auth(ADMIN_KEY))).json()["items"]
    assert item["dossier_code"] == "ODD-OLD" and item["error"].startswith("OverflowError")

    env = {k: v for k, v in os.environ.items() if not k.startswith("DVC766_")}
    env.update(DVC766_DATABASE_URL=runtime.database_url, DVC766_LOG_JSON="false", DVC766_API_KEYS="{}",
               DVC766_DATA_DIR=str(tmp_path))

    async def replay(*args: str) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli", "replay", *args, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(process.communicate(), 60)
        return process.returncode, out.decode()

    code, out = await replay("--check")
    assert code == 0 and "ODD-OLD: OverflowError" in out and "live counters equal" in out, out
    code, out = await replay()
    assert code == 0 and "ODD-OLD: OverflowError" in out and "1 dossiers could not be derived" in out, out
    code, out = await replay("--dossier", "ODD-OLD")
    assert code == 1 and "0 dossiers applied, 1 still parked" in out, out
    assert await live_counters(runtime) == reference_counters(runtime, stream, "admin")


async def test_kafka_parks_a_dossier_whose_apply_raises_commits_the_offsets_and_keeps_its_events(kafka_rt,
                                                                                               monkeypatch):
    s = kafka_rt.settings
    unpoison = _poison_rules(monkeypatch)
    stream = make_stream(20, prefix="KP")
    later = make_stream(6, prefix="KL", seed=13)
    # The poison in the middle of the stream; other dossiers, in its partition and the others, after it.
    await produce(s.kafka_bootstrap_servers, s.kafka_topic,
                  as_messages([POISON_RECEIVED, *stream[:40], POISON_EVENT, *stream[40:], *later, POISON_LATER]))
    engine = IndicatorEngine(kafka_rt.calendar, s.policy)
    applier = KafkaApplier(kafka_rt, engine)
    await applier.start()
    try:
        ends = await end_offsets(s.kafka_bootstrap_servers, s.kafka_topic)
        await wait_caught_up(kafka_rt, s.kafka_group_id, ends, timeout=30)  # the offsets committed
    finally:
        await applier.stop()
    others = [*stream, *later]
    assert await live_counters(kafka_rt) == reference_counters(kafka_rt, others, s.kafka_source)
    parked = await _fetch(kafka_rt, "SELECT dossier_code, events, error FROM parked_dossiers")
    assert [(r["dossier_code"], r["events"]) for r in parked] == [(POISON, 3)]
    assert (await _fetch(kafka_rt, "SELECT count(*) AS n FROM events WHERE dossier_code = $1", POISON))[0]["n"] == 3
    skipped: dict = {}
    assert await check(kafka_rt, engine, skipped=skipped) == [] and list(skipped) == [POISON]

    unpoison()
    applied = await reapply(kafka_rt, engine, None)  # `dvc766 replay --parked`
    assert (applied.dossiers, applied.parked) == (1, {})
    everything = [POISON_RECEIVED, *stream, POISON_EVENT, *later, POISON_LATER]
    assert await live_counters(kafka_rt) == reference_counters(kafka_rt, everything, s.kafka_source)
    assert await _fetch(kafka_rt, "SELECT * FROM parked_dossiers") == []
