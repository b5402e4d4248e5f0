"""The non-dossier feeds (events.md §5): procedure catalogue, feedback (PAKN), reported totals.

Every item of a batch is checked on its own: a bad one comes back with its index and a
machine-readable reason and never stops the good ones.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request

from services.api.params import QueryUnit
from services.api.schemas import (
    Catalogue,
    CatalogueWritten,
    FeedbackIn,
    FeedbackWritten,
    ProcedureIn,
    ReportedTotalIn,
    TotalsWritten,
)
from services.indicators.cards import counters_moved, feeds_moved
from services.indicators.engine import ApplyResult, IndicatorEngine
from services.indicators.score_context import catalogue_as_of
from services.indicators.rules.catalogue import ONLINE_LEVELS
from services.indicators.rules.feedback import KINDS, RATINGS
from shared.auth import Principal, admin, reader, source_or_admin
from shared.db.raw import driver_connection
from shared.events import parse_timestamp
from shared.problems import Problem
from shared.runtime import Runtime
from services.openapi import batch, request_body
from shared.timeutil import PERIOD_PATTERN, VIETNAM, BadPeriod, parse_period, utcnow

router = APIRouter(tags=["feeds"])

BOOL_FIELDS = ("fee_required", "for_individuals", "result_required", "complete_parts")
DATE_FIELDS = ("decision_date", "legal_basis_effective_date", "made_public_date")
TEXT_FIELDS = ("name", "field_code", "field_name")
INT, BIGINT = 2**31 - 1, 2**63 - 1  # the columns' integer and bigint


class Bad(Exception):
    def __init__(self, reason: str, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.reason, self.detail, self.field = reason, detail, field

    def as_dict(self, index: int) -> dict:
        out = {"index": index, "status": "rejected", "reason": self.reason, "detail": self.detail}
        if self.field:
            out["field"] = self.field
        return out


async def _json_array(request: Request) -> list:
    body = await request.body()
    if len(body) > request.app.state.runtime.settings.max_body_bytes:
        raise Problem(413, "too_large", "request body is over the limit")
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Problem(400, "invalid_json", f"body is not JSON: {exc}") from exc
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not value:
        raise Problem(400, "empty_batch", "the body must be a non-empty JSON array")
    return value


def _text(item: dict, name: str, *, required: bool = True, max_len: int = 64) -> str | None:
    value = item.get(name)
    if value is None or value == "":
        if required:
            raise Bad("missing_field", f"{name} is required", name)
        return None
    if not isinstance(value, str) or len(value) > max_len:
        raise Bad("bad_value", f"{name} must be a string of at most {max_len} characters", name)
    return value


def _instant(item: dict, name: str, *, required: bool) -> dt.datetime | None:
    value = item.get(name)
    if value is None:
        if required:
            raise Bad("missing_field", f"{name} is required", name)
        return None
    parsed = parse_timestamp(value, name)
    if not isinstance(parsed, dt.datetime):
        raise Bad(parsed.reason, parsed.detail, name)  # type: ignore[union-attr]
    return parsed


def _date(item: dict, name: str) -> dt.date | None:
    value = item.get(name)
    if value in (None, ""):
        return None
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError as exc:
        raise Bad("bad_date", f"{name} must be a date (YYYY-MM-DD)", name) from exc


def _valid_from(value: Any) -> dt.datetime:
    if isinstance(value, str) and len(value) == 10:
        try:
            day = dt.date.fromisoformat(value)
        except ValueError as exc:
            raise Bad("bad_date", "valid_from must be a date or an RFC 3339 time", "valid_from") from exc
        return dt.datetime(day.year, day.month, day.day, tzinfo=VIETNAM)
    parsed = parse_timestamp(value, "valid_from")
    if not isinstance(parsed, dt.datetime):
        raise Bad(parsed.reason, parsed.detail, "valid_from")  # type: ignore[union-attr]
    return parsed


def catalogue_row(item: Any, runtime: Runtime, default_valid_from: dt.datetime) -> tuple:
    if not isinstance(item, dict):
        raise Bad("not_an_object", "each procedure must be a JSON object")
    unit = _text(item, "unit_code")
    if unit not in runtime.units:
        raise Bad("unknown_unit", f"unit {unit!r} is not in the unit tree", "unit_code")
    procedure = _text(item, "procedure_code")
    level = item.get("online_level") or "none"
    if level not in ONLINE_LEVELS:
        raise Bad("bad_value", f"online_level must be one of {', '.join(ONLINE_LEVELS)}", "online_level")
    services = item.get("online_services", 0) or 0
    if isinstance(services, float) and services.is_integer():
        services = int(services)
    if not isinstance(services, int) or isinstance(services, bool) or not 0 <= services <= INT:
        raise Bad("bad_value", "online_services must be a non-negative integer", "online_services")
    legal = item.get("legal_days")
    if legal is not None and (isinstance(legal, bool) or not isinstance(legal, (int, float)) or legal < 0):
        raise Bad("bad_value", "legal_days must be a non-negative number of working days", "legal_days")
    flags = {}
    for name in BOOL_FIELDS:
        value = item.get(name)
        if value is not None and not isinstance(value, bool):
            raise Bad("bad_value", f"{name} must be true or false", name)
        flags[name] = value
    texts = {name: _text(item, name, required=False, max_len=1000) for name in TEXT_FIELDS}
    dates = {name: _date(item, name) for name in DATE_FIELDS}
    valid_from = _valid_from(item["valid_from"]) if item.get("valid_from") else default_valid_from
    return (
        unit, procedure, valid_from, texts["name"], texts["field_code"], texts["field_name"], level, services,
        bool(flags["fee_required"]), bool(flags["for_individuals"]), flags["result_required"], legal,
        dates["decision_date"], dates["legal_basis_effective_date"], dates["made_public_date"],
        flags["complete_parts"], False,
    )


INSERT_PROCEDURES = """
    INSERT INTO procedures (unit_code, procedure_code, valid_from, name, field_code, field_name, online_level,
        online_services, fee_required, for_individuals, result_required, legal_days, decision_date,
        legal_basis_effective_date, made_public_date, complete_parts, removed)
    SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::text[],
        $7::text[], $8::int[], $9::boolean[], $10::boolean[], $11::boolean[], $12::numeric[], $13::date[],
        $14::date[], $15::date[], $16::boolean[], $17::boolean[])
    ON CONFLICT (unit_code, procedure_code, valid_from) DO UPDATE SET
        name = EXCLUDED.name, field_code = EXCLUDED.field_code, field_name = EXCLUDED.field_name,
        online_level = EXCLUDED.online_level, online_services = EXCLUDED.online_services,
        fee_required = EXCLUDED.fee_required, for_individuals = EXCLUDED.for_individuals,
        result_required = EXCLUDED.result_required, legal_days = EXCLUDED.legal_days,
        decision_date = EXCLUDED.decision_date, legal_basis_effective_date = EXCLUDED.legal_basis_effective_date,
        made_public_date = EXCLUDED.made_public_date, complete_parts = EXCLUDED.complete_parts,
        removed = EXCLUDED.removed, loaded_at = now()
