"""CounterDelta (the batch's counter changes, summed per month) equals retracting and adding whole expansions."""

from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from services.indicators.rules.counters import (
    ALL_PROCEDURES,
    PROCEDURE_METRICS,
    Contribution,
    CounterDelta,
    accumulate_delta,
    expand,
)
from shared.timeutil import parse_period, periods_of
from tests.support.strategies import contributions


def _nonzero(counts) -> dict:
    return {k: v for k, v in counts.items() if v}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.none() | contributions(), st.none() | contributions()), max_size=20))
def test_moves_equal_retracting_and_adding_whole_expansions(moves):
    reference: defaultdict = defaultdict(int)
    delta = CounterDelta()
    for old, new in moves:
        accumulate_delta(reference, old, new)
        delta.move(old, new)
    assert _nonzero(delta.totals()) == _nonzero(reference)
    assert delta.rows() == sorted((u, period, p, m, v) for (u, p, period, m), v in _nonzero(reference).items())


@settings(max_examples=200, deadline=None)
@given(contributions())
def test_a_status_moving_on_touches_only_the_counts_that_change(old):
    new = Contribution(**{**old.__dict__, "counts": {**old.counts, "completed": old.counts.get("completed", 0) + 1}})
    delta = CounterDelta()
    delta.move(old, new)
    changed = _nonzero(delta.totals())
    assert set(changed) == {(old.unit_code, ALL_PROCEDURES, period, "completed")
                            for period in periods_of(parse_period(old.received_month).start)}
    assert set(changed.values()) == {1}


def test_per_procedure_rows_hold_only_the_metrics_the_catalogue_components_read():
    contribution = Contribution("H44.03", "P1", "2026-08", {"received": 1, "received_online": 1, "completed": 1,
                                                            "on_time": 1, "fee_data": 1})
    expanded = expand(contribution)
    assert {m for (_, p, _, m) in expanded if p == "P1"} == {"received", "received_online", "fee_data"}
    assert {m for (_, p, _, m) in expanded if p == ALL_PROCEDURES} == set(contribution.counts)
    assert {"received", "received_online"} <= PROCEDURE_METRICS
