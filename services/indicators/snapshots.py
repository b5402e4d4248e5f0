"""Self-evaluation snapshots (indicators.md §5): every unit's score card frozen at an instant.

Snapshots are taken on demand (``POST /v1/snapshots``) and by ``take_due_snapshots`` on the last day
of each quarter and before 20/12 (:func:`scheduled_kind` says when).
"""

from __future__ import annotations

import datetime as dt

import asyncpg

from services.indicators.cards import (Card, card_of, cards_moved_here, compute_cards, policies_in_force,
                                       read_cards)
from shared.db.raw import driver_connection, jsonb
from shared.runtime import Runtime
from shared.timeutil import VIETNAM, utcnow

SELF_EVALUATION_DAY = (12, 19)  # the last day before 20/12


def scheduled_kind(day: dt.date) -> str | None:
    """Which scheduled snapshot falls on a (Vietnam) day: the quarter's last day, or 19/12."""
    if (day.month, day.day) == SELF_EVALUATION_DAY:
        return "year_self_evaluation"
    if (day + dt.timedelta(days=1)).month != day.month and day.month in (3, 6, 9, 12):
        return "quarter_end"
    return None


def period_of_kind(kind: str, day: dt.date) -> str:
    if kind == "year_self_evaluation":
        return f"{day.year:04d}"
    if kind == "quarter_end":
        return f"{day.year:04d}-Q{(day.month - 1) // 3 + 1}"
    return f"{day.year:04d}-{day.month:02d}"


def frozen(card: Card) -> dict:
    """What a snapshot keeps of a card: total, rating, groups with their components, the raw counters."""
    answer = card.as_dict()
    return {"total": answer["total"], "rating": answer["rating"], "groups": answer["groups"],
            "counters": card.counts}


async def unit_cards(runtime: Runtime, period: str) -> dict[str, dict]:
    """Every unit's card for a period, as a snapshot keeps it."""
    cards = await read_cards(runtime, list(runtime.units.units), period, "portal")
    return {code: frozen(card) for code, card in cards.items()}


async def take_snapshot(runtime: Runtime, *, period: str, kind: str, label: str | None,
                        now: dt.datetime | None = None) -> dict:
    now = now or utcnow()
    async with runtime.engine.begin() as conn:
        apg = await driver_connection(conn)
        # Every card computed afresh, at the snapshot's instant.
        await compute_cards(apg, runtime, {period: set(runtime.units.units)}, now)
        rows = await apg.fetch("SELECT * FROM score_cards WHERE period = $1 AND layout = 'portal'", period)
        cards = {r["unit_code"]: frozen(card_of(r)) for r in rows if r["unit_code"] in runtime.units}
        snapshot_id = await apg.fetchval(
            "INSERT INTO snapshots (period, label, kind, taken_at, policies) VALUES ($1, $2, $3, $4, $5) RETURNING id",
            period, label, kind, now, jsonb(policies_in_force(runtime.settings)),
        )
        await apg.execute(
            """INSERT INTO snapshot_scores (snapshot_id, unit_code, total, body)
               SELECT $1, u, t, b FROM unnest($2::text[], $3::numeric[], $4::jsonb[]) AS x(u, t, b)""",
            snapshot_id, list(cards), [card["total"]["score"] for card in cards.values()],
            [jsonb(card) for card in cards.values()],
        )
    cards_moved_here(runtime)
    return {"id": snapshot_id, "period": period, "kind": kind, "label": label,
            "taken_at": now.astimezone(VIETNAM).isoformat(), "units": len(cards)}


async def take_due_snapshots(runtime: Runtime, now: dt.datetime | None = None) -> list[dict]:
    """Take today's scheduled snapshot if one is due and not yet taken (for a periodic task)."""
    now = now or utcnow()
    day = now.astimezone(VIETNAM).date()
    kind = scheduled_kind(day)
    if kind is None:
        return []
    period = period_of_kind(kind, day)
    async with runtime.engine.connect() as conn:
        apg = await driver_connection(conn)
        start = dt.datetime(day.year, day.month, day.day, tzinfo=VIETNAM)
        taken = await apg.fetchval(
            "SELECT count(*) FROM snapshots WHERE kind = $1 AND period = $2 AND taken_at >= $3",
            kind, period, start,
        )
    if taken:
        return []
    return [await take_snapshot(runtime, period=period, kind=kind, label=None, now=now)]
