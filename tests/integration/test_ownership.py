"""Ownership (issue 19): a dossier belongs to the unit that received it; another unit's key cannot add
events to it, on HTTP, the portal's payloads and Kafka mode, and two keys racing on a new dossier cannot
both win. The owner's counters never move; each attempt is answered and dead-lettered as not_owner."""

from __future__ import annotations

import asyncio
import dataclasses

import httpx
import pytest

from services.app import create_app
from shared.auth import KeyRing
from shared.db.raw import driver_connection
from shared.kafka import ensure_topics
from shared.settings import ApiKey
from tests.conftest import ADMIN_KEY, PROVINCE_SOURCE_KEY, auth, drain
from tests.support.events import event, vn
from tests.support.kafka import kafka_settings, read_all
from tests.support.portal import Story, snapshot_call

KEY_07 = "test-source-h44-07"
KEY_08 = "test-source-h44-08"


def with_unit_keys(app) -> None:
    keys = dict(app.state.runtime.settings.api_keys)
    keys[KEY_07] = ApiKey(role="source", source="igate-h44-07", units=["H44.07"])
    keys[KEY_08] = ApiKey(role="source", source="igate-h44-08", units=["H44.08"])
    app.state.keyring = KeyRing(keys, session_secret=app.state.keyring.session_secret)


@pytest.fixture
async def client(app_client):
    with_unit_keys(app_client.app)
    return app_client


async def _rows(runtime, sql, *args):
    async with runtime.engine.connect() as conn:
        return await (await driver_connection(conn)).fetch(sql, *args)


async def counters(runtime) -> dict:
    rows = await _rows(runtime, "SELECT unit_code, procedure_code, period, metric, value FROM counters "
                                "WHERE value <> 0")
    return {(r["unit_code"], r["procedure_code"], r["period"], r["metric"]): r["value"] for r in rows}


async def post(client, key, events):
    return await client.post("/v1/events", json=events, headers=auth(key))


async def test_another_units_key_cannot_add_events_to_a_dossier_and_nothing_moves(client):
    runtime = client.app.state.runtime
    received = [event(code, 2, vn(2026, 8, 3), unit="H44.08", due_at=vn(2026, 8, 10), channel=2,
                      event_id=f"{code}-receipt") for code in ("S1", "S2", "S3")]
    assert (await post(client, KEY_08, received)).json()["accepted"] == 3
    await drain(runtime)
    before = await counters(runtime)
    assert before[("H44.08", "*", "2026-08", "received")] == 3

    attacks = [
        # two supplement requests on S1 (it would become overdue)
        event("S1", 5, vn(2026, 8, 4), unit="H44.07", event_id="a-1"),
        event("S1", 5, vn(2026, 8, 5), unit="H44.07", event_id="a-2"),
        # S2 moved to H44.07 with an earlier receipt
        event("S2", 2, vn(2026, 8, 1), unit="H44.07", due_at=vn(2026, 8, 2), event_id="a-3"),
        # S3 closed late
        event("S3", 9, vn(2026, 8, 30), unit="H44.07", event_id="a-4"),
        event("S3", 10, vn(2026, 8, 30, 9), unit="H44.07", event_id="a-5"),
    ]
    good = event("OWN-07", 2, vn(2026, 8, 3), unit="H44.07", event_id="own-07")  # its own dossier: kept
    response = await post(client, KEY_07, attacks + [good])
    assert response.status_code == 200
    results = response.json()["results"]
    assert [(r["status"], r.get("reason")) for r in results] == [("rejected", "not_owner")] * 5 + [("accepted", None)]
    assert "H44.08" in results[0]["detail"]
    # Alone, the same attempt is a 422.
    alone = await post(client, KEY_07, attacks[:1])
    assert (alone.status_code, alone.json()["results"][0]["reason"]) == (422, "not_owner")

    letters = await _rows(runtime, "SELECT reason, event_id, source FROM dead_letters ORDER BY id")
    assert [(r["reason"], r["event_id"]) for r in letters] == [("not_owner", f"a-{i}") for i in range(1, 6)] + [
        ("not_owner", "a-1")]
    assert {r["source"] for r in letters} == {"igate-h44-07"}
    assert [r["event_id"] for r in await _rows(runtime, "SELECT event_id FROM events WHERE source = 'igate-h44-07'")] \
        == ["own-07"]
    await drain(runtime)
    after = await counters(runtime)
    assert {k: v for k, v in after.items() if k[0] == "H44.08"} == {k: v for k, v in before.items() if k[0] == "H44.08"}
    assert after[("H44.07", "*", "2026-08", "received")] == 1  # its own dossier only


