"""GET /v1/portal/{group}-tree: the portal's shapes, checked against the portal's own published numbers."""

from __future__ import annotations

import csv

from shared.db.raw import driver_connection
from tests.conftest import READER_KEY, REFERENCE_DIR, SOURCE_KEY, auth

PERIOD = "2026-08"


def reference(name: str) -> list[dict[str, str]]:
    with open(REFERENCE_DIR / f"portal-2026-08-{name}.csv", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


async def load_counters(runtime, per_unit: dict[str, dict[str, int]]) -> None:
    """Seed the maintained counters (the read model) directly: 184,513 dossiers as events would take minutes."""
    rows = [(unit, PERIOD, "*", metric, value) for unit, metrics in per_unit.items()
            for metric, value in metrics.items() if value]
    async with runtime.engine.begin() as conn:
        apg = await driver_connection(conn)
        await apg.executemany(
            "INSERT INTO counters (unit_code, period, procedure_code, metric, value) VALUES ($1, $2, $3, $4, $5)", rows)


def number(text: str) -> float | None:
    return float(text) if text != "" else None


async def test_progress_tree_reproduces_the_reference_columns(app_client):
    runtime = app_client.app.state.runtime
    rows = reference("progress")
    parent_ref, children_ref = rows[0], rows[1:]
    seconds_per_day = runtime.calendar.seconds_per_day
    per_unit = {}
    for row in children_ref:
        received, on_time = int(row["totalReceived"]), int(row["totalOnTime"])
        # The portal publishes no completed count per child: give each child "every dossier completed"
        # with the total working time that yields its published mean.
        per_unit[row["departmentCode"]] = {
            "received": received, "on_time": on_time, "overdue": int(row["totalOverdue"]), "completed": received,
            "processing_working_seconds": round(float(row["avgProcessingDays"]) * seconds_per_day * received),
        }
    await load_counters(runtime, per_unit)

    response = await app_client.get(f"/v1/portal/progress-tree?unit=H44&period={PERIOD}", headers=auth(READER_KEY))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["code"] == "OK"
    parent, children = body["data"]["parent"], body["data"]["children"]

    assert [c["departmentCode"] for c in children] == [r["departmentCode"] for r in children_ref]
    child_columns = ("totalReceived", "totalOnTime", "totalOverdue", "avgProcessingDays", "ratio", "score",
                     "maxScore")
    for ours, ref in zip(children, children_ref):
        assert ours["departmentName"] == ref["departmentName"]
        assert ours["level"] == ref["level"]
        assert {k: ours[k] for k in child_columns} == {k: number(ref[k]) for k in child_columns}, ref["departmentCode"]
        assert ours["scoreDelta"] is None and "totalScore" not in ours
    # The parent: sums of the children, then the score (never averaged): 144625 / 184513 -> 78.38 %, 15.68 / 20.
    parent_columns = ("totalReceived", "totalOnTime", "ratio", "totalScore", "totalMaxScore")
    assert {k: parent[k] for k in parent_columns} == {k: number(parent_ref[k]) for k in parent_columns}
    assert parent["departmentCode"] == "H44" and parent["departmentName"] == parent_ref["departmentName"]
    assert "score" not in parent and "totalOverdue" not in parent and "level" not in parent
    # The reference CSV's columns are all there (departmentId: the portal's own id, which dvc766 does not hold).
    published = set(rows[0].keys()) - {"level"}
    assert published <= set(parent) | set(children[0])


async def test_online_tree_channel_sums_on_the_parent_only(app_client):
    runtime = app_client.app.state.runtime
    ref = reference("online")[0]
    await load_counters(runtime, {
        "H44.03": {"received": 100_000, "received_online": 100_000, "on_time": 100_000},
        "H44.100": {"received": 52_595, "received_online": 50_956, "received_in_person": 1_639, "on_time": 52_595},
    })
    response = await app_client.get(f"/v1/portal/online-tree?unit=H44&period={PERIOD}", headers=auth(READER_KEY))
    assert response.status_code == 200, response.text
    parent = response.json()["data"]["parent"]
    for column in ("channelOnlineSum", "channelDirectSum", "channelPostalSum", "channelTotalSum"):
        assert parent[column] == int(ref[column]), column
    assert parent["totalMaxScore"] == 12
    assert parent["ratio"] == round(100 * parent["totalScore"] / 12, 2)
    child = next(c for c in response.json()["data"]["children"] if c["departmentCode"] == "H44.03")
    assert "channelOnlineSum" not in child and child["level"] == "PROVINCE"


async def test_metric_trees_use_the_portal_codes(app_client):
    for tree, codes in (
        ("digitized", ["ORIGINAL_RESULT_AVAILABLE", "SO_HOA_GIAY_TO_GIAI_QUYET", "REUSED_DIGITIZED_DATA",
                       "SYNCED_WITH_DVCQG_PERSONAL_STORAGE", "CITIZEN_DATA_CONNECTED_DOSSIER",
                       "CITIZEN_DATA_CONNECTED_FORMALITY", "ELECTRONIC_CERTIFIED_COPY"]),
        ("satisfaction", ["DOSSIER_RECEIVING_SATISFACTION", "PETITION_PROCESSING_ON_TIME",
                          "PETITION_HANDLING_SATISFACTION"]),
        ("transparency", ["PUBLISH_ON_TIME", "PUBLIC_UPDATE_ON_TIME", "PUBLIC_CONTENT_FULL", "DOSSIER_SYNC"]),
    ):
        response = await app_client.get(f"/v1/portal/{tree}-tree?unit=H44&period={PERIOD}", headers=auth(READER_KEY))
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        assert [m["code"] for m in data["parent"]["metrics"]] == codes
        assert len(data["children"]) == 163
        assert data["children"][0]["departmentType"] == "PROVINCIAL_DEPARTMENT"
        assert {m["maxScore"] for m in data["parent"]["metrics"]} <= {2, 4, 6}
    response = await app_client.get(f"/v1/portal/payment-tree?unit=H44&period={PERIOD}", headers=auth(READER_KEY))
    assert response.status_code == 200 and response.json()["data"]["parent"]["totalMaxScore"] == 10


async def test_portal_tree_errors(app_client):
    cases = [
        ("/v1/portal/progress-tree?unit=H99", auth(READER_KEY), 404, "unknown_unit"),
        ("/v1/portal/speed-tree?unit=H44", auth(READER_KEY), 404, "unknown_tree"),
        ("/v1/portal/progress-tree?unit=H44&period=2026-13", auth(READER_KEY), 400, "bad_period"),
        ("/v1/portal/progress-tree?unit=H44", auth(SOURCE_KEY), 403, "forbidden"),
        ("/v1/portal/progress-tree?unit=H44", {}, 401, "unauthenticated"),
    ]
    for url, headers, status, code in cases:
        response = await app_client.get(url, headers=headers)
        assert (response.status_code, response.json()["code"]) == (status, code), url
