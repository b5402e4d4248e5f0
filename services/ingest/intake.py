"""From raw input to stored events: decode, validate, authorise, store; every rejection with a reason.

Shared by every way events come in at the edge (HTTP, the portal's payloads, the Kafka publisher), so the
rules for what is accepted are written once (the checks themselves: ``services.events.checks``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from services.events.checks import Item, check_items
from services.events.ownership import check_owners
from services.events.store import (
    ACCEPTED,
    DUPLICATE,
    DeadLetter,
    batch_months,
    refusal,
    store_dead_letters,
    store_events,
)
from shared.db.notify import announce_events_queued
from shared.db.partitions import ensure_partitions
from shared.db.raw import driver_connection
from shared.events import DossierEvent, Reason, Rejection
from shared.metrics import EVENTS_ACCEPTED, EVENTS_DUPLICATE, EVENTS_REJECTED, source_label
from shared.runtime import Runtime


@dataclass
class IntakeResult:
    results: list[dict] = field(default_factory=list)
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0

    def summary(self) -> dict:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "results": self.results,
        }


def decode_ndjson(body: bytes) -> list[Item]:
    items = []
    for index, line in enumerate(l for l in body.splitlines() if l.strip()):
        text = line.decode("utf-8", errors="replace")
        try:
            items.append(Item(index, orjson.loads(line), text))
        except orjson.JSONDecodeError as exc:
            items.append(Item(index, None, text, Rejection(Reason.INVALID_JSON, f"line is not JSON: {exc}")))
    return items


# Items of a JSON array are re-encoded in chunks of this many: a chunk's compact JSON is at least as long
# as each of its items' own (orjson writes a list as "[a,b,…]"), which bounds their size in one call.
SIZE_CHUNK = 64


def decode_json(body: bytes) -> list[Item] | Rejection:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return Rejection(Reason.INVALID_JSON, f"body is not JSON: {exc}")
    values = value if isinstance(value, list) else [value]
    items = []
    for start in range(0, len(values), SIZE_CHUNK):
        chunk = values[start:start + SIZE_CHUNK]
        try:
            bound: int | None = len(orjson.dumps(chunk))
        except orjson.JSONEncodeError:  # an item nested as deep as orjson goes: measure each on its own
            bound = None
        items.extend([Item(start + i, v, None, None, bound) for i, v in enumerate(chunk)])
    return items


async def check_ownership(conn, checked: list[DossierEvent | Rejection], *, allowed_units: tuple[str, ...] | None,
                          runtime: Runtime) -> None:
    """Claim the owners of new dossiers and turn every event its key may not add into ``not_owner``
    (in place; on the caller's transaction, so the claims commit with the events)."""
    positions = [i for i, c in enumerate(checked) if isinstance(c, DossierEvent)]
    verdicts = await check_owners(conn, [checked[i] for i in positions],  # type: ignore[misc]
                                  allowed_units=allowed_units, units=runtime.units)
    for i, verdict in zip(positions, verdicts):
        if verdict is not None:
            checked[i] = verdict


async def intake(
    runtime: Runtime,
    items: list[Item],
    *,
    source: str,
    transport: str,
    allowed_units: tuple[str, ...] | None,
    enqueue: bool,
) -> IntakeResult:
    """Validate and durably store a batch in one transaction; rejected items go to the dead letters."""
    checked = check_items(items, source=source, runtime=runtime, allowed_units=allowed_units)
    result = IntakeResult()
    results = result.results
    async with runtime.engine.begin() as conn:
        apg = await driver_connection(conn)
        # First: creating a partition waits for the readers of events, while holding nothing else yet.
        await ensure_partitions(apg, batch_months([c for c in checked if isinstance(c, DossierEvent)]))
        await check_ownership(apg, checked, allowed_units=allowed_units, runtime=runtime)
        good = [c for c in checked if isinstance(c, DossierEvent)]
        outcomes, seqs = await store_events(apg, good, transport=transport, enqueue=enqueue)
        next_outcome = iter(outcomes).__next__  # outcomes come in the order of the good items
        letters = []
        for item, check in zip(items, checked):
            if isinstance(check, DossierEvent):
                outcome = next_outcome()
                if outcome == ACCEPTED:
                    result.accepted += 1
                refused = refusal(outcome)
                if refused is None:
                    results.append({"index": item.index, "event_id": check.event_id, "status": outcome})
                    continue
                entry: dict[str, Any] = {"index": item.index, "event_id": check.event_id}
                check = refused
            else:
                entry = {"index": item.index}
                if (claimed := item.event_id()) is not None:
                    entry["event_id"] = claimed
            entry.update(status="rejected", **check.as_dict())
            result.rejected += 1
            results.append(entry)
            letters.append(DeadLetter(transport=transport, reason=check.reason, detail=check.detail, raw=item.raw,
                                      source=source, event_index=item.index, event_id=entry.get("event_id")))
            EVENTS_REJECTED.labels(transport, source_label(source), check.reason).inc()
        result.duplicates = len(results) - result.accepted - result.rejected
        await store_dead_letters(apg, letters)
        if enqueue and seqs:
            await announce_events_queued(apg)  # an indicators worker in another process wakes at commit
    EVENTS_ACCEPTED.labels(transport, source_label(source)).inc(result.accepted)
    EVENTS_DUPLICATE.labels(transport, source_label(source)).inc(result.duplicates)
    if enqueue and seqs:
        runtime.events_waiting.set()
    return result


async def submit(app_state: Any, runtime: Runtime, items: list[Item], *, source: str, transport: str,
                 allowed_units: tuple[str, ...] | None) -> IntakeResult:
    """The one door for dossier events (canonical or mapped from the portal's payloads): in Kafka mode
    produced to the topic before answering, else stored and queued for the indicators worker."""
    publisher = getattr(app_state, "publish_events", None)  # State keeps attributes in _state
    if publisher is not None:
        return await publisher(runtime, items, source=source, transport=transport, allowed_units=allowed_units)
    return await intake(runtime, items, source=source, transport=transport, allowed_units=allowed_units, enqueue=True)


async def dead_letter_body(runtime: Runtime, *, source: str, transport: str, rejection: Rejection, raw: bytes) -> None:
    """Keep a whole rejected body (not JSON at all, or too large) with its reason."""
    EVENTS_REJECTED.labels(transport, source_label(source), rejection.reason).inc()
    async with runtime.engine.begin() as conn:
        apg = await driver_connection(conn)
        await store_dead_letters(apg, [DeadLetter(transport=transport, reason=rejection.reason,
                                                   detail=rejection.detail, raw=raw.decode("utf-8", "replace"),
                                                   source=source)])


__all__ = ["IntakeResult", "decode_json", "decode_ndjson", "intake", "submit", "dead_letter_body", "DUPLICATE"]
