"""Durable storage of accepted events and dead letters (the ingest edge's only I/O)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import asyncpg

from shared.db.partitions import month_of
from shared.events import DossierEvent, Reason, Rejection

ACCEPTED, DUPLICATE, CONFLICT, ARCHIVED = "accepted", "duplicate", "conflict", "archived"


@dataclass(frozen=True)
class DeadLetter:
    transport: str
    reason: str
    detail: str
    raw: str
    source: str | None = None
    event_index: int | None = None
    event_id: str | None = None
    kafka_topic: str | None = None
    kafka_partition: int | None = None
    kafka_offset: int | None = None


def refusal(outcome: str) -> Rejection | None:
    """The rejection of an event ``store_events`` did not keep (conflict, archived), else None."""
    if outcome == CONFLICT:
        return Rejection(Reason.CONFLICT, "a different event was already accepted under this event_id; "
                         "the first one stands", "event_id")
    if outcome == ARCHIVED:
        return Rejection(Reason.DOSSIER_ARCHIVED, "this event's dossier belongs to an archived month; its "
                         "history can no longer change (the event is kept as a dead letter)", "dossier_code")
    return None


def batch_months(batch: list[DossierEvent]) -> set[dt.date]:
    """The months whose partitions a batch may need: a new dossier's home month is its first event's."""
    return {month_of(event.occurred_at) for event in batch}


async def store_events(
    conn: asyncpg.Connection, batch: list[DossierEvent], *, transport: str, enqueue: bool,
) -> tuple[list[str], list[int]]:
    """Insert events idempotently on (source, event_id), each into its dossier's home-month partition.

    The dossiers' owners (with their home months) must be claimed first, in the same transaction
    (services/events/ownership.py), and the partitions of :func:`batch_months` ensured before that.
    Returns each event's outcome (accepted / duplicate / conflict / archived: its dossier's month was
    archived, in batch order) and the sequence numbers of the newly stored ones. With ``enqueue`` the
    new events are also queued for the indicators worker (the database path used when there is no
    Kafka).
    """
    if not batch:
        return [], []
    homes = {r[0]: (r[1], r[2]) for r in await conn.fetch(
        """SELECT o.dossier_code, o.home_month, a.month IS NOT NULL
           FROM dossier_owners o LEFT JOIN archived_months a ON a.month = o.home_month
           WHERE o.dossier_code = ANY($1::text[])""",
        list({event.dossier_code for event in batch}))}
    first_index: dict[tuple[str, str], int] = {}
    unique: list[DossierEvent] = []
    for i, event in enumerate(batch):
        key = (event.source, event.event_id)
        if event.dossier_code not in homes:
            raise LookupError(f"dossier {event.dossier_code!r} has no owner: claim owners before storing events")
        if key not in first_index and not homes[event.dossier_code][1]:
            first_index[key] = i
            unique.append(event)
    hashes = [bytes.fromhex(event.body_hash()) for event in batch]
    # The rows travel as arrays: the normalised bodies as JSON text (the jsonb column; the other columns
    # are its fields, taken out in SQL: no per-value encoding in Python), sources, hashes and months.
    # (One JSON array of the bodies instead cost PostgreSQL ~15% more: jsonb_array_elements parses the
    # whole array, then copies each element out.) Keys go into the registry in key order (two concurrent
    # batches sharing event ids, re-sent duplicates, then wait for each other instead of deadlocking);
    # sequence numbers are drawn in batch order (arrival order) for the keys new to it.
    statement = """
        WITH input AS (
            SELECT u.b::jsonb AS b, u.s, u.h, u.m, u.n
            FROM unnest($1::text[], $2::text[], $3::bytea[], $4::date[]) WITH ORDINALITY AS u(b, s, h, m, n)
        ), keys AS (
            INSERT INTO event_keys (source, event_id, body_hash)
            SELECT s, b->>'event_id', h FROM input ORDER BY s, b->>'event_id'
            ON CONFLICT (source, event_id) DO NOTHING
            RETURNING source, event_id
        ), numbered AS (
            SELECT i.b, i.s, i.m, nextval((SELECT pg_get_serial_sequence('events', 'seq'))::regclass) AS seq
            FROM input i JOIN keys k ON k.source = i.s AND k.event_id = i.b->>'event_id'
            ORDER BY i.n
        ), ins AS (
            INSERT INTO events (seq, home_month, source, event_id, dossier_code, status, occurred_at, body, transport)
            SELECT seq, m, s, b->>'event_id', b->>'dossier_code', (b->>'status')::smallint,
                (b->>'occurred_at')::timestamptz, b, $5
            FROM numbered
            RETURNING seq, source, event_id, home_month
        ){queue}
        SELECT seq, source, event_id FROM ins
    """.format(queue=", q AS (INSERT INTO pending_events (seq, home_month) SELECT seq, home_month FROM ins)"
               if enqueue else "")
    rows = await conn.fetch(
        statement,
        [event.encoded_body().decode() for event in unique],
        [event.source for event in unique],
        [hashes[first_index[(event.source, event.event_id)]] for event in unique],
        [homes[event.dossier_code][0] for event in unique],
        transport,
    ) if unique else []
    inserted = {(r[1], r[2]): r[0] for r in rows}  # (source, event_id) -> seq; positions: cheaper than names
    known: dict[tuple[str, str], bytes] = {}
    if len(inserted) < len(unique):
        missing = [e for e in unique if (e.source, e.event_id) not in inserted]
        existing = await conn.fetch(
            """SELECT source, event_id, body_hash FROM event_keys
               WHERE (source, event_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))""",
            [e.source for e in missing],
            [e.event_id for e in missing],
        )
        known = {(r["source"], r["event_id"]): r["body_hash"] for r in existing}
    outcomes: list[str] = []
    for i, event in enumerate(batch):
        key = (event.source, event.event_id)
        if homes[event.dossier_code][1]:
            outcomes.append(ARCHIVED)
            continue
        if key in inserted:
            first = first_index[key]
            if first == i:
                outcomes.append(ACCEPTED)
                continue
            stored_hash = hashes[first]
        else:
            stored_hash = known.get(key)
        outcomes.append(DUPLICATE if stored_hash == hashes[i] else CONFLICT)
    return outcomes, list(inserted.values())


async def store_dead_letters(conn: asyncpg.Connection, letters: list[DeadLetter]) -> None:
    if not letters:
        return
    await conn.executemany(
        """INSERT INTO dead_letters (source, transport, reason, detail, event_index, event_id,
               kafka_topic, kafka_partition, kafka_offset, raw)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)""",
        [
            (_text(d.source), d.transport, d.reason, _text(d.detail), d.event_index, _text(d.event_id), d.kafka_topic,
             d.kafka_partition, d.kafka_offset, _text(d.raw))
            for d in letters
        ],
    )


def _text(value: str | None) -> str | None:
    """PostgreSQL text cannot hold U+0000 (a rejected event may carry it): keep the rest readable."""
    return value.replace("\x00", "\ufffd") if value is not None and "\x00" in value else value