"""


async def store_catalogue(apg, rows: list[tuple], *, full: bool, valid_from: dt.datetime) -> int:
    """Write catalogue versions; a full replace also writes tombstones for what it no longer lists."""
    if full:
        current = await catalogue_as_of(apg, [r["code"] for r in await apg.fetch("SELECT code FROM units")],
                                        valid_from + dt.timedelta(microseconds=1))
        listed = {(r[0], r[1]) for r in rows}
        for unit, procedure in sorted(set(current) - listed):
            rows.append((unit, procedure, valid_from, None, None, None, "none", 0, False, False, None, None,
                         None, None, None, None, True))
    if rows:
        await apg.execute(INSERT_PROCEDURES, *[list(col) for col in zip(*rows)])
    return len(rows)


async def recompute_without_due_time(runtime: Runtime, apg, pairs: set[tuple[str, str]]) -> ApplyResult:
    """Dossiers judged by the catalogue's legal time (no due time) are re-derived when it changes."""
    if not pairs:
        return ApplyResult()
    units, procedures = zip(*pairs)
    codes = await apg.fetch(
        """SELECT dossier_code FROM dossiers WHERE due_at IS NULL AND received_at IS NOT NULL
           AND (unit_code, procedure_code) IN (SELECT * FROM unnest($1::text[], $2::text[]))""",
        list(units), list(procedures),
    )
    if not codes:
        return ApplyResult()
    engine = IndicatorEngine(runtime.calendar, runtime.settings.policy)
    return await engine.recompute(apg, [r["dossier_code"] for r in codes], utcnow())


def batch_of(model: type, what: str) -> dict:
    """The body of a feed: a JSON array of items (or one item), each checked on its own."""
    return request_body(batch(model), description=f"a JSON array of {what} (or a single one); each is answered "
                        "in results with its index, a bad one with a machine-readable reason")


@router.put("/v1/catalog/procedures", response_model=CatalogueWritten, response_model_exclude_unset=True,
            summary="Load the procedure catalogue (upsert, or full replace)",
            openapi_extra=batch_of(ProcedureIn, "procedures"))
