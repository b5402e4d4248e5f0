"""The query API the national portal pulls from: scores, rankings, drill-down.

Scores and league tables are read from the score cards the indicators side keeps current
(services/indicators/cards.py), sent with an ETag (``If-None-Match`` gets a 304) and a
``Cache-Control`` max-age of ``score_max_age_seconds``.
"""

from __future__ import annotations

from typing import Annotated

import orjson
from cachetools import LRUCache
from fastapi import APIRouter, Depends, Query, Request, Response

from services.api.params import (
    Layout, ParentUnit, PathUnit, QueryLayout, QueryPeriod, decode_cursor, encode_cursor, known_unit,
)
from services.api.queries import FLAG_CONDITIONS, dossiers_behind
from services.api.schemas import FlaggedDossiers, LeagueTable, ScoreDocument
from services.indicators.cards import etag_of, read_card, read_summaries
from shared.auth import Principal, reader
from shared.db.raw import driver_connection
from shared.problems import Problem
from shared.runtime import Runtime
from shared.statuses import STATUS_NAMES_VI
from shared.timeutil import Period, utcnow

router = APIRouter(tags=["scores"])
GROUP_CODES = ("CKMB", "TDGQ", "CLGQ", "TTTT", "MDSH", "MDHL")
Reader = Annotated[Principal, Depends(reader)]
SORTS = [sign + key for key in ("total", "code", *GROUP_CODES) for sign in ("", "-", "+")]


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 §13.1.2: ``*`` or any listed tag, compared weakly (W/ prefixes ignored)."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in if_none_match.split(","))


def cacheable(request: Request, body: bytes, etag: str | None = None) -> Response:
    """JSON bytes with their ETag and how long they may be reused (by the reader's key: ``Vary``)."""
    etag = etag or etag_of(body)
    max_age = request.app.state.runtime.settings.score_max_age_seconds
    headers = {"etag": etag, "cache-control": f"public, max-age={max_age}", "vary": "Authorization"}
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


@router.get("/v1/scores/{unit_code}", response_model=ScoreDocument,
            summary="Real-time QĐ 766 scores of a unit (its subtree for a parent)")
async def get_scores(request: Request, who: Reader, unit: PathUnit, period: QueryPeriod, layout: QueryLayout):
    card = await read_card(request.app.state.runtime, unit.code, period.key, layout)
    return cacheable(request, card.body, card.etag)


async def score_document(request: Request, unit_code: str, period: Period, layout: Layout = "portal") -> dict:
    """The body of ``GET /v1/scores/{unit}`` as a dict, from the same card: the pages, the Excel export and
    the history show exactly the API's numbers."""
    runtime: Runtime = request.app.state.runtime
    unit = known_unit(runtime, unit_code)
    return (await read_card(runtime, unit.code, period.key, layout)).as_dict()


async def league_table(request: Request, parent: str, period: Period) -> list[dict]:
    """The rows of ``GET /v1/scores?parent=…&sort=-total`` (the parent's direct children), ranked."""
    runtime: Runtime = request.app.state.runtime
    known_unit(runtime, parent)
    return [{**row, "rank": rank} for rank, row in enumerate(await _ranked(runtime, parent, period), start=1)]


def _members(runtime: Runtime, parent: str, level: str | None) -> list[str]:
    tree = runtime.units
    return tree.descendants(parent, level.upper()) if level else list(tree.children.get(parent, []))


async def _ranked(runtime: Runtime, parent: str, period: Period, level: str | None = None,
                  key_name: str = "total", descending: bool = True) -> list[dict]:
    members = _members(runtime, parent, level)
    return _order(members, await read_summaries(runtime, members, period.key), key_name, descending)


