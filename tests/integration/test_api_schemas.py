"""Every answer is the shape its model declares (the models forbid undeclared keys, so a key a route sends
and OpenAPI does not document fails here), the routes that read raw bodies document them, and one
reading of a unit and a period answers every route the same way."""

from __future__ import annotations

import base64

import pytest
from pydantic import BaseModel, TypeAdapter

from services.api import schemas as api
from services.indicators.rules.scoring import COMPONENTS_BY_ID
from services.ingest.schemas import EventsAnswer, PortalReply
from tests.conftest import ADMIN_KEY, READER_KEY, auth, drain
from tests.integration.test_drilldown_complement import communes  # noqa: F401 - a fixture
from tests.integration.test_full_score import load

FLAGS = ("overdue", "two_plus_supplements", "overdue_step", "open_overdue", "not_online", "input_gaps")
TREES = ("progress", "online", "payment", "digitized", "satisfaction", "transparency")


def reads() -> list[tuple[str, dict, type[BaseModel]]]:
    out = [
        ("/v1/scores/H44.03", {"period": "2026-08"}, api.ScoreDocument),
        ("/v1/scores/H44", {"period": "2026-Q3", "layout": "decision"}, api.ScoreDocument),
        ("/v1/scores", {"parent": "H44", "period": "2026-08"}, api.LeagueTable),
        ("/v1/units/H44/early-warning", {"period": "2026-08"}, api.EarlyWarning),
        ("/v1/catalog/procedures", {"unit": "H44"}, api.Catalogue),
        ("/v1/snapshots", {}, api.Snapshots),
    ]
    out += [("/v1/units/H44/dossiers", {"period": "2026-08", "flag": f}, api.FlaggedDossiers) for f in FLAGS]
    out += [(f"/v1/units/H44/components/{cid}/items", {"period": "2026-08"}, api.ComponentItems)
            for cid in COMPONENTS_BY_ID if cid != "2.2"]
    out += [(f"/v1/portal/{t}-tree", {"unit": "H44", "period": "2026-08"}, api.PortalTree) for t in TREES]
    return out


async def test_every_read_answers_the_shape_it_declares(app_client, communes):  # noqa: F811
    await load(app_client)
    await drain(app_client.app.state.runtime)
    taken = await app_client.post("/v1/snapshots", json={"period": "2026-08"}, headers=auth(ADMIN_KEY))
    assert taken.status_code == 200, taken.text
    api.SnapshotTaken.model_validate_json(taken.content)
    document = app_client.app.openapi()
    kinds = set()
    for path, params, model in [*reads(), (f"/v1/snapshots/{taken.json()['id']}/compare", {}, api.SnapshotComparison)]:
        response = await app_client.get(path, params=params, headers=auth(READER_KEY))
        assert response.status_code == 200, (path, response.text)
        answer = model.model_validate_json(response.content, strict=True)
        if isinstance(answer, api.ComponentItems):
            kinds |= {item.kind for item in answer.items}
        template = next(p for p in document["paths"] if _matches(p, path))
        declared = document["paths"][template]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert declared == {"$ref": f"#/components/schemas/{model.__name__}"}, path
    assert kinds == {"dossier", "procedure", "feedback", "unit"}  # every kind of item was checked


def _matches(template: str, path: str) -> bool:
    parts, wanted = template.split("/"), path.split("/")
    return len(parts) == len(wanted) and all(p == w or p.startswith("{") for p, w in zip(parts, wanted))


async def test_the_ingest_answers_are_their_declared_shapes(app_client):
    from tests.support.events import event, vn

    posted = await app_client.post("/v1/events", json=[event("S1", 2, vn(2026, 8, 3)), {"event_id": "x"}],
                                   headers=auth(ADMIN_KEY))
    assert posted.status_code == 200, posted.text
    assert EventsAnswer.model_validate_json(posted.content, strict=True).rejected == 1
    login = await app_client.post("/v1/dvcqg/login", json={"username": "x", "password": ADMIN_KEY})
    assert PortalReply.model_validate_json(login.content).session


