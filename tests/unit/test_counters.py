"""Counters are a pure function of the set of events: arrival order, duplicates and batching don't matter."""

import datetime as dt
from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from services.indicators.rules.counters import (
    ON_TIME,
    OVERDUE,
    RECEIVED,
    Contribution,
    accumulate_delta,
    contribution_of,
    expand,
    total_counts,
)
from services.indicators.rules.dossier import HistoryEvent, assess, derive_facts
from shared.calendar import WorkingCalendar
from shared.timeutil import VIETNAM

CAL = WorkingCalendar(first_year=2025, last_year=2027)
START = dt.datetime(2026, 1, 5, 8, 0, tzinfo=VIETNAM)
NOW = dt.datetime(2026, 6, 1, tzinfo=VIETNAM)


def contribution(events: list[HistoryEvent]) -> Contribution | None:
    facts = derive_facts("D", events, CAL)
    if facts.received_at is None:
        return None
    return contribution_of(facts, assess(facts, CAL), CAL, NOW)


@st.composite
def histories(draw):
    """A dossier's events at distinct instants, with realistic and unrealistic status sequences."""
    n = draw(st.integers(min_value=1, max_value=9))
    offsets = draw(st.lists(st.integers(min_value=0, max_value=120 * 24), min_size=n, max_size=n, unique=True))
    statuses = draw(st.lists(st.integers(min_value=1, max_value=10), min_size=n, max_size=n))
    if draw(st.booleans()):
        statuses[0] = 2
    due = START + dt.timedelta(hours=draw(st.integers(min_value=0, max_value=90 * 24)))
    unit = draw(st.sampled_from(["H44.03", "H44.07"]))
    events = []
    for i, (offset, status) in enumerate(zip(sorted(offsets), statuses)):
        events.append(
            HistoryEvent(
                seq=i,
                status=status,
                occurred_at=START + dt.timedelta(hours=offset),
                unit_code=unit,
                procedure_code="P1",
                channel=draw(st.sampled_from([None, 1, 2, 3])) if status == 2 else None,
                due_at=due if status == 2 else None,
                step_due_at=(START + dt.timedelta(hours=offset - 24)) if draw(st.booleans()) else None,
            )
        )
    return events


def incremental_counts(arrivals: list[list[tuple[int, HistoryEvent]]]) -> dict:
    """What the engine does: per batch, store new events (first id wins), re-derive, retract and add."""
    stored: dict[int, HistoryEvent] = {}
    arrival = 0
    previous = None
    counters: defaultdict = defaultdict(int)
    for batch in arrivals:
        for event_id, event in batch:
            if event_id not in stored:
                stored[event_id] = HistoryEvent(**{**event.__dict__, "seq": arrival})
                arrival += 1
        if not stored:
            continue
        current = contribution(list(stored.values()))
        accumulate_delta(counters, previous, current)
        previous = current
    return {k: v for k, v in counters.items() if v}


@settings(max_examples=300, deadline=None)
@given(history=histories(), data=st.data())
def test_any_arrival_order_duplication_and_batching_gives_the_same_counters(history, data):
    expected_contribution = contribution(history)
    expected = total_counts([expected_contribution] if expected_contribution else [])

    numbered = list(enumerate(history))
    duplicated = numbered + data.draw(st.lists(st.sampled_from(numbered), max_size=5))
    shuffled = data.draw(st.permutations(duplicated))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(shuffled)), max_size=4)))
    batches, last = [], 0
    for cut in cuts + [len(shuffled)]:
        batches.append(shuffled[last:cut])
        last = cut
    assert incremental_counts(batches) == expected


@settings(max_examples=300, deadline=None)
@given(history=histories())
def test_every_received_dossier_is_on_time_or_overdue_in_every_period(history):
    result = contribution(history)
    if result is None:
        return
    by_period: defaultdict = defaultdict(dict)
    for (unit, procedure, period, metric), value in expand(result).items():
        if procedure == "*":
            by_period[period][metric] = value
    assert len(by_period) == 3  # month, quarter, year
    for counts in by_period.values():
        assert counts[RECEIVED] == 1
        assert counts.get(ON_TIME, 0) + counts.get(OVERDUE, 0) == 1


@settings(max_examples=100, deadline=None)
@given(history=histories())
def test_contribution_survives_its_stored_form(history):
    result = contribution(history)
    if result is not None:
        assert Contribution.from_json(result.to_json()) == result
