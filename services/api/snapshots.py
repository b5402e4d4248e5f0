"""Self-evaluation snapshots (indicators.md §5): every unit's scores frozen at an instant, listed, and
compared with today's recomputation (what changed and why).

Snapshots are taken on demand (``POST /v1/snapshots``) and by ``take_due_snapshots`` on the last day
of each quarter and before 20/12 (:func:`scheduled_kind` says when).
"""

from __future__ import annotations

import datetime as dt

import asyncpg
from fastapi import APIRouter, Depends, Path, Query, Request

from services.api import drilldown
from services.api.queries import policies_in_force, scorecard_for
from services.api.score_context import load_context
from shared.auth import Principal, admin, reader
from shared.db.raw import driver_connection, jsonb
from shared.problems import Problem
from shared.runtime import Runtime
from shared.timeutil import VIETNAM, BadPeriod, current_period, parse_period, utcnow

router = APIRouter(tags=["snapshots"])
router.include_router(drilldown.router)  # drill-down per component and early warning (issue 4)

SELF_EVALUATION_DAY = (12, 19)  # the last day before 20/12


def scheduled_kind(day: dt.date) -> str | None:
    """Which scheduled snapshot falls on a (Vietnam) day: the quarter's last day, or 19/12."""
    if (day.month, day.day) == SELF_EVALUATION_DAY:
        return "year_self_evaluation"
    if (day + dt.timedelta(days=1)).month != day.month and day.month in (3, 6, 9, 12):
        return "quarter_end"
    return None


def period_of_kind(kind: str, day: dt.date) -> str:
    if kind == "year_self_evaluation":
        return f"{day.year:04d}"
    if kind == "quarter_end":
        return f"{day.year:04d}-Q{(day.month - 1) // 3 + 1}"
    return f"{day.year:04d}-{day.month:02d}"


async def unit_cards(runtime: Runtime, apg: asyncpg.Connection, period_key: str, now: dt.datetime) -> dict:
    """Every unit's scorecard for a period, one context load per root of the tree."""
    period = parse_period(period_key)
    tree = runtime.units
    out = {}
    roots = [code for code, unit in tree.units.items() if not unit.parent or unit.parent not in tree.units]
    for root in roots:
        context = await load_context(apg, tree, root, period, now=now, policy=runtime.settings.policy,
                                     calendar=runtime.calendar)
        for code in tree.subtree(root):
            inputs = context.inputs_for(code)
            card = scorecard_for(dict(inputs.counts), runtime.settings, runtime.calendar.seconds_per_day, "portal",
                                 inputs=inputs)
            out[code] = {**card.as_dict(), "counters": dict(inputs.counts)}
    return out


async def take_snapshot(runtime: Runtime, *, period: str, kind: str, label: str | None,
                        now: dt.datetime | None = None) -> dict:
    now = now or utcnow()
    async with runtime.engine.begin() as conn:
        apg = await driver_connection(conn)
        cards = await unit_cards(runtime, apg, period, now)
        snapshot_id = await apg.fetchval(
            "INSERT INTO snapshots (period, label, kind, taken_at, policies) VALUES ($1, $2, $3, $4, $5) RETURNING id",
            period, label, kind, now, jsonb(policies_in_force(runtime.settings)),
        )
        await apg.execute(
            """INSERT INTO snapshot_scores (snapshot_id, unit_code, total, body)
               SELECT $1, u, t, b FROM unnest($2::text[], $3::numeric[], $4::jsonb[]) AS x(u, t, b)""",
            snapshot_id, list(cards), [card["total"]["score"] for card in cards.values()],
            [jsonb(card) for card in cards.values()],
        )
    return {"id": snapshot_id, "period": period, "kind": kind, "label": label,
            "taken_at": now.astimezone(VIETNAM).isoformat(), "units": len(cards)}


async def take_due_snapshots(runtime: Runtime, now: dt.datetime | None = None) -> list[dict]:
    """Take today's scheduled snapshot if one is due and not yet taken (for a periodic task)."""
    now = now or utcnow()
    day = now.astimezone(VIETNAM).date()
    kind = scheduled_kind(day)
    if kind is None:
        return []
    period = period_of_kind(kind, day)
    async with runtime.engine.connect() as conn:
        apg = await driver_connection(conn)
        start = dt.datetime(day.year, day.month, day.day, tzinfo=VIETNAM)
        taken = await apg.fetchval(
            "SELECT count(*) FROM snapshots WHERE kind = $1 AND period = $2 AND taken_at >= $3",
            kind, period, start,
        )
    if taken:
        return []
    return [await take_snapshot(runtime, period=period, kind=kind, label=None, now=now)]


