"""The query API the national portal pulls from: scores, rankings, drill-down."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import time
from typing import Literal

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response

from services.api.cache import Computed, ResponseCache, ScoreCache, etag_matches
from services.api.fastpath import response_key
from services.api.queries import (
    FLAG_CONDITIONS,
    ScorecardMemo,
    counters_view,
    dossiers_behind,
    policies_in_force,
    unit_counts,
)
from services.api.score_context import load_context
from services.indicators.rules.scoring import directive_counters
from shared.auth import Principal, reader
from shared.db.raw import driver_connection
from shared.problems import Problem
from shared.runtime import Runtime
from shared.statuses import STATUS_NAMES_VI
from shared.timeutil import VIETNAM, BadPeriod, Period, current_period, parse_period, utcnow

router = APIRouter(tags=["scores"])
Layout = Literal["portal", "decision"]


def _period(value: str | None) -> Period:
    try:
        return parse_period(value or current_period(utcnow()))
    except BadPeriod as exc:
        raise Problem(400, "bad_period", str(exc)) from exc


def _unit(runtime: Runtime, code: str):
    unit = runtime.units.get(code)
    if unit is None:
        raise Problem(404, "unknown_unit", f"unit {code!r} is not in the unit tree")
    return unit


def _encode_cursor(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str | None) -> str | None:
    if not cursor:
        return None
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except ValueError as exc:
        raise Problem(400, "bad_cursor", "cursor is not one this API returned") from exc


@router.get("/v1/scores/{unit_code}", summary="Real-time QĐ 766 scores of a unit (its subtree for a parent)")
async def get_scores(
    request: Request,
    unit_code: str,
    period: str | None = Query(None, description="2026-08, 2026-Q3 or 2026 (Vietnam time); default: this month"),
    layout: Layout = Query("portal", description="portal: six groups; decision: the decision's five"),
    who: Principal = Depends(reader),
):
    runtime: Runtime = request.app.state.runtime
    unit = _unit(runtime, unit_code)
    chosen = _period(period)
    cache = _cache(request)
    key = ("score", unit.code, chosen.key, layout)

    def compute():
        return _render_scores(runtime, _memo(request), unit, chosen, layout)

    async def refresh() -> tuple[bytes, int, float]:
        return await cache.refresh(key, runtime.data_version, compute)

    return _answer(request, who, await cache.get_entry(key, runtime.data_version, compute), refresh,
                   until=None if period else chosen.end)


async def score_document(request: Request, unit_code: str, period: Period, layout: Layout = "portal") -> dict:
    """The body of ``GET /v1/scores/{unit}`` as a dict, from the same computation (and cache): the pages,
    the Excel export and the history show exactly the API's numbers."""
    runtime: Runtime = request.app.state.runtime
    unit = _unit(runtime, unit_code)
    computed = await _cache(request).get_entry(
        ("score", unit.code, period.key, layout), runtime.data_version,
        lambda: _render_scores(runtime, _memo(request), unit, period, layout))
    return orjson.loads(computed.value)


async def league_table(request: Request, parent: str, period: Period) -> list[dict]:
    """The rows of ``GET /v1/scores?parent=…&sort=-total`` (the parent's direct children), ranked."""
    runtime: Runtime = request.app.state.runtime
    _unit(runtime, parent)
    computed = await _cache(request).get_entry(
        ("ranking", parent, period.key, "", "-total"), runtime.data_version,
        lambda: _ranking(runtime, _memo(request), parent, period, None, "total", True))
    return [{**row, "rank": rank} for rank, row in enumerate(computed.value, start=1)]


def _cache(request: Request) -> ScoreCache:
    state = request.app.state
    cache = getattr(state, "score_cache", None)
    if cache is None:
        cache = state.score_cache = ScoreCache(state.runtime.settings.score_cache_seconds)
    return cache


def _memo(request: Request) -> ScorecardMemo:
    state = request.app.state
    memo = getattr(state, "scorecards", None)
    if memo is None:
        memo = state.scorecards = ScorecardMemo(state.runtime.settings, state.runtime.calendar.seconds_per_day)
    return memo


def _responses(request: Request) -> ResponseCache:
    state = request.app.state
    responses = getattr(state, "responses", None)
    if responses is None:
        responses = state.responses = ResponseCache(state.runtime.settings.score_cache_seconds)
    return responses


def _answer(request: Request, who: Principal, computed: Computed, refresh, *, until: dt.datetime | None) -> Response:
    """The JSON bytes with an ETag (304 when the client has them), kept for the fast path
    (services/api/fastpath.py) under this exact path and query string for as long as the computation
    they come from is valid; ``until``: they also stop being the answer then (a default period ends)."""
    body, version, started = computed
    valid_until = None
    if until is not None:
        valid_until = time.monotonic() + (until - utcnow()).total_seconds()
    etag = _responses(request).store(
        response_key(request.scope["path"], request.scope["query_string"], who.units), version, started, body,
        route=request.scope["route"].path, refresh=refresh, valid_until=valid_until)
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers={"etag": etag.decode()})
    return Response(body, media_type="application/json", headers={"etag": etag.decode()})


async def _render_scores(runtime: Runtime, memo: ScorecardMemo, unit, chosen: Period, layout: str) -> bytes:
    subtree = runtime.units.subtree(unit.code)
    async with runtime.engine.connect() as conn:
        apg = await driver_connection(conn)
        per_unit = await unit_counts(apg, subtree, chosen.key)
        context = await load_context(apg, runtime.units, unit.code, chosen, now=utcnow(),
                                     policy=runtime.settings.policy, calendar=runtime.calendar, per_unit=per_unit)
    inputs = context.inputs_for(unit.code)
    counts = dict(inputs.counts)  # the subtree's counters
    card = memo.card(unit.code, chosen.key, layout, inputs)
    return orjson.dumps({
        "unit": unit.as_dict(),
        "period": chosen.key,
        "as_of": utcnow().astimezone(VIETNAM).isoformat(timespec="seconds"),
        **card.as_dict(),
        "counters": counters_view(counts, runtime.calendar.seconds_per_day),
        "policies": policies_in_force(runtime.settings),
    })


