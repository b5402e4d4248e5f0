"""Processes learn at once what another process committed (PostgreSQL LISTEN/NOTIFY).

``NOTIFY`` is sent inside the committing transaction, so PostgreSQL delivers it at commit and never
for a rolled-back one. Two channels:

- :data:`CHANNEL` (data changed): the indicators worker, after each applied batch. Every process that
  serves the API bumps its runtime's ``data_version``: cached scores are recomputed on the next
  request instead of waiting for their time to live.
- :data:`EVENTS_QUEUED`: ingest on the database path, after storing events. The indicators worker of
  another process wakes at once instead of at its next idle poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from shared.runtime import Runtime

log = logging.getLogger("dvc766.notify")
CHANNEL = "dvc766_data_changed"
EVENTS_QUEUED = "dvc766_events_queued"


async def announce_change(conn: asyncpg.Connection) -> None:
    """Inside the caller's transaction: at commit, tell the listening processes that scores may have moved."""
    await conn.execute(f"NOTIFY {CHANNEL}")


async def announce_events_queued(conn: asyncpg.Connection) -> None:
    """Inside the caller's transaction: at commit, wake the indicators workers of other processes."""
    await conn.execute(f"NOTIFY {EVENTS_QUEUED}")


def libpq_url(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


class ChangeListener:
    """LISTENs until stopped, reconnecting if the connection drops: :data:`CHANNEL` (bumps the runtime's
    ``data_version``) and, with ``wake_worker``, :data:`EVENTS_QUEUED` (sets ``events_waiting``)."""

    def __init__(self, runtime: Runtime, *, data_changes: bool = True, wake_worker: bool = False,
                 keepalive_seconds: float = 10.0) -> None:
        self.runtime = runtime
        self.channels = {}
        if data_changes:
            self.channels[CHANNEL] = self._notified
        if wake_worker:
            self.channels[EVENTS_QUEUED] = self._events_queued
        self.keepalive_seconds = keepalive_seconds
        self.notifications = 0
        self.listening = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="dvc766-change-listener")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _notified(self, *_args) -> None:
        self.notifications += 1
        self.runtime.data_changed()

    def _events_queued(self, *_args) -> None:
        self.runtime.events_waiting.set()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            conn = None
            try:
                conn = await asyncpg.connect(libpq_url(self.runtime.database_url),
                                             server_settings={"application_name": "dvc766-listener"})
                for channel, callback in self.channels.items():
                    await conn.add_listener(channel, callback)
                # Whatever happened while nobody listened.
                self.runtime.data_changed()
                self.runtime.events_waiting.set()
                self.listening.set()
                while not self._stopping.is_set():
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), self.keepalive_seconds)
                    if not self._stopping.is_set():
                        await conn.execute("SELECT 1")  # a dropped connection shows here
            except Exception:  # the store is away: scores fall back to their time to live meanwhile
                self.listening.clear()
                log.warning("change listener lost its connection; reconnecting", exc_info=True)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), 2.0)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=2)
