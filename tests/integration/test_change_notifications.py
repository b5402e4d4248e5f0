"""Events queued by an ingest process wake the indicators worker of another process at once."""

import asyncio
from dataclasses import replace

from shared.db.notify import EventsQueuedListener
from tests.conftest import ADMIN_KEY, auth
from tests.support.events import event, vn


async def _until(condition, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "not notified in time"
        await asyncio.sleep(0.02)


async def test_events_queued_by_another_process_wake_the_worker_at_once(app_client):
    runtime = app_client.app.state.runtime
    worker_side = replace(runtime, events_waiting=asyncio.Event())  # its own process's state
    listener = EventsQueuedListener(worker_side)
    listener.start()
    try:
        await asyncio.wait_for(listener.listening.wait(), 10)
        worker_side.events_waiting.clear()
        await asyncio.sleep(0.2)
        assert not worker_side.events_waiting.is_set() and listener.notifications == 0
        response = await app_client.post("/v1/events", json=[event("W1", 2, vn(2026, 8, 3))], headers=auth(ADMIN_KEY))
        assert response.json()["accepted"] == 1
        await _until(worker_side.events_waiting.is_set)
        assert listener.notifications == 1
    finally:
        await listener.stop()
