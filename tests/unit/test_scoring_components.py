"""indicators.md §2 and §6, component by component, on plain counts (no database)."""

from fractions import Fraction

import pytest

from services.indicators.rules import counters as c
from services.indicators.rules.catalogue import CatalogueCounts
from services.indicators.rules.feedback import FeedbackCounts
from services.indicators.rules.scoring import (
    COMPONENTS,
    COMPONENTS_BY_ID,
    GROUPS,
    Measure,
    ScoreInputs,
    build_scorecard,
    measures_of,
    score_component,
    score_inputs,
)
from shared.settings import PolicySettings

POLICY = PolicySettings()
SPD = 8 * 3600


def test_layout_is_22_components_in_6_groups_of_100_points():
    assert len(COMPONENTS) == 22
    assert [g.code for g in GROUPS] == ["CKMB", "TDGQ", "CLGQ", "TTTT", "MDSH", "MDHL"]
    for group in GROUPS:
        assert sum(d.max for d in COMPONENTS if d.group == group.code) == group.max
    assert sum(g.max for g in GROUPS) == 100


@pytest.mark.parametrize(
    "cid, num, den, status, ratio, score",
    [
        # linear, rounded half-up from the exact ratio
        ("2.1", 486, 588, "ok", 82.65, 16.53),
        ("2.1", 0, 0, "ok", 0.0, 0.0),  # 0 if none
        ("1.1", 0, 0, "no_data", None, 0.0),  # published empty by the portal
        ("1.4", 0, 0, "no_data", None, 0.0),
        ("1.3", 87, 89, "ok", 97.75, 1.96),
        # caps
        ("3.1", 52, 56, "ok", 92.86, 2.0),  # cap at 0.8
        ("3.1", 7, 10, "ok", 70.0, 1.75),
        ("3.3", 150956, 152595, "ok", 98.93, 6.0),  # cap at 0.5
        ("3.3", 1, 4, "ok", 25.0, 3.0),
        ("3.4", 93, 310, "ok", 30.0, 0.75),
        ("4.4", 3158, 184503, "ok", 1.71, 0.04),  # cap at 0.8 (linear would be 0.03)
        ("5.3", 144315, 184503, "ok", 78.22, 5.21),  # cap at 0.9
        ("5.3", 486, 588, "ok", 82.65, 5.51),
        ("5.3", 95, 100, "ok", 95.0, 6.0),
        ("5.3", 0, 0, "ok", 0.0, 0.0),  # 0 if no dossiers
        # zero denominators with full marks
        ("5.1", 0, 0, "ok", 100.0, 6.0),
        ("5.2", 0, 0, "ok", 100.0, 6.0),
        ("5.1", 182, 247, "ok", 73.68, 4.42),
        # the digitisation components the portal leaves empty without dossiers
        ("4.1", 0, 0, "no_data", None, 0.0),
        ("4.1", 133609, 184503, "ok", 72.42, 4.34),
        ("4.2", 21476, 184503, "ok", 11.64, 0.47),
        ("4.6", 297, 1301, "ok", 22.83, 0.46),
        ("4.7", 85633, 184503, "ok", 46.41, 0.93),
        ("3.6", 0, 0, "ok", 0.0, 0.0),
        # exact .xx5 ratios round half-up
        ("1.3", 1, 32, "ok", 3.13, 0.06),
    ],
)
def test_component_scoring(cid, num, den, status, ratio, score):
    scored = score_component(COMPONENTS_BY_ID[cid], Measure(num, den))
    assert (scored.status, scored.ratio, scored.score) == (status, ratio, score)


def test_never_fed_is_no_data_not_zero():
    scored = score_component(COMPONENTS_BY_ID["3.1"], None)
    assert scored.status == "no_data" and scored.score == 0.0 and scored.numerator is None


def test_mean_processing_time_has_no_points():
    scored = score_component(COMPONENTS_BY_ID["2.2"], Measure(Fraction(15, 2), 2))
    assert scored.ratio == 3.75 and scored.score == 0.0


def _catalogue(**kw) -> CatalogueCounts:
    return CatalogueCounts(**kw)


