"""The portal's published scores (shared/spec/reference/*.csv) recomputed from their own published counts.

This checks the scoring rules alone (caps, denominator-zero rules, rounding, group sums) on every row;
tests/integration/test_reference.py checks the whole path from events to the same numbers.
"""

import csv
from pathlib import Path

import pytest

from services.indicators.rules.scoring import COMPONENTS_BY_ID, Measure, build_scorecard, score_component
from shared.settings import PolicySettings

REFERENCE = Path(__file__).resolve().parents[3] / "shared" / "spec" / "reference"
POLICY = PolicySettings()
# Portal metric codes → our component ids.
METRICS = {
    "PUBLISH_ON_TIME": "1.1",
    "PUBLIC_UPDATE_ON_TIME": "1.2",
    "PUBLIC_CONTENT_FULL": "1.3",
    "DOSSIER_SYNC": "1.4",
    "ORIGINAL_RESULT_AVAILABLE": "4.1",
    "SO_HOA_GIAY_TO_GIAI_QUYET": "4.2",
    "ELECTRONIC_CERTIFIED_COPY": "4.3",
    "REUSED_DIGITIZED_DATA": "4.4",
    "SYNCED_WITH_DVCQG_PERSONAL_STORAGE": "4.5",
    "CITIZEN_DATA_CONNECTED_FORMALITY": "4.6",
    "CITIZEN_DATA_CONNECTED_DOSSIER": "4.7",
    "PETITION_PROCESSING_ON_TIME": "5.1",
    "PETITION_HANDLING_SATISFACTION": "5.2",
    "DOSSIER_RECEIVING_SATISFACTION": "5.3",
}
GROUP_OF_FILE = {"transparency": "CKMB", "digitized": "MDSH", "satisfaction": "MDHL"}


def rows(name: str) -> list[dict]:
    with open(REFERENCE / f"portal-2026-08-{name}.csv", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def close(a: float, b: float) -> bool:
    return abs(a - b) <= 0.01 + 1e-9


def test_progress_every_row():
    for r in rows("progress"):
        scored = score_component(COMPONENTS_BY_ID["2.1"], Measure(int(r["totalOnTime"]), int(r["totalReceived"])))
        published = float(r["score"] or r["totalScore"])
        assert close(scored.score, published), r["departmentCode"]
        assert close(scored.ratio, float(r["ratio"])), r["departmentCode"]


def test_payment_every_row():
    for r in rows("payment"):
        measures = {
            "3.4": Measure(int(r["totalDossierOnlineFormalityPaymentSuccess"]), int(r["totalFeeDossierFormalityDistinct"])),
            "3.5": Measure(int(r["totalFeeDossierFormality"]), int(r["totalFeeFormality"])),
            "3.6": Measure(int(r["totalDossierOnlinePaymentSuccess"]), int(r["totalDossierFinancialObligation"])),
        }
        card = build_scorecard(measures, rating_bands=POLICY.rating_bands, exact_groups=())
        tttt = next(g for g in card.groups if g["code"] == "TTTT")
        assert close(tttt["score"], float(r["totalScore"])), r["departmentCode"]


def test_online_parent_row_reproduces_the_clgq_note():
    parent = rows("online")[0]
    measures = {
        "3.1": Measure(int(parent["partialCount"]) + int(parent["fullCount"]), int(parent["authorityCount"])),
        "3.2": Measure(int(parent["onlineDossierCount"]), int(parent["onlineServiceTotal"])),
        "3.3": Measure(int(parent["channelOnlineSum"]), int(parent["channelTotalSum"])),
    }
    card = build_scorecard(measures, rating_bands=POLICY.rating_bands)
    clgq = next(g for g in card.groups if g["code"] == "CLGQ")
    assert clgq["score"] == float(parent["totalScore"]) == 8.83


@pytest.mark.parametrize("name", ["transparency", "digitized", "satisfaction"])
def test_metric_files_every_row(name):
    by_unit: dict[str, list[dict]] = {}
    for r in rows(name):
        by_unit.setdefault(r["departmentId"], []).append(r)
    checked = 0
    for unit_rows in by_unit.values():
        measures = {}
        for r in unit_rows:
            cid = METRICS.get(r["metrics.code"])
            if cid is None:  # the portal's informational petition classifications (max 0)
                continue
            if r["metrics.denominator"] == "":  # 4.3: published as a ratio only
                measures[cid] = Measure(round(float(r["metrics.ratio"])), 100)
            else:
                measures[cid] = Measure(int(r["metrics.numerator"]), int(r["metrics.denominator"]))
        card = build_scorecard(measures, rating_bands=POLICY.rating_bands)
        for r in unit_rows:
            cid = METRICS.get(r["metrics.code"])
            if cid is None:
                continue
            scored = card.components[cid]
            if r["metrics.score"] == "":
                assert scored.status == "no_data" and scored.score == 0.0, (r["departmentId"], cid)
            else:
                assert close(scored.score, float(r["metrics.score"])), (r["departmentId"], cid)
                if scored.denominator:
                    assert close(scored.ratio, float(r["metrics.ratio"])), (r["departmentId"], cid)
            checked += 1
        group = next(g for g in card.groups if g["code"] == GROUP_OF_FILE[name])
        assert close(group["score"], float(unit_rows[0]["totalScore"])), unit_rows[0]["departmentId"]
    assert checked == len(by_unit) * {"transparency": 4, "digitized": 7, "satisfaction": 3}[name]
