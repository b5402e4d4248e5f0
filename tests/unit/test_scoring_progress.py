from services.indicators.rules.scoring import COMPONENTS_BY_ID, Measure, round_half_up, score_component


def test_portal_rounding_example():
    # indicators.md §6: 20 × 486/588 = 16.5306 → 16.53, ratio 82.65 %.
    scored = score_component(COMPONENTS_BY_ID["2.1"], Measure(486, 588))
    assert (scored.score, scored.ratio) == (16.53, 82.65)


def test_half_up_not_bankers_rounding():
    assert round_half_up(0.125) == 0.13
    from fractions import Fraction

    assert round_half_up(Fraction(1, 32) * 100) == 3.13  # reference README: 1/32 → 3.13


def test_no_dossiers_scores_zero_for_2_1():
    scored = score_component(COMPONENTS_BY_ID["2.1"], Measure(0, 0))
    assert (scored.status, scored.score) == ("ok", 0.0)


def test_online_ratio_caps_at_half():
    assert score_component(COMPONENTS_BY_ID["3.3"], Measure(150956, 152595)).score == 6.0
    assert score_component(COMPONENTS_BY_ID["3.3"], Measure(1, 4)).score == 3.0


def test_inputs_never_fed_are_no_data():
    scored = score_component(COMPONENTS_BY_ID["1.1"], None)
    assert (scored.status, scored.score, scored.numerator) == ("no_data", 0.0, None)
