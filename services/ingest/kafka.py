"""The ingest edge on the Kafka path.

- ``KafkaPublisher``: in Kafka mode ``POST /v1/events`` and ``POST /v1/dvcqg`` (the one submit path,
  :func:`services.ingest.intake.submit`) validate each event (the same
  ``check_items`` as the database path) and produces the valid ones to the canonical topic in their
  stored form (``shared.events.encode_event``), keyed by dossier_code, with acks=all, before answering
  2xx. Rejected ones are answered with their reasons and kept in the dead letters, as on the database path. The source (the API key's) travels in a
  header; the indicators consumer stores and deduplicates the events.
- ``UpstreamBridge``: ``dvc766 ingest`` may also consume a raw upstream topic
  (``kafka_upstream_topic``: one object per message, keyed by dossier_code) and forward every message
  to the canonical topic under the configured source (``kafka_source``) — at least once: its Kafka
  offsets are committed only after the forwarded messages are acknowledged, and duplicates are
  removed downstream on (source, event_id). Bad messages pass through and are dead-lettered, with
  their canonical partition and offset, by the indicators consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from services.events.checks import Item, check_items
from services.events.store import DeadLetter, store_dead_letters
from services.ingest.intake import IntakeResult, check_ownership
from shared.db.raw import driver_connection
from shared.events import DossierEvent
from shared.kafka import KAFKA_PRODUCED, SOURCE_HEADER, make_consumer
from shared.metrics import EVENTS_REJECTED, source_label
from shared.problems import Problem
from shared.runtime import Runtime

log = logging.getLogger("dvc766.ingest.kafka")


class KafkaPublisher:
    """``app.state.publish_events``: validate, produce (acks=all), answer with the IntakeResult shape."""

    def __init__(self, producer) -> None:
        self.producer = producer

    async def __call__(self, runtime: Runtime, items: list[Item], *, source: str, transport: str = "http",
                       allowed_units: tuple[str, ...] | None) -> IntakeResult:
        checked = check_items(items, source=source, runtime=runtime, allowed_units=allowed_units)
        # Ownership is decided here, at the edge, before anything reaches the topic (claims commit first:
        # a claim whose events then fail to be produced names the unit that will re-send them).
        async with runtime.engine.begin() as conn:
            await check_ownership(await driver_connection(conn), checked, allowed_units=allowed_units,
                                  runtime=runtime)
        topic = runtime.settings.kafka_topic
        headers = [(SOURCE_HEADER, source.encode())]
        result = IntakeResult()
        try:
            async with asyncio.timeout(runtime.settings.kafka_produce_timeout_seconds):
                futures = []
                for item, check in zip(items, checked):
                    if isinstance(check, DossierEvent):
                        futures.append(await self.producer.send(
                            topic, key=check.dossier_code.encode(), value=check.encoded_body(), headers=headers))
                await asyncio.gather(*futures)
        except Exception as exc:  # noqa: BLE001 - nothing is acknowledged unless every event is on the topic
            log.warning("producing to kafka failed", extra={"error": repr(exc)})
            raise Problem(503, "kafka_unavailable", "the event stream is unavailable; retry later") from exc
        letters = []
        for item, check in zip(items, checked):
            entry: dict[str, Any] = {"index": item.index}
            if isinstance(check, DossierEvent):
                entry.update(event_id=check.event_id, status="accepted")
                result.accepted += 1
            else:
                if (claimed := item.event_id()) is not None:
                    entry["event_id"] = claimed
                entry.update(status="rejected", **check.as_dict())
                result.rejected += 1
                letters.append(DeadLetter(transport=transport, reason=check.reason, detail=check.detail, raw=item.raw,
                                          source=source, event_index=item.index, event_id=entry.get("event_id")))
                EVENTS_REJECTED.labels(transport, source_label(source), check.reason).inc()
            result.results.append(entry)
        if letters:
            async with runtime.engine.begin() as conn:
                await store_dead_letters(await driver_connection(conn), letters)
        KAFKA_PRODUCED.labels(transport).inc(result.accepted)
        return result


class UpstreamBridge:
    """Forwards a raw upstream topic into the canonical one (at least once; deduplicated downstream)."""

    def __init__(self, runtime: Runtime, producer) -> None:
        self.settings = runtime.settings
        self.producer = producer
        self.consumer = None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        settings = self.settings
        self.consumer = make_consumer(settings, group_id=f"{settings.kafka_group_id}-ingest", client_id="dvc766-ingest",
                                      auto_offset_reset="earliest")  # a new group starts at the beginning
        self.consumer.subscribe([settings.kafka_upstream_topic])
        await self.consumer.start()
        self._task = asyncio.create_task(self._run(), name="dvc766-upstream-bridge")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.consumer is not None:
            await self.consumer.stop()

    async def _run(self) -> None:
        settings = self.settings
        source = settings.kafka_source.encode()
        while not self._stopping.is_set():
            try:
                records = await self.consumer.getmany(timeout_ms=settings.kafka_poll_timeout_ms,
                                                      max_records=settings.kafka_max_batch_records)
                if not records:
                    continue
                futures = []
                for messages in records.values():
                    for m in messages:
                        # The configured source always wins: upstream senders cannot claim another's.
                        headers = [(k, v) for k, v in (m.headers or ()) if k != SOURCE_HEADER]
                        headers.append((SOURCE_HEADER, source))
                        futures.append(await self.producer.send(settings.kafka_topic, key=m.key, value=m.value,
                                                                headers=headers))
                await asyncio.gather(*futures)
                await self.consumer.commit()
                KAFKA_PRODUCED.labels("upstream").inc(len(futures))
            except Exception:  # uncommitted: read again from the last commit
                log.exception("bridging the upstream topic failed; retrying")
                with contextlib.suppress(Exception):
                    for tp in self.consumer.assignment():
                        committed = await self.consumer.committed(tp)
                        if committed is None:
                            await self.consumer.seek_to_beginning(tp)
                        else:
                            self.consumer.seek(tp, committed)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), 1.0)
