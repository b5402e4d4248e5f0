"""The indicators worker on the database path (no Kafka): drains the queue of accepted events.

One transaction per batch holds the dequeue, the dossier states and the counters, so a crash
anywhere leaves either the whole batch applied or none of it (still queued). A transaction-level
advisory lock keeps a second worker process from applying the same dossiers concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time

from services.indicators.cards import counters_moved, record_daily_scores, refresh_marked
from services.indicators.engine import IndicatorEngine
from services.indicators.snapshots import take_due_snapshots
from shared.db.partitions import ensure_ahead
from shared.db.raw import driver_connection
from shared.metrics import (
    APPLY_BATCH_SIZE,
    APPLY_SECONDS,
    DOSSIERS_OPEN,
    DOSSIERS_OPEN_OVERDUE,
    EVENTS_APPLIED,
    LAST_APPLIED,
    LAST_SNAPSHOT,
    LAST_SWEEP,
    PARKED_DOSSIERS,
    PENDING_EVENTS,
    SNAPSHOT_FAILURES,
    SWEEP_FAILURES,
    unwatch_applier,
    watch_applier,
)
from shared.runtime import Runtime
from shared.timeutil import VIETNAM, utcnow

log = logging.getLogger("dvc766.indicators.worker")
APPLY_LOCK = 766_001  # advisory lock key of the appliers
SNAPSHOT_LOCK = 766_002  # advisory lock key of the scheduled snapshot


async def apply_pending(runtime: Runtime, engine: IndicatorEngine, batch_size: int,
                        now: dt.datetime | None = None) -> int | None:
    """Apply up to ``batch_size`` queued events; returns how many were applied (0: none queued), or None
    when another transaction (a worker, the sweep) holds the apply lock: not this worker's turn, which is
    neither progress nor an empty queue. ``now``: the evaluation instant (default the clock)."""
    async with runtime.engine.begin() as conn:
        apg = await driver_connection(conn)
        if not await apg.fetchval("SELECT pg_try_advisory_xact_lock($1)", APPLY_LOCK):
            return None
        started = time.perf_counter()
        # (seq, home_month) is the events' key: each queued event is read from its own partition.
        rows = await apg.fetch(
            """WITH batch AS (
                   DELETE FROM pending_events WHERE seq IN (
                       SELECT seq FROM pending_events ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED)
                   RETURNING seq, home_month)
               SELECT e.dossier_code FROM events e
               JOIN batch b ON b.seq = e.seq AND b.home_month = e.home_month""",
            batch_size,
        )
        if not rows:
            return 0
        result = await engine.recompute(apg, {row[0] for row in rows}, now or utcnow())
    await counters_moved(runtime, result.touched)
    APPLY_SECONDS.observe(time.perf_counter() - started)
    APPLY_BATCH_SIZE.observe(len(rows))
    EVENTS_APPLIED.inc(len(rows))
    LAST_APPLIED.set(time.time())
    return len(rows)


async def prepare_partitions(runtime: Runtime) -> list[dt.date]:
    """The partitions of events for this month and the next ones exist (created if not; returns those)."""
    async with runtime.engine.begin() as conn:
        apg = await driver_connection(conn)
        return await ensure_ahead(apg, utcnow().date(), runtime.settings.partitions_ahead_months)


async def sweep(runtime: Runtime, engine: IndicatorEngine) -> int:
    async with runtime.engine.begin() as conn:
        apg = await driver_connection(conn)
        if not await apg.fetchval("SELECT pg_try_advisory_xact_lock($1)", APPLY_LOCK):
            return 0
        now = utcnow()
        touched: set[tuple[str, str]] = set()
        crossed = await engine.sweep_deadlines(apg, now, touched=touched)
        crossed += await engine.sweep_open_steps(apg, now, touched=touched)
    await counters_moved(runtime, touched)
    return crossed


async def refresh_gauges(runtime: Runtime) -> dt.datetime | None:
    """Set the dossier and queue gauges; returns when the oldest queued event was accepted (None: none)."""
    async with runtime.engine.connect() as conn:
        apg = await driver_connection(conn)
        row = await apg.fetchrow(
            """SELECT count(*) AS open, count(*) FILTER (WHERE overdue_fixed OR deadline_passed) AS overdue
               FROM dossiers WHERE ended_at IS NULL AND received_at IS NOT NULL"""
        )
        pending = await apg.fetchval("SELECT count(*) FROM pending_events")
        parked = await apg.fetchval("SELECT count(*) FROM parked_dossiers")
        oldest = await apg.fetchval(
            """SELECT e.accepted_at FROM pending_events p JOIN events e ON e.seq = p.seq ORDER BY p.seq LIMIT 1"""
        )
    DOSSIERS_OPEN.set(row["open"])
    DOSSIERS_OPEN_OVERDUE.set(row["overdue"])
    PENDING_EVENTS.set(pending)
    PARKED_DOSSIERS.set(parked)
    return oldest


async def take_scheduled_snapshot(runtime: Runtime, now: dt.datetime | None = None) -> list[dict]:
    """On a scheduled snapshot day, once its configured local time has passed, freeze every unit's scores."""
    at = runtime.settings.snapshot_local_time
    now = now or utcnow()
    if at is None or now.astimezone(VIETNAM).time() < at:
        return []
    async with runtime.engine.begin() as conn:  # one process at a time decides and takes it
        apg = await driver_connection(conn)
        if not await apg.fetchval("SELECT pg_try_advisory_xact_lock($1)", SNAPSHOT_LOCK):
            return []
        taken = await take_due_snapshots(runtime, now)
    for snapshot in taken:
        log.info("scheduled snapshot taken", extra={"snapshot": snapshot.get("id"), "period": snapshot.get("period")})
    return taken


