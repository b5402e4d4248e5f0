"""The procedure catalogue feed (events.md §5) and the procedure-based components 1.1–1.3, 3.1, 3.2,
3.4, 3.5, 4.6 (indicators.md §2, §5). Pure: no I/O.

The catalogue is versioned by ``valid_from``: a period is scored with each (unit, procedure) row as it
stood at the end of the period. A full replace removes the rows it does not mention from its
``valid_from`` on (a tombstone version). Procedure-based components count **distinct procedures**
over the subtree: a procedure offered by several units of the subtree counts once.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from shared.calendar import WorkingCalendar

ONLINE_LEVELS = ("none", "partial", "full")


@dataclass(frozen=True)
class CatalogueEntry:
    """One version of one procedure as one unit handles it."""

    unit_code: str
    procedure_code: str
    valid_from: dt.datetime
    name: str | None = None
    field_code: str | None = None
    field_name: str | None = None
    online_level: str = "none"
    online_services: int = 0
    fee_required: bool = False
    for_individuals: bool = False
    result_required: bool | None = None
    legal_days: float | None = None
    decision_date: dt.date | None = None
    legal_basis_effective_date: dt.date | None = None
    made_public_date: dt.date | None = None
    complete_parts: bool | None = None
    removed: bool = False  # a full replace dropped it from this version on

    @property
    def online(self) -> bool:
        return self.online_level in ("partial", "full")


NO_FIELD = ""  # the field of procedures the catalogue does not place in one


def entry_per_procedure(catalogue: Mapping[tuple[str, str], CatalogueEntry]) -> dict[str, CatalogueEntry]:
    """One entry per procedure code for a subtree's catalogue ((unit, procedure) keys): the first unit's in
    code order, so a procedure several units offer is named and placed in a field once."""
    entries: dict[str, CatalogueEntry] = {}
    for (_, procedure), entry in sorted(catalogue.items(), key=lambda item: item[0]):
        entries.setdefault(procedure, entry)
    return entries


def field_code_of(entry: CatalogueEntry | None) -> str:
    return (entry.field_code if entry else None) or NO_FIELD


def counts_by_field(per_procedure: Mapping[str, Mapping[str, int]],
                    entries: Mapping[str, CatalogueEntry]) -> dict[str, dict[str, int]]:
    """Per-procedure counters summed per field (lĩnh vực) of each procedure's catalogue entry."""
    fields: dict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
    for code, counts in per_procedure.items():
        field_counts = fields[field_code_of(entries.get(code))]
        for metric, value in counts.items():
            field_counts[metric] += value
    return {code: dict(counts) for code, counts in fields.items()}


def as_of(entries: Iterable[CatalogueEntry], instant: dt.datetime) -> dict[tuple[str, str], CatalogueEntry]:
    """Each (unit, procedure)'s version in force just before ``instant`` (tombstones removed)."""
    current: dict[tuple[str, str], CatalogueEntry] = {}
    for entry in entries:
        if entry.valid_from >= instant:
            continue
        key = (entry.unit_code, entry.procedure_code)
        held = current.get(key)
        if held is None or entry.valid_from >= held.valid_from:
            current[key] = entry
    return {k: v for k, v in current.items() if not v.removed}


@dataclass(frozen=True)
class CatalogueCounts:
    """Numerators and denominators of the catalogue-fed components for one subtree and period."""

    published: int = 0  # 1.1 denominator: procedures whose publication decision falls in the period
    published_on_time: int = 0
    due_public: int = 0  # 1.2 denominator: procedures due to be made public in the period
    public_on_time: int = 0
    procedures: int = 0  # 1.3 denominator (snapshot) and 3.1 denominator: procedures in competence
    complete: int = 0
    online_procedures: int = 0  # 3.1 numerator
    services: int = 0  # 3.2 denominator: online service entries offered
    services_used: int = 0  # 3.2 numerator: entries of (unit, procedure) rows with ≥1 online dossier
    fee_procedures: int = 0  # 3.4 / 3.5 denominator
    paid_online_procedures: int = 0
    fee_data_procedures: int = 0
    individual_procedures: int = 0  # 4.6 denominator
    population_procedures: int = 0
    received_in_online_procedures: int = 0  # 3.3's narrower denominator (policy)
    online_in_online_procedures: int = 0
    # Why each procedure costs points, per component (for the drill-down).
    missing: dict[str, list[dict]] = field(default_factory=dict)


