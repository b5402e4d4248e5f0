"""Targets and webhooks over HTTP (targets.md): define them, read each unit's targets, list deliveries."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Body, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from services.api.params import OptionalPeriod, PathUnit
from services.indicators.rules.targets import field_refusal, metric_kind
from services.notify.evaluate import evaluate, load_targets, target_of
from services.notify.rules import EVENTS
from shared.auth import Principal, admin, reader
from shared.db.raw import driver_connection
from shared.problems import Problem
from shared.runtime import Runtime
from shared.timeutil import VIETNAM, current_period, parse_period, utcnow

router = APIRouter(tags=["targets"])
IDENTIFIER = r"^[A-Za-z0-9._:\-]{1,128}$"
MONTH = r"^\d{4}-(0[1-9]|1[0-2])$"


def _metrics() -> list[str]:
    from services.indicators.rules.scoring import COMPONENTS_BY_ID
    from services.indicators.rules.targets import COUNTER_RATIOS, GROUP_CODES

    return ["total", *COMPONENTS_BY_ID, *sorted(GROUP_CODES), *COUNTER_RATIOS]


class Target(BaseModel):
    """A number a unit (or each unit of a subtree, at a level) is bound to."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, json_schema_extra={
        "anyOf": [{"required": ["min"], "properties": {"min": {"type": "number"}}},
                  {"required": ["max"], "properties": {"max": {"type": "number"}}}]})

    id: str = Field(pattern=IDENTIFIER)
    unit: str = Field(min_length=1, max_length=64, description="the unit whose score, or whose subtree, is bound")
    applies_to: Literal["unit", "subtree"] = Field("unit", description="the unit itself, or each unit of its subtree")
    level: str | None = Field(None, description="with subtree: only the units at this level (e.g. COMMUNE)")
    metric: str = Field(description="a component id (its ratio, %), total (points), a group code (points), or a "
                                    "counter ratio (e.g. late_without_apology, % of late dossiers)",
                        json_schema_extra={"enum": _metrics()})
    min: float | None = None
    max: float | None = None
    label: str | None = Field(None, max_length=500)
    field: str | None = Field(None, min_length=1, max_length=64,
                              description="a lĩnh vực code: the metric over the dossiers of the field's procedures "
                                          "(components 2.1, 2.2, 3.3 and the counter ratios counted per procedure)")
    from_: str | None = Field(None, alias="from", pattern=MONTH, description="first month it binds")
    until: str | None = Field(None, pattern=MONTH, description="last month it binds")
    period: Literal["month", "quarter", "year"] = Field("month", description="the period whose status is watched")
    warn: Literal["projected", "value"] = Field(
        "projected", description="at risk when the value or its projection to the period's end is below (projected), "
                                 "or only when the value is (value)")

    @field_validator("level")
    @classmethod
    def _level(cls, value: str | None) -> str | None:
        return value.upper() if value else None

    @model_validator(mode="after")
    def _consistent(self) -> Target:
        if self.min is None and self.max is None:
            raise ValueError("a target needs min or max")
        if metric_kind(self.metric) is None:
            raise ValueError(f"unknown metric {self.metric!r}: a component id, total, a group code or a counter ratio")
        if self.level and self.applies_to != "subtree":
            raise ValueError("level filters a subtree: set applies_to to subtree")
        if self.from_ and self.until and self.until < self.from_:
            raise ValueError("until is before from")
        return self

    def stored(self) -> dict:
        return self.model_dump(by_alias=True, exclude_none=True)


class TargetStatus(BaseModel):
    id: str
    label: str | None
    metric: str
    min: float | None
    max: float | None
    scope: dict
    unit: str
    period: str
    value: float | None = Field(description="the metric now (None: nothing to measure yet)")
    projected: float | None = Field(description="the period's value if nothing changes: its open dossiers turning "
                                                "overdue by their due time")
    turning_overdue: int
    status: Literal["met", "at_risk", "missed"] = Field(
        description="met also while there is nothing to measure yet (value null)")


