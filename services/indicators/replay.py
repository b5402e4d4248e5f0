"""Rebuild dossier states and counters from the stored events (``--check``: compare with the live ones).

The events table is the source of truth: replay re-derives every dossier from its whole history with
the same pure rules the workers use, and sums the contributions into counters from scratch. Without
``--check`` it replaces dossier states and counters in one transaction (live workers wait on the
table locks meanwhile, then carry on from the rebuilt state). With ``--check`` it writes nothing and
exits 1 if any counter differs from what the events give.

Time-dependent flags (an open dossier whose deadline has passed) are evaluated at the moment of the
replay; run ``--check`` when the deadline sweeper has caught up.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import sys
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from services.indicators.engine import IndicatorEngine, history_event, write_counter_delta
from services.indicators.rules.counters import CounterKey, expand
from services.indicators.rules.dossier import HistoryEvent
from shared.db.raw import driver_connection
from shared.runtime import Runtime
from shared.timeutil import utcnow

log = logging.getLogger("dvc766.replay")
CHUNK_DOSSIERS = 2000


@dataclass
class ReplayResult:
    events: int = 0
    dossiers: int = 0
    counters: dict[CounterKey, int] = field(default_factory=dict)
    dossier_rows: list[tuple] = field(default_factory=list)


def counters_from_histories(
    engine: IndicatorEngine,
    histories: dict[str, list[HistoryEvent]],
    now: dt.datetime,
    legal_days: dict | None = None,
) -> dict[CounterKey, int]:
    """Counters of a set of dossier histories, from scratch (pure: the reference for checks and tests)."""
    totals: defaultdict[CounterKey, int] = defaultdict(int)
    for code, history in histories.items():
        _, _, contribution = engine.evaluate(code, sorted(history, key=lambda e: e.seq), now, legal_days or {})
        if contribution is not None:
            for key, value in expand(contribution).items():
                totals[key] += value
    return {k: v for k, v in totals.items() if v}


async def _histories(apg) -> AsyncIterator[dict[str, list[HistoryEvent]]]:
    """Every dossier's history, a chunk of dossiers at a time (a server-side cursor: bounded memory)."""
    chunk: dict[str, list[HistoryEvent]] = {}
    async for row in apg.cursor("SELECT dossier_code, seq, body FROM events ORDER BY dossier_code, seq",
                                prefetch=5000):
        code = row["dossier_code"]
        if code not in chunk and len(chunk) >= CHUNK_DOSSIERS:
            yield chunk
            chunk = {}
        chunk.setdefault(code, []).append(history_event(row["seq"], row["body"]))
    if chunk:
        yield chunk


async def replay_state(apg, engine: IndicatorEngine, now: dt.datetime, *, keep_rows: bool) -> ReplayResult:
    """Re-derive every dossier and the counters they give, inside the caller's transaction."""
    result = ReplayResult()
    totals: defaultdict[CounterKey, int] = defaultdict(int)
    async for chunk in _histories(apg):
        pairs = set()
        for history in chunk.values():
            receipt = next((e for e in history if e.status == 2), None)
            if receipt is not None:
                pairs.add((receipt.unit_code, receipt.procedure_code))
        legal = await engine.legal_days(apg, pairs)
        for code, history in chunk.items():
            result.events += len(history)
            facts, timeliness, contribution = engine.evaluate(code, history, now, legal)
            if contribution is not None:
                for key, value in expand(contribution).items():
                    totals[key] += value
            if keep_rows:
                result.dossier_rows.append(engine._dossier_row(facts, timeliness, contribution))  # noqa: SLF001
        result.dossiers += len(chunk)
    result.counters = {k: v for k, v in totals.items() if v}
    return result


async def live_counters(apg) -> dict[CounterKey, int]:
    rows = await apg.fetch("SELECT unit_code, procedure_code, period, metric, value FROM counters WHERE value <> 0")
    return {(r["unit_code"], r["procedure_code"], r["period"], r["metric"]): r["value"] for r in rows}


def differences(expected: dict[CounterKey, int], live: dict[CounterKey, int]) -> list[tuple[CounterKey, int, int]]:
    keys = set(expected) | set(live)
    return sorted((k, expected.get(k, 0), live.get(k, 0)) for k in keys if expected.get(k, 0) != live.get(k, 0))


async def check(runtime: Runtime, engine: IndicatorEngine, now: dt.datetime | None = None) -> list:
    """Counters that differ between the stored events and the live table (empty: they agree)."""
    async with runtime.engine.connect() as conn:
        apg = await driver_connection(conn)
        async with apg.transaction(isolation="repeatable_read", readonly=True):  # one snapshot for both
            result = await replay_state(apg, engine, now or utcnow(), keep_rows=False)
            live = await live_counters(apg)
    return differences(result.counters, live)


async def rebuild(runtime: Runtime, engine: IndicatorEngine, now: dt.datetime | None = None) -> ReplayResult:
    """Replace every dossier state and all counters with what the stored events give, in one transaction."""
    async with runtime.engine.begin() as conn:
        apg = await driver_connection(conn)
        # Writers (workers, sweeper) wait until the rebuilt state commits; readers carry on.
        await apg.execute("LOCK TABLE events, dossiers, counters IN EXCLUSIVE MODE")
        result = await replay_state(apg, engine, now or utcnow(), keep_rows=True)
        await apg.execute("DELETE FROM dossiers WHERE dossier_code NOT IN (SELECT dossier_code FROM events)")
        for start in range(0, len(result.dossier_rows), CHUNK_DOSSIERS):
            await engine._write_dossiers(apg, result.dossier_rows[start:start + CHUNK_DOSSIERS])  # noqa: SLF001
        await apg.execute("DELETE FROM counters")
        await write_counter_delta(apg, result.counters)
    result.dossier_rows = []
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if the live counters differ from what the events give")
    parser.add_argument("--show", type=int, default=20, help="differences to print with --check")


async def _main(args) -> int:
    from services.app import build_runtime
    from shared.settings import get_settings

    settings = get_settings()
    runtime = await build_runtime(settings, run_migrations=settings.database_url is None)
    engine = IndicatorEngine(runtime.calendar, settings.policy)
    try:
        if args.check:
            diffs = await check(runtime, engine)
            if not diffs:
                print("replay check: the live counters equal the counters rebuilt from the stored events")
                return 0
            print(f"replay check: {len(diffs)} counters differ (unit, procedure, period, metric: events / live)")
            for key, expected, live in diffs[: args.show]:
                print(f"  {key}: {expected} / {live}")
            return 1
        result = await rebuild(runtime, engine)
        print(f"replay: {result.events} events, {result.dossiers} dossiers, {len(result.counters)} counters rebuilt")
        return 0
    finally:
        await runtime.engine.dispose()


def run(args) -> int:
    return asyncio.run(_main(args))


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser(prog="dvc766 replay")
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