def add_working_days(calendar: WorkingCalendar, day: dt.date, days: int) -> dt.date:
    """The day ``days`` working days after (negative: before) ``day``."""
    step = 1 if days >= 0 else -1
    remaining = abs(days)
    while remaining:
        day += dt.timedelta(days=step)
        if calendar.is_working_day(day):
            remaining -= 1
    return day


@dataclass(frozen=True)
class Deadlines:
    publication_lead_days: int = 5
    made_public_lag_days: int = 5


def catalogue_counts(
    rows: Mapping[tuple[str, str], CatalogueEntry],
    per_procedure: Mapping[tuple[str, str], Mapping[str, int]],
    *,
    period_start: dt.datetime,
    period_end: dt.datetime,
    calendar: WorkingCalendar,
    deadlines: Deadlines = Deadlines(),
    with_reasons: bool = False,
) -> CatalogueCounts:
    """Counts over the catalogue rows of a subtree (already filtered to the subtree, as of the period end).

    ``per_procedure`` holds the dossier counters of each (unit, procedure) for the period
    (metrics ``received``, ``received_online``, ``paid_online_dossiers``, ``fee_data``, ``population_data``).
    """
    start_day = period_start.date()
    end_day = (period_end - dt.timedelta(microseconds=1)).date()
    by_procedure: dict[str, list[CatalogueEntry]] = defaultdict(list)
    for entry in rows.values():
        by_procedure[entry.procedure_code].append(entry)

    n = defaultdict(int)
    missing: dict[str, list[dict]] = defaultdict(list)
    services = services_used = received_online_procs = online_in_online = 0

    def miss(component: str, procedure: str, reason: str) -> None:
        if with_reasons:
            missing[component].append({"procedure_code": procedure, "reason": reason})

    for procedure, entries in sorted(by_procedure.items()):
        counts = [per_procedure.get((e.unit_code, procedure), {}) for e in entries]
        used = lambda metric: any(c.get(metric, 0) > 0 for c in counts)  # noqa: E731
        n["procedures"] += 1
        if any(e.complete_parts for e in entries):
            n["complete"] += 1
        else:
            miss("1.3", procedure, "incomplete_parts")
        decision = min((e.decision_date for e in entries if e.decision_date), default=None)
        effective = min((e.legal_basis_effective_date for e in entries if e.legal_basis_effective_date), default=None)
        public = min((e.made_public_date for e in entries if e.made_public_date), default=None)
        if decision is not None and start_day <= decision <= end_day:
            n["published"] += 1
            if effective is not None and decision <= add_working_days(calendar, effective, -deadlines.publication_lead_days):
                n["published_on_time"] += 1
            else:
                miss("1.1", procedure, "published_late")
        if decision is not None:
            due = add_working_days(calendar, decision, deadlines.made_public_lag_days)
            if start_day <= due <= end_day or (public is not None and start_day <= public <= end_day):
                n["due_public"] += 1
                if public is not None and public <= due:
                    n["public_on_time"] += 1
                else:
                    miss("1.2", procedure, "made_public_late" if public else "not_made_public")
        if any(e.online for e in entries):
            n["online_procedures"] += 1
        else:
            miss("3.1", procedure, "not_online")
        for entry, c in zip(entries, counts):
            if entry.online:
                weight = entry.online_services or 1
                services += weight
                if c.get("received_online", 0) > 0:
                    services_used += weight
                else:
                    miss("3.2", procedure, f"no_online_dossier:{entry.unit_code}")
                received_online_procs += c.get("received", 0)
                online_in_online += c.get("received_online", 0)
        if any(e.fee_required for e in entries):
            n["fee_procedures"] += 1
            if used("paid_online_dossiers"):
                n["paid_online_procedures"] += 1
            else:
                miss("3.4", procedure, "no_online_payment")
            if used("fee_data"):
                n["fee_data_procedures"] += 1
            else:
                miss("3.5", procedure, "no_fee_data")
        if any(e.for_individuals for e in entries):
            n["individual_procedures"] += 1
            if used("population_data"):
                n["population_procedures"] += 1
            else:
                miss("4.6", procedure, "no_population_data")
    return CatalogueCounts(
        **n,
        services=services,
        services_used=services_used,
        received_in_online_procedures=received_online_procs,
        online_in_online_procedures=online_in_online,
        missing=dict(missing),
    )
