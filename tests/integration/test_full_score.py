"""All six groups from the real path: catalogue, events, feedback and reported totals in, GET /v1/scores out."""

from tests.conftest import ADMIN_KEY, READER_KEY, SOURCE_KEY, auth, drain
from tests.support.events import event, vn

CATALOGUE = [
    {"unit_code": "H44.03", "procedure_code": "P1", "name": "Cấp giấy phép", "online_level": "full",
     "online_services": 2, "fee_required": True, "for_individuals": True, "result_required": True,
     "legal_days": 5, "decision_date": "2026-08-03", "legal_basis_effective_date": "2026-08-20",
     "made_public_date": "2026-08-05", "complete_parts": True, "valid_from": "2026-01-01"},
    {"unit_code": "H44.03", "procedure_code": "P2", "online_level": "none", "fee_required": True,
     "decision_date": "2026-08-18", "legal_basis_effective_date": "2026-08-20", "complete_parts": False,
     "valid_from": "2026-01-01"},
]
ALL_TRUE = {"e_result": True, "result_required": True, "digitized": True, "reused_digitized": True,
            "from_data_store": True, "population_data": True, "fee_required": True, "fee_data": True,
            "paid_online": True, "synced_to_portal": True}


def components(body) -> dict:
    return {c["id"]: c for g in body["groups"] for c in g["components"]}


async def scores(client, unit="H44.03", period="2026-08", **params):
    response = await client.get(f"/v1/scores/{unit}", params={"period": period, **params},
                                headers=auth(READER_KEY))
    assert response.status_code == 200, response.text
    return response.json()


async def load(client):
    r = await client.put("/v1/catalog/procedures", json=CATALOGUE, headers=auth(ADMIN_KEY))
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 2
    batch = [
        event("D1", 2, vn(2026, 8, 3), procedure="P1", channel=2, due_at=vn(2026, 8, 10), attributes=ALL_TRUE),
        event("D1", 4, vn(2026, 8, 3, 9), procedure="P1"),
        event("D1", 9, vn(2026, 8, 5), procedure="P1"),
        # fee-bearing, not paid online, processing starts in September: 3.6 counts it in September
        event("D2", 2, vn(2026, 8, 28), procedure="P2", due_at=vn(2026, 9, 30),
              attributes={"fee_required": True, "digitized": True}),
        event("D2", 4, vn(2026, 9, 2), procedure="P2"),
        # two supplement requests: overdue whatever its dates
        event("D3", 2, vn(2026, 8, 4), procedure="P2", due_at=vn(2026, 9, 30)),
        event("D3", 5, vn(2026, 8, 5), procedure="P2"),
        event("D3", 4, vn(2026, 8, 6), procedure="P2"),
        event("D3", 5, vn(2026, 8, 7), procedure="P2"),
    ]
    r = await client.post("/v1/events", json=batch, headers=auth(ADMIN_KEY))
    assert r.json()["accepted"] == len(batch), r.text
    await drain(client.app.state.runtime)
    feedback = [
        {"feedback_id": "F1", "unit_code": "H44.03", "kind": "received", "occurred_at": vn(2026, 8, 5).isoformat(),
         "due_at": vn(2026, 8, 15).isoformat()},
        {"feedback_id": "F1", "unit_code": "H44.03", "kind": "handled", "occurred_at": vn(2026, 8, 10).isoformat()},
        {"feedback_id": "F1", "unit_code": "H44.03", "kind": "rated", "rating": "satisfied",
         "occurred_at": vn(2026, 8, 11).isoformat()},
        {"feedback_id": "F2", "unit_code": "H44.03", "dossier_code": "D1", "kind": "received",
         "occurred_at": vn(2026, 8, 6).isoformat(), "due_at": vn(2026, 8, 8).isoformat()},
        {"feedback_id": "F2", "unit_code": "H44.03", "kind": "handled", "occurred_at": vn(2026, 8, 12).isoformat()},
        {"feedback_id": "F3", "unit_code": "H44", "kind": "received", "occurred_at": vn(2026, 8, 7).isoformat()},
        {"feedback_id": "BAD", "unit_code": "H44.03", "kind": "liked", "occurred_at": vn(2026, 8, 7).isoformat()},
    ]
    r = await client.post("/v1/feedback", json=feedback, headers=auth(ADMIN_KEY))
    assert r.status_code == 200, r.text
    assert (r.json()["accepted"], r.json()["rejected"]) == (6, 1)
    assert r.json()["results"][6]["reason"] == "bad_kind"
    r = await client.put("/v1/reported-totals", json=[{"unit_code": "H44.03", "period": "2026-08", "received": 4}],
                         headers=auth(ADMIN_KEY))
    assert r.status_code == 200, r.text


