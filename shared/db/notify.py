"""PostgreSQL LISTEN/NOTIFY between processes: a notification sent inside a transaction is delivered at
its commit, never for a rolled-back one.

An indicators worker wakes as soon as another process queues events: ingest on the database path
sends :data:`EVENTS_QUEUED` in the transaction that stores them, and the worker applies at once instead
of at its next idle poll. (The api's card cache listens the same way: services/indicators/cards.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from shared.db.engine import libpq_url
from shared.runtime import Runtime

log = logging.getLogger("dvc766.notify")
EVENTS_QUEUED = "dvc766_events_queued"


async def announce_events_queued(conn: asyncpg.Connection) -> None:
    """Inside the caller's transaction: at commit, wake the indicators workers of other processes."""
    await conn.execute(f"NOTIFY {EVENTS_QUEUED}")


class Listener:
    """LISTENs to ``channel`` until stopped, reconnecting if the connection drops: ``notified`` for each
    notification, ``connected`` once listening (whatever was sent while nobody listened is unknown),
    ``lost`` when the connection is gone."""

    channel = ""

    def __init__(self, runtime: Runtime, *, keepalive_seconds: float = 10.0) -> None:
        self.runtime = runtime
        self.keepalive_seconds = keepalive_seconds
        self.notifications = 0
        self.listening = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task | None = None

    def notified(self) -> None:
        raise NotImplementedError

    def connected(self) -> None:
        raise NotImplementedError

    def lost(self) -> None:
        """Nothing by default: until it listens again, what was sent is unknown."""

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"dvc766-listener-{self.channel}")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _notification(self, *_args) -> None:
        self.notifications += 1
        self.notified()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            conn = None
            try:
                conn = await asyncpg.connect(libpq_url(self.runtime.database_url),
                                             server_settings={"application_name": "dvc766-listener"})
                await conn.add_listener(self.channel, self._notification)
                self.connected()
                self.listening.set()
                while not self._stopping.is_set():
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), self.keepalive_seconds)
                    if not self._stopping.is_set():
                        await conn.execute("SELECT 1")  # a dropped connection shows here
            except Exception:  # the store is away: the listener's users do without meanwhile
                self.listening.clear()
                self.lost()
                log.warning("listener lost its connection; reconnecting", exc_info=True,
                            extra={"channel": self.channel})
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), 2.0)
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=2)
        self.listening.clear()
        self.lost()


class EventsQueuedListener(Listener):
    """Sets the runtime's ``events_waiting`` on each :data:`EVENTS_QUEUED`, and on (re)connecting."""

    channel = EVENTS_QUEUED

    def notified(self) -> None:
        self.runtime.events_waiting.set()

    def connected(self) -> None:
        self.runtime.events_waiting.set()  # whatever was queued while nobody listened
