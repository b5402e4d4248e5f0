"""Per-procedure and per-field (lĩnh vực) tables of a unit's subtree, from the maintained per-procedure
counters: received, on time, overdue, the 2.1 ratio, mean processing days (2.2), online share (3.3's
ratio) and supplement requests. Ratios come from the same rule functions as the scores."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from services.indicators.score_context import catalogue_as_of
from services.indicators.rules.catalogue import (
    CatalogueEntry,
    counts_by_field,
    entry_per_procedure,
    field_code_of,
)
from services.indicators.rules import counters as c
from services.indicators.rules.scoring import COMPONENTS_BY_ID, dossier_measures, score_component
from shared.auth import Principal, reader
from shared.db.raw import driver_connection
from services.api.params import PathUnit, QueryPeriod
from shared.runtime import Runtime
from shared.timeutil import Period
from shared.units import Unit

router = APIRouter(tags=["scores"])

TABLE_METRICS = sorted({c.RECEIVED, c.ON_TIME, c.OVERDUE, c.COMPLETED, c.PROCESSING_WORKING_SECONDS,
                        c.RECEIVED_BY_CHANNEL[2], c.SUPPLEMENT_REQUESTS, c.DOSSIERS_TWO_PLUS_SUPPLEMENTS})


class BreakdownRow(BaseModel):
    """One procedure's or one field's dossiers received in the period."""

    code: str = Field(description="procedure code, or field code ('' for procedures of no known field)")
    name: str | None = Field(description="from the procedure catalogue; null when it is not loaded")
    field_code: str | None = None
    field_name: str | None = None
    procedures: int | None = Field(None, description="per field: procedures with dossiers in the period")
    received: int
    on_time: int
    overdue: int
    on_time_ratio: float | None = Field(description="2.1's ratio, percent (2 decimals); null without dossiers")
    completed: int
    mean_processing_days: float | None = Field(description="2.2: mean working days, receipt to end, of "
                                                           "completed dossiers; null when none completed")
    received_online: int
    online_share: float | None = Field(description="3.3's ratio, percent; null without dossiers")
    supplement_requests: int
    dossiers_with_2plus_supplements: int


class Breakdown(BaseModel):
    unit: str
    period: str
    by: str = Field(description="procedure or field")
    items: list[BreakdownRow]


def row_of(code: str, counts: dict[str, int], seconds_per_day: int, **names) -> BreakdownRow:
    measures = dossier_measures(counts, seconds_per_day=seconds_per_day)
    on_time = score_component(COMPONENTS_BY_ID["2.1"], measures["2.1"])
    mean_days = score_component(COMPONENTS_BY_ID["2.2"], measures["2.2"])
    online = score_component(COMPONENTS_BY_ID["3.3"], measures["3.3"])
    received = counts.get(c.RECEIVED, 0)
    completed = counts.get(c.COMPLETED, 0)
    return BreakdownRow(
        code=code, received=received, on_time=counts.get(c.ON_TIME, 0), overdue=counts.get(c.OVERDUE, 0),
        on_time_ratio=on_time.ratio if received else None, completed=completed,
        mean_processing_days=mean_days.ratio if completed else None,
        received_online=counts.get(c.RECEIVED_BY_CHANNEL[2], 0), online_share=online.ratio if received else None,
        supplement_requests=counts.get(c.SUPPLEMENT_REQUESTS, 0),
        dossiers_with_2plus_supplements=counts.get(c.DOSSIERS_TWO_PLUS_SUPPLEMENTS, 0), **names,
    )


async def procedure_counts(apg: asyncpg.Connection, units: list[str], period: Period) -> dict[str, dict[str, int]]:
    rows = await apg.fetch(
        """SELECT procedure_code, metric, sum(value)::bigint AS value FROM counters
           WHERE unit_code = ANY($1::text[]) AND period = ANY($2::text[]) AND procedure_code <> $3
             AND metric = ANY($4::text[])
           GROUP BY procedure_code, metric HAVING sum(value) <> 0""",
        units, list(c.stored_periods(period.key)), c.ALL_PROCEDURES, TABLE_METRICS,
    )
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for r in rows:
        out[r["procedure_code"]][r["metric"]] = r["value"]
    return dict(out)


@dataclass
class Tables:
    """A subtree's per-procedure counters for a period and the catalogue's names; rows are built on demand
    (a province has thousands of procedures, a page shows a few)."""

    per_procedure: dict[str, dict[str, int]]
    entries: dict[str, CatalogueEntry]  # one catalogue entry per procedure code
    seconds_per_day: int

    def procedures(self, limit: int | None = None, *, most: str = c.RECEIVED) -> list[BreakdownRow]:
        """The procedures with the most ``most`` (received, or overdue) first."""
        codes = sorted(self.per_procedure, key=lambda code: (-self.per_procedure[code].get(most, 0), code))
        rows = []
        for code in codes[:limit]:
            entry = self.entries.get(code)
            rows.append(row_of(code, self.per_procedure[code], self.seconds_per_day,
                               name=entry.name if entry else None, field_code=entry.field_code if entry else None,
                               field_name=entry.field_name if entry else None))
        return rows

    def fields(self) -> list[BreakdownRow]:
        names: dict[str, str | None] = {}
        members: dict[str, int] = defaultdict(int)
        for code in self.per_procedure:
            entry = self.entries.get(code)
            field = field_code_of(entry)
            names.setdefault(field, entry.field_name if entry else None)
            members[field] += 1
        rows = [row_of(code, counts, self.seconds_per_day, name=names.get(code), procedures=members[code])
                for code, counts in counts_by_field(self.per_procedure, self.entries).items()]
        return sorted(rows, key=lambda r: (-r.received, r.code))


async def load_tables(runtime: Runtime, unit_code: str, period: Period) -> Tables:
    units = list(runtime.units.subtree(unit_code))
    async with runtime.engine.connect() as conn:
        apg = await driver_connection(conn)
        per_procedure = await procedure_counts(apg, units, period)
        catalogue = await catalogue_as_of(apg, units, period.end)
    return Tables(per_procedure, entry_per_procedure(catalogue), runtime.calendar.seconds_per_day)


async def _answer(request: Request, unit: Unit, period: Period, by: str) -> Breakdown:
    tables = await load_tables(request.app.state.runtime, unit.code, period)
    return Breakdown(unit=unit.code, period=period.key, by=by,
                     items=tables.procedures() if by == "procedure" else tables.fields())


@router.get("/v1/scores/{unit_code}/procedures", response_model=Breakdown,
            summary="Per procedure: received, on time, overdue, 2.1 ratio, mean days, online share, supplements")
async def by_procedure(request: Request, _: Annotated[Principal, Depends(reader)], unit: PathUnit,
                       period: QueryPeriod) -> Breakdown:
    return await _answer(request, unit, period, "procedure")


@router.get("/v1/scores/{unit_code}/fields", response_model=Breakdown,
            summary="Per field (lĩnh vực): the same figures as per procedure, summed over the field's procedures")
async def by_field(request: Request, _: Annotated[Principal, Depends(reader)], unit: PathUnit,
                   period: QueryPeriod) -> Breakdown:
    return await _answer(request, unit, period, "field")
