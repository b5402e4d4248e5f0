"""The directives' counters (targets.md): returned, stopped, withdrawn, late_without_apology, overdue steps.

Each is a table of event histories and what the dossier adds to its received period; late events move
the counters of the past period they belong to.
"""

import datetime as dt
from collections import defaultdict

import pytest

from services.indicators.rules.counters import (
    ALL_PROCEDURES,
    CounterDelta,
    contribution_of,
    read_periods,
)
from services.indicators.rules.dossier import HistoryEvent, assess, derive_facts
from services.indicators.rules.scoring import CounterView, directive_counters
from shared.calendar import WorkingCalendar
from shared.timeutil import VIETNAM

CAL = WorkingCalendar(first_year=2025, last_year=2027)
NOW = dt.datetime(2026, 9, 1, tzinfo=VIETNAM)
DIRECTIVES = ("returned", "stopped", "withdrawn", "late_without_apology", "overdue_steps",
              "dossiers_with_2plus_supplements")


def at(month: int, day: int, hour: int = 8) -> dt.datetime:
    return dt.datetime(2026, month, day, hour, tzinfo=VIETNAM)


def history(*steps) -> list[HistoryEvent]:
    """steps: (status, (month, day), extra fields) → events in arrival order."""
    out = []
    for seq, (status, when, *extra) in enumerate(steps):
        fields = extra[0] if extra else {}
        out.append(HistoryEvent(seq=seq, status=status, occurred_at=at(*when), unit_code="U", procedure_code="P",
                                **fields))
    return out


def contribution(events):
    facts = derive_facts("D", events, CAL)
    if not facts.received:
        return None
    return contribution_of(facts, assess(facts, CAL), CAL, NOW)


def directives(events) -> dict[str, int]:
    found = contribution(events)
    return {name: count for name, count in directive_counters(found.counts if found else {}).items() if count}


DUE = {"due_at": at(7, 10)}

CASES = [
    ("refused after receipt", [(2, (7, 1), DUE), (3, (7, 2))], {"returned": 1}),
    ("refused before receipt counts nowhere", [(3, (6, 30)), (2, (7, 1), DUE), (9, (7, 2))], {}),
    ("returned, then processed again", [(2, (7, 1), DUE), (3, (7, 2)), (4, (7, 3)), (9, (7, 4))], {"returned": 1}),
    ("stopped", [(2, (7, 1), DUE), (4, (7, 2)), (8, (7, 3))], {"stopped": 1}),
    ("stopped twice is one dossier", [(2, (7, 1), DUE), (8, (7, 2)), (4, (7, 3)), (8, (7, 4))], {"stopped": 1}),
    ("withdrawn", [(2, (7, 1), DUE), (7, (7, 2))], {"withdrawn": 1}),
    ("resolved on time", [(2, (7, 1), DUE), (9, (7, 2))], {}),
    ("late, no apology reported", [(2, (7, 1), DUE), (9, (7, 15), {"attributes": {"apology_letter": False}})],
     {"late_without_apology": 1}),
    ("late, apology letter issued", [(2, (7, 1), DUE), (9, (7, 15), {"attributes": {"apology_letter": True}})], {}),
    ("late, source says nothing about apologies", [(2, (7, 1), DUE), (9, (7, 15))], {}),
    ("on time, no apology needed", [(2, (7, 1), DUE), (9, (7, 2), {"attributes": {"apology_letter": False}})], {}),
    ("a step finished past its own deadline", [(2, (7, 1), DUE), (4, (7, 3), {"step_due_at": at(7, 2)}),
                                               (9, (7, 4), {"step_due_at": at(7, 5)})], {"overdue_steps": 1}),
    ("two supplement requests", [(2, (7, 1), DUE), (5, (7, 2)), (4, (7, 3)), (5, (7, 4)), (4, (7, 5)), (9, (7, 6))],
     {"dossiers_with_2plus_supplements": 1}),
    ("never received", [(1, (7, 1)), (3, (7, 2))], {}),
]


@pytest.mark.parametrize(("events", "expected"), [pytest.param(e, x, id=name) for name, e, x in CASES])
def test_each_directive_counter(events, expected):
    assert directives(history(*events)) == expected


def test_the_counters_object_lists_every_directive_counter():
    shown = CounterView({"returned": 2, "stopped": 1}).as_dict()
    for name in DIRECTIVES:
        assert name in shown
    assert (shown["returned"], shown["stopped"], shown["withdrawn"]) == (2, 1, 0)


def read(stored: dict, period: str) -> dict[str, int]:
    return {metric: value for (unit, procedure, p, metric), value in read_periods(stored, [period]).items()
            if procedure == ALL_PROCEDURES and p == period}


def apply(stored: defaultdict, old, new) -> None:
    delta = CounterDelta()
    delta.move(old, new)
    for unit, period, procedure, metric, value in delta.rows():
        stored[(unit, procedure, period, metric)] += value


LATE_EVENTS = [
    # (name, history as first applied, the late event arriving in September, counter that moves)
    ("a stop dated in July", [(2, (7, 1), DUE), (4, (7, 2))], (8, (7, 3)), "stopped"),
    ("a refusal dated in July", [(2, (7, 1), DUE)], (3, (7, 2)), "returned"),
    ("a withdrawal dated in July", [(2, (7, 1), DUE), (4, (7, 2))], (7, (7, 20)), "withdrawn"),
    ("a late end without apology", [(2, (7, 1), DUE), (4, (7, 2))],
     (9, (7, 25), {"attributes": {"apology_letter": False}}), "late_without_apology"),
    ("a step that overran its deadline", [(2, (7, 1), DUE)], (4, (7, 6), {"step_due_at": at(7, 3)}), "overdue_steps"),
]


@pytest.mark.parametrize(("first", "late", "metric"), [pytest.param(f, l, m, id=n) for n, f, l, m in LATE_EVENTS])
def test_a_late_event_moves_the_past_period(first, late, metric):
    stored: defaultdict = defaultdict(int)
    before = contribution(history(*first))
    apply(stored, None, before)
    assert read(stored, "2026-07").get(metric, 0) == 0

    after = contribution(history(*first, late))  # arrives in September, dated in July
    apply(stored, before, after)
    for period in ("2026-07", "2026-Q3", "2026"):
        assert read(stored, period)[metric] == 1, period
    assert read(stored, "2026-09") == {}
    assert read(stored, "2026-07")["received"] == 1  # and nothing else moved out of July
