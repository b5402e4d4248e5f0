"""Durable storage of accepted events and dead letters (the ingest edge's only I/O)."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from shared.events import DossierEvent

ACCEPTED, DUPLICATE, CONFLICT = "accepted", "duplicate", "conflict"


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


async def store_events(
    conn: asyncpg.Connection, batch: list[DossierEvent], *, transport: str, enqueue: bool,
    seq_by_key: dict[tuple[str, str], int] | None = None,
) -> tuple[list[str], list[int]]:
    """Insert events idempotently on (source, event_id).

    Returns each event's outcome (accepted / duplicate / conflict, in batch order) and the sequence
    numbers of the newly stored ones. With ``enqueue`` the new events are also queued for the
    indicators worker (the database path used when there is no Kafka). ``seq_by_key``, if given,
    receives the sequence number of each newly stored (source, event_id).
    """
    if not batch:
        return [], []
    first_index: dict[tuple[str, str], int] = {}
    unique: list[DossierEvent] = []
    for i, event in enumerate(batch):
        key = (event.source, event.event_id)
        if key not in first_index:
            first_index[key] = i
            unique.append(event)
    hashes = [event.body_hash() for event in batch]
    # The rows travel as three arrays: the normalised bodies as JSON text (the jsonb column; the other
    # columns are its fields, taken out in SQL: no per-value encoding in Python), sources and hashes.
    # (One JSON array of the bodies instead cost PostgreSQL ~15% more: jsonb_array_elements parses the
    # whole array, then copies each element out.) Sequence numbers are drawn in batch order (arrival
    # order), but rows go into the unique index in key order: two concurrent batches sharing event ids
    # (re-sent duplicates) then wait for each other instead of deadlocking.
    statement = """
        WITH numbered AS (
            SELECT u.b::jsonb AS b, u.s, u.h,
                nextval((SELECT pg_get_serial_sequence('events', 'seq'))::regclass) AS seq
            FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS u(b, s, h, n)
            ORDER BY n
        ), ins AS (
            INSERT INTO events (seq, source, event_id, dossier_code, status, occurred_at, body, body_hash, transport)
            SELECT seq, s, b->>'event_id', b->>'dossier_code', (b->>'status')::smallint,
                (b->>'occurred_at')::timestamptz, b, h, $4
            FROM numbered ORDER BY s, b->>'event_id'
            ON CONFLICT (source, event_id) DO NOTHING
            RETURNING seq, source, event_id
        ){queue}
        SELECT seq, source, event_id FROM ins
    """.format(queue=", q AS (INSERT INTO pending_events (seq) SELECT seq FROM ins)" if enqueue else "")
    rows = await conn.fetch(
        statement,
        [event.encoded_body().decode() for event in unique],
        [event.source for event in unique],
        [hashes[first_index[(event.source, event.event_id)]] for event in unique],
        transport,
    )
    inserted = {(r[1], r[2]): r[0] for r in rows}  # (source, event_id) -> seq; positions: cheaper than names
    if seq_by_key is not None:
        seq_by_key.update(inserted)
    known: dict[tuple[str, str], str] = {}
    if len(inserted) < len(unique):
        missing = [e for e in unique if (e.source, e.event_id) not in inserted]
        existing = await conn.fetch(
            """SELECT source, event_id, body_hash FROM events
               WHERE (source, event_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))""",
            [e.source for e in missing],
            [e.event_id for e in missing],
        )
        known = {(r["source"], r["event_id"]): r["body_hash"] for r in existing}
    outcomes: list[str] = []
    for i, event in enumerate(batch):
        key = (event.source, event.event_id)
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
