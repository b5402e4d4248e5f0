"""The API added for the pages (history, per procedure, per field, Excel) and the pages' sign-in, over the
real database with events through the real ingest (the browser tests are in tests/browser/)."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import re
import time
from urllib.parse import urlencode

import pytest
from openpyxl import load_workbook

from services.api.exports import CHILDREN_SHEET
from services.api.pages.session import COOKIE
from services.indicators.engine import IndicatorEngine
from services.indicators.worker import QueueWorker
from shared.db.raw import driver_connection
from shared.timeutil import VIETNAM, periods_of, utcnow
from tests.conftest import ADMIN_KEY, READER_KEY, SOURCE_KEY, auth, drain
from tests.support.events import event, vn
from tests.support.pages import DAYS, PERIOD, load_month


async def get(client, path, **params):
    response = await client.get(path, params=params, headers=auth(READER_KEY))
    assert response.status_code == 200, response.text
    return response


@pytest.fixture
async def month(app_client):
    await load_month(app_client, app_client.app.state.runtime)
    return app_client


async def test_per_procedure_and_per_field_add_up_to_the_unit(month):
    unit = (await get(month, "/v1/scores/H44", period=PERIOD)).json()
    procedures = (await get(month, "/v1/scores/H44/procedures", period=PERIOD)).json()
    fields = (await get(month, "/v1/scores/H44/fields", period=PERIOD)).json()
    counters = unit["counters"]
    for table in (procedures, fields):
        rows = table["items"]
        for metric in ("received", "on_time", "overdue", "supplement_requests", "dossiers_with_2plus_supplements",
                       "received_online"):
            assert sum(r[metric] for r in rows) == counters[metric], (table["by"], metric)
        for r in rows:
            assert r["on_time"] + r["overdue"] == r["received"]
            assert r["on_time_ratio"] == round(100 * r["on_time"] / r["received"], 2)
    by_code = {r["code"]: r for r in procedures["items"]}
    assert by_code["1.001193"]["name"] == "Thủ tục đăng ký khai sinh"
    assert by_code["1.001193"]["field_name"] == "Hộ tịch"
    # The commune procedure is received in two communes: one row, summed.
    assert by_code["1.001193"]["received"] == 5 * len(DAYS)
    assert {r["code"]: r["procedures"] for r in fields["items"]} == {"DT": 1, "LTHH": 1, "HT": 1}
    # 2.1's ratio and 2.2's mean days are the API's own for a unit with one procedure.
    h4407 = (await get(month, "/v1/scores/H44.07", period=PERIOD)).json()
    row = (await get(month, "/v1/scores/H44.07/procedures", period=PERIOD)).json()["items"][0]
    c = {x["id"]: x for g in h4407["groups"] for x in g["components"]}
    assert row["on_time_ratio"] == c["2.1"]["ratio"]
    assert row["mean_processing_days"] == c["2.2"]["ratio"]
    assert row["online_share"] == c["3.3"]["ratio"]


async def test_history_keeps_each_day_as_it_stood(month):
    days = (await get(month, "/v1/scores/H44/history", period=PERIOD)).json()
    assert [d["date"] for d in days] == [f"2026-08-{day:02d}" for day in DAYS]
    assert not any(d["live"] for d in days)  # a past period: no "now" point
    now = (await get(month, "/v1/scores/H44", period=PERIOD)).json()
    assert days[-1]["total"] == now["total"]["score"]
    assert days[-1]["groups"] == {g["code"]: g["score"] for g in now["groups"]}
    assert len({d["total"] for d in days}) > 1  # the days differ: each was recorded as it stood

    # A late event moves the period's score, not the days already recorded.
    late = [event("H44.03-late", 2, vn(2026, 8, 7), unit="H44.03", procedure="1.004227",
                  due_at=vn(2026, 8, 8), channel=1), event("H44.03-late", 9, vn(2026, 8, 20), unit="H44.03")]
    assert (await month.post("/v1/events", json=late, headers=auth(ADMIN_KEY))).status_code == 200
    await drain(month.app.state.runtime)
    moved = (await get(month, "/v1/scores/H44", period=PERIOD)).json()
    assert moved["total"]["score"] != now["total"]["score"]
    assert (await get(month, "/v1/scores/H44/history", period=PERIOD)).json() == days

    current = (await get(month, "/v1/scores/H44/history")).json()  # this month: ends with the score now
    assert current[-1]["live"] is True
    assert current[-1]["total"] == (await get(month, "/v1/scores/H44")).json()["total"]["score"]


async def test_excel_numbers_are_the_api_numbers(month):
    response = await get(month, "/v1/reports/H44.xlsx", period=PERIOD)
    assert response.headers["content-type"].startswith("application/vnd.openxmlformats")
    book = load_workbook(io.BytesIO(response.content))
    unit = (await get(month, "/v1/scores/H44", period=PERIOD)).json()
    assert len(book.sheetnames) == 1 + len(unit["groups"]) + 1
    summary = book["Tổng hợp"]
    assert summary["B5"].value == unit["total"]["score"] and isinstance(summary["B5"].value, float)
    assert summary["B7"].value == unit["rating"]
    for group, name in zip(unit["groups"], book.sheetnames[1:-1]):
        sheet = book[name]
        assert name.startswith(group["code"])
        assert sheet["G1"].value == group["score"]
        rows = list(sheet.iter_rows(min_row=4, values_only=True))
        assert [r[0] for r in rows] == [c["id"] for c in group["components"]]
        for row, component in zip(rows, group["components"]):
            assert row[2:7] == (component["numerator"], component["denominator"], component["ratio"],
                                component["score"], component["max"])
            for value in row[2:7]:
                assert value is None or isinstance(value, (int, float))  # numbers, never text
    league = (await get(month, "/v1/scores", parent="H44", period=PERIOD, limit=500)).json()["items"]
    children = list(book[CHILDREN_SHEET].iter_rows(min_row=2, values_only=True))
    assert len(children) == len(league)
    for row, expected in zip(children, league):
        assert row[:5] == (expected["rank"], expected["unit"]["code"], expected["unit"]["name"], expected["total"],
                           expected["rating"])
        assert list(row[5:11]) == [expected["groups"][g["code"]] for g in unit["groups"]]
        assert row[11] == expected["received"]


async def test_the_new_endpoints_need_a_reader_and_a_known_unit(month):
    for path in ("/v1/scores/H44/history", "/v1/scores/H44/procedures", "/v1/scores/H44/fields",
                 "/v1/reports/H44.xlsx"):
        assert (await month.get(path)).status_code == 401
        assert (await month.get(path, headers=auth(SOURCE_KEY))).status_code == 403
        assert (await month.get(path.replace("H44", "H99"), headers=auth(READER_KEY))).status_code == 404
        bad = await month.get(path, params={"period": "2026-13"}, headers=auth(READER_KEY))
        assert bad.status_code == 400 and bad.json()["code"] == "bad_period"


async def test_pages_without_a_key_lead_to_the_sign_in_form_never_the_numbers(month):
    total = (await get(month, "/v1/scores/H44", period=PERIOD)).json()["total"]["score"]
    shown = f"{total:.2f}".replace(".", ",")
    for path in ("/ui/", "/ui/units/H44", "/ui/units/H44/dossiers", "/ui/units/H44/report",
                 "/ui/units/H44/report.xlsx"):
        for headers in ({}, auth("not-a-key"), auth(SOURCE_KEY)):
            response = await month.get(path, params={"period": PERIOD}, headers=headers)
            assert response.status_code == 303, path
            assert response.headers["location"] == "/ui/sign-in?" + urlencode({"next": f"{path}?period={PERIOD}"})
            assert shown not in response.text
            form = await month.get(response.headers["location"])
            assert form.status_code == 200 and 'action="/ui/sign-in"' in form.text and shown not in form.text
            assert f'value="{path}?period={PERIOD}"' in form.text
    page = await month.get("/ui/units/H44", params={"period": PERIOD}, headers=auth(READER_KEY))
    assert page.status_code == 200 and shown in page.text
    home = await month.get("/ui/", params={"period": PERIOD}, headers=auth(READER_KEY))
    assert home.status_code == 307 and home.headers["location"] == f"/ui/units/H44?period={PERIOD}"  # the top unit


async def test_sign_in_gives_an_expiring_strict_http_only_cookie(month):
    form = await month.get("/ui/sign-in")
    assert form.status_code == 200 and 'name="key"' in form.text
    refused = await month.post("/ui/sign-in", data={"key": "wrong", "next": "/ui/units/H44"})
    assert refused.status_code == 401 and "không đúng" in refused.text
    assert "set-cookie" not in refused.headers
    source = await month.post("/ui/sign-in", data={"key": SOURCE_KEY, "next": "/ui/units/H44"})
    assert source.status_code == 401  # a source key may not read

    signed = await month.post("/ui/sign-in", data={"key": READER_KEY, "next": "https://evil.example/"})
    assert signed.status_code == 303 and signed.headers["location"] == "/ui/"  # never an open redirect
    cookie = signed.headers["set-cookie"]
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "max-age", "path"} <= attributes and "samesite=strict" in cookie.lower()
    assert "secure" not in attributes  # plain HTTP here
    assert READER_KEY not in cookie
    month.cookies.clear()
    value = cookie.split(";")[0].split("=", 1)[1]
    month.cookies.set(COOKIE, value)
    page = await month.get("/ui/units/H44", params={"period": PERIOD})
    assert page.status_code == 200 and "Tổng điểm" in page.text

    over_https = await month.post("https://testserver/ui/sign-in", data={"key": READER_KEY, "next": "/ui/"})
    assert "secure" in {p.strip().lower() for p in over_https.headers["set-cookie"].split(";")}
    month.cookies.clear()

    keyring = month.app.state.keyring
    expired = keyring.issue_session(READER_KEY, 60, now=time.time() - 3600)
    month.cookies.set(COOKIE, expired)
    assert (await month.get("/ui/units/H44")).status_code == 303  # to the sign-in form
    forged = value[:-4] + ("0000" if not value.endswith("0000") else "1111")
    month.cookies.set(COOKIE, forged)
    assert (await month.get("/ui/units/H44")).status_code == 303
    month.cookies.set(COOKIE, keyring.issue_session(SOURCE_KEY, 3600))
    assert (await month.get("/ui/units/H44")).status_code == 303  # a source key's session may not read

    month.cookies.set(COOKIE, value)
    out = await month.post("/ui/sign-out")
    assert out.status_code == 303 and 'max-age=0' in out.headers["set-cookie"].lower()


async def test_public_scoreboard_needs_no_key_shows_no_dossier_and_may_be_framed(month):
    response = await month.get("/ui/public/H44", params={"period": PERIOD})
    assert response.status_code == 200
    assert "frame-ancestors 'self'" in response.headers["content-security-policy"]
    assert "x-frame-options" not in response.headers
    text = response.text
    assert "UBND Phường Việt Trì" in text
    assert not re.search(r"H44\.\d+-(\d\d|now)-\d", text)  # no dossier code
    assert "/dossiers" not in text and "hồ sơ quá hạn" not in text.lower()  # no drill-down
    unknown = await month.get("/ui/public/H99")
    assert unknown.status_code == 404 and "H99" in unknown.text and unknown.headers["content-type"].startswith(
        "text/html")
    private = await month.get("/ui/units/H44", params={"period": PERIOD}, headers=auth(READER_KEY))
    assert private.headers["x-frame-options"] == "DENY"


async def test_the_indicators_worker_records_the_days_scores(month):
    """The sweeper writes today's row of every unit's current month, quarter and year."""
    runtime = month.app.state.runtime
    settings = runtime.settings.model_copy(update={"sweep_interval_seconds": 0.05,
                                                   "daily_scores_interval_seconds": 0.05})
    worker = QueueWorker(dataclasses.replace(runtime, settings=settings),
                         IndicatorEngine(runtime.calendar, settings.policy))
    today = utcnow().astimezone(VIETNAM).date()
    worker.start(apply_queue=False)
    try:
        async with asyncio.timeout(30):
            while True:
                async with runtime.engine.connect() as conn:
                    apg = await driver_connection(conn)
                    periods = {r["period"] for r in await apg.fetch(
                        "SELECT period FROM daily_scores WHERE unit_code = 'H44' AND day = $1", today)}
                if periods == set(periods_of(utcnow())):
                    break
                await asyncio.sleep(0.1)
    finally:
        await worker.stop()
    history = (await get(month, "/v1/scores/H44/history")).json()
    live = (await get(month, "/v1/scores/H44")).json()
    assert history[-1] == {"date": today.isoformat(), "total": live["total"]["score"], "rating": live["rating"],
                           "groups": {g["code"]: g["score"] for g in live["groups"]}, "live": True}
