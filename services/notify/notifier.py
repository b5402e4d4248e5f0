"""The notifier: watches targets, senders' rejects and open dossiers, and delivers webhooks.

Two loops of the indicators role (also in ``dvc766 serve``), apart from ingest and apply: they only
read what those commit, on their own connections, so a slow receiver never holds back an event.

- **evaluate** (every ``notify.evaluate_interval_seconds``): each target for its current and just-closed
  period, each sender's rejects in the trailing window, and, once a day per unit, the dossiers about to
  turn overdue. A change of state is compared with ``notification_states`` and, in the same
  transaction that records the new state, one delivery per subscribed webhook is queued: announced
  once, whatever crashes.
- **deliver** (every ``notify.deliver_poll_seconds``, and at once after an evaluation queued some):
  claims due deliveries for a lease, posts them signed, and writes each outcome back. A non-2xx answer
  or no answer is retried with backoff, under the same delivery id, until ``notify.retry_for_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable

import httpx
import orjson

from services.indicators.rules.targets import announcement
from services.notify import rules
from services.notify.evaluate import TargetResult, evaluate, load_targets, local_date, watched_periods
from shared.db.raw import driver_connection
from shared.metrics import (
    LAST_NOTIFY_EVALUATION,
    NOTIFICATIONS_QUEUED,
    NOTIFY_EVALUATION_SECONDS,
    NOTIFY_FAILURES,
    WEBHOOK_ATTEMPTS,
)
from shared.runtime import Runtime
from shared.settings import NotifySettings
from shared.timeutil import VIETNAM, current_period, utcnow

log = logging.getLogger("dvc766.notify")
NOTIFY_LOCK = 766_003  # advisory lock: one process evaluates at a time


class Notifier:
    def __init__(self, runtime: Runtime, *, clock: Callable[[], dt.datetime] = utcnow,
                 settings: NotifySettings | None = None) -> None:
        self.runtime = runtime
        self.settings = settings or runtime.settings.notify
        self.clock = clock
        self._client: httpx.AsyncClient | None = None
        self._stopping = asyncio.Event()
        self._queued = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    # ------------------------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._evaluate_loop(), name="dvc766-notify-evaluate"),
                       asyncio.create_task(self._deliver_loop(), name="dvc766-notify-deliver")]

    async def stop(self) -> None:
        self._stopping.set()
        self._queued.set()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _evaluate_loop(self) -> None:
        while not self._stopping.is_set():
            started = time.perf_counter()
            try:
                if await self.evaluate_once():
                    self._queued.set()
                LAST_NOTIFY_EVALUATION.set(time.time())
                NOTIFY_EVALUATION_SECONDS.observe(time.perf_counter() - started)
            except Exception:
                NOTIFY_FAILURES.inc()
                log.exception("notification evaluation failed; will retry")
            await self._sleep(self.settings.evaluate_interval_seconds)

    async def _deliver_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                while await self.deliver_due() and not self._stopping.is_set():
                    pass
            except Exception:
                NOTIFY_FAILURES.inc()
                log.exception("webhook delivery pass failed; will retry")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._queued.wait(), self.settings.deliver_poll_seconds)
            self._queued.clear()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    # ----------------------------------------------------------------------------------- evaluate

    async def evaluate_once(self) -> int:
        """One pass over targets, rejects and digests; returns how many deliveries it queued."""
        now = self.clock()
        async with self.runtime.engine.begin() as conn:
            apg = await driver_connection(conn)
            if not await apg.fetchval("SELECT pg_try_advisory_xact_lock($1)", NOTIFY_LOCK):
                return 0
            hooks = [dict(r) for r in await apg.fetch("SELECT id, events, units FROM webhooks")]
            for hook in hooks:
                hook["events"] = list(hook["events"])
                hook["units"] = list(hook["units"]) if hook["units"] else None
            queued = await self._targets(apg, hooks, now)
            queued += await self._rejects(apg, hooks, now)
            queued += await self._due_soon(apg, hooks, now)
        return queued

    async def _states(self, apg, keys: list[str]) -> dict[str, str]:
        rows = await apg.fetch("SELECT key, state FROM notification_states WHERE key = ANY($1::text[])", keys)
        return {r["key"]: r["state"] for r in rows}

    async def _record(self, apg, changes: list[tuple[str, str, dict | None]], now: dt.datetime) -> None:
        if not changes:
            return
        await apg.executemany(
            """INSERT INTO notification_states (key, state, detail, updated_at) VALUES ($1, $2, $3, $4)
               ON CONFLICT (key) DO UPDATE SET state = EXCLUDED.state, detail = EXCLUDED.detail,
                   updated_at = EXCLUDED.updated_at""",
            [(key, state, orjson.dumps(detail).decode() if detail is not None else None, now)
             for key, state, detail in changes],
        )

    async def _queue(self, apg, hooks: list[dict], event: str, unit: str | None, data: dict,
                     now: dt.datetime) -> int:
        tree = self.runtime.units
        rows = []
        for hook in hooks:
            if not rules.wants(hook["events"], hook["units"], event, unit, tree.is_within):
                continue
            delivery = str(uuid.uuid4())
            body = orjson.dumps({"id": delivery, "event": event,
                                 "created_at": now.astimezone(VIETNAM).isoformat(timespec="seconds"),
                                 "data": data}).decode()
            rows.append((delivery, hook["id"], event, body, now))
        if rows:
            NOTIFICATIONS_QUEUED.labels(event).inc(len(rows))
            await apg.executemany(
                """INSERT INTO webhook_deliveries (id, webhook_id, event, body, created_at, state, next_attempt_at)
                   VALUES ($1, $2, $3, $4, $5, 'pending', $5)""",
                rows,
            )
        return len(rows)

    async def _targets(self, apg, hooks: list[dict], now: dt.datetime) -> int:
        targets = await load_targets(apg)
        if not targets:
            return 0
        wanted = [(t, p) for t in targets for p in watched_periods(t, now)]
        results = await evaluate(self.runtime, apg, wanted, now)
        known = await self._states(apg, [r.key for r in results])
        queued = 0
        changes = []
        for result in results:
            previous = known.get(result.key)
            if previous == result.status:
                continue
            changes.append((result.key, result.status, _detail(result)))
            event = announcement(previous, result.status)
            if previous is None and result.period != current_period(now, result.target.period):
                event = None  # a period that closed before it was first looked at: recorded, not announced
            if event:
                queued += await self._queue(apg, hooks, event, result.unit,
                                            {**result.as_dict(), "previous_status": previous}, now)
        await self._record(apg, changes, now)
        return queued

    async def _rejects(self, apg, hooks: list[dict], now: dt.datetime) -> int:
        s = self.settings
        since = now - dt.timedelta(seconds=s.rejects_window_seconds)
        rows = await apg.fetch(
            """SELECT source, reason, count(*) AS n FROM dead_letters
               WHERE created_at >= $1 AND source IS NOT NULL GROUP BY source, reason""",
            since,
        )
        by_source: dict[str, dict[str, int]] = {}
        for r in rows:
            by_source.setdefault(r["source"], {})[r["reason"]] = r["n"]
        keys = [f"source:{source}" for source in by_source]
        known = await self._states(apg, keys) if keys else {}
        above_before = await apg.fetch("SELECT key FROM notification_states WHERE key LIKE 'source:%' "
                                       "AND state = 'above'")
        queued = 0
        changes = []
        for source, reasons in sorted(by_source.items()):
            count = sum(reasons.values())
            state = "above" if count >= s.rejects_threshold else "below"
            key = f"source:{source}"
            if known.get(key, "below") == state:
                continue
            detail = {"source": source, "rejected": count, "window_seconds": s.rejects_window_seconds,
                      "threshold": s.rejects_threshold, "reasons": dict(sorted(reasons.items(), key=lambda i: -i[1]))}
            changes.append((key, state, detail))
            if state == "above":
                unit = self._unit_of_source(source)
                queued += await self._queue(apg, hooks, "source.rejects", unit, detail, now)
        for row in above_before:  # a sender with no rejects left in the window is below again
            if row["key"] not in keys:
                changes.append((row["key"], "below", None))
        await self._record(apg, changes, now)
        return queued

    def _unit_of_source(self, source: str) -> str | None:
        for key in self.runtime.settings.api_keys.values():
            if key.source == source and len(key.units) == 1:
                return key.units[0]
        return None

    async def _due_soon(self, apg, hooks: list[dict], now: dt.datetime) -> int:
        if not any("dossiers.due_soon" in h["events"] for h in hooks):
            return 0
        local = now.astimezone(VIETNAM)
        calendar = self.runtime.calendar
        if local.time() < self.settings.digest_local_time or not calendar.is_working_day(local.date()):
            return 0
        days = self.runtime.settings.policy.early_warning_days
        horizon = calendar.instant_after(now, days * calendar.seconds_per_day)
        today = local_date(now).isoformat()
        rows = await apg.fetch(
            """SELECT unit_code, dossier_code, procedure_code, status, received_at, due_at, deadline FROM dossiers
               WHERE ended_at IS NULL AND overdue_fixed IS NULL AND deadline IS NOT NULL AND NOT deadline_passed
                 AND deadline >= $1 AND deadline < $2
               ORDER BY unit_code, deadline, dossier_code""",
            now, horizon,
        )
        by_unit: dict[str, list] = {}
        for r in rows:
            by_unit.setdefault(r["unit_code"], []).append(r)
        keys = [f"due_soon:{unit}:{today}" for unit in by_unit]
        known = await self._states(apg, keys) if keys else {}
        queued = 0
        changes = []
        limit = self.settings.digest_max_dossiers
        for unit, items in sorted(by_unit.items()):
            key = f"due_soon:{unit}:{today}"
            if key in known:
                continue
            data = {
                "unit": unit, "date": today, "days": days,
                "horizon": horizon.astimezone(VIETNAM).isoformat(timespec="seconds"),
                "count": len(items),
                "dossiers": [{"dossier_code": r["dossier_code"], "procedure_code": r["procedure_code"],
                              "status": r["status"], "received_at": _iso(r["received_at"]),
                              "due_at": _iso(r["due_at"]), "turns_overdue_at": _iso(r["deadline"])}
                             for r in items[:limit]],
            }
            changes.append((key, "sent", {"count": len(items)}))
            queued += await self._queue(apg, hooks, "dossiers.due_soon", unit, data, now)
        await self._record(apg, changes, now)
        return queued

    # ------------------------------------------------------------------------------------ deliver

    async def deliver_due(self, limit: int = 20) -> int:
        """Claim up to ``limit`` due deliveries, post them, record the outcomes; returns how many were tried."""
        s = self.settings
        now = self.clock()
        lease = dt.timedelta(seconds=s.timeout_seconds + 30)
        async with self.runtime.engine.begin() as conn:
            apg = await driver_connection(conn)
            claimed = await apg.fetch(
                """WITH due AS (
                       SELECT id FROM webhook_deliveries WHERE state = 'pending' AND next_attempt_at <= $1
                       ORDER BY next_attempt_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)
                   UPDATE webhook_deliveries d SET next_attempt_at = $3 FROM due WHERE d.id = due.id
                   RETURNING d.id, d.webhook_id, d.event, d.body, d.attempts, d.created_at""",
                now, limit, now + lease,
            )
            hooks = {r["id"]: r for r in await apg.fetch(
                "SELECT id, url, secret FROM webhooks WHERE id = ANY($1::text[])",
                list({r["webhook_id"] for r in claimed}))} if claimed else {}
        if not claimed:
            return 0
        claimed = sorted(claimed, key=lambda r: (r["created_at"], r["id"]))
        # Webhooks are posted to concurrently; each one's deliveries in the order they were queued.
        by_hook: dict[str, list] = {}
        for row in claimed:
            by_hook.setdefault(row["webhook_id"], []).append(row)

        async def post_in_order(rows: list) -> list:
            return [(row, await self._post(hooks.get(row["webhook_id"]), row)) for row in rows]

        posted = await asyncio.gather(*(post_in_order(rows) for rows in by_hook.values()))
        async with self.runtime.engine.begin() as conn:
            apg = await driver_connection(conn)
            for row, (status, error, at, millis) in (pair for rows in posted for pair in rows):
                await self._write_outcome(apg, row, status, error, at, millis)
        return len(claimed)

    async def _post(self, hook, row) -> tuple[int | None, str | None, dt.datetime, int]:
        at = self.clock()
        started = time.perf_counter()
        if hook is None:
            return None, "webhook_removed", at, 0
        body = row["body"].encode()
        headers = {
            "content-type": "application/json",
            "user-agent": "dvc766-webhooks",
            "x-dvc766-event": row["event"],
            "x-dvc766-delivery": row["id"],
            "x-dvc766-signature": rules.signature(hook["secret"], body),
        }
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.settings.timeout_seconds, follow_redirects=False)
        try:
            response = await self._client.post(hook["url"], content=body, headers=headers)
            status, error = response.status_code, None if rules.delivered(response.status_code) else \
                f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            status, error = None, f"{type(exc).__name__}: {exc}"[:500]
        return status, error, at, int((time.perf_counter() - started) * 1000)

    async def _write_outcome(self, apg, row, status: int | None, error: str | None, at: dt.datetime,
                             millis: int) -> None:
        s = self.settings
        attempts = row["attempts"] + 1
        outcome = orjson.dumps([{"at": at.astimezone(VIETNAM).isoformat(timespec="seconds"), "status": status,
                                 "error": error, "ms": millis}]).decode()
        if rules.delivered(status):
            WEBHOOK_ATTEMPTS.labels("delivered").inc()
            await apg.execute(
                """UPDATE webhook_deliveries SET state = 'delivered', attempts = $2, last_status = $3,
                       last_error = NULL, delivered_at = $4, next_attempt_at = NULL, outcomes = outcomes || $5::jsonb
                   WHERE id = $1""",
                row["id"], attempts, status, at, outcome)
            return
        delay = rules.retry_delay(attempts, base=s.retry_base_seconds, cap=s.retry_max_seconds)
        age = (at - row["created_at"]).total_seconds()
        gave_up = error == "webhook_removed" or rules.gives_up(age, delay, retry_for=s.retry_for_seconds)
        WEBHOOK_ATTEMPTS.labels("failed" if gave_up else "retry").inc()
        await apg.execute(
            """UPDATE webhook_deliveries SET state = $2, attempts = $3, last_status = $4, last_error = $5,
                   next_attempt_at = $6, outcomes = outcomes || $7::jsonb
               WHERE id = $1""",
            row["id"], "failed" if gave_up else "pending", attempts, status, error,
            None if gave_up else at + dt.timedelta(seconds=delay), outcome)
        log.warning("webhook delivery failed", extra={"delivery": row["id"], "webhook": row["webhook_id"],
                                                       "status": status, "error": error, "gave_up": gave_up})


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(VIETNAM).isoformat(timespec="seconds") if value else None


def _detail(result: TargetResult) -> dict:
    return {"value": result.value, "projected": result.projected}
