"""Reproduce the portal's published transparency (1.1–1.4) and online-services (3.1–3.3) numbers for
Phú Thọ, August 2026, for every unit, through the real paths: PUT /v1/catalog/procedures,
PUT /v1/reported-totals, ingest's ``intake`` and the worker's ``apply_pending``; the scores are
read from GET /v1/scores and must match within 0.01.

The transparency inputs are loaded first and every unit's scores read; the online inputs are then
loaded on top (a catalogue full replace from 2 January removes the transparency procedures) and the
scores read again. 1.4 is 100 % at every unit, so each unit receives exactly its synced count
(138,744 in all, online except at the three units whose CLGQ score is 0); the online load adds the
dossiers that make up 3.3's 150,956 online of 152,595 at the parent. One database load serves both
CSVs, which keeps the module fast.

Transparency: every child lists the same 89 procedures (87 with all parts public), so 1.3 is 87/89
everywhere, the parent included (distinct procedures); no catalogue row has a publication decision,
so 1.1 and 1.2 are no_data; 1.4's numerator is the unit's synced dossiers and its denominator the
reported total; the two NO_NATIONAL_REPORT_DATA units have neither (0/0, no_data).

Online: the children publish only their CLGQ score (``ratio`` is that score over 12), so their
inputs are underdetermined. Chosen: every child with a score has only online dossiers (its synced
ones; 3.3 = 100 %, 6 points; every non-zero child score is ≥ 6.09), and the rest of its score is
split between 3.1 (k online of n procedures, drawn from the parent's 56) and 3.2 (a used of a + b
service weights) by the cheapest split whose rounded component scores add up to the published
score exactly (``online_split``: fewest service weights, then fewest procedures; a used service
gets one more online dossier). The three children scoring 0 get no catalogue and no online dossier
(3.1 and 3.2 no_data, 3.3 0). The parent's counts are sums over the subtree, and the parent's own
catalogue rows and dossiers make up the difference: 56 procedures (31 partial, 21 full, 4 offline:
52/56), 1,968 service weights of which 406 used, 150,956 online of 152,595 dossiers (1,639 in
person, none by post). Which child holds which share of the parent's counts is
not published and not checked; nor is the split of the online dossiers into on time (134,160) and
overdue (16,796), which no component uses.
"""

import httpx
import pytest
import pytest_asyncio

from tests.conftest import ADMIN_KEY, auth
from tests.support.database import truncate_event_tables
from tests.support.reference import (
    ONLINE_CATALOGUE_FROM,
    OnlineSplit,
    august_scores,
    ingest_reference,
    metric_rows,
    online,
    online_split,
    read,
    transparency,
)
from tests.support.scores import chunks, close, component, group

pytestmark = pytest.mark.slow

TRANSPARENCY = {"PUBLISH_ON_TIME": "1.1", "PUBLIC_UPDATE_ON_TIME": "1.2", "PUBLIC_CONTENT_FULL": "1.3",
                "DOSSIER_SYNC": "1.4"}


async def truncate(runtime) -> None:
    await truncate_event_tables(runtime)


async def load(client, runtime, *, catalogue, events, reported=(), full_from=None) -> None:
    if full_from:  # a full replace is one request, valid as a whole
        r = await client.put("/v1/catalog/procedures", params={"mode": "full", "valid_from": full_from},
                             json=catalogue, headers=auth(ADMIN_KEY))
        # Its tombstones are versions written, not items accepted or rejected.
        assert r.status_code == 200, r.text[:500]
        body = r.json()
        assert (body["accepted"], body["rejected"]) == (len(catalogue), 0), {k: body[k] for k in body if k != "results"}
        assert body["versions_written"] > len(catalogue)
    else:
        for part in chunks(catalogue, 10000):
            r = await client.put("/v1/catalog/procedures", json=part, headers=auth(ADMIN_KEY))
            assert r.status_code == 200 and r.json()["rejected"] == 0, r.text[:500]
    if reported:
        r = await client.put("/v1/reported-totals", json=list(reported), headers=auth(ADMIN_KEY))
        assert r.status_code == 200 and r.json()["rejected"] == 0, r.text[:500]
    await ingest_reference(runtime, events, batch=5000)