def test_routes_that_read_raw_bodies_document_them(settings):
    from services.app import create_app

    document = create_app(settings=settings).openapi()
    schemas = document["components"]["schemas"]
    bodies = {("/v1/events", "post"): "DossierEvent", ("/v1/dvcqg", "post"): "PortalEnvelope",
              ("/v1/dvcqg/{service}", "post"): "PortalEnvelope", ("/v1/dvcqg/login", "post"): "PortalLogin",
              ("/v1/feedback", "post"): "FeedbackIn", ("/v1/catalog/procedures", "put"): "ProcedureIn",
              ("/v1/reported-totals", "put"): "ReportedTotalIn", ("/v1/units", "put"): "UnitIn",
              ("/v1/snapshots", "post"): "SnapshotTakeRequest"}
    for (path, method), model in bodies.items():
        body = document["paths"][path][method]["requestBody"]
        assert f'"#/components/schemas/{model}"' in str(body).replace("'", '"'), (path, body)
        assert model in schemas
    events = document["paths"]["/v1/events"]["post"]["requestBody"]["content"]
    assert set(events) == {"application/json", "application/x-ndjson"}
    assert schemas["DossierEvent"]["required"] == ["event_id", "dossier_code", "unit_code", "procedure_code",
                                                   "status", "occurred_at"]
    assert "paid_online" in schemas["DossierEvent"]["properties"]["attributes"]["properties"]


UNIT_ROUTES = ["/v1/scores/{u}", "/v1/scores/{u}/procedures", "/v1/scores/{u}/fields", "/v1/scores/{u}/history",
               "/v1/reports/{u}.xlsx", "/v1/units/{u}/dossiers", "/v1/units/{u}/components/2.1/items",
               "/v1/units/{u}/early-warning", "/v1/units/{u}/targets"]
QUERY_UNIT_ROUTES = [("/v1/scores", "parent"), ("/v1/portal/progress-tree", "unit"),
                     ("/v1/catalog/procedures", "unit"), ("/v1/parked-dossiers", "unit")]


@pytest.mark.parametrize("bad", ["0000", "2026-13", "2026-Q5", "2026\n", "26-08", "1999-08"])
async def test_one_reading_of_unit_and_period(app_client, bad):
    for route in UNIT_ROUTES:
        path = route.format(u="H44")
        r = await app_client.get(path, params={"period": bad}, headers=auth(READER_KEY))
        assert (r.status_code, r.json()["code"]) == (400, "bad_period"), (path, r.text)
        r = await app_client.get(route.format(u="NOPE"), params={"period": "2026-08"}, headers=auth(READER_KEY))
        assert (r.status_code, r.json()["code"]) == (404, "unknown_unit"), (route, r.text)
        r = await app_client.get(route.format(u="NOPE"), params={"period": bad})
        assert r.status_code == 401, (route, r.text)  # who asks is checked before anything is looked up
    for path, name in QUERY_UNIT_ROUTES:
        r = await app_client.get(path, params={name: "NOPE"}, headers=auth(READER_KEY))
        assert (r.status_code, r.json()["code"]) == (404, "unknown_unit"), (path, r.text)
    r = await app_client.get("/v1/snapshots", params={"period": bad}, headers=auth(READER_KEY))
    assert (r.status_code, r.json()["code"]) == (400, "bad_period")


async def test_a_cursor_that_is_not_a_position_is_400(app_client):
    cursor = base64.urlsafe_b64encode(b"abc").decode()
    r = await app_client.get("/v1/scores", params={"parent": "H44", "cursor": cursor}, headers=auth(READER_KEY))
    assert (r.status_code, r.json()["code"]) == (400, "bad_cursor")


@pytest.mark.parametrize(("body", "status", "code"), [
    (b"null", 422, "bad_units"),
    (b"[null]", 422, "bad_units"),
    (b'[{"code": 5, "level": "COMMUNE"}]', 422, "bad_units"),
    (b'[{"code": "X1", "level": "COMMUNE", "e_certified_copy": {}}]', 422, "bad_units"),
    (b'[{"code": "X1", "level": "COMMUNE"}, {"code": "X1", "level": "COMMUNE"}]', 422, "bad_units"),
    (b"[]", 400, "empty_batch"),
])
async def test_a_unit_tree_that_cannot_be_read_is_refused(app_client, body, status, code):
    r = await app_client.put("/v1/units", content=body,
                             headers={**auth(ADMIN_KEY), "content-type": "application/json"})
    assert (r.status_code, r.json()["code"]) == (status, code), r.text


async def test_a_lookup_takes_an_object(app_client):
    r = await app_client.post("/v1/dvcqg/LayThuTuc", json=[{"MaTTHC": "P1"}], headers=auth(ADMIN_KEY))
    assert (r.status_code, r.json()["reason"]) == (400, "not_an_object")
    r = await app_client.post("/v1/dvcqg/LayThuTuc", json={"MaTTHC": "P1"}, headers=auth(ADMIN_KEY))
    assert (r.status_code, r.json()["result"]) == (200, [])


