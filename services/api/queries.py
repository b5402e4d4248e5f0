"""Read side: scores from maintained counters (never by scanning dossiers), drill-down from dossiers."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable

import asyncpg
import orjson

from services.indicators.rules.counters import ALL_PROCEDURES, stored_periods
from services.indicators.rules.scoring import (  # noqa: F401 (dossier_measures: re-exported)
    CounterView,
    ScoreCard,
    ScoreInputs,
    build_scorecard,
    dossier_measures,
    score_inputs,
)
from shared.settings import Settings
from shared.timeutil import Period
from shared.units import UnitTree


async def unit_counts(conn: asyncpg.Connection, units: Iterable[str], period: str) -> dict[str, dict[str, int]]:
    """All-procedure counters of each unit (its own dossiers only) for one period: the sums of the rows
    the period is stored as (its months, and a quarter's or year's own corrections: rules/counters.py)."""
    rows = await conn.fetch(
        """SELECT unit_code, metric, sum(value)::bigint AS value FROM counters
           WHERE unit_code = ANY($1::text[]) AND period = ANY($2::text[]) AND procedure_code = $3
           GROUP BY unit_code, metric HAVING sum(value) <> 0""",
        list(units),
        list(stored_periods(period)),
        ALL_PROCEDURES,
    )
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for row in rows:
        out[row["unit_code"]][row["metric"]] = row["value"]
    return out


def subtree_counts(tree: UnitTree, code: str, per_unit: dict[str, dict[str, int]]) -> dict[str, int]:
    """A parent's counts: the sums of its own and its descendants' counts."""
    total: defaultdict[str, int] = defaultdict(int)
    for member in tree.subtree(code):
        for metric, value in per_unit.get(member, {}).items():
            total[metric] += value
    return dict(total)


def scorecard_for(
    counts: dict[str, int],
    settings: Settings,
    seconds_per_day: int,
    layout: str,
    *,
    inputs: ScoreInputs | None = None,
) -> ScoreCard:
    """The whole score of one unit's subtree: all 22 components from ``inputs`` (see
    services/api/score_context.py); with the dossier counters alone, the components fed by the
    catalogue, feedback and reported totals say ``no_data``."""
    if inputs is None:
        inputs = ScoreInputs(counts=counts)
    return score_inputs(inputs, settings.policy, seconds_per_day=seconds_per_day, layout=layout)


class ScorecardMemo:
    """The last scorecard built for each (unit, period, layout), reused while its inputs are equal.

    ``score_inputs`` is a pure function of its inputs (frozen dataclasses, compared field by field), so
    an equal input gives an equal card: refreshing a league table of 148 communes rebuilds only the
    cards of units whose counters, catalogue, feedback or reported totals moved (a card costs ~0.25 ms;
    comparing its inputs, microseconds). One memo per application and its settings."""

    def __init__(self, settings: Settings, seconds_per_day: int, max_entries: int = 8192) -> None:
        self.settings = settings
        self.seconds_per_day = seconds_per_day
        self.max_entries = max_entries
        self._cards: dict[tuple, tuple[ScoreInputs, ScoreCard]] = {}
        self.reused = 0
        self.built = 0

    def card(self, code: str, period: str, layout: str, inputs: ScoreInputs) -> ScoreCard:
        key = (code, period, layout)
        previous = self._cards.get(key)
        if previous is not None and previous[0] == inputs:
            self.reused += 1
            return previous[1]
        card = scorecard_for(dict(inputs.counts), self.settings, self.seconds_per_day, layout, inputs=inputs)
        if len(self._cards) >= self.max_entries and key not in self._cards:
            self._cards.clear()
        self._cards[key] = (inputs, card)
        self.built += 1
        return card


def policies_in_force(settings: Settings) -> dict:
    policy = settings.policy
    return {
        "due_time": policy.due_time,
        "online_ratio_denominator": policy.online_ratio_denominator,
        "e_result_denominator": policy.e_result_denominator,
        "digitisation_scoring": policy.digitisation_scoring,
        "payment_group_score": policy.payment_group_score,
        "payment_period_fallback": policy.payment_period_fallback,
        "e_copy_without_communes": policy.e_copy_without_communes,
        "dossier_complaint_kinds": list(policy.dossier_complaint_kinds),
        "publication_lead_days": policy.publication_lead_days,
        "publication_lead_days_ministry": policy.publication_lead_days_ministry,
        "made_public_lag_days": policy.made_public_lag_days,
        "made_public_lag_days_ministry": policy.made_public_lag_days_ministry,
        "rating_bands": [{"min": m, "rating": r} for m, r in policy.rating_bands],
    }


FLAG_CONDITIONS = {
    "overdue": "({overdue})",
    "two_plus_supplements": "d.supplement_count >= 2",
    "overdue_step": "d.overdue_steps > 0",
    "open_overdue": "d.ended_at IS NULL AND ({overdue})",
    "not_online": "d.channel <> 2",
    # Counted with something its input lacked: no due time nor legal time, an end claimed without its
    # time, no procedure code (the reasons are in each item's ``flags``).
    "input_gaps": ("d.no_deadline OR coalesce((d.attributes->>'end_time_missing')::boolean, false) "
                   "OR coalesce((d.attributes->>'procedure_missing')::boolean, false)"),
}


def input_flags(attributes, ended_at: dt.datetime | None, no_deadline: bool) -> list[str]:
    """Why a dossier counts as it does although its input lacked something (drill-down ``flags``)."""
    if isinstance(attributes, str):
        attributes = orjson.loads(attributes)
    attributes = attributes or {}
    flags = []
    if attributes.get("end_time_missing"):
        # The system claimed an end with no time for it: taken from the step records, else still open.
        flags.append("end_from_steps" if ended_at is not None else "end_time_missing")
    if attributes.get("procedure_missing"):
        flags.append("procedure_missing")
    if no_deadline:
        flags.append("no_deadline_flagged")
    return flags
OVERDUE_AT_T = "d.overdue_fixed IS TRUE OR (d.overdue_fixed IS NULL AND d.deadline IS NOT NULL AND d.deadline < $3)"


async def dossiers_behind(
    conn: asyncpg.Connection,
    units: Iterable[str],
    period: Period,
    flag: str,
    *,
    now: dt.datetime,
    after: str | None,
    limit: int,
) -> list[dict]:
    """The dossiers behind a penalty, with the reasons each one counts."""
    evaluation = min(now, period.end)
    condition = FLAG_CONDITIONS[flag].format(overdue=OVERDUE_AT_T)
    rows = await conn.fetch(
        f"""SELECT d.dossier_code, d.unit_code, d.procedure_code, d.status, d.received_at, d.channel, d.due_at,
                   d.ended_at, d.supplement_count, d.overdue_steps, d.overdue_fixed, d.overdue_reason,
                   d.deadline, ({OVERDUE_AT_T}) AS overdue, d.attributes, d.no_deadline
            FROM dossiers d
            WHERE d.unit_code = ANY($1::text[]) AND d.received_month = ANY($2::text[]) AND ({condition})
              AND d.dossier_code > $4
            ORDER BY d.dossier_code LIMIT $5""",
        list(units),
        period.months(),
        evaluation,
        after or "",
        limit,
    )
    out = []
    for r in rows:
        reasons = []
        if r["overdue"]:
            reasons.append(r["overdue_reason"] or "open_past_due")
        if r["overdue_steps"]:
            reasons.append("overdue_step")
        if r["channel"] != 2 and flag == "not_online":
            reasons.append("not_online")
        out.append(
            {
                "dossier_code": r["dossier_code"],
                "unit_code": r["unit_code"],
                "procedure_code": r["procedure_code"],
                "status": r["status"],
                "channel": r["channel"],
                "received_at": _iso(r["received_at"]),
                "due_at": _iso(r["due_at"]),
                "ended_at": _iso(r["ended_at"]),
                "deadline": _iso(r["deadline"]),
                "supplement_requests": r["supplement_count"],
                "overdue_steps": r["overdue_steps"],
                "overdue": bool(r["overdue"]),
                "reasons": reasons,
                "flags": input_flags(r["attributes"], r["ended_at"], r["no_deadline"]),
            }
        )
    return out


def _iso(value: dt.datetime | None) -> str | None:
    from shared.timeutil import VIETNAM

    return value.astimezone(VIETNAM).isoformat() if value else None


def counters_view(counts: dict[str, int], seconds_per_day: int) -> dict:
    return CounterView(counts).as_dict()