async def test_the_owner_a_parent_unit_and_an_admin_may_add_events(client):
    runtime = client.app.state.runtime
    await post(client, KEY_08, [event("T1", 2, vn(2026, 8, 3), unit="H44.08", due_at=vn(2026, 8, 10))])
    assert (await post(client, KEY_08, [event("T1", 4, vn(2026, 8, 4), unit="H44.08")])).json()["accepted"] == 1
    # liên thông through the province: its key covers both units and may hand the dossier on
    moved = await post(client, PROVINCE_SOURCE_KEY, [event("T1", 4, vn(2026, 8, 5), unit="H44.07")])
    assert moved.json()["accepted"] == 1
    assert (await post(client, ADMIN_KEY, [event("T1", 9, vn(2026, 8, 6), unit="H44.07")])).json()["accepted"] == 1
    # the dossier still belongs to the unit that received it: H44.07's own key may not add to it
    refused = await post(client, KEY_07, [event("T1", 10, vn(2026, 8, 7), unit="H44.07")])
    assert refused.json()["results"][0]["reason"] == "not_owner"
    owners = await _rows(runtime, "SELECT dossier_code, unit_code FROM dossier_owners")
    assert [(r["dossier_code"], r["unit_code"]) for r in owners] == [("T1", "H44.08")]


async def test_a_redelivered_event_of_the_owner_is_a_duplicate_and_a_redelivered_attack_stays_refused(client):
    receipt = [event("R1", 2, vn(2026, 8, 3), unit="H44.08", event_id="r1")]
    attack = [event("R1", 5, vn(2026, 8, 4), unit="H44.07", event_id="x1")]
    for _ in range(3):
        assert (await post(client, KEY_08, receipt)).json()["results"][0]["status"] in ("accepted", "duplicate")
        assert (await post(client, KEY_07, attack)).json()["results"][0]["reason"] == "not_owner"
    rows = await _rows(client.app.state.runtime, "SELECT event_id FROM events")
    assert [r["event_id"] for r in rows] == ["r1"]


async def test_two_keys_racing_on_new_dossiers_never_both_win(client):
    runtime = client.app.state.runtime
    codes = [f"RACE{i}" for i in range(20)]

    async def send(key, unit):
        return await post(client, key, [event(c, 2, vn(2026, 8, 3), unit=unit, event_id=f"{unit}-{c}") for c in codes])

    first, second = await asyncio.gather(send(KEY_07, "H44.07"), send(KEY_08, "H44.08"))
    won = {}
    for response, unit in ((first, "H44.07"), (second, "H44.08")):
        for code, result in zip(codes, response.json()["results"]):
            if result["status"] == "accepted":
                assert code not in won, f"{code} accepted for two units"
                won[code] = unit
            else:
                assert result["reason"] == "not_owner"
    assert sorted(won) == sorted(codes)  # each dossier was won by exactly one of them
    stored = await _rows(runtime, "SELECT dossier_code, body->>'unit_code' AS unit FROM events")
    assert {r["dossier_code"]: r["unit"] for r in stored} == won
    owners = await _rows(runtime, "SELECT dossier_code, unit_code FROM dossier_owners")
    assert {r["dossier_code"]: r["unit_code"] for r in owners} == won
    letters = await _rows(runtime, "SELECT count(*) AS n FROM dead_letters WHERE reason = 'not_owner'")
    assert letters[0]["n"] == len(codes)


def _snapshot(code: str, *, received=None, **changes) -> dict:
    story = Story(code, "P1", received or vn(2026, 8, 3), vn(2026, 8, 10))
    record = story.snapshot_at(vn(2026, 8, 3))
    record.update(changes)
    return record


