"""An indicators worker wakes as soon as another process queues events (PostgreSQL LISTEN/NOTIFY).

Ingest on the database path sends ``NOTIFY`` (:data:`EVENTS_QUEUED`) inside the transaction that
stores the events, so PostgreSQL delivers it at commit and never for a rolled-back one; the worker
applies at once instead of at its next idle poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from shared.runtime import Runtime

log = logging.getLogger("dvc766.notify")
EVENTS_QUEUED = "dvc766_events_queued"


async def announce_events_queued(conn: asyncpg.Connection) -> None:
    """Inside the caller's transaction: at commit, wake the indicators workers of other processes."""
    await conn.execute(f"NOTIFY {EVENTS_QUEUED}")


def libpq_url(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


class EventsQueuedListener:
    """LISTENs to :data:`EVENTS_QUEUED` until stopped (setting the runtime's ``events_waiting``),
    reconnecting if the connection drops."""

    def __init__(self, runtime: Runtime, *, keepalive_seconds: float = 10.0) -> None:
        self.runtime = runtime
        self.keepalive_seconds = keepalive_seconds
        self.notifications = 0
        self.listening = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="dvc766-events-listener")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _events_queued(self, *_args) -> None:
        self.notifications += 1
        self.runtime.events_waiting.set()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            conn = None
            try:
                conn = await asyncpg.connect(libpq_url(self.runtime.database_url),
                                             server_settings={"application_name": "dvc766-listener"})
                await conn.add_listener(EVENTS_QUEUED, self._events_queued)
                self.runtime.events_waiting.set()  # whatever was queued while nobody listened
                self.listening.set()
                while not self._stopping.is_set():
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), self.keepalive_seconds)
                    if not self._stopping.is_set():
                        await conn.execute("SELECT 1")  # a dropped connection shows here
            except Exception:  # the store is away: the worker polls meanwhile
                self.listening.clear()
                log.warning("events listener lost its connection; reconnecting", exc_info=True)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), 2.0)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=2)
