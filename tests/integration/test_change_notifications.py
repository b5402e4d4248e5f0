"""A commit of the indicators worker in one process invalidates the scores cached by every api process."""

import asyncio
from dataclasses import replace

from services.indicators.engine import IndicatorEngine
from services.indicators.worker import apply_pending
from shared.db.notify import ChangeListener, announce_change
from shared.db.raw import driver_connection
from tests.conftest import ADMIN_KEY, auth
from tests.support.events import event, vn


async def _until(condition, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "not notified in time"
        await asyncio.sleep(0.02)


async def test_notified_at_commit_and_never_for_a_rolled_back_transaction(runtime):
    api_side = replace(runtime, data_version=0)  # another process's runtime, on the same database
    listener = ChangeListener(api_side)
    listener.start()
    try:
        await asyncio.wait_for(listener.listening.wait(), 10)
        before = api_side.data_version
        async with runtime.engine.connect() as conn:
            apg = await driver_connection(conn)
            transaction = apg.transaction()
            await transaction.start()
            await announce_change(apg)
            await transaction.rollback()
        await asyncio.sleep(0.3)
        assert api_side.data_version == before and listener.notifications == 0

        async with runtime.engine.begin() as conn:
            await announce_change(await driver_connection(conn))
        await _until(lambda: listener.notifications == 1)
        assert api_side.data_version == before + 1
    finally:
        await listener.stop()


async def test_a_batch_applied_elsewhere_moves_the_cached_score_at_once(app_client):
    """The api's cache would keep the old score for its time to live; the worker's notification ends it."""
    runtime = app_client.app.state.runtime
    listener = app_client.app.state.change_listener
    await asyncio.wait_for(listener.listening.wait(), 10)
    headers = auth(ADMIN_KEY)
    url = "/v1/scores/H44.03?period=2026-08"
    assert (await app_client.get(url, headers=headers)).json()["counters"].get("received", 0) == 0

    await app_client.post("/v1/events", json=[event("N1", 2, vn(2026, 8, 3), due_at=vn(2026, 8, 9))], headers=headers)
    # Applied as a separate indicators process would: nothing here tells the api's runtime in-process.
    version = runtime.data_version
    worker_side = replace(runtime, data_version=0)
    assert await apply_pending(worker_side, IndicatorEngine(runtime.calendar, runtime.settings.policy), 100) == 1
    await _until(lambda: runtime.data_version > version)
    assert (await app_client.get(url, headers=headers)).json()["counters"]["received"] == 1


async def test_events_queued_by_another_process_wake_the_worker_at_once(app_client):
    runtime = app_client.app.state.runtime
    worker_side = replace(runtime, data_version=0, events_waiting=asyncio.Event())  # its own process's state
    listener = ChangeListener(worker_side, data_changes=False, wake_worker=True)
    listener.start()
    try:
        await asyncio.wait_for(listener.listening.wait(), 10)
        worker_side.events_waiting.clear()
        await asyncio.sleep(0.2)
        assert not worker_side.events_waiting.is_set()
        response = await app_client.post("/v1/events", json=[event("W1", 2, vn(2026, 8, 3))], headers=auth(ADMIN_KEY))
        assert response.json()["accepted"] == 1
        await _until(worker_side.events_waiting.is_set)
        assert listener.notifications == 0  # the data-changed channel was not asked for
    finally:
        await listener.stop()