async def put_procedures(
    request: Request,
    _: Annotated[Principal, Depends(admin)],
    mode: str = Query("upsert", description="upsert (default) or full: procedures not listed are removed",
                      json_schema_extra={"enum": ["upsert", "full"]}),
    valid_from: str | None = Query(None, description="version start for items without their own (default now): "
                                                     "a date or an RFC 3339 time with offset, from 2000 up to 2100",
                                   json_schema_extra={"anyOf": [{"type": "string", "format": "date"},
                                                                {"type": "string", "format": "date-time"}]}),
):
    runtime: Runtime = request.app.state.runtime
    if mode not in ("upsert", "full"):
        raise Problem(400, "bad_mode", "mode must be upsert or full")
    try:
        default_from = _valid_from(valid_from) if valid_from else utcnow()
    except Bad as exc:
        raise Problem(400, exc.reason, exc.detail) from exc
    items = await _json_array(request)
    rows, results = [], []
    for index, item in enumerate(items):
        try:
            row = catalogue_row(item, runtime, default_from)
        except Bad as exc:
            results.append(exc.as_dict(index))
            continue
        rows.append(row)
        results.append({"index": index, "status": "accepted", "unit_code": row[0], "procedure_code": row[1]})
    if mode == "full" and len(rows) != len(items):
        raise Problem(422, "bad_catalogue", "a full replace must be valid as a whole", results=results)
    if not rows:
        raise Problem(422, "all_rejected", "every procedure was rejected", results=results)
    async with runtime.engine.begin() as conn:
        apg = await driver_connection(conn)
        # A version listed twice: the last stands (one statement may not write a row twice). A new list: a full
        # replace appends its tombstones, which are not items of this request.
        versions = list({(r[0], r[1], r[2]): r for r in rows}.values())
        written = await store_catalogue(apg, versions, full=mode == "full", valid_from=default_from)
        recomputed = await recompute_without_due_time(runtime, apg, {(r[0], r[1]) for r in rows})
    await counters_moved(runtime, recomputed.touched)
    await feeds_moved(runtime, {r[0] for r in rows} if mode == "upsert" else None)
    return {"accepted": len(rows), "rejected": len(items) - len(rows), "versions_written": written,
            "dossiers_recomputed": recomputed.dossiers, "results": results}


@router.get("/v1/catalog/procedures", response_model=Catalogue,
            summary="The catalogue of a unit's subtree as it stood at an instant")
async def get_procedures(
    request: Request,
    _: Annotated[Principal, Depends(reader)],
    unit: QueryUnit,
    as_of: str | None = Query(None, description="RFC 3339 time or a period (its end); default now",
                              json_schema_extra={"anyOf": [{"type": "string", "pattern": PERIOD_PATTERN},
                                                          {"type": "string", "format": "date-time"}]}),
):
    runtime: Runtime = request.app.state.runtime
    instant = utcnow()
    if as_of:
        try:
            instant = parse_period(as_of).end
        except BadPeriod:
            parsed = parse_timestamp(as_of, "as_of")
            if not isinstance(parsed, dt.datetime):
                raise Problem(400, "bad_as_of", "as_of must be a period or an RFC 3339 time with offset") from None
            instant = parsed
    async with runtime.engine.connect() as conn:
        apg = await driver_connection(conn)
        entries = await catalogue_as_of(apg, list(runtime.units.subtree(unit.code)), instant)
    items = []
    for entry in sorted(entries.values(), key=lambda e: (e.unit_code, e.procedure_code)):
        d = {k: v for k, v in entry.__dict__.items() if k != "removed"}
        items.append({k: (v.isoformat() if isinstance(v, (dt.date, dt.datetime)) else v) for k, v in d.items()})
    return {"unit": unit.code, "as_of": instant.astimezone(VIETNAM).isoformat(), "count": len(items), "items": items}


def feedback_row(item: Any, runtime: Runtime, allowed: tuple[str, ...] | None) -> tuple:
    if not isinstance(item, dict):
        raise Bad("not_an_object", "each feedback event must be a JSON object")
    feedback_id = _text(item, "feedback_id", max_len=128)
    unit = _text(item, "unit_code")
    if unit not in runtime.units:
        raise Bad("unknown_unit", f"unit {unit!r} is not in the unit tree", "unit_code")
    if allowed is not None and not runtime.units.is_within(unit, allowed):
        raise Bad("unit_not_allowed", f"this key may not post feedback for unit {unit!r}", "unit_code")
    kind = _text(item, "kind", max_len=16)
    if kind not in KINDS:
        raise Bad("bad_kind", f"kind must be one of {', '.join(KINDS)}", "kind")
    rating = item.get("rating")
    if rating is not None and rating not in RATINGS:
        raise Bad("bad_rating", f"rating must be one of {', '.join(RATINGS)}", "rating")
    if kind == "rated" and rating is None:
        raise Bad("missing_field", "a rated event carries its rating", "rating")
    return (feedback_id, unit, _text(item, "dossier_code", required=False), kind,
            _instant(item, "occurred_at", required=True), _instant(item, "due_at", required=False), rating)


