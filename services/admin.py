"""Admin endpoints: the unit tree."""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Literal

import asyncpg
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from services.api.schemas import UnitInfo
from services.indicators.cards import feeds_moved
from services.openapi import request_body
from shared.auth import Principal, admin, reader
from shared.problems import Problem
from shared.runtime import Runtime, upsert_units
from shared.units import LEVELS, NO, YES, load_units_text

router = APIRouter(tags=["admin"])


class UnitIn(BaseModel):
    code: str = Field(min_length=1, max_length=64)
    name: str | None = Field(None, description="default: the code")
    level: Literal[LEVELS]
    parent: str | None = None
    identifier: str | None = None
    e_certified_copy: bool | Literal[YES + NO] | None = Field(None, description="a commune offers electronic certified copies (4.3); "
                                                            "CSV: yes/no, true/false, 1/0")


class UnitsWritten(BaseModel):
    upserted: int
    units: int = Field(description="units in the tree now")


class ListedUnit(UnitInfo):
    e_certified_copy: bool | None


class Units(BaseModel):
    items: list[ListedUnit]


UNITS_BODY = request_body(
    Annotated[list[UnitIn], Field(min_length=1)], description="a JSON array of units, or CSV (text/csv) with the same "
    "columns; each code once",
    more={"text/csv": {"schema": {"type": "string", "description": "a header line: code,name,level,parent,"
                                                                  "identifier[,e_certified_copy]; a unit a line"}}})


@router.put("/v1/units", response_model=UnitsWritten, openapi_extra=UNITS_BODY,
            summary="Add or update units (JSON array or CSV with code, name, level, parent, identifier)")
async def put_units(request: Request, _: Annotated[Principal, Depends(admin)]):
    runtime: Runtime = request.app.state.runtime
    body = (await request.body()).decode("utf-8", errors="replace")
    try:
        units = load_units_text(body, filename=".json" if "json" in request.headers.get("content-type", "") else "")
    except (ValueError, KeyError) as exc:
        raise Problem(422, "bad_units", str(exc)) from exc
    if not units:
        raise Problem(400, "empty_batch", "the body holds no units")
    twice = sorted(code for code, n in Counter(u.code for u in units).items() if n > 1)
    if twice:
        raise Problem(422, "bad_units", f"units listed more than once: {', '.join(twice)}")
    try:
        count = await upsert_units(runtime.engine, units)
    except asyncpg.UniqueViolationError as exc:  # the only unique column besides the code
        raise Problem(422, "bad_units", "an identifier is listed twice or held by another unit") from exc
    await runtime.reload_units()
    await feeds_moved(runtime)  # names, parents and the e-certified-copy offer are in every card
    return {"upserted": count, "units": len(runtime.units)}


@router.get("/v1/units", response_model=Units, summary="The unit tree")
async def get_units(request: Request, _: Annotated[Principal, Depends(reader)]):
    runtime: Runtime = request.app.state.runtime
    return {"items": [u.as_dict() | {"e_certified_copy": u.e_certified_copy} for u in runtime.units.units.values()]}
