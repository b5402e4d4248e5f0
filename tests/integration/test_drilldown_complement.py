"""Each component's drill-down lists exactly what costs it points: the items of its denominator that
are not in its numerator, for all 22 components, on a generated province (dossiers, feedback, catalogue,
communes) through the real ingest.

The expected sets come from the rule functions, not from the drill-down's own queries: a dossier's
contribution (rules/counters.py, stored with the dossier) expanded to the period, put through
``measures_of`` (rules/scoring.py) as a one-dossier input, says whether the dossier is in a component's
denominator and numerator; feedback items come from rules/feedback.py. Every drill-down is also held
to the published score: its size is the component's denominator minus its numerator.
"""

from __future__ import annotations

import datetime as dt
import random

import orjson
import pytest

from services.indicators.rules.counters import ALL_PROCEDURES, Contribution, expand
from services.indicators.rules.feedback import (
    FeedbackEvent,
    complains_about_dossier,
    derive_items,
    feedback_counts,
)
from services.indicators.rules.scoring import COMPONENTS_BY_ID, ScoreInputs, measures_of
from shared.timeutil import parse_period
from tests.conftest import ADMIN_KEY, READER_KEY, auth, drain
from tests.support.events import event, vn

UNITS = ("H44.03", "H44.07", "H44.100", "H44.101")
PROCEDURES = ("P1", "P2", "P3", "P4", "P5")
ATTRIBUTES = ("synced_to_portal", "e_result", "result_required", "digitized", "reused_digitized",
              "from_data_store", "population_data", "fee_required", "paid_online")
DOSSIER_COMPONENTS = ("1.4", "2.1", "3.3", "3.6", "4.1", "4.2", "4.4", "4.5", "4.7", "5.3")
CATALOGUE_COMPONENTS = ("1.1", "1.2", "1.3", "3.1", "3.2", "3.4", "3.5", "4.6")
FEEDBACK_COMPONENTS = ("5.1", "5.2")
# 2.2 (mean working days) is tracked without points (max 0): nothing costs it points, so it has no
# drill-down and the API says so (400 no_penalty).
NO_DRILL_DOWN = ("2.2",)
assert set(DOSSIER_COMPONENTS + CATALOGUE_COMPONENTS + FEEDBACK_COMPONENTS + NO_DRILL_DOWN + ("4.3",)) == set(
    COMPONENTS_BY_ID) and len(COMPONENTS_BY_ID) == 22


