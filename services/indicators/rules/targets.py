"""Targets (targets.md): which units and periods a target binds, its value, projection and status. Pure.

A target's ``value`` is read from a unit's score card and counters for a period; its ``projected`` value
is the same read once the period's open dossiers whose deadline falls before the period's end have
turned overdue (what the period ends at if nothing changes); its status is ``met``, ``at_risk`` (the
current period below the target, or projected below it) or ``missed`` (a closed period below it).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from services.indicators.rules import counters as c
from services.indicators.rules.scoring import (
    COMPONENTS_BY_ID,
    DIRECTIVE_COUNTERS,
    ScoreCard,
    dossier_measures,
    satisfaction_measure,
    score_component,
)
from shared.timeutil import Period, parse_period

Status = Literal["met", "at_risk", "missed"]
GROUP_CODES = frozenset({"CKMB", "TDGQ", "CLGQ", "TTTT", "MDSH", "MDHL", "I", "II", "III", "IV", "V"})
# Counter ratios a target may name: the directives' counters and the open/late splits users watch.
COUNTER_RATIOS: dict[str, str] = {
    **DIRECTIVE_COUNTERS,
    c.OPEN_OVERDUE: c.RECEIVED,
    c.COMPLETED_LATE: c.RECEIVED,
    c.OVERDUE: c.RECEIVED,
}


@dataclass(frozen=True)
class TargetDef:
    id: str
    unit: str
    metric: str
    applies_to: Literal["unit", "subtree"] = "unit"
    level: str | None = None
    min: float | None = None
    max: float | None = None
    label: str | None = None
    field: str | None = None
    valid_from: str | None = None  # a month, e.g. 2026-01
    valid_until: str | None = None
    period: Literal["month", "quarter", "year"] = "month"  # the period whose status is watched
    # What turns the status at risk: the value now or its projection to the period's end ("projected"),
    # or the value now only ("value": for units with many open dossiers finished on time in the end).
    warn: Literal["projected", "value"] = "projected"


def metric_kind(metric: str) -> str | None:
    """``component``, ``total``, ``group`` or ``counter``; None for a name we do not know."""
    from services.indicators.rules.scoring import COMPONENTS_BY_ID

    if metric == "total":
        return "total"
    if metric in COMPONENTS_BY_ID:
        return "component"
    if metric.upper() in GROUP_CODES:
        return "group"
    if metric in COUNTER_RATIOS:
        return "counter"
    return None


# Components read from the procedure catalogue (and 3.3 under the online_procedures policy).
CATALOGUE_COMPONENTS = frozenset({"1.1", "1.2", "1.3", "3.1", "3.2", "3.4", "3.5", "4.6"})


def needs_catalogue(target: TargetDef, online_ratio_denominator: str) -> bool:
    """Whether a target's metric reads the catalogue (a total or group score reads every component; a
    target per field reads each procedure's field)."""
    if target.field:
        return True
    kind = metric_kind(target.metric)
    if kind in ("total", "group"):
        return True
    return target.metric in CATALOGUE_COMPONENTS or (
        target.metric == "3.3" and online_ratio_denominator == "online_procedures")


# Per field (lĩnh vực) a target reads the per-procedure counters summed over the field's procedures (the
# per-field table's numbers): the components and counter ratios made of those counters alone.
FIELD_COMPONENTS = frozenset({"2.1", "2.2", "3.3", "5.3"})
FIELD_COUNTERS = frozenset(name for name, whole in COUNTER_RATIOS.items()
                           if name in c.PROCEDURE_METRICS and whole in c.PROCEDURE_METRICS)


def field_refusal(metric: str, online_ratio_denominator: str) -> str | None:
    """Why a metric has no value per field, or None when it has one."""
    kind = metric_kind(metric)
    if kind in ("total", "group"):
        return f"{metric!r} scores a unit's whole work: it has no value per field"
    if kind == "component" and metric == "3.3" and online_ratio_denominator == "online_procedures":
        return "3.3 is read from the catalogue under the online_procedures policy: it has no value per field"
    if kind == "component" and metric not in FIELD_COMPONENTS:
        return (f"component {metric} is not counted per procedure: per field only "
                f"{', '.join(sorted(FIELD_COMPONENTS))}")
    if kind == "counter" and metric not in FIELD_COUNTERS:
        return (f"counter {metric!r} is not counted per procedure: per field only "
                f"{', '.join(sorted(FIELD_COUNTERS))}")
    return None


