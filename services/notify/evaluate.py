"""Targets evaluated from the live scores and the clock (the rules are services/indicators/rules/targets.py).

A target's units are scored the way a league table scores them: the subtree's counters and feeds are
loaded once per (target unit, period), then each bound unit's score card is built; the projection
rebuilds the card with the period's open dossiers that turn overdue before its end counted overdue.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, replace

import asyncpg

from services.indicators.rules.catalogue import counts_by_field, entry_per_procedure, field_code_of
from services.indicators.score_context import ScoreContext, load_context
from services.indicators.rules.scoring import score_inputs
from services.indicators.rules.targets import (
    TargetDef,
    field_metric_value,
    metric_value,
    needs_catalogue,
    period_closed,
    project_counts,
    project_field_counts,
    status_of,
    units_bound,
    valid_for,
)
from shared.runtime import Runtime
from shared.timeutil import VIETNAM, Period, current_period, parse_period


@dataclass
class TargetResult:
    target: TargetDef
    unit: str
    period: str
    value: float | None
    projected: float | None
    status: str
    turning_overdue: int = 0  # open dossiers the projection turns overdue by the period's end

    @property
    def key(self) -> str:
        return f"target:{self.target.id}:{self.unit}:{self.period}"

    def as_dict(self) -> dict:
        t = self.target
        return {
            "id": t.id, "label": t.label, "metric": t.metric, "min": t.min, "max": t.max,
            "scope": {"unit": t.unit, "applies_to": t.applies_to, "level": t.level, "field": t.field},
            "unit": self.unit, "period": self.period, "value": self.value, "projected": self.projected,
            "turning_overdue": self.turning_overdue, "status": self.status,
        }


def target_of(definition: dict) -> TargetDef:
    """A stored definition (the API's JSON: ``from`` / ``until``) as the rules' value."""
    fields = {k: v for k, v in definition.items() if k not in ("from", "until")}
    return TargetDef(**fields, valid_from=definition.get("from"), valid_until=definition.get("until"))


async def load_targets(apg: asyncpg.Connection) -> list[TargetDef]:
    rows = await apg.fetch("SELECT definition FROM targets ORDER BY id")
    return [target_of(dict(r["definition"])) for r in rows]


async def _turning(apg: asyncpg.Connection, units: list[str], period: Period) -> dict[tuple[str, str], int]:
    """Per unit and procedure: open dossiers of the period still in time whose deadline falls before its end."""
    rows = await apg.fetch(
        """SELECT unit_code, procedure_code, count(*) AS n FROM dossiers
           WHERE unit_code = ANY($1::text[]) AND received_month = ANY($2::text[]) AND ended_at IS NULL
             AND overdue_fixed IS NULL AND deadline IS NOT NULL AND NOT deadline_passed AND deadline < $3
           GROUP BY unit_code, procedure_code""",
        units, period.months(), period.end,
    )
    return {(r["unit_code"], r["procedure_code"]): r["n"] for r in rows}


def _field_value(context: ScoreContext, turning: dict[tuple[str, str], int], target: TargetDef, code: str,
                 seconds_per_day: int) -> tuple[float | None, float | None, int]:
    """A target per field for one unit: the value and projection of its subtree's dossiers of procedures in
    the field (grouped as the per-field table groups them), and the dossiers the projection turns overdue."""
    members = set(context.tree.subtree(code))
    per_procedure: defaultdict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
    for (unit, procedure), counts in context.per_procedure.items():
        if unit in members:
            for metric, value in counts.items():
                per_procedure[procedure][metric] += value
    entries = entry_per_procedure({key: e for key, e in context.catalogue.items() if key[0] in members})
    counts = counts_by_field(per_procedure, entries).get(target.field, {})
    turns = sum(n for (unit, procedure), n in turning.items()
                if unit in members and field_code_of(entries.get(procedure)) == target.field)
    in_field = {procedure for procedure in per_procedure if field_code_of(entries.get(procedure)) == target.field}
    complaints = context.complaint_dossiers(members, in_field)
    value = field_metric_value(target.metric, counts, seconds_per_day=seconds_per_day, complaint_dossiers=complaints)
    projected = field_metric_value(target.metric, project_field_counts(counts, turns), seconds_per_day=seconds_per_day,
                                   complaint_dossiers=complaints) if turns else value
    return value, projected, turns


async def evaluate(runtime: Runtime, apg: asyncpg.Connection, wanted: list[tuple[TargetDef, Period]],
                   now: dt.datetime, *, only_unit: str | None = None) -> list[TargetResult]:
    """Each target of ``wanted`` for its period, for every unit it binds (or only ``only_unit``)."""
    tree = runtime.units
    policy = runtime.settings.policy
    seconds_per_day = runtime.calendar.seconds_per_day
    levels = {code: unit.level for code, unit in tree.units.items()}
    by_scope: defaultdict[tuple[str, str], list[TargetDef]] = defaultdict(list)
    for target, period in wanted:
        if target.unit in tree and valid_for(target, period):
            by_scope[(target.unit, period.key)].append(target)
    results = []
    for (root, key), targets in sorted(by_scope.items()):
        period = parse_period(key)
        closed = period_closed(period, now)
        # The catalogue's components cost most of a card: read only when a target needs them.
        catalogue = any(needs_catalogue(t, policy.online_ratio_denominator) for t in targets)
        context = await load_context(apg, tree, root, period, now=now, policy=policy, calendar=runtime.calendar,
                                     catalogue=catalogue)
        subtree = tree.subtree(root)
        turning = {} if closed else await _turning(apg, list(subtree), period)
        cards: dict[str, tuple] = {}

        def scored(code: str):
            if code not in cards:
                inputs = context.inputs_for(code)
                card = score_inputs(inputs, policy, seconds_per_day=seconds_per_day)
                members = set(tree.subtree(code))
                turns = sum(n for (unit, _), n in turning.items() if unit in members)
                projected_card = card
                if turns:
                    projected_inputs = replace(inputs, counts=project_counts(inputs.counts, turns))
                    projected_card = score_inputs(projected_inputs, policy, seconds_per_day=seconds_per_day)
                cards[code] = (inputs.counts, card, projected_inputs.counts if turns else inputs.counts,
                               projected_card, turns)
            return cards[code]

        for target in targets:
            for code in units_bound(target, subtree, levels):
                if only_unit is not None and code != only_unit:
                    continue
                if target.field:
                    value, projected, turns = _field_value(context, turning, target, code, seconds_per_day)
                else:
                    counts, card, projected_counts, projected_card, turns = scored(code)
                    value = metric_value(target.metric, card, counts)
                    projected = metric_value(target.metric, projected_card, projected_counts)
                results.append(TargetResult(target, code, key, value, projected,
                                            status_of(target, value, projected, closed=closed), turns))
    return results


# A closed period stays watched this long after its end: its close is announced (missed), and late events
# that move it soon after are too; later corrections still show in the API and the scores.
CLOSED_PERIOD_WATCH = dt.timedelta(days=10)


def watched_periods(target: TargetDef, now: dt.datetime) -> list[Period]:
    """The periods the notifier watches for a target: the current one, and the one before it for
    :data:`CLOSED_PERIOD_WATCH` after it closed."""
    current = parse_period(current_period(now, target.period))
    previous = parse_period(current_period(current.start - dt.timedelta(seconds=1), target.period))
    return [previous, current] if now < previous.end + CLOSED_PERIOD_WATCH else [current]


def local_date(now: dt.datetime) -> dt.date:
    return now.astimezone(VIETNAM).date()
