"""Scores, rankings, drill-down and errors over the real database, events through the real ingest."""

import asyncio
import datetime as dt

from services.indicators.engine import IndicatorEngine
from services.indicators.replay import check
from services.indicators.worker import sweep
from shared.timeutil import VIETNAM, utcnow
from tests.conftest import ADMIN_KEY, READER_KEY, SOURCE_KEY, auth, drain
from tests.support.events import event, vn
from tests.support.scores import component


async def post(client, events, key=ADMIN_KEY):
    response = await client.post("/v1/events", json=events, headers=auth(key))
    assert response.status_code == 200, response.text
    return response.json()


async def scores(client, unit, period, **params):
    response = await client.get(f"/v1/scores/{unit}", params={"period": period, **params}, headers=auth(READER_KEY))
    assert response.status_code == 200, response.text
    return response.json()




AUGUST = [
    # on time, online
    event("A1", 2, vn(2026, 8, 3), due_at=vn(2026, 8, 10), channel=2),
    event("A1", 9, vn(2026, 8, 5)),
    # late
    event("A2", 2, vn(2026, 8, 3), due_at=vn(2026, 8, 5), channel=1),
    event("A2", 9, vn(2026, 8, 7)),
    # two supplement requests: overdue whatever its dates
    event("A3", 2, vn(2026, 8, 3), due_at=vn(2026, 8, 28), channel=2),
    event("A3", 5, vn(2026, 8, 4)),
    event("A3", 4, vn(2026, 8, 5)),
    event("A3", 5, vn(2026, 8, 6)),
    event("A3", 4, vn(2026, 8, 7)),
    event("A3", 9, vn(2026, 8, 10)),
    # open, due 15 September: on time in August, overdue later (for the quarter) once the clock passes
    event("A4", 2, vn(2026, 8, 20), due_at=vn(2026, 9, 15), channel=3),
    # a step finished after its own deadline
    event("B1", 2, vn(2026, 8, 3), unit="H44.07", due_at=vn(2026, 8, 20)),
    event("B1", 4, vn(2026, 8, 6), unit="H44.07", step={"name": "Thẩm định", "due_at": vn(2026, 8, 5).isoformat()}),
    event("B1", 9, vn(2026, 8, 7), unit="H44.07"),
]


async def test_scores_of_a_unit_and_its_parent(app_client):
    await post(app_client, AUGUST)
    await drain(app_client.app.state.runtime)
    unit = await scores(app_client, "H44.03", "2026-08")
    assert unit["unit"] == {"code": "H44.03", "name": "Ban quản lý các khu công nghiệp - Tỉnh Phú Thọ",
                            "level": "DEPARTMENT", "parent": "H44", "identifier": None}
    c21 = component(unit, "2.1")
    assert (c21["numerator"], c21["denominator"], c21["ratio"], c21["score"]) == (2, 4, 50.0, 10.0)
    c33 = component(unit, "3.3")
    assert (c33["numerator"], c33["denominator"], c33["score"]) == (2, 4, 6.0)
    counters = unit["counters"]
    assert counters["received"] == 4 and counters["on_time"] == 2 and counters["overdue"] == 2
    assert counters["supplement_requests"] == 2 and counters["dossiers_with_2plus_supplements"] == 1
    assert (counters["received_in_person"], counters["received_online"], counters["received_postal"]) == (1, 2, 1)
    assert (counters["completed_early"], counters["completed_late"], counters["open_in_time"]) == (1, 2, 1)
    assert component(unit, "1.1")["status"] == "no_data"
    assert unit["total"]["points_without_data"] > 0

    parent = await scores(app_client, "H44", "2026-08")
    c21 = component(parent, "2.1")
    assert (c21["numerator"], c21["denominator"]) == (3, 5)  # sums of counts, then the score
    assert c21["score"] == 12.0
    assert parent["counters"]["overdue_steps"] == 1
    assert component(parent, "2.2")["denominator"] == 4

    decision = await scores(app_client, "H44", "2026-08", layout="decision")
    assert [g["code"] for g in decision["groups"]] == ["I", "II", "III", "IV", "V"]
    assert decision["total"] == parent["total"]


