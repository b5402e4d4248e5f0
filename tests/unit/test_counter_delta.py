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
    read_periods,
    stored_periods,
    stored_rows,
)
from shared.timeutil import parse_period
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


@settings(max_examples=300, deadline=None)
@given(st.lists(contributions(), max_size=12))
def test_every_period_reads_the_sum_of_the_plain_expansions(items):
    """Stored as month rows plus corrections, read back as each month, quarter and year: exactly what
    expanding each contribution over its periods (the rules' plain statement) gives."""
    delta = CounterDelta()
    expected: defaultdict = defaultdict(int)
    periods = set()
    for item in items:
        delta.add(item)
        for key, value in expand(item).items():
            expected[key] += value
            periods.add(key[2])
    assert read_periods(delta.totals(), periods) == _nonzero(expected)


@settings(max_examples=200, deadline=None)
@given(contributions())
def test_quarter_and_year_rows_hold_only_open_dossiers_corrections(item):
    for (_, _, period, metric), _ in stored_rows(item).items():
        if parse_period(period).kind != "month":
            assert item.open_undetermined and item.deadline_passed
            assert metric in {"on_time", "overdue", "open_in_time", "open_overdue"}


def test_a_quarter_is_its_months_and_its_corrections():
    assert stored_periods("2026-Q3") == ("2026-07", "2026-08", "2026-09", "2026-Q3")
    assert stored_periods("2026")[:2] == ("2026-01", "2026-02") and stored_periods("2026")[-1] == "2026"
    assert len(stored_periods("2026")) == 13
    assert stored_periods("2026-08") == ("2026-08",)


@settings(max_examples=200, deadline=None)
@given(contributions())
def test_a_status_moving_on_touches_only_the_counts_that_change(old):
    new = Contribution(**{**old.__dict__, "counts": {**old.counts, "completed": old.counts.get("completed", 0) + 1}})
    delta = CounterDelta()
    delta.move(old, new)
    changed = _nonzero(delta.totals())
    # The month's rows only (its quarter and year read them from there): all procedures and its own
    # (completed dossiers are counted per procedure for the per-procedure tables).
    assert changed == {(old.unit_code, ALL_PROCEDURES, old.received_month, "completed"): 1,
                       (old.unit_code, old.procedure_code, old.received_month, "completed"): 1}


def test_per_procedure_rows_hold_only_the_metrics_read_per_procedure():
    contribution = Contribution("H44.03", "P1", "2026-08", {"received": 1, "received_online": 1, "completed": 1,
                                                            "on_time": 1, "fee_data": 1, "completed_early": 1,
                                                            "steps": 2})
    expanded = stored_rows(contribution)
    assert {m for (_, p, _, m) in expanded if p == "P1"} == {"received", "received_online", "fee_data", "completed",
                                                             "on_time"}
    assert {m for (_, p, _, m) in expanded if p == ALL_PROCEDURES} == set(contribution.counts)
    assert {"received", "received_online"} <= PROCEDURE_METRICS