def test_clgq_note_reproduces_phu_tho():
    inputs = ScoreInputs(
        counts={c.RECEIVED: 152595, "received_online": 150956},
        catalogue=_catalogue(procedures=56, online_procedures=52, services=1968, services_used=406),
    )
    card = score_inputs(inputs, POLICY, seconds_per_day=SPD)
    clgq = next(g for g in card.groups if g["code"] == "CLGQ")
    assert [x["score"] for x in clgq["components"]] == [2.0, 0.83, 6.0]
    assert clgq["score"] == 8.83


@pytest.mark.parametrize(
    "paid, fee, b, c_, expected",
    [
        (82913, 98459, (93, 310), (56, 310), 6.25),  # Phú Thọ
        (7, 7, (2, 3), (0, 3), 7.67),  # H44.03: 6 + 1.6667 + 0 = 7.6667
        (0, 0, (0, 1), (0, 1), 0.0),
    ],
)
def test_tttt_portal_formula(paid, fee, b, c_, expected):
    inputs = ScoreInputs(
        counts={c.RECEIVED: max(fee, 1), c.FEE_DOSSIERS: fee, c.PAID_ONLINE_DOSSIERS: paid},
        catalogue=_catalogue(fee_procedures=b[1], paid_online_procedures=b[0], fee_data_procedures=c_[0]),
    )
    card = score_inputs(inputs, POLICY, seconds_per_day=SPD)
    tttt = next(g for g in card.groups if g["code"] == "TTTT")
    assert tttt["score"] == expected


def test_tttt_rounding_policy():
    # 6 × 1/3 = 2 exactly; 2.5 × 1/6 = 0.41667 → 0.42; twice → 0.84 summed rounded vs 0.83 formula.
    inputs = ScoreInputs(
        counts={c.RECEIVED: 3, c.FEE_DOSSIERS: 3, c.PAID_ONLINE_DOSSIERS: 1},
        catalogue=_catalogue(fee_procedures=6, paid_online_procedures=1, fee_data_procedures=1),
    )
    formula = score_inputs(inputs, PolicySettings(payment_group_score="portal_formula"), seconds_per_day=SPD)
    summed = score_inputs(inputs, POLICY, seconds_per_day=SPD)
    group = lambda card: next(g for g in card.groups if g["code"] == "TTTT")["score"]  # noqa: E731
    assert group(formula) == 2.83
    assert group(summed) == 2.84


def test_group_and_total_are_sums_of_rounded_scores_and_missing_points_are_counted():
    inputs = ScoreInputs(counts={c.RECEIVED: 588, c.ON_TIME: 486})
    card = score_inputs(inputs, POLICY, seconds_per_day=SPD)
    by_code = {g["code"]: g for g in card.groups}
    assert by_code["TDGQ"]["score"] == 16.53
    # no catalogue, no feedback, no unit-tree e-copy data: 1.1–1.3, 3.1, 3.2, 3.4, 3.5, 4.3, 4.6, 5.1, 5.2
    missing = ["1.1", "1.2", "1.3", "3.1", "3.2", "3.4", "3.5", "4.3", "4.6", "5.1", "5.2"]
    assert card.points_without_data == sum(COMPONENTS_BY_ID[m].max for m in missing) == 38
    assert card.total == round(sum(g["score"] for g in card.groups), 2)
    statuses = {x["id"]: x["status"] for g in card.groups for x in g["components"]}
    assert statuses["3.1"] == "no_data" and statuses["2.1"] == "ok"


def test_decision_layout_has_five_groups_with_iii_merged():
    inputs = ScoreInputs(counts={c.RECEIVED: 10, c.ON_TIME: 10, "received_online": 10})
    portal = score_inputs(inputs, POLICY, seconds_per_day=SPD)
    decision = score_inputs(inputs, POLICY, seconds_per_day=SPD, layout="decision")
    assert [g["code"] for g in decision.groups] == ["I", "II", "III", "IV", "V"]
    iii = decision.groups[2]
    assert iii["max"] == 22 and [x["id"] for x in iii["components"]] == ["3.1", "3.2", "3.3", "3.4", "3.5", "3.6"]
    assert [len(g["components"]) for g in decision.groups] == [4, 2, 6, 7, 3]
    assert decision.total == portal.total


