"""A dossier's history is its stored events, all in the partition of its home month (the month of its first
event); applying reads the whole of it from there, so the dossier row is not rewritten with it."""

from services.indicators.engine import IndicatorEngine
from services.indicators.replay import check, rebuild
from shared.db.raw import driver_connection
from tests.conftest import ADMIN_KEY, auth, drain
from tests.support.events import event, vn


async def _post(client, batch) -> None:
    response = await client.post("/v1/events", json=batch, headers=auth(ADMIN_KEY))
    assert response.status_code == 200, response.text


async def _fetch(runtime, sql: str, *args):
    async with runtime.engine.connect() as conn:
        apg = await driver_connection(conn)
        return await apg.fetch(sql, *args)


async def _partitions(runtime) -> dict[str, set[str]]:
    rows = await _fetch(runtime, "SELECT dossier_code, tableoid::regclass::text AS part FROM events")
    out: dict[str, set[str]] = {}
    for r in rows:
        out.setdefault(r["dossier_code"], set()).add(r["part"])
    return out


async def test_every_event_of_a_dossier_is_in_its_first_month_partition_and_counters_match_a_replay(app_client):
    runtime = app_client.app.state.runtime
    engine = IndicatorEngine(runtime.calendar, runtime.settings.policy)
    first = [event("H1", 2, vn(2026, 8, 31, 9), due_at=vn(2026, 9, 10), channel=2, event_id="h1-2"),
             event("H2", 2, vn(2026, 9, 4), due_at=vn(2026, 9, 6), event_id="h2-2"),
             event("H1", 4, vn(2026, 9, 4), event_id="h1-4")]
    await _post(app_client, first)
    await drain(runtime)
    # Later batches: a duplicate, an out-of-order event (before the receipt, in another month), a
    # supplement request and an end a month later.
    await _post(app_client, [event("H1", 4, vn(2026, 9, 4), event_id="h1-4"),
                             event("H2", 5, vn(2026, 9, 5), event_id="h2-5"),
                             event("H1", 9, vn(2026, 10, 12), event_id="h1-9")])
    await drain(runtime)
    await _post(app_client, [event("H1", 3, vn(2026, 7, 30, 9), event_id="h1-3"),
                             event("H2", 4, vn(2026, 10, 7), event_id="h2-4")])
    await drain(runtime)
    assert await _partitions(runtime) == {"H1": {"events_2026_08"}, "H2": {"events_2026_09"}}
    homes = {r[0]: r[1].isoformat() for r in await _fetch(runtime, "SELECT dossier_code, home_month FROM dossier_owners")}
    assert homes == {"H1": "2026-08-01", "H2": "2026-09-01"}
    # The whole history counted: H1 ended (9) after its supplement's processing (4).
    [row] = await _fetch(runtime, "SELECT status, ended_at FROM dossiers WHERE dossier_code = 'H1'")
    assert row["status"] == 9 and row["ended_at"] == vn(2026, 10, 12)
    assert await check(runtime, engine) == []


async def test_replay_then_queued_events_are_not_counted_twice(app_client):
    runtime = app_client.app.state.runtime
    engine = IndicatorEngine(runtime.calendar, runtime.settings.policy)
    await _post(app_client, [event("R1", 2, vn(2026, 8, 3), due_at=vn(2026, 8, 5), event_id="r1-2")])
    # Rebuilt while the event is still queued: applying it again derives the same state.
    await rebuild(runtime, engine)
    assert await drain(runtime) == 1
    await _post(app_client, [event("R1", 9, vn(2026, 8, 4), event_id="r1-9")])
    await drain(runtime)
    assert await check(runtime, engine) == []
    [row] = await _fetch(runtime, "SELECT status FROM dossiers WHERE dossier_code = 'R1'")
    assert row["status"] == 9