class QueueWorker:
    """Runs the apply loop, the deadline sweeper and the gauges until stopped.

    ``stop()`` lets the batch in flight finish (its transaction commits or rolls back whole).
    """

    def __init__(self, runtime: Runtime, engine: IndicatorEngine) -> None:
        self.runtime = runtime
        self.engine = engine
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.applies_queue = False
        # When the apply loop last finished a round without error (a batch committed, or the queue found
        # empty); a round blocked on a lock or failing over and over leaves it behind.
        self._progress_at = time.monotonic()
        self._oldest_pending_at: dt.datetime | None = None
        self._last_daily = time.monotonic()  # when today's score history was last recorded (first: an interval in)
        self._last_full_refresh = float("-inf")

    def start(self, *, apply_queue: bool = True) -> None:
        if apply_queue:
            self.applies_queue = True
            self._tasks.append(asyncio.create_task(self._apply_loop(), name="dvc766-apply"))
            watch_applier(self)
        self._tasks.append(asyncio.create_task(self._sweep_loop(), name="dvc766-sweep"))
        self._tasks.append(asyncio.create_task(self._cards_loop(), name="dvc766-cards"))

    def stalled_seconds(self) -> float:
        return time.monotonic() - self._progress_at if self.applies_queue else 0.0

    def behind_seconds(self) -> float:
        if self._oldest_pending_at is None:
            return 0.0
        return max(0.0, (utcnow() - self._oldest_pending_at).total_seconds())

    async def ready(self) -> str:
        if any(task.done() for task in self._tasks):
            return "not running"
        stalled = self.stalled_seconds()
        if stalled > self.runtime.settings.apply_stall_seconds:
            return f"stalled: no batch applied for {stalled:.0f} s while events are queued"
        return "ok"

    async def stop(self) -> None:
        unwatch_applier(self)
        self._stopping.set()
        self.runtime.events_waiting.set()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _apply_loop(self) -> None:
        settings = self.runtime.settings
        while not self._stopping.is_set():
            try:
                applied = await apply_pending(self.runtime, self.engine, settings.apply_batch_size)
            except Exception:  # the store went away mid-batch: nothing was committed; retry shortly
                log.exception("applying a batch failed; it stays queued")
                await self._sleep(1.0)
                continue
            if applied is None:  # the lock holder may be blocked (a sweep on a locked table): not progress
                await self._wait_for_events(settings.apply_idle_poll_seconds)
                continue
            self._progress_at = time.monotonic()
            if applied < settings.apply_batch_size:
                self._oldest_pending_at = None  # the queue was drained
                await self._wait_for_events(settings.apply_idle_poll_seconds)

    async def _cards_loop(self) -> None:
        """Recompute the score cards marked out of date, and now and then every card."""
        settings = self.runtime.settings
        while not self._stopping.is_set():
            everything = time.monotonic() - self._last_full_refresh >= settings.score_card_full_refresh_seconds
            try:
                await refresh_marked(self.runtime, everything=everything)
                if everything:
                    self._last_full_refresh = time.monotonic()
            except Exception:
                log.exception("refreshing the score cards failed; will retry")
            await self._sleep(settings.score_card_refresh_seconds)

    async def _sweep_loop(self) -> None:
        interval = self.runtime.settings.sweep_interval_seconds
        while not self._stopping.is_set():
            try:
                await prepare_partitions(self.runtime)
                while await sweep(self.runtime, self.engine):
                    pass
                LAST_SWEEP.set(time.time())
                oldest = await refresh_gauges(self.runtime)
                if self.applies_queue:
                    self._oldest_pending_at = oldest
            except Exception:
                SWEEP_FAILURES.inc()
                log.exception("deadline sweep failed; will retry")
            try:
                if await take_scheduled_snapshot(self.runtime):
                    LAST_SNAPSHOT.set(time.time())
            except Exception:
                SNAPSHOT_FAILURES.inc()
                log.exception("scheduled snapshot failed; will retry")
            if time.monotonic() - self._last_daily >= self.runtime.settings.daily_scores_interval_seconds:
                try:
                    await record_daily_scores(self.runtime)
                    self._last_daily = time.monotonic()
                except Exception:
                    log.exception("recording the day's scores failed; will retry")
            await self._sleep(interval)

    async def _wait_for_events(self, timeout: float) -> None:
        waiting = self.runtime.events_waiting
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(waiting.wait(), timeout)
        waiting.clear()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
