"""The one reading of the parameters routes share: a unit (in the path or the query), a period and a
layout, turned into values, or into the problem answer a client can act on (404 ``unknown_unit``, 400
``bad_period``). Routes take them as dependencies (``unit: PathUnit``, ``period: QueryPeriod``); code
that already holds the raw strings (the pages) calls :func:`known_unit` and :func:`chosen_period`."""

from __future__ import annotations

import base64
from typing import Annotated, Literal

from fastapi import Depends, Path, Query, Request

from shared.problems import Problem
from shared.runtime import Runtime
from shared.timeutil import PERIOD_OR_EMPTY_PATTERN, BadPeriod, Period, current_period, parse_period, utcnow
from shared.units import Unit

Layout = Literal["portal", "decision"]
PERIOD_HELP = "2026-08, 2026-Q3 or 2026 (Vietnam time); default: this month"


def known_unit(runtime: Runtime, code: str) -> Unit:
    unit = runtime.units.get(code)
    if unit is None:
        raise Problem(404, "unknown_unit", f"unit {code!r} is not in the unit tree")
    return unit


def chosen_period(value: str | None) -> Period:
    """The period a key names; none: this month."""
    try:
        return parse_period(value or current_period(utcnow()))
    except BadPeriod as exc:
        raise Problem(400, "bad_period", str(exc)) from exc


async def _path_unit(request: Request, unit_code: Annotated[str, Path(description="a unit code, e.g. H44.07")]) -> Unit:
    return known_unit(request.app.state.runtime, unit_code)


async def _query_unit(request: Request, unit: Annotated[str, Query(description="a unit code; its subtree is read")]) -> Unit:
    return known_unit(request.app.state.runtime, unit)


async def _optional_query_unit(
    request: Request,
    unit: Annotated[str | None, Query(description="only this unit and its subtree")] = None,
) -> Unit | None:
    return None if unit is None else known_unit(request.app.state.runtime, unit)


async def _parent_unit(request: Request, parent: Annotated[str, Query(description="the parent unit, e.g. H44")]) -> Unit:
    return known_unit(request.app.state.runtime, parent)


# The pattern documents the form; the route checks it itself, answering 400 bad_period.
PeriodText = Annotated[str | None, Query(description=PERIOD_HELP, json_schema_extra={"pattern": PERIOD_OR_EMPTY_PATTERN})]


async def _period(period: PeriodText = None) -> Period:
    return chosen_period(period)


async def _optional_period(
    period: Annotated[str | None, Query(description="2026-08, 2026-Q3 or 2026; default: each one's own "
                                                    "current period", json_schema_extra={"pattern": PERIOD_OR_EMPTY_PATTERN})]
    = None,
) -> Period | None:
    return chosen_period(period) if period else None


async def _layout(layout: Annotated[Layout, Query(description="portal: six groups; decision: the decision's five")]
            = "portal") -> Layout:
    return layout


# Coroutines, so FastAPI runs them on the event loop (a plain function would go to a worker thread on
# every request). Routes name these types.
PathUnit = Annotated[Unit, Depends(_path_unit)]
QueryUnit = Annotated[Unit, Depends(_query_unit)]
OptionalQueryUnit = Annotated[Unit | None, Depends(_optional_query_unit)]
ParentUnit = Annotated[Unit, Depends(_parent_unit)]
QueryPeriod = Annotated[Period, Depends(_period)]
OptionalPeriod = Annotated[Period | None, Depends(_optional_period)]
QueryLayout = Annotated[Layout, Depends(_layout)]


def encode_cursor(value: str) -> str:
    """A page's ``next_cursor``: the position after its last item, opaque to clients."""
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str:
    """The position a ``cursor`` names ("" for the first page)."""
    if not cursor:
        return ""
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except ValueError as exc:
        raise Problem(400, "bad_cursor", "cursor is not one this API returned") from exc
