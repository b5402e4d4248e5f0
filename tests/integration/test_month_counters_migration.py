"""Migration 0007 turns per-period counter rows into month rows plus corrections, and back, without
changing what any period reads."""

import asyncio
import datetime as dt
from collections import defaultdict

from alembic import command
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import asyncpg
import pytest

from services.indicators.rules.counters import Contribution, expand, total_counts
from shared.db.engine import alembic_config
from tests.support.database import TestDatabase
from tests.support.strategies import contributions


def _summed(per_contribution) -> dict:
    out: defaultdict = defaultdict(int)
    for rows in per_contribution:
        for key, value in rows.items():
            out[key] += value
    return {k: v for k, v in out.items() if v}


async def _write(url: str, rows: dict) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("DELETE FROM counters")
        await conn.executemany(
            "INSERT INTO counters (unit_code, period, procedure_code, metric, value) VALUES ($1, $2, $3, $4, $5)",
            [(u, period, p, m, v) for (u, p, period, m), v in rows.items()],
        )
    finally:
        await conn.close()


async def _read(url: str) -> dict:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT unit_code, procedure_code, period, metric, value FROM counters WHERE value <> 0")
    finally:
        await conn.close()
    return {(r[0], r[1], r[2], r[3]): r[4] for r in rows}


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(contributions(), min_size=1, max_size=12))
# Found by hypothesis: July's open dossier overdue by the end of Q3 and of 2026 leaves those periods no
# on_time row at all in 0006, yet their correction is -1 (the upgrade used to skip periods with no row).
@example([Contribution(unit_code="H44", procedure_code="P1", received_month="2026-07", counts={},
                       open_deadline=dt.datetime(2026, 8, 20, tzinfo=dt.timezone.utc), deadline_passed=True,
                       open_undetermined=True, start_month=None, start_counts={})])
def test_upgrade_keeps_every_period_reading_the_same(database_at_0006, items):
    url, config = database_at_0006
    per_period = _summed(expand(c) for c in items)  # what 0006 stored: every period's full value
    asyncio.run(_write(url, per_period))
    command.upgrade(config, "0007")
    try:
        assert asyncio.run(_read(url)) == total_counts(items)  # month rows and corrections only
    finally:
        command.downgrade(config, "0006")
    assert asyncio.run(_read(url)) == per_period



@pytest.fixture(scope="module")
def database_at_0006():
    database = TestDatabase()
    database.create()
    config = alembic_config(database.url.replace("postgresql://", "postgresql+asyncpg://", 1))
    command.upgrade(config, "0006")
    try:
        yield database.url, config
    finally:
        database.drop()
