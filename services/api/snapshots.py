"""Self-evaluation snapshots over HTTP: taken, listed, and compared with the current cards (what
changed and why). Taking and scheduling them: services/indicators/snapshots.py."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request

from services.api import drilldown
from services.api.params import OptionalPeriod, OptionalQueryUnit, chosen_period
from services.api.schemas import SnapshotComparison, Snapshots, SnapshotTaken, SnapshotTakeRequest
from services.indicators.cards import policies_in_force
from services.indicators.snapshots import take_snapshot, unit_cards
from shared.auth import Principal, admin, reader
from shared.db.raw import driver_connection
from shared.problems import Problem
from shared.runtime import Runtime
from services.openapi import request_body
from shared.timeutil import VIETNAM

router = APIRouter(tags=["snapshots"])
router.include_router(drilldown.router)  # drill-down per component and early warning


@router.post("/v1/snapshots", response_model=SnapshotTaken,
             summary="Freeze every unit's scores for a period now (on demand)",
             openapi_extra=request_body(SnapshotTakeRequest, required=False,
                                        description="the period (default: this month) and a label; may be empty"))
async def post_snapshot(request: Request, _: Annotated[Principal, Depends(admin)]):
    runtime: Runtime = request.app.state.runtime
    body = {}
    if await request.body():
        try:
            body = await request.json()
        except ValueError as exc:
            raise Problem(400, "invalid_json", "body is not JSON") from exc
    if not isinstance(body, dict):
        raise Problem(400, "bad_body", "body must be a JSON object {period, label}")
    period, label = body.get("period"), body.get("label")
    if not isinstance(period, str | None) or not isinstance(label, str | None):
        raise Problem(400, "bad_body", "period and label must be strings")
    period = chosen_period(period).key
    return await take_snapshot(runtime, period=period, kind="on_demand", label=label)


@router.get("/v1/snapshots", response_model=Snapshots, summary="Snapshots taken, newest first")
async def list_snapshots(request: Request, _: Annotated[Principal, Depends(reader)], period: OptionalPeriod):
    runtime: Runtime = request.app.state.runtime
    async with runtime.engine.connect() as conn:
        apg = await driver_connection(conn)
        rows = await apg.fetch(
            "SELECT id, period, label, kind, taken_at FROM snapshots WHERE ($1::text IS NULL OR period = $1) "
            "ORDER BY taken_at DESC, id DESC",
            period.key if period else None,
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


@router.get("/v1/snapshots/{snapshot_id}/compare", response_model=SnapshotComparison,
            summary="A snapshot against today's recomputation of the same period: what changed and why")
async def compare_snapshot(request: Request, _: Annotated[Principal, Depends(reader)], only: OptionalQueryUnit,
                           snapshot_id: int = Path(ge=1, le=2**63 - 1)):  # a bigint
    runtime: Runtime = request.app.state.runtime
    unit = only.code if only else None
    async with runtime.engine.connect() as conn:
        apg = await driver_connection(conn)
        snap = await apg.fetchrow("SELECT * FROM snapshots WHERE id = $1", snapshot_id)
        if snap is None:
            raise Problem(404, "unknown_snapshot", f"no snapshot {snapshot_id}")
        rows = await apg.fetch(
            "SELECT unit_code, body FROM snapshot_scores WHERE snapshot_id = $1 AND ($2::text IS NULL OR unit_code = $2)",
            snapshot_id, unit,
        )
    cards = await unit_cards(runtime, snap["period"])
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
