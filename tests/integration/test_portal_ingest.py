"""POST /v1/dvcqg: the national portal's payloads, on the real PostgreSQL, through the real intake."""

from __future__ import annotations

import random

from shared.db.raw import driver_connection
from tests.conftest import ADMIN_KEY, READER_KEY, SOURCE_KEY, auth, drain
from tests.support.portal import final_attributes, progress_call, sample_stories, snapshot_call, vn


async def counters_of(runtime, unit: str) -> dict[tuple[str, str, str], int]:
    async with runtime.engine.connect() as conn:
        apg = await driver_connection(conn)
        rows = await apg.fetch("SELECT procedure_code, period, metric, value FROM counters "
                               "WHERE unit_code = $1 AND value <> 0", unit)
    return {(r["procedure_code"], r["period"], r["metric"]): r["value"] for r in rows}


async def test_portal_calls_give_the_counters_of_the_same_canonical_history(app_client):
    runtime = app_client.app.state.runtime
    rng = random.Random(766)
    stories = sample_stories("HS")
    # What the system pushes: after every change, the changed dossiers' snapshots (a batch per instant) ...
    moments = sorted({m for s in stories for m in s.moments()})
    calls = []
    for moment in moments:
        changed = [s.snapshot_at(moment) for s in stories if moment in s.moments()]
        calls.append(("/v1/dvcqg", snapshot_call("H44.03", changed)))
    # ... a full re-send of every dossier at the end, and the step records, out of order, in small calls.
    calls.append(("/v1/dvcqg/DongBoHoSoMC", snapshot_call("H44.03", [s.snapshot_at(vn(2026, 8, 31)) for s in stories])))
    steps = [record for s in stories for record in s.step_records()]
    rng.shuffle(steps)
    step_calls = [("/v1/dvcqg/CapNhatTienDoHoSoMC", progress_call("H44.03", steps[i:i + 3]))
                  for i in range(0, len(steps), 3)]
    for call in step_calls:  # steps interleaved with the snapshots, some before the dossier's first snapshot
        calls.insert(rng.randrange(len(calls) + 1), call)
    final_resend = None
    for index, (path, payload) in enumerate(calls):
        headers = auth(SOURCE_KEY) if index % 2 else {"token": SOURCE_KEY}  # both ways systems send their token
        response = await app_client.post(path, json=payload, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["error_code"] == 0, body
        assert len(body["results"]) == len(payload["data"])
        if path.endswith("DongBoHoSoMC"):
            final_resend = body
    # The final re-send of every dossier (no change since its last snapshot) adds nothing.
    assert final_resend["duplicates"] == len(stories) and final_resend["accepted"] == 0
    again = await app_client.post("/v1/dvcqg", json=calls[0][1], headers=auth(SOURCE_KEY))
    assert again.json()["error_code"] == 0
    assert {r["status"] for r in again.json()["results"]} == {"duplicate"}

    # The same history as canonical events, for other dossiers of another unit.
    canonical = []
    for story in sample_stories("CN"):
        canonical.extend(story.canonical("H44.07", final_attributes(story)))
    response = await app_client.post("/v1/events", json=canonical, headers=auth(ADMIN_KEY))
    assert response.status_code == 200 and response.json()["rejected"] == 0, response.text

    await drain(runtime)
    portal, expected = await counters_of(runtime, "H44.03"), await counters_of(runtime, "H44.07")
    assert portal == expected
    month = {metric: value for (procedure, period, metric), value in portal.items()
             if procedure == "*" and period == "2026-08"}
    assert month["received"] == 7
    assert (month["received_online"], month["received_in_person"], month["received_postal"]) == (3, 3, 1)
    assert month["supplement_requests"] == 4  # HS-002 one, HS-003 two, HS-005 one (the 9-for-5 quirk)
    assert month["dossiers_with_2plus_supplements"] == 1
    assert month["completed"] == 4  # 001, 002, 003, 004; the quirk dossiers 005 and 006 are not finished
    assert month["overdue_steps"] == 2
    assert month["on_time"] + month["overdue"] == 7

    async with runtime.engine.connect() as conn:
        apg = await driver_connection(conn)
        row = await apg.fetchrow("SELECT attributes, channel, status FROM dossiers WHERE dossier_code = 'HS-001'")
        quirk = await apg.fetchrow("SELECT ended_at, supplement_count FROM dossiers WHERE dossier_code = 'HS-005'")
        conflicts = await apg.fetchval("SELECT count(*) FROM dead_letters")
    import json

    attributes = json.loads(row["attributes"]) if isinstance(row["attributes"], str) else row["attributes"]
    assert attributes == {"synced_to_portal": True, "digitized": True, "reused_digitized": True,
                          "from_data_store": True, "e_result": True, "fee_data": True, "fee_required": True,
                          "paid_online": True}  # its flags, all stated false by its snapshots, are no flags
    assert row["channel"] == 2
    assert quirk["ended_at"] is None and quirk["supplement_count"] == 1
    assert conflicts == 0


async def test_malformed_records_answered_per_item_without_losing_good_ones(app_client):
    runtime = app_client.app.state.runtime
    story = sample_stories("OK")[0]
    good = story.snapshot_at(vn(2026, 8, 6, 9))
    records = [
        {**good, "MaHoSo": "BAD-1", "NgayTiepNhan": "2026-08-03T08:00:00"},
        good,
        {**good, "MaHoSo": "BAD-2", "TrangThaiHoSo": "0"},
        {**good, "MaHoSo": ""},
        {**good, "MaHoSo": "BAD-3", "DonViXuLy": "", "KenhThucHien": "7"},
    ]
    response = await app_client.post("/v1/dvcqg", json=snapshot_call("H44.03", records), headers=auth(SOURCE_KEY))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["error_code"] == 1 and body["message"]
    assert [(r["index"], r["status"], r.get("reason")) for r in body["results"]] == [
        (0, "rejected", "bad_timestamp"),
        (1, "accepted", None),
        (2, "rejected", "bad_status"),
        (3, "rejected", "missing_field"),
        (4, "rejected", "bad_channel"),
    ]
    assert body["results"][3]["field"] == "MaHoSo"
    steps = progress_call("H44.03", [
        {"MaHoSo": story.code, "TrangThai": "4", "ThoiDiemXuLy": "20260803140000", "NgayKetThucTheoQuyDinh": ""},
        {"MaHoSo": story.code, "TrangThai": "4", "ThoiDiemXuLy": "20260832140000"},
    ])
    response = await app_client.post("/v1/dvcqg/CapNhatTienDoHoSoMC", json=steps, headers=auth(SOURCE_KEY))
    assert response.json()["error_code"] == 1
    assert [r.get("reason") for r in response.json()["results"]] == [None, "bad_timestamp"]

    await drain(runtime)
    counts = await counters_of(runtime, "H44.03")
    assert counts[("*", "2026-08", "received")] == 1 and counts[("*", "2026-08", "completed")] == 1
    async with runtime.engine.connect() as conn:
        apg = await driver_connection(conn)
        letters = await apg.fetch("SELECT reason, transport, source FROM dead_letters ORDER BY id")
    assert [r["reason"] for r in letters] == ["bad_timestamp", "bad_status", "missing_field", "bad_channel",
                                              "bad_timestamp"]
    assert {(r["transport"], r["source"]) for r in letters} == {("dvcqg", "igate-h44-03")}


async def test_unreadable_payloads_and_auth_answered_in_the_portal_shape(app_client):
    call = snapshot_call("H44.03", [sample_stories("A")[0].snapshot_at(vn(2026, 8, 3, 9))])
    cases = [
        ({**call, "data": {"MaHoSo": "X"}}, auth(SOURCE_KEY), 400, 3, "data_not_array"),
        ({**call, "service": "LayDanhSachHoSo"}, auth(SOURCE_KEY), 400, 3, "unknown_service"),
        (call, {}, 401, 4, "unauthenticated"),
        (call, {"token": "nope"}, 401, 4, "bad_api_key"),
        (call, auth(READER_KEY), 403, 4, "forbidden"),
        ({**call, "madonvi": "H44.07"}, auth(SOURCE_KEY), 403, 4, "unit_not_allowed"),
    ]
    for payload, headers, status, code, reason in cases:
        response = await app_client.post("/v1/dvcqg", json=payload, headers=headers)
        assert (response.status_code, response.json()["error_code"], response.json()["reason"]) == (status, code, reason)
    response = await app_client.post("/v1/dvcqg", content=b"{not json", headers=auth(SOURCE_KEY))
    assert (response.status_code, response.json()["error_code"], response.json()["reason"]) == (400, 3, "invalid_json")
    response = await app_client.post("/v1/dvcqg/XoaHoSo", json=call, headers=auth(SOURCE_KEY))
    assert response.status_code == 404 and response.json()["error_code"] == 3
    # A record whose MaHoSo names a unit the key is not bound to, and one for a unit not in the tree.
    other = {**call["data"][0], "MaHoSo": "H44.07-260803-0001"}
    response = await app_client.post("/v1/dvcqg", json={**call, "data": [other]}, headers=auth(SOURCE_KEY))
    assert (response.status_code, response.json()["error_code"]) == (422, 2)
    assert response.json()["results"][0]["reason"] == "unit_not_allowed"
    # A record whose MaHoSo names the key's unit may come under the province's madonvi.
    own = {**call["data"][0], "MaHoSo": "H44.03-260803-0007"}
    response = await app_client.post("/v1/dvcqg", json={**call, "madonvi": "H44", "data": [own]}, headers=auth(SOURCE_KEY))
    assert response.json()["error_code"] == 0, response.text
    # DonViXuLy naming a unit outside the key's subtree is not the dossier's unit: madonvi is.
    outside = {**call["data"][0], "MaHoSo": "A-OUTSIDE", "DonViXuLy": "H44.07"}
    response = await app_client.post("/v1/dvcqg", json={**call, "data": [outside]}, headers=auth(SOURCE_KEY))
    assert response.json()["error_code"] == 0, response.text
    response = await app_client.post("/v1/dvcqg", json={**call, "madonvi": "H99"}, headers=auth(ADMIN_KEY))
    assert response.json()["results"][0]["reason"] == "unknown_unit"


async def test_an_unreadable_optional_time_keeps_the_dossier_flagged_for_the_drill_down(app_client):
    """Never lose a dossier over one odd field: an optional time that cannot be read (or lies outside
    2000-2100) is dropped, the dossier kept, answered 0, counted by the rules without it, and flagged."""
    runtime = app_client.app.state.runtime
    base = {"MaTTHC": "9.999.unknown", "KenhThucHien": "2", "DonViXuLy": ""}
    records = [
        # No due time left, no legal time in the catalogue: on time by rule, flagged.
        {**base, "MaHoSo": "HS-DUE", "TrangThaiHoSo": "2", "NgayTiepNhan": "20260803080000",
         "NgayHenTra": "03/08/2026"},
        # The end time unreadable: the end comes from the step record (on time against its due time).
        {**base, "MaHoSo": "HS-END", "TrangThaiHoSo": "9", "NgayTiepNhan": "20260804080000",
         "NgayHenTra": "20260810170000", "NgayKetThucXuLy": "2026-08-06"},
        # The return time outside the window: the end is NgayKetThucXuLy, after the due time.
        {**base, "MaHoSo": "HS-LATE", "TrangThaiHoSo": "10", "NgayTiepNhan": "20260803080000",
         "NgayHenTra": "20260805170000", "NgayKetThucXuLy": "20260807100000", "NgayTra": "99991231235959"},
    ]
    response = await app_client.post("/v1/dvcqg", json=snapshot_call("H44.03", records), headers=auth(SOURCE_KEY))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["error_code"] == 0, body
    assert [(r["MaHoSo"], r["status"]) for r in body["results"]] == [
        ("HS-DUE", "accepted"), ("HS-END", "accepted"), ("HS-LATE", "accepted")]
    step = {"MaHoSo": "HS-END", "TrangThai": "9", "ThoiDiemXuLy": "20260806100000", "PhongBanXuLy": "Phòng Kinh tế",
            "NgayKetThucTheoQuyDinh": "06/08/2026"}
    response = await app_client.post("/v1/dvcqg/CapNhatTienDoHoSoMC", json=progress_call("H44.03", [step]),
                                     headers=auth(SOURCE_KEY))
    assert response.json()["error_code"] == 0, response.text

    # Only a record without its receipt time (or its code, or its status) is refused, with the reason.
    refused = {**records[0], "MaHoSo": "HS-NO-RECEIPT", "NgayTiepNhan": "03/08/2026"}
    response = await app_client.post("/v1/dvcqg", json=snapshot_call("H44.03", [refused]), headers=auth(SOURCE_KEY))
    assert response.status_code == 422
    [result] = response.json()["results"]
    assert (result["status"], result["reason"], result["field"]) == ("rejected", "bad_timestamp", "NgayTiepNhan")

    await drain(runtime)
    scores = await app_client.get("/v1/scores/H44.03", params={"period": "2026-08"}, headers=auth(READER_KEY))
    assert scores.status_code == 200, scores.text
    components = {c["id"]: c for g in scores.json()["groups"] for c in g["components"]}
    assert scores.json()["counters"]["received"] == 3
    assert (components["2.1"]["numerator"], components["2.1"]["denominator"]) == (2, 3)  # HS-LATE overdue
    response = await app_client.get("/v1/units/H44.03/dossiers", params={"period": "2026-08", "flag": "input_gaps"},
                                    headers=auth(READER_KEY))
    assert response.status_code == 200, response.text
    gaps = {d["dossier_code"]: d for d in response.json()["items"]}
    assert {code: d["flags"] for code, d in gaps.items()} == {
        "HS-DUE": ["due_time_unreadable", "no_deadline_flagged"],
        "HS-END": ["end_from_steps", "end_time_unreadable", "step_time_unreadable"],
        "HS-LATE": ["end_time_unreadable"],
    }
    assert gaps["HS-DUE"]["due_at"] is None and gaps["HS-DUE"]["overdue"] is False
    assert gaps["HS-END"]["ended_at"] == vn(2026, 8, 6, 10).isoformat()
    assert gaps["HS-LATE"]["ended_at"] == vn(2026, 8, 7, 10).isoformat() and gaps["HS-LATE"]["overdue"] is True
    async with runtime.engine.connect() as conn:
        letters = await (await driver_connection(conn)).fetch("SELECT reason FROM dead_letters")
    assert [r["reason"] for r in letters] == ["bad_timestamp"]

    # The system corrects HS-LATE's return time and sends the dossier again: no longer flagged.
    corrected = {**records[2], "NgayTra": "20260807110000"}
    response = await app_client.post("/v1/dvcqg", json=snapshot_call("H44.03", [corrected]), headers=auth(SOURCE_KEY))
    assert response.json()["error_code"] == 0, response.text
    await drain(runtime)
    response = await app_client.get("/v1/units/H44.03/dossiers", params={"period": "2026-08", "flag": "input_gaps"},
                                    headers=auth(READER_KEY))
    assert sorted(d["dossier_code"] for d in response.json()["items"]) == ["HS-DUE", "HS-END"]
