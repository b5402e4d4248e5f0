"""Targets per field (lĩnh vực): which metrics have a value per field, the field's counters grouped as the
per-field table groups them, and the value and projection read from them."""

import datetime as dt

import pytest

from services.indicators.rules import counters as c
from services.indicators.rules.catalogue import CatalogueEntry, counts_by_field, entry_per_procedure
from services.indicators.rules.targets import (
    TargetDef,
    field_metric_value,
    field_refusal,
    needs_catalogue,
    project_field_counts,
    status_of,
)

DAY = 8 * 3600
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def entry(unit: str, procedure: str, field: str | None) -> CatalogueEntry:
    return CatalogueEntry(unit_code=unit, procedure_code=procedure, valid_from=START, field_code=field)


@pytest.mark.parametrize(("metric", "policy", "refused"), [
    ("2.1", "all_received", None),
    ("2.2", "all_received", None),
    ("3.3", "all_received", None),
    ("3.3", "online_procedures", "online_procedures policy"),
    ("dossiers_with_2plus_supplements", "all_received", None),
    ("overdue", "all_received", None),
    ("total", "all_received", "no value per field"),
    ("TDGQ", "all_received", "no value per field"),
    ("5.3", "all_received", None),  # the complaints are about dossiers, each of a procedure
    ("1.1", "all_received", "not counted per procedure"),  # a catalogue component
    ("4.2", "all_received", "not counted per procedure"),
    ("late_without_apology", "all_received", "not counted per procedure"),
    ("returned", "all_received", "not counted per procedure"),
    ("open_overdue", "all_received", "not counted per procedure"),
])
def test_which_metrics_have_a_value_per_field(metric, policy, refused):
    reason = field_refusal(metric, policy)
    if refused is None:
        assert reason is None
    else:
        assert refused in reason


def test_a_target_per_field_reads_the_catalogue():
    assert needs_catalogue(TargetDef(id="t", unit="U", metric="2.1", min=98, field="DD"), "all_received")
    assert not needs_catalogue(TargetDef(id="t", unit="U", metric="2.1", min=98), "all_received")


def test_counts_by_field_sums_each_fields_procedures_and_places_the_unknown_in_no_field():
    catalogue = {("B", "P1"): entry("B", "P1", "DD"), ("A", "P1"): entry("A", "P1", "DD"),
                 ("A", "P2"): entry("A", "P2", "XD"), ("A", "P3"): entry("A", "P3", "DD"),
                 ("A", "P4"): entry("A", "P4", None)}
    entries = entry_per_procedure(catalogue)
    assert entries["P1"].unit_code == "A"  # the first unit's entry, in code order
    per_procedure = {"P1": {c.RECEIVED: 3, c.ON_TIME: 2}, "P2": {c.RECEIVED: 5, c.ON_TIME: 5},
                     "P3": {c.RECEIVED: 1, c.ON_TIME: 1}, "P4": {c.RECEIVED: 2}, "P9": {c.RECEIVED: 7}}
    assert counts_by_field(per_procedure, entries) == {
        "DD": {c.RECEIVED: 4, c.ON_TIME: 3},
        "XD": {c.RECEIVED: 5, c.ON_TIME: 5},
        "": {c.RECEIVED: 9},  # no field in the catalogue, or not in it at all
    }


FIELD_COUNTS = {c.RECEIVED: 8, c.ON_TIME: 6, c.OVERDUE: 2, c.COMPLETED: 4, c.PROCESSING_WORKING_SECONDS: 10 * DAY,
                c.RECEIVED_BY_CHANNEL[2]: 5, c.DOSSIERS_TWO_PLUS_SUPPLEMENTS: 1}

VALUE_CASES = [
    ("2.1", FIELD_COUNTS, 75.0),
    ("2.2", FIELD_COUNTS, 2.5),  # mean working days of the completed
    ("3.3", FIELD_COUNTS, 62.5),
    ("overdue", FIELD_COUNTS, 25.0),
    ("dossiers_with_2plus_supplements", FIELD_COUNTS, 12.5),
    ("2.1", {c.RECEIVED: 3, c.ON_TIME: 2}, 66.67),
    ("2.1", {}, None),  # nothing received in the field
    ("3.3", {}, None),
    ("2.2", {c.RECEIVED: 3, c.ON_TIME: 3}, None),  # none completed
    ("overdue", {}, None),
]


@pytest.mark.parametrize(("metric", "counts", "value"), VALUE_CASES)
def test_the_value_of_a_metric_per_field(metric, counts, value):
    assert field_metric_value(metric, counts, seconds_per_day=DAY) == value


@pytest.mark.parametrize(("complaints", "value"), [(0, 75.0), (1, 62.5), (6, 0.0), (9, 0.0)])
def test_satisfaction_per_field_counts_the_fields_on_time_dossiers_without_a_complaint(complaints, value):
    # 5.3's ratio: received on time and not complained about, of all received (the cap scores, not the ratio)
    assert field_metric_value("5.3", FIELD_COUNTS, seconds_per_day=DAY, complaint_dossiers=complaints) == value
    assert field_metric_value("5.3", {}, seconds_per_day=DAY, complaint_dossiers=0) is None


def test_a_metric_with_no_value_per_field_is_not_read():
    with pytest.raises(ValueError):
        field_metric_value("4.2", FIELD_COUNTS, seconds_per_day=DAY)


@pytest.mark.parametrize(("turning", "on_time", "overdue"), [(0, 6, 2), (1, 5, 3), (4, 2, 6), (9, 0, 8)])
def test_the_projection_per_field_turns_open_dossiers_overdue(turning, on_time, overdue):
    projected = project_field_counts(FIELD_COUNTS, turning)
    assert (projected[c.ON_TIME], projected[c.OVERDUE], projected[c.RECEIVED]) == (on_time, overdue, 8)


def test_a_field_target_at_risk_by_its_projection():
    target = TargetDef(id="t", unit="U", metric="2.1", min=70.0, field="DD")
    value = field_metric_value("2.1", FIELD_COUNTS, seconds_per_day=DAY)
    projected = field_metric_value("2.1", project_field_counts(FIELD_COUNTS, 1), seconds_per_day=DAY)
    assert (value, projected) == (75.0, 62.5)
    assert status_of(target, value, projected, closed=False) == "at_risk"
    assert status_of(target, value, projected, closed=True) == "met"
