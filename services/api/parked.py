"""``GET /v1/parked-dossiers``: dossiers whose events could not be applied, with the error (the apply's
dead letters; services/indicators/engine.py). They are out of the counters until applied again."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from services.api.params import OptionalQueryUnit
from shared.auth import Principal, reader
from shared.db.raw import driver_connection
from shared.runtime import Runtime

router = APIRouter(tags=["ops"])


class ParkedDossier(BaseModel):
    dossier_code: str
    unit_code: str | None
    error: str
    events: int
    last_seq: int | None
    attempts: int
    parked_at: dt.datetime
    updated_at: dt.datetime


class ParkedDossiers(BaseModel):
    items: list[ParkedDossier]
    next_cursor: str | None


@router.get("/v1/parked-dossiers", response_model=ParkedDossiers,
            summary="Dossiers whose events could not be applied (out of the counters), with the error",
            description="Apply them again after a fix with `dvc766 replay --dossier <code>` (or `--parked`); "
                        "a dossier also leaves this list when its next event applies.")
async def list_parked(
    request: Request,
    _: Annotated[Principal, Depends(reader)],
    unit: OptionalQueryUnit,
    limit: int = Query(100, ge=1, le=1000),
    cursor: str | None = Query(None, description="next_cursor of the previous page"),
):
    runtime: Runtime = request.app.state.runtime
    units = sorted(runtime.units.subtree(unit.code)) if unit is not None else None
    async with runtime.engine.connect() as conn:
        apg = await driver_connection(conn)
        rows = await apg.fetch(
            """SELECT dossier_code, unit_code, error, events, last_seq, attempts, parked_at, updated_at
               FROM parked_dossiers
               WHERE ($1::text[] IS NULL OR unit_code = ANY($1::text[])) AND ($2::text IS NULL OR dossier_code > $2)
               ORDER BY dossier_code LIMIT $3""",
            units, cursor, limit,
        )
    items = [ParkedDossier(**dict(r)) for r in rows]
    return ParkedDossiers(items=items, next_cursor=items[-1].dossier_code if len(items) == limit else None)
