"""Drill-down for every component (the items in its numerator's complement, with the reason each costs
points) and the early warning (open dossiers about to turn overdue, and the projected 2.1)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Depends, Query, Request

from services.api.params import PathUnit, QueryPeriod, decode_cursor, encode_cursor
from services.api.queries import OVERDUE_AT_T, _iso, input_flags
from services.api.schemas import ComponentItems, EarlyWarning
from services.indicators.cards import read_card
from services.indicators.score_context import load_context
from services.indicators.rules import counters as c
from services.indicators.rules.scoring import COMPONENTS_BY_ID, Measure, counted_metrics, score_component
from shared.auth import Principal, reader
from shared.db.raw import driver_connection
from shared.problems import Problem
from shared.runtime import Runtime
from shared.statuses import STATUS_NAMES_VI
from shared.timeutil import Period, utcnow

router = APIRouter(tags=["scores"])


# The dossiers a component counts in the period: those received in it ($2), and for 3.6 (counted in the
# month its processing started, where that differs: the contribution's "s" and "sc") those started in it.
RECEIVED_IN_PERIOD = "d.received_month = ANY($2::text[])"
COUNTS = "(d.contribution->'c')::jsonb"
START_COUNTS = "(d.contribution->'sc')::jsonb"


def _counted_complement(numerator: str, denominator: str, counts: str = COUNTS) -> str:
    """A dossier the rules counted in the denominator's metric and not in the numerator's."""
    return f"({counts} ? '{denominator}' AND NOT {counts} ? '{numerator}')"


def counted_condition(cid: str, metrics: tuple[str, str]) -> str:
    """The dossiers that cost points in a component of counted metrics (rules/scoring.py: COUNTED)."""
    if cid == "3.6":
        return (f"(({_counted_complement(*metrics)} AND {RECEIVED_IN_PERIOD}) OR "
                f"({_counted_complement(*metrics, START_COUNTS)} AND d.contribution->>'s' = ANY($2::text[])))")
    return f"({_counted_complement(*metrics)} AND {RECEIVED_IN_PERIOD})"


# Why a dossier costs points in a component of counted metrics.
COUNTED_REASONS = {"1.4": "not_synced", "3.3": "not_online", "3.6": "not_paid_online", "4.1": "no_e_result",
                   "4.2": "not_digitized", "4.4": "no_reused_data", "4.5": "no_data_store_component",
                   "4.7": "no_population_data"}
# The components that depend on the clock (on time at T) or on feedback: (condition, reason).
TIMED_COMPLEMENT = {
    "2.1": (f"({OVERDUE_AT_T}) AND {RECEIVED_IN_PERIOD}", None),
    "5.3": (f"(({OVERDUE_AT_T}) OR d.dossier_code IN (SELECT f.dossier_code FROM feedback_events f "
            "WHERE f.dossier_code IS NOT NULL AND (f.kind = ANY($6::text[]) OR f.rating = 'unsatisfied'))) "
            f"AND {RECEIVED_IN_PERIOD}", None),
}
DOSSIER_COMPONENTS = frozenset(COUNTED_REASONS) | frozenset(TIMED_COMPLEMENT)
PROCEDURE_COMPONENTS = ("1.1", "1.2", "1.3", "3.1", "3.2", "3.4", "3.5", "4.6")
FEEDBACK_REASONS = {"5.1": {"handled_late", "open_past_due"}, "5.2": None}


async def dossier_complement(apg: asyncpg.Connection, cid: str, units, period: Period, *, now: dt.datetime,
                             policy, after: str, limit: int) -> list[dict]:
    counted = counted_metrics(policy)
    if cid in TIMED_COMPLEMENT:
        condition, reason = TIMED_COMPLEMENT[cid]
    else:
        condition, reason = counted_condition(cid, counted[cid]), COUNTED_REASONS[cid]
    rows = await apg.fetch(
        f"""SELECT d.dossier_code, d.unit_code, d.procedure_code, d.status, d.channel, d.received_at, d.due_at,
                   d.ended_at, d.overdue_reason, ({OVERDUE_AT_T}) AS overdue, d.attributes, d.no_deadline
            FROM dossiers d
            WHERE d.unit_code = ANY($1::text[]) AND ({condition}) AND d.dossier_code > $4
            ORDER BY d.dossier_code LIMIT $5""",
        list(units), period.months(), min(now, period.end), after, limit,
        *([policy.dossier_complaint_kinds] if "$6" in condition else []),
    )
    out = []
    for r in rows:
        if reason is not None:
            reasons = [reason]
        else:
            reasons = [r["overdue_reason"] or "open_past_due"] if r["overdue"] else []
            if cid == "5.3" and not r["overdue"]:
                reasons.append("complaint_or_unsatisfied")
        out.append({"kind": "dossier", "dossier_code": r["dossier_code"], "unit_code": r["unit_code"],
                    "procedure_code": r["procedure_code"], "status": r["status"],
                    "status_name": STATUS_NAMES_VI.get(r["status"]), "channel": r["channel"],
                    "received_at": _iso(r["received_at"]), "due_at": _iso(r["due_at"]),
                    "ended_at": _iso(r["ended_at"]), "reasons": reasons,
                    "flags": input_flags(r["attributes"], r["ended_at"], r["no_deadline"]), "key": r["dossier_code"]})
    return out


async def costly_component(component_id: str) -> str:
    """A component that points can be lost on (checked before the period: its answer comes first)."""
    if component_id not in COMPONENTS_BY_ID:
        raise Problem(404, "unknown_component", f"no component {component_id!r}; ids are 1.1 … 5.3")
    if component_id == "2.2":
        raise Problem(400, "no_penalty", "2.2 is tracked without points: nothing costs points")
    return component_id


@router.get("/v1/units/{unit_code}/components/{component_id}/items", response_model=ComponentItems,
            response_model_exclude_unset=True,
            summary="Drill-down for any component: the dossiers, procedures or feedback items that cost points")
async def component_items(
    request: Request,
    _: Annotated[Principal, Depends(reader)],
    unit: PathUnit,
    component_id: Annotated[str, Depends(costly_component)],
    period: QueryPeriod,
    limit: int = Query(100, ge=1, le=1000),
    cursor: str | None = Query(None),
):
    runtime: Runtime = request.app.state.runtime
    chosen = period
    after = decode_cursor(cursor)
    now = utcnow()
    subtree = runtime.units.subtree(unit.code)
    async with runtime.engine.connect() as conn:
        apg = await driver_connection(conn)
        if component_id in DOSSIER_COMPONENTS:
            items = await dossier_complement(apg, component_id, subtree, chosen, now=now,
                                             policy=runtime.settings.policy, after=after, limit=limit)
        else:
            context = await load_context(apg, runtime.units, unit.code, chosen, now=now,
                                         policy=runtime.settings.policy, calendar=runtime.calendar)
            items = _context_items(context, unit.code, component_id)
            items = [i for i in items if i["key"] > after][:limit]
    next_cursor = encode_cursor(items[-1]["key"]) if len(items) == limit else None
    for item in items:
        item.pop("key", None)
    return {"unit": unit.code, "period": chosen.key, "component": component_id,
            "name": COMPONENTS_BY_ID[component_id].name, "items": items, "next_cursor": next_cursor}


def _context_items(context, code: str, cid: str) -> list[dict]:
    if cid in PROCEDURE_COMPONENTS:
        counts = context.catalogue_for(code, with_reasons=True)
        missing = counts.missing.get(cid, []) if counts else []
        return sorted(({"kind": "procedure", **m, "reasons": [m["reason"]], "key": f"{m['procedure_code']}|{m['reason']}"}
                       for m in missing), key=lambda i: i["key"])
    if cid in FEEDBACK_REASONS:
        counts = context.feedback_for(code, with_reasons=True)
        wanted = FEEDBACK_REASONS[cid]
        out = []
        for item in (counts.costly if counts else []):
            reasons = [r for r in item["reasons"] if wanted is None or r in wanted]
            if reasons:
                out.append({"kind": "feedback", **item, "reasons": reasons, "key": item["feedback_id"]})
        return sorted(out, key=lambda i: i["key"])
    if cid == "4.3":
        # A commune whose offer is not known is outside 4.3's denominator (ScoreContext.inputs_for): it
        # costs nothing, so it is not listed.
        tree = context.tree
        return [{"kind": "unit", "unit_code": m, "name": tree.units[m].name, "reasons": ["no_e_certified_copy"],
                 "key": m}
                for m in sorted(tree.subtree(code))
                if tree.units[m].level == "COMMUNE" and tree.units[m].e_certified_copy is False]
    return []


@router.get("/v1/units/{unit_code}/early-warning", response_model=EarlyWarning,
            summary="Open dossiers that turn overdue within N working days, and the period's projected 2.1")
async def early_warning(
    request: Request,
    _: Annotated[Principal, Depends(reader)],
    unit: PathUnit,
    period: QueryPeriod,
    days: int | None = Query(None, ge=0, le=60, description="working days ahead (default: a setting)"),
    limit: int = Query(200, ge=1, le=1000),
):
    runtime: Runtime = request.app.state.runtime
    chosen = period
    now = utcnow()
    days = runtime.settings.policy.early_warning_days if days is None else days
    horizon = runtime.calendar.instant_after(now, days * runtime.calendar.seconds_per_day)
    subtree = list(runtime.units.subtree(unit.code))
    # A deadline still ahead has not passed (deadline_passed is set when the clock crosses it): saying so
    # lets both queries read the pending-deadline index instead of every dossier of the subtree.
    async with runtime.engine.connect() as conn:
        apg = await driver_connection(conn)
        rows = await apg.fetch(
            """SELECT dossier_code, unit_code, procedure_code, status, received_at, due_at, deadline
               FROM dossiers WHERE unit_code = ANY($1::text[]) AND ended_at IS NULL AND overdue_fixed IS NULL
                 AND deadline IS NOT NULL AND NOT deadline_passed AND deadline >= $2 AND deadline < $3
               ORDER BY deadline, dossier_code LIMIT $4""",
            subtree, now, horizon, limit,
        )
        turning = await apg.fetchval(
            """SELECT count(*) FROM dossiers WHERE unit_code = ANY($1::text[]) AND received_month = ANY($2::text[])
                 AND ended_at IS NULL AND overdue_fixed IS NULL AND deadline IS NOT NULL AND NOT deadline_passed
                 AND deadline >= $3 AND deadline < $4""",
            subtree, chosen.months(), now, chosen.end,
        )
    counts = (await read_card(runtime, unit.code, chosen.key)).counts  # the subtree's counters
    received, on_time = counts.get(c.RECEIVED, 0), counts.get(c.ON_TIME, 0)
    definition = COMPONENTS_BY_ID["2.1"]
    current = score_component(definition, Measure(on_time, received))
    projected = score_component(definition, Measure(max(0, on_time - turning), received))
    return {
        "unit": unit.code, "period": chosen.key, "days": days,
        "horizon": _iso(horizon),
        "items": [{"dossier_code": r["dossier_code"], "unit_code": r["unit_code"],
                   "procedure_code": r["procedure_code"], "status": r["status"],
                   "status_name": STATUS_NAMES_VI.get(r["status"]), "received_at": _iso(r["received_at"]),
                   "due_at": _iso(r["due_at"]), "turns_overdue_at": _iso(r["deadline"])} for r in rows],
        "current_2_1": current.as_dict(),
        "projected_2_1": {**projected.as_dict(), "turning_overdue_in_period": turning},
    }

