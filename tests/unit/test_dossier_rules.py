"""indicators.md §3, rule by rule, on plain data."""

import datetime as dt

import pytest

from services.indicators.rules.counters import (
    ON_TIME,
    OPEN_IN_TIME,
    OPEN_OVERDUE,
    OVERDUE,
    contribution_of,
    expand,
)
from services.indicators.rules.dossier import HistoryEvent, assess, derive_facts
from shared.calendar import WorkingCalendar
from shared.timeutil import VIETNAM

CAL = WorkingCalendar(first_year=2025, last_year=2027)


def vn(month, day, hour=8, minute=0, year=2026):
    return dt.datetime(year, month, day, hour, minute, tzinfo=VIETNAM)


def ev(seq, status, at, **kw):
    return HistoryEvent(seq=seq, status=status, occurred_at=at, unit_code=kw.pop("unit", "U"),
                        procedure_code=kw.pop("procedure", "P"), **kw)


def facts_of(*events):
    return derive_facts("D", list(events), CAL)


def outcome(*events, legal_days=None, due_policy="received"):
    facts = facts_of(*events)
    return facts, assess(facts, CAL, legal_days=legal_days, due_policy=due_policy)


def test_never_received_counts_nowhere():
    facts = facts_of(ev(1, 1, vn(8, 1)), ev(2, 3, vn(8, 2)))
    assert facts.received_at is None
    assert contribution_of(facts, None, CAL, vn(9, 1)) is None  # type: ignore[arg-type]


def test_refused_before_receipt_then_received_counts_from_the_receipt():
    facts = facts_of(ev(1, 3, vn(8, 1)), ev(2, 2, vn(8, 3), due_at=vn(8, 10)))
    assert facts.received_at == vn(8, 3)
    assert facts.ended_at is None  # the refusal came before receipt: it ends nothing


def test_received_time_channel_and_due_come_from_the_status_2_event():
    facts = facts_of(ev(1, 2, vn(8, 3), channel=2, due_at=vn(8, 10)), ev(2, 4, vn(8, 4), due_at=vn(8, 20)))
    assert (facts.received_at, facts.channel, facts.due_at_received, facts.due_at_latest) == (
        vn(8, 3), 2, vn(8, 10), vn(8, 20))


def test_missing_channel_counts_as_in_person():
    assert facts_of(ev(1, 2, vn(8, 3))).channel == 1


@pytest.mark.parametrize(
    ("statuses", "expected_end"),
    [
        ([(10, 5), (9, 7)], (9, 7)),  # 9 wins even when 10 came first
        ([(10, 5), (8, 4)], (10, 5)),  # 10 beats 8
        ([(8, 6), (7, 5)], (7, 5)),  # among 8/7/3, the first
        ([(3, 6)], (3, 6)),  # refused after receipt ends processing
        ([(9, 6), (9, 9)], (9, 6)),  # the first 9
    ],
)
def test_end_of_processing_priority(statuses, expected_end):
    events = [ev(1, 2, vn(8, 3), due_at=vn(8, 20))]
    events += [ev(i + 2, status, vn(8, day)) for i, (status, day) in enumerate(statuses)]
    facts = facts_of(*events)
    assert (facts.end_status, facts.ended_at) == (expected_end[0], vn(8, expected_end[1]))


def test_two_supplement_requests_make_the_dossier_overdue_whatever_its_dates():
    facts, timeliness = outcome(
        ev(1, 2, vn(8, 3), due_at=vn(8, 30)), ev(2, 5, vn(8, 4)), ev(3, 4, vn(8, 5)),
        ev(4, 5, vn(8, 6)), ev(5, 4, vn(8, 7)), ev(6, 9, vn(8, 8)),
    )
    assert facts.supplement_count == 2
    assert timeliness.fixed and timeliness.overdue and timeliness.reason == "two_plus_supplements"


def test_one_returned_supplement_is_subtracted_from_the_end():
    # Due 10/8 08:00, in supplement 5 days (4/8 → 9/8), finished 14/8 08:00: 14 − 5 = 9 ≤ 10 → on time.
    facts, timeliness = outcome(
        ev(1, 2, vn(8, 3), due_at=vn(8, 10)), ev(2, 5, vn(8, 4)), ev(3, 4, vn(8, 9)), ev(4, 9, vn(8, 14)),
    )
    assert facts.supplement_count == 1
    assert facts.supplement_seconds == 5 * 86400
    assert timeliness.fixed and not timeliness.overdue
    # A day later it is late.
    _, late = outcome(
        ev(1, 2, vn(8, 3), due_at=vn(8, 10)), ev(2, 5, vn(8, 4)), ev(3, 4, vn(8, 9)), ev(4, 9, vn(8, 16)),
    )
    assert late.overdue and late.reason == "late_end"