async def test_every_component_from_every_feed(app_client):
    await load(app_client)
    body = await scores(app_client)
    c = components(body)
    got = {cid: (x["status"], x["numerator"], x["denominator"]) for cid, x in c.items()}
    assert got["1.1"] == ("ok", 1, 2)  # P2 decided 2 days before the legal basis takes effect: late
    assert got["1.2"] == ("ok", 1, 2)  # P2 never made public
    assert got["1.3"] == ("ok", 1, 2)
    assert got["1.4"] == ("ok", 1, 4)  # 1 synced / max(3 received, 4 reported)
    assert got["2.1"] == ("ok", 2, 3)  # D3 overdue (two supplement requests)
    assert got["3.1"] == ("ok", 1, 2)
    assert got["3.2"] == ("ok", 2, 2)  # P1's two online services, with an online dossier
    assert got["3.3"] == ("ok", 1, 3)
    assert got["3.4"] == ("ok", 1, 2)
    assert got["3.5"] == ("ok", 1, 2)
    assert got["3.6"] == ("ok", 1, 1)  # D2's processing starts in September
    assert got["4.1"] == ("ok", 1, 3)
    assert got["4.2"] == ("ok", 2, 3)  # D2 digitised, no result required
    assert got["4.3"][0] in ("ok", "no_data")  # depends on whether the unit tree says who offers e-copies
    assert got["4.4"] == ("ok", 1, 3)
    assert got["4.6"] == ("ok", 1, 1)
    assert got["4.7"] == ("ok", 1, 3)
    assert got["5.1"] == ("ok", 1, 2)  # F2 handled after its due time
    assert got["5.2"] == ("ok", 1, 2)
    assert got["5.3"] == ("ok", 1, 3)  # D1 complained about, D3 overdue
    assert body["policies"]["payment_group_score"] == "sum_of_components"
    tttt = next(g for g in body["groups"] if g["code"] == "TTTT")
    assert tttt["score"] == round(sum(x["score"] for x in tttt["components"]), 2) == 6 + 1.25 + 1.25

    september = components(await scores(app_client, period="2026-09"))
    assert (september["3.6"]["numerator"], september["3.6"]["denominator"]) == (0, 1)
    quarter = components(await scores(app_client, period="2026-Q3"))
    assert (quarter["3.6"]["numerator"], quarter["3.6"]["denominator"]) == (1, 2)
    # D2 is still open and due 30 September: on time in August's score (T = 31 August), overdue in the
    # quarter's (T = the end of September), as indicators.md §3 says.
    assert (quarter["2.1"]["numerator"], quarter["2.1"]["denominator"]) == (1, 3)

    # The parent counts its own feedback too, and distinct procedures over its subtree.
    parent = components(await scores(app_client, unit="H44"))
    assert (parent["5.1"]["numerator"], parent["5.1"]["denominator"]) == (2, 3)
    assert (parent["3.1"]["numerator"], parent["3.1"]["denominator"]) == (1, 2)

    decision = await scores(app_client, layout="decision")
    assert [g["code"] for g in decision["groups"]] == ["I", "II", "III", "IV", "V"]
    assert decision["total"]["score"] == body["total"]["score"]