def field_metric_value(metric: str, counts: Mapping[str, int], *, seconds_per_day: int,
                       complaint_dossiers: int = 0) -> float | None:
    """A field's metric from its summed per-procedure counters (as the per-field table computes it) and,
    for 5.3, the complaints about its dossiers. None: nothing to measure."""
    if metric in FIELD_COMPONENTS:
        measure = (satisfaction_measure(counts, complaint_dossiers) if metric == "5.3"
                   else dossier_measures(counts, seconds_per_day=seconds_per_day)[metric])
        if measure is None or not measure.denominator:
            return None
        ratio = score_component(COMPONENTS_BY_ID[metric], measure).ratio
        return None if ratio is None else float(ratio)
    if metric in FIELD_COUNTERS:
        return counter_ratio(counts, metric)
    raise ValueError(f"metric {metric!r} has no value per field")


def project_field_counts(counts: Mapping[str, int], turning: int) -> dict[str, int]:
    """A field's counters once ``turning`` of its open dossiers, still in time, have passed their deadline
    (the per-procedure counters keep no open split: the turning dossiers are open in time by definition)."""
    return project_counts({**counts, c.OPEN_IN_TIME: turning}, turning)


def units_bound(target: TargetDef, subtree: tuple[str, ...], levels: Mapping[str, str]) -> list[str]:
    """The units a target binds: its unit, or each unit of its subtree (at ``level`` if given)."""
    if target.applies_to == "unit":
        return [target.unit]
    if target.level:
        return [code for code in subtree if levels.get(code) == target.level]
    return list(subtree)


def valid_for(target: TargetDef, period: Period) -> bool:
    """A target binds a period that overlaps its validity (months, inclusive)."""
    if target.valid_from and period.end <= parse_period(target.valid_from).start:
        return False
    if target.valid_until and period.start >= parse_period(target.valid_until).end:
        return False
    return True


def counter_ratio(counts: Mapping[str, int], name: str) -> float | None:
    """A counter as a share (%) of the counter it is part of; None when that is zero."""
    whole = counts.get(COUNTER_RATIOS[name], 0)
    if not whole:
        return None
    return round(100.0 * counts.get(name, 0) / whole, 2)


def metric_value(metric: str, card: ScoreCard, counts: Mapping[str, int]) -> float | None:
    """The target's metric read from a score card (component ratio in %, total or group points) or the
    counters (a counter ratio in %). None: no data for it in this period."""
    kind = metric_kind(metric)
    if kind == "total":
        return card.total
    if kind == "component":
        component = card.components[metric]
        if component.status != "ok" or component.ratio is None or not component.denominator:
            return None  # nothing to measure (an empty denominator scores by convention, not by the units' work)
        return float(component.ratio)
    if kind == "group":
        return next((float(g["score"]) for g in card.groups if g["code"] == metric.upper()), None)
    if kind == "counter":
        return counter_ratio(counts, metric)
    raise ValueError(f"unknown metric {metric!r}")


def project_counts(counts: Mapping[str, int], turning: int) -> dict[str, int]:
    """The counters once ``turning`` open dossiers, still in time, have passed their deadline."""
    turning = min(turning, counts.get(c.OPEN_IN_TIME, 0), counts.get(c.ON_TIME, 0))
    out = dict(counts)
    if turning > 0:
        out[c.ON_TIME] = out.get(c.ON_TIME, 0) - turning
        out[c.OVERDUE] = out.get(c.OVERDUE, 0) + turning
        out[c.OPEN_IN_TIME] = out.get(c.OPEN_IN_TIME, 0) - turning
        out[c.OPEN_OVERDUE] = out.get(c.OPEN_OVERDUE, 0) + turning
    return out


def meets(target: TargetDef, value: float) -> bool:
    return (target.min is None or value >= target.min) and (target.max is None or value <= target.max)


def status_of(target: TargetDef, value: float | None, projected: float | None, *, closed: bool) -> Status:
    """met / at_risk / missed (targets.md). With nothing to measure yet (``value`` None) nothing is below the
    target: met, and the value (null) says why."""
    if value is None:
        return "met"
    if closed:
        return "met" if meets(target, value) else "missed"
    if not meets(target, value):
        return "at_risk"
    if target.warn == "projected" and projected is not None and not meets(target, projected):
        return "at_risk"
    return "met"


def period_closed(period: Period, now: dt.datetime) -> bool:
    return now >= period.end


# Which state changes are announced, and as what (a first evaluation that finds a target met says nothing).
ANNOUNCED: dict[tuple[str | None, str], str] = {
    (None, "at_risk"): "target.at_risk",
    (None, "missed"): "target.missed",
    ("met", "at_risk"): "target.at_risk",
    ("no_data", "at_risk"): "target.at_risk",  # the state earlier versions kept for "nothing to measure"
    ("met", "missed"): "target.missed",
    ("at_risk", "missed"): "target.missed",
    ("no_data", "missed"): "target.missed",
    ("at_risk", "met"): "target.met",
    ("missed", "met"): "target.met",
}


def announcement(previous: str | None, current: str) -> str | None:
    """The event a change of status is announced as, or None (no change, or nothing worth telling)."""
    if previous == current:
        return None
    return ANNOUNCED.get((previous, current))
