"""Monthly partitions, retention and archiving: partitions exist before events arrive, `dvc766 archive`
exports a month and drops it, replay reads it back to the same counters, and an event for an archived
month is refused with a reason and dead-lettered, never stored or lost silently."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import gzip
import json
import os
import sys

import orjson
import pytest

from services.indicators.archive import ArchiveError, archive_month, retention_cutoff
from services.indicators.engine import IndicatorEngine
from services.indicators.replay import check, rebuild
from services.indicators.kafka import KafkaApplier
from services.indicators.worker import prepare_partitions
from shared.db.partitions import add_months, ensure_partitions, existing_partitions
from shared.db.raw import driver_connection
from shared.kafka import ensure_topics
from shared.timeutil import utcnow
from tests.conftest import ADMIN_KEY, auth, drain
from tests.support.events import event, vn
from tests.support.kafka import as_messages, end_offsets, kafka_settings, live_counters, produce, wait_caught_up


@pytest.fixture(autouse=True)
async def no_partitions(clean_db):
    """Each test starts with no partition of events (other tests' months would be archived too)."""
    from shared.db import partitions

    async with clean_db.engine.begin() as conn:
        apg = await driver_connection(conn)
        for name in (await existing_partitions(apg)).values():
            await apg.execute(f"DROP TABLE {name}")
    partitions._known.clear()
    yield


async def _fetch(runtime, sql: str, *args):
    async with runtime.engine.connect() as conn:
        apg = await driver_connection(conn)
        return await apg.fetch(sql, *args)


async def _partitions(runtime) -> set[str]:
    async with runtime.engine.connect() as conn:
        return {f"{m:%Y-%m}" for m in await existing_partitions(await driver_connection(conn))}


async def _post(client, batch) -> dict:
    response = await client.post("/v1/events", json=batch, headers=auth(ADMIN_KEY))
    assert response.status_code == 200, response.text
    return response.json()


async def _dossiers(runtime) -> list[tuple]:
    rows = await _fetch(runtime, """SELECT dossier_code, unit_code, status, received_at, ended_at, overdue_fixed,
                                           contribution FROM dossiers ORDER BY dossier_code""")
    return [tuple(r) for r in rows]


def _cli_env(runtime, tmp_path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DVC766_")}
    env.update(DVC766_DATABASE_URL=runtime.database_url, DVC766_LOG_JSON="false", DVC766_API_KEYS="{}",
               DVC766_DATA_DIR=str(tmp_path / "data"), **extra)
    return env


async def _cli(env: dict, *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(process.communicate(), 120)
    return process.returncode, out.decode()


# Two dossiers received in January 2024 (one ended in February: its events all stay in January's
# partition), one in February 2024, and one this year.
OLD = [
    event("A1", 2, vn(2024, 1, 10), due_at=vn(2024, 1, 20), event_id="a1-2"),
    event("A1", 4, vn(2024, 1, 11), event_id="a1-4"),
    event("A1", 9, vn(2024, 2, 2), event_id="a1-9"),  # late: February, still January's dossier
    event("A2", 2, vn(2024, 1, 15), due_at=vn(2024, 1, 16), event_id="a2-2"),
    event("B1", 2, vn(2024, 2, 5), due_at=vn(2024, 2, 20), event_id="b1-2"),
    event("B1", 9, vn(2024, 2, 6), event_id="b1-9"),
    event("C1", 2, vn(2026, 8, 3), due_at=vn(2026, 8, 20), event_id="c1-2"),
]


async def test_the_sweep_creates_this_month_and_the_next_ones_and_there_is_no_default_partition(clean_db):
    runtime = clean_db
    await prepare_partitions(runtime)
    this = dt.date(utcnow().year, utcnow().month, 1)
    expected = {f"{add_months(this, i):%Y-%m}" for i in range(runtime.settings.partitions_ahead_months + 1)}
    assert expected <= await _partitions(runtime)
    bounds = await _fetch(runtime, """SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i
                                      JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'events'::regclass""")
    assert bounds and not any("DEFAULT" in r[0] for r in bounds)


async def test_an_event_for_an_older_month_gets_its_partition_on_arrival(app_client):
    runtime = app_client.app.state.runtime
    assert "2021-03" not in await _partitions(runtime)
    result = await _post(app_client, [event("OLD-1", 2, vn(2021, 3, 4), event_id="old-1")])
    assert result["accepted"] == 1
    assert "2021-03" in await _partitions(runtime)
    [row] = await _fetch(runtime, "SELECT tableoid::regclass::text FROM events WHERE event_id = 'old-1'")
    assert row[0] == "events_2021_03"


async def test_archive_drops_the_month_and_replay_from_database_and_files_gives_the_same_counters(app_client,
                                                                                              tmp_path):
    runtime = app_client.app.state.runtime
    engine = IndicatorEngine(runtime.calendar, runtime.settings.policy)
    await _post(app_client, OLD)
    await drain(runtime)
    counters_before, dossiers_before = await live_counters(runtime), await _dossiers(runtime)
    assert counters_before and len(dossiers_before) == 4

    # The operator's command: January 2024 only (older than the default retention).
    archive = tmp_path / "archive"
    env = _cli_env(runtime, tmp_path, DVC766_ARCHIVE_DIR=str(archive))
    code, out = await _cli(env, "archive", "--before", "2024-02")
    assert code == 0, out
    assert "2024-01: 4 events of 2 dossiers" in out, out
    assert "2024-01" not in await _partitions(runtime) and "2024-02" in await _partitions(runtime)
    [row] = await _fetch(runtime, "SELECT month, events, dossiers, file, sha256 FROM archived_months")
    assert (row["month"], row["events"], row["dossiers"]) == (dt.date(2024, 1, 1), 4, 2)
    manifest = json.loads((archive / "events-2024-01.json").read_text())
    assert (manifest["events"], manifest["dossiers"], manifest["sha256"], manifest["file"]) == (
        4, 2, row["sha256"], "events-2024-01.ndjson.gz")
    with gzip.open(archive / manifest["file"]) as f:
        lines = [orjson.loads(line) for line in f]
    assert [(line["body"]["dossier_code"], line["event_id"]) for line in lines] == [
        ("A1", "a1-2"), ("A1", "a1-4"), ("A1", "a1-9"), ("A2", "a2-2")]
    # Its keys left the registry with it; the counters and the dossier rows did not move.
    assert [r[0] for r in await _fetch(runtime, "SELECT event_id FROM event_keys ORDER BY 1")] == [
        "b1-2", "b1-9", "c1-2"]
    assert await live_counters(runtime) == counters_before
    assert await _dossiers(runtime) == dossiers_before

    # Replay reads the month back from its file: the same counters, checked and rebuilt.
    assert await check(runtime, engine, archive=archive) == []
    rebuilt = await rebuild(runtime, engine, archive=archive)
    assert rebuilt.events == len(OLD) and rebuilt.dossiers == 4
    assert await live_counters(runtime) == counters_before
    assert await _dossiers(runtime) == dossiers_before
    code, out = await _cli(env, "replay", "--check")
    assert code == 0 and "live counters equal" in out, out

    # Without the files, replay refuses (it would count without the month) and writes nothing.
    with pytest.raises(ArchiveError, match="2024-01"):
        await rebuild(runtime, engine, archive=tmp_path / "elsewhere")
    assert await live_counters(runtime) == counters_before
    code, out = await _cli(_cli_env(runtime, tmp_path, DVC766_ARCHIVE_DIR=str(tmp_path / "elsewhere")), "replay")
    assert code == 2 and "2024-01" in out, out
    (archive / manifest["file"]).write_bytes(gzip.compress(b""))  # a changed file is refused too
    with pytest.raises(ArchiveError, match="not the file archived"):
        await check(runtime, engine, archive=archive)


async def test_an_event_for_an_archived_month_is_refused_with_a_reason_and_dead_lettered(app_client, tmp_path):
    runtime = app_client.app.state.runtime
    await _post(app_client, OLD)
    await drain(runtime)
    await archive_month(runtime, dt.date(2024, 1, 1), tmp_path)
    counters = await live_counters(runtime)
    late = [
        event("A2", 9, vn(2026, 8, 10), event_id="a2-9"),  # a new event of an archived dossier (a live month)
        event("A1", 4, vn(2024, 1, 11), event_id="a1-4"),  # a redelivery of an archived event
        event("N1", 2, vn(2024, 1, 20), event_id="n1-2"),  # a new dossier whose first event is in that month
        event("C1", 9, vn(2026, 8, 9), event_id="c1-9"),  # and a live one: accepted
    ]
    result = await _post(app_client, late)
    statuses = [(r["event_id"], r["status"], r.get("reason")) for r in result["results"]]
    assert statuses == [("a2-9", "rejected", "dossier_archived"), ("a1-4", "rejected", "dossier_archived"),
                        ("n1-2", "rejected", "dossier_archived"), ("c1-9", "accepted", None)]
    letters = await _fetch(runtime, "SELECT event_id, reason, raw FROM dead_letters ORDER BY event_id")
    assert [(r["event_id"], r["reason"]) for r in letters] == [
        ("a1-4", "dossier_archived"), ("a2-9", "dossier_archived"), ("n1-2", "dossier_archived")]
    assert json.loads(letters[1]["raw"])["status"] == 9  # the whole event is kept
    assert await drain(runtime) == 1
    moved = await live_counters(runtime)
    assert moved != counters  # C1's end counted
    assert {k: v for k, v in moved.items() if k[2].startswith("2024")} == {
        k: v for k, v in counters.items() if k[2].startswith("2024")}  # the archived months' counts stand
    # No partition comes back for the archived month, even asked for.
    async with runtime.engine.begin() as conn:
        assert await ensure_partitions(await driver_connection(conn), [dt.date(2024, 1, 1)]) == []
    assert "2024-01" not in await _partitions(runtime)
    [row] = await _fetch(runtime, "SELECT count(*) FROM events WHERE dossier_code IN ('A1', 'A2', 'N1')")
    assert row[0] == 0


async def test_the_retention_decides_what_may_be_archived(app_client, tmp_path):
    runtime = app_client.app.state.runtime
    await _post(app_client, OLD)
    await drain(runtime)
    today = utcnow().date()
    cutoff = retention_cutoff(today, 24)
    assert cutoff == add_months(dt.date(today.year, today.month, 1), -24)
    env = _cli_env(runtime, tmp_path, DVC766_ARCHIVE_DIR=str(tmp_path / "archive"), DVC766_RETENTION_MONTHS="24")
    # A month within the retention is refused, nothing is touched.
    code, out = await _cli(env, "archive", "--before", f"{add_months(cutoff, 1):%Y-%m}")
    assert code == 2 and "within the retention (24 months" in out, out
    # By default: every month older than the retention (here January and February 2024, not August 2026).
    code, out = await _cli(env, "archive", "--dry-run")
    assert code == 0 and "2024-01, 2024-02" in out and "2026-08" not in out, out
    assert {"2024-01", "2024-02"} <= await _partitions(runtime)
    # A longer retention keeps them.
    code, out = await _cli({**env, "DVC766_RETENTION_MONTHS": "60"}, "archive", "--dry-run")
    assert code == 0 and "0 months" in out, out
    code, out = await _cli(env, "archive")
    assert code == 0 and "2024-01: 4 events" in out and "2024-02: 2 events" in out, out
    assert not {"2024-01", "2024-02"} & await _partitions(runtime)


async def test_a_month_with_events_still_queued_is_not_archived(app_client, tmp_path):
    runtime = app_client.app.state.runtime
    await _post(app_client, OLD)  # not applied yet
    with pytest.raises(ArchiveError, match="still queued"):
        await archive_month(runtime, dt.date(2024, 1, 1), tmp_path)
    assert "2024-01" in await _partitions(runtime)
    assert await _fetch(runtime, "SELECT * FROM archived_months") == []
    assert await drain(runtime) == len(OLD)
    done = await archive_month(runtime, dt.date(2024, 1, 1), tmp_path)
    assert (done.events, done.dossiers) == (4, 2)


async def test_concurrent_batches_of_a_new_month_create_its_partition_once(app_client):
    runtime = app_client.app.state.runtime
    batches = [[event(f"NEW-{i}-{j}", 2, vn(2019, 5, 3 + j), event_id=f"new-{i}-{j}") for j in range(5)]
               for i in range(4)]
    results = await asyncio.gather(*(_post(app_client, batch) for batch in batches))
    assert [r["accepted"] for r in results] == [5, 5, 5, 5]
    assert "2019-05" in await _partitions(runtime)
    [row] = await _fetch(runtime, "SELECT count(*) FROM events_2019_05")
    assert row[0] == 20


async def test_a_new_partition_does_not_wait_for_batches_writing_in_events(app_client):
    """A batch still open in events (its transaction not committed) does not hold up the partition of
    another month: creating one must not queue behind writers, or two batches that wait on each other's
    event keys and the creator deadlock."""
    runtime = app_client.app.state.runtime
    await _post(app_client, [event("OPEN-1", 2, vn(2026, 8, 3), event_id="open-1")])
    async with runtime.engine.begin() as writing:
        apg = await driver_connection(writing)
        await apg.execute("UPDATE events SET transport = transport WHERE event_id = 'open-1'")  # holds events
        async with runtime.engine.begin() as creating:
            other = await driver_connection(creating)
            await other.execute("SET LOCAL lock_timeout = '2s'")
            assert await ensure_partitions(other, [dt.date(2018, 2, 1)]) == [dt.date(2018, 2, 1)]
    assert "2018-02" in await _partitions(runtime)


@pytest.fixture
async def kafka_rt(clean_db, broker):
    settings = kafka_settings(clean_db.settings, broker.bootstrap)
    await ensure_topics(settings, [settings.kafka_topic, settings.kafka_dead_letter_topic])
    return dataclasses.replace(clean_db, settings=settings)


async def _apply_topic(runtime) -> None:
    s = runtime.settings
    applier = KafkaApplier(runtime, IndicatorEngine(runtime.calendar, s.policy))
    await applier.start()
    try:
        await wait_caught_up(runtime, s.kafka_group_id, await end_offsets(s.kafka_bootstrap_servers, s.kafka_topic),
                             timeout=60)
    finally:
        await applier.stop()


async def test_a_kafka_event_for_an_archived_month_is_dead_lettered_and_the_stream_goes_on(kafka_rt, tmp_path):
    s = kafka_rt.settings
    await produce(s.kafka_bootstrap_servers, s.kafka_topic, as_messages(OLD))
    await _apply_topic(kafka_rt)
    await archive_month(kafka_rt, dt.date(2024, 1, 1), tmp_path)
    counters = await live_counters(kafka_rt)
    await produce(s.kafka_bootstrap_servers, s.kafka_topic, as_messages([
        event("A2", 9, vn(2026, 8, 10), event_id="a2-9"), event("C1", 9, vn(2026, 8, 9), event_id="c1-9")]))
    await _apply_topic(kafka_rt)
    letters = await _fetch(kafka_rt, "SELECT event_id, reason, kafka_topic FROM dead_letters")
    assert [tuple(r) for r in letters] == [("a2-9", "dossier_archived", s.kafka_topic)]
    stored = await _fetch(kafka_rt, "SELECT event_id FROM events WHERE dossier_code IN ('A2', 'C1') ORDER BY 1")
    assert [r[0] for r in stored] == ["c1-2", "c1-9"]
    assert await live_counters(kafka_rt) != counters  # C1's end counted


async def test_an_archived_dossier_waiting_on_a_step_deadline_is_left_as_it_is_by_the_sweep(app_client, tmp_path):
    runtime = app_client.app.state.runtime
    engine = IndicatorEngine(runtime.calendar, runtime.settings.policy)
    step = {"name": "Thẩm định", "id": "S1-td", "started_at": vn(2024, 1, 11).isoformat(),
            "due_at": vn(2030, 1, 2).isoformat(), "open": True}
    await _post(app_client, [event("S1", 2, vn(2024, 1, 10), due_at=vn(2024, 1, 20), event_id="s1-2"),
                             event("S1", 4, vn(2024, 1, 11), step=step, event_id="s1-4")])
    await drain(runtime)
    before = await _fetch(runtime, "SELECT step_deadline, overdue_steps, contribution FROM dossiers")
    assert before[0]["step_deadline"] == vn(2030, 1, 2)
    await archive_month(runtime, dt.date(2024, 1, 1), tmp_path)
    async with runtime.engine.begin() as conn:  # its events are in a file: nothing to derive it from, no busy loop
        assert await engine.sweep_open_steps(await driver_connection(conn), vn(2030, 1, 3)) == 0
    assert await _fetch(runtime, "SELECT step_deadline, overdue_steps, contribution FROM dossiers") == before


async def test_a_month_with_a_parked_dossier_is_not_archived(app_client, tmp_path):
    runtime = app_client.app.state.runtime
    await _post(app_client, OLD)
    await drain(runtime)
    async with runtime.engine.begin() as conn:  # as a dossier the rules could not derive is parked
        await (await driver_connection(conn)).execute(
            "INSERT INTO parked_dossiers (dossier_code, unit_code, error, events) VALUES ('A2', 'H44.03', 'E', 1)")
    with pytest.raises(ArchiveError, match=r"parked dossiers of this month \(A2"):
        await archive_month(runtime, dt.date(2024, 1, 1), tmp_path)
    assert "2024-01" in await _partitions(runtime)
    assert await _fetch(runtime, "SELECT * FROM archived_months") == []
