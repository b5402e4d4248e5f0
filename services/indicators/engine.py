"""Applies events to dossier state and counters, inside the caller's transaction.

For every dossier a batch touches: re-read its whole history, derive its facts (pure rules), and
replace its old contribution to the counters with the new one. Counter changes of the whole batch
are summed first and written in one statement, in key order (no deadlocks between workers).

A dossier whose apply raises (a rule that cannot compute its history, a row PostgreSQL refuses) is
*parked*: its contribution leaves the counters, its row is removed, and ``parked_dossiers`` keeps the
error; the rest of the batch commits. Its events stay stored, so its next event, or ``dvc766 replay
--dossier``, derives it again from its whole history (and takes it off the list when that succeeds).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field, replace

import asyncpg

from services.indicators.rules.counters import (
    OVERDUE_STEPS,
    Contribution,
    CounterDelta,
    contribution_of,
)
from services.indicators.rules.dossier import (
    DossierFacts,
    HistoryEvent,
    Timeliness,
    assess,
    derive_facts,
)
from shared.calendar import WorkingCalendar
from shared.db.raw import copy_to_stage, jsonb
from shared.events import DossierEvent, decode_event
from shared.metrics import DEADLINES_CROSSED, DOSSIERS_PARKED, DOSSIERS_RECOMPUTED
from shared.settings import PolicySettings

log = logging.getLogger("dvc766.indicators")


# A dossier row as IndicatorEngine._dossier_row builds it (updated_at takes now()): the column order of
# its upsert, of replay's COPY into ``dossiers``, and of the temporary table the batch's rows are copied
# into (shared/db/raw.py: copy_to_stage).
DOSSIER_ROW = (
    ("dossier_code", "text"), ("unit_code", "text"), ("procedure_code", "text"), ("status", "smallint"),
    ("received_at", "timestamptz"), ("received_month", "text"), ("channel", "smallint"), ("due_at", "timestamptz"),
    ("ended_at", "timestamptz"), ("supplement_count", "smallint"), ("overdue_steps", "smallint"),
    ("overdue_fixed", "boolean"), ("overdue_reason", "text"), ("deadline", "timestamptz"),
    ("deadline_passed", "boolean"), ("no_deadline", "boolean"), ("contribution", "json"), ("attributes", "json"),
    ("step_deadline", "timestamptz"),
)
DOSSIER_COLUMNS = tuple(name for name, _ in DOSSIER_ROW)
DOSSIER_STAGE = ", ".join(f"{name} {kind}" for name, kind in DOSSIER_ROW)
_UPSERT_DOSSIERS = f"""
    WITH staged AS (DELETE FROM stage_dossiers RETURNING *)
    INSERT INTO dossiers ({", ".join(DOSSIER_COLUMNS)}, updated_at)
    SELECT staged.*, now() FROM staged
    ON CONFLICT (dossier_code) DO UPDATE SET
        {", ".join(f"{name} = EXCLUDED.{name}" for name in DOSSIER_COLUMNS[1:])}, updated_at = now()
"""
COUNTER_STAGE = "unit_code text, period text, procedure_code text, metric text, value bigint"


@dataclass
class ApplyResult:
    dossiers: int = 0
    counter_rows: int = 0
    parked: dict[str, str] = field(default_factory=dict)  # dossier code -> error, of those parked now
    touched: frozenset[tuple[str, str]] = frozenset()  # (unit, stored period) of the counter rows moved


def describe_error(exc: BaseException) -> str:
    """What a parked dossier's row says went wrong (bounded: it is stored and served)."""
    return f"{type(exc).__name__}: {exc}"[:2000]


# Errors that refuse one dossier's values: PostgreSQL's (class 22, data exception; 23, integrity) and the
# driver's own while encoding them (a number too large for its column): that dossier is parked. Any other
# error (the store going away, a timeout, a deadlock) rolls the batch back.
DOSSIER_DATA_ERRORS = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, OverflowError,
                       UnicodeEncodeError)


def history_event(seq: int, event: DossierEvent) -> HistoryEvent:
    """The rules' view of a canonical event (read from its stored form, or just validated)."""
    step = event.step
    if step is None:
        return HistoryEvent(seq, event.status, event.occurred_at, event.unit_code, event.procedure_code,
                            event.channel, event.due_at, None, None, event.attributes)
    return HistoryEvent(
        seq=seq,
        status=event.status,
        occurred_at=event.occurred_at,
        unit_code=event.unit_code,
        procedure_code=event.procedure_code,
        channel=event.channel,
        due_at=event.due_at,
        step_due_at=step.due_at,
        step_name=step.name,
        attributes=event.attributes,
        step_started_at=step.started_at,
        step_id=step.id,
        step_open=step.open,
    )