class UnitTargets(BaseModel):
    unit: str
    as_of: str
    targets: list[TargetStatus]


class Webhook(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=IDENTIFIER)
    url: str = Field(pattern=r"^https?://", max_length=2000)
    secret: str = Field(min_length=16, max_length=500, description="HMAC-SHA256 key of X-DVC766-Signature")
    events: list[Literal["target.at_risk", "target.missed", "target.met", "dossiers.due_soon",
                         "source.rejects"]] = Field(min_length=1)
    units: list[str] | None = Field(None, description="only notifications about these units and their subtrees")


class WebhookShown(BaseModel):
    id: str
    url: str
    events: list[str]
    units: list[str] | None


class Delivery(BaseModel):
    id: str = Field(description="X-DVC766-Delivery: the same on every retry")
    event: str
    state: Literal["pending", "delivered", "failed"]
    created_at: str
    attempts: int
    last_status: int | None
    last_error: str | None
    delivered_at: str | None
    next_attempt_at: str | None
    outcomes: list[dict]
    body: dict


class Deliveries(BaseModel):
    webhook: str
    items: list[Delivery]


class Saved(BaseModel):
    saved: int
    removed: int


def _runtime(request: Request) -> Runtime:
    return request.app.state.runtime


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(VIETNAM).isoformat(timespec="seconds") if value else None


async def _delete_others(apg, table: str, kept: list[str]) -> int:
    """``?mode=full``: remove the rows not in the new set; returns how many."""
    status = await apg.execute(f"DELETE FROM {table} WHERE NOT (id = ANY($1::text[]))", kept)
    return int(status.split()[-1])


@router.put("/v1/targets", response_model=Saved, summary="Define targets (upsert by id; ?mode=full replaces all)")
async def put_targets(request: Request, targets: list[Target] = Body(...), mode: Literal["upsert", "full"] = "upsert",
                      _: Principal = Depends(admin)):
    runtime = _runtime(request)
    for target in targets:
        if target.unit not in runtime.units:
            raise Problem(422, "unknown_unit", f"target {target.id}: unit {target.unit!r} is not in the unit tree")
        refusal = target.field and field_refusal(target.metric, runtime.settings.policy.online_ratio_denominator)
        if refusal:
            raise Problem(422, "no_field_value", f"target {target.id}: field {target.field!r}: {refusal}")
    async with runtime.engine.begin() as conn:
        apg = await driver_connection(conn)
        removed = await _delete_others(apg, "targets", [t.id for t in targets]) if mode == "full" else 0
        await apg.executemany(
            """INSERT INTO targets (id, definition, updated_at) VALUES ($1, $2::jsonb, now())
               ON CONFLICT (id) DO UPDATE SET definition = EXCLUDED.definition, updated_at = now()""",
            [(t.id, orjson.dumps(t.stored()).decode()) for t in targets],
        )
    return Saved(saved=len(targets), removed=removed)


@router.get("/v1/targets", response_model=list[Target], response_model_by_alias=True,
            response_model_exclude_none=True, summary="All targets")
async def get_targets(request: Request, _: Principal = Depends(reader)):
    async with _runtime(request).engine.connect() as conn:
        apg = await driver_connection(conn)
        rows = await apg.fetch("SELECT definition FROM targets ORDER BY id")
    return [Target.model_validate(dict(r["definition"])) for r in rows]


@router.get("/v1/units/{unit_code}/targets", response_model=UnitTargets,
            summary="Each target binding a unit: value, projection to the period's end, status")
