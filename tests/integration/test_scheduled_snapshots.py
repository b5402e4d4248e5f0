"""The indicators worker freezes every unit's scores on the scheduled days, once, after the set time."""

import datetime as dt

from services.indicators.worker import take_scheduled_snapshot
from shared.timeutil import VIETNAM


def vn(month, day, hour):
    return dt.datetime(2026, month, day, hour, tzinfo=VIETNAM)


async def test_quarter_end_and_year_self_evaluation_snapshots(clean_db):
    runtime = clean_db
    assert await take_scheduled_snapshot(runtime, vn(9, 29, 18)) == []  # not a scheduled day
    assert await take_scheduled_snapshot(runtime, vn(9, 30, 10)) == []  # before 17:00
    taken = await take_scheduled_snapshot(runtime, vn(9, 30, 17))
    assert [(s["kind"], s["period"], s["units"]) for s in taken] == [("quarter_end", "2026-Q3", 164)]
    assert await take_scheduled_snapshot(runtime, vn(9, 30, 20)) == []  # once a day
    december = await take_scheduled_snapshot(runtime, vn(12, 19, 17))
    assert [(s["kind"], s["period"]) for s in december] == [("year_self_evaluation", "2026")]