@router.get("/v1/scores", summary="League table: the units under a parent with group and total scores")
async def list_scores(
    request: Request,
    parent: str = Query(..., description="the parent unit, e.g. H44"),
    period: str | None = Query(None),
    level: str | None = Query(None, description="only descendants at this level; default: direct children"),
    sort: str = Query("-total", description="total, a group code (TDGQ…) or code; '-' for descending"),
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = Query(None),
    who: Principal = Depends(reader),
):
    runtime: Runtime = request.app.state.runtime
    _unit(runtime, parent)
    chosen = _period(period)
    descending = sort.startswith("-")
    key_name = sort.lstrip("-+")
    if key_name not in ("total", "code") and key_name.upper() not in {"CKMB", "TDGQ", "CLGQ", "TTTT", "MDSH", "MDHL"}:
        raise Problem(400, "bad_sort", "sort by total, code or a group code (CKMB, TDGQ, CLGQ, TTTT, MDSH, MDHL)")
    start = int(_decode_cursor(cursor) or 0)
    cache = _cache(request)
    key = ("ranking", parent, chosen.key, (level or "").upper(), sort)

    def compute():
        return _ranking(runtime, _memo(request), parent, chosen, level, key_name, descending)

    def page(computed: Computed) -> tuple[bytes, int, float]:
        rows = computed.value
        items = [{**row, "rank": rank} for rank, row in enumerate(rows[start : start + limit], start=start + 1)]
        next_cursor = _encode_cursor(str(start + limit)) if start + limit < len(rows) else None
        body = orjson.dumps({"parent": parent, "period": chosen.key, "items": items, "next_cursor": next_cursor,
                             "count": len(rows)})
        return body, computed.version, computed.started

    async def refresh() -> tuple[bytes, int, float]:
        return page(await cache.refresh(key, runtime.data_version, compute))

    return _answer(request, who, page(await cache.get_entry(key, runtime.data_version, compute)), refresh,
                   until=None if period else chosen.end)


# A ranking's scorecards are built in slices of about this many seconds, the event loop serving other
# requests in between (a province's 148 communes take ~35 ms of CPU when every card is rebuilt, which
# would otherwise stall every answer; reused cards cost microseconds and need no pause).
RANKING_SLICE_SECONDS = 0.002


async def _ranking(runtime: Runtime, memo: ScorecardMemo, parent: str, chosen: Period, level: str | None,
                   key_name: str, descending: bool) -> list[dict]:
    tree = runtime.units
    if level:
        members = tree.descendants(parent, level.upper())
    else:
        members = list(tree.children.get(parent, []))
    async with runtime.engine.connect() as conn:
        apg = await driver_connection(conn)
        per_unit = await unit_counts(apg, tree.subtree(parent), chosen.key)
        context = await load_context(apg, tree, parent, chosen, now=utcnow(), policy=runtime.settings.policy,
                                     calendar=runtime.calendar, per_unit=per_unit)
    rows = []
    slice_started = time.perf_counter()
    for code in members:
        if time.perf_counter() - slice_started > RANKING_SLICE_SECONDS:
            await asyncio.sleep(0)
            slice_started = time.perf_counter()
        inputs = context.inputs_for(code)
        counts = inputs.counts  # the subtree's counters
        card = memo.card(code, chosen.key, "portal", inputs)
        rows.append(
            {
                "unit": tree.units[code].as_dict(),
                "total": card.total,
                "rating": card.rating,
                "groups": {g["code"]: g["score"] for g in card.groups},
                "received": counts.get("received", 0),
                "directives": directive_counters(counts),
            }
        )
    if key_name == "total":
        key = lambda r: (r["total"], r["unit"]["code"])  # noqa: E731
    elif key_name == "code":
        key = lambda r: r["unit"]["code"]  # noqa: E731
    else:
        key = lambda r: (r["groups"][key_name.upper()], r["unit"]["code"])  # noqa: E731
    rows.sort(key=key, reverse=descending)
    return rows


@router.get("/v1/units/{unit_code}/dossiers", summary="Drill-down: the dossiers behind a penalty")
async def list_dossiers(
    request: Request,
    unit_code: str,
    period: str | None = Query(None),
    flag: str = Query("overdue", description="overdue, two_plus_supplements, overdue_step, open_overdue, not_online, "
                                             "input_gaps (counted although its input lacked something; see flags)"),
    limit: int = Query(100, ge=1, le=1000),
    cursor: str | None = Query(None),
    _: Principal = Depends(reader),
):
    runtime: Runtime = request.app.state.runtime
    unit = _unit(runtime, unit_code)
    chosen = _period(period)
    if flag not in FLAG_CONDITIONS:
        raise Problem(400, "bad_flag", f"flag must be one of {', '.join(FLAG_CONDITIONS)}")
    async with runtime.engine.connect() as conn:
        apg = await driver_connection(conn)
        items = await dossiers_behind(
            apg, runtime.units.subtree(unit.code), chosen, flag, now=utcnow(),
            after=_decode_cursor(cursor), limit=limit,
        )
    for item in items:
        item["status_name"] = STATUS_NAMES_VI.get(item["status"])
    next_cursor = _encode_cursor(items[-1]["dossier_code"]) if len(items) == limit else None
    return {"unit": unit.code, "period": chosen.key, "flag": flag, "items": items, "next_cursor": next_cursor}