@router.post("/v1/feedback", response_model=FeedbackWritten, response_model_exclude_unset=True,
             summary="Post feedback (PAKN) events: received, handled, rated, recomplained",
             openapi_extra=batch_of(FeedbackIn, "feedback events"))
async def post_feedback(request: Request, who: Annotated[Principal, Depends(source_or_admin)]):
    runtime: Runtime = request.app.state.runtime
    items = await _json_array(request)
    if len(items) > runtime.settings.max_batch_events:
        raise Problem(413, "too_many_events", f"at most {runtime.settings.max_batch_events} events per request")
    allowed = None if who.role == "admin" else who.units
    rows, results = [], []
    for index, item in enumerate(items):
        try:
            rows.append((index, feedback_row(item, runtime, allowed)))
        except Bad as exc:
            results.append(exc.as_dict(index))
    accepted = 0
    if rows:
        async with runtime.engine.begin() as conn:
            apg = await driver_connection(conn)
            cols = list(zip(*(r for _, r in rows)))
            inserted = await apg.fetch(
                """INSERT INTO feedback_events (feedback_id, unit_code, dossier_code, kind, occurred_at, due_at, rating)
                   SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[],
                       $6::timestamptz[], $7::text[])
                   ON CONFLICT (feedback_id, kind, occurred_at) DO NOTHING
                   RETURNING feedback_id, kind, occurred_at""",
                *[list(c) for c in cols],
            )
        await feeds_moved(runtime, {row[1] for _, row in rows} | await _dossier_units(runtime, rows))
        new = {(r["feedback_id"], r["kind"], r["occurred_at"]) for r in inserted}
        for index, row in rows:
            status = "accepted" if (row[0], row[3], row[4]) in new else "duplicate"
            accepted += status == "accepted"
            results.append({"index": index, "status": status, "feedback_id": row[0]})
    results.sort(key=lambda r: r["index"])
    if not rows:
        raise Problem(422, "all_rejected", "every feedback event was rejected", results=results)
    return {"accepted": accepted, "duplicates": len(rows) - accepted, "rejected": len(items) - len(rows),
            "results": results}


@router.put("/v1/reported-totals", response_model=TotalsWritten, response_model_exclude_unset=True,
            summary="Received counts per unit and period from the national reporting system",
            openapi_extra=batch_of(ReportedTotalIn, "totals"))
async def put_reported_totals(request: Request, _: Annotated[Principal, Depends(admin)]):
    runtime: Runtime = request.app.state.runtime
    items = await _json_array(request)
    rows, results = [], []
    for index, item in enumerate(items):
        try:
            if not isinstance(item, dict):
                raise Bad("not_an_object", "each total must be a JSON object")
            unit = _text(item, "unit_code")
            if unit not in runtime.units:
                raise Bad("unknown_unit", f"unit {unit!r} is not in the unit tree", "unit_code")
            try:
                period = parse_period(str(item.get("period") or "")).key
            except BadPeriod as exc:
                raise Bad("bad_period", str(exc), "period") from exc
            received = item.get("received")
            if isinstance(received, float) and received.is_integer():
                received = int(received)  # 12.0 is the JSON number 12
            if not isinstance(received, int) or isinstance(received, bool) or not 0 <= received <= BIGINT:
                raise Bad("bad_value", "received must be a non-negative integer", "received")
        except Bad as exc:
            results.append(exc.as_dict(index))
            continue
        rows.append((unit, period, received))
        results.append({"index": index, "status": "accepted"})
    if not rows:
        raise Problem(422, "all_rejected", "every total was rejected", results=results)
    accepted = len(rows)
    rows = list({(unit, period): (unit, period, n) for unit, period, n in rows}.values())  # listed twice: the last
    async with runtime.engine.begin() as conn:
        apg = await driver_connection(conn)
        await apg.execute(
            """INSERT INTO reported_totals (unit_code, period, received)
               SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
               ON CONFLICT (unit_code, period) DO UPDATE SET received = EXCLUDED.received, updated_at = now()""",
            *[list(c) for c in zip(*rows)],
        )
    await feeds_moved(runtime, {row[0] for row in rows})
    return {"accepted": accepted, "rejected": len(items) - accepted, "results": results}


async def _dossier_units(runtime: Runtime, rows: list[tuple[int, tuple]]) -> set[str]:
    """The units of the dossiers feedback complains about (their 5.3 counts the complaints)."""
    codes = sorted({row[2] for _, row in rows if row[2]})
    if not codes:
        return set()
    async with runtime.engine.connect() as conn:
        apg = await driver_connection(conn)
        found = await apg.fetch("SELECT DISTINCT unit_code FROM dossiers WHERE dossier_code = ANY($1::text[])", codes)
    return {r["unit_code"] for r in found}
