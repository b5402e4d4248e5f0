"""Hostile input: each bad event or portal record is a 4xx with its reason, nothing of it is accepted,
and the good events of the same batch are kept (issue 19)."""

from __future__ import annotations

import json

import orjson
import pytest

from shared.db.raw import driver_connection
from tests.conftest import ADMIN_KEY, SOURCE_KEY, auth
from tests.support.events import event, vn
from tests.support.portal import Story, snapshot_call


async def _rows(runtime, sql, *args):
    async with runtime.engine.connect() as conn:
        return await (await driver_connection(conn)).fetch(sql, *args)


def nested(depth: int):
    value: object = "x"
    for _ in range(depth):
        value = {"a": value}
    return value


def _bad_events():
    deep_attributes = event("X1", 2, vn(2026, 8, 3), event_id="deep-attributes", attributes={"note": nested(300)})
    deep_step = event("X1", 4, vn(2026, 8, 4), event_id="deep-step", step={"name": "Thẩm định", "x": nested(300)})
    shallow_but_deep = event("X1", 4, vn(2026, 8, 4), event_id="nine-deep", attributes={"note": nested(8)})
    long_id = event("X1", 4, vn(2026, 8, 4), event_id="e" * 129)
    huge_id = event("X1", 4, vn(2026, 8, 4), event_id="e" * (1 << 20))
    arabic = event("X1", 4, vn(2026, 8, 4), event_id="arabic-status")
    arabic["status"] = "\u0662"  # ٢
    fullwidth = event("X1", 4, vn(2026, 8, 4), event_id="fullwidth-status")
    fullwidth["status"] = "\uff12"  # ２
    fullwidth_channel = event("X1", 2, vn(2026, 8, 4), event_id="fullwidth-channel", channel="\uff11")
    return [
        (deep_attributes, "too_deep"),
        (deep_step, "too_deep"),
        (shallow_but_deep, "too_deep"),
        (long_id, "bad_field"),
        (huge_id, "too_large"),
        (arabic, "bad_status"),
        (fullwidth, "bad_status"),
        (fullwidth_channel, "bad_channel"),
    ]


async def test_each_bad_event_is_rejected_with_its_reason_and_the_good_ones_are_kept(app_client):
    runtime = app_client.app.state.runtime
    bad = _bad_events()
    batch = [event("G1", 2, vn(2026, 8, 3), event_id="good-1", due_at=vn(2026, 8, 20))]
    for raw, _ in bad:
        batch.append(raw)
    good_2 = event("G1", 4, vn(2026, 8, 4), event_id="good-2")
    good_2["status"] = "4"  # ASCII digits in a string: kept
    batch.append(good_2)
    batch.append(event("G2", 2, vn(2026, 8, 3), event_id="good-3", channel="2"))
    response = await app_client.post("/v1/events", content=json.dumps(batch).encode(),
                                     headers={**auth(SOURCE_KEY), "content-type": "application/json"})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [(r["status"], r.get("reason")) for r in results] == (
        [("accepted", None)] + [("rejected", reason) for _, reason in bad] + [("accepted", None), ("accepted", None)])
    assert all(r["detail"] for r in results if r["status"] == "rejected")
    assert "event_id" not in results[4] and "event_id" not in results[5]  # over 128 characters: not echoed
    stored = await _rows(runtime, "SELECT event_id FROM events ORDER BY seq")
    assert [r["event_id"] for r in stored] == ["good-1", "good-2", "good-3"]
    letters = await _rows(runtime, "SELECT reason, event_index, event_id FROM dead_letters ORDER BY id")
    assert [(r["reason"], r["event_index"]) for r in letters] == [(reason, i + 1) for i, (_, reason) in enumerate(bad)]
    assert letters[3]["event_id"] is None and letters[4]["event_id"] is None


@pytest.mark.parametrize("index", range(8))
async def test_each_bad_event_alone_is_a_422_with_its_reason(app_client, index):
    raw, reason = _bad_events()[index]
    response = await app_client.post("/v1/events", content=json.dumps([raw]).encode(),
                                     headers={**auth(ADMIN_KEY), "content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["results"][0]["reason"] == reason
    assert await _rows(app_client.app.state.runtime, "SELECT 1 FROM events") == []


async def test_an_event_nested_past_what_json_encoders_handle_is_too_deep_not_a_server_error(app_client):
    # 300 levels: orjson cannot encode it back (its limit is 255); 1,000: neither can the standard library.
    for depth in (300, 1000):
        body = b'[{"event_id":"deep","dossier_code":"D","unit_code":"H44.03","procedure_code":"P","status":2,' \
               b'"occurred_at":"2026-08-03T08:00:00+07:00","x":' + b"[" * depth + b"]" * depth + b"}," + \
               orjson.dumps(event("G9", 2, vn(2026, 8, 3), event_id=f"good-{depth}")) + b"]"
        response = await app_client.post("/v1/events", content=body,
                                         headers={**auth(ADMIN_KEY), "content-type": "application/json"})
        assert response.status_code == 200, response.text
        assert [r.get("reason") for r in response.json()["results"]] == ["too_deep", None]


def _portal_record(code: str, **changes) -> dict:
    record = Story(code, "P1", vn(2026, 8, 3), vn(2026, 8, 20)).snapshot_at(vn(2026, 8, 3))
    record.update(changes)
    return record


async def test_each_bad_portal_record_is_refused_with_its_reason_and_the_good_ones_are_kept(app_client):
    runtime = app_client.app.state.runtime
    records = [
        _portal_record("HS-GOOD-1"),
        _portal_record("HS-FULLWIDTH-DATE", NgayTiepNhan="\uff12\uff10\uff12\uff16" + "0803080000"),
        _portal_record("HS-ARABIC-STATUS", TrangThaiHoSo="\u0662"),
        _portal_record("HS-DEEP", DanhSachHoSoBoSung=[nested(300)]),
        _portal_record("HS-GOOD-2"),
    ]
    response = await app_client.post("/v1/dvcqg", content=json.dumps(snapshot_call("H44.03", records)).encode(),
                                     headers={**auth(SOURCE_KEY), "content-type": "application/json"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["error_code"] == 1
    assert [(r["status"], r.get("reason")) for r in body["results"]] == [
        ("accepted", None), ("rejected", "bad_timestamp"), ("rejected", "bad_status"), ("rejected", "too_deep"),
        ("accepted", None)]
    stored = await _rows(runtime, "SELECT DISTINCT dossier_code FROM events ORDER BY 1")
    assert [r["dossier_code"] for r in stored] == ["HS-GOOD-1", "HS-GOOD-2"]
    letters = await _rows(runtime, "SELECT reason FROM dead_letters ORDER BY id")
    assert [r["reason"] for r in letters] == ["bad_timestamp", "bad_status", "too_deep"]
