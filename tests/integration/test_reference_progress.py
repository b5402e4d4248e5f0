"""Reproduce the portal's published 2.1 (Tiến độ giải quyết) for Phú Thọ, August 2026, unit by unit.

Every dossier goes through the real path: validated, stored, queued and applied by the worker's
own function; the scores are read from the API.
"""

import csv
import datetime as dt

import pytest

from tests.conftest import READER_KEY, REFERENCE_DIR, auth
from tests.support.events import event
from tests.support.reference import ingest_reference

pytestmark = pytest.mark.slow

AUGUST = dt.datetime(2026, 8, 1, 8, 0, tzinfo=dt.timezone(dt.timedelta(hours=7)))


def progress_rows() -> list[dict]:
    with open(REFERENCE_DIR / "portal-2026-08-progress.csv", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def dossier_events(unit: str, received: int, on_time: int) -> list[dict]:
    """One status-2 event per dossier: open on 31 August, on time iff due after the month's end."""
    out = []
    for i in range(received):
        received_at = AUGUST + dt.timedelta(days=i % 28, minutes=i % 480)
        due = received_at + (dt.timedelta(days=40) if i < on_time else dt.timedelta(days=1))
        out.append(event(f"{unit}-{i:06d}", 2, received_at, unit=unit, procedure=f"P{i % 7}",
                         event_id=f"{unit}-{i:06d}-2", due_at=due, channel=1 + i % 2))
    return out


async def test_portal_progress_scores_for_every_unit(app_client):
    runtime = app_client.app.state.runtime
    rows = progress_rows()
    children = [r for r in rows if r["level"] != "PARENT"]
    events = [item for row in children for item in
              dossier_events(row["departmentCode"], int(row["totalReceived"]), int(row["totalOnTime"]))]
    await ingest_reference(runtime, events, batch=1000)

    for row in rows:
        response = await app_client.get(f"/v1/scores/{row['departmentCode']}", params={"period": "2026-08"},
                                        headers=auth(READER_KEY))
        body = response.json()
        c21 = next(c for g in body["groups"] for c in g["components"] if c["id"] == "2.1")
        published = float(row["score"] or row["totalScore"])
        assert (c21["numerator"], c21["denominator"]) == (int(row["totalOnTime"]), int(row["totalReceived"])), row
        assert abs(c21["score"] - published) <= 0.01, (row["departmentCode"], c21["score"], published)
        assert abs(c21["ratio"] - float(row["ratio"])) <= 0.01, row["departmentCode"]
        if row["level"] != "PARENT":
            assert body["counters"]["overdue"] == int(row["totalOverdue"])
