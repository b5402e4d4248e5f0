"""Admin endpoints: the unit tree."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from services.indicators.cards import feeds_moved
from shared.auth import Principal, admin, reader
from shared.problems import Problem
from shared.runtime import Runtime, upsert_units
from shared.units import load_units_text

router = APIRouter(tags=["admin"])


@router.put("/v1/units", summary="Add or update units (JSON array or CSV with code, name, level, parent, identifier)")
async def put_units(request: Request, _: Principal = Depends(admin)):
    runtime: Runtime = request.app.state.runtime
    body = (await request.body()).decode("utf-8", errors="replace")
    try:
        units = load_units_text(body, filename=".json" if "json" in request.headers.get("content-type", "") else "")
    except (ValueError, KeyError) as exc:
        raise Problem(422, "bad_units", str(exc)) from exc
    count = await upsert_units(runtime.engine, units)
    await runtime.reload_units()
    await feeds_moved(runtime)  # names, parents and the e-certified-copy offer are in every card
    return {"upserted": count, "units": len(runtime.units)}


@router.get("/v1/units", summary="The unit tree")
async def get_units(request: Request, _: Principal = Depends(reader)):
    runtime: Runtime = request.app.state.runtime
    return {"items": [u.as_dict() | {"e_certified_copy": u.e_certified_copy} for u in runtime.units.units.values()]}
