"""What a running dvc766 process holds: settings, the database engine, the calendar, the unit tree."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import asyncpg

from sqlalchemy.ext.asyncio import AsyncEngine

from shared.calendar import WorkingCalendar
from shared.db.engine import create_engine, create_read_pool, migrate, resolve_database_url
from shared.db.raw import driver_connection
from shared.metrics import watch_pool
from shared.settings import Settings
from shared.units import Unit, UnitTree, load_units_file

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
    reads: asyncpg.Pool | None = None  # the hot reads' pool (score cards); None: they use the engine
    card_cache: object | None = None  # an api process's cards.CardCache (services/indicators/cards.py)

    async def close(self) -> None:
        if self.reads is not None:
            await self.reads.close()
        await self.engine.dispose()

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



async def build_runtime(settings: Settings, *, run_migrations: bool) -> Runtime:
    url = await asyncio.to_thread(resolve_database_url, settings)
    if run_migrations:
        await migrate(url)
    engine = create_engine(url, pool_size=settings.db_pool_size,
                           statement_timeout_ms=settings.db_statement_timeout_ms,
                           lock_timeout_ms=settings.db_lock_timeout_ms,
                           connect_timeout_seconds=settings.db_connect_timeout_seconds,
                           pool_timeout_seconds=settings.db_pool_timeout_seconds)
    calendar = await asyncio.to_thread(WorkingCalendar.from_settings, settings.calendar)
    watch_pool(engine, capacity=2 * settings.db_pool_size)  # create_engine's overflow is the pool size again
    reads = await create_read_pool(url, size=settings.db_pool_size,
                                   statement_timeout_ms=settings.db_statement_timeout_ms,
                                   connect_timeout_seconds=settings.db_connect_timeout_seconds)
    watch_pool(reads, capacity=settings.db_pool_size)
    runtime = Runtime(settings=settings, engine=engine, database_url=url, calendar=calendar, reads=reads)
    if settings.units_file:  # a seed: units changed since (PUT /v1/units) are left as they are
        units = load_units_file(settings.units_file)
        added = await upsert_units(engine, units, overwrite=False)
        log.info("units seeded", extra={"file": str(settings.units_file), "units": len(units), "added": added})
    await runtime.reload_units()
    return runtime
