"""What a running dvc766 process holds: settings, the database engine, the calendar, the unit tree."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from shared.calendar import WorkingCalendar
from shared.db.raw import driver_connection
from shared.settings import Settings
from shared.units import Unit, UnitTree

log = logging.getLogger("dvc766.runtime")


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    database_url: str
    calendar: WorkingCalendar
    units: UnitTree = field(default_factory=UnitTree)
    # Set after events are queued in the database, so an in-process worker applies them at once.
    events_waiting: asyncio.Event = field(default_factory=asyncio.Event)
    producer: object | None = None  # Kafka producer, when Kafka is configured
    # Bumped whenever this process commits a change that can move scores (cached scores check it).
    data_version: int = 0

    def data_changed(self) -> None:
        self.data_version += 1

    async def reload_units(self) -> UnitTree:
        async with self.engine.connect() as conn:
            apg = await driver_connection(conn)
            rows = await apg.fetch("SELECT code, name, level, parent_code, e_certified_copy, identifier FROM units")
        self.units = UnitTree(
            Unit(r["code"], r["name"], r["level"], r["parent_code"], r["e_certified_copy"], r["identifier"])
            for r in rows
        )
        return self.units


async def upsert_units(engine: AsyncEngine, units: list[Unit], *, overwrite: bool = True) -> int:
    """Insert units; known ones are updated (``overwrite``) or left as they are (a seed file). Returns
    how many were written."""
    if not units:
        return 0
    on_conflict = """DO UPDATE SET name = EXCLUDED.name, level = EXCLUDED.level,
                   parent_code = EXCLUDED.parent_code,
                   e_certified_copy = COALESCE(EXCLUDED.e_certified_copy, units.e_certified_copy),
                   identifier = COALESCE(EXCLUDED.identifier, units.identifier),
                   updated_at = now()""" if overwrite else "DO NOTHING"
    async with engine.begin() as conn:
        apg = await driver_connection(conn)
        status = await apg.execute(
            f"""INSERT INTO units (code, name, level, parent_code, e_certified_copy, identifier, updated_at)
               SELECT c, n, l, p, e, i, now() FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
                   $5::boolean[], $6::text[]) AS u(c, n, l, p, e, i)
               ON CONFLICT (code) {on_conflict}""",
            [u.code for u in units],
            [u.name for u in units],
            [u.level for u in units],
            [u.parent for u in units],
            [u.e_certified_copy for u in units],
            [u.identifier for u in units],
        )
    return int(status.rsplit(" ", 1)[-1])  # "INSERT 0 <rows>"