def province(seed: int) -> tuple[list[dict], list[dict], list[dict]]:
    """Dossier events, feedback events and catalogue entries of a generated province."""
    rng = random.Random(seed)
    events, feedback = [], []
    for i in range(90):
        code, unit, procedure = f"D{seed}-{i:03d}", rng.choice(UNITS), rng.choice(PROCEDURES)
        at = vn(2026, rng.choice((7, 8, 8, 8, 9)), rng.randint(1, 25), rng.randint(7, 16))
        first = {"unit": unit, "procedure": procedure}
        if rng.random() < 0.9:
            first["due_at"] = at + dt.timedelta(days=rng.randint(1, 25))
        channel = rng.choice((1, 2, 2, 3, None))
        if channel is not None:
            first["channel"] = channel
        attributes = {name: value for name in ATTRIBUTES if (value := rng.choice((True, False, None))) is not None}
        if attributes:
            first["attributes"] = attributes
        events.append(event(code, 2, at, **first))
        later = {"unit": unit, "procedure": procedure}
        for _ in range(2 if rng.random() < 0.15 else 0):
            at += dt.timedelta(days=rng.randint(1, 3))
            events.append(event(code, 5, at, **later))
            at += dt.timedelta(days=rng.randint(1, 3))
            events.append(event(code, 4, at, **later))
        if rng.random() < 0.6:  # the processing start (3.6's month) may fall in a later month
            at += dt.timedelta(days=rng.randint(0, 35))
            events.append(event(code, 4, at, **later))
        if rng.random() < 0.75:
            at += dt.timedelta(days=rng.randint(1, 25))
            events.append(event(code, rng.choice((9, 9, 10, 8)), at, **later))
        if rng.random() < 0.15:  # feedback about the dossier: a complaint (5.3) whatever its rating
            received = vn(2026, 8, rng.randint(1, 28))
            feedback.append({"feedback_id": f"F-{code}", "unit_code": unit, "dossier_code": code,
                             "kind": "received", "occurred_at": received.isoformat()})
    for i in range(30):
        unit, received = rng.choice(UNITS), vn(2026, rng.choice((7, 8, 8, 9)), rng.randint(1, 28), 9)
        fid = f"F{seed}-{i:02d}"
        feedback.append({"feedback_id": fid, "unit_code": unit, "kind": "received", "occurred_at": received.isoformat(),
                         "due_at": (received + dt.timedelta(days=rng.randint(3, 15))).isoformat()})
        if rng.random() < 0.7:
            handled = received + dt.timedelta(days=rng.randint(1, 25))
            feedback.append({"feedback_id": fid, "unit_code": unit, "kind": "handled",
                             "occurred_at": handled.isoformat()})
            if rng.random() < 0.5:
                feedback.append({"feedback_id": fid, "unit_code": unit, "kind": "rated",
                                 "rating": rng.choice(("satisfied", "unsatisfied")),
                                 "occurred_at": (handled + dt.timedelta(hours=2)).isoformat()})
            if rng.random() < 0.15:
                feedback.append({"feedback_id": fid, "unit_code": unit, "kind": "recomplained",
                                 "occurred_at": (handled + dt.timedelta(days=1)).isoformat()})
    catalogue = []
    for unit in UNITS:
        for procedure in PROCEDURES:
            decision = dt.date(2026, rng.choice((6, 7, 8, 9)), rng.randint(1, 28))
            entry = {"unit_code": unit, "procedure_code": procedure, "valid_from": "2026-01-01",
                     "online_level": rng.choice(("none", "partial", "full")),
                     "online_services": rng.randint(0, 3), "fee_required": rng.random() < 0.5,
                     "for_individuals": rng.random() < 0.6, "complete_parts": rng.choice((True, False, None)),
                     "legal_days": rng.randint(3, 15), "decision_date": decision.isoformat(),
                     "legal_basis_effective_date": (decision + dt.timedelta(days=rng.randint(-20, 20))).isoformat()}
            if rng.random() < 0.7:
                entry["made_public_date"] = (decision + dt.timedelta(days=rng.randint(0, 15))).isoformat()
            catalogue.append(entry)
    return events, feedback, catalogue


async def items_of(client, unit: str, cid: str, period: str) -> list[dict]:
    out, cursor = [], None
    while True:
        params = {"period": period, "limit": 1000, **({"cursor": cursor} if cursor else {})}
        response = await client.get(f"/v1/units/{unit}/components/{cid}/items", params=params,
                                    headers=auth(READER_KEY))
        assert response.status_code == 200, (cid, response.text)
        out += response.json()["items"]
        cursor = response.json()["next_cursor"]
        if not cursor:
            return out


def one_dossier_measures(contribution: Contribution, period: str, complaint: bool, policy, seconds_per_day: int):
    """The component measures of a single dossier in ``period``, by the scores' own functions."""
    counts = {metric: value for (_, procedure, key, metric), value in expand(contribution).items()
              if procedure == ALL_PROCEDURES and key == period}
    on_time = counts.get("on_time", 0) > 0
    inputs = ScoreInputs(counts=counts, complaint_dossiers=1 if complaint and on_time else 0)
    return measures_of(inputs, policy, seconds_per_day=seconds_per_day)


