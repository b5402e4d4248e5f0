"""Targets' status and projection rules, and the webhook delivery rules, as tables."""

import datetime as dt
import hashlib
import hmac

import pytest

from services.indicators.rules.scoring import ScoreInputs, score_inputs
from services.indicators.rules.targets import (
    TargetDef,
    announcement,
    counter_ratio,
    metric_value,
    project_counts,
    status_of,
    units_bound,
    valid_for,
)
from services.notify.rules import gives_up, retry_delay, signature, wants
from shared.settings import PolicySettings
from shared.timeutil import VIETNAM, parse_period

MIN_98 = TargetDef(id="t", unit="U", metric="2.1", min=98.0)
MAX_0 = TargetDef(id="t", unit="U", metric="late_without_apology", max=0.0)
BAND = TargetDef(id="t", unit="U", metric="3.3", min=50.0, max=90.0)
VALUE_ONLY = TargetDef(id="t", unit="U", metric="2.1", min=98.0, warn="value")

STATUS_CASES = [
    # target, value, projected, closed period, status
    (MIN_98, 99.0, 99.0, False, "met"),
    (MIN_98, 98.0, 98.0, False, "met"),  # the bound itself meets it
    (MIN_98, 97.99, 99.0, False, "at_risk"),  # below now
    (MIN_98, 100.0, 97.0, False, "at_risk"),  # projected below by the period's end
    (VALUE_ONLY, 100.0, 97.0, False, "met"),  # warn on the value only
    (VALUE_ONLY, 97.0, 97.0, False, "at_risk"),
    (MIN_98, 97.0, 97.0, True, "missed"),  # a closed period below it
    (MIN_98, 100.0, 50.0, True, "met"),  # a closed period has no projection
    (MIN_98, None, None, False, "met"),  # nothing received yet: nothing below the target
    (MIN_98, None, None, True, "met"),
    (MAX_0, 0.0, 0.0, False, "met"),
    (MAX_0, 2.5, 2.5, False, "at_risk"),
    (MAX_0, 2.5, 2.5, True, "missed"),
    (BAND, 70.0, 70.0, False, "met"),
    (BAND, 95.0, 95.0, False, "at_risk"),
    (BAND, 40.0, 40.0, True, "missed"),
]


@pytest.mark.parametrize(("target", "value", "projected", "closed", "expected"), STATUS_CASES)
def test_status(target, value, projected, closed, expected):
    assert status_of(target, value, projected, closed=closed) == expected


PROJECTION_CASES = [
    # counts, open dossiers turning overdue by the period's end, projected counts (the split that moves)
    ({"received": 10, "on_time": 10, "open_in_time": 3}, 2,
     {"on_time": 8, "overdue": 2, "open_in_time": 1, "open_overdue": 2}),
    ({"received": 10, "on_time": 9, "overdue": 1, "open_in_time": 1}, 0,
     {"on_time": 9, "overdue": 1, "open_in_time": 1}),
    # never more than the open dossiers in time
    ({"received": 4, "on_time": 4, "open_in_time": 1}, 3, {"on_time": 3, "overdue": 1, "open_in_time": 0,
                                                           "open_overdue": 1}),
    ({"received": 0}, 5, {}),
]


@pytest.mark.parametrize(("counts", "turning", "expected"), PROJECTION_CASES)
def test_projection_turns_open_dossiers_overdue(counts, turning, expected):
    projected = project_counts(counts, turning)
    for metric, value in expected.items():
        assert projected.get(metric, 0) == value, metric
    assert projected["received"] == counts["received"]  # nothing else moves


def card_of(counts):
    return score_inputs(ScoreInputs(counts=counts), PolicySettings(), seconds_per_day=8 * 3600)


def test_projected_value_of_2_1_and_total():
    counts = {"received": 50, "on_time": 50, "open_in_time": 2, "completed": 48, "completed_on_time": 48}
    now, later = card_of(counts), card_of(project_counts(counts, 2))
    assert metric_value("2.1", now, counts) == 100.0
    assert metric_value("2.1", later, project_counts(counts, 2)) == 96.0
    assert metric_value("total", later, counts) < metric_value("total", now, counts)
    assert metric_value("TDGQ", later, counts) < metric_value("TDGQ", now, counts)


COUNTER_RATIO_CASES = [
    ({"overdue": 4, "late_without_apology": 1}, "late_without_apology", 25.0),
    ({"overdue": 0, "late_without_apology": 0}, "late_without_apology", None),  # no late dossier: nothing to measure
    ({"received": 200, "returned": 3}, "returned", 1.5),
    ({"received": 200, "stopped": 1}, "stopped", 0.5),
    ({"received": 3, "withdrawn": 1}, "withdrawn", 33.33),
    ({"steps": 8, "overdue_steps": 2}, "overdue_steps", 25.0),
    ({"received": 10, "dossiers_with_2plus_supplements": 1}, "dossiers_with_2plus_supplements", 10.0),
]


@pytest.mark.parametrize(("counts", "name", "expected"), COUNTER_RATIO_CASES)
def test_counter_ratios(counts, name, expected):
    assert counter_ratio(counts, name) == expected


ANNOUNCEMENTS = [
    (None, "met", None),  # first look, fine: nothing to say
    (None, "at_risk", "target.at_risk"),
    ("met", "at_risk", "target.at_risk"),
    ("at_risk", "at_risk", None),  # once, not on every evaluation
    ("at_risk", "missed", "target.missed"),
    ("met", "missed", "target.missed"),
    ("at_risk", "met", "target.met"),  # back above
    ("missed", "met", "target.met"),  # a late event lifted a closed period
    ("no_data", "at_risk", "target.at_risk"),  # a state recorded by an earlier version
    ("no_data", "met", None),
]


