"""A stuck apply is visible: with the dossiers table locked, the worker's statements time out, /readyz
fails with the reason and the stall gauge the alert watches keeps growing; once the lock goes, it recovers."""

from __future__ import annotations

import asyncio
import time

import asyncpg
import httpx
from prometheus_client import REGISTRY

from services.app import create_app
from tests.conftest import ADMIN_KEY, auth
from tests.support.events import event, vn


async def test_a_locked_table_makes_readiness_fail_until_the_lock_goes(clean_db, test_database):
    settings = clean_db.settings.model_copy(update={"apply_stall_seconds": 1.5, "db_lock_timeout_ms": 300,
                                                    "sweep_interval_seconds": 0.5})
    app = create_app(("ingest", "indicators", "api"), settings=settings)
    locker = await asyncpg.connect(test_database.url)
    try:
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
                assert (await client.get("/readyz")).status_code == 200
                transaction = locker.transaction()
                await transaction.start()
                await locker.execute("LOCK TABLE dossiers IN ACCESS EXCLUSIVE MODE")
                posted = await client.post("/v1/events", json=[event("L1", 2, vn(2026, 8, 3), due_at=vn(2026, 8, 10))],
                                           headers=auth(ADMIN_KEY))
                assert posted.json()["accepted"] == 1
                deadline = time.monotonic() + 30
                ready = await client.get("/readyz")
                while ready.status_code == 200 and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
                    ready = await client.get("/readyz")
                stalled = REGISTRY.get_sample_value("dvc766_apply_stalled_seconds")
                metrics = (await client.get("/metrics")).text
                await transaction.rollback()

                deadline = time.monotonic() + 30
                recovered = await client.get("/readyz")
                while recovered.status_code != 200 and time.monotonic() < deadline:
                    await asyncio.sleep(0.2)
                    recovered = await client.get("/readyz")
    finally:
        await locker.close()
    assert ready.status_code == 503, ready.text
    body = ready.json()
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["indicators"].startswith("stalled: no batch applied for"), body
    assert stalled > 1.5
    assert "dvc766_apply_stalled_seconds" in metrics
    assert recovered.status_code == 200, recovered.text
    assert REGISTRY.get_sample_value("dvc766_apply_stalled_seconds") < 1.5
