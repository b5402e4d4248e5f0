"""Each dossier keeps its applied history in its row; applying reads it instead of every stored event."""

import orjson

from services.indicators.engine import IndicatorEngine, event_from_compact
from services.indicators.replay import check, rebuild
from shared.db.raw import driver_connection
from tests.conftest import ADMIN_KEY, auth, drain
from tests.support.events import event, vn


async def _post(client, batch) -> None:
    response = await client.post("/v1/events", json=batch, headers=auth(ADMIN_KEY))
    assert response.status_code == 200, response.text


async def _histories(runtime) -> dict[str, list[tuple[int, int]]]:
    async with runtime.engine.connect() as conn:
        apg = await driver_connection(conn)
        rows = await apg.fetch("SELECT dossier_code, history FROM dossiers ORDER BY dossier_code")
    return {r["dossier_code"]: None if r["history"] is None else
            sorted((e.seq, e.status) for e in map(event_from_compact, orjson.loads(r["history"]))) for r in rows}


async def _stored(runtime) -> dict[str, list[tuple[int, int]]]:
    async with runtime.engine.connect() as conn:
        apg = await driver_connection(conn)
        rows = await apg.fetch("SELECT dossier_code, seq, status FROM events ORDER BY dossier_code, seq")
    out: dict = {}
    for r in rows:
        out.setdefault(r["dossier_code"], []).append((r["seq"], r["status"]))
    return out


async def test_history_kept_in_the_row_is_every_applied_event_and_counters_match_a_replay(app_client):
    runtime = app_client.app.state.runtime
    engine = IndicatorEngine(runtime.calendar, runtime.settings.policy)
    first = [event("H1", 2, vn(2026, 8, 3), due_at=vn(2026, 8, 10), channel=2, event_id="h1-2"),
             event("H2", 2, vn(2026, 8, 4), due_at=vn(2026, 8, 6), event_id="h2-2"),
             event("H1", 4, vn(2026, 8, 4), event_id="h1-4")]
    await _post(app_client, first)
    await drain(runtime)
    # Later batches: a duplicate, an out-of-order event, a supplement request and an end.
    await _post(app_client, [event("H1", 4, vn(2026, 8, 4), event_id="h1-4"),
                             event("H2", 5, vn(2026, 8, 5), event_id="h2-5"),
                             event("H1", 9, vn(2026, 8, 12), event_id="h1-9")])
    await drain(runtime)
    await _post(app_client, [event("H1", 3, vn(2026, 8, 3, 9), event_id="h1-3"),
                             event("H2", 4, vn(2026, 8, 7), event_id="h2-4")])
    await drain(runtime)
    assert await _histories(runtime) == await _stored(runtime)
    assert await check(runtime, engine) == []


async def test_a_row_without_history_is_read_from_the_events_once_and_filled(app_client):
    runtime = app_client.app.state.runtime
    engine = IndicatorEngine(runtime.calendar, runtime.settings.policy)
    await _post(app_client, [event("L1", 2, vn(2026, 8, 3), due_at=vn(2026, 8, 5), event_id="l1-2"),
                             event("L1", 4, vn(2026, 8, 4), event_id="l1-4")])
    await drain(runtime)
    async with runtime.engine.begin() as conn:  # as rows written before migration 0006 are
        apg = await driver_connection(conn)
        await apg.execute("UPDATE dossiers SET history = NULL")
    await _post(app_client, [event("L1", 9, vn(2026, 8, 9), event_id="l1-9")])
    await drain(runtime)
    histories = await _histories(runtime)
    assert [status for _, status in histories["L1"]] == [2, 4, 9]
    assert histories == await _stored(runtime)
    assert await check(runtime, engine) == []


async def test_replay_writes_the_histories_and_later_events_are_not_counted_twice(app_client):
    runtime = app_client.app.state.runtime
    engine = IndicatorEngine(runtime.calendar, runtime.settings.policy)
    await _post(app_client, [event("R1", 2, vn(2026, 8, 3), due_at=vn(2026, 8, 5), event_id="r1-2")])
    # Rebuilt while the event is still queued: the history already holds it when the worker applies it.
    await rebuild(runtime, engine)
    assert await drain(runtime) == 1
    await _post(app_client, [event("R1", 9, vn(2026, 8, 4), event_id="r1-9")])
    await drain(runtime)
    assert await _histories(runtime) == await _stored(runtime)
    assert await check(runtime, engine) == []