def test_an_outstanding_supplement_stops_the_clock_at_the_request():
    _, early_request = outcome(ev(1, 2, vn(8, 3), due_at=vn(8, 10)), ev(2, 5, vn(8, 9)))
    assert early_request.fixed and not early_request.overdue
    _, late_request = outcome(ev(1, 2, vn(8, 3), due_at=vn(8, 10)), ev(2, 5, vn(8, 11)))
    assert late_request.fixed and late_request.overdue and late_request.reason == "supplement_late"


def test_repeated_status_5_without_leaving_is_one_request():
    facts = facts_of(ev(1, 2, vn(8, 3)), ev(2, 5, vn(8, 4)), ev(3, 5, vn(8, 5)), ev(4, 4, vn(8, 6)))
    assert facts.supplement_count == 1


def test_open_dossier_turns_overdue_when_the_clock_passes_its_deadline_pushed_by_supplement_time():
    facts, timeliness = outcome(ev(1, 2, vn(8, 3), due_at=vn(8, 10)), ev(2, 5, vn(8, 4)), ev(3, 4, vn(8, 6)))
    assert not timeliness.fixed
    assert timeliness.deadline == vn(8, 12)  # due + 2 days spent waiting for the supplement


def test_due_time_policy_received_or_latest():
    events = (ev(1, 2, vn(8, 3), due_at=vn(8, 10)), ev(2, 4, vn(8, 4), due_at=vn(8, 20)), ev(3, 9, vn(8, 15)))
    assert outcome(*events)[1].overdue
    assert not outcome(*events, due_policy="latest")[1].overdue


def test_without_due_time_the_legal_working_days_decide():
    # Received Monday 3/8 08:00, finished Friday 7/8 08:00: 4 working days.
    events = (ev(1, 2, vn(8, 3)), ev(2, 9, vn(8, 7)))
    assert not outcome(*events, legal_days=4)[1].overdue
    assert outcome(*events, legal_days=3)[1].overdue
    unknown = outcome(*events)[1]
    assert not unknown.overdue and unknown.no_deadline  # on time, and flagged
    open_facts, open_t = outcome(ev(1, 2, vn(8, 3)), legal_days=3)
    assert open_t.deadline == vn(8, 6)  # three working days later


def test_finished_early_is_before_the_due_day():
    assert outcome(ev(1, 2, vn(8, 3), due_at=vn(8, 10, 17)), ev(2, 9, vn(8, 7)))[1].early
    assert not outcome(ev(1, 2, vn(8, 3), due_at=vn(8, 10, 17)), ev(2, 9, vn(8, 10, 9)))[1].early


def test_steps_finished_after_their_own_deadline_are_overdue_steps():
    facts = facts_of(
        ev(1, 2, vn(8, 3)),
        ev(2, 4, vn(8, 4), step_due_at=vn(8, 5)),
        ev(3, 4, vn(8, 7), step_due_at=vn(8, 6)),
    )
    assert (facts.steps, facts.overdue_steps) == (2, 1)


def test_latest_attribute_value_by_occurred_at_wins():
    facts = facts_of(
        ev(2, 4, vn(8, 5), attributes={"digitized": False}),
        ev(1, 2, vn(8, 3), attributes={"digitized": True, "e_result": True}),
    )
    assert facts.attributes == {"digitized": False, "e_result": True}


def period_outcome(contribution, period):
    counts = {m: v for (u, p, per, m), v in expand(contribution).items() if per == period and p == "*"}
    return counts


def test_an_open_dossier_counts_per_period_by_the_end_of_that_period():
    # Received 10 January, due 15 February, still open on 1 April.
    facts, timeliness = outcome(ev(1, 2, vn(1, 10), due_at=vn(2, 15)))
    contribution = contribution_of(facts, timeliness, CAL, now=vn(4, 1))
    january = period_outcome(contribution, "2026-01")
    quarter = period_outcome(contribution, "2026-Q1")
    year = period_outcome(contribution, "2026")
    assert january.get(ON_TIME) == 1 and january.get(OPEN_IN_TIME) == 1 and OVERDUE not in january
    assert quarter.get(OVERDUE) == 1 and quarter.get(OPEN_OVERDUE) == 1
    assert year.get(OVERDUE) == 1


def test_before_the_deadline_an_open_dossier_is_on_time_everywhere():
    facts, timeliness = outcome(ev(1, 2, vn(1, 10), due_at=vn(2, 15)))
    contribution = contribution_of(facts, timeliness, CAL, now=vn(2, 1))
    for period in ("2026-01", "2026-Q1", "2026"):
        assert period_outcome(contribution, period).get(ON_TIME) == 1


def test_local_time_decides_the_period():
    # 31 July 18:00 UTC is 1 August 01:00 in Vietnam.
    at = dt.datetime(2026, 7, 31, 18, 0, tzinfo=dt.timezone.utc)
    facts, timeliness = outcome(ev(1, 2, at, due_at=at + dt.timedelta(days=5)))
    assert contribution_of(facts, timeliness, CAL, now=at).received_month == "2026-08"