@pytest.mark.parametrize(
    "policy, counts, expected",
    [
        (PolicySettings(), {c.RECEIVED: 10, c.E_RESULT: 4, c.RESULT_REQUIRED: 5, c.E_RESULT_WHERE_REQUIRED: 4},
         (4, 10)),
        (PolicySettings(e_result_denominator="result_required"),
         {c.RECEIVED: 10, c.E_RESULT: 5, c.RESULT_REQUIRED: 5, c.E_RESULT_WHERE_REQUIRED: 4}, (4, 5)),
    ],
)
def test_e_result_denominator_policy(policy, counts, expected):
    measure = measures_of(ScoreInputs(counts=counts), policy, seconds_per_day=SPD)["4.1"]
    assert (measure.numerator, measure.denominator) == expected


def test_digitisation_scoring_policy():
    inputs = ScoreInputs(counts={c.RECEIVED: 10, c.DIGITIZED: 4})
    linear = score_inputs(inputs, POLICY, seconds_per_day=SPD).components["4.2"].score
    capped = score_inputs(inputs, PolicySettings(digitisation_scoring="cap_0_8"), seconds_per_day=SPD)
    assert linear == 1.6 and capped.components["4.2"].score == 2.0


def test_online_ratio_denominator_policy():
    inputs = ScoreInputs(
        counts={c.RECEIVED: 100, "received_online": 40},
        catalogue=_catalogue(received_in_online_procedures=50, online_in_online_procedures=40),
    )
    default = measures_of(inputs, POLICY, seconds_per_day=SPD)["3.3"]
    narrow = measures_of(inputs, PolicySettings(online_ratio_denominator="online_procedures"), seconds_per_day=SPD)
    assert (default.numerator, default.denominator) == (40, 100)
    assert (narrow["3.3"].numerator, narrow["3.3"].denominator) == (40, 50)


@pytest.mark.parametrize(
    "received, reported, synced, expected",
    [(10, None, 8, (8, 10)), (10, 20, 10, (10, 20)), (30, 20, 30, (30, 30)), (0, None, 0, (0, 0))],
)
def test_sync_denominator_is_max_of_received_and_reported(received, reported, synced, expected):
    m = measures_of(ScoreInputs(counts={c.RECEIVED: received, c.SYNCED: synced}, reported_received=reported),
                    POLICY, seconds_per_day=SPD)["1.4"]
    assert (m.numerator, m.denominator) == expected


def test_satisfaction_subtracts_overdue_and_complaints():
    inputs = ScoreInputs(counts={c.RECEIVED: 100, c.ON_TIME: 90, c.OVERDUE: 10}, complaint_dossiers=5)
    m = measures_of(inputs, POLICY, seconds_per_day=SPD)["5.3"]
    assert (m.numerator, m.denominator) == (85, 100)


@pytest.mark.parametrize(
    "communes, offering, policy, status, score",
    [
        (None, 0, POLICY, "no_data", 0.0),  # the unit tree never said
        (0, 0, POLICY, "ok", 2.0),  # a department: full marks, as the portal shows
        (0, 0, PolicySettings(e_copy_without_communes="no_data"), "no_data", 0.0),
        (4, 3, POLICY, "ok", 1.5),
    ],
)
def test_e_certified_copy(communes, offering, policy, status, score):
    card = score_inputs(ScoreInputs(counts={}, communes=communes, communes_e_copy=offering), policy, seconds_per_day=SPD)
    assert (card.components["4.3"].status, card.components["4.3"].score) == (status, score)


def test_feedback_full_marks_when_fed_but_empty_and_no_data_when_never_fed():
    fed = score_inputs(ScoreInputs(counts={}, feedback=FeedbackCounts()), POLICY, seconds_per_day=SPD)
    never = score_inputs(ScoreInputs(counts={}), POLICY, seconds_per_day=SPD)
    assert fed.components["5.1"].score == 6.0 and fed.components["5.2"].score == 6.0
    assert never.components["5.1"].status == "no_data"


def test_rating_bands():
    card = build_scorecard({"2.1": Measure(1, 1)}, rating_bands=POLICY.rating_bands)
    assert card.total == 20.0 and card.rating == "Yếu"
