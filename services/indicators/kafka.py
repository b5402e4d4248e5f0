"""The indicators worker on the Kafka path: effectively-once application of the canonical topic.

Workers of one consumer group share the topic's partitions. Each fetched batch (``getmany``) is
applied in ONE PostgreSQL transaction that holds everything it changes for its partitions:

1. the events, stored idempotently on (source, event_id) — redelivered and duplicated messages
   count once;
2. the partitions' next offsets, compare-and-set on (epoch, offset the batch starts from): a worker
   that lost its partition (its epoch was bumped by the new owner) or a batch that does not follow
   the stored offset fails here, before it touches any dossier, and rolls back whole;
3. dossier state and counter deltas (``IndicatorEngine.recompute``);
4. dead letters of the bad messages (not JSON, invalid, oversized) with reason, partition and
   offset — also produced to the dead-letter topic — so a poison message costs only itself.

Two batches are in flight at most (``kafka_batches_in_flight``): while batch N reads and writes
dossiers and counters, batch N+1 is decoded, validated and its events stored. N+1 takes its offsets
and dossiers only once N has committed or rolled back, so it reads what N wrote; if N failed, or a
rebalance happened meanwhile, N+1 rolls back too and both are read again from the stored offsets.
Why this cannot deadlock: while N+1 waits for N (in Python, where PostgreSQL cannot see the wait) it
holds only the locks of the event rows it inserted, and every transaction inserts its events before
it takes any other lock, so whoever waits for those rows holds nothing that N could be waiting for.
N+1 must not take offsets or dossier locks before N ends: a stale owner's batch during a rebalance
could then wait for N+1 while holding what N needs.

Kafka's own committed offsets are never used (no auto-commit): on assignment the worker bumps the
partition's epoch, reads the stored offset and seeks there. A crash anywhere leaves either the whole
batch committed or none of it; the messages are then read again from the stored offsets.

Nothing is skipped when the log itself is lost (a broker restarted empty, a topic deleted and
recreated, a truncated log): a stored position the broker no longer has — beyond the log's end for
``kafka_reset_confirm_seconds``, or refused as out of range — or, on assignment, a message before the
stored position that is not the one applied there (its produce time is stored with the offset: the log
was refilled past our position), stops that partition with an error log, ``dvc766_kafka_offset_resets_total`` and ``dvc766_kafka_partition_halted``, and /readyz fails,
until an operator recovers it (deploy/README.md, "Kafka log lost").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import orjson
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError, OffsetOutOfRangeError

from services.indicators.cards import counters_moved
from services.indicators.engine import IndicatorEngine
from services.events.checks import Item, check_items
from services.events.ownership import claim_owners
from services.events.store import ACCEPTED, DeadLetter, batch_months, refusal, store_dead_letters, store_events
from shared.db.partitions import ensure_partitions
from shared.db.raw import driver_connection
from shared.events import DossierEvent, Reason, Rejection
from shared.kafka import (
    KAFKA_ABANDONED,
    KAFKA_DEAD_LETTERS,
    KAFKA_FENCED,
    KAFKA_HALTED,
    KAFKA_LAG,
    KAFKA_OFFSET_RESETS,
    KAFKA_REBALANCES,
    SOURCE_HEADER,
    make_consumer,
    make_producer,
    member_name,
)
from shared.metrics import (
    APPLY_BATCH_SIZE,
    APPLY_SECONDS,
    EVENTS_ACCEPTED,
    EVENTS_APPLIED,
    EVENTS_DUPLICATE,
    EVENTS_REJECTED,
    LAST_APPLIED,
    source_label,
    unwatch_applier,
    watch_applier,
)
from shared.runtime import Runtime
from shared.timeutil import utcnow

log = logging.getLogger("dvc766.indicators.kafka")
TRANSPORT = "kafka"


class Fenced(Exception):
    """The stored offset or epoch of a partition is not the one this batch started from."""

    def __init__(self, tp: TopicPartition) -> None:
        super().__init__(f"partition {tp.topic}[{tp.partition}] moved on")
        self.tp = tp


class Abandoned(Exception):
    """The batch before this one failed, or a rebalance came between: roll back, read again."""


@dataclass
class InFlight:
    """A dispatched batch: its task, and an event set once its events are stored (or it ended).

    The next batch stores its events only after that: a message delivered twice, once in each, would
    otherwise leave this batch waiting in PostgreSQL for the next one, which waits for this one."""

    task: asyncio.Task
    stored: asyncio.Event


@dataclass
class Owned:
    epoch: int
    position: int  # next offset to apply, as stored
    last_timestamp_ms: int | None = None  # produce time of the message before it, as stored


@dataclass
class Decoded:
    """One message, decoded: an item to validate, or already a rejection."""

    tp: TopicPartition
    offset: int
    key: bytes | None
    value: bytes | None
    source: str
    item: Item


def _raw_text(value: bytes | None, limit: int) -> str:
    if value is None:
        return ""
    # PostgreSQL text holds no NUL; keep the rest readable.
    return value[:limit].decode("utf-8", errors="replace").replace("\x00", "\ufffd")


def decode_message(msg, *, default_source: str, max_bytes: int) -> Decoded:
    """Decode one consumer record (pure): oversized and non-JSON messages become rejections."""
    tp = TopicPartition(msg.topic, msg.partition)
    source = default_source
    for name, header in msg.headers or ():
        if name == SOURCE_HEADER and header:
            source = header.decode("utf-8", errors="replace")
    value = msg.value
    if value is None:
        item = Item(msg.offset, None, "", Rejection(Reason.INVALID_JSON, "empty message (no value)"))
    elif len(value) > max_bytes:
        item = Item(msg.offset, None, _raw_text(value, max_bytes),
                    Rejection(Reason.TOO_LARGE, f"message is larger than {max_bytes} bytes"))
    else:
        try:
            # Within the size limit already (its bytes were counted): the raw text is made only for a
            # dead letter (``dead_letter_text``).
            item = Item(msg.offset, orjson.loads(value), None, size_bound=len(value))
        except orjson.JSONDecodeError as exc:
            item = Item(msg.offset, None, _raw_text(value, max_bytes),
                        Rejection(Reason.INVALID_JSON, f"message is not JSON: {exc}"))
    return Decoded(tp, msg.offset, msg.key, value, source, item)


class _Listener(ConsumerRebalanceListener):
    def __init__(self, applier: KafkaApplier) -> None:
        self.applier = applier

    async def on_partitions_revoked(self, revoked):
        await self.applier.revoke(revoked)

    async def on_partitions_assigned(self, assigned):
        await self.applier.assign(assigned)


class KafkaApplier:
    """Consumes the canonical topic and applies it, batch by batch, until stopped."""

    def __init__(self, runtime: Runtime, engine: IndicatorEngine, *, member: str | None = None) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.engine = engine
        self.topic = self.settings.kafka_topic
        self.group = self.settings.kafka_group_id
        self.member = member or member_name()
        self.owned: dict[TopicPartition, Owned] = {}
        self.lock = asyncio.Lock()  # held by the batch committing; a revocation waits for it
        # Next offset to fetch-and-apply per partition, counting the batch in flight (ahead of
        # ``Owned.position``, which moves at commit), and a counter bumped by every rewind and
        # rebalance: a batch dispatched before one is abandoned.
        self.planned: dict[TopicPartition, int] = {}
        self.generation = 0
        self.consumer = None
        self.producer = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.applied_batches = 0
        # Partitions stopped by an offset reset (the reason), and those whose stored position was first
        # seen beyond the log's end at that moment (monotonic), to be confirmed before stopping.
        self.halted: dict[TopicPartition, str] = {}
        self._beyond_end_since: dict[TopicPartition, float] = {}
        # Partitions whose last applied message is to be read again and compared (its stored produce time).
        self._verify: dict[TopicPartition, int] = {}
        # When the worker last committed a batch or found nothing pending (monotonic), and per partition
        # the produce time (Unix seconds) of the last applied message, or of the first one fetched.
        self._progress_at = time.monotonic()
        self._applied_time: dict[TopicPartition, float] = {}

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self.producer = make_producer(self.settings)
        await self.producer.start()
        self.consumer = make_consumer(self.settings, group_id=self.group, client_id=f"dvc766-indicators-{self.member}")
        self.consumer.subscribe([self.topic], listener=_Listener(self))
        await self.consumer.start()
        self._task = asyncio.create_task(self._run(), name="dvc766-kafka-apply")
        watch_applier(self)
        log.info("kafka applier started", extra={"topic": self.topic, "group": self.group, "member": self.member})

    async def stop(self) -> None:
        """Finish the batch in flight (it commits whole), then leave the group."""
        unwatch_applier(self)
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.consumer is not None:
            await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()
        log.info("kafka applier stopped", extra={"member": self.member})

    async def ready(self) -> str:
        if self._task is None or self._task.done():
            return "not running"
        if self.halted:
            return "halted: " + "; ".join(self.halted[tp] for tp in sorted(self.halted))
        stalled = self.stalled_seconds()
        if stalled > self.settings.apply_stall_seconds:
            return f"stalled: no batch committed for {stalled:.0f} s while messages are pending"
        return "ok"

    def stalled_seconds(self) -> float:
        return time.monotonic() - self._progress_at

    def behind_seconds(self) -> float:
        """Per owned partition with messages pending: seconds since the produce time of the last message
        applied (or, before any, of the first fetched); the largest."""
        now = time.time()
        behind = 0.0
        for tp, owned in list(self.owned.items()):
            if self._pending(tp, owned) and tp in self._applied_time:
                behind = max(behind, now - self._applied_time[tp])
        return behind

    def _pending(self, tp: TopicPartition, owned: Owned) -> bool:
        with contextlib.suppress(Exception):
            highwater = self.consumer.highwater(tp)
            return highwater is not None and highwater > owned.position
        return False

    # -- offset resets -----------------------------------------------------------------------------

    def _check_log_ends(self) -> None:
        """A stored position beyond the log's end (seen in fetch answers) is confirmed for
        ``kafka_reset_confirm_seconds`` (a new leader may briefly answer with an older end), then halts."""
        now = time.monotonic()
        for tp, owned in list(self.owned.items()):
            if tp in self.halted:
                continue
            with contextlib.suppress(Exception):
                highwater = self.consumer.highwater(tp)
                if highwater is None or highwater >= owned.position:
                    self._beyond_end_since.pop(tp, None)
                    continue
                since = self._beyond_end_since.setdefault(tp, now)
                if now - since >= self.settings.kafka_reset_confirm_seconds:
                    self._halt(tp, owned.position, f"the log ends at offset {highwater}")

    def _halt(self, tp: TopicPartition, position: int, found: str) -> None:
        """Stop applying a partition whose stored position the broker no longer has. Applying the log as it
        is now would skip (or misread) every message between its end and our position."""
        if tp in self.halted:
            return
        self.halted[tp] = (f"{tp.topic}[{tp.partition}]: stored position {position}, {found} "
                           "(offset reset: the log was lost or recreated)")
        self._beyond_end_since.pop(tp, None)
        KAFKA_OFFSET_RESETS.labels(tp.topic, str(tp.partition)).inc()
        KAFKA_HALTED.labels(tp.topic, str(tp.partition)).set(1)
        with contextlib.suppress(IllegalStateError, AssertionError, KeyError):
            self.consumer.pause(tp)
        log.error("kafka offset reset: partition stopped, nothing skipped; see deploy/README.md 'Kafka log lost'",
                  extra={"topic": tp.topic, "partition": tp.partition, "stored_position": position,
                         "found": found, "group": self.group, "member": self.member})

    def _start_of(self, tp: TopicPartition, owned: Owned) -> int:
        """Where to read a partition from: its stored position, or the message before it while unverified."""
        return owned.position - 1 if tp in self._verify else owned.position

    def _verified(self, tp: TopicPartition, owned: Owned, messages: list) -> list:
        """The fetched messages after the check of the last applied one (empty: halted, or not there yet)."""
        expected = self._verify[tp]
        before = owned.position - 1
        first = messages[0]
        if first.offset < before:
            return []  # fetched before the seek: read again
        if first.offset == owned.position:
            # The log now begins at our position (retention removed what was applied; a recreated log
            # would begin at 0): nothing to compare, nothing lost.
            del self._verify[tp]
            return messages
        if first.offset > before:
            self._halt(tp, owned.position, f"the log now begins at offset {first.offset}")
            return []
        if first.timestamp != expected:
            self._halt(tp, owned.position, f"the message at offset {before} was produced at {first.timestamp} ms, "
                                           f"the one applied there at {expected} ms")
            return []
        del self._verify[tp]
        return messages[1:]

    async def _out_of_range(self, tp: TopicPartition, offset: int) -> None:
        """The broker has no message at ``offset``. Only while checking the last applied message, and the log
        begins after it but not after our position (retention removed applied messages only), is that fine."""
        owned = self.owned.get(tp)
        if owned is None:
            return
        if tp in self._verify and offset == owned.position - 1:
            with contextlib.suppress(Exception):
                begins = (await self.consumer.beginning_offsets([tp]))[tp]
                if 0 < begins <= owned.position:
                    del self._verify[tp]
                    self.planned[tp] = owned.position
                    self.consumer.seek(tp, owned.position)
                    return
        self._halt(tp, owned.position, f"the broker has no offset {offset} (out of range)")

    def _forget_halt(self, tp: TopicPartition) -> None:
        self._beyond_end_since.pop(tp, None)
        if self.halted.pop(tp, None) is not None:
            with contextlib.suppress(Exception):
                KAFKA_HALTED.remove(tp.topic, str(tp.partition))

    # -- rebalances --------------------------------------------------------------------------------

    async def revoke(self, revoked) -> None:
        async with self.lock:  # the batch committing commits (or rolls back) first
            self.generation += 1  # a batch still storing its events rolls back
            for tp in revoked:
                self.owned.pop(tp, None)
                self.planned.pop(tp, None)
                self._applied_time.pop(tp, None)
                self._verify.pop(tp, None)
                self._forget_halt(tp)  # its new owner finds the reset again
                with contextlib.suppress(Exception):
                    KAFKA_LAG.remove(tp.topic, str(tp.partition))

    async def assign(self, assigned) -> None:
        KAFKA_REBALANCES.labels(self.group).inc()
        assigned = sorted(assigned)
        async with self.lock:
            self.generation += 1
            claims: dict[TopicPartition, Owned] = {}
            while True:
                try:
                    claims = await self._claim(assigned)
                    break
                except Exception:  # the store is away: retry, the group waits for us
                    log.exception("claiming partitions failed; retrying")
                    if self._stopping.is_set():
                        return
                    await asyncio.sleep(1.0)
            for tp, owned in claims.items():
                self.owned[tp] = owned
                if owned.position > 0 and owned.last_timestamp_ms is not None:
                    self._verify[tp] = owned.last_timestamp_ms  # read the last applied message again first
                start = self._start_of(tp, owned)
                self.planned[tp] = start
                self.consumer.seek(tp, start)
                self.consumer.resume(tp)
        log.info("partitions assigned", extra={"member": self.member,
                                               "partitions": {tp.partition: o.position for tp, o in claims.items()}})

    async def _claim(self, assigned: list[TopicPartition]) -> dict[TopicPartition, Owned]:
        """Bump each assigned partition's epoch (fencing the previous owner) and read its offset."""
        if not assigned:
            return {}
        async with self.runtime.engine.begin() as conn:
            apg = await driver_connection(conn)
            rows = await apg.fetch(
                """INSERT INTO kafka_offsets AS k (group_id, topic, partition, next_offset, epoch, owner)
                   SELECT $1, t, p, 0, 1, $4 FROM unnest($2::text[], $3::int[]) AS u(t, p)
                   ORDER BY t, p
                   ON CONFLICT (group_id, topic, partition)
                   DO UPDATE SET epoch = k.epoch + 1, owner = EXCLUDED.owner, updated_at = now()
                   RETURNING topic, partition, next_offset, epoch, last_timestamp_ms""",
                self.group,
                [tp.topic for tp in assigned],
                [tp.partition for tp in assigned],
                self.member,
            )
        return {TopicPartition(r["topic"], r["partition"]): Owned(r["epoch"], r["next_offset"], r["last_timestamp_ms"])
                for r in rows}

    # -- the loop ----------------------------------------------------------------------------------

    async def _run(self) -> None:
        settings = self.settings
        in_flight = settings.kafka_batches_in_flight
        previous: InFlight | None = None  # the batch whose commit the next one waits for
        while not self._stopping.is_set():
            generation = self.generation
            try:
                records = await self.consumer.getmany(
                    timeout_ms=settings.kafka_poll_timeout_ms, max_records=settings.kafka_max_batch_records
                )
            except OffsetOutOfRangeError as exc:  # the broker no longer has a position we asked for
                for tp, offset in (exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}).items():
                    await self._out_of_range(tp, offset)
                continue
            except Exception:
                log.exception("polling kafka failed; retrying")
                await self._sleep(1.0)
                continue
            if records and self.generation != generation:
                # A rewind came while fetching: these records may be from before it. Fetch again.
                self._rewind()
                records = {}
            batch = self._take(records) if records else None
            if batch is None:
                if previous is not None:
                    await asyncio.wait([previous.task])
                    previous = None
                elif not any(self._pending(tp, o) for tp, o in list(self.owned.items()) if tp not in self.halted):
                    self._progress_at = time.monotonic()  # idle and caught up is not a stall
            else:
                stored = asyncio.Event()
                current = InFlight(asyncio.create_task(self._apply(*batch, after=previous, stored=stored)), stored)
                if in_flight == 1:
                    await asyncio.wait([current.task])
                else:  # at most two batches in flight: the one before this must end before the next fetch
                    if previous is not None:
                        await asyncio.wait([previous.task])
                    previous = current
            self._update_lag()
            self._check_log_ends()
        if previous is not None:  # stopping: the batch in flight finishes (it commits whole)
            await asyncio.wait([previous.task])

    def _update_lag(self) -> None:
        for tp, owned in list(self.owned.items()):
            with contextlib.suppress(Exception):
                highwater = self.consumer.highwater(tp)
                if highwater is not None:
                    KAFKA_LAG.labels(tp.topic, str(tp.partition)).set(max(0, highwater - owned.position))

    def _take(self, records: dict) -> tuple[dict[TopicPartition, list], dict, int] | None:
        """The fetched messages to apply next (those of owned partitions from their planned offset on),
        the (epoch, first offset) each partition's stored offset must show, and the generation."""
        batch: dict[TopicPartition, list] = {}
        plan: dict[TopicPartition, tuple[int, int]] = {}
        for tp, messages in records.items():
            owned = self.owned.get(tp)
            if owned is None or tp in self.halted:
                continue  # revoked while the batch was fetched (the new owner reads it), or stopped
            if tp in self._verify:
                messages = self._verified(tp, owned, messages)
                if tp in self._verify or tp in self.halted:
                    continue
                self.planned[tp] = owned.position
            start = self.planned.get(tp, owned.position)
            fresh = [m for m in messages if m.offset >= start]
            if fresh:
                self._applied_time.setdefault(tp, fresh[0].timestamp / 1000)
                batch[tp] = fresh
                plan[tp] = (owned.epoch, start)
                self.planned[tp] = fresh[-1].offset + 1
        return (batch, plan, self.generation) if batch else None

    async def _apply(self, batch: dict[TopicPartition, list], plan: dict, generation: int,
                           after: InFlight | None = None, stored: asyncio.Event | None = None) -> int:
        started = time.perf_counter()
        try:
            counts = await self._apply_batch(batch, plan=plan, generation=generation, after=after, stored=stored)
        except Abandoned:
            KAFKA_ABANDONED.inc()
            self._rewind()
            return 0
        except Fenced as fenced:
            KAFKA_FENCED.inc()
            log.warning("batch refused: partition moved on", extra={"partition": fenced.tp.partition,
                                                                   "member": self.member})
            await self._after_fenced(fenced.tp)
            self._rewind()
            return 0
        except Exception:  # the store or the broker went away mid-batch: nothing was committed
            log.exception("applying a kafka batch failed; it will be read again")
            self._rewind()
            await self._sleep(1.0)
            return 0
        size = sum(len(m) for m in batch.values())
        APPLY_SECONDS.observe(time.perf_counter() - started)
        APPLY_BATCH_SIZE.observe(size)
        EVENTS_APPLIED.inc(counts["applied"])
        for source, n in counts["accepted"].items():
            EVENTS_ACCEPTED.labels(TRANSPORT, source_label(source)).inc(n)
        for source, n in counts["duplicates"].items():
            EVENTS_DUPLICATE.labels(TRANSPORT, source_label(source)).inc(n)
        for (source, reason), n in counts["rejected"].items():
            EVENTS_REJECTED.labels(TRANSPORT, source_label(source), reason).inc(n)
            KAFKA_DEAD_LETTERS.labels(reason).inc(n)
        self._progress_at = time.monotonic()
        for tp, messages in batch.items():
            self._applied_time[tp] = messages[-1].timestamp / 1000
        LAST_APPLIED.set(time.time())
        self.applied_batches += 1
        return size

    def _rewind(self) -> None:
        """After a rolled-back batch, read every owned partition again from its stored offset.

        All of them, not only the batch's: the batch after it (fetched, not committed) is abandoned
        too, since it was to follow this one.
        """
        self.generation += 1
        for tp, owned in self.owned.items():
            start = self._start_of(tp, owned)
            self.planned[tp] = start
            with contextlib.suppress(IllegalStateError, AssertionError, KeyError):
                self.consumer.seek(tp, start)

    async def _after_fenced(self, tp: TopicPartition) -> None:
        with contextlib.suppress(Exception):
            async with self.runtime.engine.connect() as conn:
                apg = await driver_connection(conn)
                row = await apg.fetchrow(
                    "SELECT next_offset, epoch FROM kafka_offsets WHERE group_id = $1 AND topic = $2 AND partition = $3",
                    self.group, tp.topic, tp.partition,
                )
            owned = self.owned.get(tp)
            if row is None or owned is None:
                return
            if row["epoch"] != owned.epoch:  # another worker owns it now; our revocation is on its way
                self.owned.pop(tp, None)
                with contextlib.suppress(IllegalStateError):
                    self.consumer.pause(tp)
            else:
                owned.position = row["next_offset"]

    async def _apply_batch(self, batch: dict[TopicPartition, list], *, plan: dict | None = None,
                           generation: int | None = None, after: InFlight | None = None,
                           stored: asyncio.Event | None = None) -> dict:
        """Apply one batch in one transaction (module docstring). ``plan``: per partition, the epoch and
        the offset the stored one must equal (default: this worker's epoch, the batch's first offset).
        ``after``: the batch before this one; its events are stored before this one's, its outcome is
        awaited before any offset or dossier is touched, and if it failed (``generation`` moved on) this
        one is abandoned. ``stored`` is set once this batch's events are stored (or it failed)."""
        settings = self.settings
        if plan is None:
            plan = {tp: (self.owned[tp].epoch, messages[0].offset) for tp, messages in batch.items()}
        decoded = [
            decode_message(m, default_source=settings.kafka_source, max_bytes=settings.max_event_bytes)
            for tp in sorted(batch)
            for m in batch[tp]
        ]
        # Validate (grouped by source: events produced by our HTTP ingest carry their key's source).
        checks: list[DossierEvent | Rejection] = [None] * len(decoded)  # type: ignore[list-item]
        by_source: dict[str, list[int]] = {}
        for i, d in enumerate(decoded):
            by_source.setdefault(d.source, []).append(i)
        for source, positions in by_source.items():
            results = check_items([decoded[i].item for i in positions], source=source, runtime=self.runtime,
                                  allowed_units=None)
            for i, result in zip(positions, results):
                checks[i] = result
        good_positions = [i for i, c in enumerate(checks) if isinstance(c, DossierEvent)]
        good: list[DossierEvent] = [checks[i] for i in good_positions]  # type: ignore[misc]

        # Per source (rejected: per source and reason).
        counts = {"applied": len(decoded), "accepted": {}, "duplicates": {}, "rejected": {}}
        locked = False
        try:
            if after is not None:
                await after.stored.wait()
            async with self.runtime.engine.begin() as conn:
                apg = await driver_connection(conn)
                # Events first: they need nothing else from the batch before (a duplicate of one of its
                # events waits for its commit, then counts as a duplicate).
                # Events of a trusted topic name the owners of the dossiers they open (no check: the
                # HTTP ingest checked its events before producing them).
                await ensure_partitions(apg, batch_months(good))  # first: it may wait for readers of events
                await claim_owners(apg, good, self.runtime.units)
                outcomes, _ = await store_events(apg, good, transport=TRANSPORT, enqueue=False)
                for i, outcome in zip(good_positions, outcomes):
                    refused = refusal(outcome)
                    if refused is not None:
                        checks[i] = refused
                    else:
                        kind = "accepted" if outcome == ACCEPTED else "duplicates"
                        counts[kind][decoded[i].source] = counts[kind].get(decoded[i].source, 0) + 1
                arrived = {event.dossier_code for event, outcome in zip(good, outcomes) if outcome == ACCEPTED}
                letters = []
                for d, check in zip(decoded, checks):
                    if isinstance(check, DossierEvent):
                        continue
                    letters.append(DeadLetter(
                        transport=TRANSPORT, reason=check.reason, detail=check.detail,
                        raw=_raw_text(d.value, settings.max_event_bytes), source=d.source,
                        event_id=d.item.event_id(), kafka_topic=d.tp.topic,
                        kafka_partition=d.tp.partition, kafka_offset=d.offset,
                    ))
                    key = (d.source, check.reason)
                    counts["rejected"][key] = counts["rejected"].get(key, 0) + 1
                if stored is not None:
                    stored.set()
                if after is not None:
                    await asyncio.wait([after.task])
                await self.lock.acquire()
                locked = True
                if generation is not None and generation != self.generation:
                    raise Abandoned()
                for tp in sorted(batch):
                    epoch, start = plan[tp]
                    moved = await apg.fetchval(
                        """UPDATE kafka_offsets SET next_offset = $6, owner = $7, last_timestamp_ms = $8,
                               updated_at = now()
                           WHERE group_id = $1 AND topic = $2 AND partition = $3 AND epoch = $4
                             AND next_offset = $5
                           RETURNING 1""",
                        self.group, tp.topic, tp.partition, epoch, start, batch[tp][-1].offset + 1, self.member,
                        batch[tp][-1].timestamp,
                    )
                    if not moved:
                        raise Fenced(tp)
                result = await self.engine.recompute(apg, arrived, utcnow())
                if letters:
                    await self._produce_dead_letters(letters, decoded, checks)
                    await store_dead_letters(apg, letters)
            for tp, messages in batch.items():  # committed
                owned = self.owned.get(tp)
                if owned is not None and owned.epoch == plan[tp][0]:
                    owned.position = messages[-1].offset + 1
                    owned.last_timestamp_ms = messages[-1].timestamp
        finally:
            if stored is not None:
                stored.set()  # (failed before its events were stored: the next batch need not wait)
            if locked:
                self.lock.release()
        await counters_moved(self.runtime, result.touched)
        return counts

    async def _produce_dead_letters(self, letters: list[DeadLetter], decoded: list[Decoded], checks: list) -> None:
        """Dead letters go to their topic before the batch commits (at least once there; once in the table)."""
        max_bytes = self.settings.max_event_bytes
        futures = []
        for d, check in zip(decoded, checks):
            if isinstance(check, DossierEvent):
                continue
            value = d.value[:max_bytes] if d.value is not None else b""
            headers = [
                ("reason", check.reason.encode()),
                ("detail", check.detail.encode()[:1024]),
                ("topic", d.tp.topic.encode()),
                ("partition", str(d.tp.partition).encode()),
                ("offset", str(d.offset).encode()),
                ("source", d.source.encode()),
            ]
            futures.append(await self.producer.send(self.settings.kafka_dead_letter_topic, value=value,
                                                    key=d.key, headers=headers))
        await asyncio.gather(*futures)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
