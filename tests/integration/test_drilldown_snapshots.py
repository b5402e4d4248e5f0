"""Drill-down per component, snapshots compared with today's recomputation, and the early warning."""

import datetime as dt

import pytest

from services.indicators.snapshots import scheduled_kind
from shared.timeutil import VIETNAM, utcnow
from tests.conftest import ADMIN_KEY, READER_KEY, auth, drain
from tests.integration.test_full_score import CATALOGUE, load
from tests.support.events import event, vn


async def items(client, component, unit="H44.03", period="2026-08"):
    r = await client.get(f"/v1/units/{unit}/components/{component}/items", params={"period": period},
                         headers=auth(READER_KEY))
    assert r.status_code == 200, r.text
    return r.json()["items"]


async def test_drill_down_names_what_costs_points(app_client):
    await load(app_client)
    overdue = await items(app_client, "2.1")
    assert [(i["dossier_code"], i["reasons"]) for i in overdue] == [("D3", ["two_plus_supplements"])]
    assert [(i["procedure_code"], i["reasons"]) for i in await items(app_client, "3.1")] == [("P2", ["not_online"])]
    assert [i["procedure_code"] for i in await items(app_client, "1.1")] == ["P2"]
    assert [(i["feedback_id"], i["reasons"]) for i in await items(app_client, "5.1")] == [("F2", ["handled_late"])]
    assert [i["dossier_code"] for i in await items(app_client, "4.1")] == ["D2", "D3"]
    assert {i["dossier_code"]: i["reasons"] for i in await items(app_client, "5.3")} == {
        "D1": ["complaint_or_unsatisfied"], "D3": ["two_plus_supplements"]}
    assert [i["dossier_code"] for i in await items(app_client, "3.3")] == ["D2", "D3"]
    r = await app_client.get("/v1/units/H44.03/components/9.9/items", headers=auth(READER_KEY))
    assert r.status_code == 404 and r.json()["code"] == "unknown_component"
    r = await app_client.get("/v1/units/H44.03/components/2.1/items", params={"period": "2026-13"},
                             headers=auth(READER_KEY))
    assert r.status_code == 400 and r.json()["code"] == "bad_period"


async def test_snapshot_then_late_event_and_late_catalogue_show_in_the_comparison(app_client):
    await load(app_client)
    r = await app_client.post("/v1/snapshots", json={"period": "2026-08", "label": "tự đánh giá"},
                              headers=auth(ADMIN_KEY))
    assert r.status_code == 200, r.text
    snapshot = r.json()
    assert snapshot["units"] == 164
    listed = await app_client.get("/v1/snapshots", headers=auth(READER_KEY))
    assert [s["id"] for s in listed.json()["items"]] == [snapshot["id"]]

    # A late event: a dossier received in August finishes late, long after the month closed.
    batch = [event("D9", 2, vn(2026, 8, 10), procedure="P1", due_at=vn(2026, 8, 12)),
             event("D9", 9, vn(2026, 10, 2), procedure="P1")]
    r = await app_client.post("/v1/events", json=batch, headers=auth(ADMIN_KEY))
    assert r.json()["accepted"] == 2
    await drain(app_client.app.state.runtime)
    # A late catalogue change: P2 was in fact offered online from 20 August.
    late = [{**CATALOGUE[1], "online_level": "partial", "online_services": 1, "valid_from": "2026-08-20"}]
    assert (await app_client.put("/v1/catalog/procedures", json=late, headers=auth(ADMIN_KEY))).status_code == 200

    r = await app_client.get(f"/v1/snapshots/{snapshot['id']}/compare", params={"unit": "H44.03"},
                             headers=auth(READER_KEY))
    assert r.status_code == 200, r.text
    (unit,) = r.json()["units"]
    changes = {c["id"]: c for c in unit["changes"]}
    assert changes["2.1"]["before"]["numerator"] == 2 and changes["2.1"]["after"]["denominator"] == 4
    assert "denominator 3 → 4 (+1)" in changes["2.1"]["why"]
    assert (changes["3.1"]["before"]["numerator"], changes["3.1"]["after"]["numerator"]) == (1, 2)
    assert unit["total_now"] != unit["total_before"]
    # The province row moves too; units untouched do not appear.
    whole = await app_client.get(f"/v1/snapshots/{snapshot['id']}/compare", headers=auth(READER_KEY))
    assert {u["unit"] for u in whole.json()["units"]} == {"H44", "H44.03"}


async def test_early_warning_lists_dossiers_about_to_turn_overdue(app_client):
    now = utcnow().astimezone(VIETNAM)
    batch = [
        event("W1", 2, now - dt.timedelta(hours=1), due_at=now + dt.timedelta(days=1)),
        event("W2", 2, now - dt.timedelta(hours=1), due_at=now + dt.timedelta(days=60)),
    ]
    r = await app_client.post("/v1/events", json=batch, headers=auth(ADMIN_KEY))
    assert r.json()["accepted"] == 2
    await drain(app_client.app.state.runtime)
    r = await app_client.get("/v1/units/H44/early-warning", params={"days": 3}, headers=auth(READER_KEY))
    assert r.status_code == 200, r.text
    body = r.json()
    assert [i["dossier_code"] for i in body["items"]] == ["W1"]
    assert (body["current_2_1"]["numerator"], body["current_2_1"]["denominator"]) == (2, 2)
    if (now + dt.timedelta(days=1)).month == now.month:  # W1 turns overdue within this month
        assert body["projected_2_1"]["numerator"] == 1
        assert body["projected_2_1"]["score"] == 10.0


@pytest.mark.parametrize(
    "day, kind",
    [(dt.date(2026, 3, 31), "quarter_end"), (dt.date(2026, 6, 30), "quarter_end"), (dt.date(2026, 12, 19),
     "year_self_evaluation"), (dt.date(2026, 12, 31), "quarter_end"), (dt.date(2026, 8, 31), None),
     (dt.date(2026, 9, 29), None)],
)
def test_scheduled_snapshot_days(day, kind):
    assert scheduled_kind(day) == kind
