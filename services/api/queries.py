"""Drill-down from dossiers: the dossiers behind a penalty."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import asyncpg
import orjson

from shared.event_flags import END_TIME_MISSING, PROCEDURE_MISSING, UNREADABLE_FLAGS
from shared.timeutil import VIETNAM, Period


FLAG_CONDITIONS = {
    "overdue": "({overdue})",
    "two_plus_supplements": "d.supplement_count >= 2",
    "overdue_step": "d.overdue_steps > 0",
    "open_overdue": "d.ended_at IS NULL AND ({overdue})",
    "not_online": "d.channel <> 2",
    # Counted with something its input lacked: no due time nor legal time, an end claimed without its
    # time, no procedure code, an optional time dropped as unreadable (the reasons are in each item's
    # ``flags``).
    "input_gaps": " OR ".join(["d.no_deadline"] + [f"coalesce((d.attributes->>'{name}')::boolean, false)"
                                                   for name in (END_TIME_MISSING, PROCEDURE_MISSING,
                                                                *UNREADABLE_FLAGS)]),
}


def input_flags(attributes, ended_at: dt.datetime | None, no_deadline: bool) -> list[str]:
    """Why a dossier counts as it does although its input lacked something (drill-down ``flags``)."""
    if isinstance(attributes, str):
        attributes = orjson.loads(attributes)
    attributes = attributes or {}
    flags = []
    if attributes.get(END_TIME_MISSING):
        # The system claimed an end with no time for it: taken from the step records, else still open.
        flags.append("end_from_steps" if ended_at is not None else END_TIME_MISSING)
    if attributes.get(PROCEDURE_MISSING):
        flags.append(PROCEDURE_MISSING)
    flags.extend(name for name in UNREADABLE_FLAGS if attributes.get(name))
    if no_deadline:
        flags.append("no_deadline_flagged")
    return flags
OVERDUE_AT_T = "d.overdue_fixed IS TRUE OR (d.overdue_fixed IS NULL AND d.deadline IS NOT NULL AND d.deadline < $3)"


async def dossiers_behind(
    conn: asyncpg.Connection,
    units: Iterable[str],
    period: Period,
    flag: str,
    *,
    now: dt.datetime,
    after: str | None,
    limit: int,
) -> list[dict]:
    """The dossiers behind a penalty, with the reasons each one counts."""
    evaluation = min(now, period.end)
    condition = FLAG_CONDITIONS[flag].format(overdue=OVERDUE_AT_T)
    rows = await conn.fetch(
        f"""SELECT d.dossier_code, d.unit_code, d.procedure_code, d.status, d.received_at, d.channel, d.due_at,
                   d.ended_at, d.supplement_count, d.overdue_steps, d.overdue_fixed, d.overdue_reason,
                   d.deadline, ({OVERDUE_AT_T}) AS overdue, d.attributes, d.no_deadline
            FROM dossiers d
            WHERE d.unit_code = ANY($1::text[]) AND d.received_month = ANY($2::text[]) AND ({condition})
              AND d.dossier_code > $4
            ORDER BY d.dossier_code LIMIT $5""",
        list(units),
        period.months(),
        evaluation,
        after or "",
        limit,
    )
    out = []
    for r in rows:
        reasons = []
        if r["overdue"]:
            reasons.append(r["overdue_reason"] or "open_past_due")
        if r["overdue_steps"]:
            reasons.append("overdue_step")
        if r["channel"] != 2 and flag == "not_online":
            reasons.append("not_online")
        out.append(
            {
                "dossier_code": r["dossier_code"],
                "unit_code": r["unit_code"],
                "procedure_code": r["procedure_code"],
                "status": r["status"],
                "channel": r["channel"],
                "received_at": _iso(r["received_at"]),
                "due_at": _iso(r["due_at"]),
                "ended_at": _iso(r["ended_at"]),
                "deadline": _iso(r["deadline"]),
                "supplement_requests": r["supplement_count"],
                "overdue_steps": r["overdue_steps"],
                "overdue": bool(r["overdue"]),
                "reasons": reasons,
                "flags": input_flags(r["attributes"], r["ended_at"], r["no_deadline"]),
            }
        )
    return out


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(VIETNAM).isoformat() if value else None