@pytest.mark.parametrize(("previous", "current", "event"), ANNOUNCEMENTS)
def test_which_changes_are_announced(previous, current, event):
    assert announcement(previous, current) == event


LEVELS = {"P": "PROVINCE", "D1": "DEPARTMENT", "X1": "DISTRICT", "C1": "COMMUNE", "C2": "COMMUNE"}
SUBTREE = ("P", "D1", "X1", "C1", "C2")


@pytest.mark.parametrize(("target", "expected"), [
    (TargetDef(id="t", unit="P", metric="2.1", min=98), ["P"]),
    (TargetDef(id="t", unit="P", metric="2.1", min=98, applies_to="subtree"), list(SUBTREE)),
    (TargetDef(id="t", unit="P", metric="2.1", min=98, applies_to="subtree", level="COMMUNE"), ["C1", "C2"]),
])
def test_units_a_target_binds(target, expected):
    assert units_bound(target, SUBTREE, LEVELS) == expected


@pytest.mark.parametrize(("valid_from", "valid_until", "period", "binds"), [
    ("2026-01", "2026-12", "2026-08", True),
    ("2026-09", None, "2026-08", False),
    (None, "2026-07", "2026-08", False),
    ("2026-08", "2026-08", "2026-Q3", True),  # overlaps the quarter
    ("2027-01", None, "2026", False),
    (None, None, "2031-05", True),
])
def test_validity(valid_from, valid_until, period, binds):
    target = TargetDef(id="t", unit="U", metric="2.1", min=98, valid_from=valid_from, valid_until=valid_until)
    assert valid_for(target, parse_period(period)) is binds


def test_signature_is_hmac_sha256_of_the_exact_body():
    body = b'{"event":"target.at_risk"}'
    expected = hmac.new(b"s3cret-s3cret-s3cret", body, hashlib.sha256).hexdigest()
    assert signature("s3cret-s3cret-s3cret", body) == f"sha256={expected}"
    assert signature("s3cret-s3cret-s3cret", body + b" ") != signature("s3cret-s3cret-s3cret", body)


@pytest.mark.parametrize(("attempts", "delay"), [(0, 0), (1, 5), (2, 10), (3, 20), (7, 320), (8, 600), (30, 600)])
def test_retry_backoff_doubles_up_to_a_cap(attempts, delay):
    assert retry_delay(attempts, base=5, cap=600) == delay


@pytest.mark.parametrize(("age", "delay", "expected"), [(0, 5, False), (86000, 600, True), (85000, 600, False)])
def test_retries_are_bounded_in_time(age, delay, expected):
    assert gives_up(age, delay, retry_for=86400) is expected


def test_webhook_unit_filter():
    within = lambda unit, units: unit in units or (unit.startswith("H44.07") and "H44.07" in units)  # noqa: E731
    assert wants(["target.at_risk"], None, "target.at_risk", "H44.03", within)
    assert not wants(["target.met"], None, "target.at_risk", "H44.03", within)
    assert wants(["target.at_risk"], ["H44.07"], "target.at_risk", "H44.07.01", within)
    assert not wants(["target.at_risk"], ["H44.07"], "target.at_risk", "H44.03", within)
    assert not wants(["source.rejects"], ["H44.07"], "source.rejects", None, within)


def test_period_kinds_are_vietnam_time():
    end_of_july = dt.datetime(2026, 7, 31, 17, 30, tzinfo=dt.timezone.utc)  # 1 August 00:30 in Vietnam
    assert parse_period("2026-08").start <= end_of_july.astimezone(VIETNAM) < parse_period("2026-08").end


def test_a_component_with_nothing_to_measure_has_no_value():
    empty = card_of({})
    assert metric_value("2.1", empty, {}) is None  # scored full by convention, but no dossier was received
    assert status_of(MIN_98, metric_value("2.1", empty, {}), None, closed=False) == "met"


@pytest.mark.parametrize(("kind", "now", "expected"), [
    ("month", dt.datetime(2026, 9, 1, 0, 1, tzinfo=VIETNAM), ["2026-08", "2026-09"]),  # August just closed
    ("month", dt.datetime(2026, 9, 10, 23, tzinfo=VIETNAM), ["2026-08", "2026-09"]),
    ("month", dt.datetime(2026, 9, 11, 0, 1, tzinfo=VIETNAM), ["2026-09"]),  # watched 10 days after its close
    ("quarter", dt.datetime(2026, 10, 2, tzinfo=VIETNAM), ["2026-Q3", "2026-Q4"]),
    ("year", dt.datetime(2026, 8, 15, tzinfo=VIETNAM), ["2026"]),
    ("year", dt.datetime(2027, 1, 3, tzinfo=VIETNAM), ["2026", "2027"]),
])
def test_watched_periods(kind, now, expected):
    from services.notify.evaluate import watched_periods

    target = TargetDef(id="t", unit="U", metric="2.1", min=98, period=kind)
    assert [p.key for p in watched_periods(target, now)] == expected


@pytest.mark.parametrize(("metric", "policy", "needed"), [
    ("2.1", "all_received", False), ("late_without_apology", "all_received", False), ("5.3", "all_received", False),
    ("3.3", "all_received", False), ("3.3", "online_procedures", True), ("1.1", "all_received", True),
    ("total", "all_received", True), ("TDGQ", "all_received", True),
])
def test_which_targets_read_the_catalogue(metric, policy, needed):
    from services.indicators.rules.targets import needs_catalogue

    assert needs_catalogue(TargetDef(id="t", unit="U", metric=metric, min=1), policy) is needed
