"""Targets per field (lĩnh vực) through the API: defined with PUT /v1/targets, evaluated over the dossiers of
the field's procedures, the same numbers as the per-field table GET /v1/scores/{unit}/fields."""

from __future__ import annotations

from tests.conftest import ADMIN_KEY, READER_KEY, auth
from tests.integration.test_notifications import post, put, vn
from tests.support.events import event

PERIOD = "2030-03"
CATALOGUE = [
    {"unit_code": "H44.03", "procedure_code": "1.000001", "name": "Đăng ký đất đai lần đầu", "field_code": "DD",
     "field_name": "Đất đai", "valid_from": "2026-01-01"},
    {"unit_code": "H44.07", "procedure_code": "1.000002", "name": "Chuyển mục đích sử dụng đất", "field_code": "DD",
     "field_name": "Đất đai", "valid_from": "2026-01-01"},
    {"unit_code": "H44.07", "procedure_code": "1.000003", "name": "Cấp giấy phép xây dựng", "field_code": "XD",
     "field_name": "Xây dựng", "valid_from": "2026-01-01"},
]


def dossier(code: str, unit: str, procedure: str, *, late: bool = False, open_until: int | None = None,
            channel: int = 2) -> list[dict]:
    if open_until is not None:
        return [event(code, 2, vn(2), unit=unit, procedure=procedure, due_at=vn(open_until), channel=channel)]
    return [event(code, 2, vn(2), unit=unit, procedure=procedure, due_at=vn(5), channel=channel),
            event(code, 9, vn(9 if late else 3), unit=unit, procedure=procedure)]


async def test_a_target_per_field_shows_the_per_field_tables_number(app_client):
    response = await app_client.put("/v1/catalog/procedures", json=CATALOGUE, headers=auth(ADMIN_KEY))
    assert response.status_code == 200, response.text
    await post(app_client, [
        # land (DD): 5 dossiers over two units, one late, one open (due before the month ends), one offline
        *dossier("D1", "H44.03", "1.000001"), *dossier("D2", "H44.03", "1.000001", late=True),
        *dossier("D3", "H44.07", "1.000002", channel=1), *dossier("D4", "H44.07", "1.000002"),
        *dossier("D5", "H44.07", "1.000002", open_until=20),
        # construction (XD): 2 dossiers, both on time; they must not lift land's ratio
        *dossier("X1", "H44.07", "1.000003"), *dossier("X2", "H44.07", "1.000003"),
    ])
    await put(app_client, "/v1/targets", [
        {"id": "land-ontime", "unit": "H44", "metric": "2.1", "min": 90.0, "field": "DD"},
        {"id": "land-online", "unit": "H44", "applies_to": "subtree", "metric": "3.3", "min": 50.0, "field": "DD"},
        {"id": "land-overdue", "unit": "H44", "metric": "overdue", "max": 10.0, "field": "DD"},
        {"id": "building-ontime", "unit": "H44", "metric": "2.1", "min": 90.0, "field": "XD"},
        {"id": "land-satisfaction", "unit": "H44", "metric": "5.3", "min": 85.0, "field": "DD"},
        {"id": "building-satisfaction", "unit": "H44", "metric": "5.3", "min": 85.0, "field": "XD"},
    ])
    # A not-satisfied rating of land dossier D4 (on time): it costs land's 5.3, not construction's.
    rated = [{"feedback_id": "F-D4", "unit_code": "H44.07", "dossier_code": "D4", "kind": "received",
              "occurred_at": vn(10).isoformat(), "due_at": vn(20).isoformat()},
             {"feedback_id": "F-D4", "unit_code": "H44.07", "dossier_code": "D4", "kind": "rated",
              "rating": "unsatisfied", "occurred_at": vn(11).isoformat()}]
    response = await app_client.post("/v1/feedback", json=rated, headers=auth(ADMIN_KEY))
    assert response.status_code == 200, response.text
    fields = (await app_client.get("/v1/scores/H44/fields", params={"period": PERIOD},
                                   headers=auth(READER_KEY))).json()["items"]
    land = next(r for r in fields if r["code"] == "DD")
    building = next(r for r in fields if r["code"] == "XD")
    assert (land["received"], land["on_time"], land["received_online"]) == (5, 4, 4)

    shown = (await app_client.get("/v1/units/H44/targets", params={"period": PERIOD},
                                  headers=auth(READER_KEY))).json()["targets"]
    at_h44 = {t["id"]: t for t in shown if t["unit"] == "H44"}
    assert at_h44["land-ontime"]["scope"]["field"] == "DD"
    assert at_h44["land-ontime"]["value"] == land["on_time_ratio"] == 80.0
    assert at_h44["land-online"]["value"] == land["online_share"] == 80.0
    assert at_h44["land-overdue"]["value"] == round(100 * land["overdue"] / land["received"], 2) == 20.0
    assert at_h44["building-ontime"]["value"] == building["on_time_ratio"] == 100.0
    # The open land dossier turns overdue by its due time (the 20th, before the month ends): 3 of 5 on time.
    assert (at_h44["land-ontime"]["turning_overdue"], at_h44["land-ontime"]["projected"]) == (1, 60.0)
    assert (at_h44["building-ontime"]["turning_overdue"], at_h44["building-ontime"]["status"]) == (0, "met")
    assert (at_h44["land-ontime"]["status"], at_h44["land-overdue"]["status"]) == ("at_risk", "at_risk")
    # 5.3 per field: on time and not complained about, of received: land 3 of 5 (D2 late, D4 rated badly).
    assert (at_h44["land-satisfaction"]["value"], at_h44["land-satisfaction"]["status"]) == (60.0, "at_risk")
    assert (at_h44["building-satisfaction"]["value"], at_h44["building-satisfaction"]["status"]) == (100.0, "met")

    # A subtree target per field: each unit's own dossiers of the field, as its own per-field table shows.
    for unit, share in (("H44.03", 100.0), ("H44.07", 66.67)):
        row = next(r for r in (await app_client.get(f"/v1/scores/{unit}/fields", params={"period": PERIOD},
                                                    headers=auth(READER_KEY))).json()["items"] if r["code"] == "DD")
        mine = (await app_client.get(f"/v1/units/{unit}/targets", params={"period": PERIOD},
                                     headers=auth(READER_KEY))).json()["targets"]
        [online] = [t for t in mine if t["id"] == "land-online"]
        assert online["value"] == row["online_share"] == share


async def test_a_metric_with_no_value_per_field_is_refused(app_client):
    for metric, reason in (("total", "no value per field"), ("TDGQ", "no value per field"),
                           ("1.1", "not counted per procedure"),
                           ("late_without_apology", "not counted per procedure")):
        response = await app_client.put("/v1/targets", json=[{"id": "x", "unit": "H44", "metric": metric, "min": 1,
                                                              "field": "DD"}], headers=auth(ADMIN_KEY))
        assert (response.status_code, response.json()["code"]) == (422, "no_field_value"), response.text
        assert reason in response.json()["detail"]
    response = await app_client.put("/v1/targets", json=[{"id": "x", "unit": "H44", "metric": "2.1", "min": 1,
                                                          "field": ""}], headers=auth(ADMIN_KEY))
    assert response.status_code == 422
    listed = (await app_client.get("/v1/targets", headers=auth(READER_KEY))).json()
    assert listed == []
