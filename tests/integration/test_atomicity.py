"""One transaction per batch: a failure in the middle of applying leaves nothing half-done."""

import pytest

from services.indicators.engine import IndicatorEngine
from services.indicators.worker import apply_pending
from shared.db.raw import driver_connection
from tests.conftest import ADMIN_KEY, auth, drain
from tests.support.events import event, vn


class FailingAfterDossiers(IndicatorEngine):
    """The real engine, failing after it wrote the dossiers and before the counters."""

    async def _write_dossiers(self, conn, rows):
        await super()._write_dossiers(conn, rows)
        raise RuntimeError("connection lost mid-batch")


async def count(runtime, table):
    async with runtime.engine.connect() as conn:
        apg = await driver_connection(conn)
        return await apg.fetchval(f"SELECT count(*) FROM {table}")


async def test_a_batch_that_fails_midway_is_rolled_back_whole_and_applied_later(app_client):
    runtime = app_client.app.state.runtime
    events = [event(f"T{i}", 2, vn(2026, 8, 3), due_at=vn(2026, 8, 10)) for i in range(5)]
    assert (await app_client.post("/v1/events", json=events, headers=auth(ADMIN_KEY))).json()["accepted"] == 5
    with pytest.raises(RuntimeError):
        await apply_pending(runtime, FailingAfterDossiers(runtime.calendar, runtime.settings.policy), 100)
    assert await count(runtime, "pending_events") == 5  # still queued
    assert await count(runtime, "dossiers") == 0  # the dossier rows written before the failure are gone
    assert await count(runtime, "counters") == 0
    assert await drain(runtime) == 5
    assert (await count(runtime, "pending_events"), await count(runtime, "dossiers")) == (0, 5)
