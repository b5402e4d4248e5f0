"""Monthly partitions of ``events``: a dossier's events are stored in the partition of its home month (the
month, UTC, of its first event; ``dossier_owners.home_month``), so a partition holds whole histories.

Partitions are created ahead (the current month and ``partitions_ahead_months`` after it, at start and
by every sweep), and on demand for an older month an event names (a late sender, a backfill): ingest
calls :func:`ensure_partitions` with its batch's months before anything else in its transaction. There
is no DEFAULT partition: a row with no partition would be an error, never a silent catch-all that a new
partition could later not be created over. A month listed in ``archived_months`` never gets a partition
again: its dossiers' events are refused (``dossier_archived``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import asyncpg

PARTITION_LOCK = 766_010  # advisory lock key: one creator of partitions at a time
# Months seen with a committed partition, by database (this process; a partition is never dropped except
# by archiving, and events of an archived month are refused before they reach the table).
_known: dict[str | None, set[dt.date]] = {}


def _known_in(conn: asyncpg.Connection) -> set[dt.date]:
    database = getattr(getattr(conn, "_params", None), "database", None)
    return _known.setdefault(database, set())


def month_of(instant: dt.datetime) -> dt.date:
    """The home month of a dossier whose first event happened at ``instant``: its UTC month's first day."""
    utc = instant.astimezone(dt.timezone.utc)
    return dt.date(utc.year, utc.month, 1)


def next_month(month: dt.date) -> dt.date:
    return dt.date(month.year + month.month // 12, month.month % 12 + 1, 1)


def add_months(month: dt.date, count: int) -> dt.date:
    index = month.year * 12 + month.month - 1 + count
    return dt.date(index // 12, index % 12 + 1, 1)


def upper_bound(month: dt.date) -> str:
    """The SQL upper bound of a month's partition (the last month a date can name has none)."""
    return "MAXVALUE" if month.year == 9999 and month.month == 12 else f"'{next_month(month).isoformat()}'"


def partition_name(month: dt.date) -> str:
    return f"events_{month:%Y_%m}"


def parse_month(text: str) -> dt.date:
    """``YYYY-MM`` as the month's first day (ValueError otherwise)."""
    year, month = text.split("-")
    if len(year) != 4 or len(month) != 2:
        raise ValueError(f"not a month (YYYY-MM): {text!r}")
    return dt.date(int(year), int(month), 1)


async def existing_partitions(conn: asyncpg.Connection) -> dict[dt.date, str]:
    """The months that have a partition of ``events`` -> the partition's name."""
    rows = await conn.fetch(
        """SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound
           FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
           WHERE i.inhparent = 'events'::regclass""")
    out = {}
    for row in rows:
        name = row["relname"]
        try:
            out[dt.date(int(name[7:11]), int(name[12:14]), 1)] = name
        except ValueError:  # not one of ours: only its name would tell
            continue
    return out


async def ensure_partitions(conn: asyncpg.Connection, months: Iterable[dt.date]) -> list[dt.date]:
    """Create the missing partitions of these months (not archived ones) in the caller's transaction;
    returns the months created. Cheap when they exist (a set lookup)."""
    known = _known_in(conn)
    wanted = {dt.date(m.year, m.month, 1) for m in months} - known
    if not wanted:
        return []
    existing = await existing_partitions(conn)
    known.update(existing)
    missing = sorted(wanted - set(existing))
    if not missing:
        return []
    archived = {r[0] for r in await conn.fetch("SELECT month FROM archived_months WHERE month = ANY($1::date[])",
                                               missing)}
    missing = [m for m in missing if m not in archived]
    if not missing:
        return []
    # One creator at a time; a second one waits here, then finds what the first created.
    await conn.execute("SELECT pg_advisory_xact_lock($1)", PARTITION_LOCK)
    missing = sorted(set(missing) - set(await existing_partitions(conn)))
    for month in missing:
        # A table of its own, then attached: ATTACH locks events only against other schema changes
        # (SHARE UPDATE EXCLUSIVE), where CREATE ... PARTITION OF would take ACCESS EXCLUSIVE and queue
        # every batch behind the writers already in events, a deadlock once two of them wait on each
        # other's event keys.
        await conn.execute(f"CREATE TABLE {partition_name(month)} (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
        await conn.execute(f"ALTER TABLE events ATTACH PARTITION {partition_name(month)} "
                           f"FOR VALUES FROM ('{month.isoformat()}') TO ({upper_bound(month)})")
    return missing  # known once committed: the next call reads the catalogue again


async def ensure_ahead(conn: asyncpg.Connection, today: dt.date, ahead: int) -> list[dt.date]:
    """The partitions of the current month and ``ahead`` months after it."""
    first = dt.date(today.year, today.month, 1)
    return await ensure_partitions(conn, [add_months(first, i) for i in range(ahead + 1)])


def forget(conn: asyncpg.Connection, month: dt.date) -> None:
    """This process dropped (archived) the month's partition."""
    _known_in(conn).discard(month)