@router.post("/v1/snapshots", summary="Freeze every unit's scores for a period now (on demand)")
async def post_snapshot(request: Request, _: Principal = Depends(admin)):
    runtime: Runtime = request.app.state.runtime
    body = {}
    if await request.body():
        try:
            body = await request.json()
        except ValueError as exc:
            raise Problem(400, "invalid_json", "body is not JSON") from exc
    if not isinstance(body, dict):
        raise Problem(400, "bad_body", "body must be a JSON object {period, label}")
    period = body.get("period") or current_period(utcnow())
    try:
        parse_period(period)
    except BadPeriod as exc:
        raise Problem(400, "bad_period", str(exc)) from exc
    return await take_snapshot(runtime, period=period, kind="on_demand", label=body.get("label"))


@router.get("/v1/snapshots", summary="Snapshots taken, newest first")
async def list_snapshots(request: Request, period: str | None = Query(None), _: Principal = Depends(reader)):
    runtime: Runtime = request.app.state.runtime
    async with runtime.engine.connect() as conn:
        apg = await driver_connection(conn)
        rows = await apg.fetch(
            "SELECT id, period, label, kind, taken_at FROM snapshots WHERE ($1::text IS NULL OR period = $1) "
            "ORDER BY taken_at DESC, id DESC",
            period,
        )
    return {"items": [{"id": r["id"], "period": r["period"], "label": r["label"], "kind": r["kind"],
                       "taken_at": r["taken_at"].astimezone(VIETNAM).isoformat()} for r in rows]}


def compare_cards(before: dict, after: dict) -> list[dict]:
    """Per component: what changed between two scorecards, and why (numerator / denominator moves)."""
    def flat(card):
        return {c["id"]: c for g in card["groups"] for c in g["components"]}

    old, new = flat(before), flat(after)
    changes = []
    for cid, was in old.items():
        now = new.get(cid)
        if now is None:
            continue
        keys = ("status", "numerator", "denominator", "score")
        if all(was.get(k) == now.get(k) for k in keys):
            continue
        why = []
        if was.get("status") != now.get("status"):
            why.append(f"status {was.get('status')} → {now.get('status')}")
        for k in ("numerator", "denominator"):
            a, b = was.get(k), now.get(k)
            if a != b:
                delta = (b - a) if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None
                why.append(f"{k} {a} → {b}" + (f" ({delta:+g})" if delta is not None else ""))
        changes.append({"id": cid, "name": was.get("name"),
                        "before": {k: was.get(k) for k in keys}, "after": {k: now.get(k) for k in keys},
                        "score_delta": round((now.get("score") or 0) - (was.get("score") or 0), 2), "why": why})
    return changes


@router.get("/v1/snapshots/{snapshot_id}/compare",
            summary="A snapshot against today's recomputation of the same period: what changed and why")
async def compare_snapshot(request: Request, snapshot_id: int = Path(ge=1, le=2**63 - 1),  # a bigint
                           unit: str | None = Query(None), _: Principal = Depends(reader)):
    runtime: Runtime = request.app.state.runtime
    if unit is not None and unit not in runtime.units:
        raise Problem(404, "unknown_unit", f"unit {unit!r} is not in the unit tree")
    async with runtime.engine.connect() as conn:
        apg = await driver_connection(conn)
        snap = await apg.fetchrow("SELECT * FROM snapshots WHERE id = $1", snapshot_id)
        if snap is None:
            raise Problem(404, "unknown_snapshot", f"no snapshot {snapshot_id}")
        rows = await apg.fetch(
            "SELECT unit_code, body FROM snapshot_scores WHERE snapshot_id = $1 AND ($2::text IS NULL OR unit_code = $2)",
            snapshot_id, unit,
        )
        cards = await unit_cards(runtime, apg, snap["period"], utcnow())
    units = []
    for r in sorted(rows, key=lambda r: r["unit_code"]):
        current = cards.get(r["unit_code"])
        if current is None:
            continue
        changes = compare_cards(r["body"], current)
        if changes or unit:
            units.append({"unit": r["unit_code"], "total_before": r["body"]["total"]["score"],
                          "total_now": current["total"]["score"], "changes": changes})
    return {"snapshot": {"id": snap["id"], "period": snap["period"], "kind": snap["kind"], "label": snap["label"],
                         "taken_at": snap["taken_at"].astimezone(VIETNAM).isoformat(), "policies": snap["policies"]},
            "policies_now": policies_in_force(runtime.settings), "units": units}
