"""Shared fixtures: one real PostgreSQL database per test run, migrated with Alembic; the app over ASGI."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from shared.settings import ApiKey, Settings
from tests.support.database import TestDatabase, truncate_event_tables

ROOT = Path(__file__).resolve().parents[1]
UNITS_FILE = ROOT / "examples" / "units-h44.csv"
REFERENCE_DIR = ROOT.parent / "shared" / "spec" / "reference"

ADMIN_KEY = "test-admin-key"
READER_KEY = "test-reader-key"
SOURCE_KEY = "test-source-key"  # bound to H44.03 and its subtree
PROVINCE_SOURCE_KEY = "test-province-source-key"  # bound to H44


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="session")
def test_database():
    database = TestDatabase()
    database.create()
    try:
        from shared.db.engine import migrate_sync

        migrate_sync(database.async_url)
        yield database
    finally:
        database.drop()


@pytest.fixture(scope="session")
def settings(test_database, tmp_path_factory) -> Settings:
    return Settings(
        database_url=test_database.async_url,
        data_dir=tmp_path_factory.mktemp("data"),
        units_file=UNITS_FILE,
        log_json=False,
        db_pool_size=5,
        api_keys={
            ADMIN_KEY: ApiKey(role="admin", name="admin"),
            READER_KEY: ApiKey(role="reader", name="portal"),
            SOURCE_KEY: ApiKey(role="source", source="igate-h44-03", units=["H44.03"]),
            PROVINCE_SOURCE_KEY: ApiKey(role="source", source="igate-h44", units=["H44"]),
        },
    )


@pytest_asyncio.fixture(scope="session")
async def runtime(settings):
    from shared.runtime import build_runtime

    rt = await build_runtime(settings, run_migrations=False)
    yield rt
    await rt.close()




@pytest_asyncio.fixture
async def clean_db(runtime):
    """Empty the event and counter tables (the unit tree stays) before a test."""
    await truncate_event_tables(runtime)
    yield runtime


@pytest_asyncio.fixture
async def app_client(clean_db):
    """The ingest + api app over ASGI, without the background worker: tests apply with ``drain``."""
    from services.app import create_app

    app = create_app(("ingest", "api"), runtime=clean_db)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


async def drain(runtime, now=None) -> int:
    """Apply every queued event (what the background worker does), returning how many."""
    from services.indicators.engine import IndicatorEngine
    from services.indicators.worker import apply_pending

    engine = IndicatorEngine(runtime.calendar, runtime.settings.policy)
    total = 0
    while True:
        applied = await apply_pending(runtime, engine, 5000)
        if not applied:
            return total
        total += applied