@pytest.fixture
async def communes(app_client):
    """Three communes whose offer of e-certified copies is known (every other one: not known); the unit
    tree outlives a test, so their offers are put back afterwards."""
    from sqlalchemy import text

    runtime = app_client.app.state.runtime
    offers = {"H44.100": True, "H44.101": False, "H44.102": False}
    before = {code: runtime.units.units[code].e_certified_copy for code in offers}
    units = [{**runtime.units.units[code].as_dict(), "e_certified_copy": offer} for code, offer in offers.items()]
    r = await app_client.put("/v1/units", json=units, headers=auth(ADMIN_KEY))
    assert r.status_code == 200, r.text
    yield offers
    async with runtime.engine.begin() as conn:  # PUT /v1/units keeps a known offer when given none
        for code, offer in before.items():
            await conn.execute(text("UPDATE units SET e_certified_copy = :offer WHERE code = :code"),
                               {"offer": offer, "code": code})
    await runtime.reload_units()


@pytest.mark.parametrize("seed", [766, 2026])
async def test_each_drill_down_lists_exactly_what_costs_its_component_points(app_client, communes, seed):
    runtime = app_client.app.state.runtime
    policy = runtime.settings.policy
    events, feedback, catalogue = province(seed)
    r = await app_client.put("/v1/catalog/procedures", json=catalogue, headers=auth(ADMIN_KEY))
    assert r.status_code == 200 and r.json()["rejected"] == 0, r.text
    r = await app_client.post("/v1/events", json=events, headers=auth(ADMIN_KEY))
    assert r.status_code == 200 and r.json()["accepted"] == len(events), r.text
    r = await app_client.post("/v1/feedback", json=feedback, headers=auth(ADMIN_KEY))
    assert r.status_code == 200 and r.json()["rejected"] == 0, r.text
    await drain(runtime)

    async with runtime.engine.connect() as conn:
        from sqlalchemy import text

        rows = (await conn.execute(text("SELECT dossier_code, unit_code, contribution FROM dossiers"))).all()
    contributions = {}
    for code, unit, stored in rows:
        data = orjson.loads(stored) if isinstance(stored, str | bytes) else stored
        if data:
            contributions[code] = (unit, Contribution.from_json(data))
    assert len(contributions) == 90
    feedback_events = [FeedbackEvent(f["feedback_id"], f["unit_code"], f["kind"],
                                     dt.datetime.fromisoformat(f["occurred_at"]), f.get("dossier_code"),
                                     dt.datetime.fromisoformat(f["due_at"]) if f.get("due_at") else None,
                                     f.get("rating")) for f in feedback]
    feedback_items = derive_items(feedback_events)
    complaints = {i.dossier_code for i in feedback_items
                  if complains_about_dossier(i, policy.dossier_complaint_kinds)}
    weights = {(e["unit_code"], e["procedure_code"]): e["online_services"] or 1 for e in catalogue}

    checked = {cid: 0 for cid in COMPONENTS_BY_ID}
    for unit in ("H44", "H44.03", "H44.100", "H44.101"):
        subtree = set(runtime.units.subtree(unit))
        for period in ("2026-08", "2026-Q3"):
            card = (await app_client.get(f"/v1/scores/{unit}", params={"period": period},
                                         headers=auth(READER_KEY))).json()
            scored = {c["id"]: c for g in card["groups"] for c in g["components"]}
            costs = {cid: (s["denominator"] or 0) - (s["numerator"] or 0) for cid, s in scored.items()}
            measures = {code: one_dossier_measures(contribution, period, code in complaints, policy,
                                                   runtime.calendar.seconds_per_day)
                        for code, (owner, contribution) in contributions.items() if owner in subtree}

            for cid in DOSSIER_COMPONENTS:
                expected = {code for code, m in measures.items() if m[cid].denominator and not m[cid].numerator}
                listed = [i["dossier_code"] for i in await items_of(app_client, unit, cid, period)]
                assert len(listed) == len(set(listed))
                assert set(listed) == expected, (unit, period, cid, sorted(set(listed) ^ expected))
                assert len(expected) == costs[cid], (unit, period, cid, scored[cid])
                checked[cid] += len(expected)

            for cid in CATALOGUE_COMPONENTS:
                listed = await items_of(app_client, unit, cid, period)
                assert {i["kind"] for i in listed} <= {"procedure"}
                if cid == "3.2":  # online services: a procedure's entry weighs its number of services
                    cost = sum(weights[(i["reason"].split(":", 1)[1], i["procedure_code"])] for i in listed)
                else:
                    cost = len(listed)
                    assert len({i["procedure_code"] for i in listed}) == cost
                assert cost == costs[cid], (unit, period, cid, scored[cid], listed)
                checked[cid] += cost

            window = parse_period(period)
            counts = feedback_counts([i for i in feedback_items if i.unit_code in subtree],
                                     period_start=window.start, period_end=window.end,
                                     now=dt.datetime.now(dt.timezone.utc), with_reasons=True)
            for cid, wanted in (("5.1", {"handled_late", "open_past_due"}), ("5.2", None)):
                expected = {i["feedback_id"] for i in counts.costly
                            if wanted is None or set(i["reasons"]) & wanted}
                listed = {i["feedback_id"] for i in await items_of(app_client, unit, cid, period)}
                assert listed == expected and len(expected) == costs[cid], (unit, period, cid, scored[cid])
                checked[cid] += len(expected)

            listed = await items_of(app_client, unit, "4.3", period)
            expected = {m for m in subtree if runtime.units.units[m].level == "COMMUNE"
                        and runtime.units.units[m].e_certified_copy is False}
            assert {i["unit_code"] for i in listed} == expected, (unit, listed)
            assert len(expected) == costs["4.3"], (unit, period, scored["4.3"])
            checked["4.3"] += len(expected)

            response = await app_client.get(f"/v1/units/{unit}/components/2.2/items", params={"period": period},
                                            headers=auth(READER_KEY))
            assert (response.status_code, response.json()["code"]) == (400, "no_penalty")
            assert scored["2.2"]["max"] == 0

    # The generated province costs every component with a drill-down some points: each was really compared.
    assert [cid for cid, n in checked.items() if n == 0] == list(NO_DRILL_DOWN), checked