def _order(members: list[str], summaries: dict[str, bytes], key_name: str, descending: bool) -> list[dict]:
    rows = [orjson.loads(summaries[code]) for code in members if code in summaries]
    if key_name == "total":
        rows.sort(key=lambda r: (r["total"], r["unit"]["code"]), reverse=descending)
    elif key_name == "code":
        rows.sort(key=lambda r: r["unit"]["code"], reverse=descending)
    else:
        group = key_name.upper()
        rows.sort(key=lambda r: (r["groups"][group], r["unit"]["code"]), reverse=descending)
    return rows


# League-table pages already encoded, by request: (its rows' summaries, body, ETag). A page is a function
# of its request and of those summaries alone, so one is reused only when every summary read now is the
# same bytes: the cards are still read on every request, and a page never outlives a change.
_PAGES: LRUCache = LRUCache(maxsize=64)


@router.get("/v1/scores", response_model=LeagueTable,
            summary="League table: the units under a parent with group and total scores")
async def list_scores(
    request: Request,
    who: Reader,
    parent: ParentUnit,
    period: QueryPeriod,
    level: str | None = Query(None, description="only descendants at this level; default: direct children"),
    sort: str = Query("-total", description="total, a group code (TDGQ…) or code; '-' for descending",
                      json_schema_extra={"enum": SORTS}),
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = Query(None),
):
    runtime: Runtime = request.app.state.runtime
    descending = sort.startswith("-")
    key_name = sort.lstrip("-+")
    if key_name not in ("total", "code") and key_name.upper() not in GROUP_CODES:
        raise Problem(400, "bad_sort", "sort by total, code or a group code (CKMB, TDGQ, CLGQ, TTTT, MDSH, MDHL)")
    position = decode_cursor(cursor) or "0"
    if not position.isdigit():
        raise Problem(400, "bad_cursor", "cursor is not one this API returned")
    start = int(position)
    members = _members(runtime, parent.code, level)
    summaries = await read_summaries(runtime, members, period.key)
    page = (parent.code, period.key, tuple(members), key_name, descending, start, limit)
    kept = _PAGES.get(page)
    if kept is not None and kept[0] == summaries:
        return cacheable(request, kept[1], kept[2])
    rows = _order(members, summaries, key_name, descending)
    items = [{**row, "rank": rank} for rank, row in enumerate(rows[start : start + limit], start=start + 1)]
    next_cursor = encode_cursor(str(start + limit)) if start + limit < len(rows) else None
    body = orjson.dumps({"parent": parent.code, "period": period.key, "items": items, "next_cursor": next_cursor,
                         "count": len(rows)})
    etag = etag_of(body)
    _PAGES[page] = (summaries, body, etag)
    return cacheable(request, body, etag)


@router.get("/v1/units/{unit_code}/dossiers", response_model=FlaggedDossiers, response_model_exclude_unset=True,
            summary="Drill-down: the dossiers behind a penalty")
async def list_dossiers(
    request: Request,
    _: Reader,
    unit: PathUnit,
    period: QueryPeriod,
    flag: str = Query("overdue", json_schema_extra={"enum": list(FLAG_CONDITIONS)},
                      description="overdue, two_plus_supplements, overdue_step, open_overdue, not_online, "
                                  "input_gaps (counted although its input lacked something; see flags)"),
    limit: int = Query(100, ge=1, le=1000),
    cursor: str | None = Query(None),
):
    runtime: Runtime = request.app.state.runtime
    if flag not in FLAG_CONDITIONS:
        raise Problem(400, "bad_flag", f"flag must be one of {', '.join(FLAG_CONDITIONS)}")
    async with runtime.engine.connect() as conn:
        apg = await driver_connection(conn)
        items = await dossiers_behind(
            apg, runtime.units.subtree(unit.code), period, flag, now=utcnow(),
            after=decode_cursor(cursor), limit=limit,
        )
    for item in items:
        item["status_name"] = STATUS_NAMES_VI.get(item["status"])
    next_cursor = encode_cursor(items[-1]["dossier_code"]) if len(items) == limit else None
    return {"unit": unit.code, "period": period.key, "flag": flag, "items": items, "next_cursor": next_cursor}
