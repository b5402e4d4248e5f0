"""Migration 20261205_0010 carries the stored events into monthly partitions (by their dossier's first month),
their keys into the registry and the queue with its months; its downgrade brings back the one table."""

import asyncio

import asyncpg
from alembic import command

from shared.db.engine import alembic_config
from tests.support.database import TestDatabase

BEFORE, AFTER = "20261204_2340", "20261205_0010"

# (seq, source, event_id, dossier, status, occurred_at, body_hash): D1 spans August and September.
ROWS = [
    (1, "s", "e1", "D1", 2, "2026-08-30T10:00:00Z", "aa" * 16),
    (2, "s", "e2", "D2", 2, "2026-09-02T10:00:00Z", "bb" * 16),
    (3, "s", "e3", "D1", 9, "2026-09-05T10:00:00Z", "cc" * 16),
    (4, "t", "e1", "D3", 2, "2025-01-31T23:00:00Z", "dd" * 16),
]


async def _fill(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        for seq, source, event_id, dossier, status, occurred, body_hash in ROWS:
            body = (f'{{"event_id": "{event_id}", "dossier_code": "{dossier}", "status": {status}, '
                    f'"occurred_at": "{occurred}", "unit_code": "H44", "procedure_code": "P"}}')
            await conn.execute(
                """INSERT INTO events (seq, source, event_id, dossier_code, status, occurred_at, body, body_hash,
                                       transport) VALUES ($1, $2, $3, $4, $5, $6::text::timestamptz, $7::jsonb, $8, 'http')""",
                seq, source, event_id, dossier, status, occurred, body, body_hash)
        await conn.execute("SELECT setval(pg_get_serial_sequence('events', 'seq'), 4)")
        await conn.execute("INSERT INTO dossier_owners (dossier_code, unit_code) VALUES ('D1', 'H44')")  # D2, D3: none
        await conn.execute("INSERT INTO pending_events (seq) VALUES (3), (4)")
        await conn.execute("""INSERT INTO dossiers (dossier_code, unit_code, procedure_code, status, history)
                              VALUES ('D1', 'H44', 'P', 9, '\\x5b5d')""")
    finally:
        await conn.close()


async def _read(url: str, sql: str):
    conn = await asyncpg.connect(url)
    try:
        return [tuple(r) for r in await conn.fetch(sql)]
    finally:
        await conn.close()


def test_upgrade_partitions_the_stored_events_and_downgrade_restores_them():
    database = TestDatabase()
    database.create()
    config = alembic_config(database.url.replace("postgresql://", "postgresql+asyncpg://", 1))
    try:
        command.upgrade(config, BEFORE)
        asyncio.run(_fill(database.url))
        command.upgrade(config, AFTER)
        url = database.url
        assert asyncio.run(_read(url, "SELECT seq, tableoid::regclass::text, home_month::text FROM events ORDER BY seq")) == [
            (1, "events_2026_08", "2026-08-01"), (2, "events_2026_09", "2026-09-01"),
            (3, "events_2026_08", "2026-08-01"), (4, "events_2025_01", "2025-01-01")]
        assert asyncio.run(_read(url, "SELECT source, event_id, encode(body_hash, 'hex') FROM event_keys "
                                      "ORDER BY 1, 2")) == [
            ("s", "e1", "aa" * 16), ("s", "e2", "bb" * 16), ("s", "e3", "cc" * 16), ("t", "e1", "dd" * 16)]
        assert asyncio.run(_read(url, "SELECT dossier_code, unit_code, home_month::text FROM dossier_owners "
                                      "ORDER BY 1")) == [
            ("D1", "H44", "2026-08-01"), ("D2", "H44", "2026-09-01"), ("D3", "H44", "2025-01-01")]
        assert asyncio.run(_read(url, "SELECT seq, home_month::text FROM pending_events ORDER BY seq")) == [
            (3, "2026-08-01"), (4, "2025-01-01")]
        # New events continue the sequence.
        assert asyncio.run(_read(url, "SELECT nextval(pg_get_serial_sequence('events', 'seq'))")) == [(5,)]

        command.downgrade(config, BEFORE)
        assert asyncio.run(_read(url, "SELECT seq, source, event_id, dossier_code, body_hash FROM events ORDER BY seq")) \
            == [(seq, source, event_id, dossier, body_hash) for seq, source, event_id, dossier, _, _, body_hash in ROWS]
        assert asyncio.run(_read(url, "SELECT seq FROM pending_events ORDER BY seq")) == [(3,), (4,)]
        assert asyncio.run(_read(url, "SELECT count(*) FROM pg_inherits")) == [(0,)]
        command.upgrade(config, "head")  # and up again
    finally:
        database.drop()