def receipt_pairs(histories) -> set[tuple[str, str]]:
    """(unit, procedure) of each history's receipt (its first status-2 event)."""
    pairs = set()
    for history in histories:
        receipt = min((e for e in history if e.status == 2), key=lambda e: (e.occurred_at, e.seq), default=None)
        if receipt is not None:
            pairs.add((receipt.unit_code, receipt.procedure_code))
    return pairs


def receiving_unit(history: list[HistoryEvent]) -> str | None:
    """The unit of a history's receipt (its first status 2), else of its first event."""
    receipt = min((e for e in history if e.status == 2), key=lambda e: (e.occurred_at, e.seq), default=None)
    first = receipt or min(history, key=lambda e: e.seq, default=None)
    return first.unit_code if first else None


async def read_histories(conn: asyncpg.Connection, codes: list[str]) -> dict[str, list[HistoryEvent]]:
    """The whole stored history of each dossier, read from the partition of its home month (each dossier's
    events are all there: shared/db/partitions.py); a dossier with no event stored has none."""
    months: dict[dt.date, list[str]] = {}
    for row in await conn.fetch("SELECT dossier_code, home_month FROM dossier_owners WHERE dossier_code = ANY($1::text[])",
                                codes):
        months.setdefault(row[1], []).append(row[0])
    histories: dict[str, list[HistoryEvent]] = {}
    for month, in_month in sorted(months.items()):
        # home_month = $1 lets PostgreSQL read that partition only (pruned at execution for a generic plan).
        for row in await conn.fetch("SELECT dossier_code, seq, body::text FROM events "
                                    "WHERE home_month = $1 AND dossier_code = ANY($2::text[])", month, in_month):
            histories.setdefault(row[0], []).append(history_event(row[1], decode_event(row[2])))
    return histories


@dataclass(frozen=True)
class ProcedureTerms:
    """The catalogue's terms for a dossier's (unit, procedure)."""

    legal_days: float | None = None
    fee_required: bool = False


NO_TERMS = ProcedureTerms()


