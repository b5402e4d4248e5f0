"""Everything a period's scores need beyond the all-procedure counters, loaded once per subtree.

The dossier counters are maintained by the indicators worker; the catalogue-, feedback- and
report-fed components are small and computed at read time, so a late catalogue version, feedback
item or reported total re-scores every period it touches without any recomputation.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import asyncpg

from services.indicators.rules import counters as c
from services.indicators.rules.catalogue import CatalogueEntry, Deadlines, catalogue_counts
from services.indicators.rules.feedback import (
    FeedbackEvent,
    FeedbackItem,
    complains_about_dossier,
    derive_items,
    feedback_counts,
)
from services.indicators.rules.scoring import ScoreInputs
from shared.calendar import WorkingCalendar
from shared.settings import PolicySettings
from shared.timeutil import Period
from shared.units import UnitTree

PER_PROCEDURE_METRICS = sorted(c.PROCEDURE_METRICS)  # the only metrics counted per procedure


async def unit_counts(conn: asyncpg.Connection, units: Iterable[str], period: str) -> dict[str, dict[str, int]]:
    """All-procedure counters of each unit (its own dossiers only) for one period: the sums of the rows
    the period is stored as (its months, and a quarter's or year's own corrections: rules/counters.py)."""
    rows = await conn.fetch(
        """SELECT unit_code, metric, sum(value)::bigint AS value FROM counters
           WHERE unit_code = ANY($1::text[]) AND period = ANY($2::text[]) AND procedure_code = $3
           GROUP BY unit_code, metric HAVING sum(value) <> 0""",
        list(units),
        list(c.stored_periods(period)),
        c.ALL_PROCEDURES,
    )
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for row in rows:
        out[row["unit_code"]][row["metric"]] = row["value"]
    return out


def entry_of(row) -> CatalogueEntry:
    return CatalogueEntry(
        unit_code=row["unit_code"],
        procedure_code=row["procedure_code"],
        valid_from=row["valid_from"],
        name=row["name"],
        field_code=row["field_code"],
        field_name=row["field_name"],
        online_level=row["online_level"],
        online_services=row["online_services"],
        fee_required=row["fee_required"],
        for_individuals=row["for_individuals"],
        result_required=row["result_required"],
        legal_days=float(row["legal_days"]) if row["legal_days"] is not None else None,
        decision_date=row["decision_date"],
        legal_basis_effective_date=row["legal_basis_effective_date"],
        made_public_date=row["made_public_date"],
        complete_parts=row["complete_parts"],
        removed=row["removed"],
    )


async def catalogue_as_of(apg: asyncpg.Connection, units: list[str], instant: dt.datetime) -> dict:
    rows = await apg.fetch(
        """SELECT DISTINCT ON (unit_code, procedure_code) * FROM procedures
           WHERE unit_code = ANY($1::text[]) AND valid_from < $2
           ORDER BY unit_code, procedure_code, valid_from DESC""",
        units,
        instant,
    )
    return {(r["unit_code"], r["procedure_code"]): entry_of(r) for r in rows if not r["removed"]}


# The catalogue as of an instant for a set of units, by the catalogue's version: every card refresh
# needs it, it changes only when a catalogue is loaded, and reading it costs about a second for a
# province's catalogue (tens of thousands of versions).
_CATALOGUES: dict[tuple, tuple[tuple, dict]] = {}
_CATALOGUES_KEPT = 32


async def catalogue_by_version(apg: asyncpg.Connection, units: list[str], instant: dt.datetime) -> dict:
    # Every write of a version sets its loaded_at: the sum of them (in µs) moves with any write.
    version = tuple(await apg.fetchrow(
        "SELECT count(*), sum((extract(epoch FROM loaded_at) * 1000000)::bigint) FROM procedures"))
    key = (tuple(sorted(units)), instant)
    kept = _CATALOGUES.get(key)
    if kept is not None and kept[0] == version:
        return kept[1]
    entries = await catalogue_as_of(apg, units, instant)
    if len(_CATALOGUES) >= _CATALOGUES_KEPT:
        _CATALOGUES.pop(next(iter(_CATALOGUES)))
    _CATALOGUES[key] = (version, entries)
    return entries


@dataclass
class ScoreContext:
    tree: UnitTree
    period: Period
    now: dt.datetime
    policy: PolicySettings
    calendar: WorkingCalendar
    per_unit: dict[str, dict[str, int]]
    per_procedure: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    catalogue: dict[tuple[str, str], CatalogueEntry] = field(default_factory=dict)
    feedback_fed: bool = False
    items: list[FeedbackItem] = field(default_factory=list)
    complaints: dict[tuple[str, str], int] = field(default_factory=dict)  # per dossier unit and procedure
    reported: dict[str, int] = field(default_factory=dict)
    e_copy_known: bool = False
    _catalogue_by_unit: dict | None = None

    @property
    def instant(self) -> dt.datetime:
        return min(self.now, self.period.end)

    def counts(self, code: str) -> dict[str, int]:
        total: defaultdict[str, int] = defaultdict(int)
        for member in self.tree.subtree(code):
            for metric, value in self.per_unit.get(member, {}).items():
                total[metric] += value
        return dict(total)

    def deadlines(self, code: str) -> Deadlines:
        ministry = any(self.tree.units[a].level == "MINISTRY" for a in self._ancestry(code))
        p = self.policy
        return Deadlines(
            publication_lead_days=p.publication_lead_days_ministry if ministry else p.publication_lead_days,
            made_public_lag_days=p.made_public_lag_days_ministry if ministry else p.made_public_lag_days,
        )

    def _ancestry(self, code: str) -> list[str]:
        out, current, seen = [], code, set()
        while current and current in self.tree.units and current not in seen:
            seen.add(current)
            out.append(current)
            current = self.tree.units[current].parent
        return out

    def catalogue_for(self, code: str, *, with_reasons: bool = False):
        if self._catalogue_by_unit is None:
            by_unit: dict[str, dict] = defaultdict(dict)
            for key, entry in self.catalogue.items():
                by_unit[key[0]][key] = entry
            self._catalogue_by_unit = dict(by_unit)
        rows = {}
        for member in self.tree.subtree(code):
            rows.update(self._catalogue_by_unit.get(member, {}))
        if not rows:
            return None
        return catalogue_counts(
            rows, self.per_procedure, period_start=self.period.start, period_end=self.period.end,
            calendar=self.calendar, deadlines=self.deadlines(code), with_reasons=with_reasons,
        )

    def feedback_for(self, code: str, *, with_reasons: bool = False):
        if not self.feedback_fed:
            return None
        members = set(self.tree.subtree(code))
        return feedback_counts(
            (i for i in self.items if i.unit_code in members), period_start=self.period.start,
            period_end=self.period.end, now=self.now, with_reasons=with_reasons,
        )

    def complaint_dossiers(self, units, procedures=None) -> int:
        """The 5.3 complaints about dossiers of ``units`` (and of ``procedures``, if given)."""
        units = set(units)
        return sum(n for (unit, procedure), n in self.complaints.items()
                   if unit in units and (procedures is None or procedure in procedures))

    def inputs_for(self, code: str) -> ScoreInputs:
        members = self.tree.subtree(code)
        communes = [m for m in members if self.tree.units.get(m) and self.tree.units[m].level == "COMMUNE"]
        known = [m for m in communes if self.tree.units[m].e_certified_copy is not None]
        if known:
            n_communes: int | None = len(known)
        else:
            n_communes = 0 if (self.e_copy_known and not communes) else None
        reported = [self.reported[m] for m in members if m in self.reported]
        return ScoreInputs(
            counts=self.counts(code),
            catalogue=self.catalogue_for(code),
            feedback=self.feedback_for(code),
            reported_received=sum(reported) if reported else None,
            complaint_dossiers=self.complaint_dossiers(members),
            communes=n_communes,
            communes_e_copy=sum(1 for m in known if self.tree.units[m].e_certified_copy),
        )


async def load_context(
    apg: asyncpg.Connection,
    tree: UnitTree,
    root: str,
    period: Period,
    *,
    now: dt.datetime,
    policy: PolicySettings,
    calendar: WorkingCalendar,
    per_unit: dict[str, dict[str, int]] | None = None,
    catalogue: bool = True,
) -> ScoreContext:
    """``catalogue=False``: the catalogue's components (1.1–1.3, 3.1, 3.2, 3.4, 3.5, 4.6) are left without
    data, for a reader that needs none of them (the notifier's targets on dossier components)."""
    units = list(tree.subtree(root))
    if per_unit is None:
        per_unit = await unit_counts(apg, units, period.key)
    ctx = ScoreContext(tree=tree, period=period, now=now, policy=policy, calendar=calendar, per_unit=per_unit)
    ctx.e_copy_known = any(u.e_certified_copy is not None for u in tree.units.values())
    ctx.catalogue = await catalogue_by_version(apg, units, period.end) if catalogue else {}
    if ctx.catalogue:
        rows = await apg.fetch(
            """SELECT unit_code, procedure_code, metric, sum(value)::bigint AS value FROM counters
               WHERE unit_code = ANY($1::text[]) AND period = ANY($2::text[]) AND procedure_code <> $3
                 AND metric = ANY($4::text[])
               GROUP BY unit_code, procedure_code, metric HAVING sum(value) <> 0""",
            units, list(c.stored_periods(period.key)), c.ALL_PROCEDURES, PER_PROCEDURE_METRICS,
        )
        per_procedure: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
        for r in rows:
            per_procedure[(r["unit_code"], r["procedure_code"])][r["metric"]] = r["value"]
        ctx.per_procedure = dict(per_procedure)

    ctx.feedback_fed = bool(await apg.fetchval("SELECT EXISTS (SELECT 1 FROM feedback_events)"))
    if ctx.feedback_fed:
        rows = await apg.fetch(
            """SELECT * FROM feedback_events WHERE feedback_id IN (
                   SELECT feedback_id FROM feedback_events
                   WHERE unit_code = ANY($1::text[]) AND occurred_at < $3 AND
                         (kind <> 'received' OR occurred_at >= $2))""",
            units, period.start, period.end,
        )
        ctx.items = derive_items(
            FeedbackEvent(r["feedback_id"], r["unit_code"], r["kind"], r["occurred_at"], r["dossier_code"],
                          r["due_at"], r["rating"])
            for r in rows
        )
        ctx.complaints = await _complaints(apg, ctx, units)

    months = period.months()
    rows = await apg.fetch(
        "SELECT unit_code, period, received FROM reported_totals WHERE unit_code = ANY($1::text[]) "
        "AND period = ANY($2::text[])",
        units, [period.key, *months],
    )
    direct = {r["unit_code"]: r["received"] for r in rows if r["period"] == period.key}
    summed: defaultdict[str, int] = defaultdict(int)
    for r in rows:
        if r["period"] != period.key and r["period"] in months:
            summed[r["unit_code"]] += r["received"]
    ctx.reported = {**summed, **direct}
    return ctx


async def _complaints(apg: asyncpg.Connection, ctx: ScoreContext, units: list[str]) -> dict[tuple[str, str], int]:
    """Per unit and procedure: dossiers received in the period, on time at T, with a complaint or a
    not-satisfied rating."""
    kinds = ctx.policy.dossier_complaint_kinds
    codes = sorted({i.dossier_code for i in ctx.items if complains_about_dossier(i, kinds)})
    # Items of other periods may still complain about this period's dossiers.
    rows = await apg.fetch(
        """SELECT DISTINCT f.dossier_code FROM feedback_events f
           WHERE f.dossier_code IS NOT NULL AND (f.kind = ANY($1::text[]) OR f.rating = 'unsatisfied')""",
        kinds,
    )
    codes = sorted(set(codes) | {r["dossier_code"] for r in rows})
    if not codes:
        return {}
    dossiers = await apg.fetch(
        """SELECT unit_code, procedure_code FROM dossiers d
           WHERE d.dossier_code = ANY($1::text[]) AND d.unit_code = ANY($2::text[])
             AND d.received_month = ANY($3::text[])
             AND NOT (d.overdue_fixed IS TRUE OR (d.overdue_fixed IS NULL AND d.deadline IS NOT NULL
                      AND d.deadline < $4))""",
        codes, units, ctx.period.months(), ctx.instant,
    )
    out: defaultdict[tuple[str, str], int] = defaultdict(int)
    for r in dossiers:
        out[(r["unit_code"], r["procedure_code"])] += 1
    return dict(out)