async def test_the_4_1_drill_down_follows_its_denominator_policy(app_client):
    """4.1 counts every received dossier, or by policy only those whose procedure requires a result; the
    drill-down lists what the score counts either way (rules/scoring.py: counted_metrics)."""
    import dataclasses

    import httpx

    from services.app import create_app

    runtime = app_client.app.state.runtime
    at = vn(2026, 8, 3)
    events = [event("R-E", 2, at, attributes={"result_required": True, "e_result": True}),
              event("R-NO-E", 2, at, attributes={"result_required": True}),
              event("FREE", 2, at, attributes={})]
    r = await app_client.post("/v1/events", json=events, headers=auth(ADMIN_KEY))
    assert r.json()["accepted"] == 3, r.text
    await drain(runtime)

    async def listed_and_scored(client) -> tuple[set[str], tuple[int, int]]:
        listed = {i["dossier_code"] for i in await items_of(client, "H44.03", "4.1", "2026-08")}
        card = (await client.get("/v1/scores/H44.03", params={"period": "2026-08"}, headers=auth(READER_KEY))).json()
        [scored] = [c for g in card["groups"] for c in g["components"] if c["id"] == "4.1"]
        return listed, (scored["numerator"], scored["denominator"])

    assert await listed_and_scored(app_client) == ({"R-NO-E", "FREE"}, (1, 3))
    policy = runtime.settings.policy.model_copy(update={"e_result_denominator": "result_required"})
    settings = runtime.settings.model_copy(update={"policy": policy})
    app = create_app(("api",), runtime=dataclasses.replace(runtime, settings=settings, card_cache=None))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            assert await listed_and_scored(client) == ({"R-NO-E"}, (1, 2))