class IndicatorEngine:
    def __init__(self, calendar: WorkingCalendar, policy: PolicySettings) -> None:
        self.calendar = calendar
        self.policy = policy

    async def procedure_terms(self, conn: asyncpg.Connection,
                              pairs: set[tuple[str, str]]) -> dict[tuple[str, str], ProcedureTerms]:
        """What the catalogue says of (unit, procedure) pairs, where loaded: legal processing time (working
        days) and whether the procedure bears fees."""
        if not pairs:
            return {}
        units, procedures = zip(*pairs)
        rows = await conn.fetch(
            """SELECT DISTINCT ON (unit_code, procedure_code) unit_code, procedure_code, legal_days, fee_required
               FROM procedures
               WHERE (unit_code, procedure_code) IN (SELECT * FROM unnest($1::text[], $2::text[]))
               ORDER BY unit_code, procedure_code, valid_from DESC""",
            list(units),
            list(procedures),
        )
        return {(r["unit_code"], r["procedure_code"]): ProcedureTerms(
                    float(r["legal_days"]) if r["legal_days"] is not None else None, r["fee_required"])
                for r in rows}

    def evaluate(
        self, code: str, history: list[HistoryEvent], now: dt.datetime, catalogue: dict[tuple[str, str], ProcedureTerms]
    ) -> tuple[DossierFacts, Timeliness | None, Contribution | None]:
        facts = derive_facts(code, history, self.calendar)
        if facts.received_at is None:
            return facts, None, None
        terms = catalogue.get((facts.unit_code, facts.procedure_code)) or NO_TERMS
        timeliness = assess(
            facts,
            self.calendar,
            legal_days=terms.legal_days,
            due_policy=self.policy.due_time,
        )
        return facts, timeliness, contribution_of(
            facts, timeliness, self.calendar, now, payment_period_fallback=self.policy.payment_period_fallback,
            fee_bearing_procedure=terms.fee_required and self.policy.fee_bearing == "catalogue",
        )

    async def recompute(self, conn: asyncpg.Connection, codes, now: dt.datetime) -> ApplyResult:
        """Re-derive the given dossiers from their whole stored histories and move the counters accordingly."""
        codes = sorted(set(codes))
        if not codes:
            return ApplyResult()
        # A parked dossier has no row: its parked row is locked before the dossiers' rows, so whoever
        # waited for it then sees the row its applier wrote.
        parked_before = {r[0] for r in await conn.fetch(
            "SELECT dossier_code FROM parked_dossiers WHERE dossier_code = ANY($1::text[]) "
            "ORDER BY dossier_code FOR UPDATE", codes)}
        # Lock the dossiers' rows (those that exist) in a fixed order before reading their history.
        old_rows = await conn.fetch(
            "SELECT dossier_code, contribution FROM dossiers WHERE dossier_code = ANY($1::text[]) "
            "ORDER BY dossier_code FOR UPDATE",
            codes,
        )
        old = {row["dossier_code"]: Contribution.from_json(row["contribution"]) for row in old_rows}
        histories = await read_histories(conn, codes)

        legal = await self.procedure_terms(conn, receipt_pairs(histories.values()))

        moves: dict[str, tuple[Contribution | None, Contribution | None, tuple]] = {}
        failed: dict[str, str] = {}
        for code in codes:
            history = histories.get(code)
            if not history:
                continue
            try:
                facts, timeliness, contribution = self.evaluate(code, history, now, legal)
                row = self._dossier_row(facts, timeliness, contribution)
            except MemoryError:
                raise
            except Exception as exc:  # noqa: BLE001 - this dossier's history, not the batch: park it
                failed[code] = describe_error(exc)
                continue
            moves[code] = (old.get(code), contribution, row)
        touched: set[tuple[str, str]] = set()
        written = await self._write_moves(conn, moves, failed, touched)
        if failed:
            written += await self._park(conn, failed, {code: old.get(code) for code in failed}, histories, touched)
        unparked = sorted(parked_before - set(failed))
        if unparked:
            await conn.execute("DELETE FROM parked_dossiers WHERE dossier_code = ANY($1::text[])", unparked)
        DOSSIERS_RECOMPUTED.inc(len(moves))
        return ApplyResult(dossiers=len(moves), counter_rows=written, parked=failed, touched=frozenset(touched))

    async def _write_moves(self, conn: asyncpg.Connection, moves: dict, failed: dict[str, str],
                           touched: set[tuple[str, str]]) -> int:
        """Write the dossiers' rows and their counter changes: all at once, in a savepoint; if PostgreSQL
        refuses a value, one dossier at a time, each in its own savepoint, parking (into ``failed``) those
        it refuses."""
        if not moves:
            return 0
        delta = CounterDelta()
        for before, after, _ in moves.values():
            delta.move(before, after)
        try:
            async with conn.transaction():
                await self._write_dossiers(conn, [row for _, _, row in moves.values()])
                return await write_counter_delta(conn, delta, touched)
        except DOSSIER_DATA_ERRORS:
            log.warning("a batch's dossier rows were refused; writing them one by one", exc_info=True)
        written = 0
        for code, (before, after, row) in moves.items():
            one = CounterDelta()
            one.move(before, after)
            try:
                async with conn.transaction():
                    await self._write_dossiers(conn, [row])
                    written += await write_counter_delta(conn, one, touched)
            except DOSSIER_DATA_ERRORS as exc:
                failed[code] = describe_error(exc)
        return written

    async def _park(self, conn: asyncpg.Connection, failed: dict[str, str], old: dict[str, Contribution | None],
                    histories: dict[str, list[HistoryEvent]], touched: set[tuple[str, str]]) -> int:
        """Take the failed dossiers out of the counters and the dossiers table, and keep why."""
        delta = CounterDelta()
        for code in failed:
            delta.move(old.get(code), None)
        codes = sorted(failed)
        await conn.execute("DELETE FROM dossiers WHERE dossier_code = ANY($1::text[])", codes)
        await write_parked(conn, {code: parked_entry(failed[code], histories.get(code, [])) for code in codes})
        for code in codes:
            log.error("dossier parked: its events could not be applied",
                      extra={"dossier": code, "error": failed[code]})
        DOSSIERS_PARKED.inc(len(codes))
        return await write_counter_delta(conn, delta, touched)

    def _dossier_row(self, facts: DossierFacts, timeliness: Timeliness | None, contribution: Contribution | None):
        fixed = None
        reason = None
        deadline = None
        if timeliness is not None:
            if timeliness.fixed:
                fixed = timeliness.overdue
                reason = timeliness.reason
            else:
                deadline = timeliness.deadline
        return (
            facts.dossier_code,
            facts.unit_code,
            facts.procedure_code,
            facts.current_status,
            facts.received_at,
            contribution.received_month if contribution else None,
            facts.channel if facts.received_at else None,
            facts.due_at(self.policy.due_time),
            facts.ended_at,
            facts.supplement_count,
            contribution.counts.get(OVERDUE_STEPS, 0) if contribution else facts.overdue_steps,  # open ones too
            fixed,
            reason,
            deadline,
            bool(contribution and contribution.deadline_passed),
            bool(timeliness and timeliness.no_deadline),
            jsonb(contribution.to_json()) if contribution else None,
            jsonb(facts.attributes or None),
            contribution.next_step_deadline if contribution else None,
        )

    async def _write_dossiers(self, conn: asyncpg.Connection, rows: list[tuple]) -> None:
        if not rows:
            return
        await copy_to_stage(conn, "stage_dossiers", DOSSIER_STAGE, rows)
        await conn.execute(_UPSERT_DOSSIERS)

    async def sweep_deadlines(self, conn: asyncpg.Connection, now: dt.datetime, limit: int = 20000,
                              touched: set[tuple[str, str]] | None = None) -> int:
        """Open dossiers whose deadline the clock has crossed, with no event, turn overdue now (``touched``
        gets the (unit, period) of the counter rows moved)."""
        rows = await conn.fetch(
            """SELECT dossier_code, contribution FROM dossiers
               WHERE deadline IS NOT NULL AND NOT deadline_passed AND deadline < $1
               ORDER BY dossier_code LIMIT $2 FOR UPDATE SKIP LOCKED""",
            now,
            limit,
        )
        if not rows:
            return 0
        delta = CounterDelta()
        codes = []
        contributions = []
        for row in rows:
            old = Contribution.from_json(row["contribution"])
            if old is None:
                continue
            new = replace(old, deadline_passed=True)
            delta.move(old, new)
            codes.append(row["dossier_code"])
            contributions.append(jsonb(new.to_json()))
        await conn.execute(
            """UPDATE dossiers d SET deadline_passed = true, contribution = u.c, updated_at = now()
               FROM unnest($1::text[], $2::json[]) AS u(code, c) WHERE d.dossier_code = u.code""",
            codes,
            contributions,
        )
        await write_counter_delta(conn, delta, touched)
        DEADLINES_CROSSED.inc(len(codes))
        return len(codes)

    async def sweep_open_steps(self, conn: asyncpg.Connection, now: dt.datetime, limit: int = 5000,
                               touched: set[tuple[str, str]] | None = None) -> int:
        """Dossiers with a step still open whose deadline the clock has crossed, with no event: re-derived
        now, so their overdue steps count it (``touched`` as in :meth:`sweep_deadlines`). Returns how many
        moved. The dossiers of an archived month are left as they are: their events are in files."""
        codes = await conn.fetch(
            """SELECT d.dossier_code FROM dossiers d JOIN dossier_owners o USING (dossier_code)
               WHERE d.step_deadline < $1 AND o.home_month NOT IN (SELECT month FROM archived_months)
               ORDER BY d.dossier_code LIMIT $2 FOR UPDATE OF d SKIP LOCKED""",
            now,
            limit,
        )
        if not codes:
            return 0
        result = await self.recompute(conn, [r["dossier_code"] for r in codes], now)
        if touched is not None:
            touched.update(result.touched)
        return result.dossiers + len(result.parked)


