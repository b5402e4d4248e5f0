"""A real PostgreSQL for the tests: the server at 127.0.0.1:5432 when reachable, else an embedded one.

Each test run creates its own database and drops it at the end.
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import uuid
from pathlib import Path

import asyncpg

LOCAL_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def admin_url() -> str:
    """A libpq URL of a server where we may create databases."""
    explicit = os.environ.get("DVC766_TEST_ADMIN_URL")
    if explicit:
        return explicit
    if _reachable("127.0.0.1", 5432):
        return LOCAL_ADMIN_URL
    from shared.db.engine import start_embedded_postgres

    data_dir = Path(os.environ.get("DVC766_TEST_EMBEDDED_DIR", Path(tempfile.gettempdir()) / "dvc766-test-pg"))
    return start_embedded_postgres(data_dir).replace("postgresql+asyncpg://", "postgresql://", 1)


def with_database(url: str, database: str) -> str:
    """Swap the database name of a libpq URL (host may be a socket directory in the query string)."""
    head, sep, query = url.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{database}{sep}{query}"


class TestDatabase:
    __test__ = False  # a helper, not a test class
    def __init__(self) -> None:
        self.admin = admin_url()
        self.name = f"dvc766_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self.url = with_database(self.admin, self.name)
        self.async_url = self.url.replace("postgresql://", "postgresql+asyncpg://", 1)

    async def _admin_execute(self, sql: str) -> None:
        conn = await asyncpg.connect(self.admin)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    def create(self) -> None:
        asyncio.run(self._admin_execute(f'CREATE DATABASE "{self.name}"'))

    def drop(self) -> None:
        asyncio.run(self._admin_execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))


async def truncate_event_tables(runtime) -> None:
    """Empty every table but the unit tree and Alembic's version (between tests, or before a big load)."""
    from shared.db.raw import driver_connection

    async with runtime.engine.begin() as conn:
        apg = await driver_connection(conn)
        existing = await apg.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        names = {r["tablename"] for r in existing} - {"alembic_version", "units"}
        await apg.execute("TRUNCATE " + ", ".join(sorted(names)))
    runtime.events_waiting.clear()
