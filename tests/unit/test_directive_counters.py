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


# Steps still open (events.md: step.open): counted as steps, and overdue once the clock passes their deadline.
def opened(name, started, due, **extra):
    return {"step_name": name, "step_started_at": at(*started), "step_due_at": at(*due), "step_open": True, **extra}


def closed(name, started, due, **extra):
    return {"step_name": name, "step_started_at": at(*started), "step_due_at": at(*due), **extra}


LONG_DUE = {"due_at": at(8, 28)}
OPEN_STEP_CASES = [
    # (name, history, now, (steps, overdue steps), next deadline the sweeper waits for)
    ("open, before its deadline", [(2, (7, 1), LONG_DUE), (4, (7, 2), opened("Thẩm định", (7, 2), (7, 6)))],
     at(7, 5), (1, 0), at(7, 6)),
    ("open, past its deadline now", [(2, (7, 1), LONG_DUE), (4, (7, 2), opened("Thẩm định", (7, 2), (7, 6)))],
     at(7, 7), (1, 1), None),
    ("closed in time by the same step", [(2, (7, 1), LONG_DUE), (4, (7, 2), opened("Thẩm định", (7, 2), (7, 6))),
                                         (4, (7, 5), closed("Thẩm định", (7, 2), (7, 6)))], at(7, 20), (1, 0), None),
    ("closed late by the same step", [(2, (7, 1), LONG_DUE), (4, (7, 2), opened("Thẩm định", (7, 2), (7, 6))),
                                      (4, (7, 9), closed("Thẩm định", (7, 2), (7, 6)))], at(7, 20), (1, 1), None),
    ("closed by its id, whatever its name says",
     [(2, (7, 1), LONG_DUE), (4, (7, 2), opened("Thụ lý", (7, 2), (7, 6), step_id="s1")),
      (4, (7, 4), closed("Thụ lý - đã xong", (7, 2), (7, 6), step_id="s1"))], at(7, 20), (1, 0), None),
    ("closed by its start when the content changed",
     [(2, (7, 1), LONG_DUE), (4, (7, 2), opened("Phòng A - đang xử lý", (7, 2), (7, 6))),
      (4, (7, 4), closed("Phòng A - đã trình ký", (7, 2), (7, 6)))], at(7, 20), (1, 0), None),
    ("the end of processing closes it (late)", [(2, (7, 1), LONG_DUE), (4, (7, 2), opened("Ký", (7, 2), (7, 3))),
                                                (9, (7, 4))], at(7, 20), (1, 1), None),
    ("the end of processing closes it (in time)", [(2, (7, 1), LONG_DUE), (4, (7, 2), opened("Ký", (7, 2), (7, 6))),
                                                   (9, (7, 4))], at(7, 20), (1, 0), None),
    ("re-sent open record counts once", [(2, (7, 1), LONG_DUE), (4, (7, 2), opened("Ký", (7, 2), (7, 6))),
                                         (4, (7, 2, 9), opened("Ký", (7, 2), (7, 6)))], at(7, 20), (1, 1), None),
    ("two open steps, the sweeper waits for the nearer deadline still ahead",
     [(2, (7, 1), LONG_DUE), (4, (7, 2), opened("A", (7, 2), (7, 4))), (4, (7, 3), opened("B", (7, 3), (7, 10))),
      (4, (7, 3, 9), opened("C", (7, 3), (7, 8)))], at(7, 5), (3, 1), at(7, 8)),
]


@pytest.mark.parametrize(("events", "now", "expected", "next_deadline"),
                         [pytest.param(e, n, x, d, id=name) for name, e, n, x, d in OPEN_STEP_CASES])
def test_steps_still_open(events, now, expected, next_deadline):
    facts = derive_facts("D", history(*events), CAL)
    found = contribution_of(facts, assess(facts, CAL), CAL, now)
    assert (found.counts.get("steps", 0), found.counts.get("overdue_steps", 0)) == expected
    assert found.next_step_deadline == next_deadline


def test_an_open_step_passing_its_deadline_moves_its_received_period():
    stored: defaultdict = defaultdict(int)
    events = history((2, (7, 1), LONG_DUE), (4, (7, 2), opened("Thẩm định", (7, 2), (7, 6))))
    facts = derive_facts("D", events, CAL)
    before = contribution_of(facts, assess(facts, CAL), CAL, at(7, 5))
    apply(stored, None, before)
    assert read(stored, "2026-07").get("overdue_steps", 0) == 0
    after = contribution_of(facts, assess(facts, CAL), CAL, at(8, 3))  # the clock alone: no event
    apply(stored, before, after)
    assert read(stored, "2026-07")["overdue_steps"] == 1 and read(stored, "2026-08") == {}
