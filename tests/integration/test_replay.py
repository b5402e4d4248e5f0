"""`dvc766 replay`: counters rebuilt from the stored events equal the live ones, and repair drift."""

from hypothesis import given, settings
from hypothesis import strategies as st

from services.indicators.engine import IndicatorEngine
from services.indicators.replay import check, rebuild, summed_increments
from services.indicators.rules.counters import stored_rows
from shared.db.raw import driver_connection
from tests.conftest import ADMIN_KEY, auth, drain
from tests.support.events import event, vn
from tests.support.strategies import contributions


async def _counters(runtime) -> dict:
    async with runtime.engine.connect() as conn:
        apg = await driver_connection(conn)
        rows = await apg.fetch("SELECT unit_code, procedure_code, period, metric, value FROM counters WHERE value <> 0")
    return {(r[0], r[1], r[2], r[3]): r[4] for r in rows}


async def test_replay_equals_live_and_repairs_drift(app_client):
    runtime = app_client.app.state.runtime
    batch = [
        event("R1", 2, vn(2026, 8, 3), due_at=vn(2026, 8, 10), channel=2),
        event("R1", 4, vn(2026, 8, 4)),
        event("R1", 9, vn(2026, 8, 5)),
        event("R2", 2, vn(2026, 8, 3), due_at=vn(2026, 8, 4), unit="H44.03", procedure="P2"),
        event("R2", 9, vn(2026, 8, 20), procedure="P2"),  # late
        event("R3", 2, vn(2026, 9, 1), due_at=vn(2027, 9, 10), channel=1),  # open, in time
        # A late event arriving after the dossier was already applied rewrites its history.
        event("R4", 9, vn(2026, 8, 12)),
    ]
    response = await app_client.post("/v1/events", json=batch, headers=auth(ADMIN_KEY))
    assert response.status_code == 200, response.text
    await drain(runtime)
    late = [event("R4", 2, vn(2026, 8, 10), due_at=vn(2026, 8, 11))]
    assert (await app_client.post("/v1/events", json=late, headers=auth(ADMIN_KEY))).status_code == 200
    await drain(runtime)

    engine = IndicatorEngine(runtime.calendar, runtime.settings.policy)
    live = await _counters(runtime)
    assert live[("H44.03", "*", "2026-08", "received")] == 3
    assert live[("H44.03", "*", "2026-08", "completed_late")] == 2  # R2 and R4
    assert await check(runtime, engine) == []

    # Drift: a counter row off by one, another missing, a dossier's contribution wiped.
    async with runtime.engine.begin() as conn:
        apg = await driver_connection(conn)
        await apg.execute("UPDATE counters SET value = value + 1 WHERE unit_code = 'H44.03' AND procedure_code = '*' "
                          "AND period = '2026-08' AND metric = 'received'")
        await apg.execute("DELETE FROM counters WHERE period = '2026-08' AND metric = 'completed'")
        await apg.execute("UPDATE dossiers SET contribution = NULL WHERE dossier_code = 'R1'")
    diffs = await check(runtime, engine)
    keys = {d[0] for d in diffs}
    assert ("H44.03", "*", "2026-08", "received") in keys
    assert ("H44.03", "*", "2026-08", "completed") in keys
    assert (("H44.03", "*", "2026-08", "received"), 3, 4) in diffs

    result = await rebuild(runtime, engine)
    assert result.events == 8 and result.dossiers == 4
    assert await check(runtime, engine) == []
    assert await _counters(runtime) == live

    # The rebuilt dossier state lets the live path carry on exactly (R1 retracted correctly).
    more = [event("R1", 10, vn(2026, 8, 6))]
    assert (await app_client.post("/v1/events", json=more, headers=auth(ADMIN_KEY))).status_code == 200
    await drain(runtime)
    assert await check(runtime, engine) == []


async def _dossiers(runtime) -> list:
    async with runtime.engine.connect() as conn:
        apg = await driver_connection(conn)
        rows = await apg.fetch("SELECT * FROM dossiers ORDER BY dossier_code")
    return [{k: v for k, v in dict(r).items() if k != "updated_at"} for r in rows]


async def test_replay_in_chunks_equals_one_chunk(app_client):
    """Chunk boundaries (one dossier, two, all at once) change neither the counters nor the dossier rows."""
    runtime = app_client.app.state.runtime
    batch = []
    for i in range(7):
        code = f"C{i}"
        unit = "H44.03" if i % 2 else "H44"
        batch.append(event(code, 2, vn(2026, 8, 3 + i), due_at=vn(2026, 8, 6 + i), unit=unit, channel=1 + i % 2,
                           procedure=f"P{i % 3}"))
        if i % 3 != 2:
            batch.append(event(code, 4, vn(2026, 8, 4 + i), unit=unit, procedure=f"P{i % 3}"))
        if i % 3 == 0:
            batch.append(event(code, 9, vn(2026, 8, 5 + 2 * i), unit=unit, procedure=f"P{i % 3}"))  # late for i>0
    batch.append(event("C9", 9, vn(2026, 8, 12)))  # no receipt: a dossier row but no counters
    response = await app_client.post("/v1/events", json=batch, headers=auth(ADMIN_KEY))
    assert response.status_code == 200, response.text
    await drain(runtime)
    engine = IndicatorEngine(runtime.calendar, runtime.settings.policy)
    now = vn(2026, 9, 1)
    live = await _counters(runtime)
    assert live[("H44.03", "*", "2026-08", "received")] == 3
    assert live[("H44", "*", "2026-08", "received")] == 4

    results = {}
    for size in (1, 2, 100):
        assert await check(runtime, engine, now, chunk_dossiers=size) == []
        result = await rebuild(runtime, engine, now, chunk_dossiers=size)
        assert (result.events, result.dossiers) == (len(batch), 8)
        results[size] = (await _counters(runtime), await _dossiers(runtime), result.counter_rows)
    assert results[1] == results[2] == results[100]
    assert results[1][0] == live and results[1][2] == len(live)
    assert len(results[1][1]) == 8


# summed_increments is pure: the sum of the contributions' stored rows.
@given(st.lists(contributions(), max_size=30))
@settings(max_examples=200, deadline=None)
def test_summed_increments_equal_the_sum_of_expansions(contributions):
    expected: dict = {}
    for contribution in contributions:
        for key, value in stored_rows(contribution).items():
            expected[key] = expected.get(key, 0) + value
    merged = summed_increments(contributions)
    assert {k: v for k, v in merged.items() if v} == {k: v for k, v in expected.items() if v}
