"""POST /v1/events: per-event reasons, nothing good lost, dead letters kept, auth and limits."""

import orjson

from shared.db.raw import driver_connection
from tests.conftest import ADMIN_KEY, READER_KEY, SOURCE_KEY, auth, drain
from tests.support.events import event, vn


async def _rows(runtime, sql, *args):
    async with runtime.engine.connect() as conn:
        apg = await driver_connection(conn)
        return await apg.fetch(sql, *args)


async def test_a_bad_batch_keeps_every_good_event_and_says_why_for_each_bad_one(app_client):
    runtime = app_client.app.state.runtime
    first = await app_client.post(
        "/v1/events", json=[event("D0", 2, vn(2026, 8, 3), event_id="known", due_at=vn(2026, 8, 9))],
        headers=auth(SOURCE_KEY),
    )
    assert first.json()["accepted"] == 1
    naive = event("D2", 2, vn(2026, 8, 3))
    naive["occurred_at"] = "2026-08-03T08:00:00"
    batch = [
        event("D1", 2, vn(2026, 8, 3), event_id="good-1", due_at=vn(2026, 8, 10)),
        {"event_id": "no-status", "dossier_code": "D9", "unit_code": "H44.03", "procedure_code": "P",
         "occurred_at": "2026-08-03T08:00:00+07:00"},
        naive,
        event("D3", 2, vn(2026, 8, 3), unit="H99.99"),
        event("D0", 2, vn(2026, 8, 3), event_id="known", due_at=vn(2026, 8, 9)),  # exact re-send
        event("D0", 4, vn(2026, 8, 4), event_id="known"),  # same id, different body
        "not an object",
        event("D1", 9, vn(2026, 8, 5), event_id="good-2"),
        event("D1", 9, vn(2026, 8, 5), event_id="good-2"),  # duplicate inside the batch
    ]
    response = await app_client.post("/v1/events", json=batch, headers=auth(SOURCE_KEY))
    assert response.status_code == 200
    body = response.json()
    outcome = [(r["index"], r["status"], r.get("reason")) for r in body["results"]]
    assert outcome == [
        (0, "accepted", None),
        (1, "rejected", "missing_field"),
        (2, "rejected", "naive_timestamp"),
        (3, "rejected", "unknown_unit"),
        (4, "duplicate", None),
        (5, "rejected", "conflict"),
        (6, "rejected", "not_an_object"),
        (7, "accepted", None),
        (8, "duplicate", None),
    ]
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (2, 2, 5)

    stored = await _rows(runtime, "SELECT event_id, body FROM events ORDER BY seq")
    assert [r["event_id"] for r in stored] == ["known", "good-1", "good-2"]
    assert stored[0]["body"]["status"] == 2  # the first body under "known" stands
    letters = await _rows(runtime, "SELECT reason, event_index, raw FROM dead_letters ORDER BY id")
    assert [(r["reason"], r["event_index"]) for r in letters] == [
        ("missing_field", 1), ("naive_timestamp", 2), ("unknown_unit", 3), ("conflict", 5), ("not_an_object", 6)]
    assert orjson.loads(letters[1]["raw"])["occurred_at"] == "2026-08-03T08:00:00"

    assert await drain(runtime) == 3
    scores = (await app_client.get("/v1/scores/H44.03?period=2026-08", headers=auth(READER_KEY))).json()
    assert scores["counters"]["received"] == 2


async def test_ndjson_with_a_broken_line(app_client):
    lines = [
        orjson.dumps(event("N1", 2, vn(2026, 8, 3))),
        b'{"event_id": "broken", ',
        orjson.dumps(event("N1", 9, vn(2026, 8, 4))),
    ]
    response = await app_client.post(
        "/v1/events", content=b"\n".join(lines) + b"\n",
        headers={**auth(ADMIN_KEY), "content-type": "application/x-ndjson"},
    )
    assert response.status_code == 200
    assert [r["status"] for r in response.json()["results"]] == ["accepted", "rejected", "accepted"]
    assert response.json()["results"][1]["reason"] == "invalid_json"