def test_period_pattern_is_what_the_api_accepts():
    import re

    from shared.timeutil import PERIOD_PATTERN, BadPeriod, parse_period

    for key in ("2026", "2026-08", "2026-Q3", "2000-01", "2099-12"):
        assert re.fullmatch(PERIOD_PATTERN.strip("^$"), key) and parse_period(key).key == key
    for key in ("1999", "2100", "2026-00", "2026-Q0", "2026-8", "2026\n"):
        assert not re.fullmatch(PERIOD_PATTERN.strip("^$"), key)
        with pytest.raises(BadPeriod):
            parse_period(key)
    assert TypeAdapter(api.ReportedTotalIn).json_schema()["properties"]["period"]["pattern"] == PERIOD_PATTERN


async def test_a_feed_listing_a_row_twice_keeps_the_last(app_client):
    totals = [{"unit_code": "H44.03", "period": "2026-08", "received": 5},
              {"unit_code": "H44.03", "period": "2026-08", "received": 7.0}]
    r = await app_client.put("/v1/reported-totals", json=totals, headers=auth(ADMIN_KEY))
    assert (r.status_code, r.json()["accepted"]) == (200, 2), r.text
    async with app_client.app.state.runtime.engine.connect() as conn:
        from sqlalchemy import text

        stored = (await conn.execute(text("SELECT received FROM reported_totals WHERE unit_code = 'H44.03' "
                                          "AND period = '2026-08'"))).scalar_one()
    assert stored == 7
    procedures = [{"unit_code": "H44.03", "procedure_code": "P9", "name": "first", "valid_from": "2026-08-01"},
                  {"unit_code": "H44.03", "procedure_code": "P9", "name": "second", "valid_from": "2026-08-01"}]
    r = await app_client.put("/v1/catalog/procedures", json=procedures, headers=auth(ADMIN_KEY))
    assert (r.status_code, r.json()["accepted"], r.json()["versions_written"]) == (200, 2, 1), r.text
    listed = await app_client.get("/v1/catalog/procedures", params={"unit": "H44.03"}, headers=auth(READER_KEY))
    assert [i["name"] for i in listed.json()["items"] if i["procedure_code"] == "P9"] == ["second"]


async def test_answers_keep_the_key_order_they_had_before_their_models(app_client):
    await load(app_client)
    await drain(app_client.app.state.runtime)
    taken = await app_client.post("/v1/snapshots", json={"period": "2026-08"}, headers=auth(ADMIN_KEY))
    assert list(taken.json()) == ["id", "period", "kind", "label", "taken_at", "units"]
    compared = await app_client.get(f"/v1/snapshots/{taken.json()['id']}/compare", headers=auth(READER_KEY))
    assert list(compared.json()["snapshot"]) == ["id", "period", "kind", "label", "taken_at", "policies"]
    listed = await app_client.get("/v1/units/H44/dossiers", params={"period": "2026-08", "flag": "overdue"},
                                  headers=auth(READER_KEY))
    item = listed.json()["items"][0]
    assert list(item)[:4] == ["dossier_code", "unit_code", "procedure_code", "status"]
    assert list(item)[-1] == "status_name"  # added to the query's row last


async def test_an_unknown_component_is_answered_before_the_period(app_client):
    for cid, status, code in (("9.9", 404, "unknown_component"), ("2.2", 400, "no_penalty")):
        r = await app_client.get(f"/v1/units/H44/components/{cid}/items", params={"period": "bad"},
                                 headers=auth(READER_KEY))
        assert (r.status_code, r.json()["code"]) == (status, code)


async def test_an_identifier_held_twice_is_refused(app_client):
    units = [{"code": "X1", "level": "COMMUNE", "parent": "H44", "identifier": "ID-1"},
             {"code": "X2", "level": "COMMUNE", "parent": "H44", "identifier": "ID-1"}]
    r = await app_client.put("/v1/units", json=units, headers=auth(ADMIN_KEY))
    assert (r.status_code, r.json()["code"]) == (422, "bad_units"), r.text
    assert "X1" not in app_client.app.state.runtime.units


async def test_a_lookup_refuses_fields_of_the_wrong_type(app_client):
    for body in ({"MaTTHC": 5}, {"service": "TraCuuHoSo", "MaHoSo": ["x"]}, {"MaTTHC": "P1", "data": 3}):
        r = await app_client.post("/v1/dvcqg/LayThuTuc" if "service" not in body else "/v1/dvcqg", json=body,
                                  headers=auth(ADMIN_KEY))
        assert (r.status_code, r.json()["reason"]) == (400, "bad_field"), (body, r.text)