async def unit_targets(request: Request, _: Annotated[Principal, Depends(reader)], unit: PathUnit,
                       period: OptionalPeriod):
    runtime = _runtime(request)
    unit_code = unit.code
    now = utcnow()
    chosen = period
    async with runtime.engine.connect() as conn:
        apg = await driver_connection(conn)
        targets = await load_targets(apg)
        wanted = [(t, chosen or parse_period(current_period(now, t.period))) for t in targets
                  if runtime.units.is_within(unit_code, [t.unit])]
        results = await evaluate(runtime, apg, wanted, now, only_unit=unit_code)
    return UnitTargets(unit=unit_code, as_of=_iso(now), targets=[TargetStatus(**r.as_dict()) for r in results])


@router.put("/v1/webhooks", response_model=Saved, summary="Register webhooks (upsert by id; ?mode=full replaces all)")
async def put_webhooks(request: Request, webhooks: list[Webhook] = Body(...),
                       mode: Literal["upsert", "full"] = "upsert", _: Principal = Depends(admin)):
    runtime = _runtime(request)
    for hook in webhooks:
        for unit in hook.units or ():
            if unit not in runtime.units:
                raise Problem(422, "unknown_unit", f"webhook {hook.id}: unit {unit!r} is not in the unit tree")
    async with runtime.engine.begin() as conn:
        apg = await driver_connection(conn)
        removed = await _delete_others(apg, "webhooks", [h.id for h in webhooks]) if mode == "full" else 0
        await apg.executemany(
            """INSERT INTO webhooks (id, url, secret, events, units, updated_at) VALUES ($1, $2, $3, $4::jsonb, $5::jsonb, now())
               ON CONFLICT (id) DO UPDATE SET url = EXCLUDED.url, secret = EXCLUDED.secret, events = EXCLUDED.events,
                   units = EXCLUDED.units, updated_at = now()""",
            [(h.id, h.url, h.secret, orjson.dumps(sorted(set(h.events))).decode(),
              orjson.dumps(h.units).decode() if h.units else None) for h in webhooks],
        )
    return Saved(saved=len(webhooks), removed=removed)


@router.get("/v1/webhooks", response_model=list[WebhookShown], summary="Registered webhooks (secrets not shown)")
async def get_webhooks(request: Request, _: Principal = Depends(admin)):
    async with _runtime(request).engine.connect() as conn:
        apg = await driver_connection(conn)
        rows = await apg.fetch("SELECT id, url, events, units FROM webhooks ORDER BY id")
    return [WebhookShown(id=r["id"], url=r["url"], events=list(r["events"]),
                         units=list(r["units"]) if r["units"] else None) for r in rows]


@router.get("/v1/webhooks/{webhook_id}/deliveries", response_model=Deliveries,
            summary="A webhook's deliveries, newest first, with every attempt's outcome")
async def get_deliveries(request: Request, webhook_id: str,
                         state: Literal["pending", "delivered", "failed"] | None = None,
                         event: str | None = Query(None, description="only this event"),
                         limit: int = Query(100, ge=1, le=1000), _: Principal = Depends(admin)):
    async with _runtime(request).engine.connect() as conn:
        apg = await driver_connection(conn)
        if not await apg.fetchval("SELECT EXISTS (SELECT 1 FROM webhooks WHERE id = $1)", webhook_id):
            raise Problem(404, "unknown_webhook", f"no webhook {webhook_id!r}")
        rows = await apg.fetch(
            """SELECT * FROM webhook_deliveries WHERE webhook_id = $1 AND ($2::text IS NULL OR state = $2)
                 AND ($3::text IS NULL OR event = $3)
               ORDER BY created_at DESC, id LIMIT $4""",
            webhook_id, state, event, limit,
        )
    return Deliveries(webhook=webhook_id, items=[
        Delivery(id=r["id"], event=r["event"], state=r["state"], created_at=_iso(r["created_at"]),
                 attempts=r["attempts"], last_status=r["last_status"], last_error=r["last_error"],
                 delivered_at=_iso(r["delivered_at"]), next_attempt_at=_iso(r["next_attempt_at"]),
                 outcomes=list(r["outcomes"]), body=orjson.loads(r["body"])) for r in rows])


__all__ = ["router", "EVENTS", "target_of"]
