"""Processes that serve scores learn at once that another process committed a change.

The indicators worker (its own process in a split deployment) sends ``NOTIFY`` inside each batch's
transaction, so PostgreSQL delivers it at commit and never for a rolled-back batch. Every process that
serves the API listens on one connection of its own and bumps its runtime's ``data_version``: cached
scores are recomputed on the next request instead of waiting for their time to live.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from shared.runtime import Runtime

log = logging.getLogger("dvc766.notify")
CHANNEL = "dvc766_data_changed"


async def announce_change(conn: asyncpg.Connection) -> None:
    """Inside the caller's transaction: at commit, tell the listening processes that scores may have moved."""
    await conn.execute(f"NOTIFY {CHANNEL}")


def libpq_url(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


class ChangeListener:
    """LISTENs for :data:`CHANNEL` until stopped, reconnecting if the connection drops."""

    def __init__(self, runtime: Runtime, *, keepalive_seconds: float = 10.0) -> None:
        self.runtime = runtime
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

    async def _run(self) -> None:
        while not self._stopping.is_set():
            conn = None
            try:
                conn = await asyncpg.connect(libpq_url(self.runtime.database_url),
                                             server_settings={"application_name": "dvc766-listener"})
                await conn.add_listener(CHANNEL, self._notified)
                self.runtime.data_changed()  # whatever changed while nobody listened
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