async def test_rankings_sorted_and_paginated(app_client):
    await post(app_client, AUGUST)
    await drain(app_client.app.state.runtime)
    response = await app_client.get("/v1/scores", params={"parent": "H44", "period": "2026-08", "limit": 2},
                                    headers=auth(READER_KEY))
    assert response.status_code == 200
    page = response.json()
    assert page["count"] == 163
    assert [(i["rank"], i["unit"]["code"]) for i in page["items"]] == [(1, "H44.07"), (2, "H44.03")]
    assert page["items"][0]["groups"]["TDGQ"] == 20.0
    nxt = await app_client.get("/v1/scores", params={"parent": "H44", "period": "2026-08", "limit": 2,
                                                     "cursor": page["next_cursor"]}, headers=auth(READER_KEY))
    assert nxt.json()["items"][0]["rank"] == 3
    communes = await app_client.get("/v1/scores", params={"parent": "H44", "level": "COMMUNE", "period": "2026-08"},
                                    headers=auth(READER_KEY))
    assert communes.json()["count"] == 148


async def test_drill_down_names_the_dossiers_and_reasons(app_client):
    await post(app_client, AUGUST)
    await drain(app_client.app.state.runtime)

    async def flagged(flag, unit="H44", period="2026-08"):
        response = await app_client.get(f"/v1/units/{unit}/dossiers", params={"period": period, "flag": flag},
                                        headers=auth(READER_KEY))
        assert response.status_code == 200, response.text
        return {i["dossier_code"]: i["reasons"] for i in response.json()["items"]}

    assert await flagged("overdue") == {"A2": ["late_end"], "A3": ["two_plus_supplements"]}
    assert await flagged("two_plus_supplements") == {"A3": ["two_plus_supplements"]}
    assert await flagged("overdue_step") == {"B1": ["overdue_step"]}
    assert set(await flagged("not_online")) == {"A2", "A4", "B1"}
    assert await flagged("open_overdue") == {}


async def test_errors_are_problems(app_client):
    bad = await app_client.get("/v1/scores/H44", params={"period": "2026-13"}, headers=auth(READER_KEY))
    assert (bad.status_code, bad.json()["code"]) == (400, "bad_period")
    assert bad.headers["content-type"].startswith("application/problem+json")
    missing = await app_client.get("/v1/scores/H00", params={"period": "2026-08"}, headers=auth(READER_KEY))
    assert (missing.status_code, missing.json()["code"]) == (404, "unknown_unit")
    assert (await app_client.get("/v1/scores/H44")).status_code == 401
    assert (await app_client.get("/v1/scores/H44", headers=auth(SOURCE_KEY))).status_code == 403
    flag = await app_client.get("/v1/units/H44/dossiers", params={"flag": "nope"}, headers=auth(READER_KEY))
    assert (flag.status_code, flag.json()["code"]) == (400, "bad_flag")
    limit = await app_client.get("/v1/scores", params={"parent": "H44", "limit": 0}, headers=auth(READER_KEY))
    assert (limit.status_code, limit.json()["code"]) == (422, "bad_parameter")


async def test_a_late_event_rewrites_a_past_period(app_client):
    runtime = app_client.app.state.runtime
    await post(app_client, [event("L1", 2, vn(2026, 7, 28), due_at=vn(2026, 8, 3)),
                            event("L1", 9, vn(2026, 8, 1))])
    await drain(runtime)
    assert component(await scores(app_client, "H44.03", "2026-07"), "2.1")["numerator"] == 1
    # A supplement request and its answer arrive late: two requests now, overdue in July's score.
    await post(app_client, [event("L1", 5, vn(2026, 7, 29)), event("L1", 4, vn(2026, 7, 30)),
                            event("L1", 5, vn(2026, 7, 30, 10)), event("L1", 4, vn(2026, 7, 31))])
    await drain(runtime)
    july = await scores(app_client, "H44.03", "2026-07")
    assert (component(july, "2.1")["numerator"], july["counters"]["overdue"]) == (0, 1)
    assert (await scores(app_client, "H44.03", "2026-Q3"))["counters"]["dossiers_with_2plus_supplements"] == 1


