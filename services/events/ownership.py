"""Who may add events to a dossier (README, "Ownership"): the unit that received it owns it, and only a
key bound to that unit's subtree (or an admin key, or a trusted topic) may add events to it.

The owner is the receiving unit the dossier's code names (portal codes begin with its identifier), else
the unit of the first accepted event of the dossier (its receipt, normally). It is written once, in the
same transaction as the events, so two keys racing on a new dossier cannot both win: PostgreSQL's
unique index makes the second claim wait for the first to commit, and the second then reads the first's
owner and is checked against it. Later events never move ownership.
"""

from __future__ import annotations

import datetime as dt

import asyncpg

from shared.db.partitions import month_of
from shared.events import DossierEvent, Reason, Rejection
from shared.units import UnitTree


def claims_of(events: list[DossierEvent], units: UnitTree) -> dict[str, str]:
    """Each dossier of the batch -> its owner if it is new: the receiving unit its code names (the
    portal's dossier codes begin with that unit's identifier), else the unit its first event names."""
    claims: dict[str, str] = {}
    for event in events:
        if event.dossier_code not in claims:
            claims[event.dossier_code] = units.receiver_named_by(event.dossier_code) or event.unit_code
    return claims


def not_owner(event: DossierEvent, owner: str, allowed_units: tuple[str, ...] | None,
              units: UnitTree) -> Rejection | None:
    """The rule itself (pure): None when a key bound to ``allowed_units`` (None: any) may add ``event``."""
    if allowed_units is None or units.is_within(owner, allowed_units):
        return None
    return Rejection(Reason.NOT_OWNER, f"dossier {event.dossier_code!r} belongs to unit {owner!r}; this key "
                     "may not add events to it", "dossier_code")


async def claim_owners(conn: asyncpg.Connection, events: list[DossierEvent], units: UnitTree) -> dict[str, str]:
    """Record the owner of each new dossier of ``events`` and return the owner of every one of them.

    Two statements on purpose: the INSERT waits for a concurrent claim of the same dossier to commit,
    and only a statement started after that (READ COMMITTED) sees the winning row."""
    claims = claims_of(events, units)
    if not claims:
        return {}
    homes: dict[str, dt.date] = {}  # a new dossier's events are stored in the month of its first one
    for event in events:
        homes.setdefault(event.dossier_code, month_of(event.occurred_at))
    codes = sorted(claims)  # claims in one order everywhere: two batches wait, never deadlock
    await conn.execute(
        """INSERT INTO dossier_owners (dossier_code, unit_code, home_month)
           SELECT c, u, m FROM unnest($1::text[], $2::text[], $3::date[]) WITH ORDINALITY AS t(c, u, m, n) ORDER BY n
           ON CONFLICT (dossier_code) DO NOTHING""",
        codes, [claims[c] for c in codes], [homes[c] for c in codes],
    )
    rows = await conn.fetch("SELECT dossier_code, unit_code FROM dossier_owners WHERE dossier_code = ANY($1::text[])",
                            codes)
    return {r[0]: r[1] for r in rows}


async def check_owners(conn: asyncpg.Connection, events: list[DossierEvent], *,
                       allowed_units: tuple[str, ...] | None, units: UnitTree) -> list[Rejection | None]:
    """Claim the new dossiers of ``events``, then each event's rejection (``not_owner``) or None."""
    owners = await claim_owners(conn, events, units)
    return [not_owner(event, owners[event.dossier_code], allowed_units, units) for event in events]
