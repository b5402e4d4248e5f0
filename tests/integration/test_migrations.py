"""Migrations are the schema: `dvc766 migrate` builds it, and it matches shared/db/tables.py exactly."""

import asyncio
import os
import subprocess
import sys

import asyncpg
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.ext.asyncio import create_async_engine

from shared.db.tables import metadata
from tests.support.database import TestDatabase


def test_dvc766_migrate_builds_the_schema_the_code_describes():
    database = TestDatabase()
    database.create()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "services.cli", "migrate"],
            env={**os.environ, "DVC766_DATABASE_URL": database.url},
            capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert "migrations applied" in result.stdout

        async def check():
            conn = await asyncpg.connect(database.url)
            try:
                version = await conn.fetchval("SELECT version_num FROM alembic_version")
            finally:
                await conn.close()
            engine = create_async_engine(database.async_url)
            async with engine.connect() as connection:
                diff = await connection.run_sync(
                    lambda sync: compare_metadata(MigrationContext.configure(sync, opts={"compare_type": True}),
                                                  metadata)
                )
            await engine.dispose()
            return version, diff

        version, diff = asyncio.run(check())
        assert version is not None
        assert diff == [], f"migrations and shared/db/tables.py disagree: {diff}"
    finally:
        database.drop()
