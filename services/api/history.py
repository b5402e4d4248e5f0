"""The score history: a period's score as it stood at the end of each day so far, and now.

The indicators side records every unit's score of the current month, quarter and year as today's row
with every score-card computation and every ``daily_scores_interval_seconds`` from the sweeper
(services/indicators/cards.py); the last record of a day is that day's end-of-day score, and a day's
row is never written again once the day is over, so a late event that moves a past period leaves the
days already recorded as they stood.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from services.api.http import score_document
from services.api.params import PathUnit, QueryPeriod
from shared.auth import Principal, reader
from shared.db.raw import driver_connection
from shared.runtime import Runtime
from shared.timeutil import VIETNAM, Period, utcnow

log = logging.getLogger("dvc766.api.history")
router = APIRouter(tags=["scores"])


class DayScore(BaseModel):
    date: dt.date = Field(description="a day of the period (Vietnam time)")
    total: float
    rating: str
    groups: dict[str, float] = Field(description="each group's score by its code (CKMB, TDGQ, …)")
    live: bool = Field(False, description="true for the last point: the score now, not an end of day")


async def recorded_days(runtime: Runtime, unit_code: str, period: Period) -> list[DayScore]:
    async with runtime.engine.connect() as conn:
        apg = await driver_connection(conn)
        rows = await apg.fetch(
            """SELECT day, total, rating, groups FROM daily_scores WHERE unit_code = $1 AND period = $2
               ORDER BY day""",
            unit_code, period.key,
        )
    return [DayScore(date=r["day"], total=float(r["total"]), rating=r["rating"], groups=r["groups"]) for r in rows]


async def history(request: Request, unit_code: str, period: Period) -> list[DayScore]:
    """The recorded days of the period, and, while the period runs, today's point as the score now."""
    runtime: Runtime = request.app.state.runtime
    days = await recorded_days(runtime, unit_code, period)
    now = utcnow()
    if period.start <= now < period.end:
        today = now.astimezone(VIETNAM).date()
        live = await score_document(request, unit_code, period)
        days = [d for d in days if d.date < today]
        days.append(DayScore(date=today, total=live["total"]["score"], rating=live["rating"],
                             groups={g["code"]: g["score"] for g in live["groups"]}, live=True))
    return days


async def totals_before_latest_day(runtime: Runtime, units: list[str], period: Period) -> dict[str, float]:
    """Each unit's last end-of-day total before the period's latest day so far (today while it runs):
    what "change since yesterday" compares the total now with."""
    latest = min(utcnow(), period.end - dt.timedelta(microseconds=1)).astimezone(VIETNAM).date()
    async with runtime.engine.connect() as conn:
        apg = await driver_connection(conn)
        rows = await apg.fetch(
            """SELECT DISTINCT ON (unit_code) unit_code, total FROM daily_scores
               WHERE unit_code = ANY($1::text[]) AND period = $2 AND day < $3 ORDER BY unit_code, day DESC""",
            units, period.key, latest,
        )
    return {r["unit_code"]: float(r["total"]) for r in rows}


@router.get("/v1/scores/{unit_code}/history", response_model=list[DayScore],
            summary="The period's score at the end of each day so far (and now)")
async def get_history(request: Request, _: Annotated[Principal, Depends(reader)], unit: PathUnit,
                      period: QueryPeriod) -> list[DayScore]:
    return await history(request, unit.code, period)
