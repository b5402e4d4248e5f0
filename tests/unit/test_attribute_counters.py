"""Dossier-attribute counters (events.md §2) and 3.6's processing-start anchor, on plain data."""

import datetime as dt

from services.indicators.rules import counters as c
from services.indicators.rules.counters import Contribution, contribution_of, expand
from services.indicators.rules.dossier import HistoryEvent, assess, derive_facts
from shared.calendar import WorkingCalendar
from shared.timeutil import VIETNAM

CAL = WorkingCalendar(first_year=2025, last_year=2027)
NOW = dt.datetime(2026, 11, 1, tzinfo=VIETNAM)


def vn(month, day):
    return dt.datetime(2026, month, day, 8, tzinfo=VIETNAM)


def contribution(events, **kw):
    history = [HistoryEvent(seq=i, status=s, occurred_at=at, unit_code="U", procedure_code="P", attributes=a)
               for i, (s, at, a) in enumerate(events)]
    facts = derive_facts("D", history, CAL)
    return contribution_of(facts, assess(facts, CAL), CAL, NOW, **kw)


def month_counts(contribution, period):
    return {k[3]: v for k, v in expand(contribution).items() if k[1] == "*" and k[2] == period}


def test_attributes_count_in_the_received_period_and_the_latest_value_wins():
    got = contribution([(2, vn(8, 3), {"e_result": True, "synced_to_portal": True, "population_data": True}),
                        (9, vn(8, 4), {"population_data": False})])
    counts = month_counts(got, "2026-08")
    assert counts[c.E_RESULT] == counts[c.SYNCED] == 1
    assert c.POPULATION_DATA not in counts


def test_digitised_needs_the_e_result_when_a_result_is_required():
    with_result = contribution([(2, vn(8, 3), {"digitized": True, "result_required": True})])
    assert c.DIGITIZED not in with_result.counts
    with_e_result = contribution([(2, vn(8, 3), {"digitized": True, "result_required": True, "e_result": True})])
    assert with_e_result.counts[c.DIGITIZED] == 1 and with_e_result.counts[c.E_RESULT_WHERE_REQUIRED] == 1


def test_payment_counts_in_the_processing_start_period():
    got = contribution([(2, vn(8, 28), {"fee_required": True, "paid_online": True}), (4, vn(9, 2), {})])
    assert c.FEE_DOSSIERS not in month_counts(got, "2026-08")
    assert month_counts(got, "2026-09")[c.PAID_ONLINE_DOSSIERS] == 1
    assert month_counts(got, "2026-Q3")[c.FEE_DOSSIERS] == 1  # one quarter holds both months: once
    assert month_counts(got, "2026-08")[c.RECEIVED] == 1


def test_payment_without_processing_start_follows_the_policy():
    events = [(2, vn(8, 28), {"fee_required": True})]
    assert contribution(events).counts[c.FEE_DOSSIERS] == 1
    excluded = contribution(events, payment_period_fallback="exclude")
    assert c.FEE_DOSSIERS not in excluded.counts and not excluded.start_counts


def test_contributions_round_trip_and_old_stored_form_is_read():
    got = contribution([(2, vn(8, 28), {"fee_required": True}), (4, vn(9, 2), {})])
    assert Contribution.from_json(got.to_json()) == got
    old_form = {"u": "U", "p": "P", "r": "2026-08", "c": {"received": 1}, "d": None, "x": False, "o": False}
    old = Contribution.from_json(old_form)
    assert old.start_counts == {} and old.start_month is None
    assert expand(old) == {("U", p, period, "received"): 1 for p in ("P", "*")
                                   for period in ("2026-08", "2026-Q3", "2026")}
