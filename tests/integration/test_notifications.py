"""Targets and webhooks end to end: events through ingest, the notifier with a controllable clock, and a
real HTTP receiver on 127.0.0.1 checking what arrives (signature, delivery ids, once-only)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac

import orjson
import pytest

from services.app import build_runtime
from services.indicators.cards import counters_moved
from services.indicators.engine import IndicatorEngine
from services.notify.notifier import Notifier
from shared.db.raw import driver_connection
from shared.settings import NotifySettings
from shared.timeutil import VIETNAM, utcnow
from tests.conftest import ADMIN_KEY, READER_KEY, SOURCE_KEY, auth, drain
from tests.support.events import event
from tests.support.receiver import Receiver

SECRET = "a-webhook-secret-of-the-province"
TARGET_EVENTS = ["target.at_risk", "target.met", "target.missed"]


def vn(day: int, hour: int = 8, month: int = 3) -> dt.datetime:
    # March 2030: after the real clock, so applying the events marks no deadline passed; only the test's
    # clock (given to the sweeper and the notifier) moves time on.
    return dt.datetime(2030, month, day, hour, tzinfo=VIETNAM)


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def on_time(code: str, unit: str) -> list[dict]:
    return [event(code, 2, vn(2), unit=unit, due_at=vn(10)), event(code, 9, vn(3), unit=unit)]


def late(code: str, unit: str) -> list[dict]:
    return [event(code, 2, vn(2), unit=unit, due_at=vn(5)), event(code, 9, vn(9), unit=unit)]


def still_open(code: str, unit: str, due: dt.datetime) -> list[dict]:
    return [event(code, 2, vn(2), unit=unit, due_at=due)]


async def post(client, events: list[dict]) -> None:
    for start in range(0, len(events), 1000):
        response = await client.post("/v1/events", json=events[start:start + 1000], headers=auth(ADMIN_KEY))
        assert response.status_code == 200, response.text
        assert response.json()["accepted"] == len(events[start:start + 1000])
    await drain(client.app.state.runtime)


async def put(client, path: str, body) -> None:
    response = await client.put(path, json=body, headers=auth(ADMIN_KEY))
    assert response.status_code == 200, response.text


def verified(received) -> dict:
    """The receiver's check: the signature is HMAC-SHA256 of the exact body with the shared secret."""
    expected = "sha256=" + hmac.new(SECRET.encode(), received.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(received.headers["x-dvc766-signature"], expected)
    body = orjson.loads(received.body)
    assert received.headers["x-dvc766-event"] == body["event"]
    assert received.headers["x-dvc766-delivery"] == body["id"]
    return body


async def deliver_all(notifier: Notifier) -> None:
    while await notifier.deliver_due():
        pass


@pytest.fixture
def fast_retries() -> NotifySettings:
    return NotifySettings(retry_base_seconds=5, retry_max_seconds=60, retry_for_seconds=3600)


async def test_a_unit_falling_below_its_target_is_announced_once_signed(app_client, fast_retries):
    runtime = app_client.app.state.runtime
    clock = Clock(vn(12, 10))
    notifier = Notifier(runtime, clock=clock, settings=fast_retries)
    with Receiver() as receiver:
        await put(app_client, "/v1/webhooks", [{"id": "province", "url": receiver.url, "secret": SECRET,
                                                "events": TARGET_EVENTS}])
        await put(app_client, "/v1/targets", [{"id": "ontime-98", "unit": "H44.03", "metric": "2.1", "min": 98.0,
                                               "label": "Đúng hạn, trước hạn ≥ 98%"}])
        await post(app_client, [e for i in range(50) for e in on_time(f"OK{i}", "H44.03")])
        await post(app_client, late("LATE1", "H44.03"))  # 50 of 51: 98.04 %, still met
        assert await notifier.evaluate_once() == 0  # met at first look: nothing to say

        await post(app_client, late("LATE2", "H44.03"))  # 50 of 52: 96.15 %
        assert await notifier.evaluate_once() == 1
        for _ in range(3):  # evaluated again and again: announced once
            assert await notifier.evaluate_once() == 0
        await deliver_all(notifier)
        assert len(receiver.received) == 1
        body = verified(receiver.received[0])
        assert body["event"] == "target.at_risk"
        data = body["data"]
        assert (data["id"], data["unit"], data["period"], data["status"]) == ("ontime-98", "H44.03", "2030-03", "at_risk")
        assert (data["value"], data["previous_status"]) == (96.15, "met")
        assert data["label"] == "Đúng hạn, trước hạn ≥ 98%"

        shown = (await app_client.get("/v1/units/H44.03/targets", params={"period": "2030-03"},
                                      headers=auth(READER_KEY))).json()
        assert [(t["id"], t["value"], t["status"]) for t in shown["targets"]] == [("ontime-98", 96.15, "at_risk")]

        await post(app_client, [e for i in range(50) for e in on_time(f"MORE{i}", "H44.03")])  # 100 of 102
        clock.now += dt.timedelta(hours=1)
        assert await notifier.evaluate_once() == 1
        assert await notifier.evaluate_once() == 0
        await deliver_all(notifier)
        assert [verified(r)["event"] for r in receiver.received] == ["target.at_risk", "target.met"]

        clock.now = vn(1, 0, month=4) + dt.timedelta(minutes=1)  # March closes met: nothing new to say
        queued = await notifier.evaluate_once()
        await deliver_all(notifier)
        assert queued == 0, [r.body for r in receiver.received]
    await notifier.stop()

    listed = (await app_client.get("/v1/webhooks/province/deliveries", headers=auth(ADMIN_KEY))).json()
    assert [(d["event"], d["state"], d["attempts"]) for d in listed["items"]] == [
        ("target.met", "delivered", 1), ("target.at_risk", "delivered", 1)]
    hooks = (await app_client.get("/v1/webhooks", headers=auth(ADMIN_KEY))).json()
    assert hooks == [{"id": "province", "url": receiver.url, "events": sorted(TARGET_EVENTS), "units": None}]


async def test_a_failed_delivery_is_retried_with_the_same_id_across_a_restart(app_client, settings, fast_retries):
    runtime = app_client.app.state.runtime
    clock = Clock(vn(12, 10))
    with Receiver(answers=[500]) as receiver:
        await put(app_client, "/v1/webhooks", [{"id": "province", "url": receiver.url, "secret": SECRET,
                                                "events": TARGET_EVENTS}])
        await put(app_client, "/v1/targets", [{"id": "ontime-98", "unit": "H44.03", "metric": "2.1", "min": 98.0}])
        await post(app_client, on_time("OK", "H44.03") + late("LATE", "H44.03"))  # 50 %

        first = Notifier(runtime, clock=clock, settings=fast_retries)
        assert await first.evaluate_once() == 1  # at risk at first look
        assert await first.deliver_due() == 1
        assert [r.answered for r in receiver.received] == [500]
        assert await first.deliver_due() == 0  # not before its backoff
        await first.stop()  # the process goes away with the delivery still pending

        restarted_runtime = await build_runtime(settings, run_migrations=False)  # a new process: nothing in memory
        try:
            second = Notifier(restarted_runtime, clock=clock, settings=fast_retries)
            assert await second.evaluate_once() == 0  # the state survived: not announced again
            clock.now += dt.timedelta(seconds=4)
            assert await second.deliver_due() == 0
            clock.now += dt.timedelta(seconds=2)  # past the first backoff (5 s)
            assert await second.deliver_due() == 1
            await second.stop()
        finally:
            await restarted_runtime.engine.dispose()

    assert [r.answered for r in receiver.received] == [500, 200]
    ids = {r.headers["x-dvc766-delivery"] for r in receiver.received}
    assert len(ids) == 1
    assert receiver.received[0].body == receiver.received[1].body
    verified(receiver.received[1])
    listed = (await app_client.get("/v1/webhooks/province/deliveries", headers=auth(ADMIN_KEY))).json()
    [delivery] = listed["items"]
    assert (delivery["id"], delivery["state"], delivery["attempts"], delivery["last_status"]) == (
        ids.pop(), "delivered", 2, 200)
    assert [o["status"] for o in delivery["outcomes"]] == [500, 200]


async def test_a_receiver_that_never_answers_2xx_is_given_up_after_the_bounded_time(app_client):
    runtime = app_client.app.state.runtime
    clock = Clock(vn(12, 10))
    bounded = NotifySettings(retry_base_seconds=10, retry_max_seconds=20, retry_for_seconds=60)
    with Receiver(default=503) as receiver:
        await put(app_client, "/v1/webhooks", [{"id": "down", "url": receiver.url, "secret": SECRET,
                                                "events": TARGET_EVENTS}])
        await put(app_client, "/v1/targets", [{"id": "ontime-98", "unit": "H44.03", "metric": "2.1", "min": 98.0}])
        await post(app_client, late("LATE", "H44.03"))
        notifier = Notifier(runtime, clock=clock, settings=bounded)
        assert await notifier.evaluate_once() == 1
        for _ in range(10):
            await notifier.deliver_due()
            clock.now += dt.timedelta(seconds=21)
        await notifier.stop()
    # attempts at 0, +21 (after 10 s), +42 (after 20 s); the next would fall past 60 s: given up
    assert [r.answered for r in receiver.received] == [503, 503, 503]
    [delivery] = (await app_client.get("/v1/webhooks/down/deliveries", headers=auth(ADMIN_KEY))).json()["items"]
    assert (delivery["state"], delivery["attempts"], delivery["next_attempt_at"]) == ("failed", 3, None)


async def test_the_clock_alone_turns_a_target_at_risk(app_client, fast_retries):
    """No event arrives: two open dossiers pass their due time, the sweeper (on the same clock) turns
    them overdue, and the target watching the value is announced at risk. The target watching the
    projection saw it coming: at risk from the first look, with the dossiers still in time."""
    runtime = app_client.app.state.runtime
    clock = Clock(vn(12, 10))
    notifier = Notifier(runtime, clock=clock, settings=fast_retries)
    engine = IndicatorEngine(runtime.calendar, runtime.settings.policy)
    with Receiver() as receiver:
        await put(app_client, "/v1/webhooks", [{"id": "h4407", "url": receiver.url, "secret": SECRET,
                                                "events": TARGET_EVENTS, "units": ["H44.07"]}])
        await put(app_client, "/v1/targets", [
            {"id": "value-98", "unit": "H44.07", "metric": "2.1", "min": 98.0, "warn": "value"},
            {"id": "projected-98", "unit": "H44.07", "metric": "2.1", "min": 98.0},
        ])
        await post(app_client, [e for i in range(60) for e in on_time(f"OK{i}", "H44.07")]
                   + still_open("OPEN1", "H44.07", vn(20, 17)) + still_open("OPEN2", "H44.07", vn(20, 17)))

        assert await notifier.evaluate_once() == 1
        await deliver_all(notifier)
        [projected] = [verified(r)["data"] for r in receiver.received]
        assert (projected["id"], projected["value"], projected["projected"], projected["turning_overdue"]) == (
            "projected-98", 100.0, 96.77, 2)
        shown = (await app_client.get("/v1/units/H44.07/targets", params={"period": "2030-03"},
                                      headers=auth(READER_KEY))).json()["targets"]
        assert {t["id"]: t["status"] for t in shown} == {"value-98": "met", "projected-98": "at_risk"}

        clock.now = vn(20, 16)  # before the due time: nothing changes
        async with runtime.engine.begin() as conn:
            assert await engine.sweep_deadlines(await driver_connection(conn), clock.now) == 0
        assert await notifier.evaluate_once() == 0

        clock.now = vn(20, 18)  # an hour past the due time, and still no event
        async with runtime.engine.begin() as conn:
            assert await engine.sweep_deadlines(await driver_connection(conn), clock.now) == 2
        assert await notifier.evaluate_once() == 1
        await deliver_all(notifier)
        await notifier.stop()
    announced = [verified(r) for r in receiver.received]
    assert [(b["event"], b["data"]["id"]) for b in announced] == [("target.at_risk", "projected-98"),
                                                                  ("target.at_risk", "value-98")]
    assert (announced[1]["data"]["value"], announced[1]["data"]["previous_status"]) == (96.77, "met")


async def test_subtree_targets_at_a_level_and_the_closed_period_missed(app_client, fast_retries):
    runtime = app_client.app.state.runtime
    communes = runtime.units.descendants("H44", "COMMUNE")[:2]
    clock = Clock(vn(25, 10))
    notifier = Notifier(runtime, clock=clock, settings=fast_retries)
    with Receiver() as receiver:
        await put(app_client, "/v1/webhooks", [{"id": "province", "url": receiver.url, "secret": SECRET,
                                                "events": TARGET_EVENTS}])
        await put(app_client, "/v1/targets", [{"id": "communes-ontime", "unit": "H44", "applies_to": "subtree",
                                               "level": "COMMUNE", "metric": "2.1", "min": 98.0, "warn": "value"}])
        await post(app_client, on_time("C0", communes[0]) + late("C1", communes[1]))
        assert await notifier.evaluate_once() == 1  # only the commune below
        clock.now = vn(1, 0, month=4) + dt.timedelta(seconds=30)  # March has closed
        assert await notifier.evaluate_once() == 1  # at risk -> missed
        await deliver_all(notifier)
        await notifier.stop()
    events = [(b["event"], b["data"]["unit"], b["data"]["period"]) for b in map(verified, receiver.received)]
    assert events == [("target.at_risk", communes[1], "2030-03"), ("target.missed", communes[1], "2030-03")]


async def test_daily_due_soon_digest_per_unit(app_client, fast_retries):
    runtime = app_client.app.state.runtime
    clock = Clock(vn(18, 6))  # Monday 18 March 2030, before the digest's time
    notifier = Notifier(runtime, clock=clock, settings=fast_retries)
    with Receiver() as receiver:
        await put(app_client, "/v1/webhooks", [{"id": "officers", "url": receiver.url, "secret": SECRET,
                                                "events": ["dossiers.due_soon"]}])
        await post(app_client, still_open("SOON", "H44.07", vn(19, 17)) + still_open("LATER", "H44.07", vn(29, 17))
                   + still_open("SOON3", "H44.03", vn(20, 10)))
        assert await notifier.evaluate_once() == 0
        clock.now = vn(18, 7, ) + dt.timedelta(minutes=5)
        assert await notifier.evaluate_once() == 2  # one digest per unit
        clock.now += dt.timedelta(hours=3)
        assert await notifier.evaluate_once() == 0  # once a day
        clock.now = vn(19, 7, ) + dt.timedelta(minutes=5)
        assert await notifier.evaluate_once() == 2  # and again the next working day (SOON is due at 17:00)
        clock.now = vn(23, 9)  # Saturday: no digest
        assert await notifier.evaluate_once() == 0
        await deliver_all(notifier)
        await notifier.stop()
    digests = {b["data"]["unit"]: b["data"] for b in map(verified, receiver.received[:2])}
    assert [d["dossier_code"] for d in digests["H44.07"]["dossiers"]] == ["SOON"]
    assert digests["H44.07"]["count"] == 1 and digests["H44.07"]["date"] == "2030-03-18"
    assert [d["dossier_code"] for d in digests["H44.03"]["dossiers"]] == ["SOON3"]


async def test_a_sender_whose_rejects_pass_the_threshold(app_client):
    runtime = app_client.app.state.runtime
    clock = Clock(utcnow())  # rejects are dated by the database's clock
    notifier = Notifier(runtime, clock=clock, settings=NotifySettings(rejects_threshold=3))
    with Receiver() as receiver:
        await put(app_client, "/v1/webhooks", [{"id": "igate-team", "url": receiver.url, "secret": SECRET,
                                                "events": ["source.rejects"], "units": ["H44.03"]}])
        bad = [event(f"B{i}", 2, vn(2), unit="H44.03", occurred_at="2030-03-02T08:00:00") for i in range(2)]
        response = await app_client.post("/v1/events", json=bad, headers=auth(SOURCE_KEY))
        assert response.json()["rejected"] == 2
        assert await notifier.evaluate_once() == 0  # 2 < 3
        response = await app_client.post("/v1/events", json=bad[:1], headers=auth(SOURCE_KEY))
        assert await notifier.evaluate_once() == 1
        assert await notifier.evaluate_once() == 0  # once, while it stays above
        await deliver_all(notifier)
        await notifier.stop()
    [body] = [verified(r) for r in receiver.received]
    assert body["event"] == "source.rejects"
    assert (body["data"]["source"], body["data"]["rejected"], body["data"]["reasons"]) == (
        "igate-h44-03", 3, {"naive_timestamp": 3})


async def test_targets_api_validates_and_replaces(app_client):
    bad = [
        ({"id": "x", "unit": "H44", "metric": "2.1"}, "min or max"),
        ({"id": "x", "unit": "H44", "metric": "9.9", "min": 1}, "unknown metric"),
        ({"id": "x", "unit": "H44", "metric": "2.1", "min": 1, "level": "COMMUNE"}, "subtree"),
        ({"id": "x", "unit": "H44", "metric": "2.1", "min": 1, "from": "2026-13"}, "from"),
    ]
    for body, message in bad:
        response = await app_client.put("/v1/targets", json=[body], headers=auth(ADMIN_KEY))
        assert response.status_code == 422, body
        assert message in response.text, response.text
    response = await app_client.put("/v1/targets", json=[{"id": "x", "unit": "NOPE", "metric": "2.1", "min": 1}],
                                    headers=auth(ADMIN_KEY))
    assert (response.status_code, response.json()["code"]) == (422, "unknown_unit")
    response = await app_client.put("/v1/targets", json=[{"id": "a", "unit": "H44", "metric": "total", "min": 80}],
                                    headers=auth(READER_KEY))
    assert response.status_code == 403

    await put(app_client, "/v1/targets", [{"id": "a", "unit": "H44", "metric": "total", "min": 80},
                                          {"id": "b", "unit": "H44", "metric": "late_without_apology", "max": 0,
                                           "from": "2026-01", "until": "2026-12"}])
    await put(app_client, "/v1/targets?mode=full", [{"id": "b", "unit": "H44", "metric": "late_without_apology",
                                                     "max": 0}])
    listed = (await app_client.get("/v1/targets", headers=auth(READER_KEY))).json()
    assert listed == [{"id": "b", "unit": "H44", "applies_to": "unit", "metric": "late_without_apology", "max": 0.0,
                       "period": "month", "warn": "projected"}]


async def test_the_example_targets_load(app_client):
    from tests.conftest import ROOT

    seeds = orjson.loads((ROOT / "examples" / "targets-h44.json").read_bytes())
    response = await app_client.put("/v1/targets?mode=full", json=seeds, headers=auth(ADMIN_KEY))
    assert response.json() == {"saved": len(seeds), "removed": 0}
    shown = (await app_client.get("/v1/units/H44/targets", params={"period": "2026-08"},
                                  headers=auth(READER_KEY))).json()["targets"]
    assert {t["id"] for t in shown} == {"ontime-98", "ontime-98-month", "apology-100", "satisfaction-90", "online-50",
                                        "supplement-once", "few-returns", "no-stops", "no-overdue-steps",
                                        "satisfaction-land-85", "satisfaction-construction-85",
                                        "satisfaction-investment-85"}
    investment = next(t for t in shown if t["id"] == "satisfaction-investment-85")
    assert (investment["scope"]["field"], investment["value"], investment["status"]) == ("DT", None, "met")


async def test_a_step_still_open_past_its_deadline_counts_with_no_event(app_client, fast_retries):
    """events.md step.open: the sweeper (on the test's clock) re-derives the dossier when the open step's
    deadline passes; its overdue step shows in the score and turns the no-overdue-steps target at risk."""
    runtime = app_client.app.state.runtime
    clock = Clock(vn(12, 10))
    notifier = Notifier(runtime, clock=clock, settings=fast_retries)
    engine = IndicatorEngine(runtime.calendar, runtime.settings.policy)
    step = {"name": "Phòng Kinh tế - Thẩm định", "id": "HS1-tham-dinh", "started_at": vn(11).isoformat(),
            "due_at": vn(13, 17).isoformat(), "open": True}
    with Receiver() as receiver:
        await put(app_client, "/v1/webhooks", [{"id": "province", "url": receiver.url, "secret": SECRET,
                                                "events": TARGET_EVENTS}])
        await put(app_client, "/v1/targets", [{"id": "no-overdue-steps", "unit": "H44.07", "metric": "overdue_steps",
                                               "max": 0.0}])
        await post(app_client, [event("HS1", 2, vn(10), unit="H44.07", due_at=vn(28)),
                                event("HS1", 4, vn(11), unit="H44.07", step=step)])
        assert await notifier.evaluate_once() == 0
        score = (await app_client.get("/v1/scores/H44.07", params={"period": "2030-03"}, headers=auth(READER_KEY))).json()
        assert (score["counters"]["steps"], score["counters"]["overdue_steps"]) == (1, 0)

        clock.now = vn(14, 9)
        touched: set = set()
        async with runtime.engine.begin() as conn:
            assert await engine.sweep_open_steps(await driver_connection(conn), clock.now, touched=touched) == 1
        async with runtime.engine.begin() as conn:  # done: nothing left to sweep for it
            assert await engine.sweep_open_steps(await driver_connection(conn), clock.now) == 0
        await counters_moved(runtime, touched)  # what the worker's sweep does after a crossing
        score = (await app_client.get("/v1/scores/H44.07", params={"period": "2030-03"}, headers=auth(READER_KEY))).json()
        assert (score["counters"]["steps"], score["counters"]["overdue_steps"]) == (1, 1)
        assert await notifier.evaluate_once() == 1
        await deliver_all(notifier)
        await notifier.stop()
    [body] = [verified(r) for r in receiver.received]
    assert (body["event"], body["data"]["id"], body["data"]["value"]) == ("target.at_risk", "no-overdue-steps", 100.0)


async def test_a_target_reads_the_same_numbers_as_the_score(app_client):
    await post(app_client, on_time("A", "H44.07") + late("B", "H44.07") + still_open("C", "H44.07", vn(20)))
    await put(app_client, "/v1/targets", [{"id": "total-80", "unit": "H44.07", "metric": "total", "min": 80},
                                          {"id": "tdgq", "unit": "H44.07", "metric": "TDGQ", "min": 20},
                                          {"id": "c21", "unit": "H44.07", "metric": "2.1", "min": 98}])
    score = (await app_client.get("/v1/scores/H44.07", params={"period": "2030-03"}, headers=auth(READER_KEY))).json()
    shown = (await app_client.get("/v1/units/H44.07/targets", params={"period": "2030-03"},
                                  headers=auth(READER_KEY))).json()["targets"]
    values = {t["id"]: t["value"] for t in shown}
    assert values["total-80"] == score["total"]["score"]
    assert values["tdgq"] == next(g["score"] for g in score["groups"] if g["code"] == "TDGQ")
    c21 = next(c for g in score["groups"] for c in g["components"] if c["id"] == "2.1")
    assert values["c21"] == c21["ratio"] == round(100 * 2 / 3, 2)  # the open one still in time (real clock: 2026)


async def test_the_indicators_role_runs_the_notifier_loop(app_client, settings):
    """The loop as dvc766 serve and dvc766 indicators run it (real clock): a late dossier applied by the
    role's worker is announced to the receiver with no call from the test."""
    import asyncio
    import dataclasses

    from services.app import create_app

    runtime = app_client.app.state.runtime
    quick = settings.model_copy(update={"notify": NotifySettings(evaluate_interval_seconds=0.2,
                                                                 deliver_poll_seconds=0.1)})
    now = utcnow()
    with Receiver() as receiver:
        await put(app_client, "/v1/webhooks", [{"id": "province", "url": receiver.url, "secret": SECRET,
                                                "events": TARGET_EVENTS}])
        await put(app_client, "/v1/targets", [{"id": "ontime-98", "unit": "H44.03", "metric": "2.1", "min": 98.0,
                                               "period": "year"}])
        late_now = [event("LIVE", 2, now - dt.timedelta(minutes=3), unit="H44.03",
                          due_at=now - dt.timedelta(minutes=2)),
                    event("LIVE", 9, now - dt.timedelta(minutes=1), unit="H44.03")]
        response = await app_client.post("/v1/events", json=late_now, headers=auth(ADMIN_KEY))
        assert response.json()["accepted"] == 2
        indicators = create_app(("indicators",), runtime=dataclasses.replace(runtime, settings=quick))
        async with indicators.router.lifespan_context(indicators):
            for _ in range(200):  # the loop runs every 0.2 s; give it up to 20 s on a loaded machine
                if receiver.received:
                    break
                await asyncio.sleep(0.1)
    [delivery] = [verified(r) for r in receiver.received]
    assert (delivery["event"], delivery["data"]["unit"], delivery["data"]["value"]) == ("target.at_risk", "H44.03", 0.0)