async def test_portal_payloads_of_another_unit_cannot_touch_its_dossiers(client):
    runtime = client.app.state.runtime
    owned = snapshot_call("H44.08", [_snapshot("HS-08-1"), _snapshot("HS-08-2")])
    assert (await client.post("/v1/dvcqg", json=owned, headers=auth(KEY_08))).json()["error_code"] == 0
    await drain(runtime)
    before = await counters(runtime)

    hostile = snapshot_call("H44.07", [
        _snapshot("HS-08-1", TrangThaiHoSo="9", NgayKetThucXuLy="20260830080000"),  # closed late
        _snapshot("HS-08-2", received=vn(2026, 8, 1)),  # an earlier receipt under H44.07
        _snapshot("HS-07-1"),  # its own: kept
    ])
    response = await client.post("/v1/dvcqg", json=hostile, headers=auth(KEY_07))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["error_code"] == 1
    assert [(r["status"], r.get("reason")) for r in body["results"]] == [
        ("rejected", "not_owner"), ("rejected", "not_owner"), ("accepted", None)]
    steps = {"service": "CapNhatTienDoHoSoMC", "madonvi": "H44.07", "data": [
        {"MaHoSo": "HS-08-1", "TrangThai": "5", "ThoiDiemXuLy": "20260804080000", "NguoiXuLy": "X"}]}
    response = await client.post("/v1/dvcqg", json=steps, headers=auth(KEY_07))
    assert response.status_code == 422
    assert response.json()["results"][0]["reason"] == "not_owner"

    letters = await _rows(runtime, "SELECT DISTINCT reason, transport FROM dead_letters")
    assert [(r["reason"], r["transport"]) for r in letters] == [("not_owner", "dvcqg")]
    await drain(runtime)
    after = await counters(runtime)
    assert {k: v for k, v in after.items() if k[0] == "H44.08"} == {k: v for k, v in before.items() if k[0] == "H44.08"}


async def test_kafka_mode_checks_ownership_at_the_edge_before_producing(clean_db, broker):
    settings = kafka_settings(clean_db.settings, broker.bootstrap)
    await ensure_topics(settings, [settings.kafka_topic, settings.kafka_dead_letter_topic])
    runtime = dataclasses.replace(clean_db, settings=settings)
    app = create_app(("ingest",), runtime=runtime)
    async with app.router.lifespan_context(app):
        with_unit_keys(app)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            owned = await post(client, KEY_08, [event("KO1", 2, vn(2026, 8, 3), unit="H44.08", event_id="ko-1")])
            hostile = await post(client, KEY_07, [event("KO1", 5, vn(2026, 8, 4), unit="H44.07", event_id="ko-x"),
                                                  event("KO2", 2, vn(2026, 8, 4), unit="H44.07", event_id="ko-2")])
    assert owned.json()["accepted"] == 1
    assert [(r["status"], r.get("reason")) for r in hostile.json()["results"]] == [
        ("rejected", "not_owner"), ("accepted", None)]
    on_topic = await read_all(settings.kafka_bootstrap_servers, settings.kafka_topic, expected=2)
    assert sorted(m.key for m in on_topic) == [b"KO1", b"KO2"]
    assert b"ko-x" not in b"".join(m.value for m in on_topic)
    letters = await _rows(runtime, "SELECT reason, event_id FROM dead_letters")
    assert [(r["reason"], r["event_id"]) for r in letters] == [("not_owner", "ko-x")]


@pytest.fixture
def identified_units(client):
    """H44.07 and H44.08 with their electronic identifiers (mã định danh), for this test only."""
    from shared.units import UnitTree

    runtime = client.app.state.runtime
    saved = runtime.units
    ids = {"H44.07": "000.00.07.H44", "H44.08": "000.00.08.H44"}
    runtime.units = UnitTree([dataclasses.replace(u, identifier=ids.get(u.code, u.identifier))
                              for u in saved.units.values()])
    yield runtime
    runtime.units = saved


async def test_a_dossier_code_naming_its_receiver_cannot_be_claimed_first_by_another_unit(client, identified_units):
    code = "000.00.08.H44-260803-0001"  # received by H44.08, as its code says
    first = await post(client, KEY_07, [event(code, 2, vn(2026, 8, 3), unit="H44.07", event_id="pre-claim")])
    assert (first.status_code, first.json()["results"][0]["reason"]) == (422, "not_owner")
    owned = await post(client, KEY_08, [event(code, 2, vn(2026, 8, 3), unit="H44.08", event_id="receipt")])
    assert owned.json()["accepted"] == 1
    owners = await _rows(identified_units, "SELECT dossier_code, unit_code FROM dossier_owners")
    assert [(r["dossier_code"], r["unit_code"]) for r in owners] == [(code, "H44.08")]
    # the portal's payload for the same dossier from H44.07's system is refused as well
    hostile = snapshot_call("H44.07", [_snapshot(code, TrangThaiHoSo="9", NgayKetThucXuLy="20260830080000")])
    response = await client.post("/v1/dvcqg", json=hostile, headers=auth(KEY_07))
    assert response.json()["results"][0].get("reason") in ("not_owner", "unit_not_allowed")
    stored = await _rows(identified_units, "SELECT event_id FROM events")
    assert [r["event_id"] for r in stored] == ["receipt"]