# A parked dossier's row: (error, receiving unit, events, seq of its last event).
ParkedEntry = tuple[str, str | None, int, int | None]


def parked_entry(error: str, history: list[HistoryEvent]) -> ParkedEntry:
    return error, receiving_unit(history), len(history), max((e.seq for e in history), default=None)


async def write_parked(conn: asyncpg.Connection, parked: dict[str, ParkedEntry]) -> None:
    """Park these dossiers (again: the error is replaced, the attempts counted, the first time kept)."""
    if not parked:
        return
    codes = sorted(parked)
    errors, units, events, last_seqs = (list(column) for column in zip(*(parked[code] for code in codes)))
    await conn.execute(
        """INSERT INTO parked_dossiers AS p (dossier_code, unit_code, error, events, last_seq)
           SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::bigint[])
           ON CONFLICT (dossier_code) DO UPDATE SET unit_code = EXCLUDED.unit_code, error = EXCLUDED.error,
               events = EXCLUDED.events, last_seq = EXCLUDED.last_seq, attempts = p.attempts + 1, updated_at = now()""",
        codes, units, errors, events, last_seqs,
    )


async def write_counter_delta(conn: asyncpg.Connection, delta: CounterDelta,
                              touched: set[tuple[str, str]] | None = None) -> int:
    """Add the delta to the counters; returns the rows written (``touched`` gets their (unit, period))."""
    changes = delta.rows()
    if not changes:
        return 0
    if touched is not None:
        touched.update((row[0], row[1]) for row in changes)
    await copy_to_stage(conn, "stage_counters", COUNTER_STAGE, changes)
    # In primary-key order, the order every writer locks rows in: concurrent workers cannot deadlock.
    await conn.execute(
        """WITH staged AS (DELETE FROM stage_counters RETURNING *)
           INSERT INTO counters (unit_code, period, procedure_code, metric, value)
           SELECT unit_code, period, procedure_code, metric, value FROM staged
           ORDER BY unit_code, period, procedure_code, metric
           ON CONFLICT (unit_code, period, procedure_code, metric)
           DO UPDATE SET value = counters.value + EXCLUDED.value"""
    )
    return len(changes)