async def test_a_unit_without_catalogue_is_no_data_not_zero(app_client):
    await load(app_client)
    c = components(await scores(app_client, unit="H44.07"))
    for cid in ("1.1", "1.2", "1.3", "3.1", "3.2", "3.4", "3.5", "4.6"):
        assert c[cid]["status"] == "no_data", cid
    body = await scores(app_client, unit="H44.07")
    assert body["total"]["points_without_data"] >= 6 + 4 + 2 + 2 + 4 + 2 + 2 + 2


async def test_catalogue_is_versioned_and_a_late_change_rescores_the_past(app_client):
    await load(app_client)
    before = components(await scores(app_client))["3.1"]
    late = [{**CATALOGUE[1], "online_level": "partial", "online_services": 1, "valid_from": "2026-08-20"}]
    r = await app_client.put("/v1/catalog/procedures", json=late, headers=auth(ADMIN_KEY))
    assert r.status_code == 200, r.text
    after = components(await scores(app_client))["3.1"]
    july = components(await scores(app_client, period="2026-07"))["3.1"]
    assert (before["numerator"], after["numerator"], july["numerator"]) == (1, 2, 1)
    listed = await app_client.get("/v1/catalog/procedures", params={"unit": "H44.03", "as_of": "2026-07"},
                                  headers=auth(READER_KEY))
    assert [i["online_level"] for i in listed.json()["items"]] == ["full", "none"]

    # A full replace drops what it does not list, from its valid_from on.
    r = await app_client.put("/v1/catalog/procedures", params={"mode": "full", "valid_from": "2026-10-01"},
                             json=[CATALOGUE[0]], headers=auth(ADMIN_KEY))
    assert r.status_code == 200, r.text
    october = components(await scores(app_client, period="2026-10"))["3.1"]
    assert (october["numerator"], october["denominator"]) == (1, 1)
    assert components(await scores(app_client))["3.1"]["denominator"] == 2


async def test_feed_errors_are_problems_with_codes(app_client):
    r = await app_client.put("/v1/catalog/procedures", content=b"not json", headers=auth(ADMIN_KEY))
    assert r.status_code == 400 and r.json()["code"] == "invalid_json"
    r = await app_client.put("/v1/catalog/procedures", json=[{"unit_code": "NOPE", "procedure_code": "P"}],
                             headers=auth(ADMIN_KEY))
    assert r.status_code == 422 and r.json()["results"][0]["reason"] == "unknown_unit"
    r = await app_client.put("/v1/catalog/procedures", json=CATALOGUE, headers=auth(SOURCE_KEY))
    assert r.status_code == 403
    r = await app_client.post("/v1/feedback", json=[{"feedback_id": "X", "unit_code": "H44.07", "kind": "received",
                                                     "occurred_at": vn(2026, 8, 1).isoformat()}],
                              headers=auth(SOURCE_KEY))
    assert r.status_code == 422 and r.json()["results"][0]["reason"] == "unit_not_allowed"
    r = await app_client.put("/v1/reported-totals", json=[{"unit_code": "H44.03", "period": "2026-13",
                                                          "received": 1}], headers=auth(ADMIN_KEY))
    assert r.status_code == 422 and r.json()["results"][0]["reason"] == "bad_period"


async def test_e_certified_copy_from_the_unit_tree(app_client):
    r = await app_client.put("/v1/units", json=[{"code": "H44.100", "name": "UBND Phường Việt Trì", "level": "COMMUNE",
                                                 "parent": "H44", "e_certified_copy": True}],
                             headers={**auth(ADMIN_KEY), "content-type": "application/json"})
    assert r.status_code == 200, r.text
    commune = components(await scores(app_client, unit="H44.100"))["4.3"]
    department = components(await scores(app_client, unit="H44.03"))["4.3"]
    assert (commune["numerator"], commune["denominator"], commune["score"]) == (1, 1, 2.0)
    assert (department["status"], department["score"]) == ("ok", 2.0)  # manages no commune: full marks