@pytest_asyncio.fixture(scope="module")
async def scores(runtime):
    """Empty the database; load the transparency inputs, read every unit's August scores; load the
    online inputs on top, read them again."""
    from services.app import create_app

    await truncate(runtime)
    base = transparency()
    more = online(base.events)
    app = create_app(("ingest", "api"), runtime=runtime)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            await load(client, runtime, catalogue=base.catalogue, events=base.events, reported=base.reported)
            after_transparency = await august_scores(client)
            await load(client, runtime, catalogue=more.catalogue, events=more.events, full_from=ONLINE_CATALOGUE_FROM)
            return after_transparency, await august_scores(client)


@pytest.fixture(scope="module")
def transparency_scores(scores):
    return scores[0]


@pytest.fixture(scope="module")
def online_scores(scores):
    return scores[1]


async def test_transparency_every_unit(transparency_scores):
    rows = metric_rows("transparency")
    assert len(rows) == 164
    for unit, metrics in rows.items():
        body = transparency_scores[unit]
        for code, cid in TRANSPARENCY.items():
            row, got = metrics[code], component(body, cid)
            if row["metrics.score"] == "":
                # 1.1, 1.2 everywhere; 1.4 where the portal has no national report data.
                assert got["status"] == "no_data" and got["score"] == 0.0, (unit, cid, got)
                assert (got["numerator"] or 0, got["denominator"] or 0) == (0, 0), (unit, cid, got)
                continue
            assert (got["numerator"], got["denominator"]) == (int(row["metrics.numerator"]),
                                                              int(row["metrics.denominator"])), (unit, cid)
            assert close(got["ratio"], row["metrics.ratio"]), (unit, cid, got, row["metrics.ratio"])
            assert close(got["score"], row["metrics.score"]), (unit, cid, got, row["metrics.score"])
        ckmb = group(body, "CKMB")
        assert close(ckmb["score"], metrics["DOSSIER_SYNC"]["totalScore"]), (unit, ckmb["score"])
        assert close(100 * ckmb["score"] / ckmb["max"], metrics["DOSSIER_SYNC"]["ratio"]), unit
        # The group keeps its full maximum when components have no data (indicators.md §6).
        assert ckmb["max"] == int(metrics["DOSSIER_SYNC"]["totalMaxScore"]) == 18


async def test_online_every_unit(online_scores):
    rows = read("online")
    assert len(rows) == 164
    for row in rows:
        unit = row["departmentCode"]
        clgq = group(online_scores[unit], "CLGQ")
        assert clgq["max"] == int(row["totalMaxScore"])
        assert close(clgq["score"], row["totalScore"]), (unit, clgq["score"], row["totalScore"])
        assert close(100 * clgq["score"] / clgq["max"], row["ratio"]), (unit, row["ratio"])


async def test_online_parent_counts(online_scores):
    parent = next(r for r in read("online") if r["level"] == "PARENT")
    body = online_scores[parent["departmentCode"]]
    got = {cid: component(body, cid) for cid in ("3.1", "3.2", "3.3")}
    online_procedures = int(parent["partialCount"]) + int(parent["fullCount"])
    assert (got["3.1"]["numerator"], got["3.1"]["denominator"]) == (online_procedures, int(parent["authorityCount"]))
    assert (got["3.2"]["numerator"], got["3.2"]["denominator"]) == (int(parent["onlineDossierCount"]),
                                                                    int(parent["onlineServiceTotal"]))
    assert (got["3.3"]["numerator"], got["3.3"]["denominator"]) == (int(parent["channelOnlineSum"]),
                                                                    int(parent["channelTotalSum"]))
    # indicators.md §2's note: 2 + 0.83 + 6 = 8.83.
    assert [got[c]["score"] for c in ("3.1", "3.2", "3.3")] == [2.0, 0.83, 6.0]
    counters = body["counters"]
    assert (counters["received_online"], counters["received_in_person"], counters["received_postal"]) == (
        int(parent["channelOnlineSum"]), int(parent["channelDirectSum"]), int(parent["channelPostalSum"]))


def test_online_split_is_exact_and_cheapest():
    # 6.28 → 0.28 beyond 3.3's 6 points: one online procedure of 9 (2.5/9 = 0.2778 → 0.28), no used service.
    assert online_split(28) == OnlineSplit(k=1, n=9, a=0, b=1)
    for cents in range(9, 118):
        split = online_split(cents)
        assert sum(split.cents()) == cents
        assert split.n <= 56