async def test_a_body_that_is_not_json_is_a_400_problem_and_is_dead_lettered(app_client):
    response = await app_client.post("/v1/events", content=b"{nope", headers={**auth(ADMIN_KEY),
                                                                               "content-type": "application/json"})
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "invalid_json"
    letters = await _rows(app_client.app.state.runtime, "SELECT reason, raw FROM dead_letters")
    assert [(r["reason"], r["raw"]) for r in letters] == [("invalid_json", "{nope")]


async def test_all_rejected_is_422_with_every_reason(app_client):
    response = await app_client.post("/v1/events", json=[{"status": 2}], headers=auth(ADMIN_KEY))
    assert response.status_code == 422
    assert response.json()["results"][0]["reason"] == "missing_field"


async def test_limits_are_413(app_client):
    too_many = [event(f"M{i}", 2, vn(2026, 8, 3)) for i in range(1001)]
    response = await app_client.post("/v1/events", json=too_many, headers=auth(ADMIN_KEY))
    assert (response.status_code, response.json()["code"]) == (413, "too_many_events")
    runtime = app_client.app.state.runtime
    limit = runtime.settings.max_body_bytes
    response = await app_client.post("/v1/events", content=b"[" + b" " * limit + b"]",
                                     headers={**auth(ADMIN_KEY), "content-type": "application/json"})
    assert (response.status_code, response.json()["code"]) == (413, "too_large")
    big = event("B1", 2, vn(2026, 8, 3), attributes={"note": "x" * (runtime.settings.max_event_bytes + 1)})
    response = await app_client.post("/v1/events", json=[big, event("B2", 2, vn(2026, 8, 3))],
                                     headers=auth(ADMIN_KEY))
    assert [r.get("reason") for r in response.json()["results"]] == ["too_large", None]


async def test_auth_roles_and_unit_scope(app_client):
    one = [event("A1", 2, vn(2026, 8, 3))]
    assert (await app_client.post("/v1/events", json=one)).status_code == 401
    assert (await app_client.post("/v1/events", json=one, headers=auth("nope"))).json()["code"] == "bad_api_key"
    assert (await app_client.post("/v1/events", json=one, headers=auth(READER_KEY))).status_code == 403
    # A source key bound to H44.03 may not post for H44.07.
    response = await app_client.post(
        "/v1/events", json=[event("A2", 2, vn(2026, 8, 3), unit="H44.07"), event("A3", 2, vn(2026, 8, 3))],
        headers=auth(SOURCE_KEY),
    )
    assert [r.get("reason") for r in response.json()["results"]] == ["unit_not_allowed", None]
    # The source of an event is the key's, whatever the body says.
    stored = await _rows(app_client.app.state.runtime, "SELECT source FROM events")
    assert [r["source"] for r in stored] == ["igate-h44-03"]


async def test_a_nul_character_costs_only_its_own_event(app_client):
    """PostgreSQL cannot store U+0000; such an event used to fail its whole batch with a 500."""
    runtime = app_client.app.state.runtime
    nul_step = event("N2", 4, vn(2026, 8, 4), event_id="nul-step", step={"name": "Th\u1ea9m \x00 \u0111\u1ecbnh"})
    literal = event("N3", 2, vn(2026, 8, 3), event_id="literal", attributes={"note": "\\u0000 is just text"})
    batch = [event("N1", 2, vn(2026, 8, 3), event_id="good"), event("N1", 4, vn(2026, 8, 4), event_id="nul\x00id"),
             nul_step, literal]
    response = await app_client.post("/v1/events", content=orjson.dumps(batch),
                                     headers={**auth(ADMIN_KEY), "Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    outcome = [(r["status"], r.get("reason")) for r in response.json()["results"]]
    assert outcome == [("accepted", None), ("rejected", "bad_field"), ("rejected", "bad_field"), ("accepted", None)]
    letters = await _rows(runtime, "SELECT reason, event_index FROM dead_letters ORDER BY id")
    assert [(r["reason"], r["event_index"]) for r in letters] == [("bad_field", 1), ("bad_field", 2)]
    stored = await _rows(runtime, "SELECT event_id FROM events ORDER BY seq")
    assert [r["event_id"] for r in stored] == ["good", "literal"]