async def test_events_for_an_unknown_dossier_wait_for_its_receipt(app_client):
    runtime = app_client.app.state.runtime
    await post(app_client, [event("W1", 4, vn(2026, 8, 4)), event("W1", 9, vn(2026, 8, 5))])
    await drain(runtime)
    assert (await scores(app_client, "H44.03", "2026-08"))["counters"]["received"] == 0
    await post(app_client, [event("W1", 2, vn(2026, 8, 3), due_at=vn(2026, 8, 10))])
    await drain(runtime)
    body = await scores(app_client, "H44.03", "2026-08")
    assert (body["counters"]["received"], body["counters"]["completed"], body["counters"]["on_time"]) == (1, 1, 1)


async def test_the_clock_alone_turns_an_open_dossier_overdue(app_client):
    runtime = app_client.app.state.runtime
    now = utcnow()
    period = now.astimezone(VIETNAM).strftime("%Y-%m")
    due = now + dt.timedelta(seconds=2)
    await post(app_client, [event("C1", 2, now - dt.timedelta(minutes=1), due_at=due)])
    await drain(runtime)
    before = await scores(app_client, "H44.03", period)
    assert (before["counters"]["open_in_time"], before["counters"]["open_overdue"]) == (1, 0)
    await asyncio.sleep(2.5)  # no event arrives; only the clock moves past the due time
    engine = IndicatorEngine(runtime.calendar, runtime.settings.policy)
    assert await sweep(runtime, engine) == 1
    after = await scores(app_client, "H44.03", period)
    assert (after["counters"]["open_in_time"], after["counters"]["open_overdue"]) == (0, 1)
    assert component(after, "2.1")["numerator"] == 0
    drill = await app_client.get("/v1/units/H44.03/dossiers", params={"period": period, "flag": "open_overdue"},
                                 headers=auth(READER_KEY))
    assert [(i["dossier_code"], i["reasons"]) for i in drill.json()["items"]] == [("C1", ["open_past_due"])]


async def test_an_open_dossier_counts_by_each_period_end_through_the_whole_path(app_client):
    """Counters are stored per month; a quarter and a year add their own corrections. Received 20 August,
    due 15 September, still open now: on time in August's score (T = 31 August), overdue in the third
    quarter's and the year's (indicators.md §3), read through ingest, the worker and the API."""
    runtime = app_client.app.state.runtime
    await post(app_client, [event("Q1", 2, vn(2026, 8, 20), due_at=vn(2026, 9, 15), channel=3),
                            event("Q2", 2, vn(2026, 8, 21), due_at=vn(2026, 8, 25), channel=1),
                            event("Q2", 9, vn(2026, 8, 24))])
    await drain(runtime)
    expected = {"2026-08": (1, 0, 2), "2026-Q3": (0, 1, 1), "2026": (0, 1, 1)}  # open in time, open overdue, 2.1's numerator
    for period, (in_time, overdue, on_time) in expected.items():
        card = await scores(app_client, "H44.03", period)
        assert (card["counters"]["open_in_time"], card["counters"]["open_overdue"]) == (in_time, overdue), period
        c21 = component(card, "2.1")
        assert (c21["numerator"], c21["denominator"]) == (on_time, 2), period
    parent = await scores(app_client, "H44", "2026-Q3")  # a parent sums its children's stored rows the same way
    assert parent["counters"]["open_overdue"] == 1
    assert await check(runtime, IndicatorEngine(runtime.calendar, runtime.settings.policy)) == []
